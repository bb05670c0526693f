use machinery_core::prelude::*;

#[task(timeout = "30 seconds", retry_timeout = 0)]
async fn slow() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
