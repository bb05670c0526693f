use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::DeadLetterReason;
use crate::config::Config;
use crate::engine::{
    Broker, BrokerAdmin, Completion, DeadLetter, Delivery, Enqueued, Outgoing, QueueDepth,
    ResultBackend, complete_step_by_step,
};
use crate::error::{Error, Result};
use crate::inspect::{ListedTask, Page, QueueInfo, StatsBucket, TaskList, WorkerInfo};
use crate::memory::backend::STORE;
use crate::memory::ready::{Message, Ready};
use crate::result::TaskState;
use crate::signature::{RawSignature, UniqueLock, eta_after, now_ms, to_ms};

/// The most items one page of [`BrokerAdmin::tasks`] holds, whatever the caller asks.
const MAX_PAGE: usize = 1000;

/// The in-memory broker. See the [module docs](crate::memory).
pub struct MemoryBroker {
    state: Mutex<Inner>,
    arrived: Notify,
    visibility: Duration,
    max_bytes: usize,
    /// The origin of the instants written into cursors (tokio time).
    epoch: Instant,
    /// Unique locks, held across a whole unique send (which awaits the backend).
    unique: tokio::sync::Mutex<UniqueLocks>,
    /// The rate limits' reservations.
    rates: super::rate::Rates,
}

/// The unique locks of every queue: (queue, key) → holder and expiry.
#[derive(Default)]
struct UniqueLocks {
    held: HashMap<(String, String), (Uuid, Instant)>,
    /// Expired locks are swept when the map reaches this size (then twice the size
    /// left), so locks nobody asks for again do not pile up.
    sweep_at: usize,
}

impl UniqueLocks {
    /// The holder of `key` in `queue`, dropping an expired lock.
    fn holder(&mut self, queue: &str, key: &str, now: Instant) -> Option<Uuid> {
        let k = (queue.to_owned(), key.to_owned());
        match self.held.get(&k) {
            Some(&(uuid, until)) if until > now => Some(uuid),
            Some(_) => {
                self.held.remove(&k);
                None
            }
            None => None,
        }
    }

    fn take(&mut self, queue: &str, key: &str, uuid: Uuid, until: Instant) {
        if self.held.len() >= self.sweep_at.max(1024) {
            let now = Instant::now();
            self.held.retain(|_, (_, t)| *t > now);
            self.sweep_at = self.held.len() * 2;
        }
        self.held
            .insert((queue.to_owned(), key.to_owned()), (uuid, until));
    }
}

/// Delayed order: due instant (tokio time), then a sequence number.
type DueKey = (Instant, u64);

struct Delayed {
    message: Message,
    queue: usize,
    /// When it becomes ready, as the publisher asked (ms since the epoch).
    eta_ms: u64,
}

struct InFlight {
    message: Message,
    queue: usize,
    deadline: Instant,
    /// Its key in the queue's leases: the sequence number of its last lease (at fetch
    /// the receipt, then one per extension).
    lease: u64,
}

struct Dead {
    uuid: Uuid,
    priority: u8,
    delivery_count: u32,
    letter: DeadLetter,
}

/// One queue: its ready messages and dead letters, and the keys of its delayed
/// messages and leases (kept in `Inner`), each in the order its listing walks.
struct Queue {
    name: String,
    ready: Ready,
    /// Keys of `Inner::delayed` for this queue.
    delayed: BTreeSet<DueKey>,
    /// Lease sequence number → receipt. Every lease ends one visibility timeout after
    /// it was taken or extended, so the order of lease sequence numbers is the order of
    /// deadlines.
    leases: BTreeMap<u64, u64>,
    /// Dead letters by a sequence number: oldest first.
    dead: BTreeMap<u64, Dead>,
    paused: bool,
}

impl Queue {
    fn new(name: String) -> Self {
        Queue {
            name,
            ready: Ready::default(),
            delayed: BTreeSet::new(),
            leases: BTreeMap::new(),
            dead: BTreeMap::new(),
            paused: false,
        }
    }
}

/// Hashes the broker's own sequence numbers (receipts) with one multiplication. They
/// are made here, never chosen by a caller, so there is no flooding to fear, and the
/// hash of consecutive numbers spreads over consecutive buckets.
#[derive(Default, Clone, Copy)]
struct SeqHasher(u64);

const FIBONACCI: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(FIBONACCI);
    }
}

/// The failures recorded for one queue.
#[derive(Default)]
struct Failures {
    /// (failed at, most recent first; uuid) → expires at (ms).
    by_time: BTreeMap<(Reverse<u64>, Uuid), u64>,
    /// uuid → failed at (ms): one entry per task.
    at: HashMap<Uuid, u64>,
}

