//! The broker: where messages wait for workers.

use std::any::Any;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::backend::ResultBackend;
use crate::error::Result;
use crate::result::TaskState;

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
    pub dead_letter: Option<crate::DeadLetterReason>,
    /// This task is the callback of this chord (kept under the state's queue). Once the
    /// callback's state is final, the chord's bookkeeping is kept for the results TTL
    /// from now, and no longer until then. Ignored while the state is not final (a
    /// RETRY keeps the chord without TTL).
    pub ends_chord: Option<Uuid>,
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

/// Where messages wait for workers.
///
/// Delivery is **at least once**: a message handed out by [`fetch`](Broker::fetch) is
/// delivered again (to any worker) when its visibility deadline passes before it is
/// acknowledged, so a worker that dies loses nothing. Tasks must tolerate running twice.
/// Among ready messages of one queue, higher priority goes first, then oldest first;
/// across queues nothing is ordered.
///
/// Every method may fail with an engine error (connection lost, …): such a call may be
/// retried, since nothing the broker does twice loses or duplicates more than
/// at-least-once allows.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// The engine's name, for logs (`memory`, `redis`).
    fn engine(&self) -> &'static str;

    /// How long a delivery stays invisible without a heartbeat.
    fn visibility_timeout(&self) -> Duration;

    /// Publishes messages in one batch. A message whose ETA is in the future waits in
    /// the broker until then; the others are ready at once.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`](crate::Error::MessageTooLarge) for an oversized payload
    /// (nothing of the batch is published); engine errors.
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<()>;

    /// Takes up to `max` ready messages from `queues`, waiting up to `wait` for the first
    /// one. Returns an empty batch when nothing arrived in time.
    ///
    /// A message delivered before (whose earlier delivery ended unsettled: its worker
    /// died or lost the lease, or released it) comes in a batch of its own: the batch
    /// ends before it, or holds only it. The worker runs such a message alone, so a
    /// message that kills its worker is charged its own deliveries, never its
    /// neighbours'.
    ///
    /// The worker cancels a pending fetch when it stops: an engine must not lose what a
    /// cancelled call had already taken (hand it back, or let its lease expire).
    async fn fetch(&self, queues: &[String], max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Acknowledges a delivery: the message is gone for good.
    ///
    /// # Errors
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when the lease expired and the
    /// message may belong to another worker; nothing was changed.
    async fn ack(&self, delivery: &Delivery) -> Result<()>;

    /// Pushes the visibility deadline of each delivery one timeout ahead (heartbeat).
    /// Returns, for each delivery, whether its lease is still held.
    async fn extend(&self, deliveries: &[Delivery]) -> Result<Vec<bool>>;

    /// Hands a delivery back undone: it becomes ready again after `delay` (at once when
    /// `None`). Its delivery count is kept.
    async fn release(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<()>;

    /// Moves a delivery to the dead-letter queue with a reason.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()>;

    /// The payloads ready in `queue`, in the order they will be delivered.
    async fn pending(&self, queue: &str) -> Result<Vec<Vec<u8>>>;

    /// The payloads waiting for their ETA, in `queue` or in every queue when `None`,
    /// soonest first.
    async fn delayed(&self, queue: Option<&str>) -> Result<Vec<Vec<u8>>>;

    /// How many messages `queue` holds. The default counts through
    /// [`pending`](Broker::pending) and [`delayed`](Broker::delayed) and cannot see
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

    /// Publishes messages after storing their PENDING states. An engine that is also the
    /// result backend may do both in one round trip, and writes the states as they are
    /// (these are new tasks: a UUID sent again starts over at PENDING, even after a
    /// final state); the default goes through [`ResultBackend::store`], where a final
    /// state stays, then publishes.
    async fn publish_with_states(
        &self,
        messages: Vec<Outgoing>,
        states: &[TaskState],
        backend: &dyn ResultBackend,
    ) -> Result<()> {
        backend.store(states).await?;
        self.publish(messages).await
    }

    /// Settles finished deliveries: for each, checks the lease, stores the states,
    /// records the chord member, starts the TTL of the chord it ends
    /// ([`Completion::ends_chord`]), publishes the follow-up messages and acknowledges
    /// the delivery or, with [`Completion::dead_letter`], moves it to the dead-letter
    /// queue, in that order, so a crash in between only repeats work. An engine that is
    /// also the result backend does each completion atomically, and refuses one whose
    /// lease was lost without writing anything (fencing); with a dead letter, whoever
    /// sees the state finds the dead letter. Returns one result per completion.
    async fn complete(
        &self,
        completions: &[Completion],
        backend: &dyn ResultBackend,
    ) -> Result<Vec<Result<()>>> {
        complete_step_by_step(self, completions, backend).await
    }

    /// The engine object, for engines that recognise a result backend of their own.
    fn as_any(&self) -> &dyn Any;
}

/// [`Broker::complete`] from the broker's and backend's primitives, one completion after
/// the other: lease check (a heartbeat), state writes, chord step (the member, then
/// [`ResultBackend::chord_finished`] for [`Completion::ends_chord`] when the state is
/// final), publishes, then ack, or [`Broker::dead_letter`] for
/// [`Completion::dead_letter`] (so there is a moment when the FAILURE is stored and the
/// dead letter not yet listed; a crash there leaves the message to be delivered again). A lost
/// lease is that completion's own result; any other error fails the batch, which the
/// caller retries (completions already settled then report a lost lease: their ack
/// ended the lease).
///
/// # Errors
/// Engine errors.
pub async fn complete_step_by_step<B: Broker + ?Sized>(
    broker: &B,
    completions: &[Completion],
    backend: &dyn ResultBackend,
) -> Result<Vec<Result<()>>> {
    settle_each(completions, |c| complete_one(broker, c, backend)).await
}

/// Settles completions one after the other with `settle`: a lost lease is that
/// completion's own result; any other error fails the batch (the caller retries it).
pub(crate) async fn settle_each<'a, F, Fut>(
    completions: &'a [Completion],
    mut settle: F,
) -> Result<Vec<Result<()>>>
where
    F: FnMut(&'a Completion) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut out = Vec::with_capacity(completions.len());
    for c in completions {
        match settle(c).await {
            Err(e @ crate::Error::LeaseLost { .. }) => out.push(Err(e)),
            Err(e) => return Err(e),
            Ok(()) => out.push(Ok(())),
        }
    }
    Ok(out)
}

