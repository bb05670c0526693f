//! `machinery queues`.

use machinery_core::Server;

use crate::error::Result;
use crate::output::{Out, table};

pub async fn run(server: &Server, out: &mut Out) -> Result {
    let queues = server.inspect()?.queues().await?;
    if out.json {
        return Ok(out.json(&queues)?);
    }
    if queues.is_empty() {
        return Ok(out.line("no queues")?);
    }
    let mut t = table(
        &["QUEUE", "READY", "DELAYED", "IN FLIGHT", "DEAD", "PAUSED"],
        &[1, 2, 3, 4],
    );
    for q in &queues {
        t.add_row([
            q.name.clone(),
            q.ready.to_string(),
            q.delayed.to_string(),
            q.in_flight.to_string(),
            q.dead.to_string(),
            if q.paused { "yes" } else { "no" }.to_owned(),
        ]);
    }
    Ok(out.table(&t)?)
}
