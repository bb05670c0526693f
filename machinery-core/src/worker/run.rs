//! The worker's loops: fetching, heartbeats, settling completions, shutdown.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use uuid::Uuid;

use crate::engine::{Completion, Delivery, Revocation};
use crate::error::{Error, Result};
use crate::fatal::Fatal;
use crate::inspect::{RegisteredTask, RunningTask, WorkerInfo};
use crate::registry::Registry;
use crate::result::{State, TaskState};
use crate::server::Server;
use crate::signature::{RawSignature, now_ms};

use super::observe::Observer;
use super::report::{self, Report};
use super::started;
use super::{Hooks, Worker, process};

/// The longest one fetch call blocks (a stop request cancels it at once anyway).
const FETCH_WAIT: Duration = Duration::from_secs(5);
/// The most completions settled in one engine call.
const COMPLETION_BATCH: usize = 256;
/// With unlimited concurrency, how many fetches' worth of deliveries a worker holds at
/// most: everything fetched runs at once, but a deep queue is not taken whole (the
/// memory engine hands out 200,000 queued tasks in milliseconds; every one spawned
/// took 780 MB).
const UNLIMITED_FETCHES: usize = 64;
/// How long a delivery whose processing panicked in the worker's own code waits before
/// it is delivered again (it counts as a delivery, so `max_deliveries` ends a loop).
const PANIC_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long a starting worker waits for the recorded revocations before it fetches
/// anyway (the stored REVOKED states still stop pending tasks).
const REVOCATIONS_WAIT: Duration = Duration::from_secs(5);
/// The local set of revocations is trimmed of expired ones every this many inserts.
const REVOCATIONS_TRIM: usize = 1024;

/// A completion on its way to the completer, with where to send its own result (the
/// worker re-settles a completion refused because its task was revoked meanwhile).
pub(crate) struct Settled {
    pub(crate) completion: Completion,
    pub(crate) reply: Option<oneshot::Sender<Result<()>>>,
}

/// Receipts are unique within a queue.
type SlotKey = (String, String);

fn slot_key(d: &Delivery) -> SlotKey {
    (d.queue.clone(), d.receipt.clone())
}

/// A delivery the worker holds, with the task running it.
pub(crate) struct Slot {
    pub(crate) delivery: Delivery,
    pub(crate) abort: Option<AbortHandle>,
    /// The task it runs, for the registry record; `None` for a message that does not
    /// decode or names a task not registered here.
    run: Option<Running>,
}

/// A task a slot runs.
struct Running {
    uuid: Uuid,
    name: &'static str,
    started_at: u64,
    /// Fired when the task is revoked.
    cancel: CancellationToken,
}

/// A STARTED state not built yet: most tasks finish before it would be written.
pub(crate) struct Started {
    shared: Arc<Shared>,
    raw: Arc<RawSignature>,
    fallback: Option<String>,
    delivery: u32,
    started_at: u64,
}

impl started::StartedState for Started {
    fn build(self) -> TaskState {
        let queue = self.fallback.as_deref().unwrap_or_default();
        self.shared.run_state(
            &self.raw,
            State::Started,
            queue,
            self.delivery,
            self.started_at,
        )
    }
}

/// What every task of one worker shares.
pub(crate) struct Shared {
    pub(crate) server: Server,
    pub(crate) registry: Registry,
    pub(crate) hooks: Hooks,
    pub(crate) worker: String,
    /// The worker's registry id, written into the states it writes.
    pub(crate) id: String,
    /// Counts for the registry record, the statistics and the metrics.
    pub(crate) observer: Arc<Observer>,
    inflight: Mutex<HashMap<SlotKey, Slot>>,
    pub(crate) completions: mpsc::Sender<Settled>,
    /// The revocations this worker knows: reason, and until when they are kept (ms).
    revoked: Mutex<HashMap<Uuid, (String, Option<u64>)>>,
    /// Fired once the recorded revocations were read (or could not be) at start.
    revocations_read: CancellationToken,
    /// Stops the worker on the first permanent error of its loops.
    fatal: Arc<Fatal>,
    /// The rate limits: reservations, and the queues paused while theirs has no slot.
    pub(crate) limits: super::limit::Limits,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, HashMap<SlotKey, Slot>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn revoked_set(&self) -> MutexGuard<'_, HashMap<Uuid, (String, Option<u64>)>> {
        self.revoked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why task `uuid` was revoked, when this worker knows it was.
    pub(crate) fn revocation(&self, uuid: &Uuid) -> Option<String> {
        let now = now_ms();
        self.revoked_set()
            .get(uuid)
            .filter(|(_, until)| until.is_none_or(|u| u > now))
            .map(|(reason, _)| reason.clone())
    }

