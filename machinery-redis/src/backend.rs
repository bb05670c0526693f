//! The Redis result backend.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use machinery_core::backend::{ChordOutcome, ResultBackend};
use machinery_core::broker::{GroupMember, Outgoing};
use machinery_core::{Error as CoreError, Result as CoreResult, State, TaskState};
use redis::aio::PubSubSink;
use tokio::sync::{Mutex, oneshot};
use uuid::Uuid;

use crate::conn::Engine;
use crate::error::{Error, Result};

/// The Redis result backend. See the [crate docs](crate) for the key layout.
#[derive(Debug)]
pub struct RedisBackend {
    pub(crate) engine: Arc<Engine>,
    waiters: Arc<Waiters>,
}

/// Result waiters of this process, woken through one shared pub/sub connection.
#[derive(Debug, Default)]
struct Waiters {
    sink: Mutex<Option<PubSubSink>>,
    by_channel: StdMutex<HashMap<String, Vec<oneshot::Sender<Vec<u8>>>>>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<Vec<u8>>>>> {
        self.by_channel.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RedisBackend {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        RedisBackend {
            engine,
            waiters: Arc::new(Waiters::default()),
        }
    }

    fn conn(&self) -> redis::aio::ConnectionManager {
        self.engine.conn.clone()
    }

    /// Adds the SETs (and PUBLISHes of final states) for `states` to `pipe`.
    pub(crate) fn store_into(
        &self,
        pipe: &mut redis::Pipeline,
        states: &[TaskState],
    ) -> CoreResult<()> {
        let ttl = self.engine.ttl_ms();
        for s in states {
            let bytes = s.encode()?;
            let key = self.engine.keys.state(s.uuid);
            if ttl > 0 {
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(&bytes)
                    .arg("PX")
                    .arg(ttl)
                    .ignore();
            } else {
                pipe.cmd("SET").arg(&key).arg(&bytes).ignore();
            }
            if s.state.is_terminal() {
                pipe.cmd("PUBLISH")
                    .arg(self.engine.keys.done(s.uuid))
                    .arg(&bytes)
                    .ignore();
            }
        }
        Ok(())
    }

    /// Subscribes to `channel` on the shared pub/sub connection (opening it, and its
    /// reader task, when there is none) and registers a waiter.
    async fn subscribe(&self, channel: &str) -> Result<oneshot::Receiver<Vec<u8>>> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .entry(channel.to_owned())
            .or_default()
            .push(tx);
        let mut sink = self.waiters.sink.lock().await;
        if sink.is_none() {
            let pubsub = self.engine.client.get_async_pubsub().await?;
            let (new_sink, mut stream) = pubsub.split();
            let waiters = Arc::downgrade(&self.waiters);
            tokio::spawn(async move {
                while let Some(msg) = stream.next().await {
                    let Some(waiters) = waiters.upgrade() else {
                        return;
                    };
                    let senders = waiters.lock().remove(msg.get_channel_name());
                    for tx in senders.into_iter().flatten() {
                        let _ = tx.send(msg.get_payload_bytes().to_vec());
                    }
                }
                // The connection is gone: wake everyone (they re-read the state and
                // subscribe again on a new connection).
                if let Some(waiters) = waiters.upgrade() {
                    *waiters.sink.lock().await = None;
                    waiters.lock().clear();
                }
            });
            *sink = Some(new_sink);
        }
        // Subscribing again to a channel is harmless; don't hold the lock over the
        // round trip.
        let mut s = sink.clone();
        drop(sink);
        if let Some(s) = s.as_mut() {
            s.subscribe(channel).await?;
        }
        Ok(rx)
    }

