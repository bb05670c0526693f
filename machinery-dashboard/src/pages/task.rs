//! The Task page: everything known about one task, and what can be done to it.

use axum::extract::{Path, State};
use machinery_core::inspect::{TaskInfo, TaskList};
use maud::{Markup, html};
use serde_json::Value;
use uuid::Uuid;

use crate::Shared;
use crate::error::{PageError, PageResult};
use crate::layout::{
    Ctx, Nav, TEXT_SHOWN, cut, duration, json_block, page as shell, state_badge, time_opt,
};

/// What the page shows (and `/api/tasks/{uuid}` returns): the task's
/// [`TaskInfo`].
pub(crate) type Data = TaskInfo;

pub(crate) async fn data(shared: &Shared, uuid: &str) -> PageResult<Data> {
    let id: Uuid = uuid
        .parse()
        .map_err(|_| PageError::bad_request(format!("`{uuid}` is not a task UUID")))?;
    shared.inspector.task(id).await?.ok_or_else(|| {
        PageError::not_found(format!(
            "no task {id} is known: no state is stored for it and no queue holds its message \
             (its state may have expired)"
        ))
    })
}

pub(crate) async fn page(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(uuid): Path<String>,
) -> PageResult {
    let info = data(&shared, &uuid).await?;
    let title = if info.name.is_empty() {
        format!("Task {}", info.uuid)
    } else {
        format!("Task {}", info.name)
    };
    // A finished task whose message is gone cannot change: no reloading.
    let mut ctx = ctx;
    if info.state.is_some_and(|s| s.is_terminal()) && info.location.is_none() {
        ctx.refresh = std::time::Duration::ZERO;
    }
    Ok(shell(&ctx, Nav::Tasks, &title, render(&ctx, &info)))
}

/// `(done, total)` of a progress value that reads as a fraction: a number in `0..=1`,
/// or an object with numeric `done`/`total`, `done`/`of` or `current`/`total`.
pub(crate) fn fraction(progress: &Value) -> Option<(f64, f64)> {
    if let Some(x) = progress.as_f64() {
        return (0.0..=1.0).contains(&x).then_some((x, 1.0));
    }
    let object = progress.as_object()?;
    let number = |key: &str| object.get(key).and_then(Value::as_f64);
    let (done, total) = [("done", "total"), ("done", "of"), ("current", "total")]
        .iter()
        .find_map(|(d, t)| number(d).zip(number(t)))?;
    (total > 0.0 && (0.0..=total).contains(&done)).then_some((done, total))
}

