//! Settling deliveries: ack, release, dead-letter and lease extension one by one, and
//! batch completion (the complete script, one call per queue, with the work a
//! completion causes in other queues done first).

use machinery_core::engine::ResultBackend;
use machinery_core::engine::{Completion, Delivery, complete_step_by_step};
use machinery_core::{Error as CoreError, Result as CoreResult, State, TaskState};

use super::publish::by_queue;
use super::reply::receipt_id;
use super::{RedisBroker, add_wakes, group_by_queue, millis};
use crate::backend::Write;
use crate::error::Error;
use crate::scripts::{CompleteArgs, ExtendArgs, Settle, SettleArgs};

/// Whether a completion writes to other queues than its delivery's: a state, a message
/// or a chord kept elsewhere (another Redis Cluster slot).
fn reaches_other_queues(c: &Completion) -> bool {
    let own = c.delivery.queue.as_str();
    c.state.queue != own
        || c.also_store.iter().any(|s| s.queue != own)
        || c.publish.iter().any(|m| m.queue != own)
        || c.group.as_ref().is_some_and(|g| g.queue != own)
}

/// The refusal of completion `c` when `stored` (its task's stored state) is REVOKED.
fn refusal(c: &Completion, stored: &[u8]) -> Option<CoreError> {
    let stored = TaskState::decode(stored).ok()?;
    (stored.state == State::Revoked).then(|| revoked(c, stored.error))
}

/// [`Error::Revoked`](CoreError::Revoked) for completion `c`'s task, revoked for `reason`
/// (the stored state's error text; `revoked` when it has none).
fn revoked(c: &Completion, reason: Option<String>) -> CoreError {
    CoreError::Revoked {
        uuid: c.state.uuid,
        name: c.state.name.clone(),
        reason: reason.unwrap_or_else(|| "revoked".to_owned()),
    }
}

/// The chord whose bookkeeping this completion's final state lets expire.
fn ends_chord(c: &Completion) -> Option<uuid::Uuid> {
    c.ends_chord.filter(|_| c.state.state.is_terminal())
}

