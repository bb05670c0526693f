//! Memory-engine behaviours observed on a paused tokio clock: exact retry delays,
//! delayed tasks and result expiry, without waiting in real time.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use machinery_core::prelude::*;
use machinery_core::{Config, Error};
use tokio::time::Instant;

static RUNS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

#[task]
async fn always_fails(ctx: TaskContext) -> Result<(), TaskError> {
    RUNS.lock().unwrap().push(Instant::now());
    Err(TaskError::msg(format!("attempt {}", ctx.retried() + 1)))
}

#[task]
async fn noop() -> Result<u8, TaskError> {
    Ok(7)
}

fn secs(d: Duration) -> u64 {
    (d.as_millis() as f64 / 1000.0).round() as u64
}

#[tokio::test(start_paused = true)]
async fn retry_delays_follow_fibonacci_and_cap() {
    let mut config = Config::default();
    config.retry_max_delay = std::time::Duration::from_secs(6);
    let server = Server::memory_with(config);
    let worker = Worker::auto().server(&server).spawn().unwrap();
    let r = always_fails::s()
        .retries(5)
        .send_with(&server)
        .await
        .unwrap();
    let err = r.get().await.unwrap_err();
    assert!(err.to_string().contains("attempt 6"), "{err}");
    let runs = RUNS.lock().unwrap().clone();
    let gaps: Vec<u64> = runs.windows(2).map(|w| secs(w[1] - w[0])).collect();
    // 1, 2, 3, 5, 8 s from a 1 s base, capped at 6 s.
    assert_eq!(gaps, [1, 2, 3, 5, 6]);
    worker.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn delayed_task_starts_at_its_eta() {
    let server = Server::memory();
    let worker = Worker::auto().server(&server).spawn().unwrap();
    let start = Instant::now();
    let r = noop::s()
        .delay(Duration::from_secs(3600))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(server.delayed_tasks(None).await.unwrap().len(), 1);
    assert_eq!(r.get().await.unwrap(), 7);
    assert_eq!(secs(start.elapsed()), 3600);
    worker.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn results_expire_after_the_ttl() {
    let mut config = Config::default();
    config.results_expire_in = std::time::Duration::from_secs(3600);
    let server = Server::memory_with(config);
    let worker = Worker::auto().server(&server).spawn().unwrap();
    let r = noop::s().send_with(&server).await.unwrap();
    assert_eq!(r.get().await.unwrap(), 7);
    tokio::time::sleep(Duration::from_secs(3599)).await;
    assert_eq!(r.state().await.unwrap(), State::Success);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(matches!(r.state().await, Err(Error::ResultMissing(_))));
    worker.shutdown().await.unwrap();
}