    fn unsubscribe_later(&self, channel: String) {
        let waiters = self.waiters.clone();
        tokio::spawn(async move {
            let idle = waiters
                .lock()
                .get(&channel)
                .is_none_or(|l| l.iter().all(|t| t.is_closed()));
            if idle {
                waiters.lock().remove(&channel);
                let sink = waiters.sink.lock().await.clone();
                if let Some(mut s) = sink {
                    let _ = s.unsubscribe(&channel).await;
                }
            }
        });
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
        if states.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        self.store_into(&mut pipe, states)?;
        let () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    async fn load(&self, uuid: Uuid) -> CoreResult<Option<TaskState>> {
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.engine.keys.state(uuid))
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        raw.map(|b| TaskState::decode(&b)).transpose()
    }

    async fn wait(&self, uuid: Uuid, timeout: Option<Duration>) -> CoreResult<TaskState> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let channel = self.engine.keys.done(uuid);
        loop {
            // Subscribe first, then read: a state written in between is seen either way.
            let rx = self.subscribe(&channel).await?;
            let state = self.load(uuid).await;
            let state = match state {
                Ok(Some(s)) if s.state.is_terminal() => Some(Ok(s)),
                Ok(Some(_)) => None,
                Ok(None) => Some(Err(CoreError::ResultMissing(uuid))),
                Err(e) => Some(Err(e)),
            };
            if let Some(done) = state {
                drop(rx);
                self.unsubscribe_later(channel);
                return done;
            }
            let woken = match deadline {
                Some(d) => match tokio::time::timeout_at(d, rx).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.unsubscribe_later(channel);
                        return Err(CoreError::Timeout(timeout.unwrap_or_default()));
                    }
                },
                None => rx.await,
            };
            if let Ok(bytes) = woken {
                self.unsubscribe_later(channel.clone());
                if let Ok(s) = TaskState::decode(&bytes)
                    && s.state.is_terminal()
                {
                    return Ok(s);
                }
            }
            // Woken without a state (the pub/sub connection dropped): read again.
        }
    }

    async fn forget(&self, uuid: Uuid) -> CoreResult<()> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.engine.keys.state(uuid))
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    async fn init_chord(&self, group: Uuid, count: u32, callback: &Outgoing) -> CoreResult<()> {
        let key = self.engine.keys.chord(group);
        let ttl = self.engine.ttl_ms();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("count")
            .arg(count)
            .arg("callback")
            .arg(callback.payload.as_slice())
            .arg("queue")
            .arg(&callback.queue)
            .arg("priority")
            .arg(callback.priority.min(9))
            .ignore();
        if ttl > 0 {
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        }
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
        let success = match state.state {
            State::Success => "1",
            State::Failure => "0",
            _ => return Ok(None),
        };
        let reply: Option<(Vec<u8>, String, u8)> = self
            .engine
            .scripts
            .chord_done
            .arg(self.engine.keys.prefix())
            .arg(self.engine.ttl_ms())
            .arg(member.group_uuid.to_string())
            .arg(member.index)
            .arg(success)
            .arg(state.result.as_deref().unwrap_or_default())
            .arg(&state.name)
            .arg(state.error.as_deref().unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(reply.map(|(payload, queue, priority)| Outgoing {
            uuid: Uuid::nil(),
            queue,
            eta: None,
            priority,
            payload,
        }))
    }

    async fn chord_outcome(&self, group: Uuid) -> CoreResult<ChordOutcome> {
        let mut conn = self.conn();
        let (count, failure): (Option<u32>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.engine.keys.chord(group))
            .arg("count")
            .arg("failure")
            .query_async(&mut conn)
            .await
            .map_err(Error::from)?;
        let Some(count) = count else {
            return Err(CoreError::engine_msg(
                "redis",
                format!("chord {group} is unknown or expired"),
            ));
        };
        let fields: Vec<u32> = (0..count).collect();
        let results: Vec<Option<Vec<u8>>> = if count == 0 {
            Vec::new()
        } else {
            redis::cmd("HMGET")
                .arg(self.engine.keys.chord_results(group))
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

    fn as_any(&self) -> &dyn Any {
        self
    }
}