fn render(ctx: &Ctx, info: &TaskInfo) -> Markup {
    let t = &info.timings;
    html! {
        @if !info.warnings.is_empty() {
            div.warn {
                @for w in &info.warnings { p { (w) } }
            }
        }
        div.actions { (actions(ctx, info)) }
        dl.fields {
            dt { "UUID" } dd.mono { (info.uuid) }
            dt { "State" } dd { (state_badge(info.state)) }
            dt { "Name" } dd { code { (info.name) } }
            dt { "Queue" } dd {
                a href=(ctx.href(&queue_link(&info.queue))) { (info.queue) }
            }
            @if let Some(schema) = &info.schema {
                dt { "Schema" } dd { code { (schema) } }
            }
            dt { "Sent" } dd { (time_opt(t.sent_at)) }
            dt { "Started" } dd { (time_opt(t.started_at)) }
            dt { "Finished" } dd { (time_opt(t.finished_at)) }
            dt { "Updated" } dd { (time_opt(t.updated_at)) }
            dt { "Runtime" } dd { (t.runtime_ms.map_or_else(|| "—".to_owned(), duration)) }
            dt { "Retried" } dd { (info.retried) }
            dt { "Delivery" } dd { (info.delivery) }
            dt { "Worker" } dd.mono {
                @if let Some(w) = &info.worker {
                    a href=(ctx.href("/workers")) { (w) }
                } @else { "—" }
            }
            @if let Some(group) = info.group {
                dt { "Group" } dd.mono { (group) }
            }
            @if let Some(workflow) = info.workflow {
                dt { "Workflow" } dd.mono {
                    a.workflow href=(ctx.href(&format!("/workflows/{workflow}?from={}", info.uuid))) {
                        "Workflow " (workflow)
                    }
                }
            }
        }
        @if let Some(l) = &info.location {
            h2 { "In the broker" }
            dl.fields.location {
                dt { "List" } dd {
                    a href=(ctx.href(&format!("{}&list={}", queue_link(&l.queue), l.list.as_str()))) {
                        (l.list.as_str())
                    }
                }
                dt { "Queue" } dd { (l.queue) }
                @if let Some(eta) = l.eta { dt { "ETA" } dd { (time_opt(Some(eta))) } }
                @if let Some(lease) = l.lease_deadline {
                    dt { "Lease until" } dd { (time_opt(Some(lease))) }
                }
                dt title="deliveries that ended without being settled (a worker died or lost its lease)" { "Lost deliveries" } dd { (l.deliveries) }
                @if let Some(reason) = &l.reason {
                    dt { "Dead-letter reason" } dd.error { (cut(&reason.to_string(), TEXT_SHOWN)) }
                }
            }
        }
        @if let Some(error) = &info.error {
            h2 { "Error" }
            pre.error { (cut(error, TEXT_SHOWN)) }
        }
        @if let Some(progress) = &info.progress {
            h2 { "Progress" }
            @if let Some((done, total)) = fraction(progress) {
                progress value=(done) max=(total) { (format!("{:.0}%", done / total * 100.0)) }
            }
            (json_block(progress))
        }
        h2 { "Arguments" }
        @match &info.args {
            Some(args) => { (json_block(args)) }
            None => { p.muted { "Not known: the message is gone and the state keeps no arguments." } }
        }
        @if let Some(result) = &info.result {
            h2 { "Result" }
            (json_block(result))
        }
        @if !info.headers.is_empty() {
            h2 { "Headers" }
            table.headers {
                thead { tr { th { "Header" } th { "Value" } } }
                tbody {
                    @for (k, v) in &info.headers {
                        tr { td { code { (cut(k, TEXT_SHOWN)) } } td { code { (cut(v, TEXT_SHOWN)) } } }
                    }
                }
            }
        }
    }
}

fn queue_link(queue: &str) -> String {
    let query = serde_urlencoded::to_string([("queue", queue)]).unwrap_or_default();
    format!("/tasks?{query}")
}

