use machinery_core::prelude::*;

#[task(name = "math.add", retry = 3)]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

fn main() {}
