//! Listings and dead-letter administration: what an operator asks of a queue.

use machinery_core::Result as CoreResult;
use machinery_core::engine::{DeadLetter, QueueDepth};

use super::reply::parse_dead;
use super::{RedisBroker, add_wakes};
use crate::error::Error;
use crate::scripts::{PendingArgs, RequeueArgs};

/// Dead letters moved back per script call.
const REQUEUE_CHUNK: usize = 1_000;

impl RedisBroker {
    /// The ready messages of `queue`, next first, with the delayed ones already due in
    /// their place (one script call: `pending.lua`).
    pub(crate) async fn pending_payloads(&self, queue: &str) -> CoreResult<Vec<Vec<u8>>> {
        let args = PendingArgs { queue };
        let payloads: Vec<Vec<u8>> = args
            .invocation(&self.engine.scripts, &self.engine.keys)
            .invoke_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(payloads)
    }

    /// The delayed messages not yet due of `queue` (every queue published to when
    /// `None`), soonest first.
    pub(crate) async fn delayed_payloads(&self, queue: Option<&str>) -> CoreResult<Vec<Vec<u8>>> {
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
                .arg(self.engine.keys.delayed(q))
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

    /// How many messages of `queue` are ready (due delayed ones included), delayed and
    /// in flight.
    pub(crate) async fn queue_depth(&self, queue: &str) -> CoreResult<QueueDepth> {
        let now = self.server_ms().await?;
        let delayed_key = self.engine.keys.delayed(queue);
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
            .arg(self.engine.keys.inflight(queue))
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

    /// The dead letters of `queue`, oldest first.
    pub(crate) async fn list_dead_letters(&self, queue: &str) -> CoreResult<Vec<DeadLetter>> {
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(self.engine.keys.dead(queue))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(raw.iter().map(|r| parse_dead(queue, r)).collect())
    }

    /// Moves every dead letter of `queue` back into it; returns how many.
    pub(crate) async fn requeue_dead(&self, queue: &str) -> CoreResult<usize> {
        let mut moved = 0;
        loop {
            // Atomic per batch: an entry is never lost nor both dead and queued.
            let mut pipe = redis::pipe();
            let args = RequeueArgs {
                queue,
                max: REQUEUE_CHUNK,
            };
            pipe.invoke_script(&args.invocation(&self.engine.scripts, &self.engine.keys));
            add_wakes(&mut pipe, &[self.engine.keys.wake(queue)]);
            let (n,): (usize,) = self.engine.query_scripted(&pipe).await?;
            moved += n;
            if n < REQUEUE_CHUNK {
                return Ok(moved);
            }
        }
    }

    /// Deletes every dead letter of `queue`; returns how many.
    pub(crate) async fn purge_dead(&self, queue: &str) -> CoreResult<usize> {
        let key = self.engine.keys.dead(queue);
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

    /// The server's clock in milliseconds: ETAs are compared with it, as in the scripts.
    pub(super) async fn server_ms(&self) -> CoreResult<u64> {
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
            .arg(self.engine.keys.msg(queue))
            .arg(ids)
            .query_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        Ok(values.into_iter().flatten().collect())
    }
}
