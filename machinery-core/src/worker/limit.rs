//! Rate limits in the worker: a limited task reserves its start slot before it runs.
//!
//! A task with a limit (its own `#[task(rate_limit)]`, its queue's `rate_limits` entry,
//! or both) asks the broker for a start slot ([`Broker::reserve_rate`]) after it is
//! decoded and before it runs. Granted: it sleeps until its slot (at most the horizon,
//! holding its lease, which the heartbeat keeps) and runs. Later: its delivery is
//! handed back with that delay, keeping its place in the queue. Tasks without a limit
//! never get here.
//!
//! Waiting costs no spinning:
//! - a worker remembers each limit's "no slot before T" answer, and asks the broker
//!   again for that limit only after T (messages meanwhile go back without a call);
//! - reservations for one limit are made one at a time per worker, so a fetched batch
//!   of fifty limited messages makes one call that says Later, not fifty;
//! - a queue whose own limit said Later is not fetched from until T;
//! - a queue where a task's limit said Later is not fetched from for a short pause
//!   ([`TASK_PAUSE`]), so a backlog of one limited task costs a bounded number of
//!   fetches while the queue's other tasks still flow.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::{Broker, Delivery, Reservation};
use crate::error::Error;
use crate::rate::RateLimit;
use crate::signature::RawSignature;

use super::run::Shared;
use super::started::StartGate;

/// The longest a slot is reserved ahead (capped by a third of the visibility timeout,
/// so that a task sleeping until its slot never outlives its lease between heartbeats).
const HORIZON: Duration = Duration::from_secs(1);
/// How long a queue is not fetched from after a task's own limit said Later for one of
/// its messages.
pub(crate) const TASK_PAUSE: Duration = Duration::from_millis(200);
/// How long a delivery waits before it is tried again when the limiter failed.
const ERROR_DELAY: Duration = Duration::from_secs(1);

/// One limit a task starts under: its broker key and rate.
type Limit = (String, RateLimit);

/// The worker's view of the rate limits.
pub(crate) struct Limits {
    queues: BTreeMap<String, RateLimit>,
    horizon: Duration,
    state: Mutex<State>,
    /// Set once the broker answered Unsupported (logged once; tasks then run unlimited).
    unsupported: AtomicBool,
    /// Set once any queue was paused: until then the fetch loop takes no lock here.
    ever_paused: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Limit key → no slot before this instant.
    blocked: HashMap<String, Instant>,
    /// Queue → not fetched from before this instant.
    paused: HashMap<String, Instant>,
    /// Limit key → the lock that makes this worker's reservations for it sequential.
    turns: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

/// What a limited task does next.
enum Admission {
    /// Run after this wait.
    Run(Duration),
    /// Go back to the queue for this long; `pause` the queue for that long too.
    Later { delay: Duration, pause: Duration },
}

impl Limits {
    pub(crate) fn new(queues: BTreeMap<String, RateLimit>, visibility: Duration) -> Self {
        Limits {
            queues,
            horizon: HORIZON.min(visibility / 3).max(Duration::from_millis(1)),
            state: Mutex::new(State::default()),
            unsupported: AtomicBool::new(false),
            ever_paused: AtomicBool::new(false),
        }
    }

    /// Whether a task with `task_limit` may be limited at all: it has a limit, or some
    /// queue has one. False for the common task, which then skips [`admit`] entirely.
    pub(crate) fn applies(&self, task_limit: Option<RateLimit>) -> bool {
        task_limit.is_some() || !self.queues.is_empty()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queues to fetch from now (`queues` without the paused ones) and how long
    /// that fetch may wait: `wait`, or less when a paused queue resumes sooner.
    pub(crate) fn fetchable<'q>(
        &self,
        queues: &'q [String],
        wait: Duration,
    ) -> (Cow<'q, [String]>, Duration) {
        if !self.ever_paused.load(Ordering::Relaxed) {
            return (Cow::Borrowed(queues), wait);
        }
        let mut state = self.state();
        if state.paused.is_empty() {
            return (Cow::Borrowed(queues), wait);
        }
        let now = Instant::now();
        state.paused.retain(|_, until| *until > now);
        let Some(first) = state.paused.values().min().copied() else {
            return (Cow::Borrowed(queues), wait);
        };
        let open = queues
            .iter()
            .filter(|q| !state.paused.contains_key(q.as_str()))
            .cloned()
            .collect();
        (Cow::Owned(open), wait.min(first - now))
    }

    /// When every one of `queues` is paused: how long until the first resumes.
    pub(crate) fn all_paused(&self, queues: &[String]) -> Option<Duration> {
        if !self.ever_paused.load(Ordering::Relaxed) {
            return None;
        }
        let state = self.state();
        if state.paused.is_empty() || queues.is_empty() {
            return None;
        }
        let now = Instant::now();
        queues
            .iter()
            .map(|q| state.paused.get(q).filter(|until| **until > now))
            .try_fold(None::<Instant>, |first, until| {
                let until = *until?;
                Some(Some(first.map_or(until, |f| f.min(until))))
            })
            .flatten()
            .map(|until| until - now)
    }

