//! `machinery stats`.

use machinery_core::Server;
use machinery_core::inspect::{StatsBucket, StatsSummary, StatsTotals};
use serde::Serialize;

use crate::args::StatsArgs;
use crate::error::Result;
use crate::output::{Out, duration_ms, millis_f, now_ms, table, timestamp};

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
    let buckets = server.inspect()?.stats(args.since, queue).await?;
    let summary = StatsSummary::of(&buckets, args.since);
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
