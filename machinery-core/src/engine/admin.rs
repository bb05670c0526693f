//! The admin plane of a broker: listings, counts and dead-letter handling.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::inspect::{ListedTask, Page, QueueInfo, StatsBucket, TaskList, WorkerInfo};

/// How many messages a queue holds, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Ready to be delivered.
    pub ready: usize,
    /// Waiting for their ETA.
    pub delayed: usize,
    /// Delivered and not yet acknowledged; `None` when the engine cannot tell.
    pub in_flight: Option<usize>,
}

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The queue it was consumed from.
    pub queue: String,
    /// Why it was dead-lettered.
    pub reason: crate::DeadLetterReason,
    /// The payload as it was received.
    pub payload: Vec<u8>,
}

/// What operators and tools ask of a broker besides delivering messages: listings,
/// counts, actions, the worker registry and statistics.
///
/// An engine implements it beside [`Broker`](super::Broker) and hands it out through
/// [`Broker::admin`](super::Broker::admin). Listings read a moment of the queue: a
/// message may be delivered or published while they run. None of these methods takes a
/// lease, so they never hold up a worker. Workers call only the registry and statistics
/// methods ([`register_worker`](BrokerAdmin::register_worker),
/// [`record_stats`](BrokerAdmin::record_stats), …), off their hot path.
///
/// The methods after [`purge_dead_letters`](BrokerAdmin::purge_dead_letters) have
/// defaults that fail with [`Error::Unsupported`], so an engine can grow into them;
/// both built-in engines implement all of them, and the conformance suite checks them.
///
/// Every method may fail with an engine error; each is safe to call again.
#[async_trait]
pub trait BrokerAdmin: Send + Sync {
    /// The payloads ready in `queue`, in the order they will be delivered.
    async fn pending(&self, queue: &str) -> Result<Vec<Vec<u8>>>;

    /// The payloads waiting for their ETA, in `queue` or in every queue when `None`,
    /// soonest first.
    async fn delayed(&self, queue: Option<&str>) -> Result<Vec<Vec<u8>>>;

    /// How many messages `queue` holds. The default counts through
    /// [`pending`](BrokerAdmin::pending) and [`delayed`](BrokerAdmin::delayed) and cannot see
    /// deliveries in flight; engines override it with a cheap count.
    async fn depth(&self, queue: &str) -> Result<QueueDepth> {
        Ok(QueueDepth {
            ready: self.pending(queue).await?.len(),
            delayed: self.delayed(Some(queue)).await?.len(),
            in_flight: None,
        })
    }

    /// The dead-letter queue of `queue`, oldest first.
    async fn dead_letters(&self, queue: &str) -> Result<Vec<DeadLetter>>;

    /// Moves every dead letter of `queue` back into it; returns how many.
    async fn requeue_dead_letters(&self, queue: &str) -> Result<usize>;

    /// Deletes the dead letters of `queue`; returns how many.
    async fn purge_dead_letters(&self, queue: &str) -> Result<usize>;

    /// Every queue the broker knows (published to, paused, or holding dead letters),
    /// with its counts, sorted by name.
    async fn queues(&self) -> Result<Vec<QueueInfo>> {
        Err(self.unsupported("listing queues"))
    }

