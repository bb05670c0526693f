//! The scheduler: fires each entry's ticks, once per tick across every scheduler.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::ResultBackend;
use crate::error::{Error, Result};
use crate::fatal::Fatal;
use crate::server::Server;

use super::memory::MemoryPeriodicStore;
use super::schedule::{MissedTicks, Schedule};
use super::store::{self, Claim, EntrySpec, PeriodicEntry, PeriodicStore};
use super::template::{Schedulable, Template};

/// The longest the loop sleeps at once, so a wall clock that jumps is noticed.
const MAX_SLEEP_MS: u64 = 10_000;
/// Attempts to publish a claimed tick before giving it up.
const PUBLISH_ATTEMPTS: u32 = 3;

/// Publishes periodic entries: signatures, chains, groups and chords on cron schedules.
///
/// Any number of schedulers, in any number of processes, may run the same entries
/// against one store: each tick is claimed atomically in the store, and only the
/// scheduler that wins the claim publishes it, with UUIDs derived from the entry's name
/// and the tick's instant (see [`tick_uuid`](crate::periodic::tick_uuid)).
///
/// Build it with [`Scheduler::new`] and [`add`](Scheduler::add), then
/// [`run`](Scheduler::run) it until SIGINT/SIGTERM, [`spawn`](Scheduler::spawn) it, or
/// hand it to a worker with [`Worker::scheduler`](crate::Worker::scheduler). A clone
/// shares the store, so one clone can list, pause, resume and remove entries while
/// another runs.
#[derive(Clone)]
pub struct Scheduler {
    server: Server,
    store: Arc<dyn PeriodicStore>,
    entries: Vec<Arc<Entry>>,
    missed_after: Duration,
    clock: Arc<Clock>,
}

struct Entry {
    name: String,
    schedule: Schedule,
    template: Template,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("store", &self.store.engine())
            .field(
                "entries",
                &self
                    .entries
                    .iter()
                    .map(|e| (e.name.as_str(), &e.schedule))
                    .collect::<Vec<_>>(),
            )
            .field("missed_after", &self.missed_after)
            .finish_non_exhaustive()
    }
}

fn scheme(url: &str) -> &str {
    url.split_once("://").map_or(url, |(s, _)| s)
}

