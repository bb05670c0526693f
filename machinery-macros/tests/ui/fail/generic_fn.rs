use machinery_core::prelude::*;

#[task]
async fn echo<T>(value: T) -> Result<T, TaskError> {
    Ok(value)
}

fn main() {}
