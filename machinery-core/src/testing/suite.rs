//! The conformance tests. Each is an `async fn(&impl Harness)` that panics on failure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::Harness;
pub use super::progress::*;
#[allow(unused_imports)]
pub use super::rate::*;
use super::tasks::{self, *};
#[allow(unused_imports)]
pub use super::unique::*;
pub use super::workflow::*;
use crate::config::Config;
use crate::engine::{BrokerAdmin, Completion, Outgoing};
use crate::error::Error;
use crate::inspect::{
    ListedTask, Page, QueueInfo, RegisteredTask, RunningTask, StatsBucket, TaskList, WorkerInfo,
};
use crate::result::{State, TaskState};
use crate::server::Server;
use crate::signature::{RawSignature, Signature};
use crate::worker::{Worker, WorkerHandle};

pub use super::revoke::*;

const WAIT: Duration = Duration::from_secs(20);

fn key(name: &str) -> String {
    format!("{name}-{}", Uuid::now_v7())
}

fn fast_config() -> Config {
    Config {
        unregistered_requeues: 1,
        ..Config::default()
    }
}

async fn server<H: Harness>(h: &H) -> Server {
    h.server(fast_config()).await
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

pub async fn send_and_get<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let r = add::s(1, 2).send_with(&server).await.unwrap();
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 3);
    assert_eq!(r.state().await.unwrap(), State::Success);
    assert_eq!(r.name(), "conformance.add");
    w.shutdown().await.unwrap();
}

pub async fn pending_then_success<H: Harness>(h: &H) {
    let server = server(h).await;
    let k = key("gate");
    let r = gate::s(k.clone()).send_with(&server).await.unwrap();
    assert_eq!(r.state().await.unwrap(), State::Pending);
    let w = worker(&server);
    eventually("STARTED", || async {
        r.state().await.unwrap() == State::Started
    })
    .await;
    tasks::open(&k);
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), k);
    assert_eq!(r.state().await.unwrap(), State::Success);
    w.shutdown().await.unwrap();
}

pub async fn failure_is_reported<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let r = fail::s("no luck".into()).send_with(&server).await.unwrap();
    match r.get_timeout(WAIT).await {
        Err(Error::TaskFailed { message, name, .. }) => {
            assert_eq!(message, "no luck");
            assert_eq!(name, "conformance.fail");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    let st = r.task_state().await.unwrap();
    assert_eq!(st.state, State::Failure);
    assert_eq!(st.error.as_deref(), Some("no luck"));
    w.shutdown().await.unwrap();
}

pub async fn retries_until_success<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("flaky");
    let r = flaky::s(k.clone(), 2)
        .retries(3)
        .retry_timeout(Duration::from_millis(20))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(
        r.get_timeout(WAIT).await.unwrap(),
        2,
        "succeeded on its second retry"
    );
    assert_eq!(tasks::count(&k), 3);
    assert_eq!(r.task_state().await.unwrap().retried, 2);
    w.shutdown().await.unwrap();
}

pub async fn retries_exhausted<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("flaky");
    let r = flaky::s(k.clone(), 10)
        .retries(2)
        .retry_timeout(Duration::from_millis(10))
        .send_with(&server)
        .await
        .unwrap();
    let err = r.get_timeout(WAIT).await.unwrap_err();
    assert!(err.to_string().contains("failure 3 of 10"), "{err}");
    assert_eq!(tasks::count(&k), 3, "one run and two retries");
    w.shutdown().await.unwrap();
}

pub async fn retry_in_counts_against_budget<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("later");
    let r = later::s(k.clone(), 30)
        .retries(2)
        .send_with(&server)
        .await
        .unwrap();
    let err = r.get_timeout(WAIT).await.unwrap_err();
    assert!(err.to_string().contains("not yet (3)"), "{err}");
    assert_eq!(tasks::count(&k), 3);
    let t = tasks::times(&k);
    assert!(
        t[1] - t[0] >= Duration::from_millis(25),
        "retry_in delay honoured"
    );
    w.shutdown().await.unwrap();
}

pub async fn fibonacci_backoff_is_observed<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("fib");
    let base = 60u64;
    let r = flaky::s(k.clone(), 3)
        .retries(3)
        .retry_timeout(Duration::from_millis(base))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 3);
    let t = tasks::times(&k);
    assert_eq!(t.len(), 4);
    // Delays are 1, 2, 3 × base; an ETA is kept to the millisecond, so allow 2 ms.
    for (i, fib) in [1u64, 2, 3].iter().enumerate() {
        let gap = t[i + 1] - t[i];
        assert!(
            gap + Duration::from_millis(2) >= Duration::from_millis(fib * base),
            "retry {} came after {gap:?}, expected at least {} ms",
            i + 1,
            fib * base
        );
    }
    w.shutdown().await.unwrap();
}

pub async fn panic_becomes_failure<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let r = panics::s("kaboom".into()).send_with(&server).await.unwrap();
    let err = r.get_timeout(WAIT).await.unwrap_err();
    assert!(err.to_string().contains("task panicked: kaboom"), "{err}");
    // The worker lives on.
    assert_eq!(
        add::s(2, 2)
            .send_with(&server)
            .await
            .unwrap()
            .get_timeout(WAIT)
            .await
            .unwrap(),
        4
    );
    w.shutdown().await.unwrap();
}

pub async fn timeout_becomes_failure<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let r = too_slow::s(5_000).send_with(&server).await.unwrap();
    let err = r.get_timeout(WAIT).await.unwrap_err();
    assert!(err.to_string().contains("time limit"), "{err}");
    w.shutdown().await.unwrap();
}

fn foreign(name: &str) -> RawSignature {
    let mut raw = RawSignature::new(name, vec![0x90]);
    raw.schema = format!("{name}()");
    raw.fingerprint = 1;
    raw
}

pub async fn unregistered_is_dead_lettered<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let raw = foreign("conformance.nobody_knows_me");
    let uuid = raw.uuid;
    server.send_raw(raw).await.unwrap();
    let r = server.result::<()>(uuid, "conformance.nobody_knows_me");
    let err = r.get_timeout(WAIT).await.unwrap_err();
    assert!(err.to_string().contains("not registered"), "{err}");
    let q = server.config().default_queue.clone();
    // FAILURE is stored first, then the message is dead-lettered.
    eventually("dead-lettered", || async {
        server.dead_letters(&q).await.unwrap().len() == 1
    })
    .await;
    let dead = server.dead_letters(&q).await.unwrap();
    assert!(
        matches!(
            &dead[0].reason,
            crate::DeadLetterReason::NotRegistered { name, .. } if name == "conformance.nobody_knows_me"
        ),
        "{:?}",
        dead[0].reason
    );
    w.shutdown().await.unwrap();
}

pub async fn unregistered_can_be_ignored<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let mut raw = foreign("conformance.ignore_me");
    raw.ignore_when_not_registered = true;
    let ignored = server.result::<()>(raw.uuid, &raw.name);
    server.send_raw(raw).await.unwrap();
    // Dropped, and its waiter learns it.
    let err = ignored.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("ignore_when_not_registered"), "{err}");
    // A task sent after it completes, so the ignored one was handled first or alongside.
    add::s(1, 1)
        .send_with(&server)
        .await
        .unwrap()
        .get_timeout(WAIT)
        .await
        .unwrap();
    let q = server.config().default_queue.clone();
    eventually("queue drained", || async {
        server.pending_tasks(&q).await.unwrap().is_empty()
    })
    .await;
    assert!(server.dead_letters(&q).await.unwrap().is_empty());
    w.shutdown().await.unwrap();
}

pub async fn garbage_is_dead_lettered<H: Harness>(h: &H) {
    let server = server(h).await;
    let q = server.config().default_queue.clone();
    let junk = |payload: Vec<u8>| Outgoing {
        uuid: Uuid::nil(),
        queue: q.clone(),
        eta: None,
        priority: 0,
        payload,
    };
    let before = add::s(1, 1).send_with(&server).await.unwrap();
    let mut truncated = add::s(5, 5).raw().encode().unwrap();
    truncated.truncate(truncated.len() / 2);
    server
        .broker()
        .publish(vec![
            junk(vec![0xde, 0xad, 0xbe, 0xef]),
            junk(truncated),
            junk(Vec::new()),
        ])
        .await
        .unwrap();
    let after = add::s(2, 3).send_with(&server).await.unwrap();
    let w = worker(&server);
    assert_eq!(before.get_timeout(WAIT).await.unwrap(), 2);
    assert_eq!(after.get_timeout(WAIT).await.unwrap(), 5);
    eventually("three dead letters", || async {
        server.dead_letters(&q).await.unwrap().len() == 3
    })
    .await;
    for d in server.dead_letters(&q).await.unwrap() {
        assert!(
            matches!(d.reason, crate::DeadLetterReason::Undecodable { .. }),
            "{:?}",
            d.reason
        );
    }
    w.shutdown().await.unwrap();
}

pub async fn schema_mismatch_names_both<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let mut raw = add::s(1, 2).into_raw().unwrap();
    raw.schema = "add(i64, i64, i64) -> i64".into();
    raw.fingerprint ^= 0xff;
    let uuid = raw.uuid;
    server.send_raw(raw).await.unwrap();
    let err = server
        .result::<i64>(uuid, "conformance.add")
        .get_timeout(WAIT)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("add(i64, i64, i64) -> i64"), "{text}");
    assert!(text.contains(add::SCHEMA), "{text}");
    w.shutdown().await.unwrap();
}

pub async fn bad_args_fail<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let mut raw = add::s(1, 2).into_raw().unwrap();
    raw.args = crate::codec::to_vec(&("one", "two"), "args").unwrap();
    let uuid = raw.uuid;
    server.send_raw(raw).await.unwrap();
    let r = server.result::<i64>(uuid, "conformance.add");
    let err = r.get_timeout(WAIT).await.unwrap_err();
    assert!(err.to_string().contains("do not decode"), "{err}");
    w.shutdown().await.unwrap();
}

pub async fn delayed_tasks_wait<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("delayed");
    let eta = SystemTime::now() + Duration::from_millis(400);
    let r = count_then_sleep::s(k.clone(), 0)
        .eta(eta)
        .send_with(&server)
        .await
        .unwrap();
    let delayed = server.delayed_tasks(None).await.unwrap();
    assert!(
        delayed.iter().any(|s| s.uuid == r.uuid()),
        "listed as delayed"
    );
    r.get_timeout(WAIT).await.unwrap();
    assert!(SystemTime::now() >= eta, "never before its ETA");
    assert!(server.delayed_tasks(None).await.unwrap().is_empty());
    w.shutdown().await.unwrap();
}

pub async fn pending_tasks_listed<H: Harness>(h: &H) {
    let server = server(h).await;
    let q = server.config().default_queue.clone();
    let a = add::s(1, 1).send_with(&server).await.unwrap();
    let b = add::s(2, 2).send_with(&server).await.unwrap();
    let other = add::s(3, 3)
        .queue("elsewhere")
        .send_with(&server)
        .await
        .unwrap();
    let pending: Vec<Uuid> = server
        .pending_tasks(&q)
        .await
        .unwrap()
        .iter()
        .map(|s| s.uuid)
        .collect();
    assert_eq!(pending, vec![a.uuid(), b.uuid()]);
    let elsewhere: Vec<Uuid> = server
        .pending_tasks("elsewhere")
        .await
        .unwrap()
        .iter()
        .map(|s| s.uuid)
        .collect();
    assert_eq!(elsewhere, vec![other.uuid()]);
}

pub async fn priority_runs_first<H: Harness>(h: &H) {
    let server = server(h).await;
    let k = key("prio");
    let mut results = Vec::new();
    for (item, prio) in [("low-1", 0), ("low-2", 0), ("high", 9), ("mid", 5)] {
        results.push(
            record::s(k.clone(), item.into())
                .priority(prio)
                .send_with(&server)
                .await
                .unwrap(),
        );
    }
    let w = Worker::auto()
        .server(&server)
        .concurrency(1)
        .prefetch(1)
        .spawn()
        .unwrap();
    for r in &results {
        r.get_timeout(WAIT).await.unwrap();
    }
    assert_eq!(tasks::log(&k), ["high", "mid", "low-1", "low-2"]);
    w.shutdown().await.unwrap();
}

pub async fn several_queues<H: Harness>(h: &H) {
    let server = server(h).await;
    let a = add::s(1, 1)
        .queue("alpha")
        .send_with(&server)
        .await
        .unwrap();
    let b = add::s(2, 2).queue("beta").send_with(&server).await.unwrap();
    let c = add::s(3, 3)
        .queue("gamma")
        .send_with(&server)
        .await
        .unwrap();
    let w = Worker::auto()
        .server(&server)
        .queue("alpha")
        .queue("beta")
        .spawn()
        .unwrap();
    assert_eq!(a.get_timeout(WAIT).await.unwrap(), 2);
    assert_eq!(b.get_timeout(WAIT).await.unwrap(), 4);
    assert!(matches!(
        c.get_timeout(Duration::from_millis(300)).await,
        Err(Error::Timeout { .. })
    ));
    assert_eq!(c.state().await.unwrap(), State::Pending);
    w.shutdown().await.unwrap();
}

