use machinery_core::prelude::*;

struct Calculator;

impl Calculator {
    #[task]
    async fn add(&self, a: i64, b: i64) -> Result<i64, TaskError> {
        Ok(a + b)
    }
}

fn main() {}
