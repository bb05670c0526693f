use machinery_core::prelude::*;

#[task]
async fn greet(name: &str) -> Result<String, TaskError> {
    Ok(format!("hello {name}"))
}

fn main() {}