pub async fn result_ttl_expires<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.results_expire_in = Duration::from_secs(1);
    let server = h.server(config).await;
    let w = worker(&server);
    let r = add::s(1, 2).send_with(&server).await.unwrap();
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 3);
    eventually("state expired", || async {
        matches!(r.state().await, Err(Error::ResultMissing(_)))
    })
    .await;
    assert!(matches!(
        r.get_timeout(WAIT).await,
        Err(Error::ResultMissing(_))
    ));
    w.shutdown().await.unwrap();
}

pub async fn results_kept_forever<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.results_expire_in = Duration::from_secs(0);
    let server = h.server(config).await;
    let w = worker(&server);
    let r = add::s(1, 2).send_with(&server).await.unwrap();
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 3);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 3);
    w.shutdown().await.unwrap();
}

pub async fn graceful_shutdown_loses_nothing<H: Harness>(h: &H) {
    let server = server(h).await;
    let k = key("graceful");
    let w = Worker::auto()
        .server(&server)
        .concurrency(2)
        .prefetch(1)
        .spawn()
        .unwrap();
    let mut results = Vec::new();
    for _ in 0..6 {
        results.push(
            count_then_sleep::s(k.clone(), 300)
                .send_with(&server)
                .await
                .unwrap(),
        );
    }
    eventually("two running", || async { tasks::count(&k) == 2 }).await;
    w.shutdown().await.unwrap();
    // The two running tasks finished and stored their results; the rest still wait.
    let mut done = 0;
    let mut pending = 0;
    for r in &results {
        match r.state().await.unwrap() {
            State::Success => done += 1,
            State::Pending => pending += 1,
            s => panic!("unexpected state {s}"),
        }
    }
    assert_eq!((done, pending), (2, 4));
    let q = server.config().default_queue.clone();
    assert_eq!(server.pending_tasks(&q).await.unwrap().len(), 4);
    let w = worker(&server);
    for r in &results {
        r.get_timeout(WAIT).await.unwrap();
    }
    w.shutdown().await.unwrap();
}

pub async fn abort_hands_tasks_back<H: Harness>(h: &H) {
    let server = server(h).await;
    let k = key("abort");
    let w = Worker::auto()
        .server(&server)
        .concurrency(1)
        .prefetch(1)
        .spawn()
        .unwrap();
    let r = gate::s(k.clone()).send_with(&server).await.unwrap();
    eventually("gate running", || async { tasks::count(&k) == 1 }).await;
    w.abort().await.unwrap();
    let q = server.config().default_queue.clone();
    let pending: Vec<Uuid> = server
        .pending_tasks(&q)
        .await
        .unwrap()
        .iter()
        .map(|s| s.uuid)
        .collect();
    assert_eq!(
        pending,
        vec![r.uuid()],
        "the unfinished task is back in its queue"
    );
    tasks::open(&k);
    let w = worker(&server);
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), k);
    w.shutdown().await.unwrap();
}

pub async fn hooks_run<H: Harness>(h: &H) {
    let server = server(h).await;
    let before = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let (b, a, e) = (before.clone(), after.clone(), errors.clone());
    let w = Worker::auto()
        .server(&server)
        .before_task(move |_| {
            b.fetch_add(1, Ordering::SeqCst);
        })
        .after_task(move |_, _| {
            a.fetch_add(1, Ordering::SeqCst);
        })
        .on_error(move |_, msg| {
            assert_eq!(msg, "hooked");
            e.fetch_add(1, Ordering::SeqCst);
        })
        .spawn()
        .unwrap();
    add::s(1, 1)
        .send_with(&server)
        .await
        .unwrap()
        .get_timeout(WAIT)
        .await
        .unwrap();
    let _ = fail::s("hooked".into())
        .send_with(&server)
        .await
        .unwrap()
        .get_timeout(WAIT)
        .await;
    eventually("hooks ran", || async { after.load(Ordering::SeqCst) == 2 }).await;
    assert_eq!(before.load(Ordering::SeqCst), 2);
    assert_eq!(errors.load(Ordering::SeqCst), 1);
    w.shutdown().await.unwrap();
}

pub async fn context_is_visible<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = Worker::auto()
        .server(&server)
        .queue("ctxq")
        .spawn()
        .unwrap();
    let r = context::s()
        .header("x", "42")
        .retries(4)
        .queue("ctxq")
        .send_with(&server)
        .await
        .unwrap();
    let (name, header, left, queue) = r.get_timeout(WAIT).await.unwrap();
    assert_eq!(name, "conformance.context");
    assert_eq!(header.as_deref(), Some("42"));
    assert_eq!(left, 4);
    assert_eq!(queue, "ctxq");
    w.shutdown().await.unwrap();
}

pub async fn blocking_tasks_run<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let r = blocking_add::s(20, 22).send_with(&server).await.unwrap();
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 42);
    w.shutdown().await.unwrap();
}

pub async fn concurrency_is_bounded<H: Harness>(h: &H) {
    let server = server(h).await;
    let k = key("bounded");
    let w = Worker::auto()
        .server(&server)
        .concurrency(2)
        .spawn()
        .unwrap();
    let mut rs = Vec::new();
    for _ in 0..6 {
        rs.push(occupy::s(k.clone(), 100).send_with(&server).await.unwrap());
    }
    for r in &rs {
        r.get_timeout(WAIT).await.unwrap();
    }
    assert_eq!(tasks::peak(&k), 2);
    w.shutdown().await.unwrap();
}

/// Queues `n` tasks that each hold a slot for `ms`, drains them with a worker of
/// unlimited concurrency fetching `prefetch` at a time, and returns how many ran at once.
async fn unlimited_peak<H: Harness>(h: &H, name: &str, n: usize, ms: u64, prefetch: usize) -> u32 {
    let server = server(h).await;
    let k = key(name);
    let mut rs = Vec::new();
    for _ in 0..n {
        rs.push(occupy::s(k.clone(), ms).send_with(&server).await.unwrap());
    }
    let w = Worker::auto()
        .server(&server)
        .concurrency(0)
        .prefetch(prefetch)
        .spawn()
        .unwrap();
    for r in &rs {
        r.get_timeout(WAIT).await.unwrap();
    }
    w.shutdown().await.unwrap();
    tasks::peak(&k)
}

pub async fn unlimited_concurrency<H: Harness>(h: &H) {
    let peak = unlimited_peak(h, "unbounded", 100, 1_000, 16).await;
    assert_eq!(peak, 100, "all ran at once");
}

/// Unlimited concurrency still does not take a deep queue whole: a worker holds at
/// most 64 fetches' worth (`prefetch` × 64), the rest waits in the queue.
pub async fn unlimited_concurrency_holds_a_bounded_backlog<H: Harness>(h: &H) {
    let peak = unlimited_peak(h, "backlog", 150, 300, 1).await;
    assert_eq!(peak, 64, "prefetch 1 x 64 at once, no more");
}

pub async fn message_too_large<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.max_message_bytes = 2048;
    let server = h.server(config).await;
    let err = record::s(key("big"), "x".repeat(4096))
        .send_with(&server)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { limit: 2048, .. }),
        "{err}"
    );
}

pub async fn get_timeout_is_distinct<H: Harness>(h: &H) {
    let server = server(h).await;
    let r = add::s(1, 1).send_with(&server).await.unwrap();
    assert!(matches!(
        r.get_timeout(Duration::from_millis(100)).await,
        Err(Error::Timeout { .. })
    ));
    let missing = server.result::<i64>(Uuid::now_v7(), "conformance.add");
    assert!(matches!(
        missing.get_timeout(WAIT).await,
        Err(Error::ResultMissing(_))
    ));
}

pub async fn dead_letters_requeue_and_purge<H: Harness>(h: &H) {
    let server = server(h).await;
    let q = server.config().default_queue.clone();
    let broker = server.broker().clone();
    broker
        .publish(vec![Outgoing {
            uuid: Uuid::nil(),
            queue: q.clone(),
            eta: None,
            priority: 0,
            payload: vec![1, 2, 3],
        }])
        .await
        .unwrap();
    let d = broker
        .fetch(std::slice::from_ref(&q), 1, WAIT)
        .await
        .unwrap();
    broker
        .dead_letter(&d[0], &"test reason".into())
        .await
        .unwrap();
    let dead = server.dead_letters(&q).await.unwrap();
    assert_eq!(
        (dead.len(), &dead[0].reason, dead[0].payload.as_slice()),
        (
            1,
            &crate::DeadLetterReason::Other("test reason".into()),
            &[1u8, 2, 3][..]
        )
    );
    assert_eq!(server.requeue_dead_letters(&q).await.unwrap(), 1);
    let d = broker
        .fetch(std::slice::from_ref(&q), 1, WAIT)
        .await
        .unwrap();
    assert_eq!(d[0].payload, vec![1, 2, 3]);
    broker.dead_letter(&d[0], &"again".into()).await.unwrap();
    assert_eq!(server.purge_dead_letters(&q).await.unwrap(), 1);
    assert!(server.dead_letters(&q).await.unwrap().is_empty());
}

pub async fn lease_expiry_redelivers<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.visibility_timeout = Duration::from_secs(1);
    let server = h.server(config).await;
    let q = server.config().default_queue.clone();
    let broker = server.broker().clone();
    add::s(1, 1).send_with(&server).await.unwrap();
    let first = broker
        .fetch(std::slice::from_ref(&q), 1, WAIT)
        .await
        .unwrap();
    assert_eq!(first[0].delivery_count, 1);
    // Not acked: after the visibility timeout it comes back, counted.
    let second = broker
        .fetch(std::slice::from_ref(&q), 1, WAIT)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].delivery_count, 2);
    assert_eq!(second[0].payload, first[0].payload);
    // The first holder lost its lease: fenced.
    assert!(matches!(
        broker.ack(&first[0]).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(broker.extend(&first).await.unwrap(), vec![false]);
    broker.ack(&second[0]).await.unwrap();
}

pub async fn heartbeat_keeps_lease<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.visibility_timeout = Duration::from_secs(1);
    let server = h.server(config).await;
    let k = key("long");
    let w = worker(&server);
    // Runs for three visibility timeouts; heartbeats keep it from being redelivered.
    let r = count_then_sleep::s(k.clone(), 3_000)
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 1);
    assert_eq!(tasks::count(&k), 1, "ran once");
    w.shutdown().await.unwrap();
}

// ---- workflows ----

pub async fn wf_chain<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    // add(2, 2) = 4 → add3(5, 6, 4) = 15 → multiply(4, 15) = 60
    let chain = add::s(2, 2)
        .then(add3::partial(5, 6))
        .then(multiply::partial(4))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chain.get_timeout(WAIT).await.unwrap(), 60);
    assert_eq!(chain.steps().len(), 3);
    // An immutable step ignores the previous result.
    let chain = add::s(2, 2)
        .then(add::si(1, 1))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chain.get_timeout(WAIT).await.unwrap(), 2);
    w.shutdown().await.unwrap();
}

fn three() -> Vec<crate::Signature<i64>> {
    vec![add::s(1, 1), add::s(2, 2), add::s(5, 6)]
}

pub async fn wf_group<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let g = crate::group(three()).send_with(&server).await.unwrap();
    assert_eq!(g.get_timeout(WAIT).await.unwrap(), vec![2, 4, 11]);
    assert_eq!(g.states().await.unwrap(), vec![State::Success; 3]);
    w.shutdown().await.unwrap();
}

pub async fn wf_group_limited<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let g = crate::group(three())
        .send_concurrency(1)
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(g.get_timeout(WAIT).await.unwrap(), vec![2, 4, 11]);
    w.shutdown().await.unwrap();
}

pub async fn wf_chord<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let c = crate::group(three())
        .chord(product::partial())
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(c.get_timeout(WAIT).await.unwrap(), 88);
    w.shutdown().await.unwrap();
}

pub async fn wf_chord_failing_member<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("failing-chord");
    let members = vec![at_most::s(10, 1), at_most::s(10, 99), at_most::s(10, 3)];
    let c = crate::group(members)
        .chord(count_values::partial(k.clone()))
        .send_with(&server)
        .await
        .unwrap();
    let err = c.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("chord member #1"), "{err}");
    assert!(err.contains("conformance.at_most"), "{err}");
    assert!(err.contains("99 is over 10"), "{err}");
    assert_eq!(c.state().await.unwrap(), State::Failure);
    assert_eq!(tasks::count(&k), 0, "the callback did not run");
    w.shutdown().await.unwrap();
}

pub async fn wf_chain_failure_stops<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("stopped");
    let chain = add::s(5, 5)
        .then(at_most::partial(3))
        .then(note::partial(k.clone()))
        .send_with(&server)
        .await
        .unwrap();
    let err = chain.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("conformance.at_most"), "{err}");
    assert!(err.contains("10 is over 3"), "{err}");
    assert_eq!(chain.state().await.unwrap(), State::Failure);
    assert!(tasks::log(&k).is_empty(), "the last step did not run");
    w.shutdown().await.unwrap();
}

pub async fn wf_large_chord<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("large-chord");
    let c = crate::group((0..10_000).map(|i| add::s(i, 0)))
        .chord(count_values::partial(k.clone()))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(
        c.get_timeout(Duration::from_secs(60)).await.unwrap(),
        10_000
    );
    // Let any duplicate callback surface before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tasks::count(&k), 1, "exactly one callback");
    w.shutdown().await.unwrap();
}

