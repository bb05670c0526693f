//! The Workers page: each worker alive, what it consumes and what it runs now.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use machinery_core::Error;
use machinery_core::inspect::WorkerInfo;
use maud::{Markup, html};
use serde::Serialize;
use uuid::Uuid;

use crate::Shared;
use crate::error::PageResult;
use crate::layout::segment;
use crate::layout::{Ctx, Nav, ago, count, duration, page as shell, time};
use crate::pages::queues::listing;

/// What the page shows (and `/api/workers` returns).
#[derive(Debug, Serialize)]
pub(crate) struct Data {
    /// When the page was made (ms since the epoch): running times count to it.
    pub(crate) now: u64,
    /// Whether the engine keeps a worker registry; without one no worker is listed.
    pub(crate) registry: bool,
    /// The workers alive, by name then id.
    pub(crate) workers: Vec<Worker>,
}

/// A worker alive, as its last heartbeat described it.
#[derive(Debug, Serialize)]
pub(crate) struct Worker {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) version: String,
    pub(crate) queues: Vec<String>,
    pub(crate) concurrency: usize,
    pub(crate) prefetch: usize,
    pub(crate) started_at: u64,
    pub(crate) heartbeat_at: u64,
    pub(crate) processed: u64,
    pub(crate) failed: u64,
    /// How many task names it can run (the Registered page lists them).
    pub(crate) registered: usize,
    /// The tasks it runs now, longest running first.
    pub(crate) running: Vec<Running>,
}

/// A task a worker runs now.
#[derive(Debug, Serialize)]
pub(crate) struct Running {
    pub(crate) uuid: Uuid,
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) started_at: u64,
    /// How long it has been running when the page was made (ms).
    pub(crate) running_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn worker(w: WorkerInfo, now: u64) -> Worker {
    let mut running: Vec<Running> = w
        .running
        .into_iter()
        .map(|r| Running {
            uuid: r.uuid,
            name: r.name,
            queue: r.queue,
            started_at: r.started_at,
            running_ms: now.saturating_sub(r.started_at),
        })
        .collect();
    running.sort_by_key(|r| r.started_at);
    Worker {
        id: w.id,
        name: w.name,
        host: w.host,
        pid: w.pid,
        version: w.version,
        queues: w.queues,
        concurrency: w.concurrency,
        prefetch: w.prefetch,
        started_at: w.started_at,
        heartbeat_at: w.heartbeat_at,
        processed: w.processed,
        failed: w.failed,
        registered: w.tasks.len(),
        running,
    }
}

pub(crate) async fn data(shared: &Shared) -> PageResult<Data> {
    let now = now_ms();
    let (registry, workers) = match shared.inspector.workers().await {
        Ok(ws) => (true, ws),
        Err(Error::Unsupported { .. }) => (false, Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(Data {
        now,
        registry,
        workers: workers.into_iter().map(|w| worker(w, now)).collect(),
    })
}

fn render(ctx: &Ctx, data: &Data) -> Markup {
    html! {
        @if !data.registry {
            p.warn { "The " (ctx.engine) " engine keeps no worker registry: workers cannot be listed." }
        } @else if data.workers.is_empty() {
            p.muted { "No workers alive. A worker appears here within a heartbeat of starting." }
        } @else {
            div.cards {
                div.card {
                    div.value { (data.workers.len()) }
                    div.label { "workers alive" }
                }
                div.card {
                    div.value { (data.workers.iter().map(|w| w.running.len()).sum::<usize>()) }
                    div.label { "tasks running" }
                }
                div.card {
                    div.value { (data.workers.iter().map(|w| w.concurrency).sum::<usize>()) }
                    div.label { "slots" }
                }
            }
            table.workers {
                thead { tr {
                    th { "worker" } th { "host · pid" } th { "queues" }
                    th.num { "concurrency / prefetch" } th { "version" } th { "started" }
                    th { "last heartbeat" } th.num { "processed" } th.num { "failed" }
                } }
                tbody {
                    @for w in &data.workers {
                        tr.worker id={ "w-" (segment(&w.id)) } {
                            td {
                                strong { (w.name) }
                                br;
                                span.mono.muted { (w.id) }
                            }
                            td { (w.host) " · " (w.pid) }
                            td {
                                @for (i, q) in w.queues.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    a href=(listing(ctx, q, "in_flight")) { (q) }
                                }
                            }
                            td.num { (w.concurrency) " / " (w.prefetch) }
                            td { (w.version) }
                            td { (time(w.started_at)) " UTC" }
                            td { (ago(w.heartbeat_at, data.now)) }
                            td.num { (count(w.processed)) }
                            td.num { (count(w.failed)) }
                        }
                        tr.running {
                            td colspan="9" {
                                @if w.running.is_empty() {
                                    span.muted { "Idle. " (w.registered) " task names registered." }
                                } @else {
                                    table.running {
                                        thead { tr {
                                            th { "running task" } th { "name" } th { "queue" }
                                            th { "started" } th.num { "running for" }
                                        } }
                                        tbody {
                                            @for r in &w.running {
                                                tr {
                                                    td.mono { a.task href=(ctx.href(&format!("/tasks/{}", r.uuid))) { (r.uuid) } }
                                                    td { (r.name) }
                                                    td { (r.queue) }
                                                    td { (time(r.started_at)) " UTC" }
                                                    td.num { (duration(r.running_ms)) }
                                                }
                                            }
                                        }
                                    }
                                }
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
    Ok(shell(&ctx, Nav::Workers, "Workers", render(&ctx, &data)))
}
