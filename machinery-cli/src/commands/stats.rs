//! `machinery stats`.

use machinery_core::Server;
use machinery_core::inspect::{StatsBucket, StatsSummary, StatsTotals};
use serde::Serialize;

use crate::args::StatsArgs;
use crate::error::Result;
use crate::output::{Out, duration_ms, millis_f, now_ms, table, timestamp};

/// `since`, at least one minute and at most the statistics window.
fn clamp_window(
    since: std::time::Duration,
    stats_window: std::time::Duration,
) -> std::time::Duration {
    let minute = std::time::Duration::from_secs(60);
    since.min(stats_window.max(minute)).max(minute)
}

/// The JSON document: the summary and the buckets it adds up.
#[derive(Serialize)]
struct Report<'a> {
    /// Start of the window (ms since the Unix epoch).
    since_ms: u64,
    queue: Option<&'a str>,
    summary: &'a StatsSummary,
    buckets: &'a [StatsBucket],
}

pub async fn run(server: &Server, args: StatsArgs, out: &mut Out) -> Result {
    let queue = args.queue.as_deref();
    // Statistics are kept by the minute, for `stats_window`: a shorter window would
    // divide a whole minute's counts by less than a minute, a longer one by time
    // nothing is kept for.
    let window = clamp_window(args.since, server.config().stats_window);
    let buckets = server.inspect()?.stats(window, queue).await?;
    let summary = StatsSummary::of(&buckets, window);
    let since_ms = now_ms().saturating_sub(summary.window_ms);
    if out.json {
        return Ok(out.json(&Report {
            since_ms,
            queue,
            summary: &summary,
            buckets: &buckets,
        })?);
    }
    out.line(format!(
        "last {} (since {}){}",
        duration_ms(summary.window_ms),
        timestamp(since_ms),
        queue.map(|q| format!(", queue {q}")).unwrap_or_default()
    ))?;
    if summary.tasks.is_empty() {
        return Ok(out.line("no task ran in that window")?);
    }
    let mut t = table(
        &[
            "QUEUE",
            "TASK",
            "PROCESSED",
            "FAILED",
            "RETRIED",
            "DEAD",
            "PER MIN",
            "FAIL %",
            "RUN P50",
            "RUN P95",
            "WAIT P50",
            "WAIT P95",
        ],
        &[2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    );
    let row = |t: &mut comfy_table::Table, totals: &StatsTotals, queue: &str, task: &str| {
        t.add_row([
            queue.to_owned(),
            task.to_owned(),
            totals.processed.to_string(),
            totals.failed.to_string(),
            totals.retried.to_string(),
            totals.dead.to_string(),
            format!("{:.1}", totals.per_minute),
            format!("{:.1}", totals.failure_ratio * 100.0),
            millis_f(totals.run_p50_ms),
            millis_f(totals.run_p95_ms),
            millis_f(totals.wait_p50_ms),
            millis_f(totals.wait_p95_ms),
        ]);
    };
    for totals in &summary.tasks {
        row(
            &mut t,
            totals,
            totals.queue.as_deref().unwrap_or_default(),
            totals.task.as_deref().unwrap_or_default(),
        );
    }
    if summary.queues.len() > 1 || summary.tasks.len() > 1 {
        for totals in &summary.queues {
            row(
                &mut t,
                totals,
                totals.queue.as_deref().unwrap_or_default(),
                "(all)",
            );
        }
        row(&mut t, &summary.total, "(all)", "(all)");
    }
    Ok(out.table(&t)?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::clamp_window;

    #[test]
    fn the_window_is_clamped_to_what_is_kept() {
        let day = Duration::from_secs(86_400);
        assert_eq!(
            clamp_window(Duration::from_millis(1), day),
            Duration::from_secs(60)
        );
        assert_eq!(
            clamp_window(Duration::from_secs(3_600), day),
            Duration::from_secs(3_600)
        );
        assert_eq!(
            clamp_window(Duration::from_secs(100 * 365 * 86_400), day),
            day
        );
    }
}
