//! Conformance tests of task progress: `TaskContext::set_progress`, its coalescing by
//! the worker, and `AsyncResult::progress` / `progress_stream` on every engine.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::Harness;
use crate::config::Config;
use crate::engine::{
    ChordOutcome, GroupMember, Outgoing, ResultBackend, Revocation, RevokeOutcome, StoreId,
};
use crate::error::{Error, Result};
use crate::result::{AsyncResult, State, TaskState};
use crate::server::Server;
use crate::worker::{Worker, WorkerHandle};
use crate::{TaskContext, TaskError, task};

const WAIT: Duration = Duration::from_secs(20);

fn key(name: &str) -> String {
    format!("{name}-{}", Uuid::now_v7())
}

/// A config whose worker writes progress every `interval`.
fn config(interval: Duration) -> Config {
    Config {
        unregistered_requeues: 1,
        progress_interval: interval,
        ..Config::default()
    }
}

fn worker(server: &Server) -> WorkerHandle {
    Worker::auto()
        .server(server)
        .grace_period(Duration::from_secs(10))
        .spawn()
        .expect("worker starts")
}

/// Polls `cond` every 10 ms until it holds, for at most [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Collects a progress stream until it ends, failing after [`WAIT`] (a stream that
/// does not end is the bug this guards against).
async fn collect<P: Send + 'static>(
    stream: impl futures_util::Stream<Item = Result<P>> + Send + 'static,
) -> Vec<P> {
    tokio::time::timeout(WAIT, stream.map(|p| p.unwrap()).collect::<Vec<_>>())
        .await
        .expect("the progress stream ended")
}

// ---- gates the tasks wait on, one per key ---------------------------------------------

fn gates() -> std::sync::MutexGuard<'static, HashMap<String, watch::Sender<bool>>> {
    static GATES: OnceLock<Mutex<HashMap<String, watch::Sender<bool>>>> = OnceLock::new();
    GATES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn gate(key: &str) -> watch::Sender<bool> {
    gates()
        .entry(key.to_owned())
        .or_insert_with(|| watch::channel(false).0)
        .clone()
}

fn open(key: &str) {
    gate(key).send_replace(true);
}

async fn wait_open(key: &str) {
    let mut rx = gate(key).subscribe();
    let _ = rx.wait_for(|open| *open).await;
}

