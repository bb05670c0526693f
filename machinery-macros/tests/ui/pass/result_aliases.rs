//! Any path ending in `Result` is accepted; the `Ok` type comes from its first type
//! argument, or from the return type itself when the alias takes none.
use machinery_core::prelude::*;

mod fixed {
    pub type Result = std::result::Result<u8, machinery_core::TaskError>;
}

type Result<T, E = TaskError> = std::result::Result<T, E>;

#[task]
async fn defaulted_error(x: u8) -> Result<u8> {
    Ok(x)
}

#[task]
fn no_arguments_alias() -> fixed::Result {
    Ok(1)
}

#[task]
async fn io(path: String) -> std::io::Result<Vec<u8>> {
    Ok(path.into_bytes())
}

fn main() {
    let _: Signature<u8> = defaulted_error::s(1);
    let _: Signature<u8> = no_arguments_alias::s();
    let _: no_arguments_alias::Output = 1u8;
    let _: Signature<Vec<u8>> = io::s("x".into());
    assert_eq!(defaulted_error::SCHEMA, "defaulted_error(u8) -> u8");
    assert_eq!(
        no_arguments_alias::SCHEMA,
        "no_arguments_alias() -> fixed::Result"
    );
    assert_eq!(io::SCHEMA, "io(String) -> Vec<u8>");
}