    /// Learns of a revocation: remembered (a message of the task fetched later is not
    /// run), and the task stopped if this worker runs it.
    fn learn(&self, r: Revocation) {
        {
            let mut set = self.revoked_set();
            set.insert(r.uuid, (r.reason, r.until));
            if set.len().is_multiple_of(REVOCATIONS_TRIM) {
                let now = now_ms();
                set.retain(|_, (_, until)| until.is_none_or(|u| u > now));
            }
        }
        for slot in self.slots().values() {
            if let Some(run) = &slot.run
                && run.uuid == r.uuid
            {
                tracing::info!(task.id = %run.uuid, task.name = %run.name, "task revoked; cancelling it");
                run.cancel.cancel();
            }
        }
    }

    /// The cancellation token of the task `delivery` runs (a fresh one when the slot is
    /// gone or runs no registered task).
    pub(crate) fn cancel_token(&self, delivery: &Delivery) -> CancellationToken {
        self.slots()
            .get(&slot_key(delivery))
            .and_then(|slot| slot.run.as_ref())
            .map(|run| run.cancel.clone())
            .unwrap_or_default()
    }

    /// A state of task `raw` at `state`, with its arguments, headers and schema when
    /// `result_extended` is on.
    pub(crate) fn task_state(&self, raw: &RawSignature, state: State, queue: &str) -> TaskState {
        let mut s = raw.task_state(state, queue);
        if self.server.config().result_extended {
            raw.extend_state(&mut s);
        }
        s
    }

    /// A state of a task this worker runs (STARTED, or how its delivery ended): as
    /// [`task_state`](Shared::task_state) (`queue`: the queue it was fetched from),
    /// with the worker, the delivery (1 for the first) and when the run started (0 when
    /// it never started).
    pub(crate) fn run_state(
        &self,
        raw: &RawSignature,
        state: State,
        queue: &str,
        delivery: u32,
        started_at: u64,
    ) -> TaskState {
        let mut s = self.task_state(raw, state, queue);
        s.started_at = started_at;
        s.worker = Some(self.id.clone());
        s.delivery = delivery;
        s
    }

    /// The STARTED state of `raw`, fetched from `delivery`'s queue, built if it is
    /// written.
    fn started(
        self: &Arc<Self>,
        raw: &Arc<RawSignature>,
        delivery: &Delivery,
        started_at: u64,
    ) -> Started {
        Started {
            shared: self.clone(),
            raw: raw.clone(),
            // The fetch queue matters only to a message without a routing key.
            fallback: raw.routing_key.is_empty().then(|| delivery.queue.clone()),
            delivery: delivery.delivery_count,
            started_at,
        }
    }

    /// The tasks running now, for the registry record.
    fn running(&self) -> Vec<RunningTask> {
        self.slots()
            .values()
            .filter_map(|slot| {
                let run = slot.run.as_ref()?;
                Some(RunningTask {
                    uuid: run.uuid,
                    name: run.name.to_owned(),
                    queue: slot.delivery.queue.clone(),
                    started_at: run.started_at,
                })
            })
            .collect()
    }

    /// How many deliveries the worker holds (running, or about to).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn held(&self) -> usize {
        self.slots().len()
    }

    /// Takes ownership of settling a delivery. `None` when shutdown already handed it
    /// back, in which case the caller must not ack, release or dead-letter it.
    pub(crate) fn settle(&self, delivery: &Delivery) -> Option<Delivery> {
        self.slots().remove(&slot_key(delivery)).map(|s| s.delivery)
    }
}

