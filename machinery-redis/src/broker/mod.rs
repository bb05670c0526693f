//! The Redis broker: the [`Broker`] implementation delegates to one file per concern:
//! `publish.rs` (sending), `fetch.rs` (taking messages, blocking reads), `complete.rs`
//! (settling: ack, release, dead-letter, extend, batch completion), `admin.rs`
//! (listings and dead-letter administration), `inspect.rs` (queue counts, paged
//! listings with `cursor.rs`, finding a task), `actions.rs` (deleting, purging,
//! pausing), `registry.rs` (the worker registry), `stats.rs` (statistics and recent
//! failures) and `reply.rs` (reading script replies).

mod actions;
mod admin;
mod complete;
mod cursor;
mod fetch;
mod inspect;
mod publish;
mod rate;
mod registry;
mod reply;
mod stats;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use machinery_core::engine::{
    Broker, BrokerAdmin, Completion, DeadLetter, Delivery, Enqueued, Outgoing, QueueDepth,
    ResultBackend,
};
use machinery_core::inspect::{ListedTask, Page, QueueInfo, StatsBucket, TaskList, WorkerInfo};
use machinery_core::{Result as CoreResult, TaskState, UniqueLock};
use uuid::Uuid;

use crate::scripts::DeadAction;

use crate::conn::{BlockingPool, Engine};

