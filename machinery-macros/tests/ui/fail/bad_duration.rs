use machinery_core::prelude::*;

#[task(timeout = "30 parsecs", retry_timeout = 0)]
async fn slow() -> Result<(), TaskError> {
    Ok(())
}

// The task is still generated, with the option's default: its module resolves, so the
// option's error above is the only one.
async fn caller() -> Result<(), machinery_core::Error> {
    let _: &str = slow::NAME;
    let _: slow::Output = ();
    let _ = Worker::new().task(slow::ENTRY);
    let _: Signature<()> = slow::s();
    slow::send().await?.get().await
}

fn main() {
    let _ = caller();
}
