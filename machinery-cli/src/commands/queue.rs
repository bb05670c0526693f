//! `machinery queue pause|resume|purge`.

use machinery_core::Server;
use machinery_core::inspect::Confirm;
use serde_json::json;

use crate::args::QueueCommand;
use crate::error::Result;
use crate::output::Out;

pub async fn run(server: &Server, cmd: QueueCommand, out: &mut Out) -> Result {
    let inspector = server.inspect()?;
    match cmd {
        QueueCommand::Pause { queue } => {
            let changed = inspector.pause(&queue).await?;
            if out.json {
                out.json(&json!({"queue": queue, "paused": true, "changed": changed}))?;
            } else if changed {
                out.line(format!(
                    "paused queue {queue}: workers fetch nothing from it until `machinery queue resume {queue}`"
                ))?;
            } else {
                out.line(format!("queue {queue} was already paused"))?;
            }
        }
        QueueCommand::Resume { queue } => {
            let changed = inspector.resume(&queue).await?;
            if out.json {
                out.json(&json!({"queue": queue, "paused": false, "changed": changed}))?;
            } else if changed {
                out.line(format!("resumed queue {queue}"))?;
            } else {
                out.line(format!("queue {queue} was not paused"))?;
            }
        }
        QueueCommand::Purge { queue, .. } => {
            // `--yes` was checked before connecting.
            let n = inspector.purge(&queue, Confirm::Yes).await?;
            if out.json {
                out.json(&json!({"queue": queue, "deleted": n}))?;
            } else {
                out.line(format!(
                    "deleted {n} ready and delayed task{} of queue {queue}",
                    if n == 1 { "" } else { "s" }
                ))?;
            }
        }
    }
    Ok(())
}
