//! Sending messages: the publish script, one call per queue and chunk.

use machinery_core::engine::{Enqueued, Outgoing, ResultBackend};
use machinery_core::{Error as CoreError, Result as CoreResult, TaskState, UniqueLock};
use uuid::Uuid;

use super::{RedisBroker, add_wakes, group_by_queue};
use crate::backend::Write;
use crate::error::{Error, Result};
use crate::scripts::{PublishArgs, PublishUniqueArgs, UniqueReleaseArgs};

/// Messages per publish script call: large enough to amortise the round trip, small
/// enough not to stall Redis.
pub(super) const PUBLISH_CHUNK: usize = 1_000;

/// `messages` grouped by queue, queues in order of first appearance, messages in order.
pub(super) fn by_queue(messages: &[Outgoing]) -> Vec<(&str, Vec<&Outgoing>)> {
    group_by_queue(messages.iter().enumerate(), |m| &m.queue)
        .into_iter()
        .map(|(q, list)| (q, list.into_iter().map(|i| &messages[i]).collect()))
        .collect()
}

impl RedisBroker {
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

    /// Adds the publish script calls for `messages`, all sent to `queue`, to `pipe`, with
    /// the queue's registration and a wake-up for its blocked workers.
    pub(super) fn add_publish(
        &self,
        pipe: &mut redis::Pipeline,
        queue: &str,
        messages: &[&Outgoing],
    ) {
        pipe.cmd("SADD")
            .arg(self.engine.keys.queues())
            .arg(queue)
            .ignore();
        for chunk in messages.chunks(PUBLISH_CHUNK) {
            let args = PublishArgs {
                queue,
                messages: chunk,
            };
            pipe.invoke_script(&args.invocation(&self.engine.scripts, &self.engine.keys))
                .ignore();
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

    pub(super) async fn publish_messages(&self, messages: Vec<Outgoing>) -> CoreResult<()> {
        self.check_sizes(&messages)?;
        Ok(self.publish_raw(redis::pipe(), &messages).await?)
    }

    pub(super) async fn publish_messages_with_states(
        &self,
        messages: Vec<Outgoing>,
        states: &[TaskState],
        backend: &dyn ResultBackend,
    ) -> CoreResult<()> {
        self.check_sizes(&messages)?;
        if !self.colocated(backend) {
            backend.store_new(states).await?;
            return Ok(self.publish_raw(redis::pipe(), &messages).await?);
        };
        // States and messages in one pipeline (one round trip for a send), the states
        // first so that a fast worker's STARTED is never overwritten by PENDING.
        let mut first = redis::pipe();
        // The states of tasks being sent are written as they are: a UUID sent again
        // starts over at PENDING.
        if messages.len() <= PUBLISH_CHUNK {
            self.engine.store_into(&mut first, states, Write::Fresh)?;
        } else {
            self.engine.store_with(states, Write::Fresh).await?;
        }
        Ok(self.publish_raw(first, &messages).await?)
    }
}

impl RedisBroker {
    /// One unique send: `publish_unique.lua` (lock, state check, state, message in one
    /// step) in one round trip with the queue's registration and a wake-up token.
    pub(super) async fn publish_unique_message(
        &self,
        message: Outgoing,
        state: &TaskState,
        lock: &UniqueLock,
        backend: &dyn ResultBackend,
    ) -> CoreResult<Enqueued> {
        self.check_sizes(std::slice::from_ref(&message))?;
        if !self.colocated(backend) {
            return self
                .publish_unique_apart(message, state, lock, backend)
                .await;
        }
        let queue = message.queue.as_str();
        let state = state.encode()?;
        let args = PublishUniqueArgs {
            queue,
            message: &message,
            state: &state,
            lock: Some(lock.key.as_str()).filter(|k| !k.is_empty()),
            ttl_ms: lock.ttl_ms,
        };
        let mut pipe = redis::pipe();
        pipe.cmd("SADD")
            .arg(self.engine.keys.queues())
            .arg(queue)
            .ignore();
        pipe.invoke_script(&args.invocation(&self.engine.scripts, &self.engine.keys));
        // A token for a duplicate only makes a blocked worker look once.
        add_wakes(&mut pipe, &[self.engine.keys.wake(queue)]);
        let ((flag, holder),): ((i64, String),) = self.engine.query_scripted(&pipe).await?;
        if flag == 1 {
            return Ok(Enqueued::Sent { uuid: message.uuid });
        }
        let uuid = Uuid::parse_str(&holder).map_err(|e| {
            Error::Protocol(format!("a unique lock holds `{holder}`, not a UUID: {e}"))
        })?;
        Ok(Enqueued::Duplicate { uuid })
    }

    /// A unique send with a result backend outside this broker's Redis: the lock is
    /// taken atomically (`SET NX PX`), but the UUID check ([`ResultBackend::load`]) and
    /// the state write are separate steps, so two senders of one UUID racing may both
    /// enqueue.
    async fn publish_unique_apart(
        &self,
        message: Outgoing,
        state: &TaskState,
        lock: &UniqueLock,
        backend: &dyn ResultBackend,
    ) -> CoreResult<Enqueued> {
        let queue = message.queue.as_str();
        let uuid = message.uuid;
        if !lock.key.is_empty() {
            let key = self.engine.keys.unique(queue, &lock.key);
            let mut conn = self.conn();
            // A lock released between the SET and the GET is tried again.
            let mut taken = false;
            for _ in 0..8 {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(uuid.to_string())
                    .arg("NX")
                    .arg("PX")
                    .arg(lock.ttl_ms.max(1))
                    .query_async(&mut conn)
                    .await
                    .map_err(Error::from)?;
                if set.is_some() {
                    taken = true;
                    break;
                }
                let holder: Option<String> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(Error::from)?;
                if let Some(holder) = holder {
                    let holder = Uuid::parse_str(&holder).map_err(|e| {
                        Error::Protocol(format!("a unique lock holds `{holder}`, not a UUID: {e}"))
                    })?;
                    return Ok(Enqueued::Duplicate { uuid: holder });
                }
            }
            if !taken {
                return Err(Error::Protocol("a unique lock kept changing hands".into()).into());
            }
        }
        if let Some(stored) = backend.load(queue, uuid).await?
            && !stored.state.is_terminal()
        {
            if !lock.key.is_empty() {
                self.release_unique_lock(queue, &lock.key, uuid).await?;
            }
            return Ok(Enqueued::Duplicate { uuid });
        }
        backend.store_new(std::slice::from_ref(state)).await?;
        self.publish_raw(redis::pipe(), std::slice::from_ref(&message))
            .await?;
        Ok(Enqueued::Sent { uuid })
    }

    /// Releases lock `key` of `queue` if `uuid` holds it (`unique_release.lua`).
    pub(super) async fn release_unique_lock(
        &self,
        queue: &str,
        key: &str,
        uuid: Uuid,
    ) -> CoreResult<()> {
        let args = UniqueReleaseArgs { queue, key, uuid };
        let mut pipe = redis::pipe();
        pipe.invoke_script(&args.invocation(&self.engine.scripts, &self.engine.keys))
            .ignore();
        let () = self.engine.query_scripted(&pipe).await?;
        Ok(())
    }
}
