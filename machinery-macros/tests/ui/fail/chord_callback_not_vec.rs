use machinery_core::prelude::*;

#[task]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

#[task]
async fn total(values: Vec<String>) -> Result<usize, TaskError> {
    Ok(values.len())
}

fn main() {
    // The members return i64, so the callback's last parameter must be Vec<i64>.
    let _ = group(vec![add::s(1, 1), add::s(2, 2)]).chord(total::partial());
}
