//! The Workflow page: a chain, group or chord as its parts, left to right, each with
//! its state. A group shows its members counted per state and at most
//! [`WORKFLOW_MEMBERS_SHOWN`] member boxes, whatever its size.

use axum::extract::{Path, State};

use crate::error::Query;
use machinery_core::State as TaskState;
use machinery_core::inspect::{
    WORKFLOW_MEMBERS_SHOWN, WorkflowGroup, WorkflowInfo, WorkflowStep, WorkflowTask,
};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Shared;
use crate::error::{PageError, PageResult};
use crate::layout::{Ctx, Nav, count, page as shell, state_badge};

/// What the page shows (and `/api/workflows/{uuid}` returns): the workflow's parts and
/// their states.
#[derive(Debug, Serialize)]
pub(crate) struct Data {
    #[serde(flatten)]
    pub(crate) workflow: WorkflowInfo,
}

/// `?from=<uuid>`: the part the visitor came from, outlined.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FromQuery {
    from: Option<String>,
}

pub(crate) async fn data(shared: &Shared, uuid: &str) -> PageResult<Data> {
    let id: Uuid = uuid
        .parse()
        .map_err(|_| PageError::bad_request(format!("`{uuid}` is not a UUID.")))?;
    match shared.inspector.workflow(id).await? {
        Some(workflow) => Ok(Data { workflow }),
        None => Err(PageError::not_found(format!(
            "No workflow is known by {id}: it is neither a workflow nor a part of one (a \
             task sent on its own has none), or its record expired with the results."
        ))),
    }
}

pub(crate) async fn page(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(uuid): Path<String>,
    Query(query): Query<FromQuery>,
) -> PageResult {
    let data = data(&shared, &uuid).await?;
    // The part asked for is outlined: `?from=`, or the UUID in the path when it is a
    // part rather than the workflow id.
    let current = query
        .from
        .and_then(|f| f.parse::<Uuid>().ok())
        .or_else(|| uuid.parse().ok());
    let wf = &data.workflow;
    let body = html! {
        p.muted {
            (wf.kind.as_str()) " " code { (wf.id) } " · "
            (count(wf.steps.len() as u64)) @if wf.steps.len() == 1 { " step" } @else { " steps" }
        }
        div.workflow {
            @for (i, step) in wf.steps.iter().enumerate() {
                @if i > 0 { span.arrow aria-hidden="true" { "→" } }
                @match step {
                    WorkflowStep::Task(t) => (task_part(&ctx, t, current, "part")),
                    WorkflowStep::Group(g) => (group_part(&ctx, g, current)),
                    _ => {},
                }
            }
        }
    };
    Ok(shell(&ctx, Nav::Workflows, "Workflow", body))
}

/// A task as a box linking to its page, with its state.
fn task_part(ctx: &Ctx, t: &WorkflowTask, current: Option<Uuid>, class: &str) -> Markup {
    let class = if current == Some(t.uuid) {
        format!("{class} current")
    } else {
        class.to_owned()
    };
    html! {
        div class=(class) data-uuid=(t.uuid) {
            a href=(ctx.href(&format!("/tasks/{}", t.uuid))) { strong { (t.name) } }
            " " (state_badge(t.state))
            div.muted.mono { (short(t.uuid)) " · " (t.queue) }
        }
    }
}

/// A group or chord: counts per state as a stacked bar and numbers, the first members,
/// then the callback.
fn group_part(ctx: &Ctx, g: &WorkflowGroup, current: Option<Uuid>) -> Markup {
    let hidden = g.count.saturating_sub(g.members.len());
    let outlined = current == Some(g.group)
        || g.members
            .iter()
            .flat_map(|m| &m.tasks)
            .any(|t| Some(t.uuid) == current);
    html! {
        div class=(if outlined { "part group current" } else { "part group" }) data-uuid=(g.group) {
            strong { @if g.callback.is_some() { "chord" } @else { "group" } }
            " of " (count(g.count as u64)) " "
            span.muted.mono { (short(g.group)) }
            (bar(g))
            ul.counts {
                @for c in &g.states {
                    li { (state_badge(c.state)) " " (count(c.count as u64)) }
                }
            }
            div.members {
                @for m in &g.members {
                    div class=(member_class(m.tasks.iter().any(|t| Some(t.uuid) == current))) {
                        span.muted { "#" (m.index) " " }
                        @for (i, t) in m.tasks.iter().enumerate() {
                            @if i > 0 { " → " }
                            a href=(ctx.href(&format!("/tasks/{}", t.uuid))) { (t.name) }
                            " " (state_badge(t.state))
                        }
                    }
                }
                @if hidden > 0 {
                    p.muted {
                        "… and " (count(hidden as u64)) " more (the first "
                        (WORKFLOW_MEMBERS_SHOWN) " are shown)"
                    }
                }
            }
        }
        @if let Some(cb) = &g.callback {
            span.arrow aria-hidden="true" { "→" }
            (task_part(ctx, cb, current, "part callback"))
        }
    }
}

fn member_class(current: bool) -> &'static str {
    if current { "member current" } else { "member" }
}

/// The members per state as one stacked bar (SVG, so it needs no inline style).
fn bar(g: &WorkflowGroup) -> Markup {
    let total = g.states.iter().map(|c| c.count).sum::<usize>().max(1) as f64;
    let mut x = 0.0;
    let segments: Vec<(f64, f64, _)> = g
        .states
        .iter()
        .map(|c| {
            let w = c.count as f64 * 1000.0 / total;
            let at = x;
            x += w;
            (at, w, c)
        })
        .collect();
    html! {
        svg.bar width="100%" height="10" viewBox="0 0 1000 10" preserveAspectRatio="none"
            role="img" aria-label="members per state" {
            @for (at, w, c) in segments {
                rect x=(format!("{at:.1}")) y="0" width=(format!("{w:.1}")) height="10"
                    fill=(colour(c.state)) {
                    title { (c.state.map_or("unknown", TaskState::as_str)) ": " (c.count) }
                }
            }
        }
    }
}

/// The state's colour, as the badges have it in the stylesheet.
fn colour(state: Option<TaskState>) -> &'static str {
    match state {
        Some(TaskState::Success) => "#1f8a4c",
        Some(TaskState::Failure | TaskState::Revoked) => "#c6303e",
        Some(TaskState::Started | TaskState::Received) => "#2b6cb0",
        Some(TaskState::Retry) => "#b7791f",
        Some(TaskState::Pending) => "#7b8491",
        _ => "#c4c8ce",
    }
}

/// The first 8 hex digits of a UUID, enough to tell parts apart at a glance.
fn short(uuid: Uuid) -> String {
    let mut s = uuid.simple().to_string();
    s.truncate(8);
    s
}
