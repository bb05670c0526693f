//! What operators see: queues, listed tasks, workers and statistics.
//!
//! These are the shapes the inspect and admin API returns ([`Server::inspect`] and the
//! engine's [`BrokerAdmin`](crate::engine::BrokerAdmin)); the `machinery` CLI prints
//! them, as tables or as JSON (every type here is `Serialize`).
//!
//! Times are milliseconds since the Unix epoch (`u64`), durations milliseconds, as in
//! the rest of the message format.
//!
//! [`Inspector`] is the façade that tools use: it joins the engine's listings with the
//! worker registry and the stored states, decodes arguments and results to JSON
//! ([`msgpack_to_json`]) and sums statistics up ([`StatsSummary`]).
//!
//! [`Server::inspect`]: crate::Server::inspect

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::reason::DeadLetterReason;

mod inspector;
mod json;
mod summary;
mod workflow;

pub use inspector::{Confirm, Inspector, TaskInfo, TaskLocation, Timings};
pub use json::msgpack_to_json;
pub use summary::{StatsSummary, StatsTotals, percentile};
pub use workflow::{
    StateCount, WORKFLOW_MEMBERS_SHOWN, WorkflowGroup, WorkflowInfo, WorkflowKind, WorkflowMember,
    WorkflowStep, WorkflowTask,
};

/// One page of a listing, and where the next one starts.
///
/// Listings are paged by a **cursor**: pass [`next`](Page::next) back to get the page
/// after this one. A cursor is opaque text, valid across processes (the CLI prints it),
/// and keeps its place when items before it are consumed or deleted meanwhile: no item
/// present for the whole listing is skipped; an item that moves (a retry that goes back
/// to the queue) may be seen twice or not at all, as in any listing of a live queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// At most the requested number of items, in the listing's order.
    pub items: Vec<T>,
    /// The cursor of the next page; `None` when this page is the last.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page with no items and no next page.
    pub fn empty() -> Self {
        Page {
            items: Vec::new(),
            next: None,
        }
    }
}

/// Which tasks a listing walks ([`BrokerAdmin::tasks`](crate::engine::BrokerAdmin::tasks)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskList {
    /// Ready to be delivered, in delivery order (higher priority first, then oldest).
    /// A delayed message whose ETA has passed is listed under `Delayed` until a fetch
    /// promotes it.
    Pending,
    /// Waiting for their ETA, soonest first.
    Delayed,
    /// Delivered and not yet settled, soonest lease deadline first.
    InFlight,
    /// In the dead-letter queue, oldest first.
    Dead,
    /// Ended in FAILURE within the statistics window, most recent first (kept while
    /// their state is; a failure whose state expired is left out).
    Failed,
}

impl TaskList {
    /// Every list, in the order tools show them.
    pub const ALL: [TaskList; 5] = [
        TaskList::Pending,
        TaskList::Delayed,
        TaskList::InFlight,
        TaskList::Dead,
        TaskList::Failed,
    ];

    /// The name the CLI and the JSON output use (`pending`, `in_flight`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskList::Pending => "pending",
            TaskList::Delayed => "delayed",
            TaskList::InFlight => "in_flight",
            TaskList::Dead => "dead",
            TaskList::Failed => "failed",
        }
    }
}

impl std::str::FromStr for TaskList {
    type Err = String;

    /// Parses a name of [`TaskList::as_str`]; `inflight`, `in-flight`, `ready`,
    /// `dead_letters`, `failures` and `failure` are accepted too.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "pending" | "ready" => TaskList::Pending,
            "delayed" | "scheduled" => TaskList::Delayed,
            "in_flight" | "inflight" | "in-flight" | "active" | "running" => TaskList::InFlight,
            "dead" | "dead_letters" | "dead-letters" | "dead_letter" => TaskList::Dead,
            "failed" | "failures" | "failure" => TaskList::Failed,
            other => {
                return Err(format!(
                    "unknown task state `{other}`: expected one of pending, delayed, in_flight, dead, failed"
                ));
            }
        })
    }
}

