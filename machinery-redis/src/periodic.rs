//! The Redis periodic store: the entries, pause flags, last runs and tick claims every
//! scheduler of a deployment shares.
//!
//! Its keys (`<p>:{periodic}:entries`, `<p>:{periodic}:entry:<name>`) are in the crate
//! docs' key table.
//!
//! The `{periodic}` hash tag keeps every key in one Redis Cluster slot, so each script
//! may touch the entry and the name set together. Every update is one Lua script
//! (`lua/periodic_*.lua`), atomic on the server; a claim succeeds for one caller only,
//! and only for a tick later than the entry's watermark, which it then raises.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use machinery_core::config::redact_url;
use machinery_core::engine::BoxFuture;
use machinery_core::periodic::{
    Claim, EntrySpec, PeriodicEntry, PeriodicStore, PeriodicStoreFactory,
};
use machinery_core::{Config, Error, ErrorKind, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use crate::keys::Keys;

/// Periodic entries kept in Redis, shared by every scheduler using the same server and
/// key prefix. [`Scheduler::new`](machinery_core::periodic::Scheduler::new) connects one
/// by itself for a server on Redis; build one directly to manage entries from a tool.
///
/// Uses its own auto-reconnecting connection: when Redis goes away, calls fail (the
/// scheduler logs and skips the tick) and later calls reconnect.
pub struct RedisPeriodicStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: PeriodicScripts,
}

impl std::fmt::Debug for RedisPeriodicStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPeriodicStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

struct PeriodicScripts {
    upsert: Script,
    claim: Script,
    record: Script,
    pause: Script,
    remove: Script,
}

impl PeriodicScripts {
    fn new() -> Self {
        PeriodicScripts {
            upsert: Script::new(include_str!("lua/periodic_upsert.lua")),
            claim: Script::new(include_str!("lua/periodic_claim.lua")),
            record: Script::new(include_str!("lua/periodic_record.lua")),
            pause: Script::new(include_str!("lua/periodic_pause.lua")),
            remove: Script::new(include_str!("lua/periodic_remove.lua")),
        }
    }
}

fn command(e: redis::RedisError) -> Error {
    crate::error::core_error(e)
}

fn opt_ms(ms: Option<u64>) -> String {
    ms.map_or_else(String::new, |v| v.to_string())
}

fn from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

impl RedisPeriodicStore {
    /// Connects to `config.result_backend_url()` with the timeouts of its
    /// [`RedisConfig`](crate::RedisConfig) section, under its `key_prefix`.
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] for a URL redis-rs cannot use; [`Error::Engine`] when
    /// Redis cannot be reached.
    pub async fn connect(config: &Config) -> Result<Self> {
        let url = config.result_backend_url();
        let redacted = redact_url(url);
        if url.starts_with("rediss://") {
            return Err(Error::UnsupportedUrl {
                url: redacted,
                reason: "TLS (`rediss://`) is not compiled into this build".into(),
            });
        }
        let client = redis::Client::open(url).map_err(|e| Error::UnsupportedUrl {
            url: redacted.clone(),
            reason: e.to_string(),
        })?;
        let r = crate::config::Settings::new(config)?.redis;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(r.connect_timeout))
            .set_response_timeout(Some(r.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        // The manager retries its first connection; bound the whole attempt too.
        let limit = r
            .connect_timeout
            .saturating_mul(3)
            .max(Duration::from_millis(1));
        let conn = match tokio::time::timeout(
            limit,
            client.get_connection_manager_with_config(manager),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(Error::engine_msg(
                    "redis",
                    crate::error::kind_of(&e),
                    format!("cannot connect the periodic store to `{redacted}`: {e}"),
                ));
            }
            Err(_) => {
                return Err(Error::engine_msg(
                    "redis",
                    ErrorKind::Connection,
                    format!(
                        "cannot connect the periodic store to `{redacted}`: no answer within {limit:?}"
                    ),
                ));
            }
        };
        Ok(RedisPeriodicStore::with_connection(conn, &r.key_prefix))
    }

    /// A store on an existing connection, under `key_prefix`.
    pub fn with_connection(conn: ConnectionManager, key_prefix: &str) -> Self {
        RedisPeriodicStore {
            conn,
            prefix: key_prefix.to_owned(),
            scripts: PeriodicScripts::new(),
        }
    }

    fn names_key(&self) -> String {
        Keys::new(&self.prefix).periodic_entries()
    }

    fn entry_key(&self, name: &str) -> String {
        Keys::new(&self.prefix).periodic_entry(name)
    }

    fn parse(name: &str, fields: &HashMap<String, String>) -> Option<PeriodicEntry> {
        let spec = fields.get("spec")?;
        let tz = fields.get("tz").map_or("UTC", String::as_str);
        let ms = |field: &str| fields.get(field).and_then(|v| v.parse::<u64>().ok());
        let mut entry = PeriodicEntry::new(name, spec.clone(), tz);
        entry.paused = fields.get("paused").is_some_and(|p| p == "1");
        entry.next_run = ms("next_run").map(from_ms);
        entry.last_run = ms("last_run").map(from_ms);
        entry.last_task = fields
            .get("last_task")
            .and_then(|u| Uuid::parse_str(u).ok());
        Some(entry)
    }
}

