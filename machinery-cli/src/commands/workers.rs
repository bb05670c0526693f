//! `machinery workers`.

use machinery_core::Server;

use crate::error::Result;
use crate::output::{Out, now_ms, relative, table};

pub async fn run(server: &Server, out: &mut Out) -> Result {
    let workers = server.inspect()?.workers().await?;
    if out.json {
        return Ok(out.json(&workers)?);
    }
    if workers.is_empty() {
        return Ok(out.line("no workers alive")?);
    }
    let now = now_ms();
    let mut t = table(
        &[
            "ID",
            "NAME",
            "HOST",
            "PID",
            "VERSION",
            "QUEUES",
            "CONCURRENCY",
            "RUNNING",
            "PROCESSED",
            "FAILED",
            "STARTED",
            "HEARTBEAT",
        ],
        &[3, 6, 7, 8, 9],
    );
    for w in &workers {
        t.add_row([
            w.id.clone(),
            w.name.clone(),
            w.host.clone(),
            w.pid.to_string(),
            w.version.clone(),
            w.queues.join(", "),
            format!("{} (prefetch {})", w.concurrency, w.prefetch),
            w.running.len().to_string(),
            w.processed.to_string(),
            w.failed.to_string(),
            relative(w.started_at, now),
            relative(w.heartbeat_at, now),
        ]);
    }
    out.table(&t)?;
    let running: Vec<_> = workers
        .iter()
        .flat_map(|w| w.running.iter().map(move |r| (w, r)))
        .collect();
    if !running.is_empty() {
        let mut t = table(&["WORKER", "TASK", "UUID", "QUEUE", "STARTED"], &[]);
        for (w, r) in running {
            t.add_row([
                w.name.clone(),
                r.name.clone(),
                r.uuid.to_string(),
                r.queue.clone(),
                relative(r.started_at, now),
            ]);
        }
        out.line("")?;
        out.line("running now:")?;
        out.table(&t)?;
    }
    Ok(())
}