pub(crate) struct Runner {
    shared: Arc<Shared>,
    stop: CancellationToken,
    abort: CancellationToken,
    grace: Duration,
    tracker: TaskTracker,
    fetcher: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    revocations: JoinHandle<()>,
    completer: JoinHandle<()>,
    fatal: Arc<Fatal>,
    // Periodic tasks (opt-in, `Worker::scheduler`).
    periodic: Option<crate::periodic::SchedulerHandle>,
    /// The registry record and statistics; stopped last, after the completions.
    report: JoinHandle<()>,
    report_stop: CancellationToken,
    /// The metrics endpoint (`Worker::metrics_listen`).
    #[cfg(feature = "metrics")]
    metrics: Option<super::serve::MetricsServer>,
}

impl Runner {
    pub(crate) fn start(
        worker: Worker,
        stop: CancellationToken,
        abort: CancellationToken,
    ) -> Result<Self> {
        let server = match &worker.server {
            Some(s) => s.clone(),
            None => Server::global().map_err(|e| Error::Worker(e.to_string()))?,
        };
        let registry = worker.registry()?;
        let mut queues = worker.queues.clone();
        if queues.is_empty() {
            queues.push(server.config().default_queue.clone());
            for name in registry.names() {
                if let Some(q) = registry.get(name).and_then(|e| e.options.queue)
                    && !queues.iter().any(|have| have == q)
                {
                    queues.push(q.to_owned());
                }
            }
        }
        tracing::info!(
            worker = %worker.name,
            broker = server.broker().engine(),
            backend = server.backend().engine(),
            queues = ?queues,
            concurrency = worker.concurrency,
            tasks = ?registry.names(),
            "worker starting"
        );
        // Bound first: a port in use stops the worker before it takes any message.
        #[cfg(feature = "metrics")]
        let metrics_listener = match &worker.metrics {
            Some(addrs) => Some(super::serve::bind(addrs)?),
            None => None,
        };
        #[cfg(feature = "metrics")]
        let metrics_on = metrics_listener.is_some();
        #[cfg(not(feature = "metrics"))]
        let metrics_on = false;
        let config = server.config();
        let observer = Arc::new(Observer::new(config.stats, metrics_on));
        let info = worker_info(&worker, &registry, &queues);
        #[cfg(feature = "metrics")]
        let metric_queues = queues.clone();
        let (heartbeat_every, stats_window) = (config.worker_heartbeat, config.stats_window);
        let (tx, rx) = mpsc::channel(COMPLETION_BATCH * 4);
        let fatal = Arc::new(Fatal::new("worker", stop.clone()));
        let limits = super::limit::Limits::new(
            config.rate_limits.clone(),
            server.broker().visibility_timeout(),
        );
        let shared = Arc::new(Shared {
            server,
            registry,
            hooks: worker.hooks.clone(),
            worker: worker.name.clone(),
            id: info.id.clone(),
            observer: observer.clone(),
            inflight: Mutex::new(HashMap::new()),
            completions: tx,
            fatal: fatal.clone(),
            revoked: Mutex::new(HashMap::new()),
            revocations_read: CancellationToken::new(),
            limits,
        });
        let revocations = tokio::spawn(revocation_loop(shared.clone()));
        let tracker = TaskTracker::new();
        let slots = match worker.concurrency {
            0 => worker.prefetch.saturating_mul(UNLIMITED_FETCHES),
            n => n,
        }
        // Semaphore limits, and u32 for acquiring every permit at once.
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize);
        let semaphore = Arc::new(Semaphore::new(slots));
        let fetcher = tokio::spawn(fetch_loop(
            shared.clone(),
            stop.clone(),
            tracker.clone(),
            semaphore,
            slots,
            queues,
            worker.prefetch,
        ));
        let heartbeat = tokio::spawn(heartbeat_loop(shared.clone()));
        let completer = tokio::spawn(complete_loop(shared.clone(), rx, fatal.clone()));
        let periodic = worker
            .scheduler
            .clone()
            .map(crate::periodic::Scheduler::spawn);
        // The loops below hold the worker's state weakly: the completion channel
        // closes only once every strong reference is gone.
        let weak = Arc::downgrade(&shared);
        let report_stop = CancellationToken::new();
        let report = tokio::spawn(report::report_loop(
            Report {
                broker: shared.server.broker().clone(),
                observer,
                info,
                running: Box::new(move || weak.upgrade().map(|s| s.running()).unwrap_or_default()),
                heartbeat: heartbeat_every,
                stats_window,
            },
            report_stop.clone(),
        ));
        #[cfg(feature = "metrics")]
        let metrics = metrics_listener.map(|listener| {
            super::serve::MetricsServer::start(listener, &shared, metric_queues, slots)
        });
        Ok(Runner {
            shared,
            stop,
            abort,
            grace: worker.grace,
            tracker,
            fetcher,
            heartbeat,
            revocations,
            completer,
            fatal,
            periodic,
            report,
            report_stop,
            #[cfg(feature = "metrics")]
            metrics,
        })
    }

    /// Where the metrics endpoint listens, when it does.
    #[cfg(feature = "metrics")]
    pub(crate) fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }

    /// Runs until stopped, then shuts down gracefully.
    pub(crate) async fn wait(self) -> Result<()> {
        let Runner {
            shared,
            stop,
            abort,
            grace,
            tracker,
            fetcher,
            heartbeat,
            revocations,
            completer,
            fatal,
            periodic,
            report,
            report_stop,
            #[cfg(feature = "metrics")]
            metrics,
        } = self;
        stop.cancelled().await;
        if let Some(p) = periodic
            && let Err(e) = p.shutdown().await
        {
            tracing::error!(error = %e, "periodic scheduler ended abnormally");
        }
        let _ = fetcher.await;
        tracker.close();
        let running = shared.slots().len();
        if running > 0 {
            tracing::info!(worker = %shared.worker, running, ?grace, "waiting for running tasks");
        }
        tokio::select! {
            () = tracker.wait() => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!(worker = %shared.worker, "grace period over; handing unfinished tasks back");
            }
            () = abort.cancelled() => {
                tracing::warn!(worker = %shared.worker, "aborting; handing unfinished tasks back");
            }
        }
        let leftovers: Vec<Slot> = shared.slots().drain().map(|(_, s)| s).collect();
        let mut first_error = None;
        for slot in leftovers {
            if let Some(a) = &slot.abort {
                a.abort();
            }
            if let Err(e) = shared.server.broker().release(&slot.delivery, None).await {
                tracing::error!(error = %e, "could not hand a delivery back; it returns after the visibility timeout");
                first_error.get_or_insert(e);
            }
        }
        tracker.wait().await;
        // Every task has ended, so every completion is queued: close the channel and let
        // the completer drain it.
        heartbeat.abort();
        let _ = heartbeat.await;
        revocations.abort();
        let _ = revocations.await;
        drop(shared);
        let _ = completer.await;
        // Every run is counted and settled: the last statistics, then the registry
        // record goes.
        report_stop.cancel();
        let _ = report.await;
        #[cfg(feature = "metrics")]
        if let Some(m) = metrics {
            m.stop().await;
        }
        tracing::info!("worker stopped");
        // The error that stopped the worker comes first: it is why it stopped.
        match fatal.take().or(first_error) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

