//! The worker's observability: registry record, statistics, task state fields and
//! metrics, against a broker that records what the worker writes (and, for the tests
//! named `memory_…`, against the memory engine's own registry and statistics).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::config::Config;
use crate::engine::{
    Broker, BrokerAdmin, Completion, DeadLetter, Delivery, Outgoing, QueueDepth, ResultBackend,
};
use crate::error::{Error, Result};
use crate::inspect::{StatsBucket, WorkerInfo};
use crate::memory::{MemoryBackend, MemoryBroker};
use crate::result::{State, TaskState};
use crate::server::Server;
use crate::testing::tasks::{self, add, fail, flaky, gate};
use crate::{DeadLetterReason, Worker};

const WAIT: Duration = Duration::from_secs(20);

/// The memory broker, plus a worker registry and statistics that record every write.
struct Recording {
    inner: MemoryBroker,
    /// Whether it has an admin plane at all.
    admin: bool,
    /// Whether the registry and statistics writes fail with a connection error.
    refusing: AtomicBool,
    records: Mutex<HashMap<String, (WorkerInfo, Duration)>>,
    registrations: AtomicUsize,
    removed: Mutex<Vec<String>>,
    stats: Mutex<Vec<(StatsBucket, Duration)>>,
    failures: Mutex<Vec<(String, Uuid, u64)>>,
}

impl Recording {
    fn new(config: &Config, admin: bool) -> Self {
        Recording {
            inner: MemoryBroker::new(config),
            admin,
            refusing: AtomicBool::new(false),
            records: Mutex::default(),
            registrations: AtomicUsize::new(0),
            removed: Mutex::default(),
            stats: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    fn check(&self) -> Result<()> {
        if self.refusing.load(Ordering::SeqCst) {
            Err(Error::engine_msg(
                "recording",
                crate::ErrorKind::Connection,
                "refused",
            ))
        } else {
            Ok(())
        }
    }

    fn record(&self, name: &str) -> Option<(WorkerInfo, Duration)> {
        lock(&self.records)
            .values()
            .find(|(info, _)| info.name == name)
            .cloned()
    }

    /// The recorded statistics of `task`, summed over minutes.
    fn stats_of(&self, task: &str) -> StatsBucket {
        let mut sum = StatsBucket::new(0, "", task);
        for (b, _) in lock(&self.stats).iter().filter(|(b, _)| b.task == task) {
            sum.add(b);
        }
        sum
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Broker for Recording {
    fn engine(&self) -> &'static str {
        "recording"
    }
    fn visibility_timeout(&self) -> Duration {
        self.inner.visibility_timeout()
    }
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<()> {
        self.inner.publish(messages).await
    }
    async fn fetch(&self, queues: &[String], max: usize, wait: Duration) -> Result<Vec<Delivery>> {
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
    async fn dead_letter(&self, d: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.inner.dead_letter(d, reason).await
    }
    async fn complete(
        &self,
        completions: &[Completion],
        backend: &dyn ResultBackend,
    ) -> Result<Vec<Result<()>>> {
        self.inner.complete(completions, backend).await
    }
    fn admin(&self) -> Option<&dyn BrokerAdmin> {
        if self.admin { Some(self) } else { None }
    }
}

#[async_trait]
impl BrokerAdmin for Recording {
    async fn pending(&self, queue: &str) -> Result<Vec<Vec<u8>>> {
        BrokerAdmin::pending(&self.inner, queue).await
    }
    async fn delayed(&self, queue: Option<&str>) -> Result<Vec<Vec<u8>>> {
        BrokerAdmin::delayed(&self.inner, queue).await
    }
    async fn depth(&self, queue: &str) -> Result<QueueDepth> {
        BrokerAdmin::depth(&self.inner, queue).await
    }
    async fn dead_letters(&self, queue: &str) -> Result<Vec<DeadLetter>> {
        BrokerAdmin::dead_letters(&self.inner, queue).await
    }
    async fn requeue_dead_letters(&self, queue: &str) -> Result<usize> {
        BrokerAdmin::requeue_dead_letters(&self.inner, queue).await
    }
    async fn purge_dead_letters(&self, queue: &str) -> Result<usize> {
        BrokerAdmin::purge_dead_letters(&self.inner, queue).await
    }
    async fn register_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        self.check()?;
        self.registrations.fetch_add(1, Ordering::SeqCst);
        lock(&self.records).insert(info.id.clone(), (info.clone(), ttl));
        Ok(())
    }
    async fn unregister_worker(&self, id: &str) -> Result<()> {
        self.check()?;
        lock(&self.records).remove(id);
        lock(&self.removed).push(id.to_owned());
        Ok(())
    }
    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        Ok(lock(&self.records)
            .values()
            .map(|(i, _)| i.clone())
            .collect())
    }
    async fn record_stats(&self, buckets: &[StatsBucket], window: Duration) -> Result<()> {
        self.check()?;
        lock(&self.stats).extend(buckets.iter().map(|b| (b.clone(), window)));
        Ok(())
    }
    async fn record_failures(
        &self,
        failures: &[(String, Uuid, u64)],
        _window: Duration,
    ) -> Result<()> {
        self.check()?;
        lock(&self.failures).extend_from_slice(failures);
        Ok(())
    }
    fn engine(&self) -> &'static str {
        "recording"
    }
}

fn config() -> Config {
    Config {
        worker_heartbeat: Duration::from_secs(1),
        ..Config::default()
    }
}

fn recording(config: Config, admin: bool) -> (Server, Arc<Recording>) {
    let broker = Arc::new(Recording::new(&config, admin));
    let backend = Arc::new(MemoryBackend::new(config.results_ttl()));
    (Server::new(config, broker.clone(), backend), broker)
}

/// Polls `check` every 20 ms until it holds, failing after [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn state(server: &Server, uuid: Uuid) -> TaskState {
    server
        .backend()
        .load(&server.config().default_queue, uuid)
        .await
        .expect("backend")
        .expect("a stored state")
}

