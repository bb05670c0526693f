use machinery_core::prelude::*;

#[derive(Debug)]
pub enum MyError {}

impl std::fmt::Display for MyError {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for MyError {}

#[task(
    name = "math.add",
    queue = "math",
    retries = 3,
    retry_timeout = "2s",
    timeout = "30s"
)]
pub async fn add(ctx: TaskContext, a: i64, b: i64) -> Result<i64, MyError> {
    let _ = ctx;
    Ok(a + b)
}

#[task(retry_timeout = 500ms, timeout = 5)]
pub fn sub(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a - b)
}

fn main() {
    assert_eq!(add::NAME, "math.add");
    assert_eq!(add::SCHEMA, "add(i64, i64) -> i64");
    let options = add::ENTRY.options;
    assert_eq!(options.queue, Some("math"));
    assert_eq!(options.retries, Some(3));
    assert_eq!(options.retry_timeout_ms, Some(2_000));
    assert_eq!(options.timeout_ms, Some(30_000));
    assert!(!options.blocking);
    let options = sub::ENTRY.options;
    assert_eq!(options.queue, None);
    assert_eq!(options.retries, None);
    assert_eq!(options.retry_timeout_ms, Some(500));
    assert_eq!(options.timeout_ms, Some(5_000));
    assert!(options.blocking);
    let _: Signature<i64> = add::s(1, 2);
}
