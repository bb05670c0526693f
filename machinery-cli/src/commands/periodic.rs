//! `machinery periodic ls|pause|resume|remove`.

use std::time::{SystemTime, UNIX_EPOCH};

use machinery_core::{PeriodicEntry, Server};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::args::PeriodicCommand;
use crate::error::{Failure, Result};
use crate::output::{Out, now_ms, or_dash, table, when};

/// A periodic entry as printed, times in ms since the Unix epoch.
#[derive(Serialize)]
struct Entry {
    name: String,
    spec: String,
    timezone: String,
    paused: bool,
    next_run: Option<u64>,
    last_run: Option<u64>,
    last_task: Option<Uuid>,
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
            name: e.name,
            spec: e.spec,
            timezone: e.timezone,
            paused: e.paused,
            last_task: e.last_task,
        }
    }
}

pub async fn run(server: &Server, cmd: PeriodicCommand, out: &mut Out) -> Result {
    let inspector = server.inspect()?;
    let (name, done, verb) = match cmd {
        PeriodicCommand::Ls => {
            let entries: Vec<Entry> = inspector
                .periodic_entries()
                .await?
                .into_iter()
                .map(Entry::from)
                .collect();
            if out.json {
                return Ok(out.json(&entries)?);
            }
            if entries.is_empty() {
                return Ok(out.line("no periodic entries")?);
            }
            let now = now_ms();
            let mut t = table(
                &[
                    "NAME",
                    "SCHEDULE",
                    "TIME ZONE",
                    "PAUSED",
                    "NEXT RUN",
                    "LAST RUN",
                    "LAST TASK",
                ],
                &[],
            );
            for e in &entries {
                t.add_row([
                    e.name.clone(),
                    e.spec.clone(),
                    e.timezone.clone(),
                    if e.paused { "yes" } else { "no" }.to_owned(),
                    when(e.next_run, now),
                    when(e.last_run, now),
                    or_dash(e.last_task),
                ]);
            }
            return Ok(out.table(&t)?);
        }
        PeriodicCommand::Pause { name } => {
            let done = inspector.pause_periodic(&name).await?;
            (name, done, "paused")
        }
        PeriodicCommand::Resume { name } => {
            let done = inspector.resume_periodic(&name).await?;
            (name, done, "resumed")
        }
        PeriodicCommand::Remove { name } => {
            let done = inspector.remove_periodic(&name).await?;
            (name, done, "removed")
        }
    };
    if !done {
        return Err(Failure::not_found(format!(
            "no periodic entry named `{name}` (see `machinery periodic ls`)"
        )));
    }
    if out.json {
        out.json(&json!({"name": name, verb: true}))?;
    } else {
        out.line(format!("{verb} periodic entry {name}"))?;
    }
    Ok(())
}
