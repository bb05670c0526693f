//! The shared state of periodic entries, and how schedulers find it.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use uuid::Uuid;

use crate::config::Config;
use crate::error::Result;
use crate::registry::BoxFuture;

/// What a scheduler registers for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntrySpec {
    /// The entry's unique name.
    pub name: String,
    /// The schedule's spec (`*/5 * * * * *`, `@every 10s`, …).
    pub spec: String,
    /// The schedule's time zone (`UTC`, `Europe/Paris`).
    pub timezone: String,
    /// The next tick, in milliseconds since the Unix epoch.
    pub next_run_ms: Option<u64>,
}

impl EntrySpec {
    /// An entry spec.
    pub fn new(
        name: impl Into<String>,
        spec: impl Into<String>,
        timezone: impl Into<String>,
        next_run_ms: Option<u64>,
    ) -> Self {
        EntrySpec {
            name: name.into(),
            spec: spec.into(),
            timezone: timezone.into(),
            next_run_ms,
        }
    }
}

/// A periodic entry as the store keeps it: what
/// [`Scheduler::entries`](crate::periodic::Scheduler::entries) lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeriodicEntry {
    /// The entry's unique name.
    pub name: String,
    /// The schedule's spec.
    pub spec: String,
    /// The schedule's time zone.
    pub timezone: String,
    /// Paused entries do not fire.
    pub paused: bool,
    /// The next tick, as last computed by a scheduler (it may be in the past for a
    /// paused entry or when no scheduler runs).
    pub next_run: Option<SystemTime>,
    /// The scheduled instant of the last tick published.
    pub last_run: Option<SystemTime>,
    /// The UUID of the last tick's task: the signature's own, the last step of a chain,
    /// a chord's callback, or a group's UUID. Its result is read with
    /// [`Server::result`](crate::Server::result), or
    /// [`Server::result_in`](crate::Server::result_in) when that task goes to another
    /// queue than the default one.
    pub last_task: Option<Uuid>,
}

impl PeriodicEntry {
    /// An entry with no run yet, not paused.
    pub fn new(
        name: impl Into<String>,
        spec: impl Into<String>,
        timezone: impl Into<String>,
    ) -> Self {
        PeriodicEntry {
            name: name.into(),
            spec: spec.into(),
            timezone: timezone.into(),
            paused: false,
            next_run: None,
            last_run: None,
            last_task: None,
        }
    }
}

/// The answer to [`PeriodicStore::claim_tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the tick and must publish it.
    Won,
    /// Another scheduler claimed this tick or a later one: do nothing.
    Taken,
    /// The entry is paused: do nothing.
    Paused,
    /// The entry no longer exists (it was removed): forget it.
    Missing,
}

/// The state every scheduler of one deployment shares: entries, their pause flags and
/// last runs, and the claims that make each tick fire once.
///
/// Implementations must make [`claim_tick`](PeriodicStore::claim_tick) atomic across
/// every process using the store. Every method may fail with an engine error
/// (connection lost, …); the scheduler logs it and tries again at the entry's next
/// tick, and management calls return it to the caller, who may retry: every method is
/// idempotent.
#[async_trait]
pub trait PeriodicStore: Send + Sync + 'static {
    /// The engine's name, for logs.
    fn engine(&self) -> &'static str;

    /// Creates the entry (not paused, no run, no tick at or before `now_ms` claimable)
    /// or, when it exists, updates its spec, time zone and next run while keeping its
    /// pause flag, last run and claims. Returns whether it was created.
    async fn upsert(&self, entry: &EntrySpec, now_ms: u64) -> Result<bool>;

    /// Every entry, sorted by name.
    async fn list(&self) -> Result<Vec<PeriodicEntry>>;

    /// One entry, `None` when it does not exist.
    async fn get(&self, name: &str) -> Result<Option<PeriodicEntry>>;

    /// Pauses an entry; `false` when it does not exist.
    async fn pause(&self, name: &str) -> Result<bool>;

    /// Resumes an entry; ticks at or before `now_ms` can no longer be claimed, so a
    /// catch-up never publishes a tick that fell in the pause. `false` when it does
    /// not exist.
    async fn resume(&self, name: &str, now_ms: u64) -> Result<bool>;

    /// Deletes an entry for every scheduler: their next claim answers
    /// [`Claim::Missing`]. `false` when it did not exist.
    async fn remove(&self, name: &str) -> Result<bool>;

    /// Claims the tick of `name` scheduled at `scheduled_at_ms`, atomically: over all
    /// callers, at most one gets [`Claim::Won`] for a given tick. The claim is a
    /// watermark: a tick is claimable only while it is later than every tick claimed
    /// before and than the entry's creation or last resume, so a tick never fires
    /// twice however late a caller comes, and the store keeps nothing per tick.
    /// A paused or missing entry is never claimed.
    async fn claim_tick(&self, name: &str, scheduled_at_ms: u64) -> Result<Claim>;

    /// Records that the tick at `scheduled_at_ms` was published as `task`, and the
    /// entry's next tick. Does nothing for a missing entry (it is not recreated) or
    /// when a later run is already recorded.
    async fn record_run(
        &self,
        name: &str,
        scheduled_at_ms: u64,
        task: Uuid,
        next_run_ms: Option<u64>,
    ) -> Result<()>;
}

/// Connects a periodic store from a configuration.
pub type ConnectPeriodicStore = fn(Config) -> BoxFuture<Result<Arc<dyn PeriodicStore>>>;

/// Makes periodic stores for one URL scheme. Engine crates register one with
/// `inventory::submit!` (through `machinery_core::__private::inventory`), so
/// [`Scheduler::new`](crate::periodic::Scheduler::new) finds the store of the server's
/// result backend; the crate must be linked (`use machinery_redis as _;`).
pub struct PeriodicStoreFactory {
    /// URL schemes handled, e.g. `["redis", "rediss"]`.
    pub schemes: &'static [&'static str],
    /// Connects a store to `config.result_backend_url()`.
    pub connect: ConnectPeriodicStore,
}

inventory::collect!(PeriodicStoreFactory);

/// The factory registered for `scheme`.
pub(crate) fn factory(scheme: &str) -> Option<&'static PeriodicStoreFactory> {
    inventory::iter::<PeriodicStoreFactory>
        .into_iter()
        .find(|f| f.schemes.contains(&scheme))
}
