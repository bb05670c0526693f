use machinery_core::prelude::*;

#[task]
fn multiply(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a * b)
}

fn main() {
    // The function stays callable as written.
    assert_eq!(multiply(2, 3).ok(), Some(6));
    let _: Signature<i64> = multiply::s(2, 3);
    assert!(multiply::ENTRY.options.blocking);
    assert_eq!(multiply::NAME, "multiply");
}