pub(crate) async fn watch_signals(stop: CancellationToken, abort: CancellationToken) {
    let mut count = 0;
    loop {
        if !next_signal().await {
            return;
        }
        count += 1;
        if count == 1 {
            tracing::info!("shutdown requested; finishing running tasks (signal again to abort)");
            stop.cancel();
        } else {
            tracing::warn!("second signal; aborting running tasks");
            abort.cancel();
            return;
        }
    }
}

#[cfg(unix)]
async fn next_signal() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return false;
    };
    tokio::select! {
        _ = term.recv() => true,
        _ = int.recv() => true,
    }
}

#[cfg(not(unix))]
async fn next_signal() -> bool {
    tokio::signal::ctrl_c().await.is_ok()
}

async fn fetch_loop(
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
    semaphore: Arc<Semaphore>,
    slots: usize,
    queues: Vec<String>,
    prefetch: usize,
) {
    let broker = shared.server.broker().clone();
    // A task revoked while no worker ran is skipped from the first fetch on.
    tokio::select! {
        () = shared.revocations_read.cancelled() => {}
        () = tokio::time::sleep(REVOCATIONS_WAIT) => {
            tracing::warn!("the recorded revocations are not read yet; fetching anyway");
        }
        () = stop.cancelled() => return,
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        // Every queue waits for its rate limit's next slot: nothing to fetch until then.
        if let Some(pause) = shared.limits.all_paused(&queues) {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return,
            }
            continue;
        }
        let first = tokio::select! {
            p = semaphore.clone().acquire_owned() => p,
            () = stop.cancelled() => return,
        };
        let Ok(mut permits) = first else { return };
        let extra = semaphore
            .available_permits()
            .min(prefetch.saturating_sub(1));
        let extra = u32::try_from(extra).unwrap_or(u32::MAX);
        if extra > 0
            && let Ok(more) = semaphore.clone().try_acquire_many_owned(extra)
        {
            permits.merge(more);
        }
        let max = permits.num_permits();
        let (fetchable, wait) = shared.limits.fetchable(&queues, FETCH_WAIT);
        if fetchable.is_empty() {
            // Paused since the check above: the top of the loop waits.
            continue;
        }
        let fetched = tokio::select! {
            r = broker.fetch(&fetchable, max, wait) => r,
            () = stop.cancelled() => return,
        };
        let batch = match fetched {
            Ok(b) => {
                backoff = Duration::from_millis(50);
                b
            }
            Err(e) if e.is_permanent() => {
                shared.fatal.fail("fetch", e);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "fetch failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        // Every message fetched runs at once (fetches never exceed free slots); those
        // still running a moment later are recorded as STARTED, in one write. A message
        // delivered before whose delivery ended unsettled (its worker died, or lost the
        // lease) is a suspect: it runs alone once the rest is done, so that a task that
        // kills its worker charges only its own deliveries, never its neighbours'.
        let config = shared.server.config();
        // The tasks of a batch start together.
        let started_at = now_ms();
        let mut started = Vec::with_capacity(batch.len());
        let mut decoded = Vec::with_capacity(batch.len());
        let mut suspects = Vec::new();
        for delivery in batch {
            let mut delivery = delivery;
            // Decoded once here; the engine keeps its own copy for redelivery and dead
            // letters, so the payload is not carried (and cloned) any further.
            let payload = std::mem::take(&mut delivery.payload);
            let raw = if delivery.delivery_count > config.max_deliveries.saturating_add(1) {
                // Past the delivery that should have dead-lettered it: whatever kills
                // its worker may be the decoding itself, so it is not decoded again.
                Err(Error::Decode {
                    what: "message",
                    reason: format!(
                        "not decoded again: delivered {} times (max_deliveries = {}) and its \
                         worker died every time",
                        delivery.delivery_count, config.max_deliveries
                    ),
                })
            } else {
                RawSignature::decode(&payload).map(Arc::new)
            };
            let run = match &raw {
                Ok(raw) => shared.registry.get(&raw.name).map(|entry| Running {
                    uuid: raw.uuid,
                    name: entry.name,
                    started_at,
                    cancel: CancellationToken::new(),
                }),
                Err(_) => None,
            };
            let runs = run.is_some();
            let permit = permits.split(1);
            hold(&shared, &delivery, run);
            if runs
                && delivery.delivery_count > 1
                && delivery.delivery_count <= config.max_deliveries
            {
                suspects.push((delivery, raw, permit));
                continue;
            }
            started.push(match &raw {
                Ok(raw) if runs => Some(shared.started(raw, &delivery, started_at)),
                _ => None,
            });
            decoded.push((delivery, raw, permit));
        }
        let gates = started::schedule(
            &tracker,
            shared.server.backend().clone(),
            started,
            config.started_after,
        );
        for ((delivery, raw, permit), gate) in decoded.into_iter().zip(gates) {
            spawn(&shared, &tracker, delivery, raw, permit, gate, started_at);
        }
        drop(permits);
        if !suspects.is_empty()
            && !run_alone(&shared, &stop, &tracker, &semaphore, slots, suspects).await
        {
            return;
        }
    }
}

/// Records a delivery as held by this worker (heartbeats extend it; shutdown hands it
/// back when it did not finish; the registry record lists the task it runs).
fn hold(shared: &Shared, delivery: &Delivery, run: Option<Running>) {
    shared.slots().insert(
        slot_key(delivery),
        Slot {
            delivery: delivery.clone(),
            abort: None,
            run,
        },
    );
}

/// Runs one delivery on the tracker. A panic in the worker's own code around the task
/// (the task's own panics are caught where it runs) hands the delivery back instead of
/// leaving it held, and extended, forever.
fn spawn(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    delivery: Delivery,
    raw: Result<Arc<RawSignature>>,
    permit: Option<OwnedSemaphorePermit>,
    gate: started::StartGate,
    started_at: u64,
) -> JoinHandle<()> {
    let key = slot_key(&delivery);
    let guarded = {
        let shared = shared.clone();
        let delivery = delivery.clone();
        async move {
            let run = process::process(
                shared.clone(),
                delivery.clone(),
                raw,
                permit,
                gate,
                started_at,
            );
            if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
                let message = super::panic_message(panic.as_ref());
                tracing::error!(queue = %delivery.queue, receipt = %delivery.receipt, panic = %message, "the worker panicked around a task; handing its delivery back");
                if let Some(d) = shared.settle(&delivery)
                    && let Err(e) = shared
                        .server
                        .broker()
                        .release(&d, Some(PANIC_RETRY_DELAY))
                        .await
                {
                    tracing::error!(error = %e, "could not hand the delivery back; it returns after the visibility timeout");
                }
            }
        }
    };
    let handle = tracker.spawn(guarded);
    if let Some(slot) = shared.slots().get_mut(&key) {
        slot.abort = Some(handle.abort_handle());
    }
    handle
}

