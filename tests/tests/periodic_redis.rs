//! Periodic tasks on Redis, for real: three scheduler processes on one private
//! `redis-server` publish each tick of a 1-second schedule exactly once; pausing and
//! removing an entry act on every scheduler; a periodic chord's callback runs once per
//! tick. A worker in the test process runs the tasks and records each run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use machinery_core::periodic::{Scheduler, tick_uuid};
use machinery_core::{Config, Server, Worker};
use machinery_redis as _;
use tests::RedisServer;

#[path = "../src/periodic_tasks.rs"]
mod periodic_tasks;

use periodic_tasks::{CALLBACKS, TICKS, collect, double, tick};

/// A `scheduler_child` process, stopped on drop.
struct SchedulerProcess(Child);

impl SchedulerProcess {
    fn start(redis: &RedisServer, prefix: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_scheduler_child"))
            .env("MACHINERY_BROKER", redis.url())
            .env("MACHINERY_REDIS_KEY_PREFIX", prefix)
            .stdout(Stdio::null())
            .spawn()
            .expect("start scheduler_child");
        SchedulerProcess(child)
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ticks() -> Vec<(uuid::Uuid, u64)> {
    TICKS.lock().unwrap().clone()
}

fn callbacks() -> Vec<(u64, Vec<u64>)> {
    CALLBACKS.lock().unwrap().clone()
}

/// Every tick instant from the first to the last seen, exactly once each.
fn assert_each_tick_once(instants: &[u64]) {
    let distinct: BTreeSet<u64> = instants.iter().copied().collect();
    assert_eq!(distinct.len(), instants.len(), "duplicates: {instants:?}");
    let first = *distinct.first().expect("some ticks");
    let last = *distinct.last().expect("some ticks");
    let expected = usize::try_from((last - first) / 1000 + 1).unwrap();
    assert_eq!(distinct.len(), expected, "gaps: {instants:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_publish_each_tick_once() {
    let redis = RedisServer::start();
    let prefix = format!("periodic-{}", uuid::Uuid::now_v7().simple());
    let mut config = Config::default();
    config.broker = redis.url();
    config
        .section_mut::<machinery_redis::RedisConfig>()
        .key_prefix
        .clone_from(&prefix);
    let server = Server::from_config(config)
        .await
        .expect("connect to the test redis");
    let worker = Worker::new()
        .task(tick::ENTRY)
        .task(double::ENTRY)
        .task(collect::ENTRY)
        .server(&server)
        .spawn()
        .unwrap();
    let children: Vec<SchedulerProcess> = (0..3)
        .map(|_| SchedulerProcess::start(&redis, &prefix))
        .collect();

    tokio::time::sleep(Duration::from_secs(10)).await;
    let runs = ticks();
    for (uuid, at) in &runs {
        assert_eq!(*uuid, tick_uuid("tick", *at, 0), "deterministic UUID");
    }
    let instants: Vec<u64> = runs.iter().map(|(_, at)| *at).collect();
    assert!(instants.len() >= 8, "ticks in 10 s: {instants:?}");
    assert_each_tick_once(&instants);

    let admin = Scheduler::new(&server).await.expect("redis periodic store");
    let names: Vec<String> = admin
        .entries()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["chord", "tick"]);
    let entry = admin.entry("tick").await.unwrap().unwrap();
    assert!(entry.last_task.is_some());
    assert_eq!(entry.spec, "@every 1s");

    // Paused through the store: no scheduler fires it any more.
    assert!(admin.pause("tick").await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ticks().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ticks().len(), before, "a paused entry does not fire");
    assert!(admin.entry("tick").await.unwrap().unwrap().paused);

    // Resumed: every scheduler fires it again, once per tick.
    assert!(admin.resume("tick").await.unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<u64> = ticks()[before..].iter().map(|(_, at)| *at).collect();
    assert!(after.len() >= 2, "{after:?}");
    assert_each_tick_once(&after);

    // Removed: every scheduler forgets it, and none brings it back.
    assert!(admin.remove("tick").await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ticks().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ticks().len(), before, "a removed entry does not fire");
    let names: Vec<String> = admin
        .entries()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["chord"]);

    // The chord ran all along: one callback per tick, with every member's result.
    drop(children);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = callbacks();
    for (_, values) in &calls {
        assert_eq!(values, &[2, 4, 6]);
    }
    let instants: Vec<u64> = calls.iter().map(|(at, _)| *at).collect();
    assert!(instants.len() >= 15, "chord ticks in ~20 s: {instants:?}");
    assert_each_tick_once(&instants);

    worker.shutdown().await.unwrap();
}