    /// The limits a task of `task_limit` fetched from `queue` starts under, queue
    /// first; empty for an unlimited task.
    fn of(&self, name: &str, task_limit: Option<RateLimit>, queue: &str) -> Vec<Limit> {
        let mut limits = Vec::new();
        if let Some(limit) = self.queues.get(queue) {
            limits.push((format!("queue:{queue}"), *limit));
        }
        if let Some(limit) = task_limit {
            limits.push((format!("task:{name}"), limit));
        }
        limits
    }

    /// Reserves a slot under each limit in turn. A later limit saying Later wastes the
    /// slot the earlier ones granted (never more starts than allowed, at worst fewer).
    async fn admit(&self, broker: &dyn Broker, limits: &[Limit], queue: &str) -> Admission {
        let mut wait = Duration::ZERO;
        for (i, (key, limit)) in limits.iter().enumerate() {
            let is_queue = i == 0 && self.queues.contains_key(queue);
            let pause = |delay: Duration| {
                if is_queue {
                    delay
                } else {
                    delay.min(TASK_PAUSE)
                }
            };
            if let Some(delay) = self.blocked(key) {
                return Admission::Later {
                    delay,
                    pause: pause(delay),
                };
            }
            let turn = self.state().turns.entry(key.clone()).or_default().clone();
            let _turn = turn.lock().await;
            // Whoever held the turn before may have learnt that there is no slot.
            if let Some(delay) = self.blocked(key) {
                return Admission::Later {
                    delay,
                    pause: pause(delay),
                };
            }
            match broker.reserve_rate(key, *limit, self.horizon).await {
                Ok(Reservation::Granted { wait: w }) => wait = wait.max(w),
                Ok(Reservation::Later { retry_after }) => {
                    let delay = retry_after.max(Duration::from_millis(1));
                    self.state()
                        .blocked
                        .insert(key.clone(), Instant::now() + delay);
                    return Admission::Later {
                        delay,
                        pause: pause(delay),
                    };
                }
                Err(Error::Unsupported { engine, .. }) => {
                    if !self.unsupported.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            engine,
                            "this broker has no rate limits; rate-limited tasks run unlimited"
                        );
                    }
                    return Admission::Run(Duration::ZERO);
                }
                Err(e) => {
                    tracing::warn!(limit = %key, error = %e, retry_in = ?ERROR_DELAY, "cannot reserve a start slot; handing the task back");
                    return Admission::Later {
                        delay: ERROR_DELAY,
                        pause: Duration::ZERO,
                    };
                }
            }
        }
        Admission::Run(wait)
    }

    /// How long `key` has no slot, when this worker knows that.
    fn blocked(&self, key: &str) -> Option<Duration> {
        let mut state = self.state();
        let until = *state.blocked.get(key)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            state.blocked.remove(key);
            None
        }
    }

    fn pause(&self, queue: &str, pause: Duration) {
        if pause.is_zero() {
            return;
        }
        let until = Instant::now() + pause;
        self.ever_paused.store(true, Ordering::Relaxed);
        let mut state = self.state();
        let entry = state.paused.entry(queue.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// For a task that has a limit, waits for its start slot and returns when it may run
/// (the time it starts, ms); `None` when it was handed back to wait in its queue (its
/// start gate is closed, so no STARTED is written for it). A task without a limit
/// returns at once, having touched nothing.
pub(crate) async fn admit(
    shared: &Shared,
    delivery: &Delivery,
    raw: &RawSignature,
    task_limit: Option<RateLimit>,
    started: &mut StartGate,
    started_at: u64,
) -> Option<u64> {
    let limits = &shared.limits;
    let of = limits.of(&raw.name, task_limit, &delivery.queue);
    if of.is_empty() {
        return Some(started_at);
    }
    let broker = shared.server.broker().clone();
    match limits.admit(broker.as_ref(), &of, &delivery.queue).await {
        Admission::Run(wait) if wait.is_zero() => Some(started_at),
        Admission::Run(wait) => {
            tokio::time::sleep(wait).await;
            Some(crate::signature::now_ms())
        }
        Admission::Later { delay, pause } => {
            limits.pause(&delivery.queue, pause);
            started.finished().await;
            let d = shared.settle(delivery)?;
            tracing::debug!(task.id = %raw.uuid, task.name = %raw.name, queue = %d.queue, retry_in = ?delay, "rate limited; back to the queue until a start slot is near");
            if let Err(e) = broker.defer(&d, delay).await {
                tracing::warn!(task.id = %raw.uuid, error = %e, "could not hand a rate-limited task back; it returns after the visibility timeout");
            }
            None
        }
    }
}