fn wait_open_blocking(key: &str) {
    let rx = gate(key).subscribe();
    while !*rx.borrow() {
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---- tasks ----------------------------------------------------------------------------

/// A progress value with some shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub done: u32,
    pub of: u32,
    pub note: String,
}

/// Reports `Step { done: i, of: steps }` for each step, waiting on gate `<key>-<i>`
/// before it.
#[task(name = "conformance.progress_steps")]
pub async fn progress_steps(ctx: TaskContext, key: String, steps: u32) -> Result<u32, TaskError> {
    for i in 1..=steps {
        wait_open(&format!("{key}-{i}")).await;
        ctx.set_progress(Step {
            done: i,
            of: steps,
            note: format!("step {i}"),
        });
    }
    Ok(steps)
}

/// Reports progress in a tight loop for `millis`, then returns how many calls it made
/// (its last value is that count).
#[task(name = "conformance.progress_spin")]
pub async fn progress_spin(ctx: TaskContext, millis: u64) -> Result<u64, TaskError> {
    let began = std::time::Instant::now();
    let mut calls = 0u64;
    while began.elapsed() < Duration::from_millis(millis) {
        calls += 1;
        ctx.set_progress(calls);
        if calls.is_multiple_of(1024) {
            tokio::task::yield_now().await;
        }
    }
    Ok(calls)
}

/// The same tight loop on the blocking pool, after reporting `"started"` and waiting
/// on gate `key`.
#[task(name = "conformance.progress_blocking")]
pub fn progress_blocking(ctx: TaskContext, key: String, millis: u64) -> Result<u64, TaskError> {
    ctx.set_progress("started");
    wait_open_blocking(&key);
    let began = std::time::Instant::now();
    let mut calls = 0u64;
    while began.elapsed() < Duration::from_millis(millis) {
        calls += 1;
        ctx.set_progress(calls);
    }
    Ok(calls)
}

/// A value whose encoding always fails.
pub struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

/// Reports a value that cannot be encoded, then `then` when given.
#[task(name = "conformance.progress_unencodable")]
pub async fn progress_unencodable(ctx: TaskContext, then: Option<u32>) -> Result<(), TaskError> {
    ctx.set_progress(Unencodable);
    if let Some(v) = then {
        ctx.set_progress(v);
        ctx.set_progress(Unencodable);
    }
    Ok(())
}

/// Reports `value`, then fails with `message` (retried as the signature says).
#[task(name = "conformance.progress_then_fail")]
pub async fn progress_then_fail(
    ctx: TaskContext,
    value: u32,
    message: String,
) -> Result<(), TaskError> {
    ctx.set_progress(value + ctx.retried());
    Err(TaskError::msg(message))
}

// ---- a backend that counts progress writes --------------------------------------------

/// Forwards everything to `inner`, counting `set_progress` calls per task.
struct Counting {
    inner: Arc<dyn ResultBackend>,
    writes: Mutex<HashMap<Uuid, u64>>,
    total: AtomicU64,
}

impl Counting {
    fn writes(&self, uuid: Uuid) -> u64 {
        self.writes.lock().unwrap().get(&uuid).copied().unwrap_or(0)
    }
}

#[async_trait]
impl ResultBackend for Counting {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }
    async fn store(&self, states: &[TaskState]) -> Result<()> {
        self.inner.store(states).await
    }
    async fn store_new(&self, states: &[TaskState]) -> Result<()> {
        self.inner.store_new(states).await
    }
    async fn load(&self, queue: &str, uuid: Uuid) -> Result<Option<TaskState>> {
        self.inner.load(queue, uuid).await
    }
    async fn wait(&self, queue: &str, uuid: Uuid, timeout: Option<Duration>) -> Result<TaskState> {
        self.inner.wait(queue, uuid, timeout).await
    }
    async fn init_chord(&self, group: Uuid, count: u32, callback: &Outgoing) -> Result<()> {
        self.inner.init_chord(group, count, callback).await
    }
    async fn chord_member_done(
        &self,
        member: &GroupMember,
        state: &TaskState,
    ) -> Result<Option<Outgoing>> {
        self.inner.chord_member_done(member, state).await
    }
    async fn chord_outcome(&self, queue: &str, group: Uuid) -> Result<ChordOutcome> {
        self.inner.chord_outcome(queue, group).await
    }
    async fn chord_finished(&self, queue: &str, group: Uuid) -> Result<()> {
        self.inner.chord_finished(queue, group).await
    }
    async fn forget(&self, queue: &str, uuid: Uuid) -> Result<()> {
        self.inner.forget(queue, uuid).await
    }
    async fn revoke(
        &self,
        queue: &str,
        uuid: Uuid,
        reason: &str,
        until: Option<u64>,
    ) -> Result<RevokeOutcome> {
        self.inner.revoke(queue, uuid, reason, until).await
    }
    async fn revocations(&self) -> Result<Vec<Revocation>> {
        self.inner.revocations().await
    }
    async fn watch_revocations(&self) -> Result<BoxStream<'static, Revocation>> {
        self.inner.watch_revocations().await
    }
    async fn set_progress(&self, queue: &str, uuid: Uuid, value: &[u8]) -> Result<()> {
        *self.writes.lock().unwrap().entry(uuid).or_default() += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        self.inner.set_progress(queue, uuid, value).await
    }
    async fn progress(&self, queue: &str, uuid: Uuid) -> Result<Option<Vec<u8>>> {
        self.inner.progress(queue, uuid).await
    }
    async fn watch_progress(&self, queue: &str, uuid: Uuid) -> Result<BoxStream<'static, Vec<u8>>> {
        self.inner.watch_progress(queue, uuid).await
    }
    fn store_id(&self) -> Option<&StoreId> {
        self.inner.store_id()
    }
}

/// The harness's server for `config`, its result backend wrapped in [`Counting`].
async fn counting<H: Harness>(h: &H, config: Config) -> (Server, Arc<Counting>) {
    let server = h.server(config).await;
    let counting = Arc::new(Counting {
        inner: server.backend().clone(),
        writes: Mutex::new(HashMap::new()),
        total: AtomicU64::new(0),
    });
    let wrapped = Server::new(
        server.config().clone(),
        server.broker().clone(),
        counting.clone(),
    );
    (wrapped, counting)
}

