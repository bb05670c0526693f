//! Periodic tasks on the memory engine, on a paused tokio clock: a scheduler inside a
//! worker publishes every tick once, and a periodic chord's callback runs once per tick.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use machinery_core::periodic::{Schedule, Scheduler, scheduled_at, tick_uuid};
use machinery_core::prelude::*;
use uuid::Uuid;

static TICKS: Mutex<Vec<(Uuid, u64)>> = Mutex::new(Vec::new());
static CALLBACKS: Mutex<Vec<(u64, Vec<u64>)>> = Mutex::new(Vec::new());

/// The tick's scheduled instant, in milliseconds since the Unix epoch.
fn tick_ms(ctx: &TaskContext) -> Result<u64, TaskError> {
    let at = scheduled_at(ctx).ok_or_else(|| TaskError::fatal("not a periodic task"))?;
    Ok(at.duration_since(UNIX_EPOCH)?.as_millis() as u64)
}

#[task(name = "periodic_memory.tick")]
async fn tick(ctx: TaskContext) -> Result<(), TaskError> {
    let at = tick_ms(&ctx)?;
    TICKS.lock().unwrap().push((ctx.uuid(), at));
    Ok(())
}

#[task(name = "periodic_memory.double")]
async fn double(x: u64) -> Result<u64, TaskError> {
    Ok(2 * x)
}

#[task(name = "periodic_memory.collect")]
async fn collect(ctx: TaskContext, values: Vec<u64>) -> Result<usize, TaskError> {
    let at = tick_ms(&ctx)?;
    CALLBACKS.lock().unwrap().push((at, values.clone()));
    Ok(values.len())
}

/// Sleeps (on the paused clock) until half-way between two wall-clock seconds, as the
/// scheduler made just before sees it, so whole-second windows from there hold a known
/// number of ticks.
async fn align() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(1500 - now % 1000)).await;
}

#[tokio::test(start_paused = true)]
async fn every_second_for_ten_seconds_runs_ten_tasks() {
    let server = Server::memory();
    let scheduler = Scheduler::new(&server)
        .await
        .unwrap()
        .add("tick", Schedule::every(Duration::from_secs(1)), tick::s())
        .unwrap();
    align().await;
    let worker = Worker::auto()
        .server(&server)
        .scheduler(scheduler.clone())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    worker.shutdown().await.unwrap();

    let runs = TICKS.lock().unwrap().clone();
    assert_eq!(runs.len(), 10, "{runs:?}");
    let mut instants: Vec<u64> = runs
        .iter()
        .map(|(uuid, at)| {
            assert_eq!(*uuid, tick_uuid("tick", *at, 0), "deterministic UUID");
            *at
        })
        .collect();
    instants.sort_unstable();
    assert_eq!(instants.iter().collect::<BTreeSet<_>>().len(), 10);
    for w in instants.windows(2) {
        assert_eq!(w[1] - w[0], 1000, "{instants:?}");
    }
    let entry = scheduler.entry("tick").await.unwrap().unwrap();
    assert_eq!(entry.last_task, Some(tick_uuid("tick", instants[9], 0)));
    // The last task's state is stored under its deterministic UUID.
    let state = server
        .result::<()>(entry.last_task.unwrap(), "periodic_memory.tick")
        .state()
        .await
        .unwrap();
    assert_eq!(state, State::Success);
}

#[tokio::test(start_paused = true)]
async fn a_periodic_chord_fires_its_callback_once_per_tick() {
    let server = Server::memory();
    let chord = group(vec![double::s(1), double::s(2), double::s(3)]).chord(collect::partial());
    let scheduler = Scheduler::new(&server)
        .await
        .unwrap()
        .add("chord", Schedule::parse("@every 1s").unwrap(), chord)
        .unwrap();
    align().await;
    // Two schedulers (in two workers) share the memory engine's store.
    let w1 = Worker::auto()
        .server(&server)
        .scheduler(scheduler.clone())
        .spawn()
        .unwrap();
    let w2 = Worker::auto()
        .server(&server)
        .scheduler(scheduler.clone())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    w1.shutdown().await.unwrap();
    w2.shutdown().await.unwrap();

    let calls = CALLBACKS.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    let ticks: BTreeSet<u64> = calls.iter().map(|(at, _)| *at).collect();
    assert_eq!(ticks.len(), 3, "one callback per tick: {calls:?}");
    for (_, values) in &calls {
        assert_eq!(values, &[2, 4, 6]);
    }
    let entry = scheduler.entry("chord").await.unwrap().unwrap();
    let last = *ticks.last().unwrap();
    let callback = server.result::<usize>(entry.last_task.unwrap(), "periodic_memory.collect");
    assert_eq!(callback.get().await.unwrap(), 3);
    assert!((0..8).any(|i| tick_uuid("chord", last, i) == callback.uuid()));
}
