//! The Redis result backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use machinery_core::engine::{
    ChordOutcome, GroupMember, Outgoing, ResultBackend, Revocation, RevokeOutcome, StoreId,
};
use machinery_core::{Error as CoreError, Result as CoreResult, State, TaskState};
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{Mutex, oneshot, watch};
use uuid::Uuid;

use crate::conn::Engine;
use crate::error::{Error, Result};
use crate::scripts::{
    ChordDoneArgs, MemberArgs, RevocationArgs, RevokeArgs, StoreArgs, parse_revocation_message,
    revocations_invocation,
};

/// The Redis result backend. See the [crate docs](crate) for the key layout.
#[derive(Debug)]
pub struct RedisBackend {
    pub(crate) engine: Arc<Engine>,
    waiters: Arc<Waiters>,
}

/// Result waiters of this process, woken through one shared pub/sub connection
/// (opened on the first wait, opened again after it drops).
#[derive(Debug)]
struct Waiters {
    engine: Arc<Engine>,
    conn: Mutex<Option<PubSubConn>>,
    /// Numbers the pub/sub connections, to tell on which one a channel is subscribed.
    generations: AtomicU64,
    channels: StdMutex<HashMap<String, Channel>>,
}

#[derive(Debug, Clone)]
struct PubSubConn {
    sink: PubSubSink,
    generation: u64,
    /// Stops the reader task (and so closes the connection) once the last clone is
    /// dropped: when the connection is replaced or the backend goes away.
    _stop: Arc<oneshot::Sender<()>>,
}

/// The waiters of one channel (one task).
#[derive(Debug, Default)]
struct Channel {
    /// Waiters holding a subscription; the channel is unsubscribed when none is left.
    refs: usize,
    /// Waiters to wake with the next message.
    senders: Vec<oneshot::Sender<Vec<u8>>>,
    /// Watchers sent every message (progress streams); dropped when the connection is
    /// lost, which ends their streams.
    streams: Vec<watch::Sender<Vec<u8>>>,
    /// Orders SUBSCRIBE and UNSUBSCRIBE of this channel, and holds the generation of the
    /// connection it is subscribed on.
    gate: Arc<Mutex<Option<u64>>>,
}

/// A waiter's subscription: its wake-up, and its share of the channel until dropped.
struct Subscription {
    woken: oneshot::Receiver<Vec<u8>>,
    _release: Release,
}

