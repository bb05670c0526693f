use machinery_core::prelude::*;

#[task]
async fn parse(text: String) -> Result<i64, String> {
    text.parse::<i64>().map_err(|e| e.to_string())
}

fn main() {}