/// Runs suspect deliveries one at a time, each once nothing else of this worker runs;
/// no other message is fetched meanwhile. False when the worker is stopping (the
/// suspects not run yet are handed back by the shutdown).
async fn run_alone(
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    tracker: &TaskTracker,
    semaphore: &Arc<Semaphore>,
    slots: usize,
    suspects: Vec<(
        Delivery,
        Result<Arc<RawSignature>>,
        Option<OwnedSemaphorePermit>,
    )>,
) -> bool {
    let others = u32::try_from(slots.saturating_sub(suspects.len())).unwrap_or(u32::MAX);
    let drained = tokio::select! {
        p = semaphore.clone().acquire_many_owned(others) => p,
        () = stop.cancelled() => return false,
    };
    let Ok(_drained) = drained else { return false };
    for (delivery, raw, permit) in suspects {
        tracing::info!(queue = %delivery.queue, deliveries = delivery.delivery_count, "a delivery that ended unsettled before runs alone");
        let started_at = now_ms();
        if let Some(run) = shared
            .slots()
            .get_mut(&slot_key(&delivery))
            .and_then(|slot| slot.run.as_mut())
        {
            run.started_at = started_at;
        }
        let state = match &raw {
            Ok(raw) => Some(shared.started(raw, &delivery, started_at)),
            Err(_) => None,
        };
        let gate = started::schedule(
            tracker,
            shared.server.backend().clone(),
            vec![state],
            shared.server.config().started_after,
        )
        .pop()
        .unwrap_or_else(started::StartGate::none);
        let handle = spawn(shared, tracker, delivery, raw, permit, gate, started_at);
        tokio::select! {
            _ = handle => {}
            () = stop.cancelled() => return false,
        }
    }
    true
}

