//! The task listings: by queue and list, paginated, filtered by task name.

use axum::extract::State;

use crate::error::Query;
use machinery_core::inspect::{ListedTask, TaskList};
use machinery_core::{DeadLetterReason, RawSignature};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Shared;
use crate::error::{PageError, PageResult};
use crate::layout::{Ctx, Nav, ROW_SHOWN, count, cut, page as shell, time, time_opt};

/// How many listing pages a name filter walks in one request at most: a filter that
/// matches nothing must not read a queue of a million tasks to say so.
pub(crate) const FILTER_PAGES: usize = 10;

/// The listing asked for: `?queue=&list=&name=&cursor=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    pub(crate) queue: Option<String>,
    pub(crate) list: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) cursor: Option<String>,
}

/// What the page shows (and `/api/tasks` returns).
#[derive(Debug, Serialize)]
pub(crate) struct Data {
    /// The queue listed; `None` when the broker knows no queue.
    pub(crate) queue: Option<String>,
    /// Every queue the broker knows, for the selector.
    pub(crate) queues: Vec<String>,
    /// The list shown (`pending`, `delayed`, `in_flight`, `dead`, `failed`).
    pub(crate) list: TaskList,
    /// Each list of the queue with its count (`None`: not counted, as for failures).
    pub(crate) lists: Vec<ListCount>,
    /// The task-name filter, when one is set.
    pub(crate) name: Option<String>,
    /// The cursor this page starts at (`None`: the first page).
    pub(crate) cursor: Option<String>,
    /// The tasks of this page.
    pub(crate) items: Vec<Item>,
    /// The cursor of the next page; `None` on the last page.
    pub(crate) next: Option<String>,
    /// With a name filter: how many listed tasks were examined to fill this page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scanned: Option<usize>,
}

/// One list of the queue and how many tasks it holds.
#[derive(Debug, Serialize)]
pub(crate) struct ListCount {
    pub(crate) list: TaskList,
    pub(crate) count: Option<u64>,
}

/// A listed task as the page shows it: what the listing says and what its message says.
#[derive(Debug, Serialize)]
pub(crate) struct Item {
    pub(crate) uuid: Option<Uuid>,
    /// From the message (for a failure, from its stored state); `None` when the message
    /// does not decode.
    pub(crate) name: Option<String>,
    pub(crate) queue: String,
    /// Whether the message decodes (a failure's message is gone: `true` when its state
    /// was found).
    pub(crate) decodes: bool,
    /// The message's size in bytes.
    pub(crate) size: usize,
    /// When the message was created (ms).
    pub(crate) created_at: Option<u64>,
    pub(crate) priority: Option<u8>,
    pub(crate) retried: Option<u32>,
    /// Delayed: when it becomes ready (ms).
    pub(crate) eta: Option<u64>,
    /// In flight: when its lease ends unless extended (ms).
    pub(crate) lease_deadline: Option<u64>,
    /// In flight: the id of the worker running it, when the registry knows.
    pub(crate) worker: Option<String>,
    /// Deliveries that ended unsettled so far.
    pub(crate) deliveries: u32,
    /// Dead: why it was dead-lettered.
    pub(crate) reason: Option<DeadLetterReason>,
    /// Failed: when (ms).
    pub(crate) failed_at: Option<u64>,
    /// Failed: the error of its stored state.
    pub(crate) error: Option<String>,
}

/// What the page calls a list.
fn label(list: TaskList) -> &'static str {
    match list {
        TaskList::Pending => "Pending",
        TaskList::Delayed => "Delayed",
        TaskList::InFlight => "In flight",
        TaskList::Dead => "Dead",
        TaskList::Failed => "Failed",
    }
}