/// The Redis broker. See the [crate docs](crate) for the design.
///
/// Cheap to share: one auto-reconnecting connection for every non-blocking command, and
/// one connection per concurrent blocking read (kept for reuse).
#[derive(Debug)]
pub struct RedisBroker {
    pub(crate) engine: Arc<Engine>,
    blocking: Arc<BlockingPool>,
    visibility: Duration,
    /// Which consumed queue a fetch looks at first, so one busy queue cannot starve the
    /// others of a worker consuming several.
    rotation: AtomicUsize,
    /// Queues whose last fetch (by a worker consuming that queue alone) took every ready
    /// message, with when their next delayed message or lease deadline comes due: the
    /// next such fetch blocks for a wake-up token at once instead of first running a
    /// script that would find nothing (anything queued since pushed a token, so the read
    /// returns at once, and the script pipelined behind it runs then).
    drained: Mutex<HashMap<String, Option<tokio::time::Instant>>>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Pushes one wake-up token to each list (kept at most 16 long: a token only says "look").
fn wake_pipe(keys: &[String]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    add_wakes(&mut pipe, keys);
    pipe
}

fn add_wakes(pipe: &mut redis::Pipeline, keys: &[String]) {
    for k in keys {
        pipe.cmd("LPUSH").arg(k).arg(1).ignore();
        pipe.cmd("LTRIM").arg(k).arg(0).arg(15).ignore();
    }
}

/// The positions of `items` grouped by queue (`queue_of`), queues in order of first
/// appearance: one script call per queue, since each queue is its own cluster slot.
fn group_by_queue<'a, T: 'a>(
    items: impl IntoIterator<Item = (usize, &'a T)>,
    queue_of: impl Fn(&'a T) -> &'a str,
) -> Vec<(&'a str, Vec<usize>)> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, item) in items {
        let queue = queue_of(item);
        match groups.iter_mut().find(|(q, _)| *q == queue) {
            Some((_, list)) => list.push(i),
            None => groups.push((queue, vec![i])),
        }
    }
    groups
}

impl RedisBroker {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let visibility = engine.config.visibility_timeout;
        RedisBroker {
            engine,
            blocking: Arc::default(),
            visibility,
            rotation: AtomicUsize::new(0),
            drained: Mutex::new(HashMap::new()),
        }
    }

    fn conn(&self) -> redis::aio::ConnectionManager {
        self.engine.conn.clone()
    }

    /// Whether `backend` keeps its states in this broker's store (same server, prefix
    /// and results TTL: equal [`StoreId`](machinery_core::engine::StoreId)s): then
    /// completions and sends write states in the broker's own script calls and
    /// pipelines.
    fn colocated(&self, backend: &dyn ResultBackend) -> bool {
        backend.store_id() == Some(&self.engine.store_id)
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn reserve_rate(
        &self,
        key: &str,
        limit: machinery_core::RateLimit,
        horizon: Duration,
    ) -> CoreResult<machinery_core::engine::Reservation> {
        self.reserve(key, limit, horizon).await
    }

    fn engine(&self) -> &'static str {
        "redis"
    }

    fn visibility_timeout(&self) -> Duration {
        self.visibility
    }

    async fn publish(&self, messages: Vec<Outgoing>) -> CoreResult<()> {
        self.publish_messages(messages).await
    }

    async fn fetch(
        &self,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> CoreResult<Vec<Delivery>> {
        self.fetch_messages(queues, max, wait).await
    }

    async fn ack(&self, delivery: &Delivery) -> CoreResult<()> {
        self.ack_delivery(delivery).await
    }

    async fn extend(&self, deliveries: &[Delivery]) -> CoreResult<Vec<bool>> {
        self.extend_leases(deliveries).await
    }

    async fn release(&self, delivery: &Delivery, delay: Option<Duration>) -> CoreResult<()> {
        self.release_delivery(delivery, delay).await
    }

    async fn defer(&self, delivery: &Delivery, delay: Duration) -> CoreResult<()> {
        self.defer_delivery(delivery, delay).await
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &machinery_core::DeadLetterReason,
    ) -> CoreResult<()> {
        self.dead_letter_delivery(delivery, reason).await
    }

    async fn publish_with_states(
        &self,
        messages: Vec<Outgoing>,
        states: &[TaskState],
        backend: &dyn ResultBackend,
    ) -> CoreResult<()> {
        self.publish_messages_with_states(messages, states, backend)
            .await
    }

    async fn complete(
        &self,
        completions: &[Completion],
        backend: &dyn ResultBackend,
    ) -> CoreResult<Vec<CoreResult<()>>> {
        self.complete_batch(completions, backend).await
    }

    /// One script call (`publish_unique.lua`) in one round trip when the result
    /// backend is this broker's Redis: the lock (`SET … PX`), the check of the task's own
    /// state, the PENDING state and the message in one atomic step. With a result
    /// backend elsewhere the lock is still atomic (`SET NX PX`), but the UUID check
    /// (`with_uuid`) is a separate read of the backend: two senders of one UUID racing
    /// may both enqueue.
    async fn publish_unique(
        &self,
        message: Outgoing,
        state: &TaskState,
        lock: &UniqueLock,
        backend: &dyn ResultBackend,
    ) -> CoreResult<Enqueued> {
        self.publish_unique_message(message, state, lock, backend)
            .await
    }

    async fn release_unique(&self, queue: &str, key: &str, uuid: Uuid) -> CoreResult<()> {
        self.release_unique_lock(queue, key, uuid).await
    }

    fn admin(&self) -> Option<&dyn BrokerAdmin> {
        Some(self)
    }
}

#[async_trait]
impl BrokerAdmin for RedisBroker {
    async fn pending(&self, queue: &str) -> CoreResult<Vec<Vec<u8>>> {
        self.pending_payloads(queue).await
    }

    async fn delayed(&self, queue: Option<&str>) -> CoreResult<Vec<Vec<u8>>> {
        self.delayed_payloads(queue).await
    }

    async fn depth(&self, queue: &str) -> CoreResult<QueueDepth> {
        self.queue_depth(queue).await
    }

    async fn dead_letters(&self, queue: &str) -> CoreResult<Vec<DeadLetter>> {
        self.list_dead_letters(queue).await
    }

    async fn requeue_dead_letters(&self, queue: &str) -> CoreResult<usize> {
        self.requeue_dead(queue).await
    }

    async fn purge_dead_letters(&self, queue: &str) -> CoreResult<usize> {
        self.purge_dead(queue).await
    }

    /// Every queue in the set of queues published to (pausing a queue adds it), sorted.
    /// Counts are read in one pipeline per 500 queues, on the server's clock: a delayed
    /// message whose ETA has passed counts as ready, as in
    /// [`depth`](BrokerAdmin::depth).
    async fn queues(&self) -> CoreResult<Vec<QueueInfo>> {
        self.list_queues().await
    }

    /// One script call per page (`page.lua`), whose cost is O(log n + page), wherever
    /// the page starts; at most 1,000 items per page.
    ///
    /// - Pending, Delayed, InFlight: keyset pages over the queue's sorted sets, the
    ///   cursor being the last member listed and its score, so consuming or deleting
    ///   members before it skips nothing. Pending lists the ready set only (a delayed
    ///   message whose ETA passed is under Delayed until a fetch promotes it).
    /// - Dead: the cursor is an index into the list with the hash of the last entry
    ///   listed; when entries before it were removed meanwhile, the page starts after
    ///   that entry, found again within the 1,000 entries before its old place. When the
    ///   entry itself was removed, the page starts 1,000 entries earlier and may repeat
    ///   some (a dead letter is never skipped unless more than 1,000 before it went).
    /// - Failed: newest first; failures whose state is gone are left out (and dropped)
    ///   — checked with the state keys when the result backend is this broker's server,
    ///   else by age against the results TTL. A page may then hold fewer items than
    ///   asked while a cursor follows.
    ///
    /// [`ListedTask::uuid`] is filled from the payload's first field (no decoding of the
    /// rest); `None` for a payload that is not a message.
    async fn tasks(
        &self,
        queue: &str,
        list: TaskList,
        cursor: Option<&str>,
        limit: usize,
    ) -> CoreResult<Page<ListedTask>> {
        self.list_tasks(queue, list, cursor, limit).await
    }

    /// Walks the queue's payload hash (HSCAN, 5,000 fields per script call, each payload
    /// compared at its first field, not decoded), then its dead letters (5,000 per
    /// call): O(queue) in the worst case, a few milliseconds of Redis's time per call
    /// and about 0.2 s per 100,000 messages on a small machine.
    async fn find(&self, queue: &str, uuid: Uuid) -> CoreResult<Option<(TaskList, ListedTask)>> {
        self.find_task(queue, uuid).await
    }

    /// Walks the payload hash as [`find`](BrokerAdmin::find) does (O(queue) in the worst
    /// case); the first message of `uuid` that is ready or delayed is deleted with its
    /// payload and count in the same script call that finds it.
    async fn delete_pending(&self, queue: &str, uuid: Uuid) -> CoreResult<bool> {
        self.delete_pending_task(queue, uuid).await
    }

    /// Deletes in script calls of 2,000 messages (ready first, then delayed), until one
    /// finds fewer: Redis serves other clients between calls, and messages published
    /// meanwhile may be purged too.
    async fn purge(&self, queue: &str) -> CoreResult<u64> {
        self.purge_queue(queue).await
    }

    /// Walks the dead letters (5,000 per script call) for the first of task `uuid`,
    /// then moves it back in the same call: ready at once, at priority 0, with a new
    /// message id, so its delivery count starts again (as
    /// [`requeue_dead_letters`](BrokerAdmin::requeue_dead_letters)).
    async fn requeue_dead_letter(&self, queue: &str, uuid: Uuid) -> CoreResult<bool> {
        self.one_dead_letter(queue, uuid, DeadAction::Requeue).await
    }

    /// Walks the dead letters (5,000 per script call) for the first of task `uuid`, and
    /// deletes it in the same call.
    async fn delete_dead_letter(&self, queue: &str, uuid: Uuid) -> CoreResult<bool> {
        self.one_dead_letter(queue, uuid, DeadAction::Delete).await
    }

    /// Sets the queue's pause flag, which the fetch script checks: workers of a paused
    /// queue block on its wake-up list as on an empty queue. Messages in flight run to
    /// their end; delayed messages and expired leases are promoted after the resume.
    async fn pause(&self, queue: &str) -> CoreResult<bool> {
        self.pause_queue(queue).await
    }

    async fn resume(&self, queue: &str) -> CoreResult<bool> {
        self.resume_queue(queue).await
    }

    async fn register_worker(&self, info: &WorkerInfo, ttl: Duration) -> CoreResult<()> {
        self.register(info, ttl).await
    }

    async fn unregister_worker(&self, id: &str) -> CoreResult<()> {
        self.unregister(id).await
    }

    async fn workers(&self) -> CoreResult<Vec<WorkerInfo>> {
        self.live_workers().await
    }

    async fn record_stats(&self, buckets: &[StatsBucket], window: Duration) -> CoreResult<()> {
        self.add_stats(buckets, window).await
    }

    /// Keeps at most the newest 10,000 failures per queue.
    async fn record_failures(
        &self,
        failures: &[(String, Uuid, u64)],
        window: Duration,
    ) -> CoreResult<()> {
        self.add_failures(failures, window).await
    }

    async fn stats(&self, since_minute: u64, queue: Option<&str>) -> CoreResult<Vec<StatsBucket>> {
        self.read_stats(since_minute, queue).await
    }

    fn engine(&self) -> &'static str {
        "redis"
    }
}