pub async fn wf_racing_chords<H: Harness>(h: &H) {
    let server = server(h).await;
    let w1 = worker(&server);
    let w2 = worker(&server);
    let mut chords = Vec::new();
    for i in 0..100 {
        let k = key(&format!("race-{i}"));
        let c = crate::group(vec![add::s(i, 1), add::s(i, 2)])
            .chord(count_values::partial(k.clone()))
            .send_with(&server)
            .await
            .unwrap();
        chords.push((k, c));
    }
    for (_, c) in &chords {
        assert_eq!(c.get_timeout(WAIT).await.unwrap(), 2);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (k, _) in &chords {
        assert_eq!(tasks::count(k), 1, "exactly one callback for {k}");
    }
    w1.shutdown().await.unwrap();
    w2.shutdown().await.unwrap();
}

pub async fn wf_nested<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    // chain → chord → chain: add(1, 1), then sum([2, 4]) = 6, then 6 + 10.
    let chain = add::s(1, 1)
        .then(crate::group(vec![add::s(1, 1), add::s(2, 2)]).chord(sum::partial()))
        .then(add::partial(10))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chain.get_timeout(WAIT).await.unwrap(), 16);
    // A chain as a group member: [(1 + 1) × 3, 2 + 2].
    let members = vec![
        add::s(1, 1).then(multiply::partial(3)),
        crate::Chain::from(add::s(2, 2)),
    ];
    let g = crate::group(members).send_with(&server).await.unwrap();
    assert_eq!(g.get_timeout(WAIT).await.unwrap(), vec![6, 4]);
    // And as chord members: sum([6, 4]).
    let members = vec![
        add::s(1, 1).then(multiply::partial(3)),
        crate::Chain::from(add::s(2, 2)),
    ];
    let c = crate::group(members)
        .chord(sum::partial())
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(c.get_timeout(WAIT).await.unwrap(), 10);
    w.shutdown().await.unwrap();
}

pub async fn wf_callbacks<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let ok = key("on-success");
    let bad = key("on-error");
    add::s(20, 22)
        .on_success(note::partial(ok.clone()))
        .send_with(&server)
        .await
        .unwrap()
        .get_timeout(WAIT)
        .await
        .unwrap();
    let _ = at_most::s(1, 2)
        .on_error(note_error::errback(bad.clone()))
        .send_with(&server)
        .await
        .unwrap()
        .get_timeout(WAIT)
        .await;
    eventually("callbacks ran", || async {
        tasks::log(&ok).len() == 1 && tasks::log(&bad).len() == 1
    })
    .await;
    assert_eq!(tasks::log(&ok), ["42"]);
    assert_eq!(tasks::log(&bad), ["2 is over 1"]);
    w.shutdown().await.unwrap();
}

/// Workflows whose steps, members and callbacks go to different queues (on Redis: to
/// different cluster slots).
pub async fn wf_across_queues<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = Worker::auto()
        .server(&server)
        .queue(&server.config().default_queue)
        .queue("alpha")
        .queue("beta")
        .queue("gamma")
        .grace_period(Duration::from_secs(10))
        .spawn()
        .unwrap();
    // add(2, 2) = 4 on alpha → add3(5, 6, 4) = 15 on beta → multiply(4, 15) = 60 on the
    // default queue.
    let chain = add::s(2, 2)
        .queue("alpha")
        .then(add3::partial(5, 6).map(|s| s.queue("beta")))
        .then(multiply::partial(4))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chain.get_timeout(WAIT).await.unwrap(), 60);

    // Members on alpha and beta, the callback on gamma, then a step on alpha.
    let members = vec![
        add::s(1, 1).queue("alpha"),
        add::s(2, 2).queue("beta"),
        add::s(5, 6),
    ];
    let c = crate::group(members)
        .chord(product::partial().map(|s| s.queue("gamma")))
        .then(add::partial(1).map(|s| s.queue("alpha")))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(c.get_timeout(WAIT).await.unwrap(), 89);

    // A failing member on beta fails the callback on gamma.
    let k = key("failing-across");
    let members = vec![
        at_most::s(10, 1).queue("alpha"),
        at_most::s(10, 99).queue("beta"),
    ];
    let c = crate::group(members)
        .chord(count_values::partial(k.clone()).map(|s| s.queue("gamma")))
        .send_with(&server)
        .await
        .unwrap();
    let err = c.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("chord member #1"), "{err}");
    assert_eq!(tasks::count(&k), 0, "the callback did not run");

    // A failure on alpha stops the later steps on beta and gamma, and says so in their
    // states.
    let k = key("stopped-across");
    let chain = add::s(5, 5)
        .queue("alpha")
        .then(at_most::partial(3).map(|s| s.queue("beta")))
        .then(note::partial(k.clone()).map(|s| s.queue("gamma")))
        .send_with(&server)
        .await
        .unwrap();
    let err = chain.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("10 is over 3"), "{err}");
    assert_eq!(chain.state().await.unwrap(), State::Failure);
    assert!(tasks::log(&k).is_empty(), "the last step did not run");
    w.shutdown().await.unwrap();
}

/// A step whose result is too large to pass on fails, and its chain with it; so does a
/// task whose retry is too large to send.
pub async fn outcome_follow_up_too_large_fails<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.max_message_bytes = 4096;
    let server = h.server(config).await;
    let w = worker(&server);
    let chain = big::s(8192)
        .then(length::partial())
        .then(add::partial(1))
        .send_with(&server)
        .await
        .unwrap();
    let err = chain.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("conformance.big"), "{err}");
    assert!(err.contains("could not be passed on"), "{err}");
    // A retry carries `retried` and an ETA: pad the arguments until the task fits the
    // limit when sent but its retry does not.
    let k = key("pad");
    let mut padding = 3_800;
    let sig = loop {
        let sig = flaky::s(format!("{k}{}", "p".repeat(padding)), 5).retries(3);
        let mut sent = sig.raw().clone();
        let mut retry = sent.clone();
        retry.retried = 1;
        retry.eta = Some(u64::MAX);
        let fits = |raw: &mut RawSignature| server.outgoing(raw).is_ok();
        if fits(&mut sent) && !fits(&mut retry) {
            break sig;
        }
        assert!(fits(&mut sent), "no padding found");
        padding += 1;
    };
    let r = sig.send_with(&server).await.unwrap();
    let err = r.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("retry could not be sent"), "{err}");
    assert_eq!(r.state().await.unwrap(), State::Failure);
    w.shutdown().await.unwrap();
}

/// A retried chord callback gets the members' results once, as on its first run.
pub async fn outcome_chord_callback_retry_same_input<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("callback-retry");
    let chord = crate::group(vec![add::s(1, 1), add::s(2, 2)])
        .chord(
            sum_after_a_failure::partial(k.clone())
                .map(|s| s.retries(2).retry_timeout(Duration::from_millis(10))),
        )
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chord.get_timeout(WAIT).await.unwrap(), 6);
    assert_eq!(tasks::log(&k), vec!["[2, 4]", "[2, 4]"]);
    w.shutdown().await.unwrap();
}

/// A chain step no worker knows is dead-lettered, and the chain fails with it.
pub async fn outcome_dead_lettered_step_fails_chain<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("after-unknown");
    let unknown = crate::Partial::<i64, i64>::new(Signature::from_raw(foreign(
        "conformance.nobody_runs_this_step",
    )));
    let chain = add::s(1, 1)
        .then(unknown)
        .then(note::partial(k.clone()))
        .send_with(&server)
        .await
        .unwrap();
    let err = chain.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("conformance.nobody_runs_this_step"), "{err}");
    assert!(err.contains("not registered"), "{err}");
    let q = server.config().default_queue.clone();
    let dead = server.dead_letters(&q).await.unwrap();
    assert_eq!(dead.len(), 1, "dead-lettered by the time the chain failed");
    assert!(tasks::log(&k).is_empty(), "the last step did not run");
    // As a chord member: the chord fails naming it.
    let unknown = Signature::<i64>::from_raw(foreign("conformance.nobody_runs_this_member"));
    let chord = crate::group(vec![add::s(1, 1), unknown])
        .chord(sum::partial())
        .send_with(&server)
        .await
        .unwrap();
    let err = chord.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("member #1"), "{err}");
    assert!(err.contains("not registered"), "{err}");
    w.shutdown().await.unwrap();
}

/// A message delivered more than `max_deliveries` times fails its workflow too.
pub async fn outcome_over_delivered_step_fails_chain<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.visibility_timeout = Duration::from_secs(1);
    config.max_deliveries = 2;
    let server = h.server(config).await;
    let q = server.config().default_queue.clone();
    let k = key("after-over-delivered");
    let chain = add::s(1, 1)
        .then(note::partial(k.clone()))
        .send_with(&server)
        .await
        .unwrap();
    // Two deliveries whose leases run out, as if their workers had died.
    for n in 1..=2 {
        let d = server
            .broker()
            .fetch(std::slice::from_ref(&q), 1, WAIT)
            .await
            .unwrap();
        assert_eq!(d[0].delivery_count, n);
    }
    let w = worker(&server);
    let err = chain.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("delivered 3 times"), "{err}");
    let first = server
        .backend()
        .load(&q, chain.steps()[0])
        .await
        .unwrap()
        .expect("the first step's state");
    assert_eq!(
        first.failure_reason(),
        Some(crate::FailureReason::DeadLettered(
            crate::DeadLetterReason::MaxDeliveries {
                deliveries: 3,
                max: 2
            }
        ))
    );
    let dead = server.dead_letters(&q).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].reason,
        crate::DeadLetterReason::MaxDeliveries {
            deliveries: 3,
            max: 2
        }
    );
    assert!(tasks::log(&k).is_empty());
    w.shutdown().await.unwrap();
}

/// Durations at the edge (`Duration::MAX`) are accepted, never panic the worker.
pub async fn outcome_extreme_durations<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let r = retry_never::s()
        .retries(1)
        .send_with(&server)
        .await
        .unwrap();
    eventually("RETRY", || async {
        r.state().await.unwrap() == State::Retry
    })
    .await;
    let q = server.config().default_queue.clone();
    eventually("the retry waits", || async {
        server.delayed_tasks(Some(&q)).await.unwrap().len() == 1
    })
    .await;
    let later = add::s(1, 1)
        .delay(Duration::MAX)
        .send_with(&server)
        .await
        .unwrap();
    let now = add::s(2, 2).send_with(&server).await.unwrap();
    assert_eq!(now.get_timeout(Duration::MAX).await.unwrap(), 4);
    assert_eq!(later.state().await.unwrap(), State::Pending);
    // The worker is alive and holds nothing: it stops at once.
    tokio::time::timeout(Duration::from_secs(5), w.shutdown())
        .await
        .expect("shutdown in time")
        .unwrap();
}

