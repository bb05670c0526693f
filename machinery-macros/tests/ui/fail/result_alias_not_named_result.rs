//! The macro cannot see through an alias of `Result` named otherwise.
use machinery_core::prelude::*;

type R<T> = Result<T, TaskError>;

#[task]
async fn add(a: i64, b: i64) -> R<i64> {
    Ok(a + b)
}

fn main() {}
