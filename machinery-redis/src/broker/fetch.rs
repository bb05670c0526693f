//! Taking messages: the fetch script, blocking reads on the wake-up lists, and handing
//! back what a cancelled fetch took.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use machinery_core::Result as CoreResult;
use machinery_core::engine::Delivery;
use redis::Value;
use tokio::sync::oneshot;

use super::reply::{fetched, receipt_id};
use super::{RedisBroker, add_wakes, millis, wake_pipe};
use crate::conn::Engine;
use crate::error::{Error, Result};
use crate::scripts::{FetchArgs, Settle, SettleArgs};

/// How late Redis may time out a blocked client (its `hz` is 10 by default).
const BLOCK_GRANULARITY: Duration = Duration::from_millis(100);

/// Most messages one fetch script call takes, whatever `redis.fetch_batch` says: a
/// script's arguments to one command are bounded (Lua's stack).
const MAX_FETCH: usize = 1_000;

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
    taken_from(engine, queue, &reply)
}

fn fetch_invocation<'a>(
    engine: &'a Engine,
    queue: &str,
    max: usize,
    visibility_ms: u64,
) -> redis::ScriptInvocation<'a> {
    FetchArgs {
        queue,
        max,
        visibility_ms,
    }
    .invocation(&engine.scripts, &engine.keys)
}

/// Reads a fetch script's reply; when more messages are ready than this worker took,
/// wakes another one, off the fetch path.
fn taken_from(
    engine: &Engine,
    queue: &str,
    reply: &[Value],
) -> Result<(Vec<Delivery>, Option<Duration>)> {
    let f = fetched(queue, reply)?;
    if f.more {
        let key = engine.keys.wake(queue);
        let mut conn = engine.conn.clone();
        tokio::spawn(async move {
            let _: redis::RedisResult<()> = wake_pipe(&[key]).query_async(&mut conn).await;
        });
    }
    Ok((f.deliveries, f.next_due))
}

/// Hands back deliveries nobody will run (their fetch was cancelled): ready again at
/// their old place, this delivery not counted.
async fn give_back(engine: &Engine, deliveries: Vec<Delivery>) {
    for d in deliveries {
        let Ok(id) = receipt_id(&d) else {
            continue;
        };
        let mut pipe = redis::pipe();
        let args = SettleArgs {
            queue: &d.queue,
            id,
            receipt: &d.receipt,
            action: Settle::Return,
        };
        pipe.invoke_script(&args.invocation(&engine.scripts, &engine.keys));
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

impl RedisBroker {
    fn drained(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<tokio::time::Instant>>> {
        self.drained.lock().unwrap_or_else(|p| p.into_inner())
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
            .map_err(|_| Error::Interrupted("the fetch task ended without a reply"))?
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
            Err(_) => Err(Error::Timeout {
                what: "a blocking read",
                after: limit,
            }),
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
                    taken_from(&engine, &queue, &reply).map(|(deliveries, next_due)| {
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
                Err(_) => Err(Error::Timeout {
                    what: "a blocking read",
                    after: limit,
                }),
            };
            if let Err(Ok((_, Some(orphans)))) = tx.send(reply) {
                give_back(&engine, orphans.deliveries).await;
            }
        });
        rx.await
            .map_err(|_| Error::Interrupted("the blocking fetch ended without a reply"))?
    }

    pub(super) async fn fetch_messages(
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
}
