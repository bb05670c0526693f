use machinery_core::prelude::*;

#[task]
async fn ping() -> Result<(), TaskError> {
    Ok(())
}

#[task]
fn tick() -> Result<u64, TaskError> {
    Ok(1)
}

fn main() {
    let _: Signature<()> = ping::s();
    let _: Signature<u64> = tick::s();
    assert_eq!(ping::SCHEMA, "ping() -> ()");
    let _ = ping::send();
}
