//! The Overview page: processed and failed per minute as a chart, totals over the
//! window, what is queued now, the queues, the workers alive and the recent failures.
//!
//! Its cost does not grow with queue length: queue counts, the worker registry, the
//! statistics of the window and the first page of each queue's `failed` and `dead`
//! listings, nothing more.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;

use crate::error::Query;
use machinery_core::Error;
use machinery_core::RawSignature;
use machinery_core::inspect::{QueueInfo, TaskList, WorkerInfo};
use maud::html;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Shared;
use crate::chart::{self, MinutePoint};
use crate::error::{PageError, PageResult};
use crate::layout::segment;
use crate::layout::{Ctx, Nav, ago, count, page as shell, time_opt};
use crate::pages::queues::listing;

/// How many recent failures the page lists.
const FAILURES: usize = 10;

/// The window asked for: `?hours=N`, 1 to 24, default 3.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Window {
    /// Left as text so that a wrong value gets a sentence, not a parser's message.
    hours: Option<String>,
}

impl Window {
    /// The hours of the window.
    ///
    /// # Errors
    /// A 400 for anything but a whole number from 1 to 24.
    pub(crate) fn hours(&self) -> PageResult<u32> {
        match self.hours.as_deref().map(str::trim) {
            None | Some("") => Ok(3),
            Some(text) => match text.parse::<u32>() {
                Ok(h @ 1..=24) => Ok(h),
                _ => Err(PageError::bad_request(format!(
                    "cannot show `hours={text}`: expected a whole number of hours from 1 to 24"
                ))),
            },
        }
    }
}

/// What the page shows (and `/api/overview` returns).
#[derive(Debug, Serialize)]
pub(crate) struct Data {
    /// The window, in hours.
    pub(crate) hours: u32,
    /// When the page was made (ms since the epoch).
    pub(crate) now: u64,
    /// Every minute of the window, oldest first, zeros included.
    pub(crate) minutes: Vec<MinutePoint>,
    /// Sums over the window.
    pub(crate) totals: Totals,
    /// What is queued now, over every queue.
    pub(crate) current: Current,
    /// Every queue with its counts.
    pub(crate) queues: Vec<QueueInfo>,
    /// The workers alive; `None` when the engine keeps no worker registry.
    pub(crate) workers: Option<Vec<WorkerSummary>>,
    /// The most recent failures and dead letters, newest first.
    pub(crate) failures: Vec<Failure>,
    /// What could not be read (and is left out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) warnings: Vec<String>,
}

/// Sums of the statistics over the window.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Totals {
    /// Task runs that ended, whatever the outcome.
    pub(crate) processed: u64,
    /// Runs that ended in FAILURE.
    pub(crate) failed: u64,
    /// Runs that ended in RETRY.
    pub(crate) retried: u64,
    /// Messages moved to the dead-letter queues.
    pub(crate) dead_lettered: u64,
}

/// Counts over every queue now.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Current {
    pub(crate) ready: u64,
    pub(crate) delayed: u64,
    pub(crate) in_flight: u64,
    pub(crate) dead: u64,
    /// Workers alive; `None` without a worker registry.
    pub(crate) workers: Option<usize>,
}

/// A worker as the overview lists it.
#[derive(Debug, Serialize)]
pub(crate) struct WorkerSummary {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) queues: Vec<String>,
    pub(crate) concurrency: usize,
    pub(crate) running: usize,
    pub(crate) heartbeat_at: u64,
}

impl From<&WorkerInfo> for WorkerSummary {
    fn from(w: &WorkerInfo) -> Self {
        WorkerSummary {
            id: w.id.clone(),
            name: w.name.clone(),
            host: w.host.clone(),
            queues: w.queues.clone(),
            concurrency: w.concurrency,
            running: w.running.len(),
            heartbeat_at: w.heartbeat_at,
        }
    }
}

