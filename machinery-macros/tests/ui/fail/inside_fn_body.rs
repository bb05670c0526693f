use machinery_core::prelude::*;

fn main() {
    #[task]
    async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
        Ok(a + b)
    }
}