pub(crate) async fn complete_one<B: Broker + ?Sized>(
    broker: &B,
    c: &Completion,
    backend: &dyn ResultBackend,
) -> Result<()> {
    let held = broker.extend(std::slice::from_ref(&c.delivery)).await?;
    if !held.first().copied().unwrap_or(false) {
        return Err(crate::Error::LeaseLost {
            receipt: c.delivery.receipt.clone(),
        });
    }
    record(broker, c, backend).await?;
    match &c.dead_letter {
        Some(reason) => broker.dead_letter(&c.delivery, &reason.to_string()).await,
        None => broker.ack(&c.delivery).await,
    }
}

/// What a completion writes besides settling its delivery, in order: its states, its
/// chord step, the end of the chord it is the callback of, its follow-up messages.
pub(crate) async fn record<B: Broker + ?Sized>(
    broker: &B,
    c: &Completion,
    backend: &dyn ResultBackend,
) -> Result<()> {
    let mut states = Vec::with_capacity(1 + c.also_store.len());
    states.push(c.state.clone());
    states.extend(c.also_store.iter().cloned());
    backend.store(&states).await?;
    let mut publish = c.publish.clone();
    if let Some(member) = &c.group
        && let Some(callback) = backend.chord_member_done(member, &c.state).await?
    {
        publish.push(callback);
    }
    if let Some(group) = c.ends_chord
        && c.state.state.is_terminal()
    {
        backend.chord_finished(&c.state.queue, group).await?;
    }
    if !publish.is_empty() {
        broker.publish(publish).await?;
    }
    Ok(())
}
