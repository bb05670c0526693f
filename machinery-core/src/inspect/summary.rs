//! Totals, rates and percentiles over statistics buckets.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HISTOGRAM_BOUNDS_MS, StatsBucket};

/// What a run of [`StatsBucket`]s adds up to: totals per task, per queue and overall,
/// with rates and percentiles. Made by [`StatsSummary::of`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsSummary {
    /// The length of the window the buckets cover (ms), which the rates divide by.
    pub window_ms: u64,
    /// Every task name on every queue, by queue then task.
    pub tasks: Vec<StatsTotals>,
    /// Every queue (all its tasks), by name.
    pub queues: Vec<StatsTotals>,
    /// Everything.
    pub total: StatsTotals,
}

/// Totals of one task on one queue, of one queue, or of everything (see
/// [`StatsSummary`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsTotals {
    /// The queue; `None` in the overall totals.
    pub queue: Option<String>,
    /// The task name; `None` in a queue's and in the overall totals.
    pub task: Option<String>,
    /// Task runs that ended, whatever the outcome.
    pub processed: u64,
    /// Runs that ended in FAILURE.
    pub failed: u64,
    /// Runs that ended in RETRY.
    pub retried: u64,
    /// Messages dead-lettered.
    pub dead: u64,
    /// `processed` per minute over the window.
    pub per_minute: f64,
    /// `failed / processed`, 0 when nothing was processed.
    pub failure_ratio: f64,
    /// Mean run time (ms); `None` without runs.
    pub run_mean_ms: Option<f64>,
    /// Median run time (ms), estimated from the histogram (see [`percentile`]).
    pub run_p50_ms: Option<f64>,
    /// 95th percentile of the run time (ms), estimated likewise.
    pub run_p95_ms: Option<f64>,
    /// Mean queue wait (ms).
    pub wait_mean_ms: Option<f64>,
    /// Median queue wait (ms).
    pub wait_p50_ms: Option<f64>,
    /// 95th percentile of the queue wait (ms).
    pub wait_p95_ms: Option<f64>,
}

impl StatsTotals {
    fn of(
        queue: Option<String>,
        task: Option<String>,
        sum: &StatsBucket,
        window: Duration,
    ) -> Self {
        let minutes = window.as_secs_f64() / 60.0;
        let ratio = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let mean = |sum: u64, hist: &[u64]| {
            let n: u64 = hist.iter().sum();
            (n > 0).then(|| sum as f64 / n as f64)
        };
        StatsTotals {
            queue,
            task,
            processed: sum.processed,
            failed: sum.failed,
            retried: sum.retried,
            dead: sum.dead,
            per_minute: if minutes > 0.0 {
                sum.processed as f64 / minutes
            } else {
                0.0
            },
            failure_ratio: ratio(sum.failed, sum.processed),
            run_mean_ms: mean(sum.run_ms_sum, &sum.run_ms),
            run_p50_ms: percentile(&sum.run_ms, 0.50),
            run_p95_ms: percentile(&sum.run_ms, 0.95),
            wait_mean_ms: mean(sum.wait_ms_sum, &sum.wait_ms),
            wait_p50_ms: percentile(&sum.wait_ms, 0.50),
            wait_p95_ms: percentile(&sum.wait_ms, 0.95),
        }
    }
}

impl StatsSummary {
    /// Adds up `buckets` (any minutes, queues and tasks) read over a window of length
    /// `window`, which the rates divide by.
    pub fn of(buckets: &[StatsBucket], window: Duration) -> Self {
        let mut tasks: BTreeMap<(&str, &str), StatsBucket> = BTreeMap::new();
        let mut queues: BTreeMap<&str, StatsBucket> = BTreeMap::new();
        let mut total = StatsBucket::new(0, "", "");
        for b in buckets {
            tasks
                .entry((&b.queue, &b.task))
                .or_insert_with(|| StatsBucket::new(0, "", ""))
                .add(b);
            queues
                .entry(&b.queue)
                .or_insert_with(|| StatsBucket::new(0, "", ""))
                .add(b);
            total.add(b);
        }
        StatsSummary {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            tasks: tasks
                .iter()
                .map(|((q, t), sum)| {
                    StatsTotals::of(Some((*q).to_owned()), Some((*t).to_owned()), sum, window)
                })
                .collect(),
            queues: queues
                .iter()
                .map(|(q, sum)| StatsTotals::of(Some((*q).to_owned()), None, sum, window))
                .collect(),
            total: StatsTotals::of(None, None, &total, window),
        }
    }
}

