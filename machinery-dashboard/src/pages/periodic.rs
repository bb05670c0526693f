//! The Periodic page: the periodic entries with their schedules and runs, with pause,
//! resume and remove.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use machinery_core::Error;
use machinery_core::periodic::PeriodicEntry;
use maud::{Markup, html};
use serde::Serialize;
use uuid::Uuid;

use crate::Shared;
use crate::error::PageResult;
use crate::layout::segment;
use crate::layout::{Ctx, Nav, page as shell, time_opt};

/// What the page shows (and `/api/periodic` returns).
#[derive(Debug, Serialize)]
pub(crate) struct Data {
    /// Why there are no entries to show when the deployment has no periodic store
    /// (its result backend's engine provides none); `None` when it has one.
    pub(crate) unavailable: Option<String>,
    /// Every entry, by name.
    pub(crate) entries: Vec<Entry>,
}

/// A periodic entry.
#[derive(Debug, Serialize)]
pub(crate) struct Entry {
    pub(crate) name: String,
    /// The schedule's spec: a cron expression or `every …`.
    pub(crate) spec: String,
    pub(crate) timezone: String,
    pub(crate) paused: bool,
    /// The next tick (ms since the epoch), as last computed by a scheduler.
    pub(crate) next_run: Option<u64>,
    /// The scheduled instant of the last tick published (ms).
    pub(crate) last_run: Option<u64>,
    /// The last tick's task.
    pub(crate) last_task: Option<Uuid>,
}

fn ms(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<PeriodicEntry> for Entry {
    fn from(e: PeriodicEntry) -> Self {
        Entry {
            next_run: ms(e.next_run),
            last_run: ms(e.last_run),
            last_task: e.last_task,
            name: e.name,
            spec: e.spec,
            timezone: e.timezone,
            paused: e.paused,
        }
    }
}

pub(crate) async fn data(shared: &Shared) -> PageResult<Data> {
    match shared.inspector.periodic_entries().await {
        Ok(entries) => Ok(Data {
            unavailable: None,
            entries: entries.into_iter().map(Entry::from).collect(),
        }),
        // No periodic store for this deployment's engine: a fact to show, not a failure.
        Err(e @ (Error::UnsupportedUrl { .. } | Error::Unsupported { .. })) => Ok(Data {
            unavailable: Some(e.to_string()),
            entries: Vec::new(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn render(ctx: &Ctx, data: &Data) -> Markup {
    html! {
        @if let Some(why) = &data.unavailable {
            p.warn { "This deployment has no periodic store, so there are no periodic entries to show: " (why) }
        } @else if data.entries.is_empty() {
            p.muted { "No periodic entries: a scheduler registers its entries when it starts." }
        } @else {
            table.periodic {
                thead { tr {
                    th { "entry" } th { "schedule" } th { "time zone" } th { "state" }
                    th { "next run (UTC)" } th { "last run (UTC)" } th { "last task" }
                    th { "actions" }
                } }
                tbody {
                    @for e in &data.entries {
                        @let base = format!("/periodic/{}", segment(&e.name));
                        tr id={ "p-" (segment(&e.name)) } {
                            td { strong { (e.name) } }
                            td { code { (e.spec) } }
                            td { (e.timezone) }
                            td {
                                @if e.paused { span.state.retry { "paused" } }
                                @else { span.state.success { "active" } }
                            }
                            td { @if e.paused { span.muted { "paused" } } @else { (time_opt(e.next_run)) } }
                            td { (time_opt(e.last_run)) }
                            td.mono {
                                @if let Some(uuid) = e.last_task {
                                    a.task href=(ctx.href(&format!("/tasks/{uuid}"))) { (uuid) }
                                } @else { "—" }
                            }
                            td {
                                @if e.paused {
                                    (ctx.action(&format!("{base}/resume"), "Resume", &[("back", "/periodic")], "primary", None))
                                } @else {
                                    (ctx.action(&format!("{base}/pause"), "Pause", &[("back", "/periodic")], "", None))
                                }
                                (ctx.action(&format!("{base}/remove"), "Remove", &[("back", "/periodic")], "danger",
                                    Some(&format!("Remove periodic entry {}? A scheduler that has it in its code registers it again when it starts.", e.name))))
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn page(State(shared): State<Shared>, ctx: Ctx) -> PageResult {
    let data = data(&shared).await?;
    Ok(shell(&ctx, Nav::Periodic, "Periodic", render(&ctx, &data)))
}
