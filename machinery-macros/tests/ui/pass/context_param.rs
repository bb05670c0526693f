use machinery_core::prelude::*;

#[task]
async fn whoami(ctx: TaskContext, greeting: String) -> Result<String, TaskError> {
    Ok(format!("{greeting} from {}", ctx.name()))
}

#[task]
fn blocking_whoami(ctx: machinery_core::TaskContext) -> Result<String, TaskError> {
    Ok(ctx.name().to_owned())
}

fn main() {
    // The context is not an argument.
    let _: Signature<String> = whoami::s("hello".to_owned());
    let _: Signature<String> = blocking_whoami::s();
    assert_eq!(whoami::SCHEMA, "whoami(String) -> String");
    assert_eq!(blocking_whoami::SCHEMA, "blocking_whoami() -> String");
    let _ = whoami(TaskContext::detached("whoami"), "hi".to_owned());
}