impl Scheduler {
    /// A scheduler publishing on `server`, keeping its shared state where `server`
    /// keeps results: in the process for the memory engine (shared by every scheduler
    /// of that server), in Redis for `redis://` (through `machinery-redis`, which must
    /// be linked: `use machinery_redis as _;`).
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] when no linked engine provides a periodic store for the
    /// result backend's URL; connection errors.
    pub async fn new(server: &Server) -> Result<Self> {
        let store: Arc<dyn PeriodicStore> = if server.backend().engine() == "memory" {
            MemoryPeriodicStore::for_server(server)
        } else {
            let config = server.config();
            let url = config.result_backend_url();
            let factory = store::factory(scheme(url)).ok_or_else(|| Error::UnsupportedUrl {
                url: crate::config::redact_url(url),
                reason: format!(
                    "no periodic store for `{}://` is linked into this binary; `redis://` needs \
                     the machinery-redis crate (reference it: `use machinery_redis as _;`), \
                     other engines can pass one to `Scheduler::with_store`",
                    scheme(url)
                ),
            })?;
            (factory.connect)(config.clone()).await?
        };
        Ok(Scheduler::with_store(server, store))
    }

    /// A scheduler publishing on `server` and sharing state through `store`.
    pub fn with_store(server: &Server, store: Arc<dyn PeriodicStore>) -> Self {
        Scheduler {
            server: server.clone(),
            store,
            entries: Vec::new(),
            missed_after: Duration::from_secs(60),
            clock: Clock::for_server(server),
        }
    }

    /// Registers an entry: `flow` (a signature, chain, group or chord) is published at
    /// every tick of `schedule` under the unique `name`.
    ///
    /// The flow's messages are recorded now and replayed at each tick with fresh,
    /// deterministic UUIDs, a `periodic.entry` header (the name) and a `periodic.at`
    /// header (the tick's instant, RFC 3339 UTC). A delay set on a signature counts
    /// from the tick.
    ///
    /// The entry is written to the store when the scheduler starts. Entry names are
    /// shared by every scheduler of a store: schedulers registering one name must
    /// register the same schedule and flow.
    ///
    /// # Errors
    /// [`Error::Periodic`] for an empty name or one added twice;
    /// [`Error::Encode`]/[`Error::MessageTooLarge`] when the flow cannot be encoded.
    pub fn add<F: Schedulable>(
        mut self,
        name: impl Into<String>,
        schedule: Schedule,
        flow: F,
    ) -> Result<Self> {
        let name = name.into();
        let bad = |reason: &str| Error::Periodic {
            what: format!("entry `{name}`"),
            reason: reason.to_owned(),
        };
        if name.trim().is_empty() {
            return Err(bad("an entry needs a non-empty name"));
        }
        if self.entries.iter().any(|e| e.name == name) {
            return Err(bad("the name is added twice to this scheduler"));
        }
        let template = Template::record(&self.server, flow)?;
        self.entries.push(Arc::new(Entry {
            name,
            schedule,
            template,
        }));
        Ok(self)
    }

    /// How late a tick may be fired: a tick this scheduler could not fire within
    /// `after` of its instant (the process was stalled) counts as missed and follows the
    /// entry's [`MissedTicks`] policy. Default 60 s.
    pub fn missed_after(mut self, after: Duration) -> Self {
        self.missed_after = after;
        self
    }

    /// The server ticks are published on.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The shared store.
    pub fn store(&self) -> &Arc<dyn PeriodicStore> {
        &self.store
    }

    /// The names of the entries added to this scheduler, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// Every entry in the store (registered by any scheduler), sorted by name.
    ///
    /// # Errors
    /// Store errors.
    pub async fn entries(&self) -> Result<Vec<PeriodicEntry>> {
        self.store.list().await
    }

    /// One entry of the store.
    ///
    /// # Errors
    /// Store errors.
    pub async fn entry(&self, name: &str) -> Result<Option<PeriodicEntry>> {
        self.store.get(name).await
    }

    /// Pauses an entry for every scheduler; `false` when there is no such entry.
    ///
    /// # Errors
    /// Store errors.
    pub async fn pause(&self, name: &str) -> Result<bool> {
        let done = self.store.pause(name).await?;
        if done {
            tracing::info!(periodic.entry = %name, "periodic entry paused");
        }
        Ok(done)
    }

    /// Resumes an entry for every scheduler from its next tick; ticks that fell in
    /// the pause are never caught up. `false` when there is no such entry.
    ///
    /// # Errors
    /// Store errors.
    pub async fn resume(&self, name: &str) -> Result<bool> {
        let done = self.store.resume(name, self.clock.now_ms()).await?;
        if done {
            tracing::info!(periodic.entry = %name, "periodic entry resumed");
        }
        Ok(done)
    }

    /// Removes an entry for every scheduler: running schedulers forget it at its next
    /// tick. A scheduler that starts later with the entry in its code registers it
    /// again, so remove it from the code too. `false` when there was no such entry.
    ///
    /// # Errors
    /// Store errors.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let done = self.store.remove(name).await?;
        if done {
            tracing::info!(periodic.entry = %name, "periodic entry removed");
        }
        Ok(done)
    }

    /// Runs until SIGINT or SIGTERM, then stops (a tick being published is finished).
    ///
    /// A store or broker error that retrying cannot fix ([`Error::is_permanent`]: a
    /// refused password, a script error, …) stops the scheduler too, with one error log
    /// line; a transient one skips the tick (publishing is retried a few times with a
    /// growing pause).
    ///
    /// # Errors
    /// [`Error::Periodic`] when the signal handlers cannot be installed or the loop
    /// ended abnormally; the permanent error that stopped the scheduler.
    pub async fn run(self) -> Result<()> {
        let handle = self.spawn();
        let watched = tokio::select! {
            w = wait_for_signal() => {
                tracing::info!("shutdown requested; stopping the scheduler");
                w
            }
            () = handle.stop.cancelled() => Ok(()),
        };
        let stopped = handle.shutdown().await;
        stopped.and(watched)
    }

    /// Starts the scheduler on the current tokio runtime and returns a handle to stop
    /// it. Signals are not watched.
    pub fn spawn(self) -> SchedulerHandle {
        let stop = CancellationToken::new();
        let fatal = Arc::new(Fatal::new("periodic scheduler", stop.clone()));
        let join = tokio::spawn(run_loop(self.clone(), stop.clone(), fatal.clone()));
        SchedulerHandle {
            stop,
            join,
            fatal,
            scheduler: self,
        }
    }
}

