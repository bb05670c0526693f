//! `machinery dead requeue|delete|purge`.

use machinery_core::Server;
use machinery_core::inspect::Confirm;
use serde_json::json;

use super::queue_or_default;
use crate::args::{DeadCommand, DeadTarget};
use crate::error::{Failure, Result};
use crate::output::Out;

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub async fn run(server: &Server, cmd: DeadCommand, out: &mut Out) -> Result {
    let inspector = server.inspect()?;
    match cmd {
        DeadCommand::Requeue { queue, target } => {
            let queue = queue_or_default(server, queue);
            let n = match target {
                DeadTarget {
                    uuid: Some(uuid), ..
                } => {
                    if !inspector.requeue_dead_letter(&queue, uuid).await? {
                        return Err(not_dead(uuid, &queue));
                    }
                    1
                }
                _ => inspector.requeue_dead_letters(&queue).await?,
            };
            if out.json {
                out.json(&json!({"queue": queue, "requeued": n}))?;
            } else {
                out.line(format!(
                    "requeued {n} dead letter{} into queue {queue}",
                    plural(n)
                ))?;
            }
        }
        DeadCommand::Delete { queue, target, .. } => {
            let queue = queue_or_default(server, queue);
            let n = match target {
                DeadTarget {
                    uuid: Some(uuid), ..
                } => {
                    if !inspector.delete_dead_letter(&queue, uuid).await? {
                        return Err(not_dead(uuid, &queue));
                    }
                    1
                }
                // `--yes` was checked before connecting.
                _ => inspector.purge_dead_letters(&queue, Confirm::Yes).await?,
            };
            deleted(out, &queue, n)?;
        }
        DeadCommand::Purge { queue, .. } => {
            let queue = queue_or_default(server, queue);
            let n = inspector.purge_dead_letters(&queue, Confirm::Yes).await?;
            deleted(out, &queue, n)?;
        }
    }
    Ok(())
}

fn deleted(out: &mut Out, queue: &str, n: usize) -> Result {
    if out.json {
        out.json(&json!({"queue": queue, "deleted": n}))?;
    } else {
        out.line(format!(
            "deleted {n} dead letter{} of queue {queue}",
            plural(n)
        ))?;
    }
    Ok(())
}

fn not_dead(uuid: uuid::Uuid, queue: &str) -> Failure {
    Failure::not_found(format!(
        "task {uuid} is not among the dead letters of queue {queue}"
    ))
}
