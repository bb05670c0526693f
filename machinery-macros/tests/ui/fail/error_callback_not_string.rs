use machinery_core::prelude::*;

#[task]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

#[task]
async fn alert(code: u32, channel: String) -> Result<(), TaskError> {
    let _ = (code, channel);
    Ok(())
}

fn main() {
    // An error callback's first parameter receives the error text: it must be a String.
    let _ = add::s(1, 2).on_error(alert::errback("ops".into()));
}