/// A timed-out wait names the task's queue and its last state.
pub async fn outcome_timeout_names_state<H: Harness>(h: &H) {
    let server = server(h).await;
    let r = add::s(1, 1)
        .queue("nobody-consumes-this")
        .send_with(&server)
        .await
        .unwrap();
    let err = r.get_timeout(Duration::from_millis(100)).await.unwrap_err();
    match &err {
        Error::Timeout {
            uuid,
            last_state,
            queue,
            ..
        } => {
            assert_eq!(*uuid, Some(r.uuid()));
            assert_eq!(*last_state, Some(State::Pending));
            assert_eq!(queue.as_deref(), Some("nobody-consumes-this"));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("PENDING") && text.contains("nobody-consumes-this"),
        "{text}"
    );
}

// ---- state and chord lifetimes, dead letters in completions ----

/// A message on the default queue and its delivery, taken at once.
async fn one_delivery(server: &Server, payload: &[u8]) -> crate::engine::Delivery {
    let q = server.config().default_queue.clone();
    let broker = server.broker();
    broker
        .publish(vec![Outgoing {
            uuid: Uuid::nil(),
            queue: q.clone(),
            eta: None,
            priority: 0,
            payload: payload.to_vec(),
        }])
        .await
        .unwrap();
    broker
        .fetch(std::slice::from_ref(&q), 1, WAIT)
        .await
        .unwrap()
        .pop()
        .expect("the message is delivered")
}

fn completion(delivery: &crate::engine::Delivery, state: TaskState) -> Completion {
    Completion {
        delivery: delivery.clone(),
        state,
        also_store: Vec::new(),
        publish: Vec::new(),
        group: None,
        dead_letter: None,
        ends_chord: None,
        release_unique: None,
    }
}

fn task_state(server: &Server, uuid: Uuid, state: State) -> TaskState {
    let mut s = TaskState::new(
        uuid,
        "conformance.add",
        &server.config().default_queue,
        state,
    );
    if state == State::Success {
        s.result = Some(crate::codec::to_vec(&3i64, "result").unwrap());
    }
    if matches!(state, State::Failure | State::Retry) {
        s.error = Some("no luck".into());
    }
    s
}

/// A worker paused past its lease resumes and writes STARTED (or RETRY, …) after
/// another worker stored the result: the final state stays, and waiters still get it.
pub async fn final_state_stays<H: Harness>(h: &H) {
    let server = server(h).await;
    let backend = server.backend();
    let q = server.config().default_queue.clone();
    for final_state in [State::Success, State::Failure] {
        let uuid = Uuid::now_v7();
        backend
            .store(&[task_state(&server, uuid, State::Started)])
            .await
            .unwrap();
        // A final state replaces a non-final one.
        backend
            .store(&[task_state(&server, uuid, final_state)])
            .await
            .unwrap();
        for late in [
            State::Pending,
            State::Received,
            State::Started,
            State::Retry,
        ] {
            backend
                .store(&[task_state(&server, uuid, late)])
                .await
                .unwrap();
            let stored = backend.load(&q, uuid).await.unwrap().unwrap();
            assert_eq!(stored.state, final_state, "{late} after {final_state}");
        }
        let got = backend
            .wait(&q, uuid, Some(Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(got.state, final_state);
    }
    // In a batch, each state is decided on its own; a final state written after another
    // replaces it (last final write wins).
    let (done, open) = (Uuid::now_v7(), Uuid::now_v7());
    backend
        .store(&[task_state(&server, done, State::Success)])
        .await
        .unwrap();
    backend
        .store(&[
            task_state(&server, done, State::Started),
            task_state(&server, open, State::Started),
        ])
        .await
        .unwrap();
    assert_eq!(
        backend.load(&q, done).await.unwrap().unwrap().state,
        State::Success
    );
    assert_eq!(
        backend.load(&q, open).await.unwrap().unwrap().state,
        State::Started
    );
    backend
        .store(&[task_state(&server, done, State::Failure)])
        .await
        .unwrap();
    assert_eq!(
        backend.load(&q, done).await.unwrap().unwrap().state,
        State::Failure
    );
    // A RETRY settled by a completion does not replace a final state either.
    let d = one_delivery(&server, b"retry").await;
    let uuid = Uuid::now_v7();
    backend
        .store(&[task_state(&server, uuid, State::Success)])
        .await
        .unwrap();
    let r = server
        .broker()
        .complete(
            &[completion(&d, task_state(&server, uuid, State::Retry))],
            backend.as_ref(),
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(
        backend.load(&q, uuid).await.unwrap().unwrap().state,
        State::Success
    );
    // Sending a task again starts its state over.
    let r = add::s(1, 2).send_with(&server).await.unwrap();
    backend
        .store(&[task_state(&server, r.uuid(), State::Success)])
        .await
        .unwrap();
    let again = add::s(1, 2)
        .with_uuid(r.uuid())
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(again.state().await.unwrap(), State::Pending);
}

/// Nothing expires under live work: states waiting in a backlog or running outlive the
/// results TTL; the TTL counts from the final state.
pub async fn open_states_outlive_the_results_ttl<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.results_expire_in = Duration::from_secs(1);
    let server = h.server(config).await;
    let backend = server.backend();
    let q = server.config().default_queue.clone();
    let r = add::s(1, 2).send_with(&server).await.unwrap();
    let running = Uuid::now_v7();
    let retrying = Uuid::now_v7();
    backend
        .store(&[
            task_state(&server, running, State::Started),
            task_state(&server, retrying, State::Retry),
        ])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(r.state().await.unwrap(), State::Pending, "no worker yet");
    assert_eq!(
        backend.load(&q, running).await.unwrap().unwrap().state,
        State::Started
    );
    assert_eq!(
        backend.load(&q, retrying).await.unwrap().unwrap().state,
        State::Retry
    );
    let w = worker(&server);
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 3);
    let finished = tokio::time::Instant::now();
    eventually("the result expired", || async {
        matches!(r.state().await, Err(Error::ResultMissing(_)))
    })
    .await;
    assert!(
        finished.elapsed() >= Duration::from_millis(900),
        "kept for the TTL from SUCCESS, not from the send"
    );
    w.shutdown().await.unwrap();
}

/// A chord whose members finish further apart than the results TTL still fires, with
/// every member's result.
pub async fn chord_outlives_the_results_ttl<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.results_expire_in = Duration::from_secs(1);
    let server = h.server(config).await;
    let w = worker(&server);
    let late = SystemTime::now() + Duration::from_millis(2_500);
    let c = crate::group(vec![add::s(1, 1), add::s(2, 2).eta(late), add::s(5, 6)])
        .chord(sum::partial())
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(c.get_timeout(WAIT).await.unwrap(), 17);
    assert!(SystemTime::now() >= late);
    w.shutdown().await.unwrap();
}

/// The callback's final state starts its chord's TTL, and not before.
pub async fn ends_chord_starts_the_chord_ttl<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.results_expire_in = Duration::from_secs(1);
    let server = h.server(config).await;
    let backend = server.backend();
    let q = server.config().default_queue.clone();
    let group = Uuid::now_v7();
    let callback = Outgoing {
        uuid: Uuid::now_v7(),
        queue: q.clone(),
        eta: None,
        priority: 0,
        payload: b"callback".to_vec(),
    };
    backend.init_chord(group, 1, &callback).await.unwrap();
    let member = crate::engine::GroupMember {
        group_uuid: group,
        queue: q.clone(),
        index: 0,
        count: 1,
    };
    let fired = backend
        .chord_member_done(
            &member,
            &task_state(&server, Uuid::now_v7(), State::Success),
        )
        .await
        .unwrap();
    assert!(fired.is_some());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        backend
            .chord_outcome(&q, group)
            .await
            .unwrap()
            .results
            .len(),
        1
    );
    // The callback retries: the chord stays.
    let d = one_delivery(&server, b"callback").await;
    let mut retry = completion(&d, task_state(&server, callback.uuid, State::Retry));
    retry.ends_chord = Some(group);
    let r = server
        .broker()
        .complete(&[retry], backend.as_ref())
        .await
        .unwrap();
    assert!(r[0].is_ok());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(backend.chord_outcome(&q, group).await.is_ok());
    // Its final state: kept for the TTL from now, then gone.
    let d = one_delivery(&server, b"callback").await;
    let mut done = completion(&d, task_state(&server, callback.uuid, State::Success));
    done.ends_chord = Some(group);
    let r = server
        .broker()
        .complete(&[done], backend.as_ref())
        .await
        .unwrap();
    assert!(r[0].is_ok());
    assert!(backend.chord_outcome(&q, group).await.is_ok());
    eventually("the chord expired", || async {
        backend.chord_outcome(&q, group).await.is_err()
    })
    .await;
}

