//! Tasks run by the `fault_worker` child process. Each records its runs in Redis so the
//! tests can see side effects across processes.

use std::time::Duration;

use machinery_core::{TaskError, task};

fn redis_client() -> Result<redis::Client, TaskError> {
    let url = std::env::var("MACHINERY_BROKER").map_err(|_| TaskError::fatal("MACHINERY_BROKER is not set"))?;
    Ok(redis::Client::open(url)?)
}

fn prefix() -> String {
    std::env::var("MACHINERY_REDIS_KEY_PREFIX").unwrap_or_else(|_| "machinery".into())
}

/// The key counting runs of task `id`.
pub fn runs_key(prefix: &str, id: u64) -> String {
    format!("{prefix}:test:runs:{id}")
}

/// Counts a run of `id` (INCR), sleeps `ms`, returns `id`.
#[task(name = "fault.work")]
pub async fn work(id: u64, ms: u64) -> Result<u64, TaskError> {
    let mut conn = redis_client()?.get_multiplexed_async_connection().await?;
    let p = prefix();
    let _: i64 = redis::cmd("INCR").arg(runs_key(&p, id)).query_async(&mut conn).await?;
    let _: i64 = redis::cmd("INCR").arg(format!("{p}:test:started")).query_async(&mut conn).await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(id)
}

/// Counts a run, sleeps `ms`, returns the name of the worker that ran it (env
/// `WORKER_NAME`).
#[task(name = "fault.whoami")]
pub async fn whoami(id: u64, ms: u64) -> Result<String, TaskError> {
    let mut conn = redis_client()?.get_multiplexed_async_connection().await?;
    let _: i64 = redis::cmd("INCR").arg(runs_key(&prefix(), id)).query_async(&mut conn).await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(std::env::var("WORKER_NAME").unwrap_or_default())
}