impl RedisBroker {
    async fn settle(&self, d: &Delivery, action: Settle<'_>) -> CoreResult<()> {
        let id = receipt_id(d)?;
        let mut pipe = redis::pipe();
        let args = SettleArgs {
            queue: &d.queue,
            id,
            receipt: &d.receipt,
            action,
        };
        pipe.invoke_script(&args.invocation(&self.engine.scripts, &self.engine.keys));
        if let Settle::Release { .. } | Settle::Defer { .. } = action {
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

    pub(super) async fn ack_delivery(&self, delivery: &Delivery) -> CoreResult<()> {
        self.settle(delivery, Settle::Ack).await
    }

    pub(super) async fn defer_delivery(
        &self,
        delivery: &Delivery,
        delay: std::time::Duration,
    ) -> CoreResult<()> {
        let delay_ms = millis(delay);
        self.settle(delivery, Settle::Defer { delay_ms }).await
    }

    pub(super) async fn release_delivery(
        &self,
        delivery: &Delivery,
        delay: Option<std::time::Duration>,
    ) -> CoreResult<()> {
        let delay_ms = delay.map_or(0, millis);
        self.settle(delivery, Settle::Release { delay_ms }).await
    }

    pub(super) async fn dead_letter_delivery(
        &self,
        delivery: &Delivery,
        reason: &machinery_core::DeadLetterReason,
    ) -> CoreResult<()> {
        tracing::debug!(queue = %delivery.queue, %reason, "moving a message to the dead-letter queue");
        // Stored as its text (`DeadLetterReason::parse` reads it back).
        let reason = reason.to_string();
        self.settle(delivery, Settle::Dead { reason: &reason })
            .await
    }

    pub(super) async fn extend_leases(&self, deliveries: &[Delivery]) -> CoreResult<Vec<bool>> {
        Ok(self.extend_and_read(deliveries, &[]).await?.0)
    }

    /// Extends the leases of `deliveries` (one flag each: still held) and, in the same
    /// round trip, reads the stored states at `state_keys`.
    async fn extend_and_read(
        &self,
        deliveries: &[Delivery],
        state_keys: &[String],
    ) -> CoreResult<(Vec<bool>, Vec<Option<Vec<u8>>>)> {
        if deliveries.is_empty() && state_keys.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        // One script call per queue (each in its own slot), all in one round trip.
        let queues = group_by_queue(deliveries.iter().enumerate(), |d| &d.queue);
        let mut pipe = redis::pipe();
        for (queue, list) in &queues {
            // A receipt that is no lease (no '/') holds nothing: '' is never in flight.
            let receipts = list
                .iter()
                .map(|&i| {
                    let d = &deliveries[i];
                    receipt_id(d).map_or("", |_| d.receipt.as_str())
                })
                .collect();
            let args = ExtendArgs {
                queue,
                visibility_ms: millis(self.visibility),
                receipts,
            };
            pipe.invoke_script(&args.invocation(&self.engine.scripts, &self.engine.keys));
        }
        for key in state_keys {
            pipe.cmd("GET").arg(key);
        }
        let mut replies: Vec<redis::Value> = self.engine.query_scripted(&pipe).await?;
        if replies.len() != queues.len() + state_keys.len() {
            return Err(
                Error::Protocol("extend returned the wrong number of replies".into()).into(),
            );
        }
        let states = replies
            .split_off(queues.len())
            .into_iter()
            .map(|v| {
                redis::from_redis_value::<Option<Vec<u8>>>(v)
                    .map_err(|e| Error::Protocol(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut held = vec![false; deliveries.len()];
        for ((_, list), reply) in queues.iter().zip(replies) {
            let reply: Vec<i64> =
                redis::from_redis_value(reply).map_err(|e| Error::Protocol(e.to_string()))?;
            if reply.len() != list.len() {
                return Err(
                    Error::Protocol("extend returned the wrong number of flags".into()).into(),
                );
            }
            for (&i, h) in list.iter().zip(reply) {
                held[i] = h == 1;
            }
        }
        Ok((held, states))
    }

    /// Does the part of completions that concerns other queues than each delivery's own
    /// (their states, messages and chords live in other cluster slots), all in one round
    /// trip. Runs before the deliveries' own fenced completion, so a crash in between
    /// repeats this work rather than losing it: at least once, like the task itself.
    async fn foreign_work(&self, cs: &[&Completion]) -> CoreResult<()> {
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
                && let Some(invocation) = self.engine.chord_done_invocation(g, &c.state, true)
            {
                pipe.invoke_script(&invocation).ignore();
                add_wakes(&mut pipe, &[self.engine.keys.wake(&g.queue)]);
            }
            if let Some(group) = ends_chord(c).filter(|_| c.state.queue != own) {
                self.engine
                    .chord_finished_into(&mut pipe, &c.state.queue, group);
            }
        }
        self.engine.store_into(&mut pipe, &states, Write::Guarded)?;
        for (queue, list) in by_queue(&messages) {
            self.add_publish(&mut pipe, queue, &list);
        }
        let () = self.engine.query_scripted(&pipe).await?;
        Ok(())
    }

    pub(super) async fn complete_batch(
        &self,
        completions: &[Completion],
        backend: &dyn ResultBackend,
    ) -> CoreResult<Vec<CoreResult<()>>> {
        if !self.colocated(backend) {
            // Another result backend: the step-by-step default.
            return complete_step_by_step(self, completions, backend).await;
        };
        let mut out: Vec<Option<CoreResult<()>>> = completions.iter().map(|_| None).collect();
        let lost = |c: &Completion| {
            Err(CoreError::LeaseLost {
                receipt: c.delivery.receipt.clone(),
            })
        };
        // Work in other queues' slots first, for the deliveries still held and whose
        // task was not revoked meanwhile (its state is read with the leases: a task
        // whose state lives in another queue's slot is not checked by the complete
        // script; the guarded state writes still keep its REVOKED state).
        let foreign: Vec<usize> = (0..completions.len())
            .filter(|&i| reaches_other_queues(&completions[i]))
            .collect();
        if !foreign.is_empty() {
            let deliveries: Vec<Delivery> = foreign
                .iter()
                .map(|&i| completions[i].delivery.clone())
                .collect();
            let state_keys: Vec<String> = foreign
                .iter()
                .map(|&i| {
                    let s = &completions[i].state;
                    self.engine.keys.state(&s.queue, s.uuid)
                })
                .collect();
            let (held, stored) = self.extend_and_read(&deliveries, &state_keys).await?;
            let mut still_held = Vec::with_capacity(foreign.len());
            for ((&i, held), stored) in foreign.iter().zip(held).zip(stored) {
                let c = &completions[i];
                if !held {
                    out[i] = Some(lost(c));
                } else if let Some(e) = stored
                    .filter(|_| c.state.state != State::Revoked)
                    .and_then(|bytes| refusal(c, &bytes))
                {
                    out[i] = Some(Err(e));
                } else {
                    still_held.push(i);
                }
            }
            let held: Vec<&Completion> = still_held.iter().map(|&i| &completions[i]).collect();
            if let Err(e) = self.foreign_work(&held).await {
                // Not acknowledged: delivered again after the visibility timeout.
                tracing::warn!(error = %e, tasks = held.len(), "could not write what finished tasks send to other queues; they run again");
                for &i in &still_held {
                    out[i] = Some(Err(CoreError::engine_msg("redis", e.kind(), e.to_string())));
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
            let mut args = CompleteArgs::new(queue, self.engine.ttl_ms(), self.engine.single_node);
            let mut included = Vec::with_capacity(list.len());
            let mut wake = false;
            for i in list {
                let c = &completions[i];
                match receipt_id(&c.delivery) {
                    Ok(id) => {
                        args.push(&self.engine.keys, c, id)?;
                        included.push(i);
                        wake |= !c.publish.is_empty() || c.group.is_some();
                    }
                    Err(e) => out[i] = Some(Err(e)),
                }
            }
            if args.is_empty() {
                continue;
            }
            pipe.invoke_script(&args.invocation(&self.engine.scripts, &self.engine.keys));
            if wake {
                add_wakes(&mut pipe, &[self.engine.keys.wake(queue)]);
            }
            calls.push(included);
        }
        if !calls.is_empty() {
            let replies: Vec<Vec<redis::Value>> = self.engine.query_scripted(&pipe).await?;
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
                for (&i, r) in included.iter().zip(reply) {
                    let c = &completions[i];
                    out[i] = Some(match r {
                        redis::Value::Int(1) => Ok(()),
                        redis::Value::Int(_) => lost(c),
                        // The stored REVOKED state: refused, nothing written.
                        redis::Value::BulkString(bytes) => {
                            Err(refusal(c, &bytes).unwrap_or_else(|| revoked(c, None)))
                        }
                        other => {
                            return Err(Error::Protocol(format!(
                                "complete returned {other:?} for a delivery"
                            ))
                            .into());
                        }
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
}
