//! The result backend: where task states and results are kept.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::broker::{GroupMember, Outgoing};
use futures_util::stream::BoxStream;

use crate::error::Result;
use crate::result::{State, TaskState};

/// A recorded revocation: task `uuid` must not run, or must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked task.
    pub uuid: Uuid,
    /// Why, as the REVOKED state's error text says it (`revoked`).
    pub reason: String,
    /// Until when the revocation is kept, in milliseconds since the Unix epoch; `None`
    /// for ever (the results TTL is 0).
    pub until: Option<u64>,
}

/// What revoking a task found ([`ResultBackend::revoke`], [`Server::revoke`](crate::Server::revoke)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokeOutcome {
    /// The task had not started (PENDING, or waiting for a retry): it is REVOKED now and
    /// will not run. Workers skip its message when they fetch it, and settle the rest of
    /// its workflow then.
    Revoked,
    /// A worker runs the task (RECEIVED, STARTED): it was told, and stops the task
    /// (cooperatively, then by abort after the grace period) and records REVOKED, unless
    /// the task finished first.
    Cancelling,
    /// The task had already finished in this state; nothing changed.
    Finished(State),
    /// No state is stored for the task (unknown, expired, or sent without one): the
    /// revocation is recorded, so a message with this UUID is skipped if it comes.
    Unknown,
}

/// What a chord's members left, read once when its callback runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChordOutcome {
    /// The encoded result of each member, in member order (all present when no member
    /// failed).
    pub results: Vec<Vec<u8>>,
    /// The first member that failed: its index, task name and error text.
    pub failure: Option<(u32, String, String)>,
}

