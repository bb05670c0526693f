//! Conformance cases for rate limits: task limits, queue limits, both, several
//! workers, and waiting without spinning. Bounds are counts over windows, generous
//! enough for a loaded machine; the limiter's own arithmetic is unit-tested in
//! `engine::rate`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use uuid::Uuid;

use super::Harness;
use super::tasks::{add, count, count_then_sleep};
use crate::config::Config;
use crate::engine::{
    Broker, BrokerAdmin, Completion, Delivery, Outgoing, Reservation, ResultBackend,
};
use crate::error::Result;
use crate::rate::RateLimit;
use crate::result::{AsyncResult, State, TaskState};
use crate::server::Server;
use crate::worker::{Worker, WorkerHandle};
use crate::{DeadLetterReason, TaskError, task};

const WAIT: Duration = Duration::from_secs(30);

fn starts() -> std::sync::MutexGuard<'static, HashMap<String, Vec<Instant>>> {
    static STARTS: OnceLock<Mutex<HashMap<String, Vec<Instant>>>> = OnceLock::new();
    STARTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn started(key: &str) -> Vec<Instant> {
    starts().get(key).cloned().unwrap_or_default()
}

/// Records its start under `key`; at most 10 starts a second, across every worker.
#[task(name = "conformance.rate_limited", rate_limit = "10/s")]
pub async fn rate_limited(key: String) -> std::result::Result<(), TaskError> {
    starts().entry(key).or_default().push(Instant::now());
    Ok(())
}

/// Records its start under `key`; at most one start a minute.
#[task(name = "conformance.rate_slow", rate_limit = "1/m")]
pub async fn rate_slow(key: String) -> std::result::Result<(), TaskError> {
    starts().entry(key).or_default().push(Instant::now());
    Ok(())
}

fn key(name: &str) -> String {
    format!("{name}-{}", Uuid::now_v7())
}

fn worker(server: &Server, queues: &[&str]) -> WorkerHandle {
    let mut w = Worker::auto()
        .server(server)
        .concurrency(8)
        .grace_period(Duration::from_secs(10));
    for q in queues {
        w = w.queue(*q);
    }
    w.spawn().expect("worker starts")
}

async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every final state is SUCCESS, and each task ran on its first delivery: waiting for
/// a slot (handed back, maybe several times) is not counted as a delivery.
async fn all_succeed_first_time(results: &[AsyncResult<()>]) {
    for r in results {
        r.get_timeout(WAIT).await.expect("succeeds");
        let state: TaskState = r.task_state().await.unwrap();
        assert_eq!(state.state, State::Success);
        assert_eq!(
            state.delivery, 1,
            "waiting for a slot counted as a delivery"
        );
    }
}

/// Starts at most `per_window` (+1 for a window's two ends) in any `window`, and the
/// whole run spans at least `(n - 1) * interval * 0.8`.
fn assert_spaced(times: &[Instant], per_window: usize, window: Duration, interval: Duration) {
    let mut times = times.to_vec();
    times.sort();
    for (i, t) in times.iter().enumerate() {
        let within = times[i..].iter().take_while(|u| **u - *t < window).count();
        assert!(
            within <= per_window + 1,
            "{within} starts within {window:?} (limit {per_window})"
        );
    }
    let span = *times.last().unwrap() - times[0];
    let least = interval.mul_f64((times.len() - 1) as f64 * 0.8);
    assert!(span >= least, "{} starts in {span:?}", times.len());
}

pub async fn rate_task_limit_spaces_starts<H: Harness>(h: &H) {
    let server = h.server(Config::default()).await;
    let k = key("rate-task");
    let mut results = Vec::new();
    for _ in 0..25 {
        results.push(rate_limited::s(k.clone()).send_with(&server).await.unwrap());
    }
    let w = worker(&server, &[]);
    eventually("25 starts", || async { started(&k).len() == 25 }).await;
    all_succeed_first_time(&results).await;
    assert_spaced(
        &started(&k),
        10,
        Duration::from_secs(1),
        Duration::from_millis(100),
    );
    w.shutdown().await.unwrap();
}

