//! Redis broker and result backend for [`machinery_core`]: what you scale out on —
//! many workers on many machines sharing one Redis, losing nothing when a worker dies.
//!
//! Depend on it beside `machinery-core` and link it (`use machinery_redis as _;`, or
//! call [`connect`]); then a `redis://` URL in the configuration selects it:
//!
//! ```no_run
//! use machinery_core::prelude::*;
//! use machinery_core::Config;
//! use machinery_redis as _;
//!
//! #[task]
//! async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
//!     Ok(a + b)
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), machinery_core::Error> {
//!     let mut config = Config::default();
//!     config.broker = "redis://127.0.0.1:6379/".into();
//!     let server = Server::from_config(config).await?;
//!     server.install();
//!     let worker = Worker::auto().concurrency(16).spawn()?;
//!     assert_eq!(add::send(1, 2).await?.get().await?, 3);
//!     worker.shutdown().await
//! }
//! ```
//!
//! # Design
//!
//! **Sorted sets and Lua**, not Streams: a queue is a ready set ordered by priority
//! (0–9, ten levels; higher first) then age (older first), a set of delayed messages
//! ordered by ETA, and a set of deliveries in flight ordered by lease deadline, beside a
//! hash of payloads. Streams would give consumer groups for free, but no priorities, no
//! per-delivery lease token to fence stale workers with, and no control over batch
//! promotion of delayed messages.
//! Every step is one Lua script, so it is atomic:
//!
//! - **publish** stores payloads and pushes ids (or parks them in the delayed set), and
//!   pushes a wake-up token; a batch is one script call per 2,000 messages, and a send
//!   stores its PENDING state in the same pipeline (one round trip).
//! - **fetch** promotes due delayed messages (up to 5,000 per call) and expired leases,
//!   then takes up to `fetch_batch` messages (one `ZPOPMIN`), highest priority first, giving each a new
//!   lease token, a delivery count and a deadline `visibility_timeout` ahead. When
//!   nothing is ready the worker blocks in `BLPOP` on the queues' wake-up lists, on a
//!   connection of its own with no reply timeout, for at most `block_ms` or until the
//!   next delayed message is due. An idle worker issues that blocking read and nothing
//!   else but heartbeats.
//! - **heartbeats** push the deadline of every running delivery ahead, so a slow task is
//!   not redelivered while its worker lives. A worker that dies stops heartbeating, its
//!   leases expire, and the next fetch on the queue makes those messages ready again:
//!   **at-least-once** delivery.
//! - **complete** settles a finished task in one script: checks the lease token, writes
//!   its state (with the results TTL) and publishes it to waiters, publishes follow-up
//!   messages (callbacks, retries), counts chord members and publishes a chord callback
//!   exactly once, then acknowledges. Completions of a batch run concurrently over the
//!   multiplexed connection (pipelined). **Fencing**: a worker whose lease expired
//!   (paused, partitioned) presents a stale token and writes nothing.
//! - ack, release and dead-letter check the token the same way.
//!
//! Deadlines use the Redis server's clock (`TIME`); ETAs are the producers' wall clock,
//! so producers' clocks should be synchronised (NTP) to the server's.
//!
//! Result waiters subscribe to `<prefix>:done:<uuid>` on one pub/sub connection per
//! process, then read the stored state (the source of truth, which also covers a task
//! that finished before the wait began); the completion publishes the final state on
//! that channel, so a waiter is woken at once, without polling.
//!
//! # Keys
//!
//! Everything lives under `redis.key_prefix` (default `machinery`). The keys of one queue
//! share the hash tag `{q:<queue>}`. The layout is described in the `keys` module:
//! `<prefix>:{q:<queue>}:ready`, `…:delayed`, `…:inflight`, `…:msg`, `…:count`,
//! `…:lease`, `…:seq`, `…:lease_seq`, `…:notify`, `…:dead`; `<prefix>:queues`;
//! `<prefix>:state:<uuid>`; `<prefix>:chord:<group>` and `<prefix>:chord:<group>:results`.
//! The engine targets a single Redis node (or a primary with replicas): completion
//! scripts write states and follow-up messages of other queues, which Redis Cluster
//! would refuse across slots.
//!
//! # Connections
//!
//! One auto-reconnecting `ConnectionManager` per broker or backend for everything that
//! does not block, one blocking connection per consuming broker, one pub/sub connection
//! per backend with waiters. URLs: `redis://[user[:password]@]host:port[/db]`,
//! `rediss://…` (TLS through rustls with the ring provider, certificates checked against
//! the system's roots; `#insecure` at the end skips verification, for self-signed test
//! servers only) and `redis+unix:///path/to/socket` (`unix://` too). Passwords never
//! appear in logs, `Debug` output or errors.

mod backend;
mod broker;
mod conn;
mod error;
mod keys;
mod periodic;
mod scripts;

use std::sync::Arc;

use machinery_core::__private::inventory;
use machinery_core::backend::ResultBackend;
use machinery_core::broker::Broker;
use machinery_core::{BoxFuture, Config, EngineFactory};

pub use backend::RedisBackend;
pub use broker::RedisBroker;
pub use error::{Error, Result};
pub use periodic::RedisPeriodicStore;

/// Connects a broker to `config.broker` and a result backend to the result backend
/// URL; when both are the same Redis they share nothing but the server, and the broker
/// settles tasks in one script with the backend's writes.
///
/// # Errors
/// URL and connection errors (the URL in them redacted).
pub async fn connect(config: &Config) -> Result<(RedisBroker, RedisBackend)> {
    let broker = conn::Engine::connect(&config.broker, config).await?;
    let backend = conn::Engine::connect(config.result_backend_url(), config).await?;
    Ok((
        RedisBroker::new(Arc::new(broker)),
        RedisBackend::new(Arc::new(backend)),
    ))
}

fn connect_broker(config: Config) -> BoxFuture<machinery_core::Result<Arc<dyn Broker>>> {
    Box::pin(async move {
        let engine = conn::Engine::connect(&config.broker, &config).await?;
        Ok(Arc::new(RedisBroker::new(Arc::new(engine))) as Arc<dyn Broker>)
    })
}

fn connect_backend(config: Config) -> BoxFuture<machinery_core::Result<Arc<dyn ResultBackend>>> {
    Box::pin(async move {
        let engine = conn::Engine::connect(config.result_backend_url(), &config).await?;
        Ok(Arc::new(RedisBackend::new(Arc::new(engine))) as Arc<dyn ResultBackend>)
    })
}

inventory::submit! {
    EngineFactory {
        schemes: &["redis", "rediss", "redis+unix", "unix"],
        broker: connect_broker,
        backend: connect_backend,
    }
}