// ---- the tests ------------------------------------------------------------------------

/// A value reported while the task runs is read back, typed and while running; the
/// last one stays after the task finished; a handle made from the UUID alone reads it
/// too.
pub async fn progress_read_back<H: Harness>(h: &H) {
    let server = h.server(config(Duration::from_millis(20))).await;
    let k = key("read");
    let r = progress_steps::s(k.clone(), 2)
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(
        r.progress::<Step>().await.unwrap(),
        None,
        "nothing reported yet"
    );
    let w = worker(&server);
    open(&format!("{k}-1"));
    eventually("the first step is readable while the task runs", || async {
        r.progress::<Step>()
            .await
            .unwrap()
            .is_some_and(|s| s.done == 1)
    })
    .await;
    assert!(!r.state().await.unwrap().is_terminal());
    open(&format!("{k}-2"));
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 2);
    let last = Step {
        done: 2,
        of: 2,
        note: "step 2".into(),
    };
    assert_eq!(r.progress::<Step>().await.unwrap(), Some(last.clone()));
    // Any type the value decodes as.
    let loose: HashMap<String, serde_json::Value> = r.progress().await.unwrap().unwrap();
    assert_eq!(loose["note"], "step 2");
    // A type it does not decode as.
    assert!(matches!(
        r.progress::<Vec<u64>>().await,
        Err(Error::Decode { .. })
    ));
    let by_uuid: AsyncResult<u32> = server.result(r.uuid(), r.name());
    assert_eq!(by_uuid.progress::<Step>().await.unwrap(), Some(last));
    assert_eq!(by_uuid.queue(), r.queue(), "the lookup found the queue");
    w.shutdown().await.unwrap();
}

/// A stream started before the task runs sees each value in order, once, and ends
/// when the task finishes; one started from a UUID alone does the same.
pub async fn progress_stream_follows_and_ends<H: Harness>(h: &H) {
    let server = h.server(config(Duration::from_millis(20))).await;
    let k = key("stream");
    let steps = 5;
    let r = progress_steps::s(k.clone(), steps)
        .send_with(&server)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let by_uuid: AsyncResult<u32> = server.result(r.uuid(), r.name());
    let follow =
        |stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Step>> + Send>>,
         seen: Arc<Mutex<Vec<u32>>>| {
            tokio::spawn(async move {
                let mut stream = stream;
                let mut all = Vec::new();
                while let Some(step) = tokio::time::timeout(WAIT, stream.next())
                    .await
                    .expect("the stream goes on or ends")
                {
                    let step = step.unwrap();
                    seen.lock().unwrap().push(step.done);
                    all.push(step.done);
                }
                all
            })
        };
    let other = Arc::new(Mutex::new(Vec::new()));
    let first = follow(Box::pin(r.progress_stream::<Step>()), seen.clone());
    let second = follow(Box::pin(by_uuid.progress_stream::<Step>()), other.clone());
    let w = worker(&server);
    for i in 1..=steps {
        open(&format!("{k}-{i}"));
        // Each value reaches both streams before the next is reported: none may be
        // coalesced away, so each must be seen.
        eventually(&format!("both streams saw step {i}"), || async {
            seen.lock().unwrap().last() == Some(&i) && other.lock().unwrap().last() == Some(&i)
        })
        .await;
    }
    let all: Vec<u32> = (1..=steps).collect();
    assert_eq!(
        first.await.unwrap(),
        all,
        "each value once, in order, then the end"
    );
    assert_eq!(second.await.unwrap(), all);
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), steps);
    w.shutdown().await.unwrap();
}

