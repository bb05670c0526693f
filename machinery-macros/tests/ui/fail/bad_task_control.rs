use machinery_core::prelude::*;

#[task(rate_limit = "100 per second", expires = "soon", unique = 0)]
async fn send_email(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {
    let _ = send_email::s("a@example.com".to_owned());
}