/// Gives up a waiter's share of a channel when dropped (the wait returned or was
/// cancelled); the last one out unsubscribes.
struct Release {
    waiters: Arc<Waiters>,
    channel: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let gate = {
            let mut channels = self.waiters.lock();
            let Some(c) = channels.get_mut(&self.channel) else {
                return;
            };
            c.refs = c.refs.saturating_sub(1);
            if c.refs > 0 {
                return;
            }
            c.gate.clone()
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let waiters = self.waiters.clone();
        let channel = std::mem::take(&mut self.channel);
        runtime.spawn(async move { waiters.unsubscribe(channel, gate).await });
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared pub/sub connection, opened (with its reader task) when there is none.
    async fn connection(self: &Arc<Self>) -> Result<PubSubConn> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let limit = self.engine.config.redis.connect_timeout.saturating_mul(2);
        let pubsub = match tokio::time::timeout(limit, self.engine.client.get_async_pubsub()).await
        {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Connect {
                    url: self.engine.url.clone(),
                    reason: format!("no pub/sub connection within {limit:?}"),
                });
            }
        };
        let (sink, stream) = pubsub.split();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(read_messages(
            stream,
            stopped,
            Arc::downgrade(self),
            generation,
        ));
        let r = &self.engine.config.redis;
        tokio::spawn(keep_alive(
            sink.clone(),
            Arc::downgrade(self),
            generation,
            r.response_timeout
                .saturating_mul(2)
                .max(Duration::from_millis(100)),
            r.response_timeout.max(Duration::from_millis(1)),
        ));
        let conn = PubSubConn {
            sink,
            generation,
            _stop: Arc::new(stop),
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// The generation of the current connection, if any.
    async fn current(&self) -> Option<u64> {
        self.conn.lock().await.as_ref().map(|c| c.generation)
    }

    /// Forgets the connection `generation` (when it is still the current one) and wakes
    /// every waiter, who reads the state again and subscribes on a new connection.
    async fn connection_lost(&self, generation: u64) {
        {
            let mut slot = self.conn.lock().await;
            if slot.as_ref().is_some_and(|c| c.generation == generation) {
                *slot = None;
            }
        }
        for c in self.lock().values_mut() {
            c.senders.clear();
            c.streams.clear();
        }
    }

    /// Registers a waiter on `channel` and makes sure the channel is subscribed on the
    /// current connection before returning, so a message published afterwards is seen.
    async fn subscribe(self: &Arc<Self>, channel: &str) -> Result<Subscription> {
        let (tx, woken) = oneshot::channel();
        let release = self.join(channel, |c| c.senders.push(tx)).await?;
        Ok(Subscription {
            woken,
            _release: release,
        })
    }

    /// Registers a watcher sent every message of `channel` from now on, subscribed as
    /// in [`subscribe`](Self::subscribe). The stream ends when the connection is lost.
    async fn watch(self: &Arc<Self>, channel: &str) -> Result<BoxStream<'static, Vec<u8>>> {
        let (tx, rx) = watch::channel(Vec::new());
        let release = self.join(channel, |c| c.streams.push(tx)).await?;
        Ok(Box::pin(futures_util::stream::unfold(
            (rx, release),
            |(mut rx, release)| async move {
                rx.changed().await.ok()?;
                let value = rx.borrow_and_update().clone();
                Some((value, (rx, release)))
            },
        )))
    }

    /// Takes a share of `channel`, registers on it with `register`, and makes sure it is
    /// subscribed on the current connection; the share is given up when the returned
    /// [`Release`] is dropped.
    async fn join(
        self: &Arc<Self>,
        channel: &str,
        register: impl FnOnce(&mut Channel),
    ) -> Result<Release> {
        let gate = {
            let mut channels = self.lock();
            let c = channels.entry(channel.to_owned()).or_default();
            c.refs += 1;
            register(c);
            c.gate.clone()
        };
        let release = Release {
            waiters: self.clone(),
            channel: channel.to_owned(),
        };
        let mut subscribed = gate.lock().await;
        let mut conn = self.connection().await?;
        if *subscribed != Some(conn.generation) {
            let limit = self.engine.config.redis.response_timeout;
            match tokio::time::timeout(limit, conn.sink.subscribe(channel)).await {
                Ok(Ok(())) => *subscribed = Some(conn.generation),
                Ok(Err(e)) => {
                    self.connection_lost(conn.generation).await;
                    return Err(e.into());
                }
                Err(_) => {
                    self.connection_lost(conn.generation).await;
                    return Err(Error::Protocol(format!(
                        "no reply to SUBSCRIBE within {limit:?}"
                    )));
                }
            }
        }
        Ok(release)
    }

    /// Unsubscribes `channel` when no waiter holds it any more. Runs under the channel's
    /// gate, so it is ordered with a new waiter's SUBSCRIBE of the same channel.
    async fn unsubscribe(&self, channel: String, gate: Arc<Mutex<Option<u64>>>) {
        let mut subscribed = gate.lock().await;
        if self.lock().get(&channel).is_some_and(|c| c.refs > 0) {
            return;
        }
        if let Some(generation) = subscribed.take() {
            let conn = self.conn.lock().await.clone();
            if let Some(mut conn) = conn.filter(|c| c.generation == generation) {
                let limit = self.engine.config.redis.response_timeout;
                if !matches!(
                    tokio::time::timeout(limit, conn.sink.unsubscribe(&channel)).await,
                    Ok(Ok(()))
                ) {
                    self.connection_lost(generation).await;
                }
            }
        }
        let mut channels = self.lock();
        if channels
            .get(&channel)
            .is_some_and(|c| c.refs == 0 && Arc::ptr_eq(&c.gate, &gate))
        {
            channels.remove(&channel);
        }
    }
}

