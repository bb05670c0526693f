use machinery_core::prelude::*;

#[task(queue = "math", queue = "fast")]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

fn main() {}