pub async fn rate_two_workers_share_a_limit<H: Harness>(h: &H) {
    let server = h.server(Config::default()).await;
    let k = key("rate-two");
    let (w1, w2) = (worker(&server, &[]), worker(&server, &[]));
    let mut results = Vec::new();
    for _ in 0..20 {
        results.push(rate_limited::s(k.clone()).send_with(&server).await.unwrap());
    }
    eventually("20 starts", || async { started(&k).len() == 20 }).await;
    all_succeed_first_time(&results).await;
    assert_spaced(
        &started(&k),
        10,
        Duration::from_secs(1),
        Duration::from_millis(100),
    );
    w1.shutdown().await.unwrap();
    w2.shutdown().await.unwrap();
}

pub async fn rate_queue_limit_spaces_any_task<H: Harness>(h: &H) {
    let mut config = Config::default();
    config
        .rate_limits
        .insert("rate-q".to_owned(), RateLimit::new(10, 1000));
    let server = h.server(config).await;
    let k = key("rate-queue");
    let mut results = Vec::new();
    for _ in 0..20 {
        let r = count_then_sleep::s(k.clone(), 0)
            .queue("rate-q")
            .send_with(&server)
            .await
            .unwrap();
        results.push(r);
    }
    // The same task in another queue is not limited.
    let free = key("rate-free");
    for _ in 0..20 {
        count_then_sleep::s(free.clone(), 0)
            .queue("rate-free")
            .send_with(&server)
            .await
            .unwrap();
    }
    let w = worker(&server, &["rate-q", "rate-free"]);
    eventually("the unlimited queue drained", || async {
        count(&free) == 20
    })
    .await;
    for r in &results {
        r.get_timeout(WAIT).await.unwrap();
    }
    let times = super::tasks::times(&k);
    assert_eq!(times.len(), 20);
    assert_spaced(
        &times,
        10,
        Duration::from_secs(1),
        Duration::from_millis(100),
    );
    w.shutdown().await.unwrap();
}

pub async fn rate_task_and_queue_limits_both_hold<H: Harness>(h: &H) {
    let mut config = Config::default();
    // Stricter than the task's own 10/s: the queue's limit governs.
    config
        .rate_limits
        .insert("rate-both".to_owned(), RateLimit::new(5, 1000));
    let server = h.server(config).await;
    let k = key("rate-both");
    let mut results = Vec::new();
    for _ in 0..12 {
        let r = rate_limited::s(k.clone())
            .queue("rate-both")
            .send_with(&server)
            .await
            .unwrap();
        results.push(r);
    }
    let w = worker(&server, &["rate-both"]);
    eventually("12 starts", || async { started(&k).len() == 12 }).await;
    all_succeed_first_time(&results).await;
    assert_spaced(
        &started(&k),
        5,
        Duration::from_secs(1),
        Duration::from_millis(200),
    );
    w.shutdown().await.unwrap();
}

/// The harness's broker, counting fetches and reservations.
struct Counting {
    inner: Arc<dyn Broker>,
    fetches: AtomicUsize,
    reserves: AtomicUsize,
}

#[async_trait]
impl Broker for Counting {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }
    fn visibility_timeout(&self) -> Duration {
        self.inner.visibility_timeout()
    }
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<()> {
        self.inner.publish(messages).await
    }
    async fn fetch(&self, queues: &[String], max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.inner.fetch(queues, max, wait).await
    }
    async fn ack(&self, d: &Delivery) -> Result<()> {
        self.inner.ack(d).await
    }
    async fn extend(&self, d: &[Delivery]) -> Result<Vec<bool>> {
        self.inner.extend(d).await
    }
    async fn release(&self, d: &Delivery, delay: Option<Duration>) -> Result<()> {
        self.inner.release(d, delay).await
    }
    async fn defer(&self, d: &Delivery, delay: Duration) -> Result<()> {
        self.inner.defer(d, delay).await
    }
    async fn dead_letter(&self, d: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.inner.dead_letter(d, reason).await
    }
    async fn publish_with_states(
        &self,
        messages: Vec<Outgoing>,
        states: &[TaskState],
        backend: &dyn ResultBackend,
    ) -> Result<()> {
        self.inner
            .publish_with_states(messages, states, backend)
            .await
    }
    async fn complete(
        &self,
        completions: &[Completion],
        backend: &dyn ResultBackend,
    ) -> Result<Vec<Result<()>>> {
        self.inner.complete(completions, backend).await
    }
    async fn reserve_rate(
        &self,
        key: &str,
        limit: RateLimit,
        horizon: Duration,
    ) -> Result<Reservation> {
        self.reserves.fetch_add(1, Ordering::SeqCst);
        self.inner.reserve_rate(key, limit, horizon).await
    }
    fn admin(&self) -> Option<&dyn BrokerAdmin> {
        self.inner.admin()
    }
}

