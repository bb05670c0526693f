use machinery_core::prelude::*;

#[task]
async fn greet(name: impl Into<String>) -> Result<String, TaskError> {
    Ok(format!("hello {}", name.into()))
}

fn main() {}