/// A task as a listing shows it: the message, and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedTask {
    /// The queue it is in (or was consumed from, for a dead letter; was sent to, for a
    /// failure).
    pub queue: String,
    /// The encoded message ([`RawSignature::decode`](crate::RawSignature::decode) reads
    /// it; a message pushed by someone else may not decode). Empty for a
    /// [`Failed`](TaskList::Failed) entry, whose message is gone.
    #[serde(with = "crate::codec::bytes")]
    pub payload: Vec<u8>,
    /// The task's UUID, when known (always for [`Failed`](TaskList::Failed); otherwise
    /// read from the payload by [`Inspector::tasks`]).
    pub uuid: Option<Uuid>,
    /// For [`Delayed`](TaskList::Delayed): when it becomes ready (ms).
    pub eta: Option<u64>,
    /// For [`InFlight`](TaskList::InFlight): when its lease ends unless extended (ms).
    pub lease_deadline: Option<u64>,
    /// For [`InFlight`](TaskList::InFlight): the worker that runs it, when the worker
    /// registry knows (filled in by [`Server::inspect`](crate::Server::inspect)).
    pub worker: Option<String>,
    /// Deliveries that ended unsettled so far (a worker died or lost the lease).
    pub deliveries: u32,
    /// For [`Dead`](TaskList::Dead): why it was dead-lettered.
    pub reason: Option<DeadLetterReason>,
    /// For [`Failed`](TaskList::Failed): when it failed (ms).
    pub failed_at: Option<u64>,
}

impl ListedTask {
    /// A listed message of `queue` with nothing else known yet.
    pub fn new(queue: impl Into<String>, payload: Vec<u8>) -> Self {
        ListedTask {
            queue: queue.into(),
            payload,
            uuid: None,
            eta: None,
            lease_deadline: None,
            worker: None,
            deliveries: 0,
            reason: None,
            failed_at: None,
        }
    }
}

/// One queue's counts ([`BrokerAdmin::queues`](crate::engine::BrokerAdmin::queues)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// Ready to be delivered.
    pub ready: u64,
    /// Waiting for their ETA.
    pub delayed: u64,
    /// Delivered and not yet settled.
    pub in_flight: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// Workers do not fetch from it ([`BrokerAdmin::pause`](crate::engine::BrokerAdmin::pause)).
    pub paused: bool,
}

/// What a worker publishes about itself, every heartbeat (the worker registry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique per running worker (a UUID v7 made at start).
    pub id: String,
    /// The name given with [`Worker::name`](crate::Worker::name).
    pub name: String,
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The version of `machinery-core` it runs.
    pub version: String,
    /// The queues it consumes.
    pub queues: Vec<String>,
    /// How many tasks it runs at once.
    pub concurrency: usize,
    /// How many messages it fetches ahead.
    pub prefetch: usize,
    /// The tasks it can run.
    pub tasks: Vec<RegisteredTask>,
    /// When it started (ms).
    pub started_at: u64,
    /// When it wrote this record (ms).
    pub heartbeat_at: u64,
    /// The tasks running now.
    pub running: Vec<RunningTask>,
    /// Task runs finished since it started (any outcome).
    pub processed: u64,
    /// Of those, the runs that failed (FAILURE or RETRY).
    pub failed: u64,
}

/// A task a worker can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredTask {
    /// The registered name.
    pub name: String,
    /// The argument schema, e.g. `add(i64, i64) -> i64`.
    pub schema: String,
    /// FNV-1a hash of the schema.
    pub fingerprint: u64,
}

/// A task a worker runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTask {
    /// The task's UUID.
    pub uuid: Uuid,
    /// The task's name.
    pub name: String,
    /// The queue it came from.
    pub queue: String,
    /// When it started (ms).
    pub started_at: u64,
}

