//! The broker's data plane: publish, fetch, and settle deliveries.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::admin::BrokerAdmin;
use super::backend::ResultBackend;
use super::complete::complete_step_by_step;
use super::rate::Reservation;
use crate::error::Result;
use crate::rate::RateLimit;
use crate::reason::DeadLetterReason;
use crate::result::TaskState;
use crate::signature::UniqueLock;

/// A message on its way into the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The task's UUID (for logs and listings; the payload is opaque to the broker).
    pub uuid: Uuid,
    /// The queue.
    pub queue: String,
    /// Earliest delivery, in milliseconds since the Unix epoch.
    pub eta: Option<u64>,
    /// 0–9, higher first; values above 9 count as 9.
    pub priority: u8,
    /// The encoded [`RawSignature`](crate::RawSignature).
    pub payload: Vec<u8>,
}

/// A message handed to a worker. It stays invisible to other workers until it is
/// acknowledged, released, or its visibility deadline passes without a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The encoded message, exactly as published (or as pushed by anyone else).
    pub payload: Vec<u8>,
    /// The queue it came from.
    pub queue: String,
    /// How many times the message was delivered, this time included.
    pub delivery_count: u32,
    /// The engine's lease on this delivery, unique within its queue: acks, heartbeats
    /// and releases that present a receipt the engine no longer holds are refused with
    /// [`Error::LeaseLost`](crate::Error::LeaseLost).
    pub receipt: String,
}

/// How a finished delivery is settled by [`Broker::complete`].
#[derive(Debug, Clone)]
pub struct Completion {
    /// The delivery to acknowledge.
    pub delivery: Delivery,
    /// The state to store (SUCCESS, FAILURE or RETRY; a RETRY never replaces a final
    /// state, see [`ResultBackend::store`]).
    pub state: TaskState,
    /// States of other tasks decided by this one, stored in the same step (the later
    /// steps of a chain that this failure stopped).
    pub also_store: Vec<TaskState>,
    /// Messages to publish in the same step (callbacks, the retry of the task).
    pub publish: Vec<Outgoing>,
    /// The chord this task is a member of, when it is one and finished for good.
    pub group: Option<GroupMember>,
    /// When set, the delivery is moved to the dead-letter queue with this reason instead
    /// of being acknowledged, in the same step as the state writes (the state is then a
    /// FAILURE naming the reason): whoever sees the FAILURE finds the dead letter.
    pub dead_letter: Option<DeadLetterReason>,
    /// This task is the callback of this chord (kept under the state's queue). Once the
    /// callback's state is final, the chord's bookkeeping is kept for the results TTL
    /// from now, and no longer until then. Ignored while the state is not final (a
    /// RETRY keeps the chord without TTL).
    pub ends_chord: Option<Uuid>,
    /// The unique lock (its [key](crate::UniqueLock::key), in the delivery's queue) to
    /// release with this completion, if it still holds the state's task UUID
    /// (compare-and-delete), in the same step as the state write: set by the worker
    /// only with a final state of a task that holds a lock without
    /// [`until_ttl`](crate::UniqueLock::until_ttl). See [`Broker::release_unique`].
    pub release_unique: Option<String>,
}

/// What a send did with one message ([`Broker::publish_unique`],
/// [`Server::send_batch`](crate::Server::send_batch)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enqueued {
    /// The message was enqueued as task `uuid`.
    Sent {
        /// The task sent.
        uuid: Uuid,
    },
    /// Nothing was enqueued: task `uuid` holds the message's unique key, or a task with
    /// the message's own UUID is pending, delayed or running.
    Duplicate {
        /// The task that holds the key (the message's own UUID for a UUID duplicate).
        uuid: Uuid,
    },
}

impl Enqueued {
    /// The task sent, or the one that made this send a duplicate.
    pub fn uuid(&self) -> Uuid {
        match *self {
            Enqueued::Sent { uuid } | Enqueued::Duplicate { uuid } => uuid,
        }
    }

    /// Whether nothing was enqueued.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Enqueued::Duplicate { .. })
    }
}

/// A task's place in a group whose completion triggers a callback (a chord).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The group.
    pub group_uuid: Uuid,
    /// The queue of the chord's callback: the chord is kept there (see
    /// [`ResultBackend::init_chord`]).
    pub queue: String,
    /// The member's position, from 0.
    pub index: u32,
    /// How many members the group has.
    pub count: u32,
}