impl Failures {
    /// Drops the failures past their window: the oldest, at the end.
    fn sweep(&mut self, now_ms: u64) {
        while let Some(entry) = self.by_time.last_entry() {
            if *entry.get() > now_ms {
                break;
            }
            let (_, uuid) = *entry.key();
            entry.remove();
            self.at.remove(&uuid);
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Every queue published to, paused or holding dead letters; never removed, so an
    /// index names a queue for good.
    queues: Vec<Queue>,
    names: HashMap<String, usize>,
    /// Every delayed message, by when it is due.
    delayed: BTreeMap<DueKey, Delayed>,
    /// Receipt → delivery.
    inflight: HashMap<u64, InFlight, BuildHasherDefault<SeqHasher>>,
    seq: u64,
    rotation: usize,
    /// No lease expires before this instant, so `promote` can skip the scan of the
    /// leases until then (leases are only ever pushed later); `None` when none is held.
    leases_checked_until: Option<Instant>,
    /// Worker id → its record and when the record expires (tokio time).
    workers: HashMap<String, (WorkerInfo, Instant)>,
    /// (minute, queue, task) → the bucket and when it expires (ms since the epoch).
    stats: BTreeMap<(u64, String, String), (StatsBucket, u64)>,
    failures: HashMap<String, Failures>,
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wall-clock time (ms since the epoch) of an instant of tokio time.
fn wall_ms(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = now_ms();
    if at >= now {
        wall.saturating_add(millis(at - now))
    } else {
        wall.saturating_sub(millis(now - at))
    }
}

/// The task UUID of a message: the one it was published with, or read from its payload.
fn uuid_of(uuid: Uuid, payload: &[u8]) -> Option<Uuid> {
    if uuid.is_nil() {
        RawSignature::decode(payload).ok().map(|raw| raw.uuid)
    } else {
        Some(uuid)
    }
}

fn is_task(uuid: Uuid, payload: &[u8], wanted: Uuid) -> bool {
    uuid == wanted || (uuid.is_nil() && uuid_of(uuid, payload) == Some(wanted))
}

impl Inner {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The index of queue `name`, made when unknown.
    fn queue_index(&mut self, name: &str) -> usize {
        if let Some(&i) = self.names.get(name) {
            return i;
        }
        let i = self.queues.len();
        self.queues.push(Queue::new(name.to_owned()));
        self.names.insert(name.to_owned(), i);
        i
    }

    fn queue(&self, name: &str) -> Option<&Queue> {
        self.names.get(name).map(|&i| &self.queues[i])
    }

    fn queue_mut(&mut self, name: &str) -> Option<&mut Queue> {
        self.names.get(name).map(|&i| &mut self.queues[i])
    }

    fn push_ready(&mut self, queue: usize, message: Message) {
        self.queues[queue].ready.push(message);
    }

    fn push_delayed(&mut self, key: DueKey, queue: usize, message: Message, eta_ms: u64) {
        self.queues[queue].delayed.insert(key);
        self.delayed.insert(
            key,
            Delayed {
                message,
                queue,
                eta_ms,
            },
        );
    }

    /// Moves due delayed messages and expired leases to the ready queues; returns the
    /// next instant something becomes due.
    fn promote(&mut self, now: Instant) -> Option<Instant> {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = *entry.key();
            let Delayed { message, queue, .. } = entry.remove();
            self.queues[queue].delayed.remove(&key);
            self.push_ready(queue, message);
        }
        if self.leases_checked_until.is_some_and(|t| t <= now) {
            let mut next: Option<Instant> = None;
            for queue in &mut self.queues {
                while let Some((&lease, &receipt)) = queue.leases.first_key_value() {
                    if let Some(f) = self.inflight.get(&receipt)
                        && f.deadline > now
                    {
                        next = Some(next.map_or(f.deadline, |n| n.min(f.deadline)));
                        break;
                    }
                    queue.leases.remove(&lease);
                    if let Some(f) = self.inflight.remove(&receipt) {
                        tracing::warn!(queue = %queue.name, "delivery lease expired; the message is ready again");
                        queue.ready.push(f.message);
                    }
                }
            }
            self.leases_checked_until = next;
        }
        let next_delayed = self.delayed.keys().next().map(|k| k.0);
        let next_lease = self.leases_checked_until;
        match (next_delayed, next_lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take(&mut self, names: &[String], max: usize, visibility: Duration) -> Vec<Delivery> {
        let mut out = Vec::new();
        if names.is_empty() {
            return out;
        }
        let deadline = after(visibility);
        let start = self.rotation % names.len();
        self.rotation = self.rotation.wrapping_add(1);
        for i in 0..names.len() {
            let Some(&index) = self.names.get(&names[(start + i) % names.len()]) else {
                continue;
            };
            let Inner {
                queues,
                inflight,
                seq,
                leases_checked_until,
                ..
            } = self;
            let queue = &mut queues[index];
            if queue.paused {
                continue;
            }
            while out.len() < max {
                let Some(next) = queue.ready.peek() else {
                    break;
                };
                // A message delivered before comes alone (see `Broker::fetch`).
                let again = next.delivery_count > 0;
                if again && !out.is_empty() {
                    return out;
                }
                let Some(mut message) = queue.ready.pop() else {
                    break;
                };
                message.delivery_count += 1;
                *seq += 1;
                let receipt = *seq;
                out.push(Delivery {
                    payload: message.payload.clone(),
                    queue: queue.name.clone(),
                    delivery_count: message.delivery_count,
                    receipt: receipt.to_string(),
                });
                leases_checked_until.get_or_insert(deadline);
                queue.leases.insert(receipt, receipt);
                inflight.insert(
                    receipt,
                    InFlight {
                        message,
                        queue: index,
                        deadline,
                        lease: receipt,
                    },
                );
                if again {
                    return out;
                }
            }
        }
        out
    }

    /// Removes the lease of `delivery` and returns its message and queue.
    fn take_inflight(&mut self, delivery: &Delivery) -> Result<(usize, Message)> {
        let receipt = receipt_of(delivery)?;
        let f = self
            .inflight
            .remove(&receipt)
            .ok_or_else(|| Error::LeaseLost {
                receipt: delivery.receipt.clone(),
            })?;
        self.queues[f.queue].leases.remove(&f.lease);
        Ok((f.queue, f.message))
    }

    /// Moves dead letters back to the ready messages of `queue`, delivery count reset.
    fn requeue(&mut self, queue: usize, dead: Vec<Dead>) {
        for d in dead {
            let seq = self.next_seq();
            self.push_ready(
                queue,
                Message {
                    uuid: d.uuid,
                    priority: d.priority,
                    payload: d.letter.payload,
                    delivery_count: 0,
                    seq,
                },
            );
        }
    }

    /// Removes the dead letters of task `uuid` from `queue`.
    fn take_dead(&mut self, queue: usize, uuid: Uuid) -> Vec<Dead> {
        let q = &mut self.queues[queue];
        let keys: Vec<u64> = q
            .dead
            .iter()
            .filter(|(_, d)| is_task(d.uuid, &d.letter.payload, uuid))
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter_map(|k| q.dead.remove(k)).collect()
    }
}

fn receipt_of(delivery: &Delivery) -> Result<u64> {
    delivery.receipt.parse().map_err(|_| Error::LeaseLost {
        receipt: delivery.receipt.clone(),
    })
}

// ---- listings ----

fn listed(queue: &Queue, message: &Message) -> ListedTask {
    let mut task = ListedTask::new(queue.name.clone(), message.payload.clone());
    task.uuid = uuid_of(message.uuid, &message.payload);
    task
}

fn listed_ready(queue: &Queue, message: &Message) -> ListedTask {
    let mut task = listed(queue, message);
    task.deliveries = message.delivery_count;
    task
}

fn listed_delayed(queue: &Queue, delayed: &Delayed) -> ListedTask {
    let mut task = listed_ready(queue, &delayed.message);
    task.eta = Some(delayed.eta_ms);
    task
}

fn listed_inflight(queue: &Queue, f: &InFlight) -> ListedTask {
    let mut task = listed(queue, &f.message);
    // The delivery under way has not ended.
    task.deliveries = f.message.delivery_count.saturating_sub(1);
    task.lease_deadline = Some(wall_ms(f.deadline));
    task
}

fn listed_dead(d: &Dead) -> ListedTask {
    let mut task = ListedTask::new(d.letter.queue.clone(), d.letter.payload.clone());
    task.uuid = uuid_of(d.uuid, &d.letter.payload);
    // The delivery that dead-lettered it settled it.
    task.deliveries = d.delivery_count.saturating_sub(1);
    task.reason = Some(d.letter.reason.clone());
    task
}

/// A page of at most `limit` of `items` (keys in listing order, with what each lists),
/// and the cursor of the last one when more follow.
fn page<K, V>(
    items: impl Iterator<Item = (K, V)>,
    limit: usize,
    list: impl Fn(V) -> ListedTask,
    cursor: impl Fn(&K) -> String,
) -> Page<ListedTask> {
    let mut out = Vec::with_capacity(limit.min(64));
    let mut last = None;
    for (key, value) in items {
        if out.len() == limit {
            return Page {
                items: out,
                next: last.as_ref().map(cursor),
            };
        }
        out.push(list(value));
        last = Some(key);
    }
    Page {
        items: out,
        next: None,
    }
}

fn invalid_cursor(cursor: &str) -> Error {
    Error::InvalidCursor {
        cursor: cursor.to_owned(),
    }
}

/// The `N` fields of a cursor of `list`: `<list>:<field>:<field>…`.
fn cursor_fields<const N: usize>(cursor: &str, list: TaskList) -> Result<[&str; N]> {
    let mut parts = cursor.split(':');
    if parts.next() != Some(list.as_str()) {
        return Err(invalid_cursor(cursor));
    }
    let mut out = [""; N];
    for o in &mut out {
        *o = parts.next().ok_or_else(|| invalid_cursor(cursor))?;
    }
    if parts.next().is_some() {
        return Err(invalid_cursor(cursor));
    }
    Ok(out)
}

/// A decimal field of `cursor`.
fn cursor_number(cursor: &str, field: &str) -> Result<u64> {
    // Digits only: `u64::from_str` would take a leading `+`.
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_cursor(cursor));
    }
    field.parse().map_err(|_| invalid_cursor(cursor))
}

fn pending_cursor(cursor: &str) -> Result<(u8, u64)> {
    let [priority, seq] = cursor_fields(cursor, TaskList::Pending)?;
    let priority = cursor_number(cursor, priority)?;
    let seq = cursor_number(cursor, seq)?;
    match u8::try_from(priority) {
        Ok(priority) if priority <= 9 => Ok((priority, seq)),
        _ => Err(invalid_cursor(cursor)),
    }
}

/// The cursors of lists keyed by one sequence number (in flight, dead).
fn seq_cursor(cursor: &str, list: TaskList) -> Result<u64> {
    let [seq] = cursor_fields(cursor, list)?;
    cursor_number(cursor, seq)
}

fn failed_cursor(cursor: &str) -> Result<(Reverse<u64>, Uuid)> {
    let [at, uuid] = cursor_fields(cursor, TaskList::Failed)?;
    let uuid = uuid.parse().map_err(|_| invalid_cursor(cursor))?;
    Ok((Reverse(cursor_number(cursor, at)?), uuid))
}

/// The range of a page: after the cursor's position, or from the start.
fn from<K>(after: Option<K>) -> (Bound<K>, Bound<K>) {
    (
        after.map_or(Bound::Unbounded, Bound::Excluded),
        Bound::Unbounded,
    )
}

impl MemoryBroker {
    /// A broker with the visibility timeout and message size limit of `config`.
    pub fn new(config: &Config) -> Self {
        MemoryBroker {
            state: Mutex::new(Inner::default()),
            arrived: Notify::new(),
            visibility: config.visibility_timeout,
            max_bytes: config.max_message_bytes,
            epoch: Instant::now(),
            unique: tokio::sync::Mutex::default(),
            rates: super::rate::Rates::new(),
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
        let (queue, message) = inner.take_inflight(delivery)?;
        let seq = inner.next_seq();
        let q = &mut inner.queues[queue];
        tracing::warn!(queue = %q.name, %reason, "message moved to the dead-letter queue");
        q.dead.insert(
            seq,
            Dead {
                uuid: message.uuid,
                priority: message.priority,
                delivery_count: message.delivery_count,
                letter: DeadLetter {
                    queue: q.name.clone(),
                    reason,
                    payload: message.payload,
                },
            },
        );
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
        crate::engine::refuse_revoked(c, backend).await?;
        self.bury(&c.delivery, reason)?;
        crate::engine::record(self, c, backend).await
    }

    /// An instant of tokio time as a cursor field: nanoseconds since `epoch`.
    fn instant_field(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The position a cursor of the delayed list names: an instant of tokio time and
    /// a sequence number.
    fn delayed_cursor(&self, cursor: &str) -> Result<DueKey> {
        let [nanos, seq] = cursor_fields(cursor, TaskList::Delayed)?;
        let at = self
            .epoch
            .checked_add(Duration::from_nanos(cursor_number(cursor, nanos)?))
            .ok_or_else(|| invalid_cursor(cursor))?;
        Ok((at, cursor_number(cursor, seq)?))
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
    async fn reserve_rate(
        &self,
        key: &str,
        limit: crate::RateLimit,
        horizon: Duration,
    ) -> Result<crate::engine::Reservation> {
        Ok(self.rates.reserve(key, limit, horizon))
    }

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
            // Batches usually go to one queue: look it up once.
            let mut last: Option<(String, usize)> = None;
            for m in messages {
                let queue = match &last {
                    Some((name, i)) if *name == m.queue => *i,
                    _ => {
                        let i = inner.queue_index(&m.queue);
                        last = Some((m.queue, i));
                        i
                    }
                };
                let seq = inner.next_seq();
                let message = Message {
                    uuid: m.uuid,
                    priority: m.priority.min(9),
                    payload: m.payload,
                    delivery_count: 0,
                    seq,
                };
                match m.eta {
                    Some(eta) if eta > now_wall => {
                        inner.push_delayed((eta_instant(eta), seq), queue, message, eta);
                    }
                    _ => inner.push_ready(queue, message),
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
            // Woken by a publish, a requeue or a resume, or when something is due.
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<()> {
        self.lock().take_inflight(delivery).map(drop)
    }

    async fn extend(&self, deliveries: &[Delivery]) -> Result<Vec<bool>> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let deadline = after(self.visibility);
        let mut held = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let Some((receipt, f)) = receipt_of(d)
                .ok()
                .and_then(|r| inner.inflight.get_mut(&r).map(|f| (r, f)))
            else {
                held.push(false);
                continue;
            };
            inner.seq += 1;
            let lease = inner.seq;
            let leases = &mut inner.queues[f.queue].leases;
            leases.remove(&f.lease);
            leases.insert(lease, receipt);
            f.lease = lease;
            f.deadline = deadline;
            held.push(true);
        }
        Ok(held)
    }

    async fn release(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<()> {
        {
            let mut inner = self.lock();
            let (queue, message) = inner.take_inflight(delivery)?;
            match delay {
                Some(d) if !d.is_zero() => {
                    let seq = inner.next_seq();
                    inner.push_delayed((after(d), seq), queue, message, eta_after(d));
                }
                _ => inner.push_ready(queue, message),
            }
        }
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        self.bury(delivery, reason.clone())
    }

    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        {
            let mut inner = self.lock();
            let (queue, mut message) = inner.take_inflight(delivery)?;
            // Not counted: the task did not run.
            message.delivery_count = message.delivery_count.saturating_sub(1);
            if delay.is_zero() {
                inner.push_ready(queue, message);
            } else {
                let seq = inner.next_seq();
                inner.push_delayed((after(delay), seq), queue, message, eta_after(delay));
            }
        }
        self.arrived.notify_waiters();
        Ok(())
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

    /// One mutex over every unique send of this broker: the lock check, the state check
    /// ([`ResultBackend::load`]), the state write and the publish happen under it.
    async fn publish_unique(
        &self,
        message: Outgoing,
        state: &TaskState,
        lock: &UniqueLock,
        backend: &dyn ResultBackend,
    ) -> Result<Enqueued> {
        self.check_sizes(std::slice::from_ref(&message))?;
        let mut locks = self.unique.lock().await;
        let now = Instant::now();
        if !lock.key.is_empty()
            && let Some(uuid) = locks.holder(&message.queue, &lock.key, now)
        {
            return Ok(Enqueued::Duplicate { uuid });
        }
        if let Some(stored) = backend.load(&message.queue, message.uuid).await?
            && !stored.state.is_terminal()
        {
            return Ok(Enqueued::Duplicate { uuid: message.uuid });
        }
        let uuid = message.uuid;
        if !lock.key.is_empty() {
            let until = after(Duration::from_millis(lock.ttl_ms.max(1)));
            locks.take(&message.queue, &lock.key, uuid, until);
        }
        backend.store_new(std::slice::from_ref(state)).await?;
        self.publish(vec![message]).await?;
        Ok(Enqueued::Sent { uuid })
    }

    async fn release_unique(&self, queue: &str, key: &str, uuid: Uuid) -> Result<()> {
        let mut locks = self.unique.lock().await;
        let k = (queue.to_owned(), key.to_owned());
        if locks
            .held
            .get(&k)
            .is_some_and(|(holder, _)| *holder == uuid)
        {
            locks.held.remove(&k);
        }
        Ok(())
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

/// Cursors are `<list>:<fields>`, each field a decimal number (a UUID for failures):
/// the position of the last item listed, so a page starts after it wherever the items
/// before it went.
#[async_trait]
impl BrokerAdmin for MemoryBroker {
    async fn pending(&self, queue: &str) -> Result<Vec<Vec<u8>>> {
        let mut inner = self.lock();
        inner.promote(Instant::now());
        Ok(inner.queue(queue).map_or_else(Vec::new, |q| {
            q.ready.after(None).map(|m| m.payload.clone()).collect()
        }))
    }

    async fn delayed(&self, queue: Option<&str>) -> Result<Vec<Vec<u8>>> {
        let mut inner = self.lock();
        inner.promote(Instant::now());
        Ok(match queue {
            None => inner
                .delayed
                .values()
                .map(|d| d.message.payload.clone())
                .collect(),
            Some(queue) => inner.queue(queue).map_or_else(Vec::new, |q| {
                q.delayed
                    .iter()
                    .filter_map(|k| inner.delayed.get(k))
                    .map(|d| d.message.payload.clone())
                    .collect()
            }),
        })
    }

    async fn depth(&self, queue: &str) -> Result<QueueDepth> {
        let mut inner = self.lock();
        inner.promote(Instant::now());
        Ok(inner
            .queue(queue)
            .map_or_else(QueueDepth::default, |q| QueueDepth {
                ready: q.ready.len(),
                delayed: q.delayed.len(),
                in_flight: Some(q.leases.len()),
            }))
    }

    async fn dead_letters(&self, queue: &str) -> Result<Vec<DeadLetter>> {
        Ok(self.lock().queue(queue).map_or_else(Vec::new, |q| {
            q.dead.values().map(|d| d.letter.clone()).collect()
        }))
    }

    async fn requeue_dead_letters(&self, queue: &str) -> Result<usize> {
        let n = {
            let mut inner = self.lock();
            let Some(&index) = inner.names.get(queue) else {
                return Ok(0);
            };
            let dead = std::mem::take(&mut inner.queues[index].dead);
            let n = dead.len();
            inner.requeue(index, dead.into_values().collect());
            n
        };
        self.arrived.notify_waiters();
        Ok(n)
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<usize> {
        Ok(self
            .lock()
            .queue_mut(queue)
            .map_or(0, |q| std::mem::take(&mut q.dead).len()))
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let mut inner = self.lock();
        inner.promote(Instant::now());
        let mut out: Vec<QueueInfo> = inner
            .queues
            .iter()
            .map(|q| QueueInfo {
                name: q.name.clone(),
                ready: q.ready.len() as u64,
                delayed: q.delayed.len() as u64,
                in_flight: q.leases.len() as u64,
                dead: q.dead.len() as u64,
                paused: q.paused,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn tasks(
        &self,
        queue: &str,
        list: TaskList,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ListedTask>> {
        let limit = limit.clamp(1, MAX_PAGE);
        match list {
            TaskList::Pending => {
                let after = cursor.map(pending_cursor).transpose()?;
                let mut inner = self.lock();
                inner.promote(Instant::now());
                Ok(inner.queue(queue).map_or_else(Page::empty, |q| {
                    page(
                        q.ready.after(after).map(|m| ((m.priority, m.seq), m)),
                        limit,
                        |m| listed_ready(q, m),
                        |(priority, seq)| format!("pending:{priority}:{seq}"),
                    )
                }))
            }
            TaskList::Delayed => {
                let after = cursor.map(|c| self.delayed_cursor(c)).transpose()?;
                let mut inner = self.lock();
                inner.promote(Instant::now());
                Ok(inner.queue(queue).map_or_else(Page::empty, |q| {
                    let items = q
                        .delayed
                        .range(from(after))
                        .filter_map(|k| inner.delayed.get(k).map(|d| (*k, d)));
                    page(
                        items,
                        limit,
                        |d| listed_delayed(q, d),
                        |(due, seq)| format!("delayed:{}:{seq}", self.instant_field(*due)),
                    )
                }))
            }
            TaskList::InFlight => {
                let after = cursor.map(|c| seq_cursor(c, list)).transpose()?;
                let mut inner = self.lock();
                inner.promote(Instant::now());
                Ok(inner.queue(queue).map_or_else(Page::empty, |q| {
                    let items = q
                        .leases
                        .range(from(after))
                        .filter_map(|(lease, r)| inner.inflight.get(r).map(|f| (*lease, f)));
                    page(
                        items,
                        limit,
                        |f| listed_inflight(q, f),
                        |lease| format!("in_flight:{lease}"),
                    )
                }))
            }
            TaskList::Dead => {
                let after = cursor.map(|c| seq_cursor(c, list)).transpose()?;
                let inner = self.lock();
                Ok(inner.queue(queue).map_or_else(Page::empty, |q| {
                    page(q.dead.range(from(after)), limit, listed_dead, |seq| {
                        format!("dead:{seq}")
                    })
                }))
            }
            TaskList::Failed => {
                let after = cursor.map(failed_cursor).transpose()?;
                let now = now_ms();
                let mut inner = self.lock();
                let Some(failures) = inner.failures.get_mut(queue) else {
                    return Ok(Page::empty());
                };
                failures.sweep(now);
                let items = failures
                    .by_time
                    .range(from(after))
                    .filter(|(_, expires)| **expires > now)
                    .map(|(key, _)| (*key, *key));
                Ok(page(
                    items,
                    limit,
                    |(Reverse(at), uuid)| {
                        let mut task = ListedTask::new(queue, Vec::new());
                        task.uuid = Some(uuid);
                        task.failed_at = Some(at);
                        task
                    },
                    |(Reverse(at), uuid)| format!("failed:{at}:{uuid}"),
                ))
            }
        }
    }

    async fn find(&self, queue: &str, uuid: Uuid) -> Result<Option<(TaskList, ListedTask)>> {
        let mut inner = self.lock();
        inner.promote(Instant::now());
        let Some(q) = inner.queue(queue) else {
            return Ok(None);
        };
        if let Some(m) = q
            .ready
            .after(None)
            .find(|m| is_task(m.uuid, &m.payload, uuid))
        {
            return Ok(Some((TaskList::Pending, listed_ready(q, m))));
        }
        if let Some(d) = q
            .delayed
            .iter()
            .filter_map(|k| inner.delayed.get(k))
            .find(|d| is_task(d.message.uuid, &d.message.payload, uuid))
        {
            return Ok(Some((TaskList::Delayed, listed_delayed(q, d))));
        }
        if let Some(f) = q
            .leases
            .values()
            .filter_map(|r| inner.inflight.get(r))
            .find(|f| is_task(f.message.uuid, &f.message.payload, uuid))
        {
            return Ok(Some((TaskList::InFlight, listed_inflight(q, f))));
        }
        Ok(q.dead
            .values()
            .find(|d| is_task(d.uuid, &d.letter.payload, uuid))
            .map(|d| (TaskList::Dead, listed_dead(d))))
    }

    async fn delete_pending(&self, queue: &str, uuid: Uuid) -> Result<bool> {
        let mut inner = self.lock();
        inner.promote(Instant::now());
        let Some(&index) = inner.names.get(queue) else {
            return Ok(false);
        };
        let Inner {
            queues, delayed, ..
        } = &mut *inner;
        let q = &mut queues[index];
        let ready = q.ready.retain(|m| !is_task(m.uuid, &m.payload, uuid));
        let due: Vec<DueKey> = q
            .delayed
            .iter()
            .filter(|k| {
                delayed
                    .get(k)
                    .is_some_and(|d| is_task(d.message.uuid, &d.message.payload, uuid))
            })
            .copied()
            .collect();
        for k in &due {
            q.delayed.remove(k);
            delayed.remove(k);
        }
        Ok(ready > 0 || !due.is_empty())
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let mut inner = self.lock();
        inner.promote(Instant::now());
        let Some(&index) = inner.names.get(queue) else {
            return Ok(0);
        };
        let Inner {
            queues, delayed, ..
        } = &mut *inner;
        let q = &mut queues[index];
        let n = q.ready.len() + q.delayed.len();
        q.ready.clear();
        for k in std::mem::take(&mut q.delayed) {
            delayed.remove(&k);
        }
        Ok(n as u64)
    }

    async fn requeue_dead_letter(&self, queue: &str, uuid: Uuid) -> Result<bool> {
        let found = {
            let mut inner = self.lock();
            let Some(&index) = inner.names.get(queue) else {
                return Ok(false);
            };
            let dead = inner.take_dead(index, uuid);
            let found = !dead.is_empty();
            inner.requeue(index, dead);
            found
        };
        if found {
            self.arrived.notify_waiters();
        }
        Ok(found)
    }

    async fn delete_dead_letter(&self, queue: &str, uuid: Uuid) -> Result<bool> {
        let mut inner = self.lock();
        let Some(&index) = inner.names.get(queue) else {
            return Ok(false);
        };
        Ok(!inner.take_dead(index, uuid).is_empty())
    }

    async fn pause(&self, queue: &str) -> Result<bool> {
        let mut inner = self.lock();
        let index = inner.queue_index(queue);
        Ok(!std::mem::replace(&mut inner.queues[index].paused, true))
    }

    async fn resume(&self, queue: &str) -> Result<bool> {
        let was_paused = self
            .lock()
            .queue_mut(queue)
            .is_some_and(|q| std::mem::replace(&mut q.paused, false));
        if was_paused {
            // Fetches waiting on it look again.
            self.arrived.notify_waiters();
        }
        Ok(was_paused)
    }

    async fn register_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.workers.retain(|_, (_, expires)| *expires > now);
        inner
            .workers
            .insert(info.id.clone(), (info.clone(), after(ttl)));
        Ok(())
    }

    async fn unregister_worker(&self, id: &str) -> Result<()> {
        self.lock().workers.remove(id);
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.workers.retain(|_, (_, expires)| *expires > now);
        let mut out: Vec<WorkerInfo> = inner.workers.values().map(|(w, _)| w.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn record_stats(&self, buckets: &[StatsBucket], window: Duration) -> Result<()> {
        let now = now_ms();
        let window = millis(window);
        let mut inner = self.lock();
        for b in buckets {
            let expires = b.minute.saturating_mul(60_000).saturating_add(window);
            if expires <= now {
                continue;
            }
            inner
                .stats
                .entry((b.minute, b.queue.clone(), b.task.clone()))
                .and_modify(|(stored, until)| {
                    stored.add(b);
                    *until = (*until).max(expires);
                })
                .or_insert_with(|| (b.clone(), expires));
        }
        // The oldest minutes first: drop them while they are past their window.
        while let Some(entry) = inner.stats.first_entry() {
            if entry.get().1 > now {
                break;
            }
            entry.remove();
        }
        Ok(())
    }

    async fn record_failures(
        &self,
        failures: &[(String, Uuid, u64)],
        window: Duration,
    ) -> Result<()> {
        let now = now_ms();
        let window = millis(window);
        let mut inner = self.lock();
        for (queue, uuid, at) in failures {
            let expires = at.saturating_add(window);
            if expires <= now {
                continue;
            }
            let f = inner.failures.entry(queue.clone()).or_default();
            match f.at.get(uuid) {
                // One entry per task: its latest failure.
                Some(old) if old > at => continue,
                Some(old) => {
                    f.by_time.remove(&(Reverse(*old), *uuid));
                }
                None => {}
            }
            f.at.insert(*uuid, *at);
            f.by_time.insert((Reverse(*at), *uuid), expires);
        }
        for f in inner.failures.values_mut() {
            f.sweep(now);
        }
        inner.failures.retain(|_, f| !f.at.is_empty());
        Ok(())
    }

    async fn stats(&self, since_minute: u64, queue: Option<&str>) -> Result<Vec<StatsBucket>> {
        let now = now_ms();
        let inner = self.lock();
        Ok(inner
            .stats
            .range((since_minute, String::new(), String::new())..)
            .filter(|((_, q, _), (_, expires))| *expires > now && queue.is_none_or(|w| w == q))
            .map(|(_, (b, _))| b.clone())
            .collect())
    }

    fn engine(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn broker(visibility: Duration) -> MemoryBroker {
        MemoryBroker::new(&Config {
            visibility_timeout: visibility,
            ..Config::default()
        })
    }

    fn message(queue: &str, n: u8) -> Outgoing {
        Outgoing {
            uuid: Uuid::now_v7(),
            queue: queue.into(),
            eta: None,
            priority: 0,
            payload: vec![n],
        }
    }

    #[tokio::test]
    async fn malformed_cursors_are_refused() {
        let b = broker(Duration::from_secs(60));
        b.publish(vec![message("q", 1)]).await.unwrap();
        let bad = [
            (TaskList::Pending, "pending:1"),
            (TaskList::Pending, "pending:1:2:3"),
            (TaskList::Pending, "pending:+1:2"),
            (TaskList::Pending, "pending:256:2"),
            (TaskList::Pending, "pending::2"),
            (TaskList::Pending, "dead:1"),
            (TaskList::Delayed, "delayed:1"),
            (TaskList::Delayed, "delayed:99999999999999999999:1"),
            (TaskList::InFlight, "in_flight:-1:1"),
            (TaskList::Dead, "dead:"),
            (TaskList::Dead, "dead:1:2"),
            (TaskList::Failed, "failed:1:not-a-uuid"),
            (TaskList::Failed, "failed:1"),
        ];
        for (list, cursor) in bad {
            // On a known queue and an unknown one alike.
            for queue in ["q", "unknown"] {
                let err = b.tasks(queue, list, Some(cursor), 10).await.unwrap_err();
                assert!(
                    matches!(&err, Error::InvalidCursor { cursor: c } if c == cursor),
                    "{list:?} {cursor}: {err}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_page_is_bounded() {
        let b = broker(Duration::from_secs(60));
        b.publish((0..1500).map(|i| message("q", (i % 256) as u8)).collect())
            .await
            .unwrap();
        let page = b.tasks("q", TaskList::Pending, None, 5000).await.unwrap();
        assert_eq!(page.items.len(), MAX_PAGE);
        let rest = b
            .tasks("q", TaskList::Pending, page.next.as_deref(), 0)
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 1, "a limit of 0 counts as 1");
        assert!(rest.next.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lease_lists_the_message_as_pending_again() {
        let b = broker(Duration::from_secs(30));
        b.publish(vec![message("q", 1)]).await.unwrap();
        let d = b.fetch(&["q".into()], 1, Duration::ZERO).await.unwrap();
        assert_eq!(d.len(), 1);
        let listed = b.tasks("q", TaskList::InFlight, None, 10).await.unwrap();
        assert_eq!(listed.items[0].deliveries, 0);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(
            b.tasks("q", TaskList::InFlight, None, 10)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let pending = b.tasks("q", TaskList::Pending, None, 10).await.unwrap();
        assert_eq!(pending.items.len(), 1);
        assert_eq!(
            pending.items[0].deliveries, 1,
            "one delivery ended unsettled"
        );
        let depth = b.depth("q").await.unwrap();
        assert_eq!((depth.ready, depth.in_flight), (1, Some(0)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_extended_lease_moves_later_in_the_listing() {
        let b = broker(Duration::from_secs(30));
        b.publish(vec![message("q", 1), message("q", 2)])
            .await
            .unwrap();
        let first = b.fetch(&["q".into()], 1, Duration::ZERO).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = b.fetch(&["q".into()], 1, Duration::ZERO).await.unwrap();
        let order = |page: Page<ListedTask>| -> Vec<Vec<u8>> {
            page.items.into_iter().map(|t| t.payload).collect()
        };
        let listed = b.tasks("q", TaskList::InFlight, None, 10).await.unwrap();
        assert_eq!(order(listed), [vec![1], vec![2]]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.extend(&first).await.unwrap(), [true]);
        let listed = b.tasks("q", TaskList::InFlight, None, 10).await.unwrap();
        assert_eq!(order(listed), [vec![2], vec![1]]);
        // The extended lease outlives the other one.
        tokio::time::advance(Duration::from_secs(29)).await;
        let listed = b.tasks("q", TaskList::InFlight, None, 10).await.unwrap();
        assert_eq!(order(listed), [vec![1]]);
        assert!(matches!(
            b.ack(&second[0]).await,
            Err(Error::LeaseLost { .. })
        ));
        b.ack(&first[0]).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn worker_records_expire_on_tokio_time() {
        let b = broker(Duration::from_secs(30));
        let info = WorkerInfo {
            id: "w1".into(),
            name: "w".into(),
            host: "h".into(),
            pid: 1,
            version: "0".into(),
            queues: Vec::new(),
            concurrency: 1,
            prefetch: 1,
            tasks: Vec::new(),
            started_at: 0,
            heartbeat_at: 0,
            running: Vec::new(),
            processed: 0,
            failed: 0,
        };
        b.register_worker(&info, Duration::from_secs(15))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(b.workers().await.unwrap().len(), 1);
        b.register_worker(&info, Duration::from_secs(15))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(b.workers().await.unwrap().len(), 1, "renewed");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(b.workers().await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_queue_keeps_its_fetch_waiting_until_the_wait_ends() {
        let b = std::sync::Arc::new(broker(Duration::from_secs(30)));
        b.pause("q").await.unwrap();
        let start = Instant::now();
        let waiting = {
            let b = b.clone();
            tokio::spawn(async move { b.fetch(&["q".into()], 1, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.publish(vec![message("q", 1)]).await.unwrap();
        let got = waiting.await.unwrap().unwrap();
        assert!(got.is_empty());
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // Delayed messages of a paused queue become ready, and wait there.
        b.publish(vec![Outgoing {
            eta: Some(now_ms() + 5_000),
            ..message("q", 2)
        }])
        .await
        .unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            b.fetch(&["q".into()], 5, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
        b.resume("q").await.unwrap();
        assert_eq!(
            b.fetch(&["q".into()], 5, Duration::ZERO)
                .await
                .unwrap()
                .len(),
            2
        );
    }
}