    /// One page of the tasks of `queue` in `list`, at most `limit` (at least 1) items,
    /// starting at `cursor` (`None`: the first page). Never reads the whole queue: the
    /// cost is that of one page (an engine may bound a page by its own maximum).
    /// [`TaskList::Failed`] walks the failures recorded through
    /// [`record_failures`](BrokerAdmin::record_failures).
    ///
    /// # Errors
    /// [`Error::InvalidCursor`] when `cursor` was not made by this listing.
    async fn tasks(
        &self,
        queue: &str,
        list: TaskList,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ListedTask>> {
        let _ = (queue, list, cursor, limit);
        Err(self.unsupported("paged task listings"))
    }

    /// Finds the message of task `uuid` in `queue` (ready, delayed, in flight or dead),
    /// for `task show`. May cost a walk of the queue; `None` when it is in none of them.
    async fn find(&self, queue: &str, uuid: Uuid) -> Result<Option<(TaskList, ListedTask)>> {
        let _ = (queue, uuid);
        Err(self.unsupported("finding a message by UUID"))
    }

    /// Deletes task `uuid` from `queue` if it is ready or delayed (not in flight: its
    /// worker holds it). Returns whether it was there. Its stored state is left as it
    /// is. May cost a walk of the queue.
    async fn delete_pending(&self, queue: &str, uuid: Uuid) -> Result<bool> {
        let _ = (queue, uuid);
        Err(self.unsupported("deleting a pending task"))
    }

    /// Deletes every ready and delayed message of `queue` (not those in flight, not the
    /// dead letters); returns how many.
    async fn purge(&self, queue: &str) -> Result<u64> {
        let _ = queue;
        Err(self.unsupported("purging a queue"))
    }

    /// Moves the dead letter of task `uuid` back into `queue`, ready at once, with its
    /// delivery count reset; returns whether it was there.
    async fn requeue_dead_letter(&self, queue: &str, uuid: Uuid) -> Result<bool> {
        let _ = (queue, uuid);
        Err(self.unsupported("requeueing one dead letter"))
    }

    /// Deletes the dead letter of task `uuid` from `queue`; returns whether it was
    /// there.
    async fn delete_dead_letter(&self, queue: &str, uuid: Uuid) -> Result<bool> {
        let _ = (queue, uuid);
        Err(self.unsupported("deleting one dead letter"))
    }

    /// Pauses `queue`: [`Broker::fetch`](super::Broker::fetch) hands out nothing from it
    /// (publishing still works) until [`resume`](BrokerAdmin::resume). The pause is
    /// kept by the broker, so it outlives the workers and the caller. Returns whether
    /// the queue was running.
    async fn pause(&self, queue: &str) -> Result<bool> {
        let _ = queue;
        Err(self.unsupported("pausing a queue"))
    }

    /// Resumes a paused `queue` and wakes its workers; returns whether it was paused.
    async fn resume(&self, queue: &str) -> Result<bool> {
        let _ = queue;
        Err(self.unsupported("resuming a queue"))
    }

    /// Writes a worker's registry record, replacing its previous one (same
    /// [`id`](WorkerInfo::id)); the record disappears after `ttl` unless written again.
    async fn register_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let _ = (info, ttl);
        Err(self.unsupported("the worker registry"))
    }

    /// Removes a worker's record (it stops); removing an unknown one is no error.
    async fn unregister_worker(&self, id: &str) -> Result<()> {
        let _ = id;
        Err(self.unsupported("the worker registry"))
    }

    /// The records of the workers alive (written within their TTL), by name then id.
    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        Err(self.unsupported("the worker registry"))
    }

    /// Adds counts to the statistics: each bucket is added to the stored bucket of the
    /// same minute, queue and task. Minutes older than `window` are dropped, and each
    /// is kept for `window` from its minute.
    async fn record_stats(&self, buckets: &[StatsBucket], window: Duration) -> Result<()> {
        let _ = (buckets, window);
        Err(self.unsupported("statistics"))
    }

    /// Records tasks that ended in FAILURE, as `(queue, uuid, failed at ms)`, for the
    /// [`TaskList::Failed`] listing; each is kept for `window`.
    async fn record_failures(
        &self,
        failures: &[(String, Uuid, u64)],
        window: Duration,
    ) -> Result<()> {
        let _ = (failures, window);
        Err(self.unsupported("statistics"))
    }

    /// The stored statistics buckets from minute `since_minute` on (see
    /// [`StatsBucket::minute`]), of `queue` or of every queue, ordered by minute, queue
    /// and task.
    async fn stats(&self, since_minute: u64, queue: Option<&str>) -> Result<Vec<StatsBucket>> {
        let _ = (since_minute, queue);
        Err(self.unsupported("statistics"))
    }

    /// The engine's name, for errors (`memory`, `redis`). Engines override it; the
    /// default names no engine.
    fn engine(&self) -> &'static str {
        "broker's"
    }

    #[doc(hidden)]
    fn unsupported(&self, what: &'static str) -> Error {
        Error::Unsupported {
            engine: self.engine(),
            what,
        }
    }
}