pub async fn rate_backlog_waits_without_spinning<H: Harness>(h: &H) {
    let plain = h.server(Config::default()).await;
    let counting = Arc::new(Counting {
        inner: plain.broker().clone(),
        fetches: AtomicUsize::new(0),
        reserves: AtomicUsize::new(0),
    });
    let server = Server::new(
        plain.config().clone(),
        counting.clone(),
        plain.backend().clone(),
    );
    let k = key("rate-slow");
    // A backlog of a task allowed once a minute, in its own queue.
    let mut slow = Vec::new();
    for _ in 0..30 {
        let r = rate_slow::s(k.clone())
            .queue("rate-slow")
            .send_with(&server)
            .await
            .unwrap();
        slow.push(r);
    }
    let w = worker(&server, &["rate-slow", "rate-fast"]);
    // Unlimited tasks in another queue still run, promptly.
    let mut fast = Vec::new();
    for i in 0..50 {
        let r = add::s(i, 1)
            .queue("rate-fast")
            .send_with(&server)
            .await
            .unwrap();
        fast.push(r);
    }
    for (i, r) in (0..).zip(&fast) {
        assert_eq!(r.get_timeout(WAIT).await.unwrap(), i + 1);
    }
    eventually("the first slow task", || async { started(&k).len() == 1 }).await;
    // The backlog waits, out of the way: a few seconds later, still one start, and
    // the worker has made a handful of calls, not thousands.
    let (fetches, reserves) = (
        counting.fetches.load(Ordering::SeqCst),
        counting.reserves.load(Ordering::SeqCst),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(started(&k).len(), 1);
    let fetched = counting.fetches.load(Ordering::SeqCst) - fetches;
    let reserved = counting.reserves.load(Ordering::SeqCst) - reserves;
    assert!(
        fetched <= 30,
        "{fetched} fetches in 3 s while the backlog waits"
    );
    assert!(
        reserved <= 3,
        "{reserved} reservations in 3 s while the backlog waits"
    );
    // The first reservation granted one slot; the second learnt there is none for a
    // minute; the other 28 messages went back without asking.
    assert!(
        counting.reserves.load(Ordering::SeqCst) <= 4,
        "{} reservations for 30 messages",
        counting.reserves.load(Ordering::SeqCst)
    );
    let state = slow[0].state().await.unwrap();
    assert!(
        matches!(state, State::Pending | State::Success),
        "{state:?}"
    );
    w.shutdown().await.unwrap();
}

pub async fn rate_unlimited_tasks_never_reserve<H: Harness>(h: &H) {
    let plain = h.server(Config::default()).await;
    let counting = Arc::new(Counting {
        inner: plain.broker().clone(),
        fetches: AtomicUsize::new(0),
        reserves: AtomicUsize::new(0),
    });
    let server = Server::new(
        plain.config().clone(),
        counting.clone(),
        plain.backend().clone(),
    );
    let w = worker(&server, &[]);
    for i in 0..20 {
        let r = add::s(i, 1).send_with(&server).await.unwrap();
        assert_eq!(r.get_timeout(WAIT).await.unwrap(), i + 1);
    }
    assert_eq!(counting.reserves.load(Ordering::SeqCst), 0);
    w.shutdown().await.unwrap();
}