/// A completion that dead-letters: FAILURE and dead letter together; whoever sees the
/// FAILURE finds the dead letter.
pub async fn dead_letter_with_the_state<H: Harness>(h: &H) {
    let server = server(h).await;
    let q = server.config().default_queue.clone();
    let uuid = Uuid::now_v7();
    let d = one_delivery(&server, b"poison").await;
    backend_store(&server, task_state(&server, uuid, State::Started)).await;
    let watcher = {
        let server = server.clone();
        let q = q.clone();
        tokio::spawn(async move {
            let state = server.backend().wait(&q, uuid, Some(WAIT)).await.unwrap();
            (state, server.dead_letters(&q).await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = completion(&d, task_state(&server, uuid, State::Failure));
    c.dead_letter = Some("too many deliveries".into());
    let r = server
        .broker()
        .complete(&[c], server.backend().as_ref())
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let (state, dead) = watcher.await.unwrap();
    assert_eq!(state.state, State::Failure);
    assert_eq!(dead.len(), 1, "the dead letter is there with the FAILURE");
    assert_eq!(dead[0].reason, "too many deliveries");
    assert_eq!(dead[0].payload, b"poison");
    let depth = server.admin().unwrap().depth(&q).await.unwrap();
    assert_eq!((depth.ready, depth.in_flight.unwrap_or(0)), (0, 0));
}

async fn backend_store(server: &Server, state: TaskState) {
    server.backend().store(&[state]).await.unwrap();
}

/// A dead-lettering completion whose lease was lost writes nothing.
pub async fn dead_letter_completion_is_fenced<H: Harness>(h: &H) {
    let mut config = fast_config();
    config.visibility_timeout = Duration::from_secs(1);
    let server = h.server(config).await;
    let q = server.config().default_queue.clone();
    let uuid = Uuid::now_v7();
    let stale = one_delivery(&server, b"poison").await;
    // Its lease expires; the message is delivered again.
    let current = server
        .broker()
        .fetch(std::slice::from_ref(&q), 1, WAIT)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let mut c = completion(&stale, task_state(&server, uuid, State::Failure));
    c.dead_letter = Some("stale".into());
    c.publish.push(Outgoing {
        uuid: Uuid::now_v7(),
        queue: q.clone(),
        eta: None,
        priority: 0,
        payload: b"follow-up".to_vec(),
    });
    let r = server
        .broker()
        .complete(&[c], server.backend().as_ref())
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::LeaseLost { .. })), "{r:?}");
    assert!(server.backend().load(&q, uuid).await.unwrap().is_none());
    assert!(server.dead_letters(&q).await.unwrap().is_empty());
    assert!(
        server
            .admin()
            .unwrap()
            .pending(&q)
            .await
            .unwrap()
            .is_empty()
    );
    server.broker().ack(&current).await.unwrap();
}

/// Deleting a state wakes its waiters, who get `ResultMissing` instead of waiting on.
pub async fn forget_wakes_waiters<H: Harness>(h: &H) {
    let server = server(h).await;
    let q = server.config().default_queue.clone();
    let uuid = Uuid::now_v7();
    backend_store(&server, task_state(&server, uuid, State::Started)).await;
    let waiters: Vec<_> = (0..2)
        .map(|i| {
            let server = server.clone();
            let q = q.clone();
            let timeout = (i == 0).then_some(WAIT);
            tokio::spawn(async move { server.backend().wait(&q, uuid, timeout).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.backend().forget(&q, uuid).await.unwrap();
    for w in waiters {
        let r = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("the waiter woke")
            .unwrap();
        assert!(
            matches!(r, Err(Error::ResultMissing(u)) if u == uuid),
            "{r:?}"
        );
    }
}

/// A worker on the default queue, the queue of `routed_add` and `extra`.
fn worker_on(server: &Server, extra: &[&str]) -> WorkerHandle {
    let mut w = Worker::auto()
        .server(server)
        .queue(&server.config().default_queue)
        .grace_period(Duration::from_secs(10));
    for q in routed_add::ENTRY.options.queue.iter().chain(extra) {
        w = w.queue(*q);
    }
    w.spawn().expect("worker starts")
}

pub async fn lookup_in_any_queue<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker_on(&server, &["lookup-alpha"]);
    let default = server.config().default_queue.clone();

    // A `.queue(..)` override at send, the task's `#[task(queue = ..)]`, the default.
    let over = add::s(1, 2)
        .queue("lookup-alpha")
        .send_with(&server)
        .await
        .unwrap();
    let routed = routed_add::s(2, 3).send_with(&server).await.unwrap();
    let plain = add::s(4, 4).send_with(&server).await.unwrap();
    assert_eq!(routed.queue(), "conformance-routed");
    assert_eq!(over.get_timeout(WAIT).await.unwrap(), 3);
    assert_eq!(routed.get_timeout(WAIT).await.unwrap(), 5);
    assert_eq!(plain.get_timeout(WAIT).await.unwrap(), 8);

    for (uuid, name, queue, value) in [
        (over.uuid(), add::NAME, "lookup-alpha", 3),
        (routed.uuid(), routed_add::NAME, "conformance-routed", 5),
        (plain.uuid(), add::NAME, default.as_str(), 8),
    ] {
        // By name: the queue is not known until the first read finds the task.
        let r = server.result::<i64>(uuid, name);
        assert_eq!(r.queue(), "");
        assert_eq!(r.state().await.unwrap(), State::Success, "{queue}");
        assert_eq!(r.queue(), queue);
        assert_eq!(r.get().await.unwrap(), value);
        // `get` first, on a fresh handle.
        let r = server.result::<i64>(uuid, name);
        assert_eq!(r.get_timeout(WAIT).await.unwrap(), value, "{queue}");
        assert_eq!(r.queue(), queue);
        // The direct form still works.
        let r = server.result_in::<i64>(uuid, name, queue);
        assert_eq!(r.get().await.unwrap(), value);
    }

    // Typed, from the task: `add::result_with(&server, uuid)` is an `AsyncResult<i64>`.
    let r: crate::AsyncResult<i64> = add::result_with(&server, over.uuid());
    assert_eq!(r.state().await.unwrap(), State::Success);
    assert_eq!(r.get().await.unwrap(), 3);
    assert_eq!(r.name(), add::NAME);
    let r = routed_add::result_with(&server, routed.uuid());
    assert_eq!(r.get().await.unwrap(), 5);
    assert_eq!(r.state().await.unwrap(), State::Success);
    assert_eq!(
        add::result_with(&server, plain.uuid()).get().await.unwrap(),
        8
    );

    // On the process-wide server (no other test of the suite installs one).
    server.install();
    let r = add::result(over.uuid()).unwrap();
    assert_eq!(r.state().await.unwrap(), State::Success);
    assert_eq!(r.get().await.unwrap(), 3);
    let r = routed_add::result(routed.uuid()).unwrap();
    assert_eq!(r.get().await.unwrap(), 5);
    w.shutdown().await.unwrap();
}

pub async fn lookup_waits_for_the_task<H: Harness>(h: &H) {
    let server = server(h).await;
    // Nothing consumes the queue yet: the lookup finds the task PENDING, and a bounded
    // wait names the queue found.
    let k = key("lookup-gate");
    let sent = gate::s(k.clone())
        .queue("lookup-beta")
        .send_with(&server)
        .await
        .unwrap();
    let r = gate::result_with(&server, sent.uuid());
    match r.get_timeout(Duration::from_millis(300)).await {
        Err(Error::Timeout {
            queue, last_state, ..
        }) => {
            assert_eq!(queue.as_deref(), Some("lookup-beta"));
            assert_eq!(last_state, Some(State::Pending));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // A waiter that starts before the task finishes is woken by it.
    let waiter = server.result::<String>(sent.uuid(), gate::NAME);
    let waiting = tokio::spawn(async move { waiter.get_timeout(WAIT).await });
    let w = worker_on(&server, &["lookup-beta"]);
    eventually("STARTED", || async {
        r.state().await.unwrap() == State::Started
    })
    .await;
    tasks::open(&k);
    assert_eq!(waiting.await.unwrap().unwrap(), k);
    assert_eq!(r.get().await.unwrap(), k);
    w.shutdown().await.unwrap();
}

pub async fn lookup_unknown_is_missing<H: Harness>(h: &H) {
    let server = server(h).await;
    // Some queues exist, none holds the task.
    add::s(1, 1)
        .queue("lookup-gamma")
        .send_with(&server)
        .await
        .unwrap();
    add::s(1, 1).send_with(&server).await.unwrap();
    let unknown = Uuid::now_v7();
    let r = server.result::<i64>(unknown, add::NAME);
    assert!(matches!(r.state().await, Err(Error::ResultMissing(u)) if u == unknown));
    assert!(matches!(r.get().await, Err(Error::ResultMissing(u)) if u == unknown));
    assert_eq!(r.queue(), "");
    let r = add::result_with(&server, unknown);
    assert!(matches!(
        r.get_timeout(WAIT).await,
        Err(Error::ResultMissing(u)) if u == unknown
    ));
    assert!(matches!(r.task_state().await, Err(Error::ResultMissing(_))));
}

pub async fn saved_handles_restore<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker_on(&server, &["alpha", "beta", "gamma"]);

    let task = add::s(20, 22)
        .queue("alpha")
        .send_with(&server)
        .await
        .unwrap();
    let chain = add::s(2, 2)
        .queue("alpha")
        .then(add3::partial(5, 6).map(|s| s.queue("beta")))
        .then(multiply::partial(4))
        .send_with(&server)
        .await
        .unwrap();
    let members = vec![
        add::s(1, 1).queue("alpha"),
        routed_add::s(2, 2),
        add::s(5, 6),
    ];
    let group = crate::group(members).send_with(&server).await.unwrap();
    let members = vec![add::s(1, 1).queue("alpha"), add::s(2, 2), add::s(5, 6)];
    let chord = crate::group(members)
        .chord(product::partial().map(|s| s.queue("gamma")))
        .send_with(&server)
        .await
        .unwrap();

    // Saved right after sending and restored at once (another process would restore
    // through its own server on the same engines).
    let ids = (task.id(), chain.id(), group.id(), chord.id());
    let task2 = crate::AsyncResult::<i64>::restore(&server, &ids.0).unwrap();
    let chain2 = crate::ChainResult::<i64>::restore(&server, &ids.1).unwrap();
    let group2 = crate::GroupResult::<i64>::restore(&server, &ids.2).unwrap();
    let chord2 = crate::ChordResult::<i64>::restore(&server, &ids.3).unwrap();

    assert_eq!(task2.get_timeout(WAIT).await.unwrap(), 42);
    assert_eq!(task.get().await.unwrap(), 42);
    assert_eq!(
        (task2.uuid(), task2.name(), task2.queue()),
        (task.uuid(), task.name(), "alpha")
    );
    assert_eq!(chain2.get_timeout(WAIT).await.unwrap(), 60);
    assert_eq!(chain.get().await.unwrap(), 60);
    assert_eq!(chain2.steps(), chain.steps());
    assert_eq!(chain2.state().await.unwrap(), State::Success);
    assert_eq!(group2.get_timeout(WAIT).await.unwrap(), vec![2, 4, 11]);
    assert_eq!(group.get().await.unwrap(), vec![2, 4, 11]);
    assert_eq!(group2.uuid(), group.uuid());
    assert_eq!(group2.states().await.unwrap(), vec![State::Success; 3]);
    let queues: Vec<&str> = group2.members().iter().map(|m| m.queue()).collect();
    let default = server.config().default_queue.as_str();
    assert_eq!(queues, ["alpha", "conformance-routed", default]);
    assert_eq!(chord2.get_timeout(WAIT).await.unwrap(), 88);
    assert_eq!(chord.get().await.unwrap(), 88);
    assert_eq!(chord2.uuid(), chord.uuid());
    assert_eq!(chord2.callback().queue(), "gamma");

    // Saving a restored handle gives the same id; a handle made by UUID alone saves the
    // queue it found.
    assert_eq!(
        (task2.id(), chain2.id(), group2.id(), chord2.id()),
        ids.clone()
    );
    let found = server.result::<i64>(task.uuid(), add::NAME);
    found.state().await.unwrap();
    assert_eq!(found.id(), task.id());

    // A malformed id, or the id of another kind of handle, is a decoding error.
    for bad in [
        "",
        "group",
        "group.v1.",
        "group.v1.!!!",
        "group.v2.AAAA",
        ids.1.as_str(),
    ] {
        assert!(
            matches!(
                crate::GroupResult::<i64>::restore(&server, bad),
                Err(Error::Decode { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        crate::ChainResult::<i64>::restore(&server, &ids.2),
        Err(Error::Decode { .. })
    ));
    assert!(matches!(
        crate::ChordResult::<i64>::restore(&server, &ids.0),
        Err(Error::Decode { .. })
    ));
    assert!(matches!(
        crate::AsyncResult::<i64>::restore(&server, &ids.3),
        Err(Error::Decode { .. })
    ));
    w.shutdown().await.unwrap();
}

/// A later chain step sent to a queue nothing was published to yet is found by its UUID
/// alone before its turn comes.
pub async fn lookup_finds_later_steps<H: Harness>(h: &H) {
    let server = server(h).await;
    let chain = add::s(1, 1)
        .queue("lookup-first-step")
        .then(add::partial(1).map(|s| s.queue("lookup-never-published")))
        .send_with(&server)
        .await
        .unwrap();
    let later = chain.steps()[1];
    let r = server.result::<i64>(later, "conformance.add");
    assert_eq!(r.state().await.unwrap(), State::Pending);
    assert_eq!(r.queue(), "lookup-never-published");
}

/// A long chain travels flat: each step carries the rest of the chain as bytes, so
/// 10,000 steps neither nest 10,000 deep nor cost a decode of the whole chain per step.
///
/// Each step's message still carries the rest of the chain (about 100 bytes a step), so
/// a chain costs O(steps²) bytes in all. The memory engine runs 10,000 steps (5 to 20 s
/// in a debug build, by the machine's load); other engines run 2,000, because on Redis a
/// debug build moves those bytes too slowly for the suite's two-minute bound alongside
/// the other tests (10,000 steps alone: about 90 s).
pub async fn wf_long_chain<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let steps: i64 = if server.broker().engine() == "memory" {
        10_000
    } else {
        2_000
    };
    let started = std::time::Instant::now();
    let mut chain = add::s(0, 0).then(add::partial(1));
    for _ in 2..steps {
        chain = chain.then(add::partial(1));
    }
    let chain = chain.send_with(&server).await.unwrap();
    assert_eq!(chain.steps().len() as i64, steps);
    assert_eq!(
        chain.get_timeout(Duration::from_secs(110)).await.unwrap(),
        steps - 1
    );
    eprintln!("a chain of {steps} steps took {:?}", started.elapsed());
    w.shutdown().await.unwrap();
}

/// A failure in the middle of a long chain fails its last step at once.
pub async fn wf_long_chain_failure<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("long-stopped");
    // Step i (from 0) computes i; step 1,000 allows at most 500.
    let mut chain = add::s(0, 0).then(add::partial(1));
    for i in 2..2_000 {
        chain = if i == 1_000 {
            chain.then(at_most::partial(500))
        } else if i == 1_999 {
            chain.then(add::partial(0))
        } else {
            chain.then(add::partial(1))
        };
    }
    let chain = chain.then(note::partial(k.clone()));
    let chain = chain.send_with(&server).await.unwrap();
    let err = chain.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("999 is over 500"), "{err}");
    assert!(err.contains("conformance.at_most"), "{err}");
    assert_eq!(chain.state().await.unwrap(), State::Failure);
    let before = server
        .result::<i64>(chain.steps()[999], "conformance.add")
        .state()
        .await;
    assert!(matches!(before, Ok(State::Success)), "{before:?}");
    let after = server
        .result::<i64>(chain.steps()[1_500], "conformance.add")
        .state()
        .await;
    assert!(matches!(after, Ok(State::Failure)), "{after:?}");
    assert!(tasks::log(&k).is_empty(), "the last step did not run");
    w.shutdown().await.unwrap();
}

/// A chord step in the middle of a chain: the steps after it run after its callback,
/// with member chains inside the chord.
pub async fn wf_chord_step_then_more<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    // add(1, 1) = 2 → sum([(1 + 1) × 3, 2 + 2]) = 10 → 10 + 10 → 20 × 2 → 40 + 1.
    let members = vec![
        add::s(1, 1).then(multiply::partial(3)),
        crate::Chain::from(add::s(2, 2)),
    ];
    let chain = add::s(1, 1)
        .then(crate::group(members).chord(sum::partial()))
        .then(add::partial(10))
        .then(multiply::partial(2))
        .then(add::partial(1))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chain.get_timeout(WAIT).await.unwrap(), 41);
    // Two chords in a row, the first one first.
    let chain = crate::group(three())
        .chord(sum::partial())
        .then(add::partial(1))
        .then(crate::group(three()).chord(product::partial()))
        .then(add::partial(2))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chain.get_timeout(WAIT).await.unwrap(), 90);
    // A member failing stops the steps after the chord.
    let k = key("chord-step-stopped");
    let chain = add::s(1, 1)
        .then(crate::group(vec![at_most::s(1, 5), add::s(1, 1)]).chord(sum::partial()))
        .then(note::partial(k.clone()))
        .send_with(&server)
        .await
        .unwrap();
    let err = chain.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("5 is over 1"), "{err}");
    assert!(
        tasks::log(&k).is_empty(),
        "the step after the chord did not run"
    );
    // A step failing before a chord fails its members and, through them, the rest.
    let chain = add::s(5, 5)
        .then(at_most::partial(3))
        .then(crate::group(three()).chord(sum::partial()))
        .then(note::partial(k.clone()))
        .send_with(&server)
        .await
        .unwrap();
    let err = chain.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("10 is over 3"), "{err}");
    assert!(
        tasks::log(&k).is_empty(),
        "the step after the chord did not run"
    );
    w.shutdown().await.unwrap();
}

fn none() -> Vec<crate::Signature<i64>> {
    Vec::new()
}

/// An empty chord runs its callback at once with no results, as Celery does.
pub async fn wf_empty_chord<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let c = crate::group(none())
        .chord(sum::partial())
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(c.get_timeout(WAIT).await.unwrap(), 0);
    // An immutable callback gets no results.
    let c = crate::group(none())
        .chord(add::s(2, 3))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(c.get_timeout(WAIT).await.unwrap(), 5);
    // As a later chain step, followed by another.
    let chain = add::s(1, 1)
        .then(crate::group(none()).chord(sum::partial()))
        .then(add::partial(7))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chain.get_timeout(WAIT).await.unwrap(), 7);
    let k = key("empty-chord-step");
    let chain = add::s(1, 1)
        .then(crate::group(none()).chord(count_values::partial(k.clone())))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chain.get_timeout(WAIT).await.unwrap(), 0);
    assert_eq!(tasks::count(&k), 1);
    // As a group member and as a chord member.
    let g = crate::group(vec![
        crate::group(none()).chord(sum::partial()),
        crate::group(three()).chord(sum::partial()),
    ])
    .send_with(&server)
    .await
    .unwrap();
    assert_eq!(g.get_timeout(WAIT).await.unwrap(), vec![0, 17]);
    let c = crate::group(vec![
        crate::group(none()).chord(sum::partial()),
        crate::group(three()).chord(product::partial()),
    ])
    .chord(sum::partial())
    .send_with(&server)
    .await
    .unwrap();
    assert_eq!(c.get_timeout(WAIT).await.unwrap(), 88);
    // An empty group has an empty result.
    let g = crate::group(none()).send_with(&server).await.unwrap();
    assert_eq!(g.get_timeout(WAIT).await.unwrap(), Vec::<i64>::new());
    w.shutdown().await.unwrap();
}