/// A recent failure: a task that ended in FAILURE, or a dead letter.
#[derive(Debug, Serialize)]
pub(crate) struct Failure {
    pub(crate) uuid: Uuid,
    /// The task name; empty when neither its state nor its message says.
    pub(crate) name: String,
    pub(crate) queue: String,
    /// `failed` or `dead`: the listing it comes from.
    pub(crate) list: &'static str,
    /// The error of a failure, or why a dead letter was dead-lettered.
    pub(crate) reason: Option<String>,
    /// When it failed or was last updated (ms); `None` when unknown.
    pub(crate) at: Option<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `Ok(None)` for what the engine lacks, so that the rest is still shown.
fn optional<T>(r: machinery_core::Result<T>) -> PageResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Unsupported { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// As [`optional`], but a part that cannot be read is left out with a warning, so
/// that one bad record (a value that does not decode) does not take the whole overview
/// down. An unreachable broker still fails the page: the queue counts, read without
/// this, fail with it.
fn tolerate<T>(
    r: machinery_core::Result<T>,
    warnings: &mut Vec<String>,
    what: &str,
) -> PageResult<Option<T>> {
    match r {
        Err(e) if !matches!(e, Error::Unsupported { .. }) => {
            warnings.push(format!("{what} could not be read: {e}"));
            Ok(None)
        }
        r => optional(r),
    }
}

/// Every minute from `from` to `to` (inclusive) with the buckets' counts summed per
/// minute; minutes without a bucket are zeros.
pub(crate) fn per_minute(
    buckets: &[machinery_core::inspect::StatsBucket],
    from: u64,
    to: u64,
) -> (Vec<MinutePoint>, Totals) {
    let mut minutes: Vec<MinutePoint> = (from..=to)
        .map(|minute| MinutePoint {
            minute,
            processed: 0,
            failed: 0,
        })
        .collect();
    let mut totals = Totals::default();
    for b in buckets {
        if b.minute < from || b.minute > to {
            continue;
        }
        let Ok(i) = usize::try_from(b.minute - from) else {
            continue;
        };
        if let Some(point) = minutes.get_mut(i) {
            point.processed += b.processed;
            point.failed += b.failed;
        }
        totals.processed += b.processed;
        totals.failed += b.failed;
        totals.retried += b.retried;
        totals.dead_lettered += b.dead;
    }
    (minutes, totals)
}

pub(crate) async fn data(shared: &Shared, hours: u32) -> PageResult<Data> {
    let inspector = &shared.inspector;
    let now = now_ms();
    let to = now / 60_000;
    let from = to.saturating_sub(u64::from(hours) * 60 - 1);
    let since = Duration::from_secs(u64::from(hours) * 3600);
    let queues = inspector.queues().await?;
    let mut warnings = Vec::new();
    let buckets = tolerate(
        inspector.stats(since, None).await,
        &mut warnings,
        "the statistics",
    )?
    .unwrap_or_default();
    let (minutes, totals) = per_minute(&buckets, from, to);

    let workers = optional(inspector.workers().await)?;
    let mut current = Current {
        workers: workers.as_ref().map(Vec::len),
        ..Current::default()
    };
    for q in &queues {
        current.ready += q.ready;
        current.delayed += q.delayed;
        current.in_flight += q.in_flight;
        current.dead += q.dead;
    }
    let failures = recent_failures(shared, &queues, &mut warnings).await?;
    Ok(Data {
        hours,
        now,
        minutes,
        totals,
        current,
        queues,
        workers: workers.map(|ws| ws.iter().map(WorkerSummary::from).collect()),
        failures,
        warnings,
    })
}

/// The up to [`FAILURES`] most recent failures and dead letters: the first page of
/// each queue's `failed` and `dead` listings, named from the task's stored state (or
/// its message, for a dead letter whose state is gone).
async fn recent_failures(
    shared: &Shared,
    queues: &[QueueInfo],
    warnings: &mut Vec<String>,
) -> PageResult<Vec<Failure>> {
    let inspector = &shared.inspector;
    let backend = inspector.server().backend();
    let mut failed = Vec::new();
    let mut dead = Vec::new();
    for q in queues {
        let what = |list| format!("the {list} tasks of queue {}", q.name);
        if let Some(page) = tolerate(
            inspector
                .tasks(&q.name, TaskList::Failed, None, FAILURES)
                .await,
            warnings,
            &what("failed"),
        )? {
            failed.extend(page.items);
        }
        if q.dead > 0
            && let Some(page) = tolerate(
                inspector
                    .tasks(&q.name, TaskList::Dead, None, FAILURES)
                    .await,
                warnings,
                &what("dead"),
            )?
        {
            dead.extend(page.items);
        }
    }
    // Failures carry their time: keep the newest before reading any state.
    failed.sort_by_key(|t| std::cmp::Reverse(t.failed_at.unwrap_or(0)));
    failed.truncate(FAILURES);
    let mut out = Vec::with_capacity(failed.len() + dead.len());
    for t in failed {
        let Some(uuid) = t.uuid else { continue };
        // A state that cannot be read leaves the row with what the listing knows.
        let state = backend.load(&t.queue, uuid).await.ok().flatten();
        out.push(Failure {
            uuid,
            name: state.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
            reason: state.as_ref().and_then(|s| s.error.clone()),
            at: t.failed_at.or(state.as_ref().map(|s| s.updated_at)),
            queue: t.queue,
            list: TaskList::Failed.as_str(),
        });
    }
    for t in dead {
        let message = RawSignature::decode(&t.payload).ok();
        let Some(uuid) = t.uuid.or(message.as_ref().map(|m| m.uuid)) else {
            continue;
        };
        let state = backend.load(&t.queue, uuid).await.ok().flatten();
        out.push(Failure {
            uuid,
            name: state
                .as_ref()
                .map(|s| s.name.clone())
                .or(message.map(|m| m.name))
                .unwrap_or_default(),
            reason: t.reason.as_ref().map(ToString::to_string),
            at: state.map(|s| s.updated_at).filter(|&at| at != 0),
            queue: t.queue,
            list: TaskList::Dead.as_str(),
        });
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.at.unwrap_or(0)));
    out.truncate(FAILURES);
    Ok(out)
}

pub(crate) async fn page(
    State(shared): State<Shared>,
    ctx: Ctx,
    Query(window): Query<Window>,
) -> PageResult {
    let data = data(&shared, window.hours()?).await?;
    Ok(shell(&ctx, Nav::Overview, "Overview", render(&ctx, &data)))
}

/// At most 300 characters of `text`: a long error belongs on the task's page.
fn short(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn card(label: &str, value: u64) -> maud::Markup {
    html! {
        div.card {
            div.value { (count(value)) }
            div.label { (label) }
        }
    }
}

fn render(ctx: &Ctx, data: &Data) -> maud::Markup {
    let tasks_link = |queue: &str, list: &str| listing(ctx, queue, list);
    html! {
        @for warning in &data.warnings {
            p.warn { (warning) }
        }
        section #activity {
            h2 { "Last " (data.hours) (if data.hours == 1 { " hour" } else { " hours" }) }
            nav.tabs {
                @for h in [1u32, 3, 6, 12, 24] {
                    a href=(ctx.href(&format!("/?hours={h}")))
                        class=[(h == data.hours).then_some("active")] { (h) "h" }
                }
            }
            div.cards {
                (card("processed", data.totals.processed))
                (card("failed", data.totals.failed))
                (card("retried", data.totals.retried))
                (card("dead-lettered", data.totals.dead_lettered))
            }
            (chart::per_minute(&data.minutes))
            p.muted { "Per minute, UTC. " span.legend-processed { "Processed" } ", "
                span.legend-failed { "failed" } "." }
        }
        section #now {
            h2 { "Now" }
            div.cards {
                (card("ready", data.current.ready))
                (card("delayed", data.current.delayed))
                (card("in flight", data.current.in_flight))
                (card("dead", data.current.dead))
                @if let Some(n) = data.current.workers {
                    (card("workers alive", n as u64))
                }
            }
        }
        section #queues {
            h2 { a href=(ctx.href("/queues")) { "Queues" } }
            @if data.queues.is_empty() {
                p.muted { "No queues yet." }
            } @else {
                table {
                    thead { tr {
                        th { "queue" } th.num { "ready" } th.num { "delayed" }
                        th.num { "in flight" } th.num { "dead" } th { "" }
                    } }
                    tbody {
                        @for q in &data.queues {
                            tr {
                                td { a href=(tasks_link(&q.name, "pending")) { (q.name) } }
                                td.num { (count(q.ready)) }
                                td.num { (count(q.delayed)) }
                                td.num { (count(q.in_flight)) }
                                td.num { (count(q.dead)) }
                                td { @if q.paused { span.state.retry { "paused" } } }
                            }
                        }
                    }
                }
            }
        }
        section #workers {
            h2 { a href=(ctx.href("/workers")) { "Workers alive" } }
            @match &data.workers {
                None => p.muted { "The " (ctx.engine) " engine keeps no worker registry." },
                Some(ws) if ws.is_empty() => p.muted { "No workers alive." },
                Some(ws) => table {
                    thead { tr {
                        th { "name" } th { "host" } th { "queues" }
                        th.num { "running" } th { "last heartbeat" }
                    } }
                    tbody {
                        @for w in ws {
                            tr {
                                td { a href=(ctx.href(&format!("/workers#w-{}", segment(&w.id)))) { (w.name) } }
                                td { (w.host) }
                                td { (w.queues.join(", ")) }
                                td.num { (w.running) " / " (w.concurrency) }
                                td { (ago(w.heartbeat_at, data.now)) }
                            }
                        }
                    }
                },
            }
        }
        section #failures {
            h2 { "Recent failures" }
            @if data.failures.is_empty() {
                p.muted { "No recent failures." }
            } @else {
                table {
                    thead { tr {
                        th { "task" } th { "queue" } th { "state" } th { "error or reason" }
                        th { "when" }
                    } }
                    tbody {
                        @for f in &data.failures {
                            tr {
                                td {
                                    a.task href=(ctx.href(&format!("/tasks/{}", f.uuid))) {
                                        @if f.name.is_empty() { (f.uuid) } @else { (f.name) }
                                    }
                                }
                                td { a href=(tasks_link(&f.queue, f.list)) { (f.queue) } }
                                td {
                                    @if f.list == "dead" {
                                        span.state.failure { "DEAD" }
                                    } @else {
                                        span.state.failure { "FAILURE" }
                                    }
                                }
                                td.mono { (short(f.reason.as_deref().unwrap_or(""))) }
                                td { (time_opt(f.at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}
