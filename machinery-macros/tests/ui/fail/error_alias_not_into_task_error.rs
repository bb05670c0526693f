//! An alias that hides the error type: the error points at the return type.
use machinery_core::prelude::*;

type Result<T> = std::result::Result<T, String>;

#[task]
fn parse(text: String) -> Result<i64> {
    text.parse::<i64>().map_err(|e| e.to_string())
}

fn main() {}