/// What a worker could not decode is refused at send: callbacks nested by hand deeper
/// than the decoder's limit.
pub async fn wf_deep_callbacks_refused<H: Harness>(h: &H) {
    let server = server(h).await;
    let mut sig = add::s(1, 1);
    for _ in 0..10_000 {
        sig = add::s(1, 1).on_success(sig);
    }
    let err = sig.send_with(&server).await.unwrap_err();
    assert!(
        matches!(&err, Error::Encode { reason, .. } if reason.contains("nests callbacks")),
        "{err}"
    );
    // Within the limit, nested callbacks still run.
    let k = key("nested-callbacks");
    let mut sig = add::s(1, 1).on_success(note::si(k.clone(), 1));
    for _ in 0..4 {
        sig = add::s(1, 1).on_success(sig);
    }
    let w = worker(&server);
    sig.send_with(&server).await.unwrap();
    eventually("the innermost callback ran", || async {
        tasks::log(&k).len() == 1
    })
    .await;
    w.shutdown().await.unwrap();
}

/// A group of 100,000 members. Heavy (about 20 s on the memory engine in a debug
/// build): not in [`conformance_suite!`](crate::conformance_suite), run by the `tests`
/// crate on the memory engine.
pub async fn wf_huge_group<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let started = std::time::Instant::now();
    let g = crate::group((0..100_000).map(|i| add::s(i, 1)))
        .send_with(&server)
        .await
        .unwrap();
    let results = g.get_timeout(Duration::from_secs(110)).await.unwrap();
    assert_eq!(results.len(), 100_000);
    assert!(results.iter().enumerate().all(|(i, r)| *r == i as i64 + 1));
    eprintln!("a group of 100,000 members took {:?}", started.elapsed());
    w.shutdown().await.unwrap();
}

/// A chord of 100,000 members. Heavy, like [`wf_huge_group`].
pub async fn wf_huge_chord<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let started = std::time::Instant::now();
    let c = crate::group((0..100_000).map(|i| add::s(i, 0)))
        .chord(sum::partial())
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(
        c.get_timeout(Duration::from_secs(110)).await.unwrap(),
        (0..100_000).sum::<i64>()
    );
    eprintln!("a chord of 100,000 members took {:?}", started.elapsed());
    w.shutdown().await.unwrap();
}

/// A member of a chord the engine does not know (it ended and expired, or the fields
/// were set by hand) settles with its own state: nothing to count toward, no error, no
/// redelivery, no second final state.
pub async fn outcome_member_of_unknown_chord<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker_on(&server, &["unknown-chord-elsewhere"]);
    let q = server.config().default_queue.clone();
    for chord_queue in ["", "unknown-chord-elsewhere"] {
        let mut sig = add::s(1, 5);
        let raw = sig.raw_mut();
        raw.chord = true;
        raw.group_uuid = Some(Uuid::now_v7());
        raw.group_task_count = 2;
        raw.chord_queue = chord_queue.to_owned();
        let r = sig.send_with(&server).await.unwrap();
        assert_eq!(r.get_timeout(WAIT).await.unwrap(), 6);
        // Settled once: it stays SUCCESS, nothing is dead-lettered.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(r.state().await.unwrap(), State::Success);
        assert!(server.dead_letters(&q).await.unwrap().is_empty());
    }
    w.shutdown().await.unwrap();
}

/// Counters at their limits (a hand-set `retried = u32::MAX`) never overflow.
pub async fn outcome_extreme_counters<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let mut sig = fail::s("again".into()).retries(2);
    sig.raw_mut().retried = u32::MAX;
    let r = sig.send_with(&server).await.unwrap();
    eventually("RETRY", || async {
        r.state().await.unwrap() == State::Retry
    })
    .await;
    assert_eq!(r.task_state().await.unwrap().retried, u32::MAX);
    w.shutdown().await.unwrap();
}

/// A success callback's UUID finds its result, before and after it ran; a group's
/// timed-out wait names the member it waited for.
pub async fn outcome_callbacks_and_groups_are_found<H: Harness>(h: &H) {
    let server = server(h).await;
    let cb = Uuid::now_v7();
    let k = key("callback-lookup");
    gate::s(k.clone())
        .on_success(record::partial(k.clone()).map(|s| s.with_uuid(cb)))
        .send_with(&server)
        .await
        .unwrap();
    let r = server.result::<usize>(cb, "conformance.record");
    assert_eq!(r.state().await.unwrap(), State::Pending);
    let w = worker(&server);
    tasks::open(&k);
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 1);
    let g = crate::group(vec![add::s(1, 1).queue("nobody-consumes-this-either")])
        .send_with(&server)
        .await
        .unwrap();
    match g.get_timeout(Duration::from_millis(100)).await {
        Err(Error::Timeout {
            uuid: Some(_),
            last_state: Some(State::Pending),
            queue: Some(queue),
            ..
        }) => assert_eq!(queue, "nobody-consumes-this-either"),
        other => panic!("expected a timeout naming the member, got {other:?}"),
    }
    w.shutdown().await.unwrap();
}

/// A result backend that hides which store it uses: the broker must settle through the
/// traits, step by step, as it would with a backend of another engine.
struct Opaque(Arc<dyn crate::engine::ResultBackend>);

#[async_trait::async_trait]
impl crate::engine::ResultBackend for Opaque {
    fn engine(&self) -> &'static str {
        "opaque"
    }
    async fn store(&self, states: &[TaskState]) -> crate::Result<()> {
        self.0.store(states).await
    }
    async fn store_new(&self, states: &[TaskState]) -> crate::Result<()> {
        self.0.store_new(states).await
    }
    async fn load(&self, queue: &str, uuid: Uuid) -> crate::Result<Option<TaskState>> {
        self.0.load(queue, uuid).await
    }
    async fn wait(
        &self,
        queue: &str,
        uuid: Uuid,
        timeout: Option<Duration>,
    ) -> crate::Result<TaskState> {
        self.0.wait(queue, uuid, timeout).await
    }
    async fn init_chord(&self, group: Uuid, count: u32, callback: &Outgoing) -> crate::Result<()> {
        self.0.init_chord(group, count, callback).await
    }
    async fn chord_member_done(
        &self,
        member: &crate::engine::GroupMember,
        state: &TaskState,
    ) -> crate::Result<Option<Outgoing>> {
        self.0.chord_member_done(member, state).await
    }
    async fn chord_outcome(
        &self,
        queue: &str,
        group: Uuid,
    ) -> crate::Result<crate::engine::ChordOutcome> {
        self.0.chord_outcome(queue, group).await
    }
    async fn chord_finished(&self, queue: &str, group: Uuid) -> crate::Result<()> {
        self.0.chord_finished(queue, group).await
    }
    async fn forget(&self, queue: &str, uuid: Uuid) -> crate::Result<()> {
        self.0.forget(queue, uuid).await
    }
}

/// The engine's own broker and backend share one store (the atomic path); paired with a
/// backend it does not recognise, the broker settles step by step through the traits,
/// with the same outcomes: results, workflows, dead letters, and a UUID sent again
/// starting over.
pub async fn engine_step_by_step_settles<H: Harness>(h: &H) {
    let own = server(h).await;
    let id = own
        .backend()
        .store_id()
        .expect("an engine's own backend names its store");
    assert_eq!(id.engine(), own.broker().engine());
    assert!(own.admin().is_ok(), "the engine has an admin plane");
    let server = Server::new(
        own.config().clone(),
        own.broker().clone(),
        Arc::new(Opaque(own.backend().clone())),
    );
    let w = worker(&server);
    let r = add::s(1, 2).send_with(&server).await.unwrap();
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 3);
    let chain = add::s(1, 1)
        .then(add::partial(1))
        .then(add::partial(1))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chain.get_timeout(WAIT).await.unwrap(), 4);
    let chord = crate::group(vec![add::s(1, 1), add::s(2, 2), add::s(3, 3)])
        .chord(sum::partial())
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(chord.get_timeout(WAIT).await.unwrap(), 12);
    // A dead-lettered step fails its chain, and the dead letter is listed.
    let unknown = crate::Partial::<i64, i64>::new(Signature::from_raw(foreign(
        "conformance.nobody_runs_this_opaque_step",
    )));
    let chain = add::s(1, 1).then(unknown).send_with(&server).await.unwrap();
    let err = chain.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("not registered"), "{err}");
    let q = server.config().default_queue.clone();
    eventually("the dead letter is listed", || async {
        !server.dead_letters(&q).await.unwrap().is_empty()
    })
    .await;
    // The same UUID sent again starts over: PENDING replaces the final state.
    let again = add::s(5, 5)
        .with_uuid(r.uuid())
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(again.get_timeout(WAIT).await.unwrap(), 10);
    w.shutdown().await.unwrap();
}

// ---- inspect and admin API ----

/// The engine's admin plane.
fn admin(server: &Server) -> &dyn BrokerAdmin {
    server.admin().expect("the engine has an admin plane")
}

/// A queue of one test's own.
fn queue_of_test(what: &str) -> String {
    key(&format!("admin-{what}"))
}

fn wall_ms() -> u64 {
    crate::signature::to_ms(SystemTime::now())
}

/// The UUID of a listed task: as listed, or read from its message.
fn listed_uuid(task: &ListedTask) -> Uuid {
    let decoded = RawSignature::decode(&task.payload).ok().map(|raw| raw.uuid);
    if let (Some(listed), Some(decoded)) = (task.uuid, decoded) {
        assert_eq!(listed, decoded, "the listed UUID is the message's");
    }
    task.uuid
        .or(decoded)
        .expect("a listed task names its UUID or carries a task message")
}

fn uuids(tasks: &[ListedTask]) -> Vec<Uuid> {
    tasks.iter().map(listed_uuid).collect()
}

fn delivered_uuid(delivery: &crate::engine::Delivery) -> Uuid {
    RawSignature::decode(&delivery.payload)
        .expect("a task message")
        .uuid
}

/// One page, checked against its limit.
async fn one_page(
    admin: &dyn BrokerAdmin,
    queue: &str,
    list: TaskList,
    cursor: Option<&str>,
    limit: usize,
) -> Page<ListedTask> {
    let page = admin.tasks(queue, list, cursor, limit).await.unwrap();
    assert!(
        page.items.len() <= limit,
        "a page of at most {limit} held {}",
        page.items.len()
    );
    for task in &page.items {
        assert_eq!(task.queue, queue, "listed under its queue");
    }
    page
}

/// Every item of a listing from `cursor` on, `limit` per page.
async fn walk_from(
    admin: &dyn BrokerAdmin,
    queue: &str,
    list: TaskList,
    mut cursor: Option<String>,
    limit: usize,
) -> Vec<ListedTask> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = one_page(admin, queue, list, cursor.as_deref(), limit).await;
        out.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
    panic!("the {list:?} listing of {queue} did not end after 1000 pages");
}

async fn walk(
    admin: &dyn BrokerAdmin,
    queue: &str,
    list: TaskList,
    limit: usize,
) -> Vec<ListedTask> {
    walk_from(admin, queue, list, None, limit).await
}

/// Sends `n` tasks to `queue`; returns their UUIDs in order.
async fn send_to(server: &Server, queue: &str, n: usize) -> Vec<Uuid> {
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let r = add::s(i as i64, 1)
            .queue(queue)
            .send_with(server)
            .await
            .unwrap();
        sent.push(r.uuid());
    }
    sent
}

/// Takes `n` deliveries from `queue`, one fetch at a time.
async fn take_each(server: &Server, queue: &str, n: usize) -> Vec<crate::engine::Delivery> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let got = server
            .broker()
            .fetch(&[queue.to_owned()], 1, WAIT)
            .await
            .unwrap();
        assert!(!got.is_empty(), "a message of {queue} is delivered");
        out.extend(got);
    }
    out
}

fn queue_info<'a>(queues: &'a [QueueInfo], name: &str) -> &'a QueueInfo {
    queues
        .iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| panic!("queue {name} is listed in {queues:?}"))
}

/// `queues()` counts each kind of message, lists paused queues, sorted by name.
pub async fn admin_queues_counts<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("counts");
    let idle = queue_of_test("idle");
    send_to(&server, &q, 4).await;
    add::s(0, 0)
        .queue(&q)
        .delay(Duration::from_secs(3600))
        .send_with(&server)
        .await
        .unwrap();
    let held = take_each(&server, &q, 2).await;
    server
        .broker()
        .dead_letter(&held[1], &"counted".into())
        .await
        .unwrap();
    assert!(admin.pause(&idle).await.unwrap(), "the queue was running");
    assert!(!admin.pause(&idle).await.unwrap(), "already paused");

    let queues = admin.queues().await.unwrap();
    assert!(
        queues.windows(2).all(|w| w[0].name < w[1].name),
        "sorted by name, each once: {queues:?}"
    );
    let info = queue_info(&queues, &q);
    assert_eq!(
        (
            info.ready,
            info.delayed,
            info.in_flight,
            info.dead,
            info.paused
        ),
        (2, 1, 1, 1, false),
        "{info:?}"
    );
    let info = queue_info(&queues, &idle);
    assert_eq!(
        (
            info.ready,
            info.delayed,
            info.in_flight,
            info.dead,
            info.paused
        ),
        (0, 0, 0, 0, true),
        "a paused queue is listed though it never held a message: {info:?}"
    );

    assert!(admin.pause(&q).await.unwrap());
    let queues = admin.queues().await.unwrap();
    let info = queue_info(&queues, &q);
    assert!(info.paused);
    assert_eq!((info.ready, info.delayed, info.in_flight), (2, 1, 1));
    assert!(admin.resume(&q).await.unwrap(), "it was paused");
    assert!(!admin.resume(&q).await.unwrap(), "already running");
    assert!(!queue_info(&admin.queues().await.unwrap(), &q).paused);

    server.broker().ack(&held[0]).await.unwrap();
    let queues = admin.queues().await.unwrap();
    let info = queue_info(&queues, &q);
    assert_eq!((info.ready, info.in_flight, info.dead), (2, 0, 1));
}

