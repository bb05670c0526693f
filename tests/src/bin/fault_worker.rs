//! A worker process for the fault tests: configured from the environment
//! (`MACHINERY_*`), concurrency from `WORKER_CONCURRENCY`, runs until SIGINT/SIGTERM.

use machinery_core::{Server, Worker};
use machinery_redis as _;
use tests::tasks;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MACHINERY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let concurrency: usize = std::env::var("WORKER_CONCURRENCY")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(8);
    let server = Server::from_env().await?;
    let name = std::env::var("WORKER_NAME").unwrap_or_else(|_| "fault-worker".into());
    Worker::new()
        .task(tasks::work::ENTRY)
        .task(tasks::whoami::ENTRY)
        .task(tasks::collect::ENTRY)
        .task(tasks::abort::ENTRY)
        .task(tasks::linger::ENTRY)
        .server(&server)
        .name(name)
        .concurrency(concurrency)
        .prefetch(if concurrency == 0 { 64 } else { concurrency })
        .run()
        .await?;
    Ok(())
}
