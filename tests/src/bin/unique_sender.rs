//! A producer process for the unique-task race test: configured from the environment
//! (`MACHINERY_*`), it waits until `UNIQUE_START_AT` (ms since the Unix epoch), then
//! sends `UNIQUE_SENDERS` copies of `fault.work` at once, each as its own tokio task:
//! unique under `UNIQUE_KEY` when set, else with the UUID `UNIQUE_UUID`. It prints one
//! line per send, `sent <uuid>` or `duplicate <uuid>`, and exits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use machinery_core::{Enqueued, Server};
use machinery_redis as _;
use tests::tasks::work;

fn var(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::from_env().await?;
    let senders: u64 = var("UNIQUE_SENDERS")?.parse()?;
    let start_at: u64 = var("UNIQUE_START_AT")?.parse()?;
    let key = std::env::var("UNIQUE_KEY").ok();
    let uuid = std::env::var("UNIQUE_UUID")
        .ok()
        .map(|u| uuid::Uuid::parse_str(&u))
        .transpose()?;
    // Connected and ready: wait for the common start so that every process sends at once.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let wait = u64::try_from(u128::from(start_at).saturating_sub(now))?;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let mut sends = Vec::new();
    for i in 0..senders {
        let server = server.clone();
        let key = key.clone();
        sends.push(tokio::spawn(async move {
            let mut sig = work::s(i, 0);
            if let Some(key) = key {
                sig = sig.unique_key(key);
            }
            if let Some(uuid) = uuid {
                sig = sig.with_uuid(uuid);
            }
            let mut raw = sig.into_raw()?;
            server.route(&mut raw);
            server.send_raw(raw).await
        }));
    }
    for s in sends {
        match s.await?? {
            Enqueued::Sent { uuid } => println!("sent {uuid}"),
            Enqueued::Duplicate { uuid } => println!("duplicate {uuid}"),
            other => println!("other {}", other.uuid()),
        }
    }
    Ok(())
}