/// Pending tasks are listed in delivery order, page by page; a cursor keeps its place
/// when tasks before and after it are consumed meanwhile.
pub async fn admin_pending_pages<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("pending");
    let priorities = [0u8, 5, 0, 9, 5, 0, 9, 0, 5];
    let mut sent = Vec::new();
    for (i, priority) in priorities.iter().enumerate() {
        let r = add::s(i as i64, 0)
            .queue(&q)
            .priority(*priority)
            .send_with(&server)
            .await
            .unwrap();
        sent.push((*priority, r.uuid()));
    }
    let mut expected = sent.clone();
    expected.sort_by_key(|(priority, _)| std::cmp::Reverse(*priority));
    let expected: Vec<Uuid> = expected.into_iter().map(|(_, u)| u).collect();
    let listed = walk(admin, &q, TaskList::Pending, 2).await;
    assert_eq!(
        uuids(&listed),
        expected,
        "higher priority first, then oldest"
    );
    for task in &listed {
        assert_eq!(
            (task.eta, task.lease_deadline, &task.reason, task.failed_at),
            (None, None, &None, None)
        );
    }
    // The other lists of the queue are empty.
    for list in [TaskList::Delayed, TaskList::InFlight, TaskList::Dead] {
        assert!(walk(admin, &q, list, 2).await.is_empty(), "{list:?}");
    }

    // Consumed between pages: the first page's tasks and the first one after it.
    let q = queue_of_test("pending-consumed");
    let sent = send_to(&server, &q, 10).await;
    let first = one_page(admin, &q, TaskList::Pending, None, 3).await;
    assert_eq!(uuids(&first.items), sent[..3]);
    let cursor = first.next.expect("more pages follow");
    let taken = server
        .broker()
        .fetch(std::slice::from_ref(&q), 4, WAIT)
        .await
        .unwrap();
    let mut taken_all = taken;
    if taken_all.len() < 4 {
        let more = take_each(&server, &q, 4 - taken_all.len()).await;
        taken_all.extend(more);
    }
    let taken_uuids: Vec<Uuid> = taken_all.iter().map(delivered_uuid).collect();
    assert_eq!(taken_uuids, sent[..4], "delivered oldest first");
    let rest = walk_from(admin, &q, TaskList::Pending, Some(cursor), 3).await;
    assert_eq!(
        uuids(&rest),
        sent[4..],
        "the tasks left are listed once each, none skipped"
    );
    for d in &taken_all {
        server.broker().ack(d).await.unwrap();
    }
    // A walk from the start sees the same.
    assert_eq!(
        uuids(&walk(admin, &q, TaskList::Pending, 4).await),
        sent[4..]
    );
}

/// Delayed tasks are listed soonest first with their ETA, page by page.
pub async fn admin_delayed_pages<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("delayed");
    let base = SystemTime::now() + Duration::from_secs(3600);
    let mut sent = Vec::new();
    for offset in [30u64, 10, 50, 20, 40] {
        let eta = base + Duration::from_secs(offset);
        let r = add::s(offset as i64, 0)
            .queue(&q)
            .eta(eta)
            .send_with(&server)
            .await
            .unwrap();
        sent.push((crate::signature::to_ms(eta), r.uuid()));
    }
    sent.sort();
    let listed = walk(admin, &q, TaskList::Delayed, 2).await;
    assert_eq!(
        uuids(&listed),
        sent.iter().map(|(_, u)| *u).collect::<Vec<_>>(),
        "soonest first"
    );
    for (task, (eta, _)) in listed.iter().zip(&sent) {
        let listed_eta = task.eta.expect("a delayed task lists its ETA");
        assert!(
            listed_eta.abs_diff(*eta) <= 1000,
            "ETA {listed_eta} listed, {eta} asked"
        );
    }
    assert!(walk(admin, &q, TaskList::Pending, 2).await.is_empty());

    // Deleted between pages: one before the cursor and one after it.
    let first = one_page(admin, &q, TaskList::Delayed, None, 2).await;
    assert_eq!(uuids(&first.items), [sent[0].1, sent[1].1]);
    assert!(admin.delete_pending(&q, sent[0].1).await.unwrap());
    assert!(admin.delete_pending(&q, sent[3].1).await.unwrap());
    let rest = walk_from(admin, &q, TaskList::Delayed, first.next, 2).await;
    assert_eq!(uuids(&rest), [sent[2].1, sent[4].1]);
}

/// Deliveries in flight are listed soonest lease deadline first, with their deadline.
pub async fn admin_in_flight_pages<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let visibility = millis_of(server.config().visibility_timeout);
    let q = queue_of_test("in-flight");
    let sent = send_to(&server, &q, 5).await;
    let before = wall_ms();
    let held = take_each(&server, &q, 5).await;
    let after = wall_ms();
    let listed = walk(admin, &q, TaskList::InFlight, 2).await;
    let mut listed_uuids = uuids(&listed);
    listed_uuids.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(listed_uuids, expected, "each delivery once");
    let deadlines: Vec<u64> = listed
        .iter()
        .map(|t| {
            t.lease_deadline
                .expect("a delivery lists its lease deadline")
        })
        .collect();
    assert!(
        deadlines.windows(2).all(|w| w[0] <= w[1]),
        "soonest deadline first: {deadlines:?}"
    );
    for d in &deadlines {
        assert!(
            (before + visibility).saturating_sub(1000) <= *d && *d <= after + visibility + 1000,
            "deadline {d} is one visibility timeout ({visibility} ms) after the fetch ({before}..{after})"
        );
    }
    for task in &listed {
        assert_eq!(task.deliveries, 0, "no delivery of it ended yet");
        assert_eq!(task.eta, None);
    }
    let delivery = |uuid: Uuid| {
        held.iter()
            .find(|d| delivered_uuid(d) == uuid)
            .expect("a held delivery")
    };

    // Settled between pages: the first page's, and one after it.
    let first = one_page(admin, &q, TaskList::InFlight, None, 2).await;
    let first_uuids = uuids(&first.items);
    let later = uuids(&listed)[4];
    for u in first_uuids.iter().chain([&later]) {
        server.broker().ack(delivery(*u)).await.unwrap();
    }
    let rest = walk_from(admin, &q, TaskList::InFlight, first.next, 2).await;
    let expected_rest: Vec<Uuid> = uuids(&listed)[2..4].to_vec();
    let mut rest_uuids = uuids(&rest);
    rest_uuids.sort();
    let mut expected_sorted = expected_rest;
    expected_sorted.sort();
    assert_eq!(
        rest_uuids, expected_sorted,
        "the deliveries left, once each"
    );
    for task in &rest {
        server
            .broker()
            .ack(delivery(listed_uuid(task)))
            .await
            .unwrap();
    }
    assert!(walk(admin, &q, TaskList::InFlight, 2).await.is_empty());
}

fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Dead letters are listed oldest first with their reason; one can be requeued (its
/// delivery count starts over) or deleted by UUID.
pub async fn admin_dead_letters_one_by_one<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("dead");
    let sent = send_to(&server, &q, 5).await;
    let held = take_each(&server, &q, 5).await;
    for (i, d) in held.iter().enumerate() {
        assert_eq!(delivered_uuid(d), sent[i]);
        server
            .broker()
            .dead_letter(d, &format!("reason {i}").as_str().into())
            .await
            .unwrap();
    }
    let listed = walk(admin, &q, TaskList::Dead, 2).await;
    assert_eq!(uuids(&listed), sent, "oldest first");
    for (i, task) in listed.iter().enumerate() {
        assert_eq!(
            task.reason,
            Some(crate::DeadLetterReason::from(format!("reason {i}"))),
            "a dead letter lists its reason"
        );
    }

    assert!(admin.requeue_dead_letter(&q, sent[1]).await.unwrap());
    assert!(
        !admin.requeue_dead_letter(&q, sent[1]).await.unwrap(),
        "gone"
    );
    let (list, found) = admin.find(&q, sent[1]).await.unwrap().expect("requeued");
    assert_eq!(list, TaskList::Pending);
    assert_eq!(listed_uuid(&found), sent[1]);
    let again = take_each(&server, &q, 1).await;
    assert_eq!(delivered_uuid(&again[0]), sent[1]);
    assert_eq!(again[0].delivery_count, 1, "its delivery count starts over");
    server.broker().ack(&again[0]).await.unwrap();

    assert!(admin.delete_dead_letter(&q, sent[2]).await.unwrap());
    assert!(
        !admin.delete_dead_letter(&q, sent[2]).await.unwrap(),
        "gone"
    );
    assert!(admin.find(&q, sent[2]).await.unwrap().is_none());
    assert!(!admin.requeue_dead_letter(&q, Uuid::now_v7()).await.unwrap());
    assert!(!admin.delete_dead_letter(&q, Uuid::now_v7()).await.unwrap());
    assert_eq!(
        uuids(&walk(admin, &q, TaskList::Dead, 2).await),
        [sent[0], sent[3], sent[4]]
    );

    // Removed between pages.
    let first = one_page(admin, &q, TaskList::Dead, None, 2).await;
    assert_eq!(uuids(&first.items), [sent[0], sent[3]]);
    assert!(admin.delete_dead_letter(&q, sent[0]).await.unwrap());
    let rest = walk_from(admin, &q, TaskList::Dead, first.next, 2).await;
    assert_eq!(uuids(&rest), [sent[4]]);
    assert_eq!(server.dead_letters(&q).await.unwrap().len(), 2);
    let queues = admin.queues().await.unwrap();
    assert_eq!(queue_info(&queues, &q).dead, 2);
}

/// Failures recorded by workers are listed most recent first, within the window.
pub async fn admin_failed_list<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("failed");
    let other = queue_of_test("failed-other");
    let now = wall_ms();
    let window = Duration::from_secs(3600);
    let failed: Vec<(Uuid, u64)> = (0..5u64)
        .map(|i| (Uuid::now_v7(), now - (5 - i) * 1000))
        .collect();
    let elsewhere = Uuid::now_v7();
    let too_old = Uuid::now_v7();
    // Their states are stored, as a worker's would be.
    let mut states = Vec::new();
    for (uuid, queue) in failed
        .iter()
        .map(|(u, _)| (*u, q.as_str()))
        .chain([(elsewhere, other.as_str()), (too_old, q.as_str())])
    {
        let mut state = TaskState::new(uuid, fail::NAME, queue, State::Failure);
        state.error = Some("no luck".into());
        states.push(state);
    }
    server.backend().store(&states).await.unwrap();
    let record = |items: &[(Uuid, u64)], queue: &str| -> Vec<(String, Uuid, u64)> {
        items
            .iter()
            .map(|(u, at)| (queue.to_owned(), *u, *at))
            .collect()
    };
    admin
        .record_failures(&record(&failed[..2], &q), window)
        .await
        .unwrap();
    admin
        .record_failures(&record(&failed[2..], &q), window)
        .await
        .unwrap();
    admin
        .record_failures(&record(&[(elsewhere, now)], &other), window)
        .await
        .unwrap();
    admin
        .record_failures(&record(&[(too_old, now - 7_200_000)], &q), window)
        .await
        .unwrap();

    let listed = walk(admin, &q, TaskList::Failed, 2).await;
    let expected: Vec<Uuid> = failed.iter().rev().map(|(u, _)| *u).collect();
    assert_eq!(
        listed.iter().map(|t| t.uuid.unwrap()).collect::<Vec<_>>(),
        expected,
        "most recent first, within the window, of this queue only"
    );
    for (task, (_, at)) in listed.iter().zip(failed.iter().rev()) {
        assert_eq!(task.failed_at, Some(*at));
    }
    let listed = walk(admin, &other, TaskList::Failed, 2).await;
    assert_eq!(
        listed.iter().map(|t| t.uuid).collect::<Vec<_>>(),
        [Some(elsewhere)]
    );
}

/// A cursor no listing made is refused with `InvalidCursor`.
pub async fn admin_invalid_cursor<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("cursor");
    send_to(&server, &q, 3).await;
    for list in TaskList::ALL {
        for bad in ["not a cursor", ""] {
            match admin.tasks(&q, list, Some(bad), 2).await {
                Err(Error::InvalidCursor { cursor }) => assert_eq!(cursor, bad),
                other => {
                    panic!("{list:?} with cursor {bad:?}: expected InvalidCursor, got {other:?}")
                }
            }
        }
    }
    // A cursor made by the listing is good.
    let first = one_page(admin, &q, TaskList::Pending, None, 2).await;
    let rest = one_page(admin, &q, TaskList::Pending, first.next.as_deref(), 2).await;
    assert_eq!(rest.items.len(), 1);
}

