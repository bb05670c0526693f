//! Tasks run by the `fault_worker` child process. Each records its runs in Redis so the
//! tests can see side effects across processes.

use std::time::Duration;

use machinery_core::{TaskError, task};

/// One auto-reconnecting connection per process, shared by every task run.
async fn redis_conn() -> Result<redis::aio::ConnectionManager, TaskError> {
    static CONN: tokio::sync::OnceCell<redis::aio::ConnectionManager> =
        tokio::sync::OnceCell::const_new();
    let conn = CONN
        .get_or_try_init(|| async {
            let url = std::env::var("MACHINERY_BROKER")
                .map_err(|_| TaskError::fatal("MACHINERY_BROKER is not set"))?;
            let client = redis::Client::open(url)?;
            Ok::<_, TaskError>(client.get_connection_manager().await?)
        })
        .await?;
    Ok(conn.clone())
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
    let mut conn = redis_conn().await?;
    let p = prefix();
    let _: i64 = redis::cmd("INCR")
        .arg(runs_key(&p, id))
        .query_async(&mut conn)
        .await?;
    let _: i64 = redis::cmd("INCR")
        .arg(format!("{p}:test:started"))
        .query_async(&mut conn)
        .await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(id)
}

/// Counts a run, sleeps `ms`, returns the name of the worker that ran it (env
/// `WORKER_NAME`).
#[task(name = "fault.whoami")]
pub async fn whoami(id: u64, ms: u64) -> Result<String, TaskError> {
    let mut conn = redis_conn().await?;
    let _: i64 = redis::cmd("INCR")
        .arg(runs_key(&prefix(), id))
        .query_async(&mut conn)
        .await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(std::env::var("WORKER_NAME").unwrap_or_default())
}

/// A chord callback: counts its runs under `<prefix>:test:callbacks`, returns the sum.
#[task(name = "fault.collect")]
pub async fn collect(values: Vec<u64>) -> Result<u64, TaskError> {
    let mut conn = redis_conn().await?;
    let _: i64 = redis::cmd("INCR")
        .arg(format!("{}:test:callbacks", prefix()))
        .query_async(&mut conn)
        .await?;
    Ok(values.iter().sum())
}

/// Kills the worker process running it (a poison message).
#[task(name = "fault.abort")]
pub async fn abort() -> Result<(), TaskError> {
    std::process::abort()
}

/// Counts a run of `id`; sleeps 30 s on the worker named `A`, 200 ms elsewhere; returns
/// the worker's name.
#[task(name = "fault.linger")]
pub async fn linger(id: u64) -> Result<String, TaskError> {
    let mut conn = redis_conn().await?;
    let _: i64 = redis::cmd("INCR")
        .arg(runs_key(&prefix(), id))
        .query_async(&mut conn)
        .await?;
    let name = std::env::var("WORKER_NAME").unwrap_or_default();
    let ms = if name == "A" { 30_000 } else { 200 };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(name)
}
