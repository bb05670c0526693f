//! Running one delivery: decode, check, run, settle.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::broker::{Completion, Delivery, Outgoing};
use crate::codec;
use crate::context::TaskContext;
use crate::error::Result;
use crate::registry::{Invocation, TaskEntry};
use crate::result::{State, TaskState};
use crate::retry::{DEFAULT_RETRY_BASE, fibonacci_delay};
use crate::signature::{RawSignature, to_ms};
use crate::task_error::TaskError;

use super::panic_message;
use super::run::Shared;
use super::started::StartGate;

pub(crate) async fn process(
    shared: Arc<Shared>,
    delivery: Delivery,
    raw: Result<RawSignature>,
    permit: Option<OwnedSemaphorePermit>,
    mut started: StartGate,
) {
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            tracing::error!(queue = %delivery.queue, error = %e, "message does not decode; moving it to the dead-letter queue");
            dead_letter(&shared, &delivery, &format!("undecodable message: {e}")).await;
            return;
        }
    };
    let config = shared.server.config();
    if delivery.delivery_count > config.max_deliveries {
        let reason = format!(
            "delivered {} times (max_deliveries = {}): the workers running it keep dying or losing it",
            delivery.delivery_count, config.max_deliveries
        );
        tracing::error!(task.id = %raw.uuid, task.name = %raw.name, reason, "moving task to the dead-letter queue");
        started.finished().await;
        fail_and_dead_letter(&shared, &delivery, &raw, &reason).await;
        return;
    }
    let Some(entry) = shared.registry.get(&raw.name).copied() else {
        unregistered(&shared, &delivery, &raw).await;
        return;
    };
    let ctx = TaskContext {
        uuid: raw.uuid,
        name: raw.name.clone(),
        retried: raw.retried,
        retries_left: raw.retry_count,
        delivery_count: delivery.delivery_count,
        headers: raw.headers.clone(),
        group_uuid: raw.group_uuid,
        queue: delivery.queue.clone(),
    };
    let mut raw = raw;
    let outcome = if let Err(e) = chord_arguments(&shared, &mut raw, &delivery.queue).await {
        Err(e)
    } else if raw.fingerprint != 0 && raw.fingerprint != entry.fingerprint {
        Err(TaskError::fatal(format!(
            "argument schema mismatch: the message was sent for `{}` but this worker runs `{}` \
             (producers and workers run different versions of the task)",
            raw.schema, entry.schema
        )))
    } else {
        shared.hooks.before(&ctx);
        run(&entry, &raw, ctx.clone()).await
    };
    drop(permit);
    let (state, mut publish) = settle_outcome(&shared, &raw, &ctx, &delivery.queue, outcome);
    shared.hooks.after(&ctx, &state);
    let mut also_store = Vec::new();
    if state.state == State::Failure {
        stop_downstream(
            &shared,
            &raw,
            &state,
            &delivery.queue,
            &mut also_store,
            &mut publish,
        )
        .await;
    }
    let group = if state.state.is_terminal() {
        raw.chord_member(&delivery.queue)
    } else {
        None
    };
    let Some(delivery) = shared.settle(&delivery) else {
        return;
    };
    let completion = Completion {
        delivery,
        state,
        also_store,
        publish,
        group,
        dead_letter: None,
        ends_chord: None,
    };
    started.finished().await;
    if shared.completions.send(completion).await.is_err() {
        tracing::error!(task.id = %raw.uuid, "worker is stopping; the completion is lost and the task will run again");
    }
}