/// A stream of a task that is already final yields its last value and ends; so does
/// one of a task that finishes while the stream starts (raced many times); one of a
/// task that reported nothing ends empty.
pub async fn progress_stream_of_finished_tasks_ends<H: Harness>(h: &H) {
    let server = h.server(config(Duration::from_millis(20))).await;
    let w = worker(&server);
    let r = progress_spin::s(20).send_with(&server).await.unwrap();
    let calls = r.get_timeout(WAIT).await.unwrap();
    assert_eq!(collect(r.progress_stream::<u64>()).await, vec![calls]);

    // Streams started as the tasks run and finish: each ends, on its task's last value.
    let mut handles = Vec::new();
    for _ in 0..30 {
        handles.push(progress_spin::s(1).send_with(&server).await.unwrap());
    }
    let mut streams = Vec::new();
    for r in &handles {
        streams.push(tokio::spawn(collect(r.progress_stream::<u64>())));
    }
    for (r, stream) in handles.iter().zip(streams) {
        let seen = stream.await.unwrap();
        let calls = r.get_timeout(WAIT).await.unwrap();
        assert_eq!(
            seen.last(),
            Some(&calls),
            "the last value comes before the end"
        );
        assert!(seen.windows(2).all(|p| p[0] < p[1]), "increasing: {seen:?}");
    }

    let quiet = progress_unencodable::s(None)
        .send_with(&server)
        .await
        .unwrap();
    quiet.get_timeout(WAIT).await.unwrap();
    assert!(collect(quiet.progress_stream::<u64>()).await.is_empty());
    w.shutdown().await.unwrap();
}

/// A task that fails keeps its stream open through its retries; the stream ends at
/// FAILURE, after the last run's value.
pub async fn progress_stream_ends_at_failure<H: Harness>(h: &H) {
    let server = h.server(config(Duration::from_millis(20))).await;
    let r = progress_then_fail::s(10, "nope".into())
        .retries(2)
        .retry_timeout(Duration::from_millis(20))
        .send_with(&server)
        .await
        .unwrap();
    let stream = tokio::spawn(collect(r.progress_stream::<u32>()));
    let w = worker(&server);
    let seen = stream.await.unwrap();
    assert!(matches!(
        r.get_timeout(WAIT).await,
        Err(Error::TaskFailed { .. })
    ));
    assert_eq!(seen.last(), Some(&12), "the third run's value: {seen:?}");
    assert!(seen.windows(2).all(|p| p[0] < p[1]), "increasing: {seen:?}");
    assert_eq!(r.progress::<u32>().await.unwrap(), Some(12));
    w.shutdown().await.unwrap();
}

/// A task calling `set_progress` in a tight loop costs the backend at most one write
/// per `progress_interval` (plus the first and the last), and its last value always
/// lands.
pub async fn progress_is_coalesced<H: Harness>(h: &H) {
    let interval = Duration::from_millis(100);
    let (server, counting) = counting(h, config(interval)).await;
    let w = worker(&server);
    let began = std::time::Instant::now();
    let r = progress_spin::s(600).send_with(&server).await.unwrap();
    let calls = r.get_timeout(WAIT).await.unwrap();
    let elapsed = began.elapsed();
    let writes = counting.writes(r.uuid());
    assert!(calls > 1000, "the loop is tight: {calls} calls");
    // The writer writes at once, then waits an interval before each further write;
    // the final write comes on top. However slow the machine, never more than that.
    let bound = 2 + (elapsed.as_millis() / interval.as_millis()) as u64;
    assert!(
        (2..=bound).contains(&writes),
        "{writes} writes for {calls} calls in {elapsed:?} (at most {bound})"
    );
    assert_eq!(
        r.progress::<u64>().await.unwrap(),
        Some(calls),
        "the last value lands"
    );
    eprintln!(
        "progress coalescing ({}): {calls} set_progress calls in {elapsed:?} -> {writes} writes",
        server.backend().engine()
    );
    w.shutdown().await.unwrap();
    assert_eq!(
        counting.total.load(Ordering::Relaxed),
        writes,
        "no write after the task settled"
    );
}

