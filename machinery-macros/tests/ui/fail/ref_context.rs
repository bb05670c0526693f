use machinery_core::prelude::*;

#[task]
async fn whoami(ctx: &TaskContext) -> Result<String, TaskError> {
    Ok(ctx.name().to_owned())
}

fn main() {}
