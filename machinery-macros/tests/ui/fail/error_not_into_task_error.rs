use machinery_core::prelude::*;

struct NotAnError;

#[task]
async fn add(a: i64, b: i64) -> Result<i64, NotAnError> {
    Ok(a + b)
}

fn main() {}
