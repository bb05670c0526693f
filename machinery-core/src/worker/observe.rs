//! What a worker counts as its tasks finish: the totals of its registry record, the
//! per-minute statistics it writes to the broker, and the totals since start that
//! [`metrics`](crate::metrics) exports.
//!
//! A finished run costs two relaxed atomic additions and, when statistics or metrics
//! are on, one update of a map under a mutex (two lookups by `&str` hashed with
//! FNV-1a, no allocation once the queue and task were seen): about 575 instructions,
//! against some 83,000 per task for the whole send-run-settle path on Redis. Everything
//! else (bucketing by minute for the broker, merging, bounding) happens in the flush,
//! off the task's path.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use uuid::Uuid;

use crate::inspect::{HISTOGRAM_BOUNDS_MS, StatsBucket};

/// Histogram buckets: one per bound of [`HISTOGRAM_BOUNDS_MS`], then +Inf.
pub(crate) const BUCKETS: usize = HISTOGRAM_BOUNDS_MS.len() + 1;
/// At most this many statistics buckets wait for the broker (when it keeps refusing
/// them); the oldest minutes go first.
const MAX_PENDING_BUCKETS: usize = 10_000;
/// At most this many failures wait for the broker; the oldest go first.
const MAX_PENDING_FAILURES: usize = 10_000;
/// At most this many task names are counted apart per queue; the runs of further names
/// (messages naming tasks nobody registered, sent by mistake or on purpose) are counted
/// under the empty name, so that such messages cannot grow the counts without bound.
const MAX_TASK_NAMES: usize = 1_000;

/// FNV-1a: the keys are a few short names, for which SipHash, the standard maps'
/// default, costs most of the update.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FnvMap<V> = HashMap<String, V, BuildHasherDefault<Fnv>>;

/// How one delivery ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// SUCCESS.
    Success,
    /// RETRY: it runs again.
    Retry,
    /// FAILURE.
    Failure,
    /// REVOKED: cancelled, or expired before it started.
    Revoked,
    /// Moved to the dead-letter queue; `failed` when a FAILURE state was written for it
    /// (a message that does not decode has no state).
    DeadLetter { failed: bool },
}

/// The timings of a run whose task function was called.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunTimes {
    /// From the message's creation, or its ETA when later, to the run's start (ms).
    pub(crate) wait_ms: u64,
    /// From the call of the task function to its return.
    pub(crate) run: Duration,
}

/// The bucket of [`HISTOGRAM_BOUNDS_MS`] that counts `micros`.
fn bucket_of_micros(micros: u64) -> usize {
    HISTOGRAM_BOUNDS_MS
        .iter()
        .position(|&bound| micros <= bound.saturating_mul(1000))
        .unwrap_or(HISTOGRAM_BOUNDS_MS.len())
}

/// A histogram since start: counts per bucket (not cumulative) and the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Histogram {
    /// Counts per bucket of [`HISTOGRAM_BOUNDS_MS`], then +Inf.
    pub(crate) counts: [u64; BUCKETS],
    /// Sum of the observations, in microseconds.
    pub(crate) sum_us: u64,
}

impl Histogram {
    fn observe(&mut self, bucket: usize, micros: u64) {
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(micros);
    }

    /// How many observations.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One task name on one queue, since the worker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) success: u64,
    pub(crate) failure: u64,
    pub(crate) retry: u64,
    pub(crate) dead_letter: u64,
    pub(crate) revoked: u64,
    /// Run times of the runs whose task function was called.
    pub(crate) run: Histogram,
    /// Queue waits of the same runs.
    pub(crate) wait: Histogram,
}

/// Counts of the current minute not yet written to the broker.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    processed: u64,
    failed: u64,
    retried: u64,
    dead: u64,
    run: [u64; BUCKETS],
    run_ms_sum: u64,
    wait: [u64; BUCKETS],
    wait_ms_sum: u64,
}