/// A scheduler started with [`Scheduler::spawn`].
#[derive(Debug)]
pub struct SchedulerHandle {
    stop: CancellationToken,
    join: JoinHandle<()>,
    fatal: Arc<Fatal>,
    scheduler: Scheduler,
}

impl SchedulerHandle {
    /// The scheduler, to list, pause, resume or remove entries.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Stops the scheduler once the tick it may be publishing is done.
    ///
    /// # Errors
    /// The permanent error that stopped the scheduler by itself, if one did (see
    /// [`Scheduler::run`]); [`Error::Periodic`] when the loop ended abnormally
    /// (panicked).
    pub async fn shutdown(self) -> Result<()> {
        self.stop.cancel();
        self.join_result().await
    }

    /// Whether the scheduler has stopped by itself (after a permanent error) or been
    /// shut down.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Waits until the scheduler stops by itself, which it does only on a permanent
    /// error (see [`Scheduler::run`]).
    ///
    /// # Errors
    /// As [`shutdown`](SchedulerHandle::shutdown).
    pub async fn wait(self) -> Result<()> {
        self.join_result().await
    }

    async fn join_result(self) -> Result<()> {
        self.join.await.map_err(|e| Error::Periodic {
            what: "scheduler".into(),
            reason: format!("its loop ended abnormally: {e}"),
        })?;
        self.fatal.take().map_or(Ok(()), Err)
    }
}

/// The scheduler's clock: wall-clock time in milliseconds since the Unix epoch, moved
/// ahead by however far tokio's clock ran ahead of real time since the clock was made.
/// In production the two run together and this is the wall clock; under a paused tokio
/// clock (tests) ticks come as tokio's time advances.
#[derive(Debug)]
pub(crate) struct Clock {
    real: std::time::Instant,
    tokio: tokio::time::Instant,
}

impl Clock {
    /// The clock shared by every scheduler of `server`, so that schedulers started at
    /// different times under a paused tokio clock agree on the time.
    fn for_server(server: &Server) -> Arc<Clock> {
        type Slot = (Weak<dyn ResultBackend>, Arc<Clock>);
        static CLOCKS: Mutex<Vec<Slot>> = Mutex::new(Vec::new());
        let mut clocks = CLOCKS.lock().unwrap_or_else(|p| p.into_inner());
        clocks.retain(|(backend, _)| backend.strong_count() > 0);
        let backend = server.backend();
        if let Some((_, clock)) = clocks
            .iter()
            .find(|(b, _)| b.upgrade().is_some_and(|b| Arc::ptr_eq(&b, backend)))
        {
            return clock.clone();
        }
        let clock = Arc::new(Clock {
            real: std::time::Instant::now(),
            tokio: tokio::time::Instant::now(),
        });
        clocks.push((Arc::downgrade(backend), clock.clone()));
        clock
    }

    pub(crate) fn now_ms(&self) -> u64 {
        let wall = i128::from(crate::signature::now_ms());
        let ahead =
            self.tokio.elapsed().as_millis() as i128 - self.real.elapsed().as_millis() as i128;
        u64::try_from((wall + ahead).max(0)).unwrap_or(u64::MAX)
    }
}

/// One entry as the loop tracks it.
struct Slot {
    entry: Arc<Entry>,
    next: Option<u64>,
    registered: bool,
    removed: bool,
}

impl Slot {
    fn name(&self) -> &str {
        &self.entry.name
    }

    /// Writes the entry to the store; `false` (logged) when the store is unavailable.
    async fn register(&mut self, sched: &Scheduler, fatal: &Fatal, now: u64) -> bool {
        if self.registered {
            return true;
        }
        let e = &self.entry;
        let spec = EntrySpec::new(
            e.name.clone(),
            e.schedule.spec(),
            e.schedule.timezone_name(),
            self.next,
        );
        match sched.store.upsert(&spec, now).await {
            Ok(created) => {
                tracing::debug!(periodic.entry = %e.name, created, "periodic entry registered");
                self.registered = true;
            }
            Err(error) if error.is_permanent() => fatal.fail("registering an entry", error),
            Err(error) => {
                tracing::warn!(periodic.entry = %e.name, %error, "cannot register the periodic entry; trying again at its next tick");
            }
        }
        self.registered
    }

