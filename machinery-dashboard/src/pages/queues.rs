//! The Queues page: each queue's counts, with pause, resume and purge.

use axum::extract::State;
use machinery_core::inspect::QueueInfo;
use maud::{Markup, html};
use serde::Serialize;

use crate::Shared;
use crate::error::PageResult;
use crate::layout::{Ctx, Nav, count, page as shell, segment};

/// What the page shows (and `/api/queues` returns).
#[derive(Debug, Serialize)]
pub(crate) struct Data {
    /// Every queue the broker knows, by name.
    pub(crate) queues: Vec<QueueInfo>,
}

pub(crate) async fn data(shared: &Shared) -> PageResult<Data> {
    Ok(Data {
        queues: shared.inspector.queues().await?,
    })
}

/// The listing of `queue`'s `list` on the Tasks page.
pub(crate) fn listing(ctx: &Ctx, queue: &str, list: &str) -> String {
    ctx.link("/tasks", &[("queue", queue), ("list", list)])
}

/// A purge form: the queue's name must be typed into `confirm` (the server checks it;
/// with scripts on, the browser also asks).
fn purge_form(ctx: &Ctx, queue: &str, what: &str, label: &str, question: &str) -> Markup {
    html! {
        form.action.purge method="post"
            action=(ctx.href(&format!("/queues/{}/purge", segment(queue))))
            data-confirm=(question) {
            input type="hidden" name="csrf" value=(ctx.csrf);
            input type="hidden" name="back" value="/queues";
            input type="hidden" name="what" value=(what);
            input type="text" name="confirm" required placeholder=(queue)
                aria-label={ "type " (queue) " to confirm" } size="14" autocomplete="off";
            button type="submit" class="danger" { (label) }
        }
    }
}

fn render(ctx: &Ctx, data: &Data) -> Markup {
    html! {
        @if data.queues.is_empty() {
            p.muted { "No queues yet: a queue appears when a task is sent to it." }
        } @else {
            table.queues {
                thead { tr {
                    th { "queue" } th.num { "ready" } th.num { "delayed" }
                    th.num { "in flight" } th.num { "dead" } th { "state" } th { "actions" }
                } }
                tbody {
                    @for q in &data.queues {
                        tr id={ "q-" (segment(&q.name)) } {
                            td { a href=(listing(ctx, &q.name, "pending")) { (q.name) } }
                            td.num { a href=(listing(ctx, &q.name, "pending")) { (count(q.ready)) } }
                            td.num { a href=(listing(ctx, &q.name, "delayed")) { (count(q.delayed)) } }
                            td.num { a href=(listing(ctx, &q.name, "in_flight")) { (count(q.in_flight)) } }
                            td.num { a href=(listing(ctx, &q.name, "dead")) { (count(q.dead)) } }
                            td {
                                @if q.paused { span.state.retry { "paused" } }
                                @else { span.state.success { "running" } }
                            }
                            td {
                                @let base = format!("/queues/{}", segment(&q.name));
                                @if q.paused {
                                    (ctx.action(&format!("{base}/resume"), "Resume", &[("back", "/queues")], "primary", None))
                                } @else {
                                    (ctx.action(&format!("{base}/pause"), "Pause", &[("back", "/queues")], "", None))
                                }
                                (purge_form(ctx, &q.name, "ready", "Purge ready",
                                    &format!("Delete every ready and delayed task of {}? This cannot be undone.", q.name)))
                                @if q.dead > 0 {
                                    (purge_form(ctx, &q.name, "dead", "Purge dead",
                                        &format!("Delete every dead letter of {}? This cannot be undone.", q.name)))
                                }
                            }
                        }
                    }
                }
            }
            p.muted {
                "Pausing a queue stops workers fetching from it; tasks running go on. Purging \
                 deletes ready and delayed tasks (or the dead letters), not those in flight: \
                 type the queue's name to confirm."
            }
        }
    }
}

pub(crate) async fn page(State(shared): State<Shared>, ctx: Ctx) -> PageResult {
    let data = data(&shared).await?;
    Ok(shell(&ctx, Nav::Queues, "Queues", render(&ctx, &data)))
}
