use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::DeadLetterReason;
use crate::config::Config;
use crate::engine::{
    Broker, BrokerAdmin, Completion, DeadLetter, Delivery, Outgoing, QueueDepth, ResultBackend,
    complete_step_by_step,
};
use crate::error::{Error, Result};
use crate::memory::backend::STORE;
use crate::result::TaskState;
use crate::signature::{now_ms, to_ms};

/// The in-memory broker. See the [module docs](crate::memory).
pub struct MemoryBroker {
    state: Mutex<Inner>,
    arrived: Notify,
    visibility: Duration,
    max_bytes: usize,
}

#[derive(Debug, Clone)]
struct Message {
    queue: String,
    priority: u8,
    payload: Vec<u8>,
    delivery_count: u32,
    seq: u64,
}

/// Ready order: higher priority, then lower sequence number.
struct Ready(Message);

impl PartialEq for Ready {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ready {}
impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .priority
            .cmp(&other.0.priority)
            .then_with(|| Reverse(self.0.seq).cmp(&Reverse(other.0.seq)))
    }
}

struct InFlight {
    message: Message,
    deadline: Instant,
}

#[derive(Default)]
struct Inner {
    ready: HashMap<String, BinaryHeap<Ready>>,
    /// (due, seq) → message; due in tokio time.
    delayed: BTreeMap<(Instant, u64), Message>,
    inflight: HashMap<u64, InFlight>,
    dead: HashMap<String, Vec<DeadLetter>>,
    seq: u64,
    rotation: usize,
    /// No lease expires before this instant, so `promote` can skip the scan of
    /// `inflight` until then (leases are only ever pushed later).
    leases_checked_until: Option<Instant>,
}

fn eta_instant(eta_ms: u64) -> Instant {
    let now_wall = now_ms();
    after(Duration::from_millis(eta_ms.saturating_sub(now_wall)))
}

/// `delay` from now; past what `Instant` can hold (`Duration::MAX`), a time nobody
/// reaches: 30 years.
fn after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600))
}

impl Inner {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push_ready(&mut self, message: Message) {
        self.ready
            .entry(message.queue.clone())
            .or_default()
            .push(Ready(message));
    }