/// A blocking `fn` task reports progress while it runs (seen before it finishes), is
/// coalesced the same way, and its last value lands.
pub async fn progress_from_blocking_tasks<H: Harness>(h: &H) {
    let interval = Duration::from_millis(100);
    let (server, counting) = counting(h, config(interval)).await;
    let w = worker(&server);
    let k = key("blocking");
    let r = progress_blocking::s(k.clone(), 300)
        .send_with(&server)
        .await
        .unwrap();
    eventually("the blocking task's first value", || async {
        r.progress::<String>().await.ok().flatten().as_deref() == Some("started")
    })
    .await;
    assert!(!r.state().await.unwrap().is_terminal());
    let began = std::time::Instant::now();
    open(&k);
    let calls = r.get_timeout(WAIT).await.unwrap();
    let elapsed = began.elapsed();
    assert_eq!(r.progress::<u64>().await.unwrap(), Some(calls));
    let writes = counting.writes(r.uuid());
    // "started" at once; then the loop's values, coalesced, and the last.
    let bound = 3 + (elapsed.as_millis() / interval.as_millis()) as u64;
    assert!(
        (2..=bound).contains(&writes),
        "{writes} writes for {calls} calls in {elapsed:?} (at most {bound})"
    );
    w.shutdown().await.unwrap();
}

/// A value that cannot be encoded is logged and dropped: the task still succeeds, and
/// values reported before or after it are kept.
pub async fn progress_unencodable_is_not_fatal<H: Harness>(h: &H) {
    let server = h.server(config(Duration::from_millis(20))).await;
    let w = worker(&server);
    let only = progress_unencodable::s(None)
        .send_with(&server)
        .await
        .unwrap();
    only.get_timeout(WAIT).await.unwrap();
    assert_eq!(only.state().await.unwrap(), State::Success);
    assert_eq!(only.progress::<u32>().await.unwrap(), None);
    let mixed = progress_unencodable::s(Some(7))
        .send_with(&server)
        .await
        .unwrap();
    mixed.get_timeout(WAIT).await.unwrap();
    assert_eq!(mixed.state().await.unwrap(), State::Success);
    assert_eq!(mixed.progress::<u32>().await.unwrap(), Some(7));
    w.shutdown().await.unwrap();
}

/// Progress of a task nobody knows is `None`, by UUID alone and with a queue; its
/// stream fails with `ResultMissing` at once instead of waiting.
pub async fn progress_of_unknown_task<H: Harness>(h: &H) {
    let server = h.server(config(Duration::from_millis(20))).await;
    let uuid = Uuid::now_v7();
    let by_uuid: AsyncResult<u32> = server.result(uuid, "conformance.nothing");
    assert_eq!(by_uuid.progress::<u32>().await.unwrap(), None);
    let in_queue: AsyncResult<u32> = server.result_in(uuid, "conformance.nothing", "somewhere");
    assert_eq!(in_queue.progress::<u32>().await.unwrap(), None);
    assert_eq!(server.backend().progress("", uuid).await.unwrap(), None);
    for handle in [by_uuid, in_queue] {
        let items: Vec<Result<u32>> =
            tokio::time::timeout(WAIT, handle.progress_stream().collect())
                .await
                .expect("the stream of an unknown task ends");
        assert_eq!(items.len(), 1, "{items:?}");
        assert!(
            matches!(items[0], Err(Error::ResultMissing(u)) if u == uuid),
            "{items:?}"
        );
    }
}

/// The last value stays readable after the final state, until the results TTL passes
/// (then it is gone with the state); forgetting a task drops its progress too.
pub async fn progress_outlives_the_task_until_the_ttl<H: Harness>(h: &H) {
    let mut config = config(Duration::from_millis(20));
    config.results_expire_in = Duration::from_secs(1);
    let server = h.server(config).await;
    let w = worker(&server);
    let r = progress_spin::s(5).send_with(&server).await.unwrap();
    let calls = r.get_timeout(WAIT).await.unwrap();
    assert_eq!(r.progress::<u64>().await.unwrap(), Some(calls));
    eventually("the progress expires with the results TTL", || async {
        r.progress::<u64>().await.unwrap().is_none()
    })
    .await;

    let forgotten = progress_spin::s(5).send_with(&server).await.unwrap();
    forgotten.get_timeout(WAIT).await.unwrap();
    assert!(forgotten.progress::<u64>().await.unwrap().is_some());
    server
        .backend()
        .forget(forgotten.queue(), forgotten.uuid())
        .await
        .unwrap();
    assert_eq!(
        server
            .backend()
            .progress(forgotten.queue(), forgotten.uuid())
            .await
            .unwrap(),
        None
    );
    w.shutdown().await.unwrap();
}
