//! The admin plane of a broker: listings, counts and dead-letter handling.

use async_trait::async_trait;

use crate::error::Result;

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
/// counts and dead-letter handling. Workers never call it.
///
/// An engine implements it beside [`Broker`](super::Broker) and hands it out through
/// [`Broker::admin`](super::Broker::admin). Listings read a moment of the queue: a
/// message may be delivered or published while they run. None of these methods takes a
/// lease, so they never hold up a worker.
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
}
