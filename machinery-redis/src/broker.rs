//! The Redis broker.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use machinery_core::backend::ResultBackend;
use machinery_core::broker::{
    Broker, Completion, DeadLetter, Delivery, Outgoing, QueueDepth, complete_step_by_step,
};
use machinery_core::{Error as CoreError, Result as CoreResult, State, TaskState};
use redis::Value;
use tokio::sync::oneshot;

use crate::backend::{RedisBackend, Write};
use crate::conn::{BlockingPool, Engine};
use crate::error::{Error, Result};

/// How late Redis may time out a blocked client (its `hz` is 10 by default).
const BLOCK_GRANULARITY: Duration = Duration::from_millis(100);

/// Most messages one fetch script call takes, whatever `redis.fetch_batch` says: a
/// script's arguments to one command are bounded (Lua's stack).
const MAX_FETCH: usize = 1_000;

/// Dead letters moved back per script call.
const REQUEUE_CHUNK: usize = 1_000;

/// Messages per publish script call: large enough to amortise the round trip, small
/// enough not to stall Redis.
const PUBLISH_CHUNK: usize = 1_000;

/// The Redis broker. See the [crate docs](crate) for the design.
///
/// Cheap to share: one auto-reconnecting connection for every non-blocking command, and
/// one connection per concurrent blocking read (kept for reuse).
#[derive(Debug)]
pub struct RedisBroker {
    pub(crate) engine: Arc<Engine>,
    blocking: Arc<BlockingPool>,
    visibility: Duration,
    /// Which consumed queue a fetch looks at first, so one busy queue cannot starve the
    /// others of a worker consuming several.
    rotation: AtomicUsize,
    /// Queues whose last fetch (by a worker consuming that queue alone) took every ready
    /// message, with when their next delayed message or lease deadline comes due: the
    /// next such fetch blocks for a wake-up token at once instead of first running a
    /// script that would find nothing (anything queued since pushed a token, so the read
    /// returns at once, and the script pipelined behind it runs then).
    drained: Mutex<HashMap<String, Option<tokio::time::Instant>>>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn receipt(id: &str, token: &str) -> String {
    format!("{id}/{token}")
}

fn split_receipt(d: &Delivery) -> CoreResult<(&str, &str)> {
    d.receipt
        .rsplit_once('/')
        .ok_or_else(|| CoreError::LeaseLost {
            receipt: d.receipt.clone(),
        })
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// What one round of fetch scripts took.
#[derive(Debug, Default)]
struct Taken {
    deliveries: Vec<Delivery>,
    /// When the next delayed message or lease deadline of these queues is due.
    next_due: Option<Duration>,
}

/// One fetch script call on one queue: up to `max` deliveries, and how long until the
/// queue's next delayed message or lease deadline is due (server clock).
async fn fetch_queue(
    engine: &Engine,
    queue: &str,
    max: usize,
    visibility_ms: u64,
) -> Result<(Vec<Delivery>, Option<Duration>)> {
    let reply: Vec<Value> = fetch_invocation(engine, queue, max, visibility_ms)
        .invoke_async(&mut engine.conn.clone())
        .await?;
    fetched(engine, queue, &reply)
}

fn fetch_invocation<'a>(
    engine: &'a Engine,
    queue: &str,
    max: usize,
    visibility_ms: u64,
) -> redis::ScriptInvocation<'a> {
    let mut invocation = engine.scripts.fetch.key(engine.keys.ready(queue));
    invocation
        .arg(engine.keys.prefix())
        .arg(queue)
        .arg(max)
        .arg(visibility_ms);
    invocation
}

/// Reads a fetch script's reply.
fn fetched(
    engine: &Engine,
    queue: &str,
    reply: &[Value],
) -> Result<(Vec<Delivery>, Option<Duration>)> {
    let next_due = reply
        .first()
        .and_then(int)
        .and_then(|n| u64::try_from(n).ok())
        .map(Duration::from_millis);
    if reply.get(1).and_then(int) == Some(1) {
        // More are ready than this worker takes: wake another one, off the fetch path.
        let key = engine.keys.wake(queue);
        let mut conn = engine.conn.clone();
        tokio::spawn(async move {
            let _: redis::RedisResult<()> = wake_pipe(&[key]).query_async(&mut conn).await;
        });
    }
    let mut out = Vec::with_capacity((reply.len().saturating_sub(2)) / 4);
    for chunk in reply.get(2..).unwrap_or_default().chunks(4) {
        let [id, token, count, payload] = chunk else {
            return Err(Error::Protocol("fetch returned a partial entry".into()));
        };
        let (Some(id), Some(token), Some(count), Some(payload)) =
            (text(id), text(token), int(count), bytes(payload))
        else {
            return Err(Error::Protocol("fetch returned a malformed entry".into()));
        };
        out.push(Delivery {
            payload,
            queue: queue.to_owned(),
            delivery_count: u32::try_from(count).unwrap_or(u32::MAX),
            receipt: receipt(&id, &token),
        });
    }
    Ok((out, next_due))
}

