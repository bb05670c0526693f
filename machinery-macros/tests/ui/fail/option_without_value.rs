use machinery_core::prelude::*;

#[task(queue = "math", timeout)]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

// Even when the options do not parse, a valid function still gets its module.
async fn caller() -> Result<i64, machinery_core::Error> {
    let _ = Worker::new().task(add::ENTRY);
    add::send(1, 2).await?.get().await
}

fn main() {
    let _ = caller();
}
