//! A scheduler process for the periodic Redis test: configured from the environment
//! (`MACHINERY_*`), it schedules `tick` every second and a chord of three `double`s into
//! `collect` every second, and runs until SIGINT/SIGTERM. It runs no worker.

use std::time::Duration;

use machinery_core::periodic::{Schedule, Scheduler};
use machinery_core::{Server, group};
use machinery_redis as _;

#[allow(dead_code)] // the recorders are read by the test process only
#[path = "../periodic_tasks.rs"]
mod periodic_tasks;

use periodic_tasks::{collect, double, tick};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MACHINERY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let server = Server::from_env().await?;
    let every_second = Schedule::every(Duration::from_secs(1));
    Scheduler::new(&server)
        .await?
        .add("tick", every_second.clone(), tick::s())?
        .add(
            "chord",
            every_second,
            group(vec![double::s(1), double::s(2), double::s(3)]).chord(collect::partial()),
        )?
        .run()
        .await?;
    Ok(())
}
