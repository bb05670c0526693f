//! Tasks of the periodic Redis test, shared (through `#[path]`) by the `scheduler_child`
//! binary, which schedules them, and the test, whose worker runs them and records each
//! run here.

use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use machinery_core::periodic::scheduled_at;
use machinery_core::{TaskContext, TaskError, task};
use uuid::Uuid;

/// Runs of `tick`: task UUID and scheduled instant (ms).
pub static TICKS: Mutex<Vec<(Uuid, u64)>> = Mutex::new(Vec::new());
/// Runs of `collect`: scheduled instant (ms) and the values it received.
pub static CALLBACKS: Mutex<Vec<(u64, Vec<u64>)>> = Mutex::new(Vec::new());

fn tick_ms(ctx: &TaskContext) -> Result<u64, TaskError> {
    let at = scheduled_at(ctx).ok_or_else(|| TaskError::fatal("not a periodic task"))?;
    Ok(u64::try_from(at.duration_since(UNIX_EPOCH)?.as_millis()).unwrap_or(u64::MAX))
}

/// Records its run.
#[task(name = "periodic_redis.tick")]
pub async fn tick(ctx: TaskContext) -> Result<(), TaskError> {
    let at = tick_ms(&ctx)?;
    TICKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((ctx.uuid(), at));
    Ok(())
}

/// Doubles.
#[task(name = "periodic_redis.double")]
pub async fn double(x: u64) -> Result<u64, TaskError> {
    Ok(2 * x)
}

/// A chord callback: records its run with the members' results.
#[task(name = "periodic_redis.collect")]
pub async fn collect(ctx: TaskContext, values: Vec<u64>) -> Result<usize, TaskError> {
    let at = tick_ms(&ctx)?;
    CALLBACKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((at, values.clone()));
    Ok(values.len())
}
