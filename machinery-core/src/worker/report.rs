//! What a worker writes about itself to the broker, off the tasks' path: its registry
//! record every `worker_heartbeat`, and its statistics about once a second.
//!
//! Neither ever stops the worker or holds up a task: errors are logged (once when
//! they start, once when they end), and a broker that keeps neither (no admin plane,
//! or [`Error::Unsupported`]) turns them off quietly.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::{Broker, BrokerAdmin};
use crate::error::Error;
use crate::inspect::{RunningTask, WorkerInfo};

use super::observe::Observer;

/// How often statistics are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long the last write at shutdown (statistics, then removing the record) may take.
const LAST_WRITE: Duration = Duration::from_secs(5);

/// What the report loop needs.
pub(crate) struct Report {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) observer: Arc<Observer>,
    /// The record, as made at start; the loop fills in what changes.
    pub(crate) info: WorkerInfo,
    /// The tasks running now.
    pub(crate) running: Box<dyn Fn() -> Vec<RunningTask> + Send + Sync>,
    pub(crate) heartbeat: Duration,
    pub(crate) stats_window: Duration,
}

/// Whether a kind of write is on, and whether it is failing now (to log transitions
/// only).
struct Channel {
    what: &'static str,
    on: bool,
    failing: bool,
}

impl Channel {
    /// Logs the result of one write; a broker that does not support it turns the write
    /// off.
    fn result(&mut self, result: Result<(), Error>) {
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(what = self.what, "writing to the broker works again");
                }
                self.failing = false;
            }
            Err(Error::Unsupported { engine, .. }) => {
                tracing::debug!(
                    what = self.what,
                    engine,
                    "the broker does not keep it; turned off"
                );
                self.on = false;
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(what = self.what, error = %e, "could not write to the broker; will try again");
                }
                self.failing = true;
            }
        }
    }
}

/// Runs until `stop`, then writes the last statistics and removes the record.
pub(crate) async fn report_loop(mut report: Report, stop: CancellationToken) {
    let broker = report.broker.clone();
    let Some(admin) = broker.admin() else {
        tracing::debug!(
            engine = broker.engine(),
            "the broker has no admin plane: no worker registry record, no statistics"
        );
        if report.observer.stats_on() {
            report.observer.stats_off();
        }
        return;
    };
    let mut registry = Channel {
        what: "worker registry record",
        on: true,
        failing: false,
    };
    let mut stats = Channel {
        what: "statistics",
        on: report.observer.stats_on(),
        failing: false,
    };
    let mut beat = tokio::time::interval(report.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick(), if registry.on => {
                registry.result(register(admin, &mut report).await);
            }
            _ = flush.tick(), if stats.on => {
                stats.result(write_stats(admin, &report).await);
                if !stats.on {
                    report.observer.stats_off();
                }
            }
            () = stop.cancelled() => break,
        }
    }
    let last = async {
        if stats.on {
            stats.result(write_stats(admin, &report).await);
        }
        if registry.on
            && let Err(e) = admin.unregister_worker(&report.info.id).await
        {
            tracing::warn!(error = %e, "could not remove the worker registry record; it expires by itself");
        }
    };
    if tokio::time::timeout(LAST_WRITE, last).await.is_err() {
        tracing::warn!("the broker did not take the last statistics and registry update in time");
    }
}

/// Writes the record, with what changed since the last one.
async fn register(admin: &dyn BrokerAdmin, report: &mut Report) -> Result<(), Error> {
    let info = &mut report.info;
    info.heartbeat_at = crate::signature::now_ms();
    info.running = (report.running)();
    (info.processed, info.failed) = report.observer.processed_failed();
    admin
        .register_worker(info, report.heartbeat.saturating_mul(3))
        .await
}

/// Writes the statistics counted since the last write; hands them back when the
/// broker refuses them.
async fn write_stats(admin: &dyn BrokerAdmin, report: &Report) -> Result<(), Error> {
    let window = report.stats_window;
    let (buckets, failures) = report.observer.drain(window);
    if !buckets.is_empty()
        && let Err(e) = admin.record_stats(&buckets, window).await
    {
        report.observer.restore(buckets, failures, window);
        return Err(e);
    }
    if !failures.is_empty()
        && let Err(e) = admin.record_failures(&failures, window).await
    {
        report.observer.restore(Vec::new(), failures, window);
        return Err(e);
    }
    Ok(())
}
