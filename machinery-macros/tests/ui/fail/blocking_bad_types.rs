use machinery_core::prelude::*;

struct Opaque;

struct NotAnError;

#[task]
fn convert(input: Opaque) -> Result<Opaque, NotAnError> {
    Ok(input)
}

fn main() {}