/// The reader task of pub/sub connection `generation`: wakes the waiters of each
/// message's channel; when the connection ends, wakes everyone.
async fn read_messages(
    mut stream: PubSubStream,
    mut stopped: oneshot::Receiver<()>,
    waiters: Weak<Waiters>,
    generation: u64,
) {
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            // Replaced or no longer wanted: dropping the stream closes the connection.
            _ = &mut stopped => return,
        };
        let Some(msg) = msg else { break };
        let Some(waiters) = waiters.upgrade() else {
            return;
        };
        let senders = match waiters.lock().get_mut(msg.get_channel_name()) {
            Some(c) => {
                if !c.streams.is_empty() {
                    let payload = msg.get_payload_bytes();
                    // A watcher that went away is dropped here (its `Release` gives up
                    // its share of the channel).
                    c.streams.retain(|tx| tx.send(payload.to_vec()).is_ok());
                }
                std::mem::take(&mut c.senders)
            }
            None => continue,
        };
        for tx in senders {
            let _ = tx.send(msg.get_payload_bytes().to_vec());
        }
    }
    if let Some(waiters) = waiters.upgrade() {
        tracing::warn!(url = %waiters.engine.url, "the pub/sub connection for result waiters dropped; waiters read their states again");
        waiters.connection_lost(generation).await;
    }
}

/// Pings pub/sub connection `generation` every `every` while somebody waits on it: a
/// connection that died silently (a partition, a frozen server; no close, so the reader
/// sees nothing) would otherwise leave waiters without a timeout waiting forever. No
/// answer within `limit`: the connection is given up, and its waiters read their states
/// again and subscribe on a new one (or fail, when Redis stays unreachable).
async fn keep_alive(
    mut sink: PubSubSink,
    waiters: Weak<Waiters>,
    generation: u64,
    every: Duration,
    limit: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let Some(w) = waiters.upgrade() else { return };
        if w.current().await != Some(generation) {
            return;
        }
        if !w.lock().values().any(|c| c.refs > 0) {
            continue;
        }
        drop(w);
        let answered = matches!(
            tokio::time::timeout(limit, sink.ping::<redis::Value>()).await,
            Ok(Ok(_))
        );
        if !answered {
            if let Some(w) = waiters.upgrade() {
                tracing::warn!(url = %w.engine.url, "the pub/sub connection for result waiters stopped answering; waiters read their states again");
                w.connection_lost(generation).await;
            }
            return;
        }
    }
}

impl RedisBackend {
    /// The stored state of task `uuid` as bytes, with the queue it is kept under; an
    /// empty `queue` is not known: the task's state key of every queue published to
    /// (and of the default queue) is read, one GET each (one slot each), in one
    /// pipeline.
    async fn load_raw(&self, queue: &str, uuid: Uuid) -> CoreResult<Option<(String, Vec<u8>)>> {
        let mut conn = self.conn();
        if !queue.is_empty() {
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.engine.keys.state(queue, uuid))
                .query_async(&mut conn)
                .await
                .map_err(Error::from)?;
            return Ok(raw.map(|b| (queue.to_owned(), b)));
        }
        let mut queues: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.engine.keys.queues())
            .query_async(&mut conn)
            .await
            .map_err(Error::from)?;
        let default = &self.engine.config.default_queue;
        if !queues.contains(default) {
            queues.push(default.clone());
        }
        let mut pipe = redis::pipe();
        for q in &queues {
            pipe.cmd("GET").arg(self.engine.keys.state(q, uuid));
        }
        let found: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await.map_err(Error::from)?;
        Ok(queues
            .into_iter()
            .zip(found)
            .find_map(|(q, b)| b.map(|b| (q, b))))
    }

    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        RedisBackend {
            waiters: Arc::new(Waiters {
                engine: engine.clone(),
                conn: Mutex::new(None),
                generations: AtomicU64::new(0),
                channels: StdMutex::new(HashMap::new()),
            }),
            engine,
        }
    }

    fn conn(&self) -> redis::aio::ConnectionManager {
        self.engine.conn.clone()
    }
}