async fn heartbeat_loop(shared: Arc<Shared>) {
    let broker = shared.server.broker().clone();
    let every = (broker.visibility_timeout() / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let held: Vec<Delivery> = shared
            .slots()
            .values()
            .map(|s| s.delivery.clone())
            .collect();
        if held.is_empty() {
            continue;
        }
        match broker.extend(&held).await {
            Ok(alive) => {
                for (d, ok) in held.iter().zip(alive) {
                    if !ok {
                        tracing::warn!(queue = %d.queue, receipt = %d.receipt, "lease lost: the task may run on another worker too; its result will not be written by this one");
                    }
                }
            }
            Err(e) if e.is_permanent() => {
                shared.fatal.fail("heartbeat", e);
                return;
            }
            // The next tick tries again, well within the visibility timeout.
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Keeps the worker's set of revocations: watches for new ones first, then reads those
/// recorded, so none falls between; watches again (and reads again) when the stream
/// ends, with backoff. An engine that cannot watch leaves the worker to the stored
/// states (a task revoked before it started is REVOKED there).
async fn revocation_loop(shared: Arc<Shared>) {
    let backend = shared.server.backend().clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        let stream = match backend.watch_revocations().await {
            Ok(stream) => stream,
            Err(e @ Error::Unsupported { .. }) => {
                tracing::debug!(error = %e, "revocations are not delivered to workers; running tasks cannot be cancelled");
                match backend.revocations().await {
                    Ok(list) => list.into_iter().for_each(|r| shared.learn(r)),
                    Err(e) => tracing::warn!(error = %e, "cannot read the recorded revocations"),
                }
                shared.revocations_read.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot watch revocations; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        match backend.revocations().await {
            Ok(list) => {
                list.into_iter().for_each(|r| shared.learn(r));
                shared.revocations_read.cancel();
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot read the recorded revocations; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        backoff = Duration::from_millis(100);
        let mut stream = stream;
        while let Some(r) = stream.next().await {
            shared.learn(r);
        }
        tracing::debug!("revocation stream ended; watching again");
        tokio::time::sleep(backoff).await;
    }
}

async fn complete_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Settled>, fatal: Arc<Fatal>) {
    let broker = shared.server.broker().clone();
    let backend = shared.server.backend().clone();
    let give_up_after = broker.visibility_timeout();
    // The channel closes once shutdown dropped every other `Shared`; this loop must not
    // keep one.
    drop(shared);
    let mut batch = Vec::with_capacity(COMPLETION_BATCH);
    let mut replies = Vec::with_capacity(COMPLETION_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first.completion);
        replies.push(first.reply);
        while batch.len() < COMPLETION_BATCH {
            match rx.try_recv() {
                Ok(c) => {
                    batch.push(c.completion);
                    replies.push(c.reply);
                }
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(50);
        let started = tokio::time::Instant::now();
        loop {
            match broker.complete(&batch, backend.as_ref()).await {
                Ok(results) => {
                    for ((c, r), reply) in batch.iter().zip(results).zip(replies.drain(..)) {
                        match (r, reply) {
                            (Err(e @ Error::Revoked { .. }), Some(reply)) => {
                                // The worker settles it as revoked.
                                let _ = reply.send(Err(e));
                            }
                            (Err(e), _) => {
                                tracing::warn!(task.id = %c.state.uuid, task.name = %c.state.name, error = %e, "completion not recorded");
                            }
                            (Ok(()), Some(reply)) => {
                                let _ = reply.send(Ok(()));
                            }
                            (Ok(()), None) => {}
                        }
                    }
                    break;
                }
                // The worker stops; the batch's deliveries come back after the
                // visibility timeout. Later batches are tried once each, so that the
                // channel keeps draining while running tasks finish.
                Err(e) if e.is_permanent() => {
                    fatal.fail("recording completions", e);
                    break;
                }
                Err(e) if started.elapsed() >= give_up_after => {
                    tracing::error!(error = %e, tasks = batch.len(), "could not record completions before the leases ran out; the broker will deliver these tasks again");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, tasks = batch.len(), "could not record completions; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
        replies.clear();
    }
}

/// The worker's registry record as it starts (the report loop fills in the rest).
fn worker_info(worker: &Worker, registry: &Registry, queues: &[String]) -> WorkerInfo {
    let tasks = registry
        .names()
        .into_iter()
        .filter_map(|name| registry.get(name))
        .map(|e| RegisteredTask {
            name: e.name.to_owned(),
            schema: e.schema.to_owned(),
            fingerprint: e.fingerprint,
        })
        .collect();
    WorkerInfo {
        id: Uuid::now_v7().to_string(),
        name: worker.name.clone(),
        host: super::host_name(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        queues: queues.to_vec(),
        concurrency: worker.concurrency,
        prefetch: worker.prefetch,
        tasks,
        started_at: now_ms(),
        heartbeat_at: 0,
        running: Vec::new(),
        processed: 0,
        failed: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::config::Config;
    use crate::engine::{Broker, Outgoing, ResultBackend};
    use crate::error::ErrorKind;
    use crate::memory::{MemoryBackend, MemoryBroker};
    use crate::testing::tasks::add;

    /// The memory broker, whose fetches or completions fail with an error of `kind`
    /// while `failing` is set.
    struct Failing {
        inner: MemoryBroker,
        kind: ErrorKind,
        fetch_fails: bool,
        failing: std::sync::atomic::AtomicBool,
        fetches: AtomicU32,
    }

    impl Failing {
        fn check(&self) -> Result<()> {
            if self.failing.load(Ordering::SeqCst) {
                Err(Error::engine_msg("failing", self.kind, "refused"))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl Broker for Failing {
        fn engine(&self) -> &'static str {
            "failing"
        }
        fn visibility_timeout(&self) -> Duration {
            self.inner.visibility_timeout()
        }
        async fn publish(&self, messages: Vec<Outgoing>) -> Result<()> {
            self.inner.publish(messages).await
        }
        async fn fetch(
            &self,
            queues: &[String],
            max: usize,
            wait: Duration,
        ) -> Result<Vec<Delivery>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if self.fetch_fails {
                self.check()?;
            }
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
        async fn dead_letter(&self, d: &Delivery, reason: &crate::DeadLetterReason) -> Result<()> {
            self.inner.dead_letter(d, reason).await
        }
        async fn complete(
            &self,
            completions: &[Completion],
            backend: &dyn ResultBackend,
        ) -> Result<Vec<Result<()>>> {
            if !self.fetch_fails {
                self.check()?;
            }
            self.inner.complete(completions, backend).await
        }
        fn admin(&self) -> Option<&dyn crate::engine::BrokerAdmin> {
            self.inner.admin()
        }
    }

    fn server(kind: ErrorKind, fetch_fails: bool) -> (Server, Arc<Failing>) {
        let config = Config::default();
        let broker = Arc::new(Failing {
            inner: MemoryBroker::new(&config),
            kind,
            fetch_fails,
            failing: std::sync::atomic::AtomicBool::new(true),
            fetches: AtomicU32::new(0),
        });
        let backend = Arc::new(MemoryBackend::new(config.results_ttl()));
        (Server::new(config, broker.clone(), backend), broker)
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_fetch_error_stops_the_worker() {
        let (server, broker) = server(ErrorKind::Auth, true);
        let worker = Worker::new()
            .task(add::ENTRY)
            .server(&server)
            .spawn()
            .expect("starts");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            worker.is_finished(),
            "the worker keeps retrying a permanent error"
        );
        assert_eq!(broker.fetches.load(Ordering::SeqCst), 1, "tried once");
        let err = worker.wait().await.expect_err("the error that stopped it");
        assert_eq!(err.kind(), ErrorKind::Auth);
        assert_eq!(err.to_string(), "failing error: refused");
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_fetch_error_is_retried_with_backoff() {
        let (server, broker) = server(ErrorKind::Connection, true);
        let worker = Worker::new()
            .task(add::ENTRY)
            .server(&server)
            .spawn()
            .expect("starts");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!worker.is_finished());
        // 50 ms doubling up to 5 s: 0, 0.05, 0.15, 0.35, 0.75, 1.55, 3.15, 6.35 s.
        let tries = broker.fetches.load(Ordering::SeqCst);
        assert!((7..=9).contains(&tries), "{tries} fetches in 10 s");
        broker.failing.store(false, Ordering::SeqCst);
        let sum = add::s(2, 3)
            .send_with(&server)
            .await
            .expect("sent")
            .get_timeout(Duration::from_secs(30))
            .await
            .expect("runs once the broker is back");
        assert_eq!(sum, 5);
        worker.shutdown().await.expect("stops cleanly");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_completion_error_stops_the_worker() {
        let (server, _broker) = server(ErrorKind::Rejected, false);
        let worker = Worker::new()
            .task(add::ENTRY)
            .server(&server)
            .spawn()
            .expect("starts");
        add::s(2, 3).send_with(&server).await.expect("sent");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            worker.is_finished(),
            "the worker keeps retrying a permanent error"
        );
        let err = worker
            .shutdown()
            .await
            .expect_err("the error that stopped it");
        assert_eq!(err.kind(), ErrorKind::Rejected);
    }
}