fn key(test: &str) -> String {
    format!("{test}-{}", Uuid::now_v7())
}

// ---- the registry -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_record_describes_the_running_worker_and_goes_at_stop() {
    let (server, broker) = recording(config(), true);
    let worker = Worker::new()
        .task(add::ENTRY)
        .task(gate::ENTRY)
        .name("registry-test")
        .concurrency(3)
        .prefetch(5)
        .server(&server)
        .spawn()
        .expect("starts");
    let k = key("registry");
    let held = gate::s(k.clone()).send_with(&server).await.expect("sent");
    eventually("the running task is in the record", || {
        broker
            .record("registry-test")
            .is_some_and(|(info, _)| info.running.iter().any(|r| r.uuid == held.uuid()))
    })
    .await;
    let (info, ttl) = broker.record("registry-test").expect("a record");
    assert_eq!(ttl, Duration::from_secs(3), "three heartbeats");
    let id: Uuid = info.id.parse().expect("the id is a UUID");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(info.host, super::host_name());
    assert!(!info.host.is_empty());
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.queues, ["machinery_tasks"]);
    assert_eq!((info.concurrency, info.prefetch), (3, 5));
    let names: Vec<&str> = info.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["conformance.add", "conformance.gate"]);
    assert_eq!(info.tasks[0].schema, add::ENTRY.schema());
    assert_eq!(info.tasks[0].fingerprint, add::ENTRY.fingerprint);
    assert!(info.started_at > 0 && info.started_at <= info.heartbeat_at);
    let running = &info.running[0];
    assert_eq!(running.name, "conformance.gate");
    assert_eq!(running.queue, "machinery_tasks");
    assert!(running.started_at >= info.started_at);
    // The task's STARTED state (written `started_after_ms` after it started) names the
    // worker.
    let deadline = tokio::time::Instant::now() + WAIT;
    let started = loop {
        let s = state(&server, held.uuid()).await;
        if s.state == State::Started {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never STARTED");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(started.worker.as_deref(), Some(info.id.as_str()));
    assert_eq!(started.started_at, running.started_at);
    assert_eq!(started.delivery, 1);
    assert!(started.sent_at > 0 && started.sent_at <= started.started_at);
    assert!(started.args.is_some(), "result_extended: the arguments");
    assert_eq!(started.schema.as_deref(), Some(gate::ENTRY.schema()));
    tasks::open(&k);
    held.get_timeout(WAIT).await.expect("the gate opens");
    let sum = add::s(1, 2).send_with(&server).await.expect("sent");
    assert_eq!(sum.get_timeout(WAIT).await.expect("runs"), 3);
    eventually("the record counts both runs", || {
        broker
            .record("registry-test")
            .is_some_and(|(i, _)| i.processed == 2 && i.failed == 0 && i.running.is_empty())
    })
    .await;
    worker.shutdown().await.expect("stops");
    assert!(broker.record("registry-test").is_none(), "removed at stop");
    assert_eq!(*lock(&broker.removed), [info.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_errors_never_stop_the_worker() {
    let (server, broker) = recording(config(), true);
    broker.refusing.store(true, Ordering::SeqCst);
    let worker = Worker::new()
        .task(add::ENTRY)
        .server(&server)
        .spawn()
        .expect("starts");
    let r = add::s(2, 2).send_with(&server).await.expect("sent");
    assert_eq!(r.get_timeout(WAIT).await.expect("runs"), 4);
    assert!(lock(&broker.records).is_empty());
    // Once the broker takes writes again, the record and the counts arrive.
    broker.refusing.store(false, Ordering::SeqCst);
    eventually("the record is written once the broker is back", || {
        lock(&broker.records)
            .values()
            .any(|(info, _)| info.processed == 1)
    })
    .await;
    eventually("the statistics kept through the outage arrive", || {
        broker.stats_of("conformance.add").processed == 1
    })
    .await;
    worker.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_admin_plane_runs_tasks_without_registry_or_statistics() {
    let (server, broker) = recording(config(), false);
    let worker = Worker::new()
        .task(add::ENTRY)
        .server(&server)
        .spawn()
        .expect("starts");
    let r = add::s(2, 5).send_with(&server).await.expect("sent");
    assert_eq!(r.get_timeout(WAIT).await.expect("runs"), 7);
    worker.shutdown().await.expect("stops");
    assert_eq!(broker.registrations.load(Ordering::SeqCst), 0);
    assert!(lock(&broker.stats).is_empty());
}

// ---- statistics -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_successes_failures_and_retries() {
    let mut c = config();
    c.stats_window = Duration::from_secs(3600);
    let (server, broker) = recording(c, true);
    let worker = Worker::new()
        .task(add::ENTRY)
        .task(fail::ENTRY)
        .task(flaky::ENTRY)
        .server(&server)
        .spawn()
        .expect("starts");
    for i in 0..3 {
        let r = add::s(i, 1).send_with(&server).await.expect("sent");
        r.get_timeout(WAIT).await.expect("runs");
    }
    let mut failed = Vec::new();
    for _ in 0..2 {
        let r = fail::s("no".into()).send_with(&server).await.expect("sent");
        assert!(r.get_timeout(WAIT).await.is_err());
        failed.push(r.uuid());
    }
    let k = key("stats");
    let r = flaky::s(k, 1)
        .retries(1)
        .retry_timeout(Duration::from_millis(10))
        .send_with(&server)
        .await
        .expect("sent");
    assert_eq!(r.get_timeout(WAIT).await.expect("second run succeeds"), 1);
    worker
        .shutdown()
        .await
        .expect("stops: the last statistics are written");

    let add = broker.stats_of("conformance.add");
    assert_eq!(
        (add.processed, add.failed, add.retried, add.dead),
        (3, 0, 0, 0)
    );
    assert_eq!(add.run_ms.iter().sum::<u64>(), 3, "one run time per run");
    assert_eq!(add.wait_ms.iter().sum::<u64>(), 3, "one queue wait per run");
    let fail = broker.stats_of("conformance.fail");
    assert_eq!((fail.processed, fail.failed, fail.retried), (2, 2, 0));
    let flaky = broker.stats_of("conformance.flaky");
    assert_eq!((flaky.processed, flaky.failed, flaky.retried), (2, 0, 1));
    for (b, window) in lock(&broker.stats).iter() {
        assert_eq!(b.queue, "machinery_tasks");
        assert_eq!(*window, Duration::from_secs(3600));
        let minute = crate::signature::now_ms() / 60_000;
        assert!(b.minute + 1 >= minute && b.minute <= minute, "{b:?}");
    }
    let mut recorded: Vec<Uuid> = lock(&broker.failures).iter().map(|f| f.1).collect();
    recorded.sort();
    failed.sort();
    assert_eq!(recorded, failed);
    assert!(
        lock(&broker.failures)
            .iter()
            .all(|f| f.0 == "machinery_tasks")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_counted_with_their_task_name_or_none() {
    let mut c = config();
    c.unregistered_requeues = 0;
    let (server, broker) = recording(c, true);
    let worker = Worker::new()
        .task(add::ENTRY)
        .server(&server)
        .spawn()
        .expect("starts");
    // A task this worker does not know, and a message that does not decode.
    let unknown = fail::s("x".into()).send_with(&server).await.expect("sent");
    assert!(unknown.get_timeout(WAIT).await.is_err());
    server
        .broker()
        .publish(vec![Outgoing {
            uuid: Uuid::now_v7(),
            queue: "machinery_tasks".into(),
            eta: None,
            priority: 0,
            payload: b"not a message".to_vec(),
        }])
        .await
        .expect("published");
    eventually("both are dead letters", || {
        broker.stats_of("").dead == 1 && broker.stats_of("conformance.fail").dead == 1
    })
    .await;
    worker.shutdown().await.expect("stops");
    let unknown_stats = broker.stats_of("conformance.fail");
    assert_eq!((unknown_stats.processed, unknown_stats.failed), (1, 1));
    let undecodable = broker.stats_of("");
    assert_eq!((undecodable.processed, undecodable.failed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_off_writes_none_and_keeps_the_registry() {
    let mut c = config();
    c.stats = false;
    let (server, broker) = recording(c, true);
    let worker = Worker::new()
        .task(add::ENTRY)
        .task(fail::ENTRY)
        .server(&server)
        .spawn()
        .expect("starts");
    add::s(1, 1)
        .send_with(&server)
        .await
        .expect("sent")
        .get_timeout(WAIT)
        .await
        .expect("runs");
    let r = fail::s("no".into()).send_with(&server).await.expect("sent");
    assert!(r.get_timeout(WAIT).await.is_err());
    eventually("the record counts the runs", || {
        lock(&broker.records)
            .values()
            .any(|(i, _)| (i.processed, i.failed) == (2, 1))
    })
    .await;
    worker.shutdown().await.expect("stops");
    assert!(lock(&broker.stats).is_empty());
    assert!(lock(&broker.failures).is_empty());
}

// ---- task states ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_carry_timings_worker_delivery_and_arguments() {
    let (server, broker) = recording(config(), true);
    // PENDING, before any worker: when it was sent, and what with.
    let r = add::s(20, 22)
        .header("trace", "t-1")
        .send_with(&server)
        .await
        .expect("sent");
    let pending = state(&server, r.uuid()).await;
    assert_eq!(pending.state, State::Pending);
    assert!(pending.sent_at > 0);
    assert_eq!(pending.started_at, 0);
    assert_eq!(pending.worker, None);
    let args: (i64, i64) = rmp_serde::from_slice(pending.args.as_deref().expect("args"))
        .expect("the arguments decode");
    assert_eq!(args, (20, 22));
    assert_eq!(
        pending.headers.get("trace").map(String::as_str),
        Some("t-1")
    );
    assert_eq!(pending.schema.as_deref(), Some(add::ENTRY.schema()));
    // A chain's later step is PENDING from the start, with its arguments as sent.
    let chain = add::s(1, 1)
        .then(add::partial(5))
        .send_with(&server)
        .await
        .expect("sent");
    let later = state(&server, chain.steps()[1]).await;
    assert_eq!(later.state, State::Pending);
    assert!(later.sent_at > 0);
    assert!(later.args.is_some());

    let worker = Worker::new()
        .task(add::ENTRY)
        .server(&server)
        .spawn()
        .expect("starts");
    assert_eq!(r.get_timeout(WAIT).await.expect("runs"), 42);
    assert_eq!(chain.get_timeout(WAIT).await.expect("runs"), 7);
    let done = state(&server, r.uuid()).await;
    assert_eq!(done.state, State::Success);
    assert_eq!(
        done.sent_at, pending.sent_at,
        "sent_at is kept from the message"
    );
    assert!(done.started_at >= done.sent_at);
    assert!(done.updated_at >= done.started_at);
    assert_eq!(done.delivery, 1);
    assert_eq!(done.args, pending.args);
    assert_eq!(done.headers, pending.headers);
    assert_eq!(done.schema, pending.schema);
    eventually("the worker is registered", || {
        !lock(&broker.records).is_empty()
    })
    .await;
    let id = lock(&broker.records).keys().next().cloned();
    assert_eq!(done.worker, id);
    // The chain's second step ran with the first one's result appended.
    let step = state(&server, chain.steps()[1]).await;
    let args: (i64, i64) =
        rmp_serde::from_slice(step.args.as_deref().expect("args")).expect("the arguments decode");
    assert_eq!(args, (5, 2));
    worker.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_result_extended_states_keep_no_arguments() {
    let mut c = config();
    c.result_extended = false;
    let (server, _broker) = recording(c, true);
    let r = add::s(1, 2)
        .header("h", "v")
        .send_with(&server)
        .await
        .expect("sent");
    let pending = state(&server, r.uuid()).await;
    assert!(pending.sent_at > 0, "timings are always kept");
    assert_eq!(pending.args, None);
    assert!(pending.headers.is_empty());
    assert_eq!(pending.schema, None);
    let worker = Worker::new()
        .task(add::ENTRY)
        .server(&server)
        .spawn()
        .expect("starts");
    r.get_timeout(WAIT).await.expect("runs");
    let done = state(&server, r.uuid()).await;
    assert!(done.started_at > 0);
    assert!(done.worker.is_some());
    assert_eq!(done.args, None);
    assert!(done.headers.is_empty());
    worker.shutdown().await.expect("stops");
}

// ---- the memory engine's registry and statistics ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_registry_lists_a_running_worker_and_forgets_it_at_stop() {
    let server = Server::memory_with(config());
    let worker = Worker::new()
        .task(add::ENTRY)
        .name("memory-registry")
        .server(&server)
        .spawn()
        .expect("starts");
    let deadline = tokio::time::Instant::now() + WAIT;
    let info = loop {
        let workers = server
            .admin()
            .expect("admin")
            .workers()
            .await
            .expect("workers");
        if let Some(info) = workers.into_iter().find(|w| w.name == "memory-registry") {
            break info;
        }
        assert!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.tasks[0].name, "conformance.add");
    worker.shutdown().await.expect("stops");
    let workers = server
        .admin()
        .expect("admin")
        .workers()
        .await
        .expect("workers");
    assert!(workers.iter().all(|w| w.id != info.id), "removed at stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_statistics_count_what_ran() {
    let server = Server::memory_with(config());
    let worker = Worker::new()
        .task(add::ENTRY)
        .task(fail::ENTRY)
        .server(&server)
        .spawn()
        .expect("starts");
    for i in 0..4 {
        add::s(i, i)
            .send_with(&server)
            .await
            .expect("sent")
            .get_timeout(WAIT)
            .await
            .expect("runs");
    }
    let r = fail::s("no".into()).send_with(&server).await.expect("sent");
    assert!(r.get_timeout(WAIT).await.is_err());
    worker.shutdown().await.expect("stops");
    let admin = server.admin().expect("admin");
    let buckets = admin
        .stats(0, Some("machinery_tasks"))
        .await
        .expect("statistics");
    let sum = |task: &str| {
        let mut s = StatsBucket::new(0, "machinery_tasks", task);
        for b in buckets.iter().filter(|b| b.task == task) {
            s.add(b);
        }
        s
    };
    assert_eq!(sum("conformance.add").processed, 4);
    let fail = sum("conformance.fail");
    assert_eq!((fail.processed, fail.failed), (1, 1));
    let failures = admin
        .tasks(
            "machinery_tasks",
            crate::inspect::TaskList::Failed,
            None,
            10,
        )
        .await
        .expect("failures");
    assert!(failures.items.iter().any(|t| t.uuid == Some(r.uuid())));
}

// ---- metrics ------------------------------------------------------------------------------

/// One scrape, checked against the OpenMetrics text format as prometheus-client writes
/// it: every sample belongs to a family declared before it by `# TYPE`, names and
/// labels are well formed, values are numbers, and `# EOF` ends the text.
#[cfg(feature = "metrics")]
struct Scrape {
    /// Family name → type.
    types: HashMap<String, String>,
    /// `name{labels}` as written → value.
    samples: HashMap<String, f64>,
}

#[cfg(feature = "metrics")]
impl Scrape {
    fn parse(text: &str) -> Scrape {
        let body = text
            .strip_suffix("# EOF\n")
            .unwrap_or_else(|| panic!("no `# EOF` at the end:\n{text}"));
        assert!(!body.contains("# EOF"), "`# EOF` before the end");
        let is_name = |s: &str| {
            !s.is_empty()
                && s.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        let mut types = HashMap::new();
        let mut samples = HashMap::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("`# TYPE name type`");
                assert!(is_name(name), "{line}");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "{line} twice"
                );
                continue;
            }
            if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unknown comment: {line}");
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, Some(labels.strip_suffix('}').expect("`}`"))),
                None => (series, None),
            };
            assert!(is_name(name), "{line}");
            for label in labels.map(|l| l.split("\",")).into_iter().flatten() {
                let (k, v) = label
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("label in {line}"));
                assert!(is_name(k), "{line}");
                assert!(!v.trim_end_matches('"').contains('"'), "{line}");
            }
            let family = types
                .keys()
                .filter(|f: &&String| {
                    let kind = types[*f].as_str();
                    let suffixes: &[&str] = match kind {
                        "counter" => &["_total"],
                        "histogram" => &["_bucket", "_count", "_sum"],
                        _ => &[""],
                    };
                    suffixes.iter().any(|s| name == format!("{f}{s}"))
                })
                .count();
            assert_eq!(family, 1, "{line}: its family is not declared before it");
            samples.insert(series.to_owned(), value);
        }
        Scrape { types, samples }
    }

    fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series} among {} samples", self.samples.len()))
    }
}

/// `GET path` over a plain TCP connection: the response head and body.
#[cfg(feature = "metrics")]
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connects");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("request sent");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response read");
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        (head.to_owned(), body.to_owned())
    })
    .await
    .expect("the request ran")
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_its_metrics_over_http() {
    let (server, broker) = recording(config(), true);
    let worker = Worker::new()
        .task(add::ENTRY)
        .task(fail::ENTRY)
        .task(flaky::ENTRY)
        .concurrency(4)
        .server(&server)
        .metrics_listen("127.0.0.1:0")
        .spawn()
        .expect("starts");
    let addr = worker.metrics_addr().expect("serving metrics");
    assert!(addr.ip().is_loopback() && addr.port() > 0);
    for i in 0..3 {
        add::s(i, 1)
            .send_with(&server)
            .await
            .expect("sent")
            .get_timeout(WAIT)
            .await
            .expect("runs");
    }
    let r = fail::s("no".into()).send_with(&server).await.expect("sent");
    assert!(r.get_timeout(WAIT).await.is_err());
    let r = flaky::s(key("metrics"), 1)
        .retries(1)
        .retry_timeout(Duration::from_millis(10))
        .send_with(&server)
        .await
        .expect("sent");
    r.get_timeout(WAIT).await.expect("runs again and succeeds");
    eventually("the worker is registered", || {
        !lock(&broker.records).is_empty()
    })
    .await;

    let (head, body) = http_get(addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    let scrape = Scrape::parse(&body);
    for (family, kind) in [
        ("machinery_tasks", "counter"),
        ("machinery_task_run_seconds", "histogram"),
        ("machinery_task_wait_seconds", "histogram"),
        ("machinery_tasks_running", "gauge"),
        ("machinery_worker_concurrency", "gauge"),
        ("machinery_queue_depth", "gauge"),
        ("machinery_workers_alive", "gauge"),
        ("machinery_broker_up", "gauge"),
    ] {
        assert_eq!(
            scrape.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    assert!(body.contains("# UNIT machinery_task_run_seconds seconds"));
    let total = |task: &str, outcome: &str| {
        scrape.value(&format!(
            "machinery_tasks_total{{task=\"{task}\",queue=\"machinery_tasks\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(total("conformance.add", "success"), 3.0);
    assert_eq!(total("conformance.add", "failure"), 0.0);
    assert_eq!(total("conformance.fail", "failure"), 1.0);
    assert_eq!(total("conformance.flaky", "retry"), 1.0);
    assert_eq!(total("conformance.flaky", "success"), 1.0);
    let labels = "task=\"conformance.add\",queue=\"machinery_tasks\"";
    assert_eq!(
        scrape.value(&format!("machinery_task_run_seconds_count{{{labels}}}")),
        3.0
    );
    assert_eq!(
        scrape.value(&format!(
            "machinery_task_run_seconds_bucket{{le=\"+Inf\",{labels}}}"
        )),
        3.0
    );
    assert_eq!(
        scrape.value(&format!(
            "machinery_task_wait_seconds_bucket{{le=\"60.0\",{labels}}}"
        )),
        3.0
    );
    assert!(scrape.value(&format!("machinery_task_run_seconds_sum{{{labels}}}")) >= 0.0);
    assert_eq!(scrape.value("machinery_tasks_running"), 0.0);
    assert_eq!(scrape.value("machinery_worker_concurrency"), 4.0);
    assert_eq!(scrape.value("machinery_workers_alive"), 1.0);
    assert_eq!(scrape.value("machinery_broker_up"), 1.0);
    assert_eq!(
        scrape.value("machinery_queue_depth{queue=\"machinery_tasks\",state=\"ready\"}"),
        0.0
    );
    let (head, _) = http_get(addr, "/elsewhere").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    worker.shutdown().await.expect("stops");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the endpoint stops with the worker"
    );
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn a_metrics_address_that_cannot_be_bound_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address");
    let server = Server::memory();
    let err = Worker::new()
        .task(add::ENTRY)
        .server(&server)
        .metrics_listen(addr)
        .spawn()
        .expect_err("the port is taken");
    match &err {
        Error::Listen { addr: shown, .. } => assert_eq!(*shown, addr.to_string()),
        other => panic!("expected Error::Listen, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("cannot listen on `{addr}`: ")),
        "{err}"
    );
    let err = Worker::new()
        .task(add::ENTRY)
        .server(&server)
        .metrics_listen("no-such-host.invalid:9090")
        .spawn()
        .expect_err("does not resolve");
    assert!(
        err.to_string()
            .starts_with("cannot listen on `no-such-host.invalid:9090`: "),
        "{err}"
    );
}