/// State writes shared by the backend and, for a backend on the same store, the broker
/// (which puts them in its own pipelines and scripts).
impl Engine {
    /// Adds the writes of `states` to `pipe`. With [`Write::Guarded`] they go through
    /// the `store` script (one call per queue, one slot each, so the pipeline must run
    /// through `query_scripted`): a non-final state is written only where the stored
    /// state is not final, a SUCCESS or FAILURE only where it is not REVOKED (and then
    /// `PUBLISH`ed to its waiters). A REVOKED state, and every state with
    /// [`Write::Fresh`], is a plain `SET` (a final one with the results TTL, and
    /// `PUBLISH`ed).
    pub(crate) fn store_into(
        &self,
        pipe: &mut redis::Pipeline,
        states: &[TaskState],
        write: Write,
    ) -> CoreResult<()> {
        let ttl = self.ttl_ms();
        let mut guarded: Vec<(&str, StoreArgs<'_>)> = Vec::new();
        for s in states {
            let bytes = s.encode()?;
            let key = self.keys.state(&s.queue, s.uuid);
            let terminal = s.state.is_terminal();
            if write == Write::Fresh || s.state == State::Revoked {
                let mut set = redis::cmd("SET");
                set.arg(&key).arg(&bytes);
                if terminal && ttl > 0 {
                    set.arg("PX").arg(ttl);
                }
                pipe.add_command(set).ignore();
                if terminal {
                    pipe.cmd("PUBLISH")
                        .arg(self.keys.done(s.uuid))
                        .arg(&bytes)
                        .ignore();
                }
                continue;
            }
            let at = match guarded.iter().position(|(q, _)| *q == s.queue) {
                Some(at) => at,
                None => {
                    guarded.push((&s.queue, StoreArgs::new(&self.scripts, ttl)));
                    guarded.len() - 1
                }
            };
            let done = terminal.then(|| self.keys.done(s.uuid));
            guarded[at].1.push(key, done, bytes);
        }
        for (_, args) in &guarded {
            pipe.invoke_script(args.invocation()).ignore();
        }
        Ok(())
    }

    /// Stores `states` (see [`store_into`](Self::store_into)) in one round trip.
    pub(crate) async fn store_with(&self, states: &[TaskState], write: Write) -> CoreResult<()> {
        if states.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        self.store_into(&mut pipe, states, write)?;
        let () = self.query_scripted(&pipe).await?;
        Ok(())
    }

    /// Adds the commands that start the results TTL of chord `group`, kept under
    /// `queue`, to `pipe` (nothing when results are kept forever).
    pub(crate) fn chord_finished_into(&self, pipe: &mut redis::Pipeline, queue: &str, group: Uuid) {
        let ttl = self.ttl_ms();
        if ttl == 0 {
            return;
        }
        pipe.cmd("PEXPIRE")
            .arg(self.keys.chord(queue, group))
            .arg(ttl)
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(self.keys.chord_results(queue, group))
            .arg(ttl)
            .ignore();
    }
}

/// How `Engine::store_into` writes non-final states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// A non-final state never over a final one, a SUCCESS or FAILURE never over a
    /// REVOKED one (`ResultBackend::store`, completions).
    Guarded,
    /// As they are: the PENDING states of tasks being sent (a UUID sent again restarts).
    Fresh,
}

/// Compare-and-set attempts of `revoke` on a state that keeps changing.
const REVOKE_ATTEMPTS: usize = 16;

/// How often a revocation watch pings its pub/sub connection: one that died silently (a
/// partition, a frozen server; no close) ends the stream within this and a response
/// timeout, and the worker subscribes again and re-reads the revocations.
const WATCH_PING: Duration = Duration::from_secs(5);

/// Revocations buffered for a watcher that reads slowly.
const WATCH_BUFFER: usize = 1024;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A revocation's end as the revocations set scores it (`inf`: never).
fn score_until(score: &str) -> Option<u64> {
    let s: f64 = score.parse().ok()?;
    // A finite score of a few 10^12 ms converts exactly.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    s.is_finite().then_some(s.max(0.0) as u64)
}

