//! `machinery task show|delete|cancel`.

use machinery_core::Server;
use machinery_core::engine::RevokeOutcome;
use machinery_core::inspect::TaskInfo;
use uuid::Uuid;

use crate::error::{Failure, Result};
use crate::output::{Out, clip, duration_ms, now_ms, or_dash, relative, table, when};

pub async fn run(server: &Server, uuid: Uuid, out: &mut Out) -> Result {
    let Some(info) = server.inspect()?.task(uuid).await? else {
        return Err(Failure::not_found(format!(
            "no task {uuid}: no state is stored for it (unknown, or expired after the results \
             TTL) and its message is in no queue"
        )));
    };
    if out.json {
        return Ok(out.json(&info)?);
    }
    Ok(out.table(&details(&info, now_ms()))?)
}

pub async fn delete(server: &Server, uuid: Uuid, queue: Option<String>, out: &mut Out) -> Result {
    let inspector = server.inspect()?;
    let queue = match queue {
        Some(queue) => queue,
        None => match server.backend().load("", uuid).await? {
            Some(state) if !state.queue.is_empty() => state.queue,
            _ => server.config().default_queue.clone(),
        },
    };
    if !inspector.delete_pending(&queue, uuid).await? {
        return Err(Failure::not_found(format!(
            "task {uuid} is not pending in queue {queue}: it ran, runs now, is a dead letter, \
             or waits in another queue (see `machinery task show {uuid}`)"
        )));
    }
    if out.json {
        out.json(&serde_json::json!({"queue": queue, "uuid": uuid, "deleted": true}))?;
    } else {
        out.line(format!("deleted pending task {uuid} from queue {queue}"))?;
    }
    Ok(())
}

pub async fn cancel(server: &Server, uuid: Uuid, queue: Option<String>, out: &mut Out) -> Result {
    let outcome = match &queue {
        Some(queue) => server.revoke_in(queue, uuid).await?,
        None => server.revoke(uuid).await?,
    };
    let (name, state, line) = match outcome {
        RevokeOutcome::Revoked => (
            "revoked",
            None,
            format!("revoked task {uuid}: it had not started, and will not run"),
        ),
        RevokeOutcome::Cancelling => (
            "cancelling",
            None,
            format!(
                "cancelling task {uuid}: its worker stops it and records REVOKED, unless it \
                 finishes first (see `machinery task show {uuid}`)"
            ),
        ),
        RevokeOutcome::Finished(state) => (
            "finished",
            Some(state),
            format!("task {uuid} already finished ({state}); nothing changed"),
        ),
        RevokeOutcome::Unknown => (
            "unknown",
            None,
            format!(
                "no state is stored for task {uuid} (unknown, or expired); the revocation is \
                 recorded, so a message with this UUID is skipped if one comes"
            ),
        ),
        other => ("other", None, format!("task {uuid}: {other:?}")),
    };
    if out.json {
        out.json(&serde_json::json!({
            "uuid": uuid,
            "queue": queue,
            "outcome": name,
            "state": state.map(|s| s.as_str()),
        }))?;
    } else if outcome != RevokeOutcome::Unknown {
        out.line(line.clone())?;
    }
    // Nothing is stored for the UUID (a typo, or a task long expired): status 3, as for
    // `task show`, so that a script can tell.
    if outcome == RevokeOutcome::Unknown {
        return Err(Failure::not_found(line));
    }
    Ok(())
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("({e})"))
}

/// The task as a two-column table.
fn details(info: &TaskInfo, now: u64) -> comfy_table::Table {
    let mut t = table(&["FIELD", "VALUE"], &[]);
    let mut row = |field: &str, value: String| {
        t.add_row([field.to_owned(), clip(value)]);
    };
    row("uuid", info.uuid.to_string());
    row("name", info.name.clone());
    row("queue", info.queue.clone());
    row(
        "state",
        info.state
            .map_or_else(|| "(none stored)".to_owned(), |s| s.to_string()),
    );
    if let Some(location) = &info.location {
        let mut text = location.list.as_str().to_owned();
        if let Some(eta) = location.eta {
            text.push_str(&format!(", ready {}", relative(eta, now)));
        }
        if let Some(deadline) = location.lease_deadline {
            text.push_str(&format!(", lease ends {}", relative(deadline, now)));
        }
        if location.deliveries > 0 {
            text.push_str(&format!(", {} unsettled deliveries", location.deliveries));
        }
        if let Some(reason) = &location.reason {
            text.push_str(&format!(": {reason}"));
        }
        row("in broker", text);
    } else {
        row("in broker", "no (consumed, or not found)".to_owned());
    }
    if let Some(result) = &info.result {
        row("result", pretty(result));
    }
    if let Some(error) = &info.error {
        row("error", error.clone());
    }
    if let Some(progress) = &info.progress {
        row("progress", pretty(progress));
    }
    row("retried", info.retried.to_string());
    if let Some(group) = info.group {
        row("group", group.to_string());
    }
    let timings = &info.timings;
    row("sent", when(timings.sent_at, now));
    row("started", when(timings.started_at, now));
    row("finished", when(timings.finished_at, now));
    row("runtime", or_dash(timings.runtime_ms.map(duration_ms)));
    row("updated", when(timings.updated_at, now));
    row("delivery", info.delivery.to_string());
    row("worker", or_dash(info.worker.as_deref()));
    row("schema", or_dash(info.schema.as_deref()));
    row(
        "args",
        info.args.as_ref().map_or_else(|| "-".to_owned(), pretty),
    );
    if !info.headers.is_empty() {
        row(
            "headers",
            info.headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    for warning in &info.warnings {
        row("warning", warning.clone());
    }
    t
}
