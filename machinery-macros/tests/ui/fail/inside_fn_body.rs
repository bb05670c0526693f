//! A task must be an item of a module: the generated module reaches the function and
//! its types through `super`, which cannot see into a function body. (Doc tests: write
//! `fn main` yourself so that rustdoc does not wrap the example in one.)
use machinery_core::prelude::*;

fn main() {
    #[task]
    async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
        Ok(a + b)
    }
}