/// Subscribes to the revocations channel on a pub/sub connection of its own and streams
/// what it carries. The subscription is confirmed before this returns, so a revocation
/// recorded afterwards is delivered. A reader task forwards the messages and pings the
/// connection every [`WATCH_PING`]; the stream ends when the connection drops or stops
/// answering, and the connection closes when the stream is dropped.
async fn watch_revocations(engine: &Engine) -> Result<BoxStream<'static, Revocation>> {
    let r = &engine.config.redis;
    let limit = r.connect_timeout.saturating_mul(2);
    let mut pubsub = match tokio::time::timeout(limit, engine.client.get_async_pubsub()).await {
        Ok(c) => c?,
        Err(_) => {
            return Err(Error::Connect {
                url: engine.url.clone(),
                reason: format!("no pub/sub connection within {limit:?}"),
            });
        }
    };
    let channel = engine.keys.revoked_channel();
    let reply_limit = r.response_timeout.max(Duration::from_millis(1));
    match tokio::time::timeout(reply_limit, pubsub.subscribe(&channel)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Protocol(format!(
                "no reply to SUBSCRIBE within {reply_limit:?}"
            )));
        }
    }
    let (mut sink, mut stream) = pubsub.split();
    let (tx, rx) = tokio::sync::mpsc::channel::<Revocation>(WATCH_BUFFER);
    let url = engine.url.clone();
    tokio::spawn(async move {
        let mut next_ping = tokio::time::Instant::now() + WATCH_PING;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        tracing::debug!(%url, "the revocations pub/sub connection dropped");
                        return;
                    };
                    let Some((uuid, until, reason)) =
                        parse_revocation_message(msg.get_payload_bytes())
                    else {
                        continue;
                    };
                    if tx.send(Revocation { uuid, reason, until }).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
                () = tokio::time::sleep_until(next_ping) => {
                    let answered = matches!(
                        tokio::time::timeout(reply_limit, sink.ping::<redis::Value>()).await,
                        Ok(Ok(_))
                    );
                    if !answered {
                        tracing::warn!(%url, "the revocations pub/sub connection stopped answering; the watch ends");
                        return;
                    }
                    next_ping = tokio::time::Instant::now() + WATCH_PING;
                }
            }
        }
    });
    Ok(
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
            .boxed(),
    )
}

/// What `forget` publishes on a task's `done` channel: not a state, so its waiters read
/// the stored state again, find none and return `ResultMissing`.
const FORGOTTEN: &str = "forgotten";

impl Engine {
    /// The chord script's call recording `member`'s final `state` (`None` when the state
    /// is not final). With `enqueue` the script queues a fired callback itself, in the
    /// same step; without, it returns the callback for the caller to publish.
    pub(crate) fn chord_done_invocation(
        &self,
        member: &GroupMember,
        state: &TaskState,
        enqueue: bool,
    ) -> Option<redis::ScriptInvocation<'_>> {
        let args = ChordDoneArgs {
            queue: &member.queue,
            group: member.group_uuid,
            member: MemberArgs::new(member.index, state)?,
            enqueue,
        };
        Some(args.invocation(&self.scripts, &self.keys))
    }
}

fn parse_failure(raw: &[u8]) -> Option<(u32, String, String)> {
    let text = String::from_utf8_lossy(raw);
    let mut parts = text.splitn(3, '\n');
    let index = parts.next()?.parse().ok()?;
    let name = parts.next()?.to_owned();
    let error = parts.next().unwrap_or_default().to_owned();
    Some((index, name, error))
}