/// Where messages wait for workers: the data plane (publish, fetch, ack, extend,
/// release, dead-letter) and two optional fast paths that default to those primitives.
///
/// **Delivery is at least once.** A message handed out by [`fetch`](Broker::fetch) is
/// leased to that call's worker until its visibility deadline
/// ([`visibility_timeout`](Broker::visibility_timeout) ahead, pushed on by
/// [`extend`](Broker::extend)); when the deadline passes before the delivery is
/// settled, the message is delivered again, to any worker. A worker that dies loses
/// nothing; tasks must tolerate running twice.
///
/// **A lease fences.** Each delivery carries a [receipt](Delivery::receipt) that names
/// its lease. Once the lease has passed to another delivery, every call that presents
/// the old receipt ([`ack`](Broker::ack), [`release`](Broker::release),
/// [`dead_letter`](Broker::dead_letter), [`complete`](Broker::complete)) fails with
/// [`Error::LeaseLost`](crate::Error::LeaseLost) and changes nothing, so a worker that
/// resumes after a pause can never settle a message that belongs to someone else.
///
/// **Order.** Among ready messages of one queue, higher priority goes first, then oldest
/// first; a message that comes back keeps its place. Across queues nothing is ordered.
///
/// **Errors and retries.** Every method may fail with an engine error (connection lost,
/// timeout, …); the error's [`kind`](crate::Error) says whether calling again can help.
/// Calling again is always safe: a publish repeated after an error may publish twice
/// (at least once), and settling calls are idempotent per receipt (the second finds the
/// lease gone and reports [`LeaseLost`](crate::Error::LeaseLost)).
///
/// **Cancellation.** The worker drops a pending [`fetch`](Broker::fetch) when it stops;
/// other calls run to completion. A dropped call must leave no message lost: what it
/// had taken is handed back or stays leased until its deadline.
///
/// Listings and dead-letter handling live in [`BrokerAdmin`], reached through
/// [`admin`](Broker::admin).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// The engine's name, for logs (`memory`, `redis`).
    fn engine(&self) -> &'static str;

    /// How long a delivery stays leased without a heartbeat
    /// ([`extend`](Broker::extend)). Workers heartbeat well within it.
    fn visibility_timeout(&self) -> Duration;

    /// Publishes messages in one batch. A message whose ETA is in the future waits in
    /// the broker until then, never delivered before it; the others are ready at once.
    /// Returns once the broker holds every message (a crash after `Ok` loses none).
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`](crate::Error::MessageTooLarge) for an oversized payload
    /// (nothing of the batch is published); engine errors (some of the batch may then be
    /// published: calling again publishes those twice, which at-least-once allows).
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<()>;

    /// Takes up to `max` ready messages from `queues`, waiting up to `wait` for the first
    /// one, and leases each to the caller for one visibility timeout. Returns an empty
    /// batch when nothing arrived in time (or `queues` is empty).
    ///
    /// A message delivered before (whose earlier delivery ended unsettled: its worker
    /// died or lost the lease, or released it) comes in a batch of its own: the batch
    /// ends before it, or holds only it. The worker runs such a message alone, so a
    /// message that kills its worker is charged its own deliveries, never its
    /// neighbours'.
    ///
    /// Cancellation-safe: the worker drops a pending fetch when it stops, and the
    /// engine must not lose what the dropped call had already taken (hand it back, or
    /// let its lease expire).
    async fn fetch(&self, queues: &[String], max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Acknowledges a delivery: the message is gone for good.
    ///
    /// # Errors
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the lease expired and the
    /// message may belong to another worker (or was already acknowledged); nothing was
    /// changed.
    async fn ack(&self, delivery: &Delivery) -> Result<()>;

    /// Pushes the visibility deadline of each delivery one timeout ahead (the
    /// heartbeat). Returns, for each delivery in order, whether its lease is still held;
    /// a lease once lost is never regained. Idempotent.
    async fn extend(&self, deliveries: &[Delivery]) -> Result<Vec<bool>>;

    /// Hands a delivery back undone: it becomes ready again after `delay` (at once when
    /// `None`), in its old place. Its delivery count is kept.
    ///
    /// # Errors
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the lease is no longer held.
    async fn release(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<()>;

    /// Hands back a delivery that did not run because its rate limit had no start slot
    /// near ([`reserve_rate`](Broker::reserve_rate) said Later): it becomes ready again
    /// after `delay`, in its old place, and this delivery is not counted (its next
    /// delivery has the same [`delivery_count`](Delivery::delivery_count)), so a task
    /// waiting for its slot many times is neither run alone as a suspect nor
    /// dead-lettered for its deliveries.
    ///
    /// The default is [`release`](Broker::release), which counts the delivery.
    ///
    /// # Errors
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the lease is no longer held.
    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.release(delivery, Some(delay)).await
    }

    /// Moves a delivery to the dead-letter queue of its queue with a reason (listed by
    /// [`BrokerAdmin::dead_letters`]).
    ///
    /// # Errors
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the lease is no longer held.
    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()>;

    /// Publishes messages after storing their PENDING states (a send). The default
    /// stores them with [`ResultBackend::store_new`], then publishes. An engine whose
    /// result backend shares its store ([`ResultBackend::store_id`]) may do both in one
    /// round trip; either way a state is stored before its message can be fetched, so a
    /// fast worker's STARTED is never overwritten by PENDING.
    async fn publish_with_states(
        &self,
        messages: Vec<Outgoing>,
        states: &[TaskState],
        backend: &dyn ResultBackend,
    ) -> Result<()> {
        backend.store_new(states).await?;
        self.publish(messages).await
    }

    /// Sends one unique message, atomically against every other unique send to its
    /// queue ([`Outgoing::queue`]):
    ///
    /// 1. when `lock` has a key and the queue's lock under that key is held (by a task
    ///    that took it less than its TTL ago and has not released it), nothing is
    ///    written and the result is [`Enqueued::Duplicate`] with the holder's UUID;
    /// 2. when a state is stored for the message's own UUID and is not final (PENDING,
    ///    RECEIVED, STARTED, RETRY: the task is waiting, delayed or running), nothing is
    ///    written and the result is [`Enqueued::Duplicate`] with that UUID;
    /// 3. otherwise the lock (when it has a key) is taken for the message's UUID for
    ///    [`ttl_ms`](UniqueLock::ttl_ms), the state is stored as
    ///    [`ResultBackend::store_new`] does, and the message is published: the result is
    ///    [`Enqueued::Sent`].
    ///
    /// The lock is freed by [`release_unique`](Broker::release_unique) (through
    /// [`Completion::release_unique`]) or when its TTL ends, whichever comes first.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`](crate::Error::MessageTooLarge); engine errors (then
    /// the send may or may not have happened; sending again is safe: it finds the lock
    /// or the state); the default fails with
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    async fn publish_unique(
        &self,
        message: Outgoing,
        state: &TaskState,
        lock: &UniqueLock,
        backend: &dyn ResultBackend,
    ) -> Result<Enqueued> {
        let _ = (message, state, lock, backend);
        Err(crate::Error::Unsupported {
            engine: self.engine(),
            what: "unique tasks",
        })
    }

    /// Releases the unique lock `key` of `queue` if task `uuid` holds it
    /// (compare-and-delete); a lock held by another task, or none, is left alone. Called
    /// for [`Completion::release_unique`] by the step-by-step completion; an engine's
    /// atomic [`complete`](Broker::complete) does it in the same step. The default does
    /// nothing (an engine without [`publish_unique`](Broker::publish_unique) holds no
    /// locks).
    async fn release_unique(&self, queue: &str, key: &str, uuid: Uuid) -> Result<()> {
        let _ = (queue, key, uuid);
        Ok(())
    }

    /// Settles finished deliveries: for each, checks the lease, stores the states,
    /// records the chord member, starts the TTL of the chord it ends
    /// ([`Completion::ends_chord`]), publishes the follow-up messages and acknowledges
    /// the delivery or, with [`Completion::dead_letter`], moves it to the dead-letter
    /// queue, in that order, so a crash in between only repeats work. Returns one result
    /// per completion: a lost lease is that completion's
    /// [`LeaseLost`](crate::Error::LeaseLost); a completion of a task whose stored state
    /// is REVOKED, when its own state is not, is refused with
    /// [`Revoked`](crate::Error::Revoked) (nothing of it written, published or
    /// acknowledged; the lease is kept, and the worker settles the task as revoked); any
    /// other error fails the call, and the caller retries the whole batch.
    ///
    /// The default is [`complete_step_by_step`](super::complete_step_by_step). An engine
    /// whose result backend shares its store ([`ResultBackend::store_id`]) does each
    /// completion atomically instead, and refuses one whose lease was lost without
    /// writing anything (fencing); with a dead letter, whoever sees the state finds the
    /// dead letter.
    async fn complete(
        &self,
        completions: &[Completion],
        backend: &dyn ResultBackend,
    ) -> Result<Vec<Result<()>>> {
        complete_step_by_step(self, completions, backend).await
    }

    /// Reserves a start slot under the rate limit `limit` named `key` (a task's
    /// `task:<name>`, a queue's `queue:<queue>`), shared by every worker of this broker
    /// (GCRA with reservation, see [`gcra`](super::gcra)): when the next free slot is
    /// at most `horizon` away it is taken and the answer is
    /// [`Reservation::Granted`] with the wait until it; otherwise nothing is taken and
    /// the answer is [`Reservation::Later`]. Starts granted under one key are at least
    /// `limit`'s interval apart, on the engine's clock (Redis: the server's).
    ///
    /// The worker calls it only for tasks that have a limit. The default fails with
    /// [`Error::Unsupported`](crate::Error::Unsupported), and the worker then runs
    /// limited tasks without a limit (logging it once).
    ///
    /// # Errors
    /// Engine errors; calling again is safe (a call that failed after reserving only
    /// spends a slot).
    async fn reserve_rate(
        &self,
        key: &str,
        limit: RateLimit,
        horizon: Duration,
    ) -> Result<Reservation> {
        let _ = (key, limit, horizon);
        Err(crate::Error::Unsupported {
            engine: self.engine(),
            what: "rate limits",
        })
    }

    /// The broker's admin plane (listings, counts, dead letters), or `None` when the
    /// engine offers none; [`Server`](crate::Server)'s listing methods then fail with
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    fn admin(&self) -> Option<&dyn BrokerAdmin> {
        None
    }
}