    /// The loop woke at `now`, at or after this entry's next tick.
    async fn on_due(&mut self, sched: &Scheduler, fatal: &Fatal, now: u64) {
        let entry = self.entry.clone();
        let schedule = &entry.schedule;
        let next = self.next.unwrap_or(now);
        let due = schedule.last_at_or_before_ms(now).unwrap_or(next).max(next);
        let late = Duration::from_millis(now.saturating_sub(due));
        let policy = schedule.missed_ticks_policy();
        if late <= sched.missed_after {
            self.fire(sched, fatal, due, now).await;
        } else if policy == MissedTicks::CatchUpLast {
            tracing::info!(periodic.entry = %self.name(), periodic.at = due, ?late, "catching up the last missed tick");
            self.fire(sched, fatal, due, now).await;
        } else {
            tracing::warn!(periodic.entry = %self.name(), periodic.at = due, ?late, "tick missed (the scheduler was stalled); skipped");
        }
        self.next = schedule.next_after_ms(now.max(due));
    }

    /// Claims the tick at `at` and publishes it when the claim is won.
    async fn fire(&mut self, sched: &Scheduler, fatal: &Fatal, at: u64, now: u64) {
        if !self.register(sched, fatal, now).await {
            return;
        }
        let name = self.entry.name.as_str();
        match sched.store.claim_tick(name, at).await {
            Ok(Claim::Won) => {}
            Ok(Claim::Taken) => {
                tracing::trace!(periodic.entry = %name, periodic.at = at, "tick claimed elsewhere");
                return;
            }
            Ok(Claim::Paused) => {
                tracing::debug!(periodic.entry = %name, periodic.at = at, "entry paused; tick skipped");
                return;
            }
            Ok(Claim::Missing) => {
                tracing::info!(periodic.entry = %name, "periodic entry was removed; this scheduler forgets it");
                self.removed = true;
                return;
            }
            Err(error) if error.is_permanent() => {
                fatal.fail("claiming a tick", error);
                return;
            }
            Err(error) => {
                tracing::warn!(periodic.entry = %name, periodic.at = at, %error, "periodic store unavailable; tick skipped");
                return;
            }
        }
        let Some(task) = self.publish(sched, fatal, at).await else {
            return;
        };
        let next = self.entry.schedule.next_after_ms(at.max(now));
        match sched.store.record_run(name, at, task, next).await {
            Ok(()) => {}
            Err(error) if error.is_permanent() => fatal.fail("recording a run", error),
            Err(error) => {
                tracing::warn!(periodic.entry = %name, periodic.at = at, %error, "tick published but its run not recorded")
            }
        }
    }

