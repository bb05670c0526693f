use machinery_core::prelude::*;

#[task(queue = "math", queue = "fast")]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

// The task is still generated, with the option's default: its module resolves, so the
// option's error above is the only one.
async fn caller() -> Result<i64, machinery_core::Error> {
    let _: &str = add::NAME;
    let _: add::Output = 3i64;
    let _ = Worker::new().task(add::ENTRY);
    let _: Signature<i64> = add::s(1, 2);
    add::send(1, 2).await?.get().await
}

fn main() {
    let _ = caller();
}