/// For a chord callback: appends the members' results (a `Vec<T>`, in member order)
/// to the arguments, or fails when a member failed.
async fn chord_arguments(
    shared: &Shared,
    raw: &mut RawSignature,
    queue: &str,
) -> std::result::Result<(), TaskError> {
    let Some(group) = raw.chord_of else {
        return Ok(());
    };
    let outcome = shared
        .server
        .backend()
        .chord_outcome(raw.state_queue(queue), group)
        .await
        .map_err(|e| TaskError::msg(format!("cannot read the results of chord {group}: {e}")))?;
    if let Some((index, name, error)) = outcome.failure {
        return Err(TaskError::fatal(format!(
            "chord member #{index} (`{name}`) failed: {error}"
        )));
    }
    if raw.immutable {
        return Ok(());
    }
    let mut list = Vec::with_capacity(outcome.results.iter().map(Vec::len).sum::<usize>() + 5);
    codec::write_array_len(&mut list, outcome.results.len())
        .map_err(|e| TaskError::fatal(e.to_string()))?;
    for r in &outcome.results {
        list.extend_from_slice(r);
    }
    raw.args = codec::append_arg(&raw.args, &list).map_err(|e| TaskError::fatal(e.to_string()))?;
    Ok(())
}

/// A failed task stops what would have run after it: the later steps of its chain are
/// marked FAILURE (so whoever waits on them learns why), and chords downstream count the
/// failure so their callbacks report it.
async fn stop_downstream(
    shared: &Shared,
    raw: &RawSignature,
    failed: &TaskState,
    queue: &str,
    states: &mut Vec<TaskState>,
    publish: &mut Vec<Outgoing>,
) {
    let reason = format!(
        "not run: an earlier step, `{}` ({}), failed: {}",
        raw.name,
        raw.uuid,
        failed.error.as_deref().unwrap_or_default()
    );
    let downstream = match raw.downstream() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(task.id = %raw.uuid, error = %e, "cannot read the rest of the workflow to stop it");
            Vec::new()
        }
    };
    for next in &downstream {
        let mut st = next.task_state(State::Failure, queue);
        st.error = Some(reason.clone());
        if let Some(member) = next.chord_member(queue) {
            let group_uuid = member.group_uuid;
            match shared
                .server
                .backend()
                .chord_member_done(&member, &st)
                .await
            {
                Ok(Some(callback)) => publish.push(callback),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(group = %group_uuid, error = %e, "cannot fail a chord stopped upstream")
                }
            }
        }
        states.push(st);
    }
}