    /// Moves due delayed messages and expired leases to the ready queues; returns the
    /// next instant something becomes due.
    fn promote(&mut self, now: Instant) -> Option<Instant> {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let message = entry.remove();
            self.push_ready(message);
        }
        let scan = self.leases_checked_until.is_none_or(|t| t <= now);
        if scan {
            let expired: Vec<u64> = self
                .inflight
                .iter()
                .filter(|(_, f)| f.deadline <= now)
                .map(|(r, _)| *r)
                .collect();
            for receipt in expired {
                if let Some(f) = self.inflight.remove(&receipt) {
                    tracing::warn!(queue = %f.message.queue, "delivery lease expired; the message is ready again");
                    self.push_ready(f.message);
                }
            }
            self.leases_checked_until = self.inflight.values().map(|f| f.deadline).min();
        }
        let next_delayed = self.delayed.keys().next().map(|k| k.0);
        let next_lease = self.leases_checked_until;
        match (next_delayed, next_lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take(&mut self, queues: &[String], max: usize, visibility: Duration) -> Vec<Delivery> {
        let mut out = Vec::new();
        if queues.is_empty() {
            return out;
        }
        let now = Instant::now();
        let start = self.rotation % queues.len();
        self.rotation = self.rotation.wrapping_add(1);
        for i in 0..queues.len() {
            let queue = &queues[(start + i) % queues.len()];
            while out.len() < max {
                let Some(heap) = self.ready.get_mut(queue) else {
                    break;
                };
                // A message delivered before comes alone (see `Broker::fetch`).
                let again = heap.peek().is_some_and(|r| r.0.delivery_count > 0);
                if again && !out.is_empty() {
                    return out;
                }
                let Some(Ready(mut message)) = heap.pop() else {
                    break;
                };
                message.delivery_count += 1;
                let receipt = self.next_seq();
                out.push(Delivery {
                    payload: message.payload.clone(),
                    queue: message.queue.clone(),
                    delivery_count: message.delivery_count,
                    receipt: receipt.to_string(),
                });
                let deadline = now + visibility;
                self.leases_checked_until.get_or_insert(deadline);
                self.inflight
                    .insert(receipt, InFlight { message, deadline });
                if again {
                    return out;
                }
            }
        }
        out
    }
}

fn receipt_of(delivery: &Delivery) -> Result<u64> {
    delivery.receipt.parse().map_err(|_| Error::LeaseLost {
        receipt: delivery.receipt.clone(),
    })
}

impl MemoryBroker {
    /// A broker with the visibility timeout and message size limit of `config`.
    pub fn new(config: &Config) -> Self {
        MemoryBroker {
            state: Mutex::new(Inner::default()),
            arrived: Notify::new(),
            visibility: config.visibility_timeout,
            max_bytes: config.max_message_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every step is one
        // collection operation), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_sizes(&self, messages: &[Outgoing]) -> Result<()> {
        match messages.iter().find(|m| m.payload.len() > self.max_bytes) {
            Some(big) => Err(Error::MessageTooLarge {
                size: big.payload.len(),
                limit: self.max_bytes,
            }),
            None => Ok(()),
        }
    }

    /// Moves a held delivery to the dead-letter queue under the lock.
    fn bury(&self, delivery: &Delivery, reason: DeadLetterReason) -> Result<()> {
        let mut inner = self.lock();
        let message = self.take_inflight(&mut inner, delivery)?;
        tracing::warn!(queue = %message.queue, %reason, "message moved to the dead-letter queue");
        inner
            .dead
            .entry(message.queue.clone())
            .or_default()
            .push(DeadLetter {
                queue: message.queue,
                reason,
                payload: message.payload,
            });
        Ok(())
    }

    /// A completion that dead-letters its delivery, with the memory backend: the dead
    /// letter is written first, under the broker's lock (which also checks the lease),
    /// then the states, so whoever sees the FAILURE finds the dead letter. Nothing can
    /// fail in between but an unknown chord (a caller's error); one process, no crash
    /// window.
    async fn complete_dead(&self, c: &Completion, backend: &dyn ResultBackend) -> Result<()> {
        let reason = c
            .dead_letter
            .clone()
            .unwrap_or_else(|| DeadLetterReason::Other(String::new()));
        self.check_sizes(&c.publish)?;
        self.bury(&c.delivery, reason)?;
        crate::engine::record(self, c, backend).await
    }

    fn take_inflight(&self, inner: &mut Inner, delivery: &Delivery) -> Result<Message> {
        let receipt = receipt_of(delivery)?;
        inner
            .inflight
            .remove(&receipt)
            .map(|f| f.message)
            .ok_or_else(|| Error::LeaseLost {
                receipt: delivery.receipt.clone(),
            })
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("visibility", &self.visibility)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn engine(&self) -> &'static str {
        "memory"
    }

    fn visibility_timeout(&self) -> Duration {
        self.visibility
    }

    async fn publish(&self, messages: Vec<Outgoing>) -> Result<()> {
        self.check_sizes(&messages)?;
        let now_wall = to_ms(SystemTime::now());
        {
            let mut inner = self.lock();
            for m in messages {
                let seq = inner.next_seq();
                let message = Message {
                    queue: m.queue,
                    priority: m.priority.min(9),
                    payload: m.payload,
                    delivery_count: 0,
                    seq,
                };
                match m.eta {
                    Some(eta) if eta > now_wall => {
                        inner.delayed.insert((eta_instant(eta), seq), message);
                    }
                    _ => inner.push_ready(message),
                }
            }
        }
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn fetch(&self, queues: &[String], max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = after(wait);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let next_due = {
                let mut inner = self.lock();
                let next_due = inner.promote(Instant::now());
                let batch = inner.take(queues, max.max(1), self.visibility);
                if !batch.is_empty() {
                    return Ok(batch);
                }
                next_due
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let wake = next_due.map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<()> {
        let mut inner = self.lock();
        self.take_inflight(&mut inner, delivery).map(drop)
    }

    async fn extend(&self, deliveries: &[Delivery]) -> Result<Vec<bool>> {
        let mut inner = self.lock();
        let deadline = Instant::now() + self.visibility;
        Ok(deliveries
            .iter()
            .map(|d| {
                receipt_of(d)
                    .ok()
                    .and_then(|r| inner.inflight.get_mut(&r))
                    .map(|f| f.deadline = deadline)
                    .is_some()
            })
            .collect())
    }

    async fn release(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<()> {
        {
            let mut inner = self.lock();
            let message = self.take_inflight(&mut inner, delivery)?;
            match delay {
                Some(d) if !d.is_zero() => {
                    let seq = inner.next_seq();
                    inner.delayed.insert((after(d), seq), message);
                }
                _ => inner.push_ready(message),
            }
        }
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.bury(delivery, reason.clone())
    }

    async fn publish_with_states(
        &self,
        messages: Vec<Outgoing>,
        states: &[TaskState],
        backend: &dyn ResultBackend,
    ) -> Result<()> {
        // Refuse an oversized message before any state is stored for it.
        self.check_sizes(&messages)?;
        backend.store_new(states).await?;
        self.publish(messages).await
    }

    async fn complete(
        &self,
        completions: &[Completion],
        backend: &dyn ResultBackend,
    ) -> Result<Vec<Result<()>>> {
        // The dead-letter-first order needs a backend that cannot fail between the two
        // writes: the in-process one. Any other goes step by step.
        if backend.store_id() != Some(&*STORE) {
            return complete_step_by_step(self, completions, backend).await;
        }
        crate::engine::settle_each(completions, |c| async move {
            if c.dead_letter.is_some() {
                self.complete_dead(c, backend).await
            } else {
                crate::engine::complete_one(self, c, backend).await
            }
        })
        .await
    }

    fn admin(&self) -> Option<&dyn BrokerAdmin> {
        Some(self)
    }
}

#[async_trait]
impl BrokerAdmin for MemoryBroker {
    async fn pending(&self, queue: &str) -> Result<Vec<Vec<u8>>> {
        let mut inner = self.lock();
        inner.promote(Instant::now());
        let mut ready: Vec<&Ready> = inner
            .ready
            .get(queue)
            .map(|h| h.iter().collect())
            .unwrap_or_default();
        ready.sort_by(|a, b| b.cmp(a));
        Ok(ready.into_iter().map(|r| r.0.payload.clone()).collect())
    }

    async fn delayed(&self, queue: Option<&str>) -> Result<Vec<Vec<u8>>> {
        let mut inner = self.lock();
        inner.promote(Instant::now());
        Ok(inner
            .delayed
            .values()
            .filter(|m| queue.is_none_or(|q| m.queue == q))
            .map(|m| m.payload.clone())
            .collect())
    }

    async fn depth(&self, queue: &str) -> Result<QueueDepth> {
        let mut inner = self.lock();
        inner.promote(Instant::now());
        Ok(QueueDepth {
            ready: inner.ready.get(queue).map_or(0, BinaryHeap::len),
            delayed: inner.delayed.values().filter(|m| m.queue == queue).count(),
            in_flight: Some(
                inner
                    .inflight
                    .values()
                    .filter(|f| f.message.queue == queue)
                    .count(),
            ),
        })
    }

    async fn dead_letters(&self, queue: &str) -> Result<Vec<DeadLetter>> {
        Ok(self.lock().dead.get(queue).cloned().unwrap_or_default())
    }

    async fn requeue_dead_letters(&self, queue: &str) -> Result<usize> {
        let n = {
            let mut inner = self.lock();
            let dead = inner.dead.remove(queue).unwrap_or_default();
            let n = dead.len();
            for d in dead {
                let seq = inner.next_seq();
                inner.push_ready(Message {
                    queue: d.queue,
                    priority: 0,
                    payload: d.payload,
                    delivery_count: 0,
                    seq,
                });
            }
            n
        };
        self.arrived.notify_waiters();
        Ok(n)
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<usize> {
        Ok(self.lock().dead.remove(queue).map_or(0, |d| d.len()))
    }
}