/// The list named `name` (one of [`TaskList::as_str`]; none: pending).
fn parse_list(name: Option<&str>) -> PageResult<TaskList> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(TaskList::Pending);
    };
    name.parse().map_err(|_| {
        let names: Vec<&str> = TaskList::ALL.iter().map(|l| l.as_str()).collect();
        PageError::bad_request(format!(
            "unknown list `{name}`: expected one of {}",
            names.join(", ")
        ))
    })
}

/// `value`, unless it is empty.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

async fn item(shared: &Shared, listed: ListedTask) -> PageResult<Item> {
    let message = RawSignature::decode(&listed.payload).ok();
    let mut item = Item {
        uuid: listed.uuid,
        name: message.as_ref().map(|m| m.name.clone()),
        decodes: message.is_some(),
        size: listed.payload.len(),
        created_at: message.as_ref().map(|m| m.created_at).filter(|&t| t != 0),
        priority: message.as_ref().map(|m| m.priority),
        retried: message.as_ref().map(|m| m.retried),
        queue: listed.queue,
        eta: listed.eta,
        lease_deadline: listed.lease_deadline,
        worker: listed.worker,
        deliveries: listed.deliveries,
        reason: listed.reason,
        failed_at: listed.failed_at,
        error: None,
    };
    // A failure's message is gone: its stored state names it.
    if listed.payload.is_empty()
        && let Some(uuid) = item.uuid
    {
        // One state that does not decode is that row's problem, not the page's.
        match shared
            .inspector
            .server()
            .backend()
            .load(&item.queue, uuid)
            .await
        {
            Ok(Some(state)) => {
                item.name = Some(state.name);
                item.decodes = true;
                item.retried = Some(state.retried);
                item.created_at = Some(state.sent_at).filter(|&t| t != 0);
                item.error = state.error;
            }
            Ok(None) => {}
            Err(e) if e.kind() == machinery_core::ErrorKind::Codec => {
                item.error = Some(format!("its stored state does not decode: {e}"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(item)
}

pub(crate) async fn data(shared: &Shared, query: &ListQuery) -> PageResult<Data> {
    let list = parse_list(query.list.as_deref())?;
    let name = given(query.name.as_deref()).map(str::to_owned);
    let cursor = given(query.cursor.as_deref()).map(str::to_owned);
    let infos = shared.inspector.queues().await?;
    let mut queues: Vec<String> = infos.iter().map(|q| q.name.clone()).collect();
    let queue = match given(query.queue.as_deref()) {
        Some(q) => {
            if !queues.iter().any(|n| n == q) {
                queues.push(q.to_owned());
            }
            Some(q.to_owned())
        }
        None => queues.first().cloned(),
    };
    let info = queue
        .as_deref()
        .and_then(|q| infos.iter().find(|i| i.name == q));
    let lists = TaskList::ALL
        .iter()
        .map(|&l| ListCount {
            list: l,
            count: info.and_then(|i| match l {
                TaskList::Pending => Some(i.ready),
                TaskList::Delayed => Some(i.delayed),
                TaskList::InFlight => Some(i.in_flight),
                TaskList::Dead => Some(i.dead),
                _ => None,
            }),
        })
        .collect();
    let mut data = Data {
        queue,
        queues,
        list,
        lists,
        name,
        cursor,
        items: Vec::new(),
        next: None,
        scanned: None,
    };
    let Some(queue) = data.queue.clone() else {
        return Ok(data);
    };
    let size = shared.config.page_size;
    let mut cursor = data.cursor.clone();
    match data.name.clone() {
        None => {
            let page = shared
                .inspector
                .tasks(&queue, list, cursor.as_deref(), size)
                .await?;
            for listed in page.items {
                data.items.push(item(shared, listed).await?);
            }
            data.next = page.next;
        }
        Some(wanted) => {
            // Whole listing pages are walked (a cursor cannot point inside one), so a
            // filtered page may hold up to one listing page more than `page_size`.
            let mut scanned = 0;
            for _ in 0..FILTER_PAGES {
                let page = shared
                    .inspector
                    .tasks(&queue, list, cursor.as_deref(), size)
                    .await?;
                scanned += page.items.len();
                for listed in page.items {
                    let it = item(shared, listed).await?;
                    if it.name.as_deref() == Some(wanted.as_str()) {
                        data.items.push(it);
                    }
                }
                cursor = page.next;
                if cursor.is_none() || data.items.len() >= size {
                    break;
                }
            }
            data.next = cursor;
            data.scanned = Some(scanned);
        }
    }
    Ok(data)
}

/// `/tasks` with these parameters (those given), as a path under the mount path.
fn listing(
    queue: Option<&str>,
    list: TaskList,
    name: Option<&str>,
    cursor: Option<&str>,
) -> String {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(q) = queue {
        pairs.push(("queue", q));
    }
    pairs.push(("list", list.as_str()));
    if let Some(n) = name {
        pairs.push(("name", n));
    }
    if let Some(c) = cursor {
        pairs.push(("cursor", c));
    }
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    format!("/tasks?{query}")
}

pub(crate) async fn page(
    State(shared): State<Shared>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let data = data(&shared, &query).await?;
    Ok(shell(&ctx, Nav::Tasks, "Tasks", render(&ctx, &data)))
}

fn render(ctx: &Ctx, data: &Data) -> Markup {
    let Some(queue) = data.queue.as_deref() else {
        return html! {
            p.muted { "There are no queues yet: the broker knows a queue once a task is sent to it or a worker consumes it." }
        };
    };
    let name = data.name.as_deref();
    let here = listing(Some(queue), data.list, name, data.cursor.as_deref());
    html! {
        form.inline method="get" action=(ctx.href("/tasks")) {
            label { "Queue "
                select name="queue" {
                    @for q in &data.queues {
                        option value=(q) selected[q == queue] { (q) }
                    }
                }
            }
            input type="hidden" name="list" value=(data.list.as_str());
            @if let Some(n) = name {
                input type="hidden" name="name" value=(n);
            }
            button type="submit" { "Show" }
        }
        nav.tabs {
            @for l in &data.lists {
                a href=(ctx.href(&listing(Some(queue), l.list, name, None)))
                    class=[(l.list == data.list).then_some("active")] {
                    (label(l.list))
                    @if let Some(n) = l.count { " (" (count(n)) ")" }
                }
            }
        }
        form.inline method="get" action=(ctx.href("/tasks")) {
            input type="hidden" name="queue" value=(queue);
            input type="hidden" name="list" value=(data.list.as_str());
            label { "Task name "
                input type="text" name="name" value=[name] placeholder="e.g. emails::send";
            }
            button type="submit" { "Filter" }
            @if name.is_some() {
                a href=(ctx.href(&listing(Some(queue), data.list, None, None))) { "Clear" }
            }
        }
        @if let Some(scanned) = data.scanned {
            p.muted {
                "Scanned " (scanned) " " (label(data.list).to_lowercase()) " tasks of " (queue)
                @if data.cursor.is_some() { " from this page on" }
                "; " (data.items.len()) " named " code { (name.unwrap_or_default()) } "."
                @if data.next.is_some() { " More may follow: Next continues from where the scan stopped." }
            }
        }
        @if data.items.is_empty() && data.scanned.is_some() {
            // The scan's sentence above says what was looked at and found.
        } @else if data.items.is_empty() {
            p.muted {
                "No " (label(data.list).to_lowercase()) " tasks in " (queue)
                @if data.cursor.is_some() { " from this page on" }
                "."
            }
        } @else {
            (table(ctx, data, &here))
        }
        nav.pager {
            @if data.cursor.is_some() {
                a.first href=(ctx.href(&listing(Some(queue), data.list, name, None))) { "« First" }
            }
            @if let Some(next) = &data.next {
                a.next href=(ctx.href(&listing(Some(queue), data.list, name, Some(next)))) { "Next »" }
            }
        }
    }
}

fn table(ctx: &Ctx, data: &Data, here: &str) -> Markup {
    let list = data.list;
    html! {
        table.tasks {
            thead { tr {
                th { "UUID" } th { "Name" } th { "Created" }
                @match list {
                    TaskList::Pending => { th.num { "Priority" } th.num { "Retried" } th.num title="deliveries that ended without being settled (a worker died or lost its lease)" { "Lost deliveries" } }
                    TaskList::Delayed => { th { "ETA" } th.num { "Retried" } th.num title="deliveries that ended without being settled (a worker died or lost its lease)" { "Lost deliveries" } }
                    TaskList::InFlight => { th { "Lease until" } th { "Worker" } th.num title="deliveries that ended without being settled (a worker died or lost its lease)" { "Lost deliveries" } }
                    TaskList::Dead => { th { "Reason" } th.num title="deliveries that ended without being settled (a worker died or lost its lease)" { "Lost deliveries" } }
                    _ => { th { "Failed at" } th.num { "Retried" } th { "Error" } }
                }
                th { "Actions" }
            } }
            tbody {
                @for it in &data.items {
                    tr {
                        td.mono {
                            @if let Some(uuid) = it.uuid {
                                a.task href=(ctx.href(&format!("/tasks/{uuid}"))) { (uuid) }
                            } @else { "—" }
                        }
                        td {
                            @match &it.name {
                                Some(n) => code { (n) },
                                None if it.decodes || it.size == 0 => span.muted { "—" },
                                None => span.muted { "undecodable (" (it.size) " bytes)" },
                            }
                        }
                        td { (time_opt(it.created_at)) }
                        @match list {
                            TaskList::Pending => {
                                td.num { (opt(it.priority)) } td.num { (opt(it.retried)) } td.num { (it.deliveries) }
                            }
                            TaskList::Delayed => {
                                td { (time_opt(it.eta)) } td.num { (opt(it.retried)) } td.num { (it.deliveries) }
                            }
                            TaskList::InFlight => {
                                td { (time_opt(it.lease_deadline)) }
                                td.mono {
                                    @if let Some(w) = &it.worker {
                                        a href=(ctx.href("/workers")) { (w) }
                                    } @else { "—" }
                                }
                                td.num { (it.deliveries) }
                            }
                            TaskList::Dead => {
                                td { (cut(&opt(it.reason.as_ref()), ROW_SHOWN)) } td.num { (it.deliveries) }
                            }
                            _ => {
                                td { (it.failed_at.map_or_else(|| "—".to_owned(), time)) }
                                td.num { (opt(it.retried)) }
                                td.error { (cut(it.error.as_deref().unwrap_or("—"), ROW_SHOWN)) }
                            }
                        }
                        td { (actions(ctx, list, it, here)) }
                    }
                }
            }
        }
    }
}

/// A value, or a dash.
fn opt(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| v.to_string())
}

/// The buttons a listed task offers, by the list it is in.
fn actions(ctx: &Ctx, list: TaskList, it: &Item, here: &str) -> Markup {
    let Some(uuid) = it.uuid else {
        return html! {};
    };
    let fields = [("queue", it.queue.as_str()), ("back", here)];
    let path = |what: &str| format!("/tasks/{uuid}/{what}");
    let delete = |question: &str| {
        ctx.action(
            &path("delete"),
            "Delete",
            &fields,
            "danger",
            Some(&format!("{question} {uuid}?")),
        )
    };
    let cancel = || ctx.action(&path("cancel"), "Cancel", &fields, "", None);
    html! {
        @match list {
            TaskList::Pending | TaskList::Delayed => { (delete("Delete pending task")) (cancel()) }
            TaskList::InFlight => { (cancel()) }
            TaskList::Dead => {
                (ctx.action(&path("requeue"), "Requeue", &fields, "primary", None))
                (delete("Delete dead letter"))
            }
            _ => {}
        }
    }
}
