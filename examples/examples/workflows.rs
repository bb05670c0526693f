//! Workflows: chains, groups, chords and callbacks, typed end to end.
//!
//!     cargo run -p examples --example workflows
//!     MACHINERY_BROKER=redis://127.0.0.1:6379/ cargo run -p examples --example workflows

use std::time::Duration;

use machinery_core::prelude::*;

use machinery_redis as _;

#[task]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

#[task]
async fn add3(a: i64, b: i64, c: i64) -> Result<i64, TaskError> {
    Ok(a + b + c)
}

#[task]
async fn multiply(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a * b)
}

#[task]
async fn product(values: Vec<i64>) -> Result<i64, TaskError> {
    Ok(values.iter().product())
}

#[task]
async fn check_positive(x: i64) -> Result<i64, TaskError> {
    if x > 0 {
        Ok(x)
    } else {
        Err(TaskError::msg(format!("{x} is not positive")))
    }
}

#[task]
async fn report(error: String, context: String) -> Result<(), TaskError> {
    println!("  error callback: {context}: {error}");
    Ok(())
}

#[task]
async fn announce(label: String, value: i64) -> Result<(), TaskError> {
    println!("  success callback: {label} = {value}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), machinery_core::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MACHINERY_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .init();
    let server = Server::from_env().await?;
    server.install();
    let worker = Worker::auto().spawn()?;
    let t = Duration::from_secs(30);

    // Chain: each step gets the previous result as its last argument.
    // add(2, 2) = 4 → add3(5, 6, 4) = 15 → multiply(4, 15) = 60
    let chain = add::s(2, 2)
        .then(add3::partial(5, 6))
        .then(multiply::partial(4))
        .send()
        .await?;
    println!(
        "chain add(2,2) → add3(5,6,·) → multiply(4,·) = {}",
        chain.get_timeout(t).await?
    );

    // Group: members in parallel, results in member order.
    let members = vec![add::s(1, 1), add::s(2, 2), add::s(5, 6)];
    let g = group(members.clone()).send().await?;
    println!(
        "group [add(1,1), add(2,2), add(5,6)] = {:?}",
        g.get_timeout(t).await?
    );

    // Chord: the callback gets every member's result, once.
    let chord = group(members).chord(product::partial()).send().await?;
    println!("chord → product = {}", chord.get_timeout(t).await?);

    // Nesting: a chord as a chain step, then another step.
    let nested = add::s(1, 1)
        .then(group(vec![add::s(1, 1), add::s(2, 2)]).chord(product::partial()))
        .then(add::partial(100))
        .send()
        .await?;
    println!("chain → chord → chain = {}", nested.get_timeout(t).await?);

    // A failing step stops the chain; the result names it.
    let stopped = add::s(-5, 1)
        .then(check_positive::partial())
        .then(multiply::partial(10))
        .send()
        .await?;
    match stopped.get_timeout(t).await {
        Err(e) => println!("stopped chain: {e}"),
        Ok(v) => println!("stopped chain returned {v}?!"),
    }

    // Callbacks on any signature.
    add::s(40, 2)
        .on_success(announce::partial("answer".into()))
        .send()
        .await?
        .get_timeout(t)
        .await?;
    let _ = check_positive::s(-1)
        .on_error(report::errback("checking -1".into()))
        .send()
        .await?
        .get_timeout(t)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    worker.shutdown().await
}
