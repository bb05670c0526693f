//! The configuration refuses such a queue name for `default_queue`; the macro applies
//! the same rule to `name` and `queue`.
use machinery_core::prelude::*;

#[task(name = "")]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

fn main() {
    let _ = add::s(1, 2);
}
