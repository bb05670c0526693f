//! `machinery tasks ls`.

use machinery_core::inspect::{Inspector, ListedTask, TaskList};
use machinery_core::{DeadLetterReason, RawSignature, Server};
use serde::Serialize;
use uuid::Uuid;

use super::queue_or_default;
use crate::args::LsArgs;
use crate::error::{Failure, Result};
use crate::output::{Out, clip, now_ms, or_dash, relative, table};

/// A listed task as printed: what the listing says, and what its message says.
#[derive(Debug, Serialize)]
struct Row {
    uuid: Option<Uuid>,
    /// From the message (or, for a failure, its stored state); `None` when the
    /// message does not decode.
    name: Option<String>,
    queue: String,
    /// When the message was created (ms).
    sent_at: Option<u64>,
    priority: Option<u8>,
    retried: Option<u32>,
    /// Delayed: when it becomes ready (ms).
    eta: Option<u64>,
    /// In flight: when its lease ends (ms).
    lease_deadline: Option<u64>,
    /// In flight: the id of the worker running it.
    worker: Option<String>,
    deliveries: u32,
    /// Dead: why.
    reason: Option<DeadLetterReason>,
    /// Failed: when (ms).
    failed_at: Option<u64>,
    /// Failed: the error text of its stored state.
    error: Option<String>,
}

#[derive(Serialize)]
struct PageOut<'a> {
    queue: &'a str,
    state: TaskList,
    items: Vec<Row>,
    /// The `--cursor` of the next page; `null` on the last page.
    next: Option<String>,
}

async fn row(inspector: &Inspector, item: ListedTask) -> Result<Row> {
    let message = RawSignature::decode(&item.payload).ok();
    let mut row = Row {
        uuid: item.uuid,
        name: message.as_ref().map(|m| m.name.clone()),
        sent_at: message.as_ref().map(|m| m.created_at).filter(|&t| t != 0),
        priority: message.as_ref().map(|m| m.priority),
        retried: message.as_ref().map(|m| m.retried),
        queue: item.queue,
        eta: item.eta,
        lease_deadline: item.lease_deadline,
        worker: item.worker,
        deliveries: item.deliveries,
        reason: item.reason,
        failed_at: item.failed_at,
        error: None,
    };
    if message.is_none()
        && let Some(uuid) = row.uuid
        && let Some(state) = inspector.server().backend().load(&row.queue, uuid).await?
    {
        // A failure's message is gone: its state names it.
        row.name = Some(state.name);
        row.retried = Some(state.retried);
        row.sent_at = Some(state.sent_at).filter(|&t| t != 0);
        row.error = state.error;
    }
    Ok(row)
}

/// The columns of a list besides UUID and NAME.
fn columns(list: TaskList) -> &'static [&'static str] {
    match list {
        TaskList::Pending => &["PRIORITY", "SENT", "RETRIED", "UNSETTLED"],
        TaskList::Delayed => &["ETA", "SENT", "RETRIED"],
        TaskList::InFlight => &["WORKER", "LEASE ENDS", "UNSETTLED"],
        TaskList::Dead => &["REASON", "SENT", "UNSETTLED"],
        TaskList::Failed => &["FAILED", "RETRIED", "ERROR"],
    }
}

fn cells(list: TaskList, r: &Row, now: u64) -> Vec<String> {
    let at = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), |t| relative(t, now));
    let mut cells = vec![
        or_dash(r.uuid),
        r.name.clone().unwrap_or_else(|| "(undecodable)".to_owned()),
    ];
    cells.extend(match list {
        TaskList::Pending => vec![
            or_dash(r.priority),
            at(r.sent_at),
            or_dash(r.retried),
            r.deliveries.to_string(),
        ],
        TaskList::Delayed => vec![at(r.eta), at(r.sent_at), or_dash(r.retried)],
        TaskList::InFlight => vec![
            or_dash(r.worker.as_deref()),
            at(r.lease_deadline),
            r.deliveries.to_string(),
        ],
        TaskList::Dead => vec![
            or_dash(r.reason.as_ref()),
            at(r.sent_at),
            r.deliveries.to_string(),
        ],
        TaskList::Failed => vec![
            at(r.failed_at),
            or_dash(r.retried),
            or_dash(r.error.as_deref()),
        ],
    });
    cells.into_iter().map(clip).collect()
}

pub async fn run(server: &Server, args: LsArgs, out: &mut Out) -> Result {
    let inspector = server.inspect()?;
    let queue = queue_or_default(server, args.queue);
    let limit = usize::from(args.limit);
    if args.all {
        return all(&inspector, &queue, args.state, limit, out).await;
    }
    let page = inspector
        .tasks(&queue, args.state, args.cursor.as_deref(), limit)
        .await?;
    let mut rows = Vec::with_capacity(page.items.len());
    for item in page.items {
        rows.push(row(&inspector, item).await?);
    }
    if out.json {
        return Ok(out.json(&PageOut {
            queue: &queue,
            state: args.state,
            items: rows,
            next: page.next,
        })?);
    }
    if rows.is_empty() {
        out.line(format!(
            "no {} tasks in queue {queue}{}",
            args.state.as_str(),
            if args.cursor.is_some() {
                " from this cursor"
            } else {
                ""
            }
        ))?;
    } else {
        let mut header = vec!["UUID", "NAME"];
        header.extend(columns(args.state));
        let mut t = table(&header, &[]);
        let now = now_ms();
        for r in &rows {
            t.add_row(cells(args.state, r, now));
        }
        out.table(&t)?;
    }
    match page.next {
        Some(next) => out.line(format!("next page: --cursor {next}"))?,
        None if !rows.is_empty() => out.line("(last page)")?,
        None => {}
    }
    Ok(())
}

/// `--all`: every page, printed as it comes.
async fn all(
    inspector: &Inspector,
    queue: &str,
    list: TaskList,
    limit: usize,
    out: &mut Out,
) -> Result {
    let mut cursor: Option<String> = None;
    let mut count = 0u64;
    if !out.json {
        let mut header = vec!["UUID", "NAME"];
        header.extend(columns(list));
        out.line(line(
            &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
        ))?;
    }
    loop {
        let page = inspector
            .tasks(queue, list, cursor.as_deref(), limit)
            .await?;
        let now = now_ms();
        for item in page.items {
            let r = row(inspector, item).await?;
            if out.json {
                out.json_line(&r)?;
            } else {
                out.line(line(&cells(list, &r, now)))?;
            }
            count += 1;
        }
        match page.next {
            Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                return Err(Failure::failed(format!(
                    "the engine returned the same cursor twice ({next}); stopped after {count} tasks"
                )));
            }
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if !out.json {
        out.line(format!("{count} {} tasks in queue {queue}", list.as_str()))?;
    }
    Ok(())
}

/// One line of `--all` output: UUID and name padded, then the other cells.
fn line(cells: &[String]) -> String {
    let mut text = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            text.push_str("  ");
        }
        match i {
            0 => text.push_str(&format!("{cell:<36}")),
            1 => text.push_str(&format!("{cell:<24}")),
            _ => text.push_str(cell),
        }
    }
    text.trim_end().to_owned()
}
