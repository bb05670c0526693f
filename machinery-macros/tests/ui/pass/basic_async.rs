use machinery_core::prelude::*;

#[task]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

fn main() {
    let signature: Signature<i64> = add::s(1, 2);
    let _ = signature;
    let _: &str = add::NAME;
    let _: &str = add::SCHEMA;
    let _: u64 = add::FINGERPRINT;
    let _: add::Output = 3i64;
    let _ = Worker::new().task(add::ENTRY);
    let _ = add::send(1, 2);
    assert_eq!(add::NAME, "add");
    assert_eq!(add::SCHEMA, "add(i64, i64) -> i64");
    assert_eq!(add::ENTRY.name(), "add");
    assert!(add::ENTRY.location().ends_with("::add"));
}
