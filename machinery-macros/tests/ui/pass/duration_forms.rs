//! Every form of the one duration syntax, as the configuration and `@every` read it.
use machinery_core::prelude::*;

#[task(timeout = "1h30m", retry_timeout = "500ms")]
pub async fn hours_and_minutes() -> Result<(), TaskError> {
    Ok(())
}

#[task(timeout = 1h30m, retry_timeout = 2s)]
pub async fn unquoted() -> Result<(), TaskError> {
    Ok(())
}

#[task(timeout = "1d", retry_timeout = "5m")]
pub async fn a_day() -> Result<(), TaskError> {
    Ok(())
}

#[task(timeout = "90", retry_timeout = 45)]
pub async fn bare_seconds() -> Result<(), TaskError> {
    Ok(())
}

fn main() {
    let o = hours_and_minutes::ENTRY.options;
    assert_eq!((o.timeout_ms, o.retry_timeout_ms), (Some(5_400_000), Some(500)));
    let o = unquoted::ENTRY.options;
    assert_eq!((o.timeout_ms, o.retry_timeout_ms), (Some(5_400_000), Some(2_000)));
    let o = a_day::ENTRY.options;
    assert_eq!((o.timeout_ms, o.retry_timeout_ms), (Some(86_400_000), Some(300_000)));
    let o = bare_seconds::ENTRY.options;
    assert_eq!((o.timeout_ms, o.retry_timeout_ms), (Some(90_000), Some(45_000)));
}
