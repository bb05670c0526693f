//! Periodic tasks: a signature on a cron spec, a chain every few seconds, a chord every
//! second; the entries listed, paused and resumed while a worker runs them.
//!
//!     cargo run -p examples --example periodic
//!     MACHINERY_BROKER=redis://127.0.0.1:6379/ cargo run -p examples --example periodic
//!
//! On Redis, start it several times at once: each tick still runs once.

use std::time::{Duration, SystemTime};

use machinery_core::periodic::{MissedTicks, Schedule, Scheduler, scheduled_at};
use machinery_core::prelude::*;

use machinery_redis as _;

/// Prints when its tick was scheduled and when it runs.
#[task]
async fn report(ctx: TaskContext, what: String) -> Result<(), TaskError> {
    let at = scheduled_at(&ctx).unwrap_or(SystemTime::UNIX_EPOCH);
    let late = SystemTime::now().duration_since(at).unwrap_or_default();
    println!(
        "{what}: tick {} (run {late:?} after its instant)",
        ctx.uuid()
    );
    Ok(())
}

#[task]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

#[task]
async fn total(values: Vec<i64>) -> Result<i64, TaskError> {
    let sum = values.iter().sum();
    println!("chord callback: sum of {values:?} = {sum}");
    Ok(sum)
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
    println!("engine: {}", server.broker().engine());

    let scheduler = Scheduler::new(&server)
        .await?
        // Six fields: seconds first. Every 2 seconds, in UTC.
        .add(
            "report",
            Schedule::cron("*/2 * * * * *")?,
            report::s("cron report".into()),
        )?
        // Every 3 seconds a chain (1 + 2) + 10; catches up its last missed tick after
        // all schedulers were down.
        .add(
            "chain",
            Schedule::parse("@every 3s")?.missed_ticks(MissedTicks::CatchUpLast),
            add::s(1, 2).then(add::partial(10)),
        )?
        // Every second a chord: its callback runs once per tick.
        .add(
            "chord",
            Schedule::every(Duration::from_secs(1)),
            group(vec![add::s(1, 1), add::s(2, 2), add::s(3, 3)]).chord(total::partial()),
        )?;

    // The worker runs the tasks and the scheduler; any number of them may run.
    let worker = Worker::auto()
        .server(&server)
        .scheduler(scheduler.clone())
        .spawn()?;

    tokio::time::sleep(Duration::from_secs(4)).await;
    println!("-- pausing `chord` for 3 s");
    scheduler.pause("chord").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    scheduler.resume("chord").await?;
    println!("-- `chord` resumed");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ago = |t: Option<SystemTime>| {
        t.and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or_else(
                || "never".to_owned(),
                |d| format!("{:.1} s ago", d.as_secs_f64()),
            )
    };
    for e in scheduler.entries().await? {
        let last_task = e.last_task.map(|u| u.to_string()).unwrap_or_default();
        println!(
            "{:<7} {:<14} paused={:<5} last run {:<10} last task {last_task}",
            e.name,
            e.spec,
            e.paused,
            ago(e.last_run),
        );
    }

    worker.shutdown().await
}
