use machinery_core::prelude::*;

#[task(timeout = "30 parsecs", retry_timeout = 0)]
async fn slow() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