/// Pushes one wake-up token to each list (kept at most 16 long: a token only says "look").
fn wake_pipe(keys: &[String]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    add_wakes(&mut pipe, keys);
    pipe
}

fn add_wakes(pipe: &mut redis::Pipeline, keys: &[String]) {
    for k in keys {
        pipe.cmd("LPUSH").arg(k).arg(1).ignore();
        pipe.cmd("LTRIM").arg(k).arg(0).arg(15).ignore();
    }
}

/// Hands back deliveries nobody will run (their fetch was cancelled): ready again at
/// their old place, this delivery not counted.
async fn give_back(engine: &Engine, deliveries: Vec<Delivery>) {
    for d in deliveries {
        let Some((id, token)) = d.receipt.rsplit_once('/') else {
            continue;
        };
        let mut pipe = redis::pipe();
        pipe.invoke_script(
            engine
                .scripts
                .settle
                .key(engine.keys.ready(&d.queue))
                .arg(engine.keys.prefix())
                .arg(&d.queue)
                .arg(id)
                .arg(token)
                .arg("return")
                .arg(0),
        );
        add_wakes(&mut pipe, &[engine.keys.wake(&d.queue)]);
        let r: Result<(i64,)> = engine.query_scripted(&pipe).await;
        if let Err(e) = r {
            tracing::warn!(queue = %d.queue, error = %e, "could not hand back a message fetched for a cancelled fetch; it is delivered again after the visibility timeout");
        }
    }
}

/// Pushes a wake-up token to each list when dropped while armed (`engine` set): a
/// blocking read cancelled midway may have consumed a token meant for another worker.
struct Rewake {
    engine: Option<Arc<Engine>>,
    keys: Vec<String>,
}

