//! Every problem is reported in one build, not one at a time.
use machinery_core::prelude::*;

#[task(name = "", retries = -1, colour = "blue")]
fn everything<'a>(ctx: &TaskContext, name: &'a str, _: u8) -> Option<String> {
    let _ = ctx;
    Some(name.to_owned())
}

fn main() {}
