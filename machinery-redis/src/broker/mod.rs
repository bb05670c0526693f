//! The Redis broker: the [`Broker`] implementation delegates to one file per concern:
//! `publish.rs` (sending), `fetch.rs` (taking messages, blocking reads), `complete.rs`
//! (settling: ack, release, dead-letter, extend, batch completion), `admin.rs`
//! (listings and dead-letter administration) and `reply.rs` (reading script replies).

mod admin;
mod complete;
mod fetch;
mod publish;
mod reply;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use machinery_core::engine::{
    Broker, BrokerAdmin, Completion, DeadLetter, Delivery, Outgoing, QueueDepth, ResultBackend,
};
use machinery_core::{Result as CoreResult, TaskState};

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
}
