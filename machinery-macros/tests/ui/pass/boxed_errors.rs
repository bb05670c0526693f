//! A boxed error written out as `Box<dyn Error ...>` is an error type, with or without
//! `Send`, `Sync` and `'static`, by any path to the `Error` trait.
use std::error::Error;

use machinery_core::prelude::*;

#[task]
async fn send_sync(text: String) -> Result<i64, Box<dyn Error + Send + Sync>> {
    let n: i64 = text.parse()?;
    tokio::task::yield_now().await;
    Ok(n)
}

#[task]
async fn send_sync_static(
    text: String,
) -> Result<i64, Box<dyn std::error::Error + Send + Sync + 'static>> {
    Ok(text.parse()?)
}

// Not `Send`: the box is made where the task returns, never held across an `.await`, so
// the task's future is still `Send`.
#[task]
async fn not_send(text: String) -> Result<i64, Box<dyn Error>> {
    tokio::task::yield_now().await;
    let n: i64 = text.parse()?;
    tokio::task::yield_now().await;
    Ok(n)
}

// The standard library converts errors with `?` into `Box<dyn Error>` and
// `Box<dyn Error + Send + Sync>` only; other boxes are made by hand.
#[task]
async fn send_only(text: String) -> Result<i64, Box<dyn core::error::Error + Send>> {
    text.parse().map_err(|e| Box::new(e) as Box<dyn core::error::Error + Send>)
}

#[task]
fn blocking(text: String) -> Result<i64, Box<dyn Error + 'static>> {
    Ok(text.parse()?)
}

#[task]
fn blocking_sync(text: String) -> std::result::Result<i64, ::std::boxed::Box<dyn Error + Sync>> {
    text.parse().map_err(|e| Box::new(e) as Box<dyn Error + Sync>)
}

fn main() {
    let _: Signature<i64> = send_sync::s("1".into());
    let _: Signature<i64> = send_sync_static::s("1".into());
    let _: Signature<i64> = not_send::s("1".into());
    let _: Signature<i64> = send_only::s("1".into());
    let _: Signature<i64> = blocking::s("1".into());
    let _: Signature<i64> = blocking_sync::s("1".into());
}
