//! Connections and the state shared by the broker and the backend of one engine.

use std::sync::Mutex;
use std::time::Duration;

use machinery_core::Config;
use machinery_core::config::redact_url;
use machinery_core::engine::StoreId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::scripts::Scripts;

/// Connections for blocking reads, one per concurrent read (Redis serves one command
/// of a connection at a time, so blocked readers cannot share one), kept for reuse.
#[derive(Debug, Default)]
pub(crate) struct BlockingPool {
    idle: Mutex<Vec<MultiplexedConnection>>,
}

/// Idle blocking connections kept per broker; more are closed after use.
const MAX_IDLE_BLOCKING: usize = 8;

impl BlockingPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<MultiplexedConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection, or a new one.
    pub(crate) async fn take(&self, engine: &Engine) -> Result<MultiplexedConnection> {
        let idle = self.lock().pop();
        match idle {
            Some(c) => Ok(c),
            None => engine.blocking_connection().await,
        }
    }

    /// Returns a connection after a read that completed normally. A connection whose read
    /// failed or was cancelled is dropped instead: its state is unknown.
    pub(crate) fn put(&self, conn: MultiplexedConnection) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE_BLOCKING {
            idle.push(conn);
        }
    }
}

/// One Redis server as seen by this process: the shared auto-reconnecting connection
/// for everything that does not block, and how to open blocking ones.
pub(crate) struct Engine {
    pub(crate) client: Client,
    pub(crate) conn: ConnectionManager,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    /// Not a cluster node (known from `INFO cluster`): there a subscriber count covers
    /// every subscriber, so a final state is published only to channels somebody
    /// listens on. On a cluster node, subscribers of other nodes are not counted.
    pub(crate) single_node: bool,
    pub(crate) url: String,
    pub(crate) config: Settings,
    /// What makes a broker and a backend one store: server, URL, prefix, results TTL.
    pub(crate) store_id: StoreId,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("url", &self.url)
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

fn connect_error(url: &str, e: &redis::RedisError) -> Error {
    // redis-rs errors never contain the password, but say so explicitly for AUTH.
    let url = redact_url(url);
    match (e.kind(), e.code()) {
        (redis::ErrorKind::AuthenticationFailed, _) | (_, Some("WRONGPASS")) => Error::Auth {
            url,
            reason: "authentication failed (wrong password or user)".to_owned(),
        },
        (_, Some("NOAUTH")) => Error::Auth {
            url,
            reason: "authentication required: the server has a password; put it in the URL (redis://:password@host/ or redis://user:password@host/)".to_owned(),
        },
        _ if crate::error::kind_of(e) == machinery_core::ErrorKind::Auth => Error::Auth {
            url,
            reason: e.to_string(),
        },
        _ => Error::Connect {
            url,
            reason: e.to_string(),
        },
    }
}

impl Engine {
    /// Connects to `url` with the timeouts of `config`.
    pub(crate) async fn connect(url: &str, config: &Config) -> Result<Self> {
        let redacted = redact_url(url);
        if url.starts_with("rediss://") {
            // redis-rs uses the process-wide rustls provider; install ring's unless the
            // application installed one already (then this call changes nothing).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::open(url).map_err(|e| Error::Url {
            url: redacted.clone(),
            reason: e.to_string(),
        })?;
        let config = Settings::new(config)?;
        let r = &config.redis;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(r.connect_timeout))
            .set_response_timeout(Some(r.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let connect = client.get_connection_manager_with_config(manager_config);
        // The manager retries its first connection; bound the whole attempt too.
        let limit = r.connect_timeout.saturating_mul(3);
        let conn = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(connect_error(url, &e)),
            Err(_) => {
                return Err(Error::Connect {
                    url: redacted,
                    reason: format!("no answer within {limit:?}"),
                });
            }
        };
        let mut engine = Engine {
            conn,
            keys: Keys::new(&r.key_prefix),
            scripts: Scripts::new(false),
            single_node: false,
            store_id: StoreId::new(
                "redis",
                format!(
                    "{:?} {redacted} {} ttl={:?}",
                    client.get_connection_info().addr(),
                    r.key_prefix,
                    config.results_expire_in
                ),
            ),
            client,
            url: redacted,
            config,
        };
        // Fail now, clearly, if the server refuses us (AUTH, ACL).
        let pong: String = redis::cmd("PING")
            .query_async(&mut engine.conn)
            .await
            .map_err(|e| connect_error(url, &e))?;
        if pong != "PONG" {
            return Err(Error::Protocol(format!("PING answered `{pong}`")));
        }
        // Redis 7 understands script flags (`#!lua`); older servers fail to compile it.
        let probe: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg("#!lua\nreturn 1")
            .arg(0)
            .query_async(&mut engine.conn)
            .await;
        engine.scripts = Scripts::new(probe.is_ok());
        // Unknown (INFO refused by an ACL): assume a cluster, publish every final state.
        let info: redis::RedisResult<String> = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut engine.conn)
            .await;
        engine.single_node = info.is_ok_and(|i| i.contains("cluster_enabled:0"));
        Ok(engine)
    }

    /// A new connection for blocking reads: no reply timeout, since a blocking read
    /// legitimately waits (redis-rs times replies out after 500 ms by default); the
    /// caller bounds each read itself.
    async fn blocking_connection(&self) -> Result<MultiplexedConnection> {
        let timeout = self.config.redis.connect_timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        // The handshake (AUTH, SELECT) is not covered by the connection timeout.
        match tokio::time::timeout(timeout.saturating_mul(2), connect).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::Connect {
                url: self.url.clone(),
                reason: format!("no answer within {:?}", timeout.saturating_mul(2)),
            }),
        }
    }

    /// Runs a pipeline that invokes scripts. A Redis that restarted has forgotten them
    /// (EVALSHA answers NOSCRIPT): they are loaded again and the pipeline runs once more,
    /// which is safe for what the engine pipelines (state writes, publishes whose first
    /// attempt failed as a whole).
    pub(crate) async fn query_scripted<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        match pipe.query_async(&mut self.conn.clone()).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let mut load = redis::pipe();
                for script in self.scripts.all() {
                    load.load_script(script).ignore();
                }
                let () = load.query_async(&mut self.conn.clone()).await?;
                Ok(pipe.query_async(&mut self.conn.clone()).await?)
            }
            r => Ok(r?),
        }
    }

    /// The results TTL in milliseconds, 0 for none.
    pub(crate) fn ttl_ms(&self) -> u64 {
        self.config
            .results_ttl()
            .map_or(0, |ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }
}