#[async_trait]
impl PeriodicStore for RedisPeriodicStore {
    fn engine(&self) -> &'static str {
        "redis"
    }

    async fn upsert(&self, entry: &EntrySpec, now_ms: u64) -> Result<bool> {
        let created: i64 = self
            .scripts
            .upsert
            .key(self.entry_key(&entry.name))
            .key(self.names_key())
            .arg(&entry.name)
            .arg(&entry.spec)
            .arg(&entry.timezone)
            .arg(now_ms)
            .arg(opt_ms(entry.next_run_ms))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(command)?;
        Ok(created == 1)
    }

    async fn list(&self) -> Result<Vec<PeriodicEntry>> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = conn.smembers(self.names_key()).await.map_err(command)?;
        names.sort_unstable();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.hgetall(self.entry_key(name));
        }
        let all: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(command)?;
        // A name whose hash is gone was removed while we read.
        Ok(names
            .iter()
            .zip(&all)
            .filter_map(|(name, fields)| Self::parse(name, fields))
            .collect())
    }

    async fn get(&self, name: &str) -> Result<Option<PeriodicEntry>> {
        let fields: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.entry_key(name))
            .await
            .map_err(command)?;
        Ok(Self::parse(name, &fields))
    }

    async fn pause(&self, name: &str) -> Result<bool> {
        let found: i64 = self
            .scripts
            .pause
            .key(self.entry_key(name))
            .arg("1")
            .arg(0)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(command)?;
        Ok(found == 1)
    }

    async fn resume(&self, name: &str, now_ms: u64) -> Result<bool> {
        let found: i64 = self
            .scripts
            .pause
            .key(self.entry_key(name))
            .arg("0")
            .arg(now_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(command)?;
        Ok(found == 1)
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        let removed: i64 = self
            .scripts
            .remove
            .key(self.entry_key(name))
            .key(self.names_key())
            .arg(name)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(command)?;
        Ok(removed == 1)
    }

    async fn claim_tick(&self, name: &str, scheduled_at_ms: u64) -> Result<Claim> {
        let answer: i64 = self
            .scripts
            .claim
            .key(self.entry_key(name))
            .arg(scheduled_at_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(command)?;
        match answer {
            1 => Ok(Claim::Won),
            0 => Ok(Claim::Taken),
            2 => Ok(Claim::Paused),
            3 => Ok(Claim::Missing),
            other => Err(Error::engine_msg(
                "redis",
                ErrorKind::Rejected,
                format!("unexpected answer {other} from the periodic claim script"),
            )),
        }
    }

    async fn record_run(
        &self,
        name: &str,
        scheduled_at_ms: u64,
        task: Uuid,
        next_run_ms: Option<u64>,
    ) -> Result<()> {
        let _: i64 = self
            .scripts
            .record
            .key(self.entry_key(name))
            .arg(scheduled_at_ms)
            .arg(task.to_string())
            .arg(opt_ms(next_run_ms))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(command)?;
        Ok(())
    }
}

fn connect_store(config: Config) -> BoxFuture<Result<Arc<dyn PeriodicStore>>> {
    Box::pin(async move {
        let store: Arc<dyn PeriodicStore> = Arc::new(RedisPeriodicStore::connect(&config).await?);
        Ok(store)
    })
}

machinery_core::__private::inventory::submit! {
    PeriodicStoreFactory {
        schemes: &["redis", "rediss", "redis+unix", "unix"],
        connect: connect_store,
    }
}
