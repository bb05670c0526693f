use machinery_core::prelude::*;

#[task]
async fn whoami(greeting: String, ctx: TaskContext) -> Result<String, TaskError> {
    Ok(format!("{greeting} from {}", ctx.name()))
}

fn main() {}
