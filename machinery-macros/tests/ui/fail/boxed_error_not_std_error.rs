//! A boxed trait object named `Error` that is not `std::error::Error`.
use machinery_core::prelude::*;

pub trait Error {}

#[task]
async fn parse(text: String) -> Result<i64, Box<dyn Error + Send + Sync>> {
    Ok(text.len() as i64)
}

fn main() {}