impl Window {
    fn bucket(&self, minute: u64, queue: &str, task: &str) -> StatsBucket {
        let mut b = StatsBucket::new(minute, queue, task);
        b.processed = self.processed;
        b.failed = self.failed;
        b.retried = self.retried;
        b.dead = self.dead;
        b.run_ms = self.run.to_vec();
        b.run_ms_sum = self.run_ms_sum;
        b.wait_ms = self.wait.to_vec();
        b.wait_ms_sum = self.wait_ms_sum;
        b
    }
}

/// One finished delivery, prepared outside the lock.
struct Finished {
    minute: u64,
    outcome: Outcome,
    /// Run bucket, run µs, wait bucket, wait ms.
    times: Option<(usize, u64, usize, u64)>,
}

struct Tally {
    /// The minute `window` counts.
    minute: u64,
    window: Window,
    totals: Totals,
}

impl Tally {
    fn add(&mut self, f: &Finished, stats: bool, sealed: &mut Vec<StatsBucket>, key: (&str, &str)) {
        let t = &mut self.totals;
        match f.outcome {
            Outcome::Success => t.success += 1,
            Outcome::Retry => t.retry += 1,
            Outcome::Failure => t.failure += 1,
            Outcome::DeadLetter { .. } => t.dead_letter += 1,
            Outcome::Revoked => t.revoked += 1,
        }
        if let Some((run_bucket, run_us, wait_bucket, wait_ms)) = f.times {
            t.run.observe(run_bucket, run_us);
            t.wait.observe(wait_bucket, wait_ms.saturating_mul(1000));
        }
        if !stats {
            return;
        }
        if self.minute != f.minute {
            if self.window.processed > 0 {
                sealed.push(self.window.bucket(self.minute, key.0, key.1));
                self.window = Window::default();
            }
            self.minute = f.minute;
        }
        let w = &mut self.window;
        w.processed += 1;
        match f.outcome {
            // Neither a success nor a failure: counted as processed only.
            Outcome::Success | Outcome::Revoked => {}
            Outcome::Retry => w.retried += 1,
            Outcome::Failure => w.failed += 1,
            Outcome::DeadLetter { failed } => {
                w.dead += 1;
                w.failed += u64::from(failed);
            }
        }
        if let Some((run_bucket, run_us, wait_bucket, wait_ms)) = f.times {
            w.run[run_bucket] += 1;
            w.run_ms_sum = w.run_ms_sum.saturating_add(run_us / 1000);
            w.wait[wait_bucket] += 1;
            w.wait_ms_sum = w.wait_ms_sum.saturating_add(wait_ms);
        }
    }
}

#[derive(Default)]
struct Book {
    /// Queue → task name → counts.
    tallies: FnvMap<FnvMap<Tally>>,
    /// Minutes closed (or handed back by a failed write) and not written yet.
    sealed: Vec<StatsBucket>,
    /// FAILUREs not written yet: queue of the state, task, when (ms).
    failures: Vec<(String, Uuid, u64)>,
}

impl Book {
    fn record(&mut self, queue: &str, task: &str, f: &Finished, stats: bool) {
        if let Some(tally) = self.tallies.get_mut(queue).and_then(|m| m.get_mut(task)) {
            tally.add(f, stats, &mut self.sealed, (queue, task));
            return;
        }
        let tasks = self.tallies.entry(queue.to_owned()).or_default();
        let task = if tasks.len() < MAX_TASK_NAMES {
            task
        } else {
            ""
        };
        let tally = tasks.entry(task.to_owned()).or_insert_with(|| Tally {
            minute: f.minute,
            window: Window::default(),
            totals: Totals::default(),
        });
        tally.add(f, stats, &mut self.sealed, (queue, task));
    }
}

/// The counts of one worker.
pub(crate) struct Observer {
    /// `None` when neither statistics nor metrics are on: nothing is counted per task
    /// name then.
    book: Option<Mutex<Book>>,
    /// Statistics are counted for the broker (config `stats`, and the broker keeps
    /// them).
    stats: AtomicBool,
    processed: AtomicU64,
    failed: AtomicU64,
}