/// The `q` quantile (0.0 to 1.0) of a histogram counted over
/// [`HISTOGRAM_BOUNDS_MS`] (the last count is +Inf), in milliseconds; `None` when the
/// histogram is empty.
///
/// Estimated as Prometheus' `histogram_quantile` does: linearly within the bucket that
/// holds the quantile (the first bucket starts at 0), and the highest finite bound
/// (60,000 ms) when that bucket is +Inf.
///
/// ```
/// use machinery_core::inspect::{HISTOGRAM_BOUNDS_MS, percentile};
///
/// let mut hist = vec![0; HISTOGRAM_BOUNDS_MS.len() + 1];
/// hist[2] = 10; // ten runs of 5 to 10 ms
/// assert_eq!(percentile(&hist, 0.5), Some(7.5));
/// ```
pub fn percentile(histogram: &[u64], q: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0u64;
    for (i, &count) in histogram.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if (seen + count) as f64 >= rank {
            let Some(&upper) = HISTOGRAM_BOUNDS_MS.get(i) else {
                return HISTOGRAM_BOUNDS_MS.last().map(|&b| b as f64);
            };
            let lower = if i == 0 {
                0
            } else {
                HISTOGRAM_BOUNDS_MS[i - 1]
            };
            let within = (rank - seen as f64) / count as f64;
            return Some(lower as f64 + (upper - lower) as f64 * within);
        }
        seen += count;
    }
    HISTOGRAM_BOUNDS_MS.last().map(|&b| b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(minute: u64, queue: &str, task: &str, runs: &[u64]) -> StatsBucket {
        let mut b = StatsBucket::new(minute, queue, task);
        for &ms in runs {
            b.processed += 1;
            b.run_ms[StatsBucket::bucket_of(ms)] += 1;
            b.run_ms_sum += ms;
            b.wait_ms[StatsBucket::bucket_of(1)] += 1;
            b.wait_ms_sum += 1;
        }
        b
    }

    #[test]
    fn percentiles_interpolate_within_buckets() {
        let n = HISTOGRAM_BOUNDS_MS.len() + 1;
        assert_eq!(percentile(&vec![0; n], 0.5), None);
        let mut h = vec![0; n];
        h[0] = 50; // ≤ 1 ms
        h[5] = 50; // 50–100 ms
        assert_eq!(percentile(&h, 0.5), Some(1.0));
        assert_eq!(percentile(&h, 0.95), Some(50.0 + 50.0 * 0.9));
        let mut inf = vec![0; n];
        inf[n - 1] = 3;
        assert_eq!(percentile(&inf, 0.5), Some(60_000.0));
    }

    #[test]
    fn totals_per_task_queue_and_overall() {
        let mut failing = bucket(2, "a", "x", &[20]);
        failing.failed = 1;
        let buckets = [
            bucket(1, "a", "x", &[3, 3, 3]),
            failing,
            bucket(1, "a", "y", &[700]),
            bucket(1, "b", "x", &[1]),
        ];
        let s = StatsSummary::of(&buckets, Duration::from_secs(120));
        assert_eq!(s.window_ms, 120_000);
        let keys: Vec<_> = s
            .tasks
            .iter()
            .map(|t| (t.queue.as_deref(), t.task.as_deref(), t.processed))
            .collect();
        assert_eq!(
            keys,
            [
                (Some("a"), Some("x"), 4),
                (Some("a"), Some("y"), 1),
                (Some("b"), Some("x"), 1)
            ]
        );
        let ax = &s.tasks[0];
        assert_eq!(ax.failed, 1);
        assert_eq!(ax.failure_ratio, 0.25);
        assert_eq!(ax.per_minute, 2.0);
        assert_eq!(ax.run_mean_ms, Some(29.0 / 4.0));
        assert_eq!(s.queues.len(), 2);
        assert_eq!(s.queues[0].processed, 5);
        assert_eq!(s.queues[0].task, None);
        assert_eq!(s.total.processed, 6);
        assert_eq!(s.total.queue, None);
        assert_eq!(s.total.wait_p50_ms, Some(1.0 * 0.5));
    }
}