    async fn publish(&self, sched: &Scheduler, fatal: &Fatal, at: u64) -> Option<Uuid> {
        let name = self.entry.name.as_str();
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=PUBLISH_ATTEMPTS {
            match self.entry.template.publish(&sched.server, name, at).await {
                Ok(task) => {
                    tracing::debug!(periodic.entry = %name, periodic.at = at, task.id = %task, "periodic tick published");
                    return Some(task);
                }
                // This tick's own message cannot be sent: it is lost, the others are not.
                Err(error @ (Error::Encode { .. } | Error::MessageTooLarge { .. })) => {
                    tracing::error!(periodic.entry = %name, periodic.at = at, %error, "cannot publish the tick; it is lost");
                    return None;
                }
                Err(error) if error.is_permanent() => {
                    fatal.fail("publishing a tick", error);
                    return None;
                }
                Err(error) if attempt < PUBLISH_ATTEMPTS => {
                    tracing::warn!(periodic.entry = %name, periodic.at = at, %error, retry_in = ?backoff, "cannot publish the tick; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(error) => {
                    tracing::error!(periodic.entry = %name, periodic.at = at, %error, "cannot publish the tick; it is lost");
                }
            }
        }
        None
    }
}

async fn run_loop(sched: Scheduler, stop: CancellationToken, fatal: Arc<Fatal>) {
    let fatal = fatal.as_ref();
    let now = sched.clock.now_ms();
    let mut slots: Vec<Slot> = sched
        .entries
        .iter()
        .map(|entry| Slot {
            next: entry.schedule.next_after_ms(now),
            entry: entry.clone(),
            registered: false,
            removed: false,
        })
        .collect();
    tracing::info!(
        store = sched.store.engine(),
        entries = ?slots.iter().map(Slot::name).collect::<Vec<_>>(),
        "periodic scheduler starting"
    );
    join_all(slots.iter_mut().map(|s| s.register(&sched, fatal, now))).await;
    // Catch up the last tick missed while no scheduler ran; the claim refuses it when
    // another scheduler published it, or when it is older than the entry.
    let shared = &sched;
    join_all(
        slots
            .iter_mut()
            .filter(|s| s.entry.schedule.missed_ticks_policy() == MissedTicks::CatchUpLast)
            .filter_map(|s| {
                let last = s.entry.schedule.last_at_or_before_ms(now)?;
                Some(async move { s.fire(shared, fatal, last, now).await })
            }),
    )
    .await;
    for s in &slots {
        if s.next.is_none() && !s.removed {
            tracing::warn!(periodic.entry = %s.name(), "the schedule has no tick ahead; the entry never fires");
        }
    }
    loop {
        let wake = slots
            .iter()
            .filter(|s| !s.removed)
            .filter_map(|s| s.next)
            .min();
        let Some(wake) = wake else {
            stop.cancelled().await;
            break;
        };
        let now = sched.clock.now_ms();
        if wake > now {
            let nap = Duration::from_millis((wake - now).min(MAX_SLEEP_MS));
            tokio::select! {
                () = tokio::time::sleep(nap) => continue,
                () = stop.cancelled() => break,
            }
        }
        if stop.is_cancelled() {
            break;
        }
        join_all(
            slots
                .iter_mut()
                .filter(|s| !s.removed && s.next.is_some_and(|n| n <= now))
                .map(|s| s.on_due(&sched, fatal, now)),
        )
        .await;
    }
    tracing::info!("periodic scheduler stopped");
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return Err(Error::Periodic {
            what: "scheduler".into(),
            reason: "cannot install the SIGINT/SIGTERM handlers".into(),
        });
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<()> {
    tokio::signal::ctrl_c().await.map_err(|e| Error::Periodic {
        what: "scheduler".into(),
        reason: format!("cannot watch Ctrl-C: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::error::ErrorKind;
    use crate::periodic::template::{HEADER_AT, tick_uuid};
    use crate::signature::RawSignature;
    use crate::testing::tasks::{add, sum};
    use crate::workflow::group;

    const QUEUE: &str = "machinery_tasks";

    fn every_second() -> Schedule {
        Schedule::every(Duration::from_secs(1))
    }

    async fn scheduler(server: &Server) -> Scheduler {
        Scheduler::new(server)
            .await
            .expect("memory store")
            .add("tick", every_second(), add::s(1, 2))
            .expect("valid entry")
    }

    /// Sleeps until the scheduler clock is half-way between two seconds, so that
    /// windows of whole seconds from there hold a known number of ticks.
    async fn align(s: &Scheduler) {
        let now = s.clock.now_ms();
        tokio::time::sleep(Duration::from_millis(1500 - now % 1000)).await;
    }

    async fn published(server: &Server) -> Vec<RawSignature> {
        server.pending_tasks(QUEUE).await.expect("pending")
    }

    /// The scheduled instants of the published messages, checking each message's UUID
    /// is the one its tick derives.
    fn instants(messages: &[RawSignature]) -> Vec<u64> {
        let mut out: Vec<u64> = messages
            .iter()
            .map(|m| {
                let at: jiff::Timestamp = m.headers[HEADER_AT].parse().expect("RFC 3339");
                let at = u64::try_from(at.as_millisecond()).expect("after 1970");
                assert_eq!(m.uuid, tick_uuid("tick", at, 0));
                at
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn assert_consecutive(ticks: &[u64]) {
        for w in ticks.windows(2) {
            assert_eq!(w[1] - w[0], 1000, "{ticks:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_schedulers_publish_each_tick_once() {
        let server = Server::memory();
        let a = scheduler(&server).await;
        let b = scheduler(&server).await;
        let c = scheduler(&server).await;
        align(&a).await;
        let handles = [a.clone().spawn(), b.spawn(), c.spawn()];
        tokio::time::sleep(Duration::from_secs(10)).await;
        for h in handles {
            h.shutdown().await.expect("stops");
        }
        let ticks = instants(&published(&server).await);
        assert_eq!(ticks.len(), 10, "{ticks:?}");
        assert_eq!(ticks.iter().collect::<BTreeSet<_>>().len(), 10);
        assert_consecutive(&ticks);
        let entry = a.entry("tick").await.expect("store").expect("registered");
        assert_eq!(
            entry.last_run,
            Some(super::super::schedule::from_ms(ticks[9]))
        );
        assert_eq!(entry.last_task, Some(tick_uuid("tick", ticks[9], 0)));
        assert_eq!(
            entry.next_run,
            Some(super::super::schedule::from_ms(ticks[9] + 1000))
        );
        assert_eq!(entry.spec, "@every 1s");
        assert!(!entry.paused);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_resume_and_remove_act_on_every_scheduler() {
        let server = Server::memory();
        let a = scheduler(&server).await;
        let b = scheduler(&server).await;
        align(&a).await;
        let ha = a.clone().spawn();
        let hb = b.clone().spawn();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(published(&server).await.len(), 3);

        // Paused through one scheduler: neither fires.
        assert!(b.pause("tick").await.expect("store"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(published(&server).await.len(), 3);
        assert!(
            a.entry("tick")
                .await
                .expect("store")
                .expect("exists")
                .paused
        );

        // Resumed: they fire again from the next tick, nothing of the pause is caught up.
        assert!(a.resume("tick").await.expect("store"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ticks = instants(&published(&server).await);
        assert_eq!(ticks.len(), 5, "{ticks:?}");
        assert_consecutive(&ticks[..3]);
        assert_eq!(ticks[3] - ticks[2], 4000, "{ticks:?}");

        // Removed: both forget it, and nobody brings it back.
        assert!(a.remove("tick").await.expect("store"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(published(&server).await.len(), 5);
        assert!(b.entries().await.expect("store").is_empty());
        assert!(!a.pause("tick").await.expect("store"));
        ha.shutdown().await.expect("stops");
        hb.shutdown().await.expect("stops");
    }

    #[tokio::test(start_paused = true)]
    async fn missed_ticks_are_skipped_by_default() {
        let server = Server::memory();
        let first = scheduler(&server).await;
        align(&first).await;
        let h = first.spawn();
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.shutdown().await.expect("stops");
        // Every scheduler down for 10 s.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let second = scheduler(&server).await.spawn();
        tokio::time::sleep(Duration::from_secs(2)).await;
        second.shutdown().await.expect("stops");
        let ticks = instants(&published(&server).await);
        assert_eq!(ticks.len(), 4, "{ticks:?}");
        assert_eq!(ticks[2] - ticks[1], 11_000, "{ticks:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_last_publishes_the_last_missed_tick_once() {
        let server = Server::memory();
        let make = || async {
            Scheduler::new(&server)
                .await
                .expect("memory store")
                .add(
                    "tick",
                    every_second().missed_ticks(MissedTicks::CatchUpLast),
                    add::s(1, 2),
                )
                .expect("valid entry")
        };
        let first = make().await;
        align(&first).await;
        // A fresh entry has nothing to catch up.
        let h = first.spawn();
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.shutdown().await.expect("stops");
        assert_eq!(published(&server).await.len(), 2);
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Two schedulers come back: the last missed tick is published once, at once.
        let (b, c) = (make().await.spawn(), make().await.spawn());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ticks = instants(&published(&server).await);
        assert_eq!(ticks.len(), 3, "{ticks:?}");
        assert_eq!(ticks[2] - ticks[1], 10_000, "{ticks:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.shutdown().await.expect("stops");
        c.shutdown().await.expect("stops");
        let ticks = instants(&published(&server).await);
        assert_eq!(ticks.len(), 5, "{ticks:?}");
        assert_consecutive(&ticks[2..]);
    }

    /// A memory store that can be taken down, or refuse the scheduler for good.
    struct Flaky {
        inner: MemoryPeriodicStore,
        down: AtomicBool,
        refused: AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<()> {
            if self.refused.load(Ordering::SeqCst) {
                Err(Error::engine_msg(
                    "flaky",
                    ErrorKind::Auth,
                    "wrong password",
                ))
            } else if self.down.load(Ordering::SeqCst) {
                Err(Error::engine_msg(
                    "flaky",
                    ErrorKind::Connection,
                    "connection refused",
                ))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl PeriodicStore for Flaky {
        fn engine(&self) -> &'static str {
            "flaky"
        }
        async fn upsert(&self, entry: &EntrySpec, now_ms: u64) -> Result<bool> {
            self.check()?;
            self.inner.upsert(entry, now_ms).await
        }
        async fn list(&self) -> Result<Vec<PeriodicEntry>> {
            self.check()?;
            self.inner.list().await
        }
        async fn get(&self, name: &str) -> Result<Option<PeriodicEntry>> {
            self.check()?;
            self.inner.get(name).await
        }
        async fn pause(&self, name: &str) -> Result<bool> {
            self.check()?;
            self.inner.pause(name).await
        }
        async fn resume(&self, name: &str, now_ms: u64) -> Result<bool> {
            self.check()?;
            self.inner.resume(name, now_ms).await
        }
        async fn remove(&self, name: &str) -> Result<bool> {
            self.check()?;
            self.inner.remove(name).await
        }
        async fn claim_tick(&self, name: &str, at: u64) -> Result<Claim> {
            self.check()?;
            self.inner.claim_tick(name, at).await
        }
        async fn record_run(
            &self,
            name: &str,
            at: u64,
            task: Uuid,
            next: Option<u64>,
        ) -> Result<()> {
            self.check()?;
            self.inner.record_run(name, at, task, next).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_refusing_for_good_stops_the_scheduler() {
        let server = Server::memory();
        let store = Arc::new(Flaky {
            inner: MemoryPeriodicStore::new(),
            down: AtomicBool::new(false),
            refused: AtomicBool::new(false),
        });
        let s = Scheduler::with_store(&server, store.clone())
            .add("tick", every_second(), add::s(1, 2))
            .expect("valid entry");
        align(&s).await;
        let h = s.spawn();
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert!(!published(&server).await.is_empty());
        assert!(!h.is_finished());
        store.refused.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(
            h.is_finished(),
            "the scheduler keeps trying a refused store"
        );
        let before = published(&server).await.len();
        let err = h.wait().await.expect_err("the error that stopped it");
        assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            published(&server).await.len(),
            before,
            "nothing after it stopped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_outage_skips_ticks_and_never_bursts() {
        let server = Server::memory();
        let store = Arc::new(Flaky {
            inner: MemoryPeriodicStore::new(),
            down: AtomicBool::new(true),
            refused: AtomicBool::new(false),
        });
        let s = Scheduler::with_store(&server, store.clone())
            .add("tick", every_second(), add::s(1, 2))
            .expect("valid entry");
        align(&s).await;
        // Down from the start: the entry cannot even be registered.
        let h = s.spawn();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(published(&server).await.is_empty());
        store.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
        store.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        store.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.shutdown().await.expect("stops");
        let ticks = instants(&published(&server).await);
        // Registered at the first tick after the store came back, so that tick is not
        // claimable (the entry is newer): 2 ticks, 5 skipped, then 2 again.
        assert_eq!(ticks.len(), 4, "{ticks:?}");
        assert_consecutive(&ticks[..2]);
        assert_eq!(ticks[2] - ticks[1], 6000, "{ticks:?}");
        assert_consecutive(&ticks[2..]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_periodic_chord_has_deterministic_members() {
        let server = Server::memory();
        let s = Scheduler::new(&server)
            .await
            .expect("memory store")
            .add(
                "chord",
                every_second(),
                group(vec![add::s(1, 1), add::s(2, 2)]).chord(sum::partial()),
            )
            .expect("valid entry");
        align(&s).await;
        let h = s.clone().spawn();
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.shutdown().await.expect("stops");
        let members = published(&server).await;
        assert_eq!(members.len(), 4);
        let entry = s.entry("chord").await.expect("store").expect("exists");
        let last = entry.last_run.map(crate::signature::to_ms).expect("ran");
        // The chord's group and members of the last tick have tick UUIDs.
        let group_uuid = members
            .iter()
            .rev()
            .find_map(|m| m.group_uuid)
            .expect("members have a group");
        let known: Vec<Uuid> = (0..8).map(|i| tick_uuid("chord", last, i)).collect();
        assert!(known.contains(&group_uuid));
        assert!(known.contains(&entry.last_task.expect("ran")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_scheduler_follows_the_policy() {
        for (policy, want) in [(MissedTicks::Skip, 0), (MissedTicks::CatchUpLast, 1)] {
            let server = Server::memory();
            let s = Scheduler::new(&server)
                .await
                .expect("memory store")
                .missed_after(Duration::from_secs(1))
                .add(
                    "tick",
                    Schedule::every(Duration::from_secs(10)).missed_ticks(policy),
                    add::s(1, 2),
                )
                .expect("valid entry");
            let now = s.clock.now_ms();
            let mut slot = Slot {
                next: s.entries[0].schedule.next_after_ms(now),
                entry: s.entries[0].clone(),
                registered: false,
                removed: false,
            };
            let fatal = Fatal::new("periodic scheduler", CancellationToken::new());
            assert!(slot.register(&s, &fatal, now).await);
            // Woken 25 s after the tick it waited for: that tick and the next are missed.
            let due = slot.next.expect("has ticks");
            slot.on_due(&s, &fatal, due + 25_000).await;
            let ticks = instants(&published(&server).await);
            assert_eq!(ticks.len(), want, "{policy:?}: {ticks:?}");
            if want == 1 {
                assert_eq!(ticks[0], due + 20_000, "the most recent missed tick");
            }
            assert_eq!(slot.next, Some(due + 30_000), "{policy:?}");
            // Woken within `missed_after`: fired whatever the policy.
            slot.on_due(&s, &fatal, due + 30_500).await;
            assert_eq!(published(&server).await.len(), want + 1, "{policy:?}");
        }
    }

    #[tokio::test]
    async fn entry_names_are_checked() {
        let server = Server::memory();
        let s = Scheduler::new(&server).await.expect("memory store");
        let e = s
            .clone()
            .add(" ", every_second(), add::s(1, 2))
            .expect_err("empty name");
        assert!(e.to_string().contains("non-empty"), "{e}");
        let e = s
            .add("x", every_second(), add::s(1, 2))
            .expect("first")
            .add("x", every_second(), add::s(1, 2))
            .expect_err("twice");
        assert!(e.to_string().contains("entry `x`"), "{e}");
    }

    #[tokio::test]
    async fn other_engines_need_a_linked_store() {
        let config = crate::config::Config {
            result_backend: Some("redis://127.0.0.1:1/0".into()),
            ..crate::config::Config::default()
        };
        let backend: Arc<dyn ResultBackend> = Arc::new(FakeBackend);
        let server = Server::new(
            config.clone(),
            Arc::new(crate::memory::MemoryBroker::new(&config)),
            backend,
        );
        let e = Scheduler::new(&server)
            .await
            .expect_err("no redis store linked");
        assert!(matches!(e, Error::UnsupportedUrl { .. }), "{e}");
        assert!(e.to_string().contains("machinery-redis"), "{e}");
    }

    /// A backend that is not the memory engine.
    struct FakeBackend;

    #[async_trait]
    impl ResultBackend for FakeBackend {
        fn engine(&self) -> &'static str {
            "fake"
        }
        async fn store(&self, _: &[crate::result::TaskState]) -> Result<()> {
            Ok(())
        }
        async fn store_new(&self, _: &[crate::result::TaskState]) -> Result<()> {
            Ok(())
        }
        async fn load(&self, _: &str, _: Uuid) -> Result<Option<crate::result::TaskState>> {
            Ok(None)
        }
        async fn wait(
            &self,
            _: &str,
            u: Uuid,
            _: Option<Duration>,
        ) -> Result<crate::result::TaskState> {
            Err(Error::ResultMissing(u))
        }
        async fn init_chord(&self, _: Uuid, _: u32, _: &crate::engine::Outgoing) -> Result<()> {
            Ok(())
        }
        async fn chord_member_done(
            &self,
            _: &crate::engine::GroupMember,
            _: &crate::result::TaskState,
        ) -> Result<Option<crate::engine::Outgoing>> {
            Ok(None)
        }
        async fn chord_outcome(&self, _: &str, _: Uuid) -> Result<crate::engine::ChordOutcome> {
            Ok(crate::engine::ChordOutcome::default())
        }
        async fn chord_finished(&self, _: &str, _: Uuid) -> Result<()> {
            Ok(())
        }
        async fn forget(&self, _: &str, _: Uuid) -> Result<()> {
            Ok(())
        }
    }
}
