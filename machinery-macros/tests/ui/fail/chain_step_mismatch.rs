use machinery_core::prelude::*;

#[task]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

#[task]
async fn shout(prefix: String, text: String) -> Result<String, TaskError> {
    Ok(format!("{prefix}{}", text.to_uppercase()))
}

fn main() {
    // `add` returns i64, but `shout`'s last parameter is a String.
    let _ = add::s(1, 2).then(shout::partial("!".into()));
}