impl Drop for Rewake {
    fn drop(&mut self) {
        let (Some(engine), Ok(runtime)) =
            (self.engine.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let keys = std::mem::take(&mut self.keys);
        runtime.spawn(async move {
            let _: redis::RedisResult<()> =
                wake_pipe(&keys).query_async(&mut engine.conn.clone()).await;
        });
    }
}

/// A message's arguments to the publish and complete scripts: ETA, priority, payload
/// (see `lib.lua`'s `enqueue`).
fn message_args(invocation: &mut redis::ScriptInvocation<'_>, m: &Outgoing) {
    invocation
        .arg(m.eta.unwrap_or(0))
        .arg(m.priority.min(9))
        .arg(m.payload.as_slice());
}

/// The positions of `items` grouped by queue (`queue_of`), queues in order of first
/// appearance: one script call per queue, since each queue is its own cluster slot.
fn group_by_queue<'a, T: 'a>(
    items: impl IntoIterator<Item = (usize, &'a T)>,
    queue_of: impl Fn(&'a T) -> &'a str,
) -> Vec<(&'a str, Vec<usize>)> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, item) in items {
        let queue = queue_of(item);
        match groups.iter_mut().find(|(q, _)| *q == queue) {
            Some((_, list)) => list.push(i),
            None => groups.push((queue, vec![i])),
        }
    }
    groups
}

/// `messages` grouped by queue, queues in order of first appearance, messages in order.
fn by_queue(messages: &[Outgoing]) -> Vec<(&str, Vec<&Outgoing>)> {
    group_by_queue(messages.iter().enumerate(), |m| &m.queue)
        .into_iter()
        .map(|(q, list)| (q, list.into_iter().map(|i| &messages[i]).collect()))
        .collect()
}

/// A message id's place in the ready set, as `lib.lua`'s `id_score` computes it:
/// priority (higher first), then sequence.
fn ready_score(id: &str) -> f64 {
    let parsed = id.split_once(':').and_then(|(p, seq)| {
        let p: u8 = p.parse().ok().filter(|p| *p <= 9)?;
        let seq: u64 = seq.parse().ok()?;
        Some((9.0 - f64::from(p)) * 1e13 + seq as f64)
    });
    parsed.unwrap_or(9e13)
}

/// Whether a completion writes to other queues than its delivery's: a state, a message
/// or a chord kept elsewhere (another Redis Cluster slot).
fn reaches_other_queues(c: &Completion) -> bool {
    let own = c.delivery.queue.as_str();
    c.state.queue != own
        || c.also_store.iter().any(|s| s.queue != own)
        || c.publish.iter().any(|m| m.queue != own)
        || c.group.as_ref().is_some_and(|g| g.queue != own)
}

/// The chord whose bookkeeping this completion's final state lets expire.
fn ends_chord(c: &Completion) -> Option<uuid::Uuid> {
    c.ends_chord.filter(|_| c.state.state.is_terminal())
}

/// Parses a dead-letter entry: `<reason length>:<reason><payload>`.
fn parse_dead(queue: &str, raw: &[u8]) -> DeadLetter {
    let parsed = raw.iter().position(|b| *b == b':').and_then(|colon| {
        let len: usize = std::str::from_utf8(&raw[..colon]).ok()?.parse().ok()?;
        let rest = &raw[colon + 1..];
        (rest.len() >= len).then(|| {
            (
                String::from_utf8_lossy(&rest[..len]).into_owned(),
                rest[len..].to_vec(),
            )
        })
    });
    let (reason, payload) =
        parsed.unwrap_or_else(|| ("(unreadable dead-letter entry)".into(), raw.to_vec()));
    DeadLetter {
        queue: queue.to_owned(),
        reason,
        payload,
    }
}

impl RedisBroker {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let visibility = engine.config.visibility_timeout;
        RedisBroker {
            engine,
            blocking: Arc::default(),
            visibility,
            rotation: AtomicUsize::new(0),
            drained: Mutex::new(HashMap::new()),
        }
    }

    fn drained(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<tokio::time::Instant>>> {
        self.drained.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conn(&self) -> redis::aio::ConnectionManager {
        self.engine.conn.clone()
    }

    fn prefix(&self) -> &str {
        self.engine.keys.prefix()
    }

    fn check_sizes(&self, messages: &[Outgoing]) -> CoreResult<()> {
        let limit = self.engine.config.max_message_bytes;
        match messages.iter().find(|m| m.payload.len() > limit) {
            Some(m) => Err(CoreError::MessageTooLarge {
                size: m.payload.len(),
                limit,
            }),
            None => Ok(()),
        }
    }

    /// Runs the fetch script on `queues` in order until `max` messages are taken.
    ///
    /// Cancellation-safe: the scripts run in a task of their own, and when the caller
    /// went away before the reply arrived (a worker stopping while it fetched), the
    /// messages taken are handed back at once, uncounted, instead of waiting out their
    /// visibility timeout.
    async fn take(&self, queues: Vec<String>, max: usize) -> Result<Taken> {
        let engine = self.engine.clone();
        let visibility_ms = millis(self.visibility);
        let (tx, rx) = oneshot::channel::<Result<Taken>>();
        tokio::spawn(async move {
            let mut taken = Taken::default();
            let mut failure = None;
            for q in &queues {
                if taken.deliveries.len() >= max || tx.is_closed() {
                    break;
                }
                let want = max - taken.deliveries.len();
                match fetch_queue(&engine, q, want, visibility_ms).await {
                    Ok((batch, due)) => {
                        taken.deliveries.extend(batch);
                        taken.next_due = match (taken.next_due, due) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            // What was taken is handed out even when a later queue failed.
            let reply = match failure {
                Some(e) if taken.deliveries.is_empty() => Err(e),
                Some(e) => {
                    tracing::warn!(error = %e, "fetch failed on one of several queues");
                    Ok(taken)
                }
                None => Ok(taken),
            };
            if let Err(Ok(orphans)) = tx.send(reply) {
                give_back(&engine, orphans.deliveries).await;
            }
        });
        rx.await
            .map_err(|_| Error::Protocol("the fetch task ended without a reply".into()))?
    }

    /// Blocks on the queues' wake-up lists for at most `block`, on a connection of its
    /// own (a blocked connection would stall every command queued behind it). Returns
    /// whether a wake-up token was taken (`false`: the read timed out) and, for one
    /// queue, what the fetch script pipelined behind the read took: Redis runs it as
    /// soon as the read returns, which saves the round trip between wake-up and fetch.
    async fn block(
        &self,
        queues: &[String],
        block: Duration,
        max: usize,
    ) -> Result<(bool, Option<Taken>)> {
        let conn = self.blocking.take(&self.engine).await?;
        let keys: Vec<String> = queues.iter().map(|q| self.engine.keys.wake(q)).collect();
        let secs = block.as_secs_f64().max(0.001);
        // No reply timeout on this connection; a read that outlives its block time by the
        // response timeout means the connection is dead (a silent network partition).
        let limit = block + self.engine.config.redis.response_timeout;
        let mut blpop = redis::cmd("BLPOP");
        blpop.arg(&keys).arg(secs);
        match queues {
            [queue] => self.block_then_fetch(conn, blpop, queue, max, limit).await,
            _ => self
                .block_only(conn, blpop, keys, limit)
                .await
                .map(|woken| (woken, None)),
        }
    }

    async fn block_only(
        &self,
        mut conn: redis::aio::MultiplexedConnection,
        blpop: redis::Cmd,
        keys: Vec<String>,
        limit: Duration,
    ) -> Result<bool> {
        // Cancelled while blocked (a worker stopping): the wake-up token this read may
        // still consume is pushed back for the other workers.
        let mut rewake = Rewake {
            engine: Some(self.engine.clone()),
            keys,
        };
        let read = blpop.query_async::<Option<(Vec<u8>, Vec<u8>)>>(&mut conn);
        let r = tokio::time::timeout(limit, read).await;
        rewake.engine = None;
        match r {
            Ok(Ok(token)) => {
                self.blocking.put(conn);
                Ok(token.is_some())
            }
            // The connection is dropped: the next read opens a fresh one.
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Error::Protocol(format!(
                "no reply to a blocking read within {limit:?}; reconnecting"
            ))),
        }
    }

    /// The blocking read with the fetch script of `queue` behind it, run by a task of
    /// its own: when the caller is gone (its fetch was cancelled) what the script took
    /// is handed back rather than left leased.
    async fn block_then_fetch(
        &self,
        mut conn: redis::aio::MultiplexedConnection,
        blpop: redis::Cmd,
        queue: &str,
        max: usize,
        limit: Duration,
    ) -> Result<(bool, Option<Taken>)> {
        let engine = self.engine.clone();
        let pool = self.blocking.clone();
        let mut pipe = redis::pipe();
        pipe.add_command(blpop);
        pipe.invoke_script(&fetch_invocation(
            &engine,
            queue,
            max,
            millis(self.visibility),
        ));
        let queue = queue.to_owned();
        let (tx, rx) = oneshot::channel::<Result<(bool, Option<Taken>)>>();
        tokio::spawn(async move {
            let read = pipe.query_async::<(Option<(Vec<u8>, Vec<u8>)>, Vec<Value>)>(&mut conn);
            let reply = match tokio::time::timeout(limit, read).await {
                Ok(Ok((token, reply))) => {
                    pool.put(conn);
                    fetched(&engine, &queue, &reply).map(|(deliveries, next_due)| {
                        (
                            token.is_some(),
                            Some(Taken {
                                deliveries,
                                next_due,
                            }),
                        )
                    })
                }
                // A restarted Redis forgot the script: the caller's next fetch goes the
                // ordinary way, which loads it again.
                Ok(Err(e))
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    pool.put(conn);
                    Ok((true, None))
                }
                // The connection is dropped: the next read opens a fresh one.
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(Error::Protocol(format!(
                    "no reply to a blocking read within {limit:?}; reconnecting"
                ))),
            };
            if let Err(Ok((_, Some(orphans)))) = tx.send(reply) {
                give_back(&engine, orphans.deliveries).await;
            }
        });
        rx.await
            .map_err(|_| Error::Protocol("the blocking fetch ended without a reply".into()))?
    }

    async fn settle(&self, d: &Delivery, action: &str, arg: &str) -> CoreResult<()> {
        let (id, token) = split_receipt(d)?;
        let mut pipe = redis::pipe();
        pipe.invoke_script(
            self.engine
                .scripts
                .settle
                .key(self.engine.keys.ready(&d.queue))
                .arg(self.prefix())
                .arg(&d.queue)
                .arg(id)
                .arg(token)
                .arg(action)
                .arg(arg),
        );
        if action == "release" {
            // Back in the queue: a blocked worker may take it (a token for nothing, when
            // the lease was lost, only makes a worker look once).
            add_wakes(&mut pipe, &[self.engine.keys.wake(&d.queue)]);
        }
        let (held,): (i64,) = self.engine.query_scripted(&pipe).await?;
        if held == 1 {
            Ok(())
        } else {
            Err(CoreError::LeaseLost {
                receipt: d.receipt.clone(),
            })
        }
    }

    /// The script call completing `items` (deliveries of `queue`, each with what of its
    /// work belongs to that queue).
    fn complete_invocation(
        &self,
        queue: &str,
        items: &[(&Completion, &str, &str)],
    ) -> CoreResult<redis::ScriptInvocation<'_>> {
        let mut invocation = self.engine.scripts.complete.prepare_invoke();
        invocation
            .key(self.engine.keys.ready(queue))
            .arg(self.prefix())
            .arg(queue)
            .arg(self.engine.ttl_ms())
            .arg(if self.engine.single_node { "1" } else { "0" })
            .arg(items.len());
        for (c, id, token) in items {
            invocation.arg(*id).arg(*token);
            match &c.dead_letter {
                Some(reason) => invocation.arg("1").arg(reason.as_str()),
                None => invocation.arg("").arg(""),
            };
            // The chord lives under its callback's queue, the state's: here only when
            // that is this queue (else `foreign_work` does it).
            match ends_chord(c).filter(|_| c.state.queue == queue) {
                Some(group) => invocation.arg(group.to_string()),
                None => invocation.arg(""),
            };
            // What of this delivery's work belongs to `queue` (the rest went ahead in
            // `foreign_work`), counted first for the script's layout.
            let states = || {
                std::iter::once(&c.state)
                    .chain(&c.also_store)
                    .filter(|s| s.queue == queue)
            };
            invocation.arg(states().count());
            for state in states() {
                invocation
                    .arg(state.uuid.to_string())
                    .arg(if state.state.is_terminal() { "1" } else { "0" })
                    .arg(state.encode()?);
            }
            let publish = || c.publish.iter().filter(|m| m.queue == queue);
            invocation.arg(publish().count());
            for m in publish() {
                message_args(&mut invocation, m);
            }
            match c.group.as_ref().filter(|g| g.queue == queue) {
                Some(g) => {
                    let success = c.state.state == State::Success;
                    invocation
                        .arg(g.group_uuid.to_string())
                        .arg(g.index)
                        .arg(if success { "1" } else { "0" })
                        .arg(c.state.result.as_deref().unwrap_or_default())
                        .arg(&c.state.name)
                        .arg(c.state.error.as_deref().unwrap_or_default());
                }
                None => {
                    invocation.arg("");
                }
            }
        }
        Ok(invocation)
    }

    /// Does the part of completions that concerns other queues than each delivery's own
    /// (their states, messages and chords live in other cluster slots), all in one round
    /// trip. Runs before the deliveries' own fenced completion, so a crash in between
    /// repeats this work rather than losing it: at least once, like the task itself.
    async fn foreign_work(&self, backend: &RedisBackend, cs: &[&Completion]) -> CoreResult<()> {
        if cs.is_empty() {
            return Ok(());
        }
        let mut states = Vec::new();
        let mut messages = Vec::new();
        let mut pipe = redis::pipe();
        for c in cs {
            let own = c.delivery.queue.as_str();
            states.extend(
                std::iter::once(&c.state)
                    .chain(&c.also_store)
                    .filter(|s| s.queue != own)
                    .cloned(),
            );
            messages.extend(c.publish.iter().filter(|m| m.queue != own).cloned());
            if let Some(g) = c.group.as_ref().filter(|g| g.queue != own)
                && let Some(invocation) = backend.chord_done_invocation(g, &c.state, true)
            {
                pipe.invoke_script(&invocation).ignore();
                add_wakes(&mut pipe, &[self.engine.keys.wake(&g.queue)]);
            }
            if let Some(group) = ends_chord(c).filter(|_| c.state.queue != own) {
                backend.chord_finished_into(&mut pipe, &c.state.queue, group);
            }
        }
        backend.store_into(&mut pipe, &states, Write::Guarded)?;
        for (queue, list) in by_queue(&messages) {
            self.add_publish(&mut pipe, queue, &list);
        }
        let () = self.engine.query_scripted(&pipe).await?;
        Ok(())
    }

    /// Adds the publish script calls for `messages`, all sent to `queue`, to `pipe`, with
    /// the queue's registration and a wake-up for its blocked workers.
    fn add_publish(&self, pipe: &mut redis::Pipeline, queue: &str, messages: &[&Outgoing]) {
        pipe.cmd("SADD")
            .arg(self.engine.keys.queues())
            .arg(queue)
            .ignore();
        for chunk in messages.chunks(PUBLISH_CHUNK) {
            let mut invocation = self.engine.scripts.publish.prepare_invoke();
            invocation
                .key(self.engine.keys.ready(queue))
                .arg(self.prefix())
                .arg(queue);
            for m in chunk {
                message_args(&mut invocation, m);
            }
            pipe.invoke_script(&invocation).ignore();
        }
        add_wakes(pipe, &[self.engine.keys.wake(queue)]);
    }

    /// Publishes `messages` (PENDING states are written by the caller), up to
    /// `PUBLISH_CHUNK` messages per round trip; `first` (state writes) goes ahead of the
    /// first batch.
    async fn publish_raw(&self, first: redis::Pipeline, messages: &[Outgoing]) -> Result<()> {
        let mut pipe = first;
        let mut in_pipe = 0;
        for (queue, list) in by_queue(messages) {
            for chunk in list.chunks(PUBLISH_CHUNK) {
                if in_pipe > 0 && in_pipe + chunk.len() > PUBLISH_CHUNK {
                    let () = self.engine.query_scripted(&pipe).await?;
                    pipe = redis::pipe();
                    in_pipe = 0;
                }
                self.add_publish(&mut pipe, queue, chunk);
                in_pipe += chunk.len();
            }
        }
        let () = self.engine.query_scripted(&pipe).await?;
        Ok(())
    }

    fn colocated<'a>(&self, backend: &'a dyn ResultBackend) -> Option<&'a RedisBackend> {
        backend
            .as_any()
            .downcast_ref::<RedisBackend>()
            .filter(|b| b.engine.same_as(&self.engine))
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn engine(&self) -> &'static str {
        "redis"
    }

    fn visibility_timeout(&self) -> Duration {
        self.visibility
    }

    async fn publish(&self, messages: Vec<Outgoing>) -> CoreResult<()> {
        self.check_sizes(&messages)?;
        Ok(self.publish_raw(redis::pipe(), &messages).await?)
    }

    async fn fetch(
        &self,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> CoreResult<Vec<Delivery>> {
        let max = max.clamp(1, self.engine.config.redis.fetch_batch.clamp(1, MAX_FETCH));
        if queues.is_empty() {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(wait)
            .unwrap_or(now + Duration::from_secs(30 * 365 * 24 * 3600));
        let block_cap = self.engine.config.redis.block;
        let first = self.rotation.fetch_add(1, Ordering::Relaxed) % queues.len();
        let order: Vec<String> = queues[first..]
            .iter()
            .chain(&queues[..first])
            .cloned()
            .collect();
        // One queue: its fetch script is pipelined behind each blocking read, and a
        // fetch that found the queue drained lets the next one block first.
        let single = match order.as_slice() {
            [queue] => Some(queue.clone()),
            _ => None,
        };
        let mut next = match &single {
            Some(queue) if !wait.is_zero() => self.drained().remove(queue).map(|due_at| Taken {
                deliveries: Vec::new(),
                next_due: due_at
                    .map(|at| at.saturating_duration_since(tokio::time::Instant::now())),
            }),
            _ => None,
        };
        // Set when the last blocking read ran out the wait: what it brought is the answer.
        let mut last = false;
        loop {
            let taken = match next.take() {
                Some(t) => t,
                None => self.take(order.clone(), max).await?,
            };
            let now = tokio::time::Instant::now();
            if !taken.deliveries.is_empty() || last || now >= deadline {
                // Fewer than asked: the queue gave all it had ready.
                if let (Some(queue), true) = (&single, taken.deliveries.len() < max) {
                    let due_at = taken.next_due.map(|d| now + d);
                    self.drained().insert(queue.clone(), due_at);
                }
                return Ok(taken.deliveries);
            }
            let remaining = deadline - now;
            let block = remaining.min(block_cap);
            let until_due = taken.next_due.map(|due| due.max(Duration::from_millis(1)));
            match until_due {
                // Redis times blocked clients out from its cron (10 times a second by
                // default), so a BLPOP timeout may fire up to 100 ms late: when a due
                // message bounds the wait, block until 100 ms before it and wait the
                // rest out here.
                Some(due) if due < block => {
                    if due <= BLOCK_GRANULARITY {
                        tokio::time::sleep(due).await;
                    } else {
                        let (_, taken) = self.block(&order, due - BLOCK_GRANULARITY, max).await?;
                        next = taken;
                    }
                }
                _ => {
                    let (woken, taken) = self.block(&order, block, max).await?;
                    // The read ran out the whole wait without a wake-up token: nothing
                    // was published or released, and nothing the script reported comes
                    // due before the deadline. Running the script again here would only
                    // double an idle worker's script calls: the caller's next fetch runs
                    // it first thing, or, for one queue, the one pipelined behind this
                    // read already ran.
                    if !woken && block == remaining {
                        if taken.is_none() {
                            return Ok(Vec::new());
                        }
                        last = true;
                    }
                    next = taken;
                }
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> CoreResult<()> {
        self.settle(delivery, "ack", "").await
    }

    async fn extend(&self, deliveries: &[Delivery]) -> CoreResult<Vec<bool>> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        // One script call per queue (each in its own slot), all in one round trip.
        let queues = group_by_queue(deliveries.iter().enumerate(), |d| &d.queue);
        let mut pipe = redis::pipe();
        for (queue, list) in &queues {
            let mut invocation = self.engine.scripts.extend.prepare_invoke();
            invocation
                .key(self.engine.keys.ready(queue))
                .arg(self.prefix())
                .arg(*queue)
                .arg(millis(self.visibility));
            for &i in list {
                let (id, token) = split_receipt(&deliveries[i]).unwrap_or(("", ""));
                invocation.arg(id).arg(token);
            }
            pipe.invoke_script(&invocation);
        }
        let replies: Vec<Vec<i64>> = self.engine.query_scripted(&pipe).await?;
        let mut held = vec![false; deliveries.len()];
        for ((_, list), reply) in queues.iter().zip(replies) {
            if reply.len() != list.len() {
                return Err(
                    Error::Protocol("extend returned the wrong number of flags".into()).into(),
                );
            }
            for (&i, h) in list.iter().zip(reply) {
                held[i] = h == 1;
            }
        }
        Ok(held)
    }

    async fn release(&self, delivery: &Delivery, delay: Option<Duration>) -> CoreResult<()> {
        let ms = delay.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.settle(delivery, "release", &ms.to_string()).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> CoreResult<()> {
        tracing::debug!(queue = %delivery.queue, reason, "moving a message to the dead-letter queue");
        self.settle(delivery, "dead", reason).await
    }

    async fn pending(&self, queue: &str) -> CoreResult<Vec<Vec<u8>>> {
        let now = self.server_ms().await?;
        let mut conn = self.conn();
        let (ready, due): (Vec<(String, f64)>, Vec<String>) = redis::pipe()
            .cmd("ZRANGE")
            .arg(self.engine.keys.ready(queue))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd("ZRANGEBYSCORE")
            .arg(self.engine.keys.queue(queue, "delayed"))
            .arg("-inf")
            .arg(now)
            .query_async(&mut conn)
            .await
            .map_err(Error::from)?;
        // Delayed messages already due are ready: the next fetch promotes them to their
        // place by priority and age, where they are listed.
        let mut ids = ready;
        ids.extend(due.into_iter().map(|id| {
            let score = ready_score(&id);
            (id, score)
        }));
        ids.sort_by(|a, b| a.1.total_cmp(&b.1));
        let ids: Vec<String> = ids.into_iter().map(|(id, _)| id).collect();
        self.payloads(queue, &ids).await
    }

    async fn delayed(&self, queue: Option<&str>) -> CoreResult<Vec<Vec<u8>>> {
        let now = self.server_ms().await?;
        let mut conn = self.conn();
        let queues: Vec<String> = match queue {
            Some(q) => vec![q.to_owned()],
            None => redis::cmd("SMEMBERS")
                .arg(self.engine.keys.queues())
                .query_async(&mut conn)
                .await
                .map_err(Error::from)?,
        };
        let mut all: Vec<(f64, Vec<u8>)> = Vec::new();
        for q in &queues {
            // Not yet due: what is due is ready (see `pending`).
            let entries: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.engine.keys.queue(q, "delayed"))
                .arg(format!("({now}"))
                .arg("+inf")
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await
                .map_err(Error::from)?;
            let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
            let payloads = self.payloads(q, &ids).await?;
            all.extend(entries.into_iter().map(|(_, s)| s).zip(payloads));
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(all.into_iter().map(|(_, p)| p).collect())
    }

    async fn depth(&self, queue: &str) -> CoreResult<QueueDepth> {
        let now = self.server_ms().await?;
        let delayed_key = self.engine.keys.queue(queue, "delayed");
        let (ready, delayed, due, in_flight): (usize, usize, usize, usize) = redis::pipe()
            .cmd("ZCARD")
            .arg(self.engine.keys.ready(queue))
            .cmd("ZCARD")
            .arg(&delayed_key)
            .cmd("ZCOUNT")
            .arg(&delayed_key)
            .arg("-inf")
            .arg(now)
            // Not the member '~' (score +inf) that keeps the set alive (fetch.lua).
            .cmd("ZCOUNT")
            .arg(self.engine.keys.queue(queue, "inflight"))
            .arg("-inf")
            .arg("(+inf")
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(QueueDepth {
            ready: ready + due,
            delayed: delayed.saturating_sub(due),
            in_flight: Some(in_flight),
        })
    }

    async fn dead_letters(&self, queue: &str) -> CoreResult<Vec<DeadLetter>> {
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(self.engine.keys.queue(queue, "dead"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(raw.iter().map(|r| parse_dead(queue, r)).collect())
    }

    async fn requeue_dead_letters(&self, queue: &str) -> CoreResult<usize> {
        let mut moved = 0;
        loop {
            // Atomic per batch: an entry is never lost nor both dead and queued.
            let mut pipe = redis::pipe();
            pipe.invoke_script(
                self.engine
                    .scripts
                    .requeue
                    .key(self.engine.keys.ready(queue))
                    .arg(self.prefix())
                    .arg(queue)
                    .arg(REQUEUE_CHUNK),
            );
            add_wakes(&mut pipe, &[self.engine.keys.wake(queue)]);
            let (n,): (usize,) = self.engine.query_scripted(&pipe).await?;
            moved += n;
            if n < REQUEUE_CHUNK {
                return Ok(moved);
            }
        }
    }

    async fn purge_dead_letters(&self, queue: &str) -> CoreResult<usize> {
        let key = self.engine.keys.queue(queue, "dead");
        let (n, _): (usize, i64) = redis::pipe()
            .atomic()
            .cmd("LLEN")
            .arg(&key)
            .cmd("DEL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(n)
    }

    async fn publish_with_states(
        &self,
        messages: Vec<Outgoing>,
        states: &[TaskState],
        backend: &dyn ResultBackend,
    ) -> CoreResult<()> {
        self.check_sizes(&messages)?;
        let Some(b) = self.colocated(backend) else {
            backend.store(states).await?;
            return Ok(self.publish_raw(redis::pipe(), &messages).await?);
        };
        // States and messages in one pipeline (one round trip for a send), the states
        // first so that a fast worker's STARTED is never overwritten by PENDING.
        let mut first = redis::pipe();
        // The states of tasks being sent are written as they are: a UUID sent again
        // starts over at PENDING.
        if messages.len() <= PUBLISH_CHUNK {
            b.store_into(&mut first, states, Write::Fresh)?;
        } else {
            b.store_with(states, Write::Fresh).await?;
        }
        Ok(self.publish_raw(first, &messages).await?)
    }

    async fn complete(
        &self,
        completions: &[Completion],
        backend: &dyn ResultBackend,
    ) -> CoreResult<Vec<CoreResult<()>>> {
        let Some(b) = self.colocated(backend) else {
            // Another result backend: the step-by-step default.
            return complete_step_by_step(self, completions, backend).await;
        };
        let mut out: Vec<Option<CoreResult<()>>> = completions.iter().map(|_| None).collect();
        let lost = |c: &Completion| {
            Err(CoreError::LeaseLost {
                receipt: c.delivery.receipt.clone(),
            })
        };
        // Work in other queues' slots first, for the deliveries still held.
        let foreign: Vec<usize> = (0..completions.len())
            .filter(|&i| reaches_other_queues(&completions[i]))
            .collect();
        if !foreign.is_empty() {
            let deliveries: Vec<Delivery> = foreign
                .iter()
                .map(|&i| completions[i].delivery.clone())
                .collect();
            let held = self.extend(&deliveries).await?;
            let mut still_held = Vec::with_capacity(foreign.len());
            for (&i, held) in foreign.iter().zip(held) {
                if held {
                    still_held.push(i);
                } else {
                    out[i] = Some(lost(&completions[i]));
                }
            }
            let held: Vec<&Completion> = still_held.iter().map(|&i| &completions[i]).collect();
            if let Err(e) = self.foreign_work(b, &held).await {
                // Not acknowledged: delivered again after the visibility timeout.
                tracing::warn!(error = %e, tasks = held.len(), "could not write what finished tasks send to other queues; they run again");
                for &i in &still_held {
                    out[i] = Some(Err(CoreError::engine_msg("redis", e.to_string())));
                }
            }
        }
        // Then each queue's deliveries in one script call, fenced by their leases, every
        // call in one round trip: up to a whole batch of finished tasks at once.
        let queues = group_by_queue(
            completions
                .iter()
                .enumerate()
                .filter(|(i, _)| out[*i].is_none()),
            |c| &c.delivery.queue,
        );
        let mut pipe = redis::pipe();
        let mut calls: Vec<Vec<usize>> = Vec::with_capacity(queues.len());
        for (queue, list) in queues {
            let mut items = Vec::with_capacity(list.len());
            let mut included = Vec::with_capacity(list.len());
            for i in list {
                let c = &completions[i];
                match split_receipt(&c.delivery) {
                    Ok((id, token)) => {
                        items.push((c, id, token));
                        included.push(i);
                    }
                    Err(e) => out[i] = Some(Err(e)),
                }
            }
            if items.is_empty() {
                continue;
            }
            pipe.invoke_script(&self.complete_invocation(queue, &items)?);
            if items
                .iter()
                .any(|(c, _, _)| !c.publish.is_empty() || c.group.is_some())
            {
                add_wakes(&mut pipe, &[self.engine.keys.wake(queue)]);
            }
            calls.push(included);
        }
        if !calls.is_empty() {
            let replies: Vec<Vec<i64>> = self.engine.query_scripted(&pipe).await?;
            if replies.len() != calls.len() {
                return Err(Error::Protocol(
                    "complete returned the wrong number of replies".into(),
                )
                .into());
            }
            for (included, reply) in calls.iter().zip(replies) {
                if reply.len() != included.len() {
                    return Err(Error::Protocol(
                        "complete returned the wrong number of flags".into(),
                    )
                    .into());
                }
                for (&i, h) in included.iter().zip(reply) {
                    out[i] = Some(if h == 1 {
                        Ok(())
                    } else {
                        lost(&completions[i])
                    });
                }
            }
        }
        Ok(out
            .into_iter()
            .zip(completions)
            .map(|(r, c)| r.unwrap_or_else(|| lost(c)))
            .collect())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl RedisBroker {
    /// The server's clock in milliseconds: ETAs are compared with it, as in the scripts.
    async fn server_ms(&self) -> CoreResult<u64> {
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(secs * 1000 + micros / 1000)
    }

    async fn payloads(&self, queue: &str, ids: &[String]) -> CoreResult<Vec<Vec<u8>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(self.engine.keys.queue(queue, "msg"))
            .arg(ids)
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(values.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_entries_round_trip() {
        let mut raw = b"11:bad payload".to_vec();
        raw.extend_from_slice(&[0, 1, 2, b':']);
        let d = parse_dead("q", &raw);
        assert_eq!(d.reason, "bad payload");
        assert_eq!(d.payload, vec![0, 1, 2, b':']);
        let junk = parse_dead("q", b"nonsense");
        assert_eq!(junk.payload, b"nonsense".to_vec());
    }
}
