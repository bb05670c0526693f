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
//! **Sorted sets and Lua**, not Streams. A queue is a *ready* set ordered by priority,
//! then age; a *delayed* set ordered by ETA; an *in-flight* set ordered by lease
//! deadline; and a hash of payloads. Streams would give consumer groups for free, but no
//! priorities, no per-delivery lease token to fence stale workers with, and no control
//! over batch promotion of delayed messages. Every step is one Lua script (`src/lua/`),
//! so it is atomic; scripts run on the server's clock (`TIME`).
//!
//! **Script protocol**, as BullMQ writes its scripts: every key a script touches is
//! passed in `KEYS` (the eight keys of its queue first, then per-task keys such as
//! states and chords), so Redis Cluster can check the call's slot; no script builds a
//! key name. Each script opens with a header listing its `KEYS`, `ARGV` and reply; one
//! encoder struct per script (`scripts.rs`) builds both lists and one decoder at the top
//! of the script reads them. The complete script's arguments come in sections
//! (deliveries, states, messages, chord members), each record of fixed width, with the
//! counts up front. Key names come from one table (below), which a unit test checks
//! against the code that builds them and against this page.
//!
//! **Priorities**: ten levels, 0–9, higher first, oldest first within a level (a value
//! above 9 counts as 9). A message's id is `<priority>:<sequence>` and its score in the
//! ready set is `(9 − priority) · 10¹³ + sequence` (written once, `ready_score` in
//! `lua/lib.lua`; the `pending` listing runs in a script to use it), so its lowest
//! ranks are the next messages in order, and a message that comes back (expired lease,
//! release) takes its old place again rather than going to the back. (Ready *lists*,
//! one per level, were the alternative: they cost a pop per level, and a message coming
//! back loses its place or jumps the whole level.)
//!
//! - **publish** stores the payloads and queues the ids (or parks them in the delayed
//!   set when their ETA is ahead): one script call per queue and 1,000 messages, followed
//!   in the same pipeline by one wake-up token per queue. A send stores its PENDING state
//!   in the same pipeline: **one round trip**. Oversized payloads (`max_message_bytes`) are refused before anything
//!   is sent.
//! - **fetch** first promotes due delayed messages (up to 5,000 per call, so 10,000 tasks
//!   due in the same second all start within about a second, none before its ETA) and
//!   expired leases (up to 1,000), then takes up to `min(max, redis.fetch_batch)`
//!   messages, each with a new lease token, one more delivery and a lease deadline
//!   `visibility_timeout` ahead: **one round trip per batch**. A worker consuming several
//!   queues runs the script per queue (each queue is its own hash slot), starting with a
//!   different queue each time, so a busy queue does not starve the others. When nothing
//!   is ready, the worker blocks in one `BLPOP` on the queues' wake-up lists (they share
//!   one slot for that) for at most
//!   `redis.block_ms`, or until the next delayed message or lease deadline, then runs the
//!   script again. A worker of one queue sends the script in the same pipeline as the
//!   `BLPOP`: Redis runs it the moment the read returns, so a new task costs no round
//!   trip between wake-up and fetch; and after a fetch that took fewer messages than it
//!   asked for (the queue is drained), its next fetch blocks first (anything queued
//!   since pushed a wake-up token, so the read returns at once). An idle worker sends
//!   one blocking read per `block_ms` and one script call with it. A fetch cancelled
//!   midway (a worker stopping) hands what it took straight back, uncounted.
//! - **heartbeats** (`extend`, one script call for every delivery a worker holds, every
//!   `visibility_timeout / 3`) push lease deadlines ahead, so a slow task is not
//!   delivered twice while its worker lives. A worker that dies (SIGKILL, OOM, lost
//!   node) stops heartbeating; its leases expire and the next fetch makes those
//!   messages ready again with a higher delivery count: **at-least-once** delivery.
//!   Past `max_deliveries` the worker dead-letters the message.
//! - **complete** settles a batch of finished tasks (up to 256) in **one round trip**:
//!   one script call per queue, in one pipeline. Per task, the script checks the lease
//!   token, writes the final state (`SET … PX <results TTL>`, no expiry when the TTL is
//!   0) and `PUBLISH`es it to waiters, stores the states of chain steps a failure
//!   cancelled, publishes follow-up messages (callbacks, retries), counts a chord member
//!   and publishes the chord callback exactly once, starts the chord's TTL when this is
//!   its callback's final state, and acknowledges, or moves the message to the
//!   dead-letter queue (the completion's `dead_letter`) in the same step as its
//!   FAILURE. A RETRY is written without TTL and only over a non-final state. A task
//!   revoked while it ran (its stored state is REVOKED, the completion's is not) is
//!   refused in the same script: nothing of that completion is written, published or
//!   acknowledged, its lease is kept, and it gets
//!   [`Error::Revoked`](machinery_core::Error::Revoked) (the worker settles it again,
//!   as revoked); the check is one `GET` of the task's state per completion.
//! - **State lifetimes**: a non-final state (PENDING, RECEIVED, STARTED, RETRY) has no
//!   TTL; a final one (SUCCESS, FAILURE, REVOKED) the results TTL from its write. A
//!   non-final write never replaces a final state, and a SUCCESS or FAILURE never
//!   replaces a REVOKED one: `ResultBackend::store` writes them through the `store`
//!   script, which reads the stored state's `state` field (walking the MessagePack map,
//!   see `lua/lib.lua`) and leaves it in place. The PENDING states written when tasks
//!   are sent are plain `SET`s in the send's pipeline (a UUID sent again starts over,
//!   even after a revoke). A chord's hashes have no TTL until its callback's
//!   state is final. `forget` deletes a state and publishes `forgotten` on its `done`
//!   channel: waiters read again, find nothing and return `ResultMissing`. What belongs to
//!   *another* queue (a chain's next step, a chord kept with its callback on another
//!   queue, the state of a step that runs elsewhere) lives in another slot: for those
//!   tasks the worker first checks its leases (`extend`), does that work in one more
//!   round trip, then completes as above. A crash in between repeats that work when the
//!   task runs again (at least once), it never loses it; a chord counts each member
//!   once however often it is recorded.
//! - **Fencing**: every settling step (complete, ack, release, dead-letter, extend)
//!   checks the delivery's lease token in the same script. A worker that lost its lease
//!   (paused past the visibility timeout, partitioned) and comes back presents a stale
//!   token: it writes nothing and gets [`LeaseLost`](machinery_core::Error::LeaseLost)
//!   (`false` from `extend`), while the worker that now holds the message settles it.
//! - **Garbage**: a payload the worker cannot decode is dead-lettered by the worker with
//!   a reason. A member pushed into a ready set by anything other than this engine is
//!   delivered as a payload of its own (and dead-lettered when it is not a message), so
//!   it never blocks the queue. Dead letters are listed, requeued (atomically, in
//!   batches) and purged through the broker's admin plane
//!   ([`BrokerAdmin`](machinery_core::engine::BrokerAdmin)).
//! - **Listings** (`pending`, `delayed`, `depth`) compare ETAs with the server's clock:
//!   a delayed message whose ETA has passed is listed and counted as ready, in its place
//!   by priority and age, even before a fetch promotes it.
//! - **Paged listings** (`BrokerAdmin::tasks`) never read a whole queue: one script call
//!   (`page.lua`) per page of at most 1,000, O(log n + page) wherever the page starts.
//!   The cursor of a sorted set (ready, delayed, in flight, failures) is the last member
//!   listed and its score, so members consumed before it move nothing (keyset
//!   pagination; its place among members of equal score is found by binary search on
//!   rank). The dead-letter list is paged by index, realigned on the last entry listed.
//!   `find` and `delete_pending` have no UUID index to use (one would cost every send a
//!   write): they walk the payload hash with `HSCAN`, 5,000 fields per script call,
//!   comparing each payload's first field (the UUID) without decoding it — about 0.2 s
//!   per 100,000 messages; `purge` deletes 2,000 messages per call.
//! - **Pause**: a flag per queue, checked by the fetch script (one `EXISTS` per call):
//!   a paused queue hands out and promotes nothing, and reports nothing due, so its
//!   workers block on the wake-up list as on an empty queue; `resume` pushes a wake-up
//!   token. The flag lives in Redis: it outlives workers and restarts.
//! - **Worker registry and statistics**: a record per worker (`SET … PX`, indexed by
//!   expiry on the server's clock); per queue and minute a hash of counters added with
//!   `HINCRBY`, one pipeline per batch, expiring the statistics window after its minute;
//!   recent failures in a set per queue, the newest 10,000 within the window.
//!
//! The broker writes states itself when the result backend is one of this crate's on the
//! same server, prefix and results TTL (equal
//! [`StoreId`](machinery_core::engine::StoreId)s). With another result backend it falls
//! back to
//! [`complete_step_by_step`](machinery_core::engine::complete_step_by_step): correct, but
//! several round trips and no atomic fencing of the state write.
//!
//! **Result waiters** (`AsyncResult::get`) subscribe to `<prefix>:done:<uuid>` on one
//! pub/sub connection shared by every waiter of the process, then read the stored
//! state, which is the source of truth (it also covers a task that finished before the
//! wait began); the completion publishes the final state on that channel, so a waiter
//! wakes within a millisecond, without polling. When the pub/sub connection drops, every
//! waiter reads the state again and subscribes on a new one. While anybody waits, the
//! connection is pinged every two response timeouts, so one that died silently (a
//! partition, a frozen server) is noticed too instead of leaving waiters hanging.
//!
//! **Revocations** (`Server::revoke`, `ResultBackend::revoke`): one script call records
//! the revocation in `<prefix>:{revoked}` (scored by its end: now plus the results TTL,
//! `+inf` without one) with its reason in `<prefix>:{revoked}:reason`, drops ended ones
//! and publishes `<uuid>\n<until>\n<reason>` on `<prefix>:revoked`, in the round trip
//! that reads the task's state; then a compare-and-set script replaces a PENDING or
//! RETRY state with REVOKED and publishes it on the task's `done` channel (a second
//! round trip; a running task is left to its worker, a finished one as it is). Workers
//! watch the channel on one pub/sub connection each (pinged every 5 s, so a connection
//! that died silently ends the watch and the worker subscribes again), and read the
//! set when they start: revocations outlive worker restarts until their end, and reach
//! a running task within a millisecond or so of the revoke.
//! **Progress** (`TaskContext::set_progress`): a worker writes a running task's value
//! with `SET <prefix>:{q:<queue>}:progress:<uuid>` (results TTL) and `PUBLISH`es it on
//! `<prefix>:progress:<uuid>` in one pipeline, at most once per `progress_interval` per
//! task. `AsyncResult::progress_stream` subscribes to that channel on the same shared
//! pub/sub connection as the result waiters, then reads the key, and ends on the task's
//! `done` message: no polling.
//!
//! **Clocks**: lease deadlines and the "now" that ETAs are compared with are the Redis
//! server's (`TIME` inside the scripts); ETAs themselves are the producers' wall clock,
//! so producers should keep their clocks synchronised (NTP) with the server's.
//!
//! # Keys
//!
//! Everything lives under `redis.key_prefix` (default `machinery`). The keys of a queue,
//! the states of the tasks sent to it and the chords whose callback goes to it share the
//! hash tag `{q:<queue>}`: **one Redis Cluster slot per queue**, and every script and
//! multi-key command works within one slot.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{q:<queue>}:ready` | zset | ids ready to deliver (score: priority, then age; the rule is `ready_score` in `lua/lib.lua`) |
//! | `<p>:{q:<queue>}:delayed` | zset | ids waiting for their ETA (score: ETA, ms) |
//! | `<p>:{q:<queue>}:inflight` | zset | deliveries not settled, as `<id>/<lease token>` (score: lease deadline, ms); a delivery is held while its member is there; `~` (score +inf) keeps the set, and its skip-list encoding, when nothing is in flight |
//! | `<p>:{q:<queue>}:msg` | hash | id → payload |
//! | `<p>:{q:<queue>}:count` | hash | id → deliveries that ended unsettled (lease expired, released); most messages have none |
//! | `<p>:{q:<queue>}:seq` | string | message id counter |
//! | `<p>:{q:<queue>}:lease_seq` | string | lease token counter |
//! | `<p>:{q:<queue>}:dead` | list | dead letters: `<reason length>:<reason><payload>` |
//! | `<p>:{q:<queue>}:state:<uuid>` | string | the state (MessagePack) of a task sent to the queue: no TTL while PENDING, RECEIVED, STARTED or RETRY; the results TTL from the write of its SUCCESS, FAILURE or REVOKED, which no non-final write replaces (nor a SUCCESS or FAILURE a REVOKED: only a new send does) |
//! | `<p>:{q:<queue>}:progress:<uuid>` | string | the last progress value (MessagePack) a task sent to the queue reported (`TaskContext::set_progress`), written at most once per `progress_interval` while it runs; the results TTL from each write (none when results are kept forever) |
//! | `<p>:{q:<queue>}:chord:<group>` | hash | a chord whose callback goes to the queue: count, callback payload, priority, fired, failure; no TTL until the callback's state is final, then the results TTL |
//! | `<p>:{q:<queue>}:chord:<group>:results` | hash | member index → encoded result; expires with the chord's hash |
//! | `<p>:{q:<queue>}:unique:<key>` | string | a unique task's lock: the UUID of the task that holds it, with the lock's TTL (PX); deleted when that task reaches its final state (unless it keeps the lock until the TTL) |
//! | `<p>:{q:<queue>}:paused` | string | `1` while the queue is paused: fetch hands out nothing from it (checked by `fetch.lua`) |
//! | `<p>:{q:<queue>}:failed` | zset | task UUIDs that ended in FAILURE (score: when, ms); at most 10,000, none older than the statistics window |
//! | `<p>:{q:<queue>}:stats` | zset | the minutes that have a statistics bucket (member and score: the minute, ms / 60,000) |
//! | `<p>:{q:<queue>}:stats:<minute>` | hash | one minute's statistics: `<task>:<field>` → count (`processed`, `failed`, `retried`, `dead`, `run_sum`, `run:<bucket>`, `wait_sum`, `wait:<bucket>`); expires the statistics window after its minute |
//! | `<p>:{wake}:<queue>` | list | wake-up tokens for the queue's blocked workers (at most 16); one slot for all queues, so a worker blocks on all its queues in one `BLPOP` |
//! | `<p>:queues` | set | every queue published to (for listings; written by clients, one key per command) |
//! | `<p>:{rate:<key>}` | string | a rate limit's theoretical arrival time (µs, server clock; `<key>` is `task:<name>` or `queue:<queue>`), expiring once past (`lua/rate.lua`) |
//! | `<p>:{workers}:all` | zset | the ids of registered workers (score: when the record expires, ms, server clock) |
//! | `<p>:{workers}:worker:<id>` | string | a worker's registry record (MessagePack `WorkerInfo`), with the TTL it was written with |
//! | `<p>:done:<uuid>` | pub/sub channel | the final state, published when written; `forgotten` when the state is deleted (a channel, not a key) |
//! | `<p>:{revoked}` | zset | revoked task UUIDs (score: when the revocation ends, ms since the Unix epoch: the results TTL after the revoke; `+inf` when results are kept for ever); ended ones are dropped (up to 1,000 per call) whenever one is recorded or the set is read |
//! | `<p>:{revoked}:reason` | hash | task UUID → the reason of its revocation in `<p>:{revoked}` (same slot, dropped with it) |
//! | `<p>:revoked` | pub/sub channel | each revocation as it is recorded, `<uuid>\n<until ms, empty for ever>\n<reason>`, for the workers watching (a channel, not a key) |
//! | `<p>:progress:<uuid>` | pub/sub channel | each progress value of the task, published with its write (a channel, not a key) |
//! | `<p>:{periodic}:entries` | set | every periodic entry name |
//! | `<p>:{periodic}:entry:<name>` | hash | a periodic entry: `spec`, `tz`, `paused` (`0`/`1`), `next_run`, `last_run` (ms), `last_task` (UUID), `claimed` (ms: the claim watermark) |
//! | `<p>:{wf:<workflow>}` | string | a workflow's record (its steps and their tasks, MessagePack written by core), written once when a chain, group or chord is sent; the results TTL from that write (none when results are kept forever); its own slot |
//!
//! A task's state is found by its UUID *and* queue, which
//! [`AsyncResult`](machinery_core::AsyncResult) carries. On Redis 7 the scripts start
//! with `#!lua`, so Redis itself refuses a script that strays out of its slot; the test
//! suite runs every conformance test against a cluster node that enforces this. The
//! engine connects to one node, though (or a primary with replicas): it does not follow
//! a multi-node cluster's `MOVED` redirections, which needs redis-rs's cluster client.
//! Redis 6.2 or later is required (`LPOP` with a count).
//!
//! # Configuration
//!
//! Linking this crate adds the `redis`, `rediss`, `redis+unix` and `unix` URL schemes
//! and the `redis:` section (`MACHINERY_REDIS_*` variables) to every
//! [`Config`]: see [`RedisConfig`] for its keys, read with
//! `config.section::<RedisConfig>()`. The section is validated when the configuration
//! is loaded, and again when the engine connects.
//!
//! # Connections
//!
//! One auto-reconnecting `ConnectionManager` per broker or backend for every command
//! that does not block (`redis.connect_timeout_ms`, `redis.response_timeout_ms`); one
//! connection per concurrent blocking read, with no reply timeout of its own (each read
//! is bounded by its block time plus the response timeout instead); one pub/sub
//! connection per backend with waiters. Redis down at start: [`connect`] and
//! `Server::from_config` fail with a clear error within a few connect timeouts. Redis
//! lost while running: calls fail with an error after the response timeout (nothing
//! hangs), later calls reconnect by themselves; workers log, back off and resume, and
//! result waiters retry within their timeout.
//!
//! URLs: `redis://[user[:password]@]host:port[/db]`, `rediss://…` (TLS through rustls
//! with the ring provider, certificates checked against the system's roots; `#insecure`
//! at the end skips verification, for self-signed test servers only) and
//! `redis+unix:///path/to/socket` (`unix://` too). Passwords never appear in logs,
//! `Debug` output or errors.

mod backend;
mod broker;
mod config;
mod conn;
mod error;
mod keys;
mod periodic;
mod scripts;

use std::sync::Arc;

use machinery_core::__private::inventory;
use machinery_core::Config;
use machinery_core::engine::{BoxFuture, Broker, EngineFactory, ResultBackend};

pub use backend::RedisBackend;
pub use broker::RedisBroker;
pub use config::RedisConfig;
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

/// Parses a Redis URL the way connecting does, without connecting.
fn check_url(url: &str) -> Result<(), String> {
    match redis::Client::open(url) {
        Ok(_) => Ok(()),
        // redis-rs does not quote the URL; make sure no password could be echoed.
        Err(e) => Err(e.to_string().replace(url, "<the URL>")),
    }
}

inventory::submit! {
    EngineFactory {
        schemes: &["redis", "rediss", "redis+unix", "unix"],
        broker: connect_broker,
        backend: connect_backend,
        check_url,
    }
}
