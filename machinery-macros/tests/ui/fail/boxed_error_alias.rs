//! A type alias hides the box from the macro, which recognises `Box<dyn Error>` only
//! when written out; rustc then reports that the box is not an `Error` (its `Error` impl
//! needs a sized content). The fix, in `TaskError`'s docs and the README: write the box
//! out, or return `Result<T, TaskError>` with `.map_err(TaskError::boxed)`.
use machinery_core::prelude::*;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[task]
async fn parse(text: String) -> Result<i64, BoxError> {
    Ok(text.parse()?)
}

fn main() {}