/// The buttons the task offers, by where it is: a dead letter is requeued or deleted, a
/// pending or delayed task deleted or cancelled, a running one cancelled; a finished
/// one offers none.
fn actions(ctx: &Ctx, info: &TaskInfo) -> Markup {
    let uuid = info.uuid;
    let here = format!("/tasks/{uuid}");
    let queue = info
        .location
        .as_ref()
        .map_or(info.queue.as_str(), |l| l.queue.as_str());
    let listing = |list: TaskList| {
        let query = serde_urlencoded::to_string([("queue", queue), ("list", list.as_str())])
            .unwrap_or_default();
        format!("/tasks?{query}")
    };
    let path = |what: &str| format!("/tasks/{uuid}/{what}");
    let cancel = || {
        ctx.action(
            &path("cancel"),
            "Cancel",
            &[("queue", queue), ("back", &here)],
            "",
            Some("Cancel this task?"),
        )
    };
    let delete = |list: TaskList| {
        ctx.action(
            &path("delete"),
            "Delete",
            &[("queue", queue), ("back", &listing(list))],
            "danger",
            Some("Delete this task? It will not run."),
        )
    };
    // No message found (running, or an engine that cannot look messages up): a task
    // not yet finished can still be cancelled by its UUID.
    let unfinished = info.state.is_some_and(|s| !s.is_terminal());
    html! {
        @match info.location.as_ref().map(|l| l.list) {
            Some(TaskList::Dead) => {
                (ctx.action(&path("requeue"), "Requeue", &[("queue", queue), ("back", &here)], "primary", None))
                (delete(TaskList::Dead))
            }
            Some(list @ (TaskList::Pending | TaskList::Delayed)) => {
                (delete(list)) (cancel())
            }
            Some(TaskList::InFlight) => { (cancel()) }
            _ => {
                @if unfinished {
                    (cancel())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            base: "/admin".into(),
            csrf: "token".into(),
            refresh: Duration::ZERO,
            flash: None,
            engine: "memory",
        }
    }

    /// A task as the inspector would describe it, with `extra` fields set.
    fn info(extra: Value) -> TaskInfo {
        let mut base = json!({
            "uuid": "0191c1f2-8b5e-7c3a-9a51-2f6d1c3b4a5e",
            "name": "emails::send",
            "queue": "emails",
            "state": "SUCCESS",
            "result": null,
            "error": null,
            "retried": 0,
            "group": null,
            "timings": {},
            "delivery": 1,
            "worker": null,
            "headers": {},
            "schema": null,
            "args": [1],
            "location": null,
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).expect("a TaskInfo")
    }

    #[test]
    fn fractions_are_read_from_numbers_and_objects() {
        assert_eq!(fraction(&json!(0.25)), Some((0.25, 1.0)));
        assert_eq!(fraction(&json!(3)), None);
        assert_eq!(fraction(&json!({"done": 3, "of": 4})), Some((3.0, 4.0)));
        assert_eq!(fraction(&json!({"done": 1, "total": 2})), Some((1.0, 2.0)));
        assert_eq!(
            fraction(&json!({"current": 5, "total": 10})),
            Some((5.0, 10.0))
        );
        assert_eq!(fraction(&json!({"done": 5, "total": 0})), None);
        assert_eq!(fraction(&json!({"done": "a", "total": 2})), None);
        assert_eq!(fraction(&json!("half")), None);
    }

    #[test]
    fn a_workflow_member_links_to_its_workflow() {
        let page = render(
            &ctx(),
            &info(json!({"workflow": "0191c1f2-0000-7000-8000-000000000001"})),
        )
        .into_string();
        assert!(
            page.contains(
                "href=\"/admin/workflows/0191c1f2-0000-7000-8000-000000000001?from=\
                 0191c1f2-8b5e-7c3a-9a51-2f6d1c3b4a5e\""
            ),
            "{page}"
        );
        let page = render(&ctx(), &info(json!({}))).into_string();
        assert!(!page.contains("/workflows/"), "{page}");
    }

    #[test]
    fn actions_follow_where_the_task_is() {
        let buttons = |extra: Value| {
            let page = actions(&ctx(), &info(extra)).into_string();
            ["Requeue", "Delete", "Cancel"]
                .into_iter()
                .filter(|b| page.contains(&format!(">{b}</button>")))
                .collect::<Vec<_>>()
        };
        let location = |list: &str| {
            json!({"state": "PENDING", "location": {
                "list": list, "queue": "emails", "eta": null, "lease_deadline": null,
                "deliveries": 0, "reason": null,
            }})
        };
        assert_eq!(buttons(location("dead")), ["Requeue", "Delete"]);
        assert_eq!(buttons(location("pending")), ["Delete", "Cancel"]);
        assert_eq!(buttons(location("delayed")), ["Delete", "Cancel"]);
        assert_eq!(buttons(location("in_flight")), ["Cancel"]);
        assert_eq!(buttons(json!({"state": "STARTED"})), ["Cancel"]);
        assert_eq!(buttons(json!({"state": "SUCCESS"})), Vec::<&str>::new());
        assert_eq!(buttons(json!({"state": "REVOKED"})), Vec::<&str>::new());
    }
}