#[async_trait]
impl ResultBackend for RedisBackend {
    fn engine(&self) -> &'static str {
        "redis"
    }

    async fn store(&self, states: &[TaskState]) -> CoreResult<()> {
        // PENDING states stored apart from a publish are those of later workflow steps:
        // their queues join the registry now, so a lookup by UUID alone finds them
        // before their turn comes.
        let mut queues: Vec<&str> = states
            .iter()
            .filter(|s| s.state == State::Pending)
            .map(|s| s.queue.as_str())
            .collect();
        if queues.is_empty() {
            return self.engine.store_with(states, Write::Guarded).await;
        }
        queues.sort_unstable();
        queues.dedup();
        let mut pipe = redis::pipe();
        pipe.cmd("SADD")
            .arg(self.engine.keys.queues())
            .arg(&queues)
            .ignore();
        self.engine.store_into(&mut pipe, states, Write::Guarded)?;
        let () = self.engine.query_scripted(&pipe).await?;
        Ok(())
    }

    async fn store_new(&self, states: &[TaskState]) -> CoreResult<()> {
        self.engine.store_with(states, Write::Fresh).await
    }

    async fn load(&self, queue: &str, uuid: Uuid) -> CoreResult<Option<TaskState>> {
        self.load_raw(queue, uuid)
            .await?
            .map(|(_, b)| TaskState::decode(&b))
            .transpose()
    }

    async fn wait(
        &self,
        queue: &str,
        uuid: Uuid,
        timeout: Option<Duration>,
    ) -> CoreResult<TaskState> {
        // Past what `Instant` can hold (`Duration::MAX`): no deadline.
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let channel = self.engine.keys.done(uuid);
        // Redis unreachable (restarting, failing over): retried within the caller's
        // timeout, and for at most this long without one, then the error is returned.
        let r = &self.engine.config.redis;
        let outage_bound = r.connect_timeout.saturating_add(r.response_timeout);
        let mut outage: Option<(tokio::time::Instant, Duration)> = None;
        // Empty when not known: looked up by the first read, then read directly.
        let mut queue = queue.to_owned();
        loop {
            // Subscribe first, then read: a state written in between is seen either way.
            let subscribed = match self.waiters.subscribe(&channel).await {
                Ok(sub) => self.load(&queue, uuid).await.map(|state| (sub, state)),
                Err(e) => Err(e.into()),
            };
            let (subscription, state) = match subscribed {
                Ok(ok) => {
                    outage = None;
                    ok
                }
                Err(e) => {
                    let now = tokio::time::Instant::now();
                    let (since, backoff) = outage.unwrap_or((now, Duration::from_millis(50)));
                    let give_up = deadline.unwrap_or(since + outage_bound);
                    if now + backoff >= give_up {
                        return Err(e);
                    }
                    tracing::debug!(task.id = %uuid, error = %e, retry_in = ?backoff, "result wait: Redis unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    outage = Some((since, (backoff * 2).min(Duration::from_secs(1))));
                    continue;
                }
            };
            match state {
                Some(s) if s.state.is_terminal() => return Ok(s),
                Some(s) => {
                    if queue.is_empty() {
                        queue = s.queue;
                    }
                }
                None => return Err(CoreError::ResultMissing(uuid)),
            }
            let woken = match deadline {
                Some(d) => match tokio::time::timeout_at(d, subscription.woken).await {
                    Ok(r) => r,
                    Err(_) => return Err(CoreError::timeout(timeout.unwrap_or_default())),
                },
                None => subscription.woken.await,
            };
            if let Ok(bytes) = woken
                && let Ok(s) = TaskState::decode(&bytes)
                && s.state.is_terminal()
            {
                return Ok(s);
            }
            // Woken without a final state (the pub/sub connection dropped, or a message
            // that did not decode): read the stored state again.
        }
    }

    async fn forget(&self, queue: &str, uuid: Uuid) -> CoreResult<()> {
        // Deleted first: a waiter woken by the message reads the state again and finds
        // nothing; one that subscribes later reads nothing at once.
        let () = redis::pipe()
            .cmd("DEL")
            .arg(self.engine.keys.state(queue, uuid))
            .ignore()
            .cmd("DEL")
            .arg(self.engine.keys.progress(queue, uuid))
            .ignore()
            .cmd("PUBLISH")
            .arg(self.engine.keys.done(uuid))
            .arg(FORGOTTEN)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    async fn init_chord(&self, group: Uuid, count: u32, callback: &Outgoing) -> CoreResult<()> {
        // No TTL: the chord is kept until its callback's state is final
        // (`chord_finished`), however long its members wait or run.
        let key = self.engine.keys.chord(&callback.queue, group);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("count")
            .arg(count)
            .arg("callback")
            .arg(callback.payload.as_slice())
            .arg("priority")
            .arg(callback.priority.min(9))
            .ignore();
        // A group sent again starts over without TTL.
        pipe.cmd("PERSIST").arg(&key).ignore();
        let () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    async fn chord_member_done(
        &self,
        member: &GroupMember,
        state: &TaskState,
    ) -> CoreResult<Option<Outgoing>> {
        let Some(invocation) = self.engine.chord_done_invocation(member, state, false) else {
            return Ok(None);
        };
        let reply: Option<(Vec<u8>, u8)> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(reply.map(|(payload, priority)| Outgoing {
            uuid: Uuid::nil(),
            queue: member.queue.clone(),
            eta: None,
            priority,
            payload,
        }))
    }

    async fn chord_finished(&self, queue: &str, group: Uuid) -> CoreResult<()> {
        let mut pipe = redis::pipe();
        self.engine.chord_finished_into(&mut pipe, queue, group);
        let () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    async fn chord_outcome(&self, queue: &str, group: Uuid) -> CoreResult<ChordOutcome> {
        let mut conn = self.conn();
        let (count, failure): (Option<u32>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.engine.keys.chord(queue, group))
            .arg("count")
            .arg("failure")
            .query_async(&mut conn)
            .await
            .map_err(Error::from)?;
        let Some(count) = count else {
            return Err(CoreError::engine_msg(
                "redis",
                machinery_core::ErrorKind::NotFound,
                format!("chord {group} is unknown or expired"),
            ));
        };
        let fields: Vec<u32> = (0..count).collect();
        let results: Vec<Option<Vec<u8>>> = if count == 0 {
            Vec::new()
        } else {
            redis::cmd("HMGET")
                .arg(self.engine.keys.chord_results(queue, group))
                .arg(&fields)
                .query_async(&mut conn)
                .await
                .map_err(Error::from)?
        };
        Ok(ChordOutcome {
            results: results.into_iter().flatten().collect(),
            failure: failure.as_deref().and_then(parse_failure),
        })
    }

    async fn revoke(
        &self,
        queue: &str,
        uuid: Uuid,
        reason: &str,
        until: Option<u64>,
    ) -> CoreResult<RevokeOutcome> {
        let keys = &self.engine.keys;
        // Recorded and published first, with the state read when the queue is known.
        let record = RevocationArgs {
            uuid,
            until,
            reason,
        };
        let mut pipe = redis::pipe();
        pipe.invoke_script(&record.invocation(&self.engine.scripts, keys))
            .ignore();
        let mut stored = if queue.is_empty() {
            let () = self.engine.query_scripted(&pipe).await?;
            self.load_raw("", uuid).await?
        } else {
            pipe.cmd("GET").arg(keys.state(queue, uuid));
            let (raw,): (Option<Vec<u8>>,) = self.engine.query_scripted(&pipe).await?;
            raw.map(|b| (queue.to_owned(), b))
        };
        // Then PENDING or RETRY → REVOKED, compared and set: a state that changed in
        // between is decided again (a worker took the task, or it finished).
        for attempt in 0..REVOKE_ATTEMPTS {
            let Some((queue, bytes)) = stored else {
                return Ok(RevokeOutcome::Unknown);
            };
            let state = TaskState::decode(&bytes)?;
            match state.state {
                State::Pending | State::Retry => {}
                State::Received | State::Started => return Ok(RevokeOutcome::Cancelling),
                // Not final when first read, REVOKED now: a worker ran it and stopped it
                // on this revocation (it was running, not yet recorded as STARTED).
                State::Revoked if attempt > 0 => return Ok(RevokeOutcome::Cancelling),
                s => return Ok(RevokeOutcome::Finished(s)),
            }
            let mut revoked = state;
            revoked.state = State::Revoked;
            revoked.error = Some(reason.to_owned());
            revoked.result = None;
            revoked.updated_at = now_ms();
            let revoked = revoked.encode()?;
            let args = RevokeArgs {
                queue: &queue,
                uuid,
                read: &bytes,
                revoked: &revoked,
                ttl_ms: self.engine.ttl_ms(),
            };
            let reply: redis::Value = args
                .invocation(&self.engine.scripts, keys)
                .invoke_async(&mut self.conn())
                .await
                .map_err(Error::from)?;
            stored = match reply {
                redis::Value::Int(1) => return Ok(RevokeOutcome::Revoked),
                redis::Value::BulkString(b) => Some((queue, b)),
                redis::Value::Nil => None,
                other => {
                    return Err(Error::Protocol(format!("revoke returned {other:?}")).into());
                }
            };
        }
        // Changing faster than it can be read: a worker has it (the revocation is
        // recorded and published, so that worker stops it).
        Ok(RevokeOutcome::Cancelling)
    }

    async fn revocations(&self) -> CoreResult<Vec<Revocation>> {
        let reply: Vec<Option<String>> =
            revocations_invocation(&self.engine.scripts, &self.engine.keys)
                .invoke_async(&mut self.conn())
                .await
                .map_err(Error::from)?;
        let mut out = Vec::with_capacity(reply.len() / 3);
        for triple in reply.chunks_exact(3) {
            let (Some(uuid), Some(score)) = (&triple[0], &triple[1]) else {
                continue;
            };
            // Not ours (written by something else): skipped.
            let Ok(uuid) = uuid.parse() else { continue };
            out.push(Revocation {
                uuid,
                reason: triple[2].clone().unwrap_or_else(|| "revoked".to_owned()),
                until: score_until(score),
            });
        }
        Ok(out)
    }

    async fn watch_revocations(&self) -> CoreResult<BoxStream<'static, Revocation>> {
        Ok(watch_revocations(&self.engine).await?)
    }

    async fn set_progress(&self, queue: &str, uuid: Uuid, value: &[u8]) -> CoreResult<()> {
        // One round trip: the value, with the results TTL from now, then its watchers.
        let ttl = self.engine.ttl_ms();
        let mut pipe = redis::pipe();
        let set = pipe
            .cmd("SET")
            .arg(self.engine.keys.progress(queue, uuid))
            .arg(value);
        if ttl > 0 {
            set.arg("PX").arg(ttl);
        }
        set.ignore();
        pipe.cmd("PUBLISH")
            .arg(self.engine.keys.progress_channel(uuid))
            .arg(value)
            .ignore();
        let () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    async fn progress(&self, queue: &str, uuid: Uuid) -> CoreResult<Option<Vec<u8>>> {
        let queue = if queue.is_empty() {
            // Kept under the task's queue, like its state: found through the state.
            match self.load("", uuid).await? {
                Some(state) => state.queue,
                None => return Ok(None),
            }
        } else {
            queue.to_owned()
        };
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.engine.keys.progress(&queue, uuid))
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(value)
    }

    async fn watch_progress(
        &self,
        _queue: &str,
        uuid: Uuid,
    ) -> CoreResult<BoxStream<'static, Vec<u8>>> {
        Ok(self
            .waiters
            .watch(&self.engine.keys.progress_channel(uuid))
            .await?)
    }

    async fn store_workflow(&self, workflow: Uuid, record: &[u8]) -> CoreResult<()> {
        // One command per workflow sent, whatever its size.
        let ttl = self.engine.ttl_ms();
        let mut set = redis::cmd("SET");
        set.arg(self.engine.keys.workflow(workflow)).arg(record);
        if ttl > 0 {
            set.arg("PX").arg(ttl);
        }
        let () = set
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    async fn load_workflow(&self, workflow: Uuid) -> CoreResult<Option<Vec<u8>>> {
        let record: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.engine.keys.workflow(workflow))
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(record)
    }

    fn store_id(&self) -> Option<&StoreId> {
        Some(&self.engine.store_id)
    }
}