/// One task is found by UUID wherever it is, and deleted when it waits.
pub async fn admin_find_and_delete_pending<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("find");
    let running = send_to(&server, &q, 1).await[0];
    let held = take_each(&server, &q, 1).await;
    let dead = send_to(&server, &q, 1).await[0];
    let poison = take_each(&server, &q, 1).await;
    server
        .broker()
        .dead_letter(&poison[0], &"buried".into())
        .await
        .unwrap();
    let ready = send_to(&server, &q, 1).await[0];
    let eta = SystemTime::now() + Duration::from_secs(3600);
    let delayed = add::s(9, 9)
        .queue(&q)
        .eta(eta)
        .send_with(&server)
        .await
        .unwrap()
        .uuid();

    let (list, task) = admin.find(&q, running).await.unwrap().expect("in flight");
    assert_eq!(list, TaskList::InFlight);
    assert_eq!(listed_uuid(&task), running);
    assert!(task.lease_deadline.is_some(), "{task:?}");
    let (list, task) = admin.find(&q, dead).await.unwrap().expect("dead");
    assert_eq!(list, TaskList::Dead);
    assert_eq!(listed_uuid(&task), dead);
    assert_eq!(task.reason, Some("buried".into()));
    let (list, task) = admin.find(&q, ready).await.unwrap().expect("ready");
    assert_eq!(list, TaskList::Pending);
    assert_eq!(listed_uuid(&task), ready);
    assert_eq!(task.queue, q);
    let raw = RawSignature::decode(&task.payload).expect("the task's message");
    assert_eq!(raw.name, add::NAME);
    let (list, task) = admin.find(&q, delayed).await.unwrap().expect("delayed");
    assert_eq!(list, TaskList::Delayed);
    assert_eq!(listed_uuid(&task), delayed);
    assert!(task.eta.is_some());
    assert!(admin.find(&q, Uuid::now_v7()).await.unwrap().is_none());
    assert!(
        admin
            .find(&queue_of_test("nothing"), ready)
            .await
            .unwrap()
            .is_none()
    );

    assert!(admin.delete_pending(&q, ready).await.unwrap());
    assert!(!admin.delete_pending(&q, ready).await.unwrap(), "gone");
    assert!(admin.find(&q, ready).await.unwrap().is_none());
    assert!(admin.delete_pending(&q, delayed).await.unwrap());
    assert!(
        !admin.delete_pending(&q, running).await.unwrap(),
        "not while in flight"
    );
    assert!(
        !admin.delete_pending(&q, dead).await.unwrap(),
        "not a dead letter"
    );
    let queues = admin.queues().await.unwrap();
    let info = queue_info(&queues, &q);
    assert_eq!(
        (info.ready, info.delayed, info.in_flight, info.dead),
        (0, 0, 1, 1)
    );
    server.broker().ack(&held[0]).await.unwrap();
    // The state is left as it was.
    assert_eq!(
        server
            .result::<i64>(ready, add::NAME)
            .state()
            .await
            .unwrap(),
        State::Pending
    );
}

/// Purging a queue deletes what waits in it, not what is in flight or dead.
pub async fn admin_purge_leaves_in_flight_and_dead<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("purge");
    send_to(&server, &q, 2).await;
    let held = take_each(&server, &q, 2).await;
    server
        .broker()
        .dead_letter(&held[1], &"kept".into())
        .await
        .unwrap();
    send_to(&server, &q, 3).await;
    for i in 0..2 {
        add::s(i, i)
            .queue(&q)
            .delay(Duration::from_secs(3600))
            .send_with(&server)
            .await
            .unwrap();
    }
    assert_eq!(admin.purge(&q).await.unwrap(), 5);
    let queues = admin.queues().await.unwrap();
    let info = queue_info(&queues, &q);
    assert_eq!(
        (info.ready, info.delayed, info.in_flight, info.dead),
        (0, 0, 1, 1)
    );
    assert!(walk(admin, &q, TaskList::Pending, 10).await.is_empty());
    assert!(walk(admin, &q, TaskList::Delayed, 10).await.is_empty());
    server.broker().ack(&held[0]).await.unwrap();
    assert_eq!(server.dead_letters(&q).await.unwrap().len(), 1);
    assert_eq!(admin.purge(&q).await.unwrap(), 0);
    assert_eq!(admin.purge(&queue_of_test("never-used")).await.unwrap(), 0);
}

/// A fetch hands out nothing from a paused queue, and one waiting on it is woken when
/// the queue resumes.
pub async fn admin_pause_holds_fetch<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("paused");
    let other = queue_of_test("running");
    assert!(admin.pause(&q).await.unwrap());
    let paused_task = send_to(&server, &q, 1).await[0];
    let running_task = send_to(&server, &other, 1).await[0];
    let broker = server.broker().clone();
    let got = broker
        .fetch(&[q.clone(), other.clone()], 10, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(delivered_uuid).collect::<Vec<_>>(),
        [running_task],
        "only the running queue's task"
    );
    broker.ack(&got[0]).await.unwrap();
    assert!(
        broker
            .fetch(std::slice::from_ref(&q), 1, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty(),
        "nothing from a paused queue"
    );

    let waiting = {
        let broker = broker.clone();
        let q = q.clone();
        tokio::spawn(async move {
            broker
                .fetch(std::slice::from_ref(&q), 10, Duration::from_secs(15))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the fetch waits");
    // A publish to the paused queue does not end the wait.
    let second = send_to(&server, &q, 1).await[0];
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the fetch still waits");
    let queues = admin.queues().await.unwrap();
    let info = queue_info(&queues, &q);
    assert_eq!((info.ready, info.paused), (2, true));

    assert!(admin.resume(&q).await.unwrap());
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("resuming wakes a waiting fetch")
        .unwrap()
        .unwrap();
    let mut got_uuids: Vec<Uuid> = got.iter().map(delivered_uuid).collect();
    let rest = if got.len() < 2 {
        take_each(&server, &q, 2 - got.len()).await
    } else {
        Vec::new()
    };
    got_uuids.extend(rest.iter().map(delivered_uuid));
    assert_eq!(got_uuids, [paused_task, second]);
    for d in got.iter().chain(&rest) {
        broker.ack(d).await.unwrap();
    }
}

/// A running worker stops taking tasks from a paused queue (they stay PENDING) and
/// takes them again once it resumes.
pub async fn admin_pause_stops_worker<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("pause-worker");
    let other = queue_of_test("pause-other");
    let w = Worker::auto()
        .server(&server)
        .queue(&q)
        .queue(&other)
        .grace_period(Duration::from_secs(10))
        .spawn()
        .unwrap();
    let first = add::s(1, 1).queue(&q).send_with(&server).await.unwrap();
    assert_eq!(first.get_timeout(WAIT).await.unwrap(), 2);
    assert!(admin.pause(&q).await.unwrap());
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(add::s(i, 10).queue(&q).send_with(&server).await.unwrap());
    }
    let elsewhere = add::s(5, 5).queue(&other).send_with(&server).await.unwrap();
    assert_eq!(
        elsewhere.get_timeout(WAIT).await.unwrap(),
        10,
        "the worker goes on with its other queue"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in &held {
        assert_eq!(r.state().await.unwrap(), State::Pending);
    }
    let queues = admin.queues().await.unwrap();
    assert_eq!(queue_info(&queues, &q).ready, 3);
    assert!(admin.resume(&q).await.unwrap());
    for (i, r) in held.iter().enumerate() {
        assert_eq!(r.get_timeout(WAIT).await.unwrap(), i as i64 + 10);
    }
    w.shutdown().await.unwrap();
}

fn worker_record(id: &str, name: &str, queue: &str, processed: u64) -> WorkerInfo {
    let now = wall_ms();
    WorkerInfo {
        id: id.to_owned(),
        name: name.to_owned(),
        host: "host-a".into(),
        pid: 4242,
        version: "0.0.0-conformance".into(),
        queues: vec![queue.to_owned()],
        concurrency: 4,
        prefetch: 8,
        tasks: vec![RegisteredTask {
            name: add::NAME.into(),
            schema: add::SCHEMA.into(),
            fingerprint: 0x1234_5678_9abc_def0,
        }],
        started_at: now - 5_000,
        heartbeat_at: now,
        running: vec![RunningTask {
            uuid: Uuid::now_v7(),
            name: add::NAME.into(),
            queue: queue.to_owned(),
            started_at: now - 100,
        }],
        processed,
        failed: 1,
    }
}

/// Worker records are listed by name then id, replaced when written again, gone after
/// their TTL or when removed.
pub async fn admin_worker_registry<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let q = queue_of_test("workers");
    assert!(admin.workers().await.unwrap().is_empty());
    let long = Duration::from_secs(60);
    let b = worker_record(&key("id-b"), "worker-b", &q, 3);
    let a = worker_record(&key("id-a"), "worker-a", &q, 7);
    let same_2 = worker_record("same-2", "worker-same", &q, 0);
    let same_1 = worker_record("same-1", "worker-same", &q, 0);
    for w in [&b, &a, &same_2, &same_1] {
        admin.register_worker(w, long).await.unwrap();
    }
    assert_eq!(
        admin.workers().await.unwrap(),
        [a.clone(), b.clone(), same_1.clone(), same_2.clone()],
        "by name, then id"
    );

    // Written again: replaced, now with a short TTL.
    let mut a2 = a.clone();
    a2.processed = 10;
    a2.running.clear();
    a2.heartbeat_at += 1000;
    admin
        .register_worker(&a2, Duration::from_millis(1500))
        .await
        .unwrap();
    let listed = admin.workers().await.unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0], a2);
    let written = tokio::time::Instant::now();
    eventually("the record expired", || async {
        admin.workers().await.unwrap().len() == 3
    })
    .await;
    assert!(
        written.elapsed() >= Duration::from_millis(1000),
        "kept for its TTL"
    );
    assert_eq!(
        admin.workers().await.unwrap(),
        [b.clone(), same_1.clone(), same_2.clone()]
    );

    admin.unregister_worker(&b.id).await.unwrap();
    admin.unregister_worker(&b.id).await.unwrap();
    admin.unregister_worker("nobody").await.unwrap();
    assert_eq!(admin.workers().await.unwrap(), [same_1, same_2.clone()]);
    admin.unregister_worker("same-1").await.unwrap();
    admin.unregister_worker("same-2").await.unwrap();
    assert!(admin.workers().await.unwrap().is_empty());
}

/// Statistics buckets of the same minute, queue and task add up; they are read from a
/// minute on, for one queue or all; minutes past the window are dropped.
pub async fn admin_stats_record_and_merge<H: Harness>(h: &H) {
    let server = server(h).await;
    let admin = admin(&server);
    let qa = queue_of_test("stats-a");
    let qb = queue_of_test("stats-b");
    let window = Duration::from_secs(3600);
    let minute = wall_ms() / 60_000;
    let mut first = StatsBucket::new(minute, &qa, add::NAME);
    first.processed = 3;
    first.failed = 1;
    first.run_ms[StatsBucket::bucket_of(4)] = 3;
    first.run_ms_sum = 12;
    first.wait_ms[StatsBucket::bucket_of(40)] = 3;
    first.wait_ms_sum = 120;
    let mut second = StatsBucket::new(minute, &qa, add::NAME);
    second.processed = 2;
    second.retried = 1;
    second.dead = 1;
    second.run_ms[StatsBucket::bucket_of(4)] = 1;
    second.run_ms[StatsBucket::bucket_of(700)] = 1;
    second.run_ms_sum = 704;
    second.wait_ms[StatsBucket::bucket_of(100_000)] = 2;
    second.wait_ms_sum = 200_000;
    let mut earlier = StatsBucket::new(minute - 1, &qa, add::NAME);
    earlier.processed = 5;
    earlier.run_ms[0] = 5;
    let mut other = StatsBucket::new(minute, &qb, fail::NAME);
    other.processed = 1;
    other.failed = 1;
    other.run_ms[1] = 1;
    let mut ancient = StatsBucket::new(minute - 180, &qa, add::NAME);
    ancient.processed = 7;

    admin
        .record_stats(&[first.clone(), earlier.clone(), ancient], window)
        .await
        .unwrap();
    admin
        .record_stats(&[second.clone(), other.clone()], window)
        .await
        .unwrap();
    let mut merged = first.clone();
    merged.add(&second);
    assert_eq!(merged.processed, 5);

    assert_eq!(
        admin.stats(minute - 1, None).await.unwrap(),
        [earlier.clone(), merged.clone(), other.clone()],
        "by minute, queue and task; one bucket per minute, queue and task"
    );
    assert_eq!(
        admin.stats(0, None).await.unwrap(),
        [earlier.clone(), merged.clone(), other.clone()],
        "the minute past the window was dropped"
    );
    assert_eq!(
        admin.stats(minute, Some(&qa)).await.unwrap(),
        [merged.clone()]
    );
    assert_eq!(
        admin.stats(minute - 1, Some(&qa)).await.unwrap(),
        [earlier, merged]
    );
    assert_eq!(admin.stats(0, Some(&qb)).await.unwrap(), [other]);
    assert!(admin.stats(minute + 1, None).await.unwrap().is_empty());
    assert!(
        admin
            .stats(0, Some(&queue_of_test("no-stats")))
            .await
            .unwrap()
            .is_empty()
    );
}
