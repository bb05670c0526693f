//! Reliability on Redis, for real: worker processes killed, paused and stopped, Redis
//! restarted, garbage pushed. Each test starts its own `redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use machinery_core::engine::{Outgoing, RevokeOutcome};
use machinery_core::{Config, Error, Server, State};
use machinery_redis as _;
use tests::RedisServer;
use tests::tasks::{abort, collect, linger, runs_key, whoami, work};
use uuid::Uuid;

/// A worker child process, killed on drop.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(
        redis: &RedisServer,
        prefix: &str,
        name: &str,
        concurrency: usize,
        visibility: u64,
    ) -> Self {
        Self::start_with(redis, prefix, name, concurrency, visibility, &[])
    }

    /// [`start`](Self::start) with more `MACHINERY_*` settings.
    fn start_with(
        redis: &RedisServer,
        prefix: &str,
        name: &str,
        concurrency: usize,
        visibility: u64,
        settings: &[(&str, &str)],
    ) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_fault_worker"))
            .envs(settings.iter().copied())
            .env("MACHINERY_BROKER", redis.url())
            .env("MACHINERY_REDIS_KEY_PREFIX", prefix)
            .env("MACHINERY_VISIBILITY_TIMEOUT", visibility.to_string())
            .env("WORKER_NAME", name)
            .env("WORKER_CONCURRENCY", concurrency.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start fault_worker");
        WorkerProcess(child)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn server(redis: &RedisServer, prefix: &str, visibility: u64) -> Server {
    let mut config = Config::default();
    config.broker = redis.url();
    config
        .section_mut::<machinery_redis::RedisConfig>()
        .key_prefix = prefix.to_owned();
    config.visibility_timeout = std::time::Duration::from_secs(visibility);
    Server::from_config(config)
        .await
        .expect("connect to the test redis")
}

async fn conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn counter(c: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    let v: Option<u64> = redis::cmd("GET").arg(key).query_async(c).await.unwrap();
    v.unwrap_or(0)
}

async fn until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_nothing() {
    let redis = RedisServer::start();
    let prefix = "crash";
    let server = server(&redis, prefix, 3).await;
    let n = 2_000u64;
    let mut batch = Vec::new();
    for id in 0..n {
        batch.push(work::s(id, 5).into_raw().unwrap());
    }
    let handles: Vec<_> = batch.iter().map(|r| (r.uuid, r.name.clone())).collect();
    server.send_batch(batch).await.unwrap();

    let mut c = conn(&redis).await;
    let first = WorkerProcess::start(&redis, prefix, "first", 16, 3);
    let started_key = format!("{prefix}:test:started");
    until(
        "a few hundred tasks started",
        Duration::from_secs(60),
        || {
            let mut c = c.clone();
            let key = started_key.clone();
            async move { counter(&mut c, &key).await >= 300 }
        },
    )
    .await;
    first.signal("KILL");
    drop(first);

    let _second = WorkerProcess::start(&redis, prefix, "second", 16, 3);
    for (uuid, name) in &handles {
        let r = server.result::<u64>(*uuid, name);
        r.get_timeout(Duration::from_secs(120)).await.unwrap();
        assert_eq!(r.state().await.unwrap(), State::Success);
    }
    let mut twice = 0;
    for id in 0..n {
        let runs = counter(&mut c, &runs_key(prefix, id)).await;
        assert!(runs >= 1, "task {id} never ran");
        if runs > 1 {
            twice += 1;
        }
    }
    println!("sigkill: {n} tasks, every one SUCCESS, {twice} ran more than once");
    // At most the tasks that were running (16) or fetched when the worker died.
    assert!(twice <= 64, "{twice} tasks ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_worker_is_fenced() {
    let redis = RedisServer::start();
    let prefix = "fence";
    let server = server(&redis, prefix, 2).await;
    let r = whoami::s(1, 4_000).send_with(&server).await.unwrap();
    let mut c = conn(&redis).await;
    let a = WorkerProcess::start(&redis, prefix, "A", 1, 2);
    let key = runs_key(prefix, 1);
    until("A started the task", Duration::from_secs(30), || {
        let mut c = c.clone();
        let key = key.clone();
        async move { counter(&mut c, &key).await == 1 }
    })
    .await;
    a.signal("STOP");
    // A's lease runs out (no heartbeats while stopped); B takes the task over.
    let b = WorkerProcess::start(&redis, prefix, "B", 1, 2);
    assert_eq!(r.get_timeout(Duration::from_secs(60)).await.unwrap(), "B");
    assert_eq!(counter(&mut c, &key).await, 2);
    a.signal("CONT");
    // A finishes its stale run; it must not overwrite B's result.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(r.get_timeout(Duration::from_secs(1)).await.unwrap(), "B");
    assert_eq!(r.state().await.unwrap(), State::Success);
    drop(a);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run() {
    let mut redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let prefix = "restart";
    let n = 5_000u64;
    let server = server(&redis, prefix, 5).await;
    let _worker = WorkerProcess::start(&redis, prefix, "w", 32, 5);
    let mut handles = Vec::new();
    let mut restarted = false;
    for id in 0..n {
        if id == n / 2 && !restarted {
            redis.restart();
            restarted = true;
        }
        // The producer retries while Redis is down: each send either errors quickly or
        // goes through.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // The task talks to Redis itself, so it fails while Redis is down: retries.
            let sig = work::s(id, 1)
                .retries(20)
                .retry_timeout(Duration::from_millis(200));
            match sig.send_with(&server).await {
                Ok(r) => {
                    handles.push(r);
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "send kept failing: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    for r in &handles {
        r.get_timeout(Duration::from_secs(120)).await.unwrap();
    }
    println!("restart: all {n} tasks completed across a Redis restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dead_lettered_and_valid_tasks_complete() {
    let redis = RedisServer::start();
    let prefix = "garbage";
    let server = server(&redis, prefix, 5).await;
    let q = server.config().default_queue.clone();
    let junk = |payload: Vec<u8>| Outgoing {
        uuid: Uuid::nil(),
        queue: q.clone(),
        eta: None,
        priority: 0,
        payload,
    };
    let before = work::s(1, 0).send_with(&server).await.unwrap();
    let mut truncated = work::s(2, 0).raw().encode().unwrap();
    truncated.truncate(truncated.len() / 2);
    let mut unknown = machinery_core::RawSignature::new("fault.nobody", vec![0x90]);
    unknown.routing_key = q.clone();
    let unknown_uuid = unknown.uuid;
    server
        .broker()
        .publish(vec![
            junk(b"\x00\xffrandom bytes".to_vec()),
            junk(truncated),
        ])
        .await
        .unwrap();
    server.send_raw(unknown).await.unwrap();
    let after = work::s(3, 0).send_with(&server).await.unwrap();
    let _w = WorkerProcess::start(&redis, prefix, "w", 4, 5);
    assert_eq!(
        before.get_timeout(Duration::from_secs(30)).await.unwrap(),
        1
    );
    assert_eq!(after.get_timeout(Duration::from_secs(30)).await.unwrap(), 3);
    let unknown = server.result::<()>(unknown_uuid, "fault.nobody");
    let err = unknown
        .get_timeout(Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not registered"), "{err}");
    until("three dead letters", Duration::from_secs(30), || async {
        server.dead_letters(&q).await.unwrap().len() == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_delayed_tasks_start_on_time() {
    let redis = RedisServer::start();
    let prefix = "delayed";
    let server = server(&redis, prefix, 30).await;
    let eta = SystemTime::now() + Duration::from_secs(5);
    let n = 10_000u64;
    let batch: Vec<_> = (0..n)
        .map(|id| work::s(id, 0).eta(eta).into_raw().unwrap())
        .collect();
    let handles: Vec<_> = batch.iter().map(|r| (r.uuid, r.name.clone())).collect();
    server.send_batch(batch).await.unwrap();
    assert_eq!(server.delayed_tasks(None).await.unwrap().len() as u64, n);
    let _w = WorkerProcess::start(&redis, prefix, "w", 0, 30);
    let mut c = conn(&redis).await;
    let started = format!("{prefix}:test:started");
    // Look just before the ETA: nothing may have started.
    let before_eta = eta
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(Duration::from_millis(300));
    tokio::time::sleep(before_eta).await;
    assert!(SystemTime::now() < eta, "the check ran before the ETA");
    assert_eq!(counter(&mut c, &started).await, 0, "nothing before the ETA");
    until("every task started", Duration::from_secs(60), || {
        let mut c = c.clone();
        let key = started.clone();
        async move { counter(&mut c, &key).await >= n }
    })
    .await;
    let late = SystemTime::now().duration_since(eta).unwrap_or_default();
    println!("delayed: {n} tasks due at one instant all started within {late:?} after it");
    // Generous: the tight figure belongs to the benchmark (`bench --scenario delayed`).
    assert!(
        late < Duration::from_secs(10),
        "started {late:?} after the ETA"
    );
    for (uuid, name) in handles.iter().step_by(97) {
        let r = server.result::<u64>(*uuid, name);
        r.get_timeout(Duration::from_secs(60)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_running_tasks_and_leaves_the_rest() {
    let redis = RedisServer::start();
    let prefix = "sigterm";
    let server = server(&redis, prefix, 30).await;
    let mut handles = Vec::new();
    for id in 0..20 {
        handles.push(work::s(id, 1_000).send_with(&server).await.unwrap());
    }
    let mut c = conn(&redis).await;
    let mut w = WorkerProcess::start(&redis, prefix, "w", 4, 30);
    let started = format!("{prefix}:test:started");
    until("four running", Duration::from_secs(30), || {
        let mut c = c.clone();
        let key = started.clone();
        async move { counter(&mut c, &key).await == 4 }
    })
    .await;
    w.signal("TERM");
    assert!(
        w.wait_exit(Duration::from_secs(30)),
        "worker exited after SIGTERM"
    );
    let mut done = 0;
    let mut pending = 0;
    for r in &handles {
        match r.state().await.unwrap() {
            State::Success => done += 1,
            State::Pending => pending += 1,
            s => panic!("unexpected state {s}"),
        }
    }
    assert_eq!((done, pending), (4, 16));
    assert_eq!(counter(&mut c, &started).await, 4);
    let q = server.config().default_queue.clone();
    assert_eq!(server.pending_tasks(&q).await.unwrap().len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_chord_still_gives_one_callback() {
    let redis = RedisServer::start();
    let prefix = "chordkill";
    let server = server(&redis, prefix, 2).await;
    let n = 200u64;
    let chord = machinery_core::group((0..n).map(|id| work::s(id, 20)))
        .chord(collect::partial())
        .send_with(&server)
        .await
        .unwrap();
    let mut c = conn(&redis).await;
    let first = WorkerProcess::start(&redis, prefix, "first", 8, 2);
    let started = format!("{prefix}:test:started");
    until("members running", Duration::from_secs(60), || {
        let mut c = c.clone();
        let key = started.clone();
        async move { counter(&mut c, &key).await >= 40 }
    })
    .await;
    first.signal("KILL");
    drop(first);
    let _second = WorkerProcess::start(&redis, prefix, "second", 8, 2);
    assert_eq!(
        chord.get_timeout(Duration::from_secs(120)).await.unwrap(),
        (0..n).sum::<u64>()
    );
    // Give a duplicate callback the chance to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let callbacks = counter(&mut c, &format!("{prefix}:test:callbacks")).await;
    assert_eq!(callbacks, 1, "exactly one chord callback");
    let mut twice = 0;
    for id in 0..n {
        if counter(&mut c, &runs_key(prefix, id)).await > 1 {
            twice += 1;
        }
    }
    println!("chord sigkill: {n} members, one callback, {twice} members ran twice");
}

/// A worker paused past the visibility timeout while its STARTED write is still due
/// (`started_after_ms` 1,500): another worker finishes the task, and the late STARTED
/// write of the first must not replace the SUCCESS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_worker_late_started_write_keeps_the_result() {
    let redis = RedisServer::start();
    let prefix = "late-started";
    let server = server(&redis, prefix, 2).await;
    let r = linger::s(1).send_with(&server).await.unwrap();
    let c = conn(&redis).await;
    let started_after = [("MACHINERY_STARTED_AFTER_MS", "1500")];
    let a = WorkerProcess::start_with(&redis, prefix, "A", 1, 2, &started_after);
    let key = runs_key(prefix, 1);
    until("A started the task", Duration::from_secs(30), || {
        let mut c = c.clone();
        let key = key.clone();
        async move { counter(&mut c, &key).await == 1 }
    })
    .await;
    a.signal("STOP");
    let b = WorkerProcess::start_with(&redis, prefix, "B", 1, 2, &started_after);
    assert_eq!(r.get_timeout(Duration::from_secs(60)).await.unwrap(), "B");
    drop(b);
    // A wakes up with its STARTED write overdue and its task still running (30 s).
    a.signal("CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(r.state().await.unwrap(), State::Success);
    assert_eq!(r.get_timeout(Duration::from_secs(1)).await.unwrap(), "B");
    drop(a);
}

/// A task that aborts its worker process, among thousands of good ones on two workers
/// that are restarted whenever they die: only the poison is dead-lettered, every good
/// task succeeds, in every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_alone() {
    let redis = RedisServer::start();
    for round in 0..3 {
        let prefix = format!("poison{round}");
        let server = server(&redis, &prefix, 1).await;
        let settings = [("MACHINERY_MAX_DELIVERIES", "3")];
        let start = |name: &str| WorkerProcess::start_with(&redis, &prefix, name, 8, 1, &settings);
        let mut workers = vec![start("w0"), start("w1")];
        let n = 3_000u64;
        let mut batch: Vec<_> = (0..n)
            .map(|id| work::s(id, 1).into_raw().unwrap())
            .collect();
        let poison = abort::s().into_raw().unwrap();
        let poison_id = (poison.uuid, poison.name.clone());
        batch.insert(usize::try_from(n / 3).unwrap(), poison);
        let good: Vec<_> = batch
            .iter()
            .filter(|r| r.uuid != poison_id.0)
            .map(|r| server.result::<u64>(r.uuid, &r.name))
            .collect();
        server.send_batch(batch).await.unwrap();
        let poisoned = server.result::<()>(poison_id.0, &poison_id.1);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut deaths = 0;
        loop {
            for (i, w) in workers.iter_mut().enumerate() {
                if let Ok(Some(_)) = w.0.try_wait() {
                    deaths += 1;
                    *w = start(&format!("w{i}-{deaths}"));
                }
            }
            if matches!(poisoned.state().await, Ok(State::Failure)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the poison was never dead-lettered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let err = poisoned
            .get_timeout(Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("delivered 4 times"), "{err}");
        for r in &good {
            // Keep the workers alive while waiting (a death now would be a bug too).
            assert!(
                r.get_timeout(Duration::from_secs(60)).await.is_ok(),
                "round {round}: a good task failed: {:?}",
                r.task_state().await
            );
        }
        let q = server.config().default_queue.clone();
        let dead = server.dead_letters(&q).await.unwrap();
        assert_eq!(
            dead.len(),
            1,
            "round {round}: only the poison is dead: {dead:?}"
        );
        println!(
            "poison round {round}: {deaths} worker deaths, 1 dead letter, {n} good tasks SUCCESS"
        );
        drop(workers);
    }
}

/// The worker registry, for real: a worker killed with SIGKILL disappears within three
/// heartbeats, one stopped by SIGTERM at once; the in-flight listing names the worker
/// that holds each task; a queue paused before its workers start stays paused across
/// their restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_follows_killed_and_stopped_workers_and_pause_outlives_them() {
    let redis = RedisServer::start();
    let prefix = "registry";
    let server = server(&redis, prefix, 30).await;
    let inspector = server.inspect().unwrap();
    let heartbeat = [("MACHINERY_WORKER_HEARTBEAT", "1s")];
    let mut a = WorkerProcess::start_with(&redis, prefix, "A", 1, 30, &heartbeat);
    let names = || async {
        let mut names: Vec<String> = inspector
            .workers()
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.name)
            .collect();
        names.sort();
        names
    };
    until("A registered", Duration::from_secs(20), || async {
        names().await == ["A"]
    })
    .await;

    // A runs a long task: the registry says so, and the in-flight listing names A.
    let r = linger::s(1).send_with(&server).await.unwrap();
    let queue = r.queue().to_owned();
    let a_id = until_some("A runs the task", Duration::from_secs(20), || async {
        inspector
            .workers()
            .await
            .unwrap()
            .into_iter()
            .find(|w| w.name == "A" && w.running.iter().any(|t| t.uuid == r.uuid()))
            .map(|w| w.id)
    })
    .await;
    let page = inspector
        .tasks(
            &queue,
            machinery_core::inspect::TaskList::InFlight,
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].uuid, Some(r.uuid()));
    assert_eq!(page.items[0].worker.as_deref(), Some(a_id.as_str()));
    assert!(page.items[0].lease_deadline.is_some());

    let mut b = WorkerProcess::start_with(&redis, prefix, "B", 1, 30, &heartbeat);
    until(
        "both workers registered",
        Duration::from_secs(20),
        || async { names().await == ["A", "B"] },
    )
    .await;

    // SIGKILL A: its record goes within three heartbeats (plus the listing's poll).
    a.signal("KILL");
    assert!(a.wait_exit(Duration::from_secs(5)));
    let killed = Instant::now();
    until("A's record expired", Duration::from_secs(10), || async {
        names().await == ["B"]
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "gone within about three heartbeats: {:?}",
        killed.elapsed()
    );

    // SIGTERM B: a graceful stop removes its record at once.
    b.signal("TERM");
    assert!(b.wait_exit(Duration::from_secs(20)));
    assert!(names().await.is_empty(), "a stopped worker unregisters");

    // Pause, then start a fresh worker: nothing runs until the resume.
    assert!(inspector.pause(&queue).await.unwrap());
    let _c = WorkerProcess::start_with(&redis, prefix, "C", 1, 30, &heartbeat);
    until("C registered", Duration::from_secs(20), || async {
        names().await == ["C"]
    })
    .await;
    let mut c = conn(&redis).await;
    let before = counter(&mut c, &runs_key(prefix, 2)).await;
    let r2 = work::s(2, 0).send_with(&server).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(counter(&mut c, &runs_key(prefix, 2)).await, before);
    assert_eq!(r2.state().await.unwrap(), State::Pending);
    assert!(inspector.resume(&queue).await.unwrap());
    assert_eq!(
        r2.get_timeout(Duration::from_secs(20)).await.unwrap(),
        2,
        "runs once resumed"
    );
}

async fn until_some<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A long task in a worker child process is cancelled through `server.revoke`: the
/// revocation reaches the worker by pub/sub, its run is dropped after the grace period
/// (the task does not look at `ctx.cancelled()`), and it ends REVOKED; a task still
/// waiting behind it is revoked before it runs and never runs; the worker goes on with
/// new work. Prints the time from the revoke to the REVOKED state (grace included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_cancels_a_running_task_in_a_worker_process() {
    let redis = RedisServer::start();
    let prefix = "revoke";
    let server = server(&redis, prefix, 30).await;
    let mut c = conn(&redis).await;
    let _worker = WorkerProcess::start_with(
        &redis,
        prefix,
        "w",
        1,
        30,
        &[("MACHINERY_REVOKE_GRACE", "200ms")],
    );
    // Concurrency 1: the second task waits behind the first.
    let running = work::s(1, 120_000).send_with(&server).await.unwrap();
    let waiting = work::s(2, 5).send_with(&server).await.unwrap();
    until("the long task started", Duration::from_secs(60), || {
        let mut c = c.clone();
        async move { counter(&mut c, &runs_key(prefix, 1)).await >= 1 }
    })
    .await;
    assert_eq!(
        server.revoke(waiting.uuid()).await.unwrap(),
        RevokeOutcome::Revoked
    );
    let started = Instant::now();
    // Cancelling once its STARTED is stored; Revoked (stored at once, the worker told
    // all the same) if the revoke came first.
    let outcome = server.revoke(running.uuid()).await.unwrap();
    assert!(
        matches!(outcome, RevokeOutcome::Cancelling | RevokeOutcome::Revoked),
        "{outcome:?}"
    );
    match running.get_timeout(Duration::from_secs(30)).await {
        Err(Error::Revoked { uuid, reason, .. }) => {
            assert_eq!((uuid, reason.as_str()), (running.uuid(), "revoked"));
        }
        other => panic!("the running task was not revoked: {other:?}"),
    }
    let latency = started.elapsed();
    println!(
        "revoke → REVOKED state of a running task in a worker process: {latency:?} (grace 200 ms; the task ignores ctx.cancelled())"
    );
    assert_eq!(running.state().await.unwrap(), State::Revoked);
    assert!(matches!(
        waiting.get_timeout(Duration::from_secs(30)).await,
        Err(Error::Revoked { .. })
    ));
    // The worker goes on: a new task runs, and the revoked waiting one never did.
    let next = work::s(3, 5).send_with(&server).await.unwrap();
    assert_eq!(next.get_timeout(Duration::from_secs(30)).await.unwrap(), 3);
    assert_eq!(counter(&mut c, &runs_key(prefix, 2)).await, 0);
    assert_eq!(counter(&mut c, &runs_key(prefix, 1)).await, 1);
}