/// Upper bounds, in milliseconds, of the run-time and queue-wait histogram buckets of
/// [`StatsBucket`]; a last bucket (+Inf) follows them.
pub const HISTOGRAM_BOUNDS_MS: [u64; 14] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// Counts of one task name on one queue in one minute (statistics).
///
/// Workers add to these as tasks finish and write them to the broker in batches
/// ([`BrokerAdmin::record_stats`](crate::engine::BrokerAdmin::record_stats)); the
/// broker keeps each minute for the statistics window (`stats_window`, default 24 h).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsBucket {
    /// The minute: milliseconds since the Unix epoch divided by 60,000.
    pub minute: u64,
    /// The queue.
    pub queue: String,
    /// The task name.
    pub task: String,
    /// Task runs that ended, whatever the outcome.
    pub processed: u64,
    /// Runs that ended in FAILURE.
    pub failed: u64,
    /// Runs that ended in RETRY (the task runs again).
    pub retried: u64,
    /// Messages moved to the dead-letter queue.
    pub dead: u64,
    /// Run time histogram: counts per bucket of [`HISTOGRAM_BOUNDS_MS`], then +Inf
    /// (`HISTOGRAM_BOUNDS_MS.len() + 1` entries).
    pub run_ms: Vec<u64>,
    /// Sum of the run times (ms).
    pub run_ms_sum: u64,
    /// Queue-wait histogram (from the message's creation, or its ETA when later, to
    /// its start), as [`run_ms`](StatsBucket::run_ms).
    pub wait_ms: Vec<u64>,
    /// Sum of the queue waits (ms).
    pub wait_ms_sum: u64,
}

impl StatsBucket {
    /// An empty bucket of `task` on `queue` in `minute`.
    pub fn new(minute: u64, queue: impl Into<String>, task: impl Into<String>) -> Self {
        StatsBucket {
            minute,
            queue: queue.into(),
            task: task.into(),
            processed: 0,
            failed: 0,
            retried: 0,
            dead: 0,
            run_ms: vec![0; HISTOGRAM_BOUNDS_MS.len() + 1],
            run_ms_sum: 0,
            wait_ms: vec![0; HISTOGRAM_BOUNDS_MS.len() + 1],
            wait_ms_sum: 0,
        }
    }

    /// The index of the histogram bucket that counts `ms`.
    pub fn bucket_of(ms: u64) -> usize {
        HISTOGRAM_BOUNDS_MS
            .iter()
            .position(|&bound| ms <= bound)
            .unwrap_or(HISTOGRAM_BOUNDS_MS.len())
    }

    /// Adds `other`'s counts to this bucket (same minute, queue and task expected;
    /// not checked).
    pub fn add(&mut self, other: &StatsBucket) {
        self.processed += other.processed;
        self.failed += other.failed;
        self.retried += other.retried;
        self.dead += other.dead;
        self.run_ms_sum += other.run_ms_sum;
        self.wait_ms_sum += other.wait_ms_sum;
        add_counts(&mut self.run_ms, &other.run_ms);
        add_counts(&mut self.wait_ms, &other.wait_ms);
    }
}

fn add_counts(to: &mut Vec<u64>, from: &[u64]) {
    if to.len() < from.len() {
        to.resize(from.len(), 0);
    }
    for (t, f) in to.iter_mut().zip(from) {
        *t += f;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bounds() {
        assert_eq!(StatsBucket::bucket_of(0), 0);
        assert_eq!(StatsBucket::bucket_of(1), 0);
        assert_eq!(StatsBucket::bucket_of(2), 1);
        assert_eq!(
            StatsBucket::bucket_of(60_000),
            HISTOGRAM_BOUNDS_MS.len() - 1
        );
        assert_eq!(StatsBucket::bucket_of(60_001), HISTOGRAM_BOUNDS_MS.len());
    }

    #[test]
    fn task_list_names_round_trip() {
        for list in TaskList::ALL {
            assert_eq!(list.as_str().parse::<TaskList>(), Ok(list));
        }
        assert!("nope".parse::<TaskList>().unwrap_err().contains("pending"));
    }
}