async fn run(
    entry: &TaskEntry,
    raw: &RawSignature,
    ctx: TaskContext,
) -> std::result::Result<Vec<u8>, TaskError> {
    let invocation = Invocation {
        args: raw.args.clone(),
        ctx,
    };
    let fut = AssertUnwindSafe((entry.handler)(invocation)).catch_unwind();
    let joined = match entry.timeout() {
        Some(limit) => match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => {
                return Err(TaskError::msg(format!(
                    "task exceeded its time limit of {limit:?} and was cancelled"
                )));
            }
        },
        None => fut.await,
    };
    match joined {
        Ok(outcome) => outcome,
        Err(payload) => Err(TaskError::msg(format!(
            "task panicked: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// Turns a run's outcome into the state to store and the messages to publish.
fn settle_outcome(
    shared: &Shared,
    raw: &RawSignature,
    ctx: &TaskContext,
    queue: &str,
    outcome: std::result::Result<Vec<u8>, TaskError>,
) -> (TaskState, Vec<Outgoing>) {
    let mut state = raw.task_state(State::Success, queue);
    let mut publish = Vec::new();
    match outcome {
        Ok(result) => {
            let followers = match raw.followers() {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(task.id = %raw.uuid, error = %e, "cannot read the rest of the workflow");
                    Vec::new()
                }
            };
            for mut cb in followers {
                if !cb.immutable {
                    match codec::append_arg(&cb.args, &result) {
                        Ok(args) => cb.args = args,
                        Err(e) => {
                            tracing::error!(task.id = %raw.uuid, error = %e, "cannot pass the result to a success callback");
                            continue;
                        }
                    }
                }
                push_outgoing(shared, &mut publish, cb);
            }
            state.result = Some(result);
        }
        Err(err) => {
            let message = err.message().to_owned();
            shared.hooks.on_error(ctx, &message);
            let can_retry = !err.is_fatal() && raw.retry_count > 0;
            if can_retry {
                let delay = err.retry_delay().unwrap_or_else(|| {
                    let base = if raw.retry_timeout == 0 {
                        DEFAULT_RETRY_BASE
                    } else {
                        Duration::from_millis(raw.retry_timeout)
                    };
                    let cap = Duration::from_secs(shared.server.config().retry_max_delay);
                    fibonacci_delay(raw.retried, base, cap)
                });
                tracing::warn!(task.id = %raw.uuid, task.name = %raw.name, error = %message, retry_in = ?delay, retries_left = raw.retry_count - 1, "task failed; retrying");
                let mut next = raw.clone();
                next.retry_count -= 1;
                next.retried += 1;
                next.eta = Some(to_ms(SystemTime::now() + delay));
                state.state = State::Retry;
                state.error = Some(message);
                push_outgoing(shared, &mut publish, next);
            } else {
                tracing::error!(task.id = %raw.uuid, task.name = %raw.name, error = %message, "task failed");
                let text = codec::to_vec(&message, "error text").unwrap_or_default();
                for cb in &raw.on_error {
                    let mut cb = cb.clone();
                    match codec::prepend_arg(&cb.args, &text) {
                        Ok(args) => cb.args = args,
                        Err(e) => {
                            tracing::error!(task.id = %raw.uuid, error = %e, "cannot pass the error to an error callback");
                            continue;
                        }
                    }
                    push_outgoing(shared, &mut publish, cb);
                }
                state.state = State::Failure;
                state.error = Some(message);
            }
        }
    }
    (state, publish)
}

fn push_outgoing(shared: &Shared, publish: &mut Vec<Outgoing>, mut sig: RawSignature) {
    match shared.server.outgoing(&mut sig) {
        Ok(o) => publish.push(o),
        Err(e) => {
            tracing::error!(task.id = %sig.uuid, task.name = %sig.name, error = %e, "cannot publish follow-up task")
        }
    }
}

async fn dead_letter(shared: &Shared, delivery: &Delivery, reason: &str) {
    let Some(delivery) = shared.settle(delivery) else {
        return;
    };
    if let Err(e) = shared.server.broker().dead_letter(&delivery, reason).await {
        tracing::error!(error = %e, "could not dead-letter a message; it will be delivered again");
    }
}

async fn fail_and_dead_letter(
    shared: &Shared,
    delivery: &Delivery,
    raw: &RawSignature,
    reason: &str,
) {
    let mut state = raw.task_state(State::Failure, &delivery.queue);
    state.error = Some(reason.to_owned());
    if let Err(e) = shared
        .server
        .backend()
        .store(std::slice::from_ref(&state))
        .await
    {
        tracing::warn!(task.id = %raw.uuid, error = %e, "could not record FAILURE");
    }
    dead_letter(shared, delivery, reason).await;
}

async fn unregistered(shared: &Shared, delivery: &Delivery, raw: &RawSignature) {
    if raw.ignore_when_not_registered {
        tracing::warn!(task.id = %raw.uuid, task.name = %raw.name, "no such task on this worker; dropping it (ignore_when_not_registered)");
        if let Some(d) = shared.settle(delivery)
            && let Err(e) = shared.server.broker().ack(&d).await
        {
            tracing::warn!(error = %e, "could not drop the message");
        }
        return;
    }
    let limit = shared.server.config().unregistered_requeues;
    if delivery.delivery_count <= limit {
        tracing::warn!(task.id = %raw.uuid, task.name = %raw.name, delivery = delivery.delivery_count, limit, "no such task on this worker; requeueing for another worker");
        let Some(d) = shared.settle(delivery) else {
            return;
        };
        let delay = Duration::from_millis(200) * delivery.delivery_count;
        if let Err(e) = shared.server.broker().release(&d, Some(delay)).await {
            tracing::warn!(error = %e, "could not requeue the message");
        }
    } else {
        let reason = format!(
            "task `{}` is not registered on any worker that received it ({} deliveries)",
            raw.name, delivery.delivery_count
        );
        tracing::error!(task.id = %raw.uuid, task.name = %raw.name, "{reason}; moving it to the dead-letter queue");
        fail_and_dead_letter(shared, delivery, raw, &reason).await;
    }
}
