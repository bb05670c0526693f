//! Quickstart: define tasks, start a worker, send tasks, read typed results.
//!
//! Runs on the in-memory engine with nothing installed:
//!     cargo run -p examples --example quickstart
//! and on Redis when `MACHINERY_BROKER` names one:
//!     MACHINERY_BROKER=redis://127.0.0.1:6379/ cargo run -p examples --example quickstart

use std::time::Duration;

use machinery_core::prelude::*;
use serde::{Deserialize, Serialize};

// Links the Redis engine, so `redis://` URLs work.
use machinery_redis as _;

/// The classic.
#[task]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

/// Any serde type is an argument or a result.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
    coupon: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    order: u64,
    lines: usize,
    discounted: bool,
}

#[task(name = "shop.checkout", retries = 3, retry_timeout = "100ms")]
async fn checkout(ctx: TaskContext, order: Order) -> Result<Receipt, TaskError> {
    tracing::info!(task.id = %ctx.uuid(), attempt = ctx.retried() + 1, "checking out order {}", order.id);
    Ok(Receipt {
        order: order.id,
        lines: order.items.len(),
        discounted: order.coupon.is_some(),
    })
}

/// Plain functions run on the blocking pool.
#[task]
fn fib(n: u32) -> Result<u64, TaskError> {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (
            b,
            a.checked_add(b)
                .ok_or_else(|| TaskError::fatal("overflow"))?,
        );
    }
    Ok(a)
}

/// Errors are recorded as FAILURE with their text.
#[task]
async fn divide(a: i64, b: i64) -> Result<i64, TaskError> {
    a.checked_div(b)
        .ok_or_else(|| TaskError::msg("division by zero"))
}

#[tokio::main]
async fn main() -> Result<(), machinery_core::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MACHINERY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let server = Server::from_env().await?;
    server.install();
    println!("engine: {}", server.broker().engine());

    let worker = Worker::auto().concurrency(8).spawn()?;

    let sum = add::send(1, 2).await?;
    println!(
        "add(1, 2) = {}",
        sum.get_timeout(Duration::from_secs(10)).await?
    );

    let order = Order {
        id: 7,
        items: vec!["tea".into(), "scones".into()],
        coupon: Some("SPRING".into()),
    };
    let receipt = checkout::send(order).await?.get().await?;
    println!("checkout: {receipt:?}");

    let later = fib::s(50).delay(Duration::from_millis(300)).send().await?;
    println!("fib(50), delayed 300 ms: {}", later.get().await?);

    let failed = divide::send(1, 0).await?;
    match failed.get().await {
        Err(e) => println!("divide(1, 0) failed as expected: {e}"),
        Ok(v) => println!("divide(1, 0) = {v}?!"),
    }
    println!("state of that task: {}", failed.state().await?);

    worker.shutdown().await?;
    Ok(())
}