impl Observer {
    /// `stats`: count per-minute statistics for the broker; `metrics`: count totals for
    /// the metrics endpoint.
    pub(crate) fn new(stats: bool, metrics: bool) -> Self {
        Observer {
            book: (stats || metrics).then(|| Mutex::new(Book::default())),
            stats: AtomicBool::new(stats),
            processed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    fn book(&self) -> Option<MutexGuard<'_, Book>> {
        self.book
            .as_ref()
            .map(|b| b.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether statistics are counted for the broker.
    pub(crate) fn stats_on(&self) -> bool {
        self.stats.load(Ordering::Relaxed)
    }

    /// Stops counting statistics for the broker (it does not keep them) and drops
    /// those waiting.
    pub(crate) fn stats_off(&self) {
        self.stats.store(false, Ordering::Relaxed);
        if let Some(mut book) = self.book() {
            book.sealed.clear();
            book.failures.clear();
            for tally in book.tallies.values_mut().flat_map(|m| m.values_mut()) {
                tally.window = Window::default();
            }
        }
    }

    /// Deliveries settled since start, and of those the ones that did not succeed.
    pub(crate) fn processed_failed(&self) -> (u64, u64) {
        (
            self.processed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Counts one settled delivery of task `task` (empty when the message did not
    /// decode) consumed from `queue`. `failure`: the queue of its FAILURE state and its
    /// UUID, for the list of recent failures; `times` when its task function ran.
    pub(crate) fn finished(
        &self,
        queue: &str,
        task: &str,
        outcome: Outcome,
        failure: Option<(&str, Uuid)>,
        times: Option<RunTimes>,
    ) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        if !matches!(outcome, Outcome::Success | Outcome::Revoked) {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let Some(book) = &self.book else {
            return;
        };
        let now = crate::signature::now_ms();
        let f = Finished {
            minute: now / 60_000,
            outcome,
            times: times.map(|t| {
                let run_us = u64::try_from(t.run.as_micros()).unwrap_or(u64::MAX);
                (
                    bucket_of_micros(run_us),
                    run_us,
                    StatsBucket::bucket_of(t.wait_ms),
                    t.wait_ms,
                )
            }),
        };
        let stats = self.stats_on();
        let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
        book.record(queue, task, &f, stats);
        if stats && let Some((state_queue, uuid)) = failure {
            book.failures.push((state_queue.to_owned(), uuid, now));
        }
    }

    /// Takes the statistics and failures not written yet, merged by minute, queue and
    /// task; minutes that started more than `window` ago are dropped.
    pub(crate) fn drain(&self, window: Duration) -> (Vec<StatsBucket>, Vec<(String, Uuid, u64)>) {
        let Some(mut book) = self.book().filter(|_| self.stats_on()) else {
            return (Vec::new(), Vec::new());
        };
        let mut buckets = std::mem::take(&mut book.sealed);
        let failures = std::mem::take(&mut book.failures);
        for (queue, tasks) in &mut book.tallies {
            for (task, tally) in tasks {
                if tally.window.processed > 0 {
                    buckets.push(tally.window.bucket(tally.minute, queue, task));
                    tally.window = Window::default();
                }
            }
        }
        drop(book);
        (compact(buckets, window), failures)
    }

    /// Hands back what [`drain`](Observer::drain) took when the broker refused it, for
    /// the next flush; bounded, the oldest going first.
    pub(crate) fn restore(
        &self,
        buckets: Vec<StatsBucket>,
        failures: Vec<(String, Uuid, u64)>,
        window: Duration,
    ) {
        let Some(mut book) = self.book().filter(|_| self.stats_on()) else {
            return;
        };
        let mut all = buckets;
        all.append(&mut book.sealed);
        book.sealed = compact(all, window);
        let mut kept = failures;
        kept.append(&mut book.failures);
        if kept.len() > MAX_PENDING_FAILURES {
            kept.drain(..kept.len() - MAX_PENDING_FAILURES);
        }
        book.failures = kept;
    }

    /// The totals since start, by queue then task name.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn totals(&self) -> Vec<(String, String, Totals)> {
        let Some(book) = self.book() else {
            return Vec::new();
        };
        let mut out: Vec<(String, String, Totals)> = book
            .tallies
            .iter()
            .flat_map(|(queue, tasks)| {
                tasks
                    .iter()
                    .map(|(task, tally)| (queue.clone(), task.clone(), tally.totals))
            })
            .collect();
        drop(book);
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }
}

/// Merges buckets of the same minute, queue and task; drops minutes older than
/// `window`, and the oldest beyond [`MAX_PENDING_BUCKETS`].
fn compact(buckets: Vec<StatsBucket>, window: Duration) -> Vec<StatsBucket> {
    let now_minute = crate::signature::now_ms() / 60_000;
    let oldest = now_minute.saturating_sub(window.as_secs() / 60);
    let mut merged: BTreeMap<(u64, String, String), StatsBucket> = BTreeMap::new();
    for b in buckets {
        if b.minute < oldest {
            continue;
        }
        match merged.get_mut(&(b.minute, b.queue.clone(), b.task.clone())) {
            Some(have) => have.add(&b),
            None => {
                merged.insert((b.minute, b.queue.clone(), b.task.clone()), b);
            }
        }
    }
    let mut out: Vec<StatsBucket> = merged.into_values().collect();
    if out.len() > MAX_PENDING_BUCKETS {
        out.drain(..out.len() - MAX_PENDING_BUCKETS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(wait_ms: u64, run_ms: u64) -> Option<RunTimes> {
        Some(RunTimes {
            wait_ms,
            run: Duration::from_millis(run_ms),
        })
    }

    #[test]
    fn micros_fall_in_the_bucket_of_their_upper_bound() {
        assert_eq!(bucket_of_micros(0), 0);
        assert_eq!(bucket_of_micros(1000), 0);
        assert_eq!(bucket_of_micros(1001), 1);
        assert_eq!(bucket_of_micros(60_000_000), HISTOGRAM_BOUNDS_MS.len() - 1);
        assert_eq!(bucket_of_micros(60_000_001), HISTOGRAM_BOUNDS_MS.len());
    }

    #[test]
    fn outcomes_are_counted_per_queue_and_task() {
        let o = Observer::new(true, false);
        let u = Uuid::now_v7();
        o.finished("q", "add", Outcome::Success, None, times(3, 7));
        o.finished("q", "add", Outcome::Retry, None, times(2, 1));
        o.finished("q", "add", Outcome::Failure, Some(("q", u)), times(40, 2));
        o.finished("q", "", Outcome::DeadLetter { failed: false }, None, None);
        o.finished(
            "other",
            "add",
            Outcome::DeadLetter { failed: true },
            Some(("s", u)),
            None,
        );
        assert_eq!(o.processed_failed(), (5, 4));
        let (buckets, failures) = o.drain(Duration::from_secs(3600));
        assert_eq!(buckets.len(), 3, "{buckets:?}");
        let find = |q: &str, t: &str| {
            buckets
                .iter()
                .find(|b| b.queue == q && b.task == t)
                .unwrap_or_else(|| panic!("no bucket {q}/{t}"))
        };
        let add = find("q", "add");
        assert_eq!(
            (add.processed, add.failed, add.retried, add.dead),
            (3, 1, 1, 0)
        );
        assert_eq!(add.run_ms.iter().sum::<u64>(), 3);
        assert_eq!(add.run_ms[StatsBucket::bucket_of(7)], 1);
        assert_eq!(add.run_ms_sum, 10);
        assert_eq!(add.wait_ms[StatsBucket::bucket_of(40)], 1);
        assert_eq!(add.wait_ms_sum, 45);
        let undecodable = find("q", "");
        assert_eq!((undecodable.processed, undecodable.dead), (1, 1));
        assert_eq!(undecodable.failed, 0);
        let other = find("other", "add");
        assert_eq!((other.processed, other.failed, other.dead), (1, 1, 1));
        assert_eq!(other.run_ms.iter().sum::<u64>(), 0, "it never ran");
        assert_eq!(failures.len(), 2);
        assert_eq!((failures[0].0.as_str(), failures[0].1), ("q", u));
        assert_eq!(failures[1].0, "s");
        // Drained: nothing twice.
        assert_eq!(o.drain(Duration::from_secs(3600)), (Vec::new(), Vec::new()));
        // Totals since start stay.
        let totals = o.totals();
        assert_eq!(totals.len(), 3);
        let (_, _, t) = &totals[2];
        assert_eq!((t.success, t.retry, t.failure, t.dead_letter), (1, 1, 1, 0));
        assert_eq!(t.run.count(), 3);
        assert_eq!(t.run.sum_us, 10_000);
        assert_eq!(t.wait.sum_us, 45_000);
    }

    #[test]
    fn a_refused_write_is_kept_for_the_next_flush_merged() {
        let o = Observer::new(true, false);
        let window = Duration::from_secs(3600);
        o.finished("q", "t", Outcome::Success, None, None);
        let (buckets, failures) = o.drain(window);
        o.restore(buckets, failures, window);
        o.finished("q", "t", Outcome::Failure, Some(("q", Uuid::nil())), None);
        let (buckets, failures) = o.drain(window);
        assert_eq!(buckets.len(), 1, "same minute, queue and task: one bucket");
        assert_eq!((buckets[0].processed, buckets[0].failed), (2, 1));
        assert_eq!(failures.len(), 1);
    }

    #[test]
    fn pending_counts_are_bounded() {
        let now = crate::signature::now_ms() / 60_000;
        let old = StatsBucket::new(now - 120, "q", "t");
        let mut many: Vec<StatsBucket> = (0..MAX_PENDING_BUCKETS + 5)
            .map(|i| StatsBucket::new(now, "q", format!("t{i}")))
            .collect();
        many.push(old);
        let kept = compact(many, Duration::from_secs(3600));
        assert_eq!(kept.len(), MAX_PENDING_BUCKETS);
        assert!(
            kept.iter().all(|b| b.minute == now),
            "the minute out of the window is dropped"
        );
        let o = Observer::new(true, false);
        let failures = (0..MAX_PENDING_FAILURES + 3)
            .map(|i| ("q".to_owned(), Uuid::nil(), i as u64))
            .collect();
        o.restore(Vec::new(), failures, Duration::from_secs(60));
        let (_, failures) = o.drain(Duration::from_secs(60));
        assert_eq!(failures.len(), MAX_PENDING_FAILURES);
        assert_eq!(failures[0].2, 3, "the oldest go first");
    }

    #[test]
    fn fnv_is_fnv_1a() {
        let mut h = Fnv::default();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn task_names_beyond_the_bound_are_counted_unnamed() {
        let o = Observer::new(false, true);
        for i in 0..MAX_TASK_NAMES + 10 {
            o.finished("q", &format!("t{i}"), Outcome::Success, None, None);
        }
        let totals = o.totals();
        assert_eq!(totals.len(), MAX_TASK_NAMES + 1);
        let unnamed = totals.iter().find(|t| t.1.is_empty()).expect("the rest");
        assert_eq!(unnamed.2.success, 10);
    }

    #[test]
    fn with_statistics_off_only_the_totals_count() {
        let metrics_only = Observer::new(false, true);
        metrics_only.finished("q", "t", Outcome::Failure, Some(("q", Uuid::nil())), None);
        assert_eq!(
            metrics_only.drain(Duration::from_secs(60)),
            (Vec::new(), Vec::new())
        );
        assert_eq!(metrics_only.totals()[0].2.failure, 1);
        let neither = Observer::new(false, false);
        neither.finished("q", "t", Outcome::Success, None, None);
        assert_eq!(neither.processed_failed(), (1, 0));
        assert!(neither.totals().is_empty());
        let turned_off = Observer::new(true, false);
        turned_off.finished("q", "t", Outcome::Success, None, None);
        turned_off.stats_off();
        assert!(!turned_off.stats_on());
        assert_eq!(
            turned_off.drain(Duration::from_secs(60)),
            (Vec::new(), Vec::new())
        );
    }
}
