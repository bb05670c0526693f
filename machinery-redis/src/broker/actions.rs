//! The actions of the admin plane: deleting one pending task, purging a queue, one
//! dead letter requeued or deleted, pausing and resuming a queue.

use machinery_core::Result as CoreResult;
use redis::Value;
use uuid::Uuid;

use super::inspect::{SCAN_BUDGET, found_rows};
use super::{RedisBroker, wake_pipe};
use crate::error::Error;
use crate::scripts::{DeadAction, FindArgs, PurgeArgs};

/// Messages deleted per `purge.lua` call: a few milliseconds of Redis's time.
const PURGE_CHUNK: usize = 2_000;

impl RedisBroker {
    /// Deletes task `uuid`'s message from `queue` when it is ready or delayed: the
    /// payload hash is walked (HSCAN, [`SCAN_BUDGET`] fields per call) and the first
    /// match still ready or delayed is deleted in the same call.
    pub(crate) async fn delete_pending_task(&self, queue: &str, uuid: Uuid) -> CoreResult<bool> {
        let mut cursor = "0".to_owned();
        loop {
            let args = FindArgs {
                queue,
                cursor: &cursor,
                budget: SCAN_BUDGET,
                uuid,
                delete: true,
            };
            let reply: Vec<Value> = args
                .invocation(&self.engine.scripts, &self.engine.keys)
                .invoke_async(&mut self.conn())
                .await
                .map_err(Error::from)?;
            let (next, found) = found_rows(&reply)?;
            if found.iter().any(|f| f.place == "deleted") {
                return Ok(true);
            }
            if next == "0" {
                return Ok(false);
            }
            cursor = next;
        }
    }

    /// Deletes the ready and delayed messages of `queue`, [`PURGE_CHUNK`] per script
    /// call, until a call finds fewer.
    pub(crate) async fn purge_queue(&self, queue: &str) -> CoreResult<u64> {
        let mut total = 0;
        loop {
            let args = PurgeArgs {
                queue,
                max: PURGE_CHUNK,
            };
            let n: u64 = args
                .invocation(&self.engine.scripts, &self.engine.keys)
                .invoke_async(&mut self.conn())
                .await
                .map_err(Error::from)?;
            total += n;
            if n < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Requeues (or deletes) the dead letter of task `uuid` in `queue`.
    pub(crate) async fn one_dead_letter(
        &self,
        queue: &str,
        uuid: Uuid,
        action: DeadAction,
    ) -> CoreResult<bool> {
        let done = self.dead_one(queue, uuid, action).await?.is_some();
        if done && action == DeadAction::Requeue {
            self.wake(queue).await?;
        }
        Ok(done)
    }

    /// Pauses `queue`; returns whether it was running. The queue is registered, so it
    /// is listed while paused even if nothing was ever published to it.
    pub(crate) async fn pause_queue(&self, queue: &str) -> CoreResult<bool> {
        let (set,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(self.engine.keys.paused(queue))
            .arg(1)
            .arg("NX")
            .cmd("SADD")
            .arg(self.engine.keys.queues())
            .arg(queue)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(set.is_some())
    }

    /// Resumes `queue` and wakes one of its blocked workers (which wakes the next when
    /// more is ready); returns whether it was paused.
    pub(crate) async fn resume_queue(&self, queue: &str) -> CoreResult<bool> {
        let removed: i64 = redis::cmd("DEL")
            .arg(self.engine.keys.paused(queue))
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        if removed == 1 {
            self.wake(queue).await?;
        }
        Ok(removed == 1)
    }

    async fn wake(&self, queue: &str) -> CoreResult<()> {
        let () = wake_pipe(&[self.engine.keys.wake(queue)])
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(())
    }
}