/// Where task states and results are kept.
///
/// **Lifetimes.** Nothing expires under live work: a non-final state (PENDING,
/// RECEIVED, STARTED, RETRY) has no TTL, however long the task waits in a backlog or
/// runs; a final state (SUCCESS, FAILURE) is kept for the results TTL
/// (`results_expire_in`) from its write, forever when the TTL is 0. A chord's
/// bookkeeping has no TTL until its callback's state is final
/// ([`chord_finished`](ResultBackend::chord_finished)), then the results TTL from that
/// moment.
///
/// **A final state is never replaced by a non-final one**: a late STARTED or RETRY
/// write (a worker that resumes after its lease passed to another one) is dropped, so a
/// task seen finished stays finished. Final states are written by whoever settles the
/// task's delivery, which the broker fences by its lease; a final state written after
/// another one replaces it (last final write wins).
///
/// The stored state is the source of truth; [`wait`](ResultBackend::wait) only makes
/// seeing it fast.
#[async_trait]
pub trait ResultBackend: Send + Sync + 'static {
    /// The engine's name, for logs.
    fn engine(&self) -> &'static str;

    /// Stores states. A state is known by its UUID and [queue](TaskState::queue).
    ///
    /// A final state (SUCCESS, FAILURE) replaces whatever is stored and is kept for the
    /// results TTL from now. A non-final state replaces a non-final one (or none) and is
    /// kept without TTL; it is dropped, without error, when the stored state is final.
    /// Engines decide this atomically per state (on Redis: one script per queue).
    async fn store(&self, states: &[TaskState]) -> Result<()>;

    /// Stores the PENDING states of tasks being sent, as they are: each replaces
    /// whatever is stored under its UUID, a final state included (a UUID sent again
    /// starts over), and is kept without TTL. Called before their messages are
    /// published ([`Broker::publish_with_states`](super::Broker::publish_with_states)).
    async fn store_new(&self, states: &[TaskState]) -> Result<()>;

    /// The stored state of task `uuid`, sent to `queue`; `None` when unknown or expired.
    ///
    /// An empty `queue` means the caller does not know it (a handle made from a UUID
    /// alone): the engine then looks the task up in every queue it knows, and the
    /// returned state's [`queue`](TaskState::queue) names where it was found. Engines
    /// that key states by UUID alone do nothing more; others may need a round trip more.
    async fn load(&self, queue: &str, uuid: Uuid) -> Result<Option<TaskState>>;

    /// Waits until the task is SUCCESS or FAILURE and returns that state. Never polls
    /// with sleeps: a waiter is woken when the state is written, and a task that
    /// finished before the call is seen at once.
    ///
    /// An engine may retry its own transient errors within `timeout`. An empty `queue`
    /// is looked up as in [`load`](ResultBackend::load).
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) when `timeout` passes first;
    /// [`Error::ResultMissing`](crate::Error::ResultMissing) when nothing is stored for
    /// the task (unknown UUID or expired), including when the state is deleted
    /// ([`forget`](ResultBackend::forget)) while the call waits.
    async fn wait(&self, queue: &str, uuid: Uuid, timeout: Option<Duration>) -> Result<TaskState>;

    /// Registers a chord: `count` members and the callback message, kept without TTL
    /// until [`chord_finished`](ResultBackend::chord_finished). The chord is known by its
    /// group and the callback's queue (members carry it in
    /// [`GroupMember::queue`](super::GroupMember::queue)).
    async fn init_chord(&self, group: Uuid, count: u32, callback: &Outgoing) -> Result<()>;

    /// Records the final state (SUCCESS or FAILURE) of a chord member. Returns the
    /// callback message **exactly once** over all calls for the group: when the last
    /// member succeeded, or when the first member failed. Recording the same member
    /// again (a redelivery) changes nothing. The chord keeps no TTL. A member of a chord
    /// the backend does not know (it ended and expired, and the member ran again from
    /// the dead letters; or it was never registered) changes nothing and returns `None`.
    async fn chord_member_done(
        &self,
        member: &GroupMember,
        state: &TaskState,
    ) -> Result<Option<Outgoing>>;

    /// The members' results in order, and the first failure, of the chord `group` whose
    /// callback is sent to `queue`.
    async fn chord_outcome(&self, queue: &str, group: Uuid) -> Result<ChordOutcome>;

    /// The callback of chord `group`, kept under `queue` (the callback's queue), reached
    /// its final state: the chord's bookkeeping is kept for the results TTL from now
    /// (forever when the TTL is 0), then it expires. Calling it again restarts that TTL;
    /// an unknown chord is no error. [`Completion::ends_chord`](super::Completion::ends_chord)
    /// makes the broker call it (or do the same atomically) when it settles the
    /// callback.
    async fn chord_finished(&self, queue: &str, group: Uuid) -> Result<()>;

    /// Deletes the state of task `uuid`, sent to `queue`. Callers waiting for it
    /// ([`wait`](ResultBackend::wait)) are woken and get
    /// [`Error::ResultMissing`](crate::Error::ResultMissing).
    async fn forget(&self, queue: &str, uuid: Uuid) -> Result<()>;

    /// Revokes task `uuid`, sent to `queue` (empty: looked up as in
    /// [`load`](ResultBackend::load)), in this order:
    ///
    /// 1. records the revocation, kept until `until` (ms since the Unix epoch; `None`:
    ///    forever), so workers that start later still skip the task
    ///    ([`revocations`](ResultBackend::revocations));
    /// 2. tells every watching worker at once
    ///    ([`watch_revocations`](ResultBackend::watch_revocations));
    /// 3. when the stored state is PENDING or RETRY (no worker is known to run it),
    ///    replaces it with REVOKED (error text `reason`), a final state kept for the
    ///    results TTL, and wakes its waiters.
    ///
    /// Once a state is REVOKED no SUCCESS or FAILURE replaces it: an engine's
    /// [`Broker::complete`](super::Broker::complete) refuses a completion of a REVOKED
    /// task with [`Error::Revoked`](crate::Error::Revoked) (the worker then settles it as
    /// revoked), so a task revoked while a worker runs it ends in exactly one final
    /// state. A RUNNING task (RECEIVED, STARTED) is left to its worker, which stops it
    /// and records REVOKED, or records its outcome when it finished first.
    ///
    /// The default fails with [`Error::Unsupported`](crate::Error::Unsupported).
    async fn revoke(
        &self,
        queue: &str,
        uuid: Uuid,
        reason: &str,
        until: Option<u64>,
    ) -> Result<RevokeOutcome> {
        let _ = (queue, uuid, reason, until);
        Err(crate::Error::Unsupported {
            engine: self.engine(),
            what: "revoking tasks",
        })
    }

    /// The revocations recorded and not expired, for a worker that starts (it watches
    /// for new ones with [`watch_revocations`](ResultBackend::watch_revocations) first,
    /// then reads these). The default: none.
    async fn revocations(&self) -> Result<Vec<Revocation>> {
        Ok(Vec::new())
    }

    /// A stream of revocations as they are recorded, delivered within milliseconds (on
    /// Redis by pub/sub). The stream ends when the connection behind it is lost; the
    /// watcher then calls this again and re-reads
    /// [`revocations`](ResultBackend::revocations), so nothing recorded meanwhile is
    /// missed. The default fails with [`Error::Unsupported`](crate::Error::Unsupported):
    /// workers then learn of revocations only from the stored states.
    async fn watch_revocations(&self) -> Result<BoxStream<'static, Revocation>> {
        Err(crate::Error::Unsupported {
            engine: self.engine(),
            what: "watching revocations",
        })
    }

    /// Records the progress of task `uuid`, sent to `queue` (the queue its state is kept
    /// under): `value` is the MessagePack encoding of what the task reported
    /// ([`TaskContext::set_progress`](crate::TaskContext::set_progress)), replacing the
    /// previous value. The value is kept for the results TTL from this write (forever
    /// when the TTL is 0), so it can still be read for about as long as the task's final
    /// state; and every watcher of the task
    /// ([`watch_progress`](ResultBackend::watch_progress)) is sent it at once.
    ///
    /// Workers call this at most once per `progress_interval` per running task; it is a
    /// single write, not a read-modify-write, so the last write wins.
    ///
    /// The default fails with [`Error::Unsupported`](crate::Error::Unsupported).
    async fn set_progress(&self, queue: &str, uuid: Uuid, value: &[u8]) -> Result<()> {
        let _ = (queue, uuid, value);
        Err(crate::Error::Unsupported {
            engine: self.engine(),
            what: "task progress",
        })
    }

    /// The last progress value recorded for task `uuid`, sent to `queue` (empty: looked
    /// up as in [`load`](ResultBackend::load)); `None` when the task never reported
    /// progress, is unknown, or its value expired.
    ///
    /// The default fails with [`Error::Unsupported`](crate::Error::Unsupported).
    async fn progress(&self, queue: &str, uuid: Uuid) -> Result<Option<Vec<u8>>> {
        let _ = (queue, uuid);
        Err(crate::Error::Unsupported {
            engine: self.engine(),
            what: "task progress",
        })
    }

    /// A stream of the progress values of task `uuid`, sent to `queue`, recorded after
    /// this call returns, delivered within milliseconds without polling (on Redis by
    /// pub/sub). The value stored before the call is not in it: read it with
    /// [`progress`](ResultBackend::progress) after subscribing. A reader that falls
    /// behind may see only the newest value of several (progress is a level, not a log).
    ///
    /// The stream does not know about the task's state: it never ends because the task
    /// finished. It ends when the connection behind it is lost (the caller subscribes
    /// again and re-reads the value), or when the engine drops the task's progress
    /// (expired, forgotten). `queue` must be the task's queue (not empty).
    ///
    /// The default fails with [`Error::Unsupported`](crate::Error::Unsupported).
    async fn watch_progress(&self, queue: &str, uuid: Uuid) -> Result<BoxStream<'static, Vec<u8>>> {
        let _ = (queue, uuid);
        Err(crate::Error::Unsupported {
            engine: self.engine(),
            what: "watching task progress",
        })
    }

    /// Stores the record of workflow `workflow` (a chain, group or chord: its steps and
    /// their tasks, as core encodes them; opaque to the engine), replacing any record
    /// stored under that id. Called once per workflow send, before the parts' states are
    /// stored; the record is kept for the results TTL from now (forever when the TTL is
    /// 0). One write, whatever the workflow's size.
    ///
    /// The default keeps nothing: [`load_workflow`](ResultBackend::load_workflow) then
    /// says the engine does not keep workflows.
    async fn store_workflow(&self, workflow: Uuid, record: &[u8]) -> Result<()> {
        let _ = (workflow, record);
        Ok(())
    }

    /// The record stored for workflow `workflow` by
    /// [`store_workflow`](ResultBackend::store_workflow); `None` when unknown or
    /// expired.
    ///
    /// The default fails with [`Error::Unsupported`](crate::Error::Unsupported).
    async fn load_workflow(&self, workflow: Uuid) -> Result<Option<Vec<u8>>> {
        let _ = workflow;
        Err(crate::Error::Unsupported {
            engine: self.engine(),
            what: "workflow records",
        })
    }

    /// The store this backend keeps its states in, when a broker may share it: a broker
    /// whose own [`StoreId`] is equal writes states itself, in the same atomic step as
    /// its own changes ([`Broker::complete`](super::Broker::complete),
    /// [`Broker::publish_with_states`](super::Broker::publish_with_states)). `None` (the
    /// default): no broker shares it, and brokers go through this trait's methods.
    fn store_id(&self) -> Option<&StoreId> {
        None
    }
}

/// Names one store that a broker and a result backend may share: equal ids mean the
/// two write to the same place under the same rules (same server, key prefix and
/// results TTL on Redis), so the broker can write the backend's states itself.
///
/// An engine builds the same id for its broker and its backend from what makes them
/// one store; ids of different engines never compare equal.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StoreId {
    engine: &'static str,
    location: String,
}

impl StoreId {
    /// The id of the store at `location` (any text that is equal exactly when the
    /// store is the same) of engine `engine`.
    pub fn new(engine: &'static str, location: impl Into<String>) -> Self {
        StoreId {
            engine,
            location: location.into(),
        }
    }

    /// The engine's name.
    pub fn engine(&self) -> &'static str {
        self.engine
    }
}

impl fmt::Debug for StoreId {
    // The location may hold credentials: only the engine is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreId")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}
