//! Running one delivery: decode, check, run, settle.

use crate::{DeadLetterReason, FailureReason};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::context::TaskContext;
use crate::engine::{Completion, Delivery, GroupMember, Outgoing};
use crate::error::{Error, Result};
use crate::registry::{Invocation, TaskEntry};
use crate::result::{State, TaskState};
use crate::retry::{DEFAULT_RETRY_BASE, fibonacci_delay};
use crate::signature::{RawSignature, eta_after, now_ms};
use crate::task_error::TaskError;
use crate::trace::TaskTrace;

use super::observe::{Outcome, RunTimes};
use super::panic_message;
use super::run::{Settled, Shared};
use super::started::StartGate;

/// Runs one delivery; `started_at` is when its run started (ms), as written into its
/// STARTED and final states.
pub(crate) async fn process(
    shared: Arc<Shared>,
    delivery: Delivery,
    raw: Result<Arc<RawSignature>>,
    permit: Option<OwnedSemaphorePermit>,
    mut started: StartGate,
    started_at: u64,
) {
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            tracing::error!(queue = %delivery.queue, error = %e, "message cannot be read; moving it to the dead-letter queue");
            let reason = DeadLetterReason::Undecodable {
                error: e.to_string(),
            };
            dead_letter(&shared, &delivery, &reason).await;
            return;
        }
    };
    let cancel = shared.cancel_token(&delivery);
    if let Some(reason) = revoked_before_run(&shared, &raw, &cancel) {
        drop(permit);
        tracing::info!(task.id = %raw.uuid, task.name = %raw.name, %reason, "task revoked before it started; not running it");
        let ctx = context(&raw, &delivery, cancel);
        let completion = settle_revoked(&shared, &raw, &delivery, &reason, 0).await;
        shared.hooks.after(&ctx, &completion.state);
        send_completion(&shared, &delivery, completion, &mut started, None).await;
        return;
    }
    let config = shared.server.config();
    if delivery.delivery_count > config.max_deliveries {
        let reason = DeadLetterReason::MaxDeliveries {
            deliveries: delivery.delivery_count,
            max: config.max_deliveries,
        };
        tracing::error!(task.id = %raw.uuid, task.name = %raw.name, %reason, "moving task to the dead-letter queue");
        drop(permit);
        fail_and_dead_letter(&shared, &delivery, &raw, reason, started).await;
        return;
    }
    let Some(entry) = shared.registry.get(&raw.name).copied() else {
        drop(permit);
        unregistered(&shared, &delivery, &raw, started).await;
        return;
    };
    // A rate-limited task waits for its start slot, or goes back to its queue (boxed:
    // the run of an unlimited task does not carry its state).
    let started_at = if shared.limits.applies(entry.options.rate_limit) {
        let admitted = super::limit::admit(
            &shared,
            &delivery,
            &raw,
            entry.options.rate_limit,
            &mut started,
            started_at,
        );
        match Box::pin(admitted).await {
            Some(at) => at,
            None => return,
        }
    } else {
        started_at
    };
    // Revoked or expired while it waited for its start slot: it does not run.
    if started_at != 0
        && shared.limits.applies(entry.options.rate_limit)
        && let Some(reason) = revoked_before_run(&shared, &raw, &cancel)
    {
        drop(permit);
        tracing::info!(task.id = %raw.uuid, task.name = %raw.name, %reason, "task revoked while it waited for its rate limit; not running it");
        let ctx = context(&raw, &delivery, cancel);
        let completion = settle_revoked(&shared, &raw, &delivery, &reason, 0).await;
        shared.hooks.after(&ctx, &completion.state);
        send_completion(&shared, &delivery, completion, &mut started, None).await;
        return;
    }
    let mut ctx = context(&raw, &delivery, cancel.clone());
    ctx.progress = super::progress::ProgressSink::new(
        shared.server.backend().clone(),
        raw.state_queue(&delivery.queue),
        raw.uuid,
        config.progress_interval,
    );
    let mut times = None;
    let outcome = match chord_arguments(&shared, &raw, &delivery.queue).await {
        Err(e) => Err(e),
        Ok(_) if raw.fingerprint != 0 && raw.fingerprint != entry.fingerprint => {
            Err(TaskError::fatal(
                FailureReason::SchemaMismatch {
                    sent: raw.schema.to_string(),
                    runs: entry.schema.to_string(),
                }
                .to_string(),
            ))
        }
        // The arguments of this run; `raw` keeps those it was sent with, so that a retry
        // carries exactly them (a chord callback's results are appended again by it).
        Ok(args) => {
            shared.hooks.before(&ctx);
            let began = std::time::Instant::now();
            let outcome = run_revocable(
                &entry,
                args.unwrap_or_else(|| raw.args.clone()),
                ctx.clone(),
                &cancel,
                config.revoke_grace,
            )
            .await;
            let ready_at = raw.created_at.max(raw.eta.unwrap_or(0));
            times = Some(RunTimes {
                wait_ms: started_at.saturating_sub(ready_at),
                run: began.elapsed(),
            });
            outcome
        }
    };
    // The last progress value lands before the final state, so whoever sees the task
    // finished can read its last progress.
    if let Some(progress) = &ctx.progress {
        progress.finish().await;
    }
    drop(permit);
    // Revoked before the run finished: REVOKED, whatever the task returned.
    let completion = if cancel.is_cancelled() {
        let reason = shared
            .revocation(&raw.uuid)
            .unwrap_or_else(|| REVOKED.to_owned());
        tracing::info!(task.id = %raw.uuid, task.name = %raw.name, %reason, "task revoked while it ran");
        settle_revoked(&shared, &raw, &delivery, &reason, started_at).await
    } else {
        settle(&shared, &raw, &ctx, &delivery, outcome, None, started_at).await
    };
    shared.hooks.after(&ctx, &completion.state);
    if let Some(reason) = send_completion(&shared, &delivery, completion, &mut started, times).await
    {
        // Revoked while it finished: the engine refused its outcome and kept the lease.
        tracing::info!(task.id = %raw.uuid, task.name = %raw.name, %reason, "task revoked as it finished; recording REVOKED");
        let completion = settle_revoked(&shared, &raw, &delivery, &reason, started_at).await;
        if send(&shared, completion, None).await.is_err() {
            tracing::error!(task.id = %raw.uuid, "worker is stopping; the completion is lost and the task will be delivered again");
        }
    }
}

/// The REVOKED state's error text of a task revoked by hand.
const REVOKED: &str = "revoked";
/// The REVOKED state's error text of a task whose `expires` passed before it started.
const EXPIRED: &str = "expired";

/// Why a fetched task must not run: revoked (this worker knows it, or its token fired
/// while it waited) or expired.
fn revoked_before_run(
    shared: &Shared,
    raw: &RawSignature,
    cancel: &CancellationToken,
) -> Option<String> {
    if let Some(reason) = shared.revocation(&raw.uuid) {
        return Some(reason);
    }
    if cancel.is_cancelled() {
        return Some(REVOKED.to_owned());
    }
    raw.expires
        .is_some_and(|at| now_ms() >= at)
        .then(|| EXPIRED.to_owned())
}

/// Runs the task; once `cancel` fires, the task has `grace` to return by itself, after
/// which its future is dropped (an async task stops at its next await point; a blocking
/// one runs on, detached).
async fn run_revocable(
    entry: &TaskEntry,
    args: Vec<u8>,
    ctx: TaskContext,
    cancel: &CancellationToken,
    grace: Duration,
) -> std::result::Result<Vec<u8>, TaskError> {
    let (uuid, name) = (ctx.uuid, entry.name);
    let running = run(entry, args, ctx);
    tokio::pin!(running);
    tokio::select! {
        biased;
        outcome = &mut running => outcome,
        () = async {
            cancel.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(task.id = %uuid, task.name = %name, ?grace, "revoked task did not stop within revoke_grace; aborting it");
            Err(TaskError::fatal(REVOKED))
        }
    }
}

/// A task settled as revoked (`started_at`: 0 when it never ran): REVOKED with error
/// `reason`, no retry, no error callbacks; every task downstream (later chain steps,
/// success callbacks) REVOKED too, naming it; a chord it (or a task downstream) is a
/// member of counts it as a failed member saying it was revoked.
async fn settle_revoked(
    shared: &Shared,
    raw: &RawSignature,
    delivery: &Delivery,
    reason: &str,
    started_at: u64,
) -> Completion {
    let queue = &delivery.queue;
    let mut state = shared.run_state(
        raw,
        State::Revoked,
        queue,
        delivery.delivery_count,
        started_at,
    );
    state.error = Some(reason.to_owned());
    let mut publish = Vec::new();
    if let Some(member) = raw.chord_member(queue) {
        revoked_member(shared, &member, &state, reason, &mut publish).await;
    }
    let upstream = format!("upstream task `{}` ({}) revoked", raw.name, raw.uuid);
    let downstream = raw.downstream().unwrap_or_else(|e| {
        tracing::error!(task.id = %raw.uuid, error = %e, "cannot read the rest of the workflow to revoke it");
        Vec::new()
    });
    let mut also_store = Vec::with_capacity(downstream.len());
    for next in &downstream {
        let mut st = shared.task_state(next, State::Revoked, queue);
        st.error = Some(upstream.clone());
        if let Some(member) = next.chord_member(queue) {
            revoked_member(shared, &member, &st, &upstream, &mut publish).await;
        }
        also_store.push(st);
    }
    Completion {
        delivery: delivery.clone(),
        // Counted above, with the text that tells the callback it was revoked.
        group: None,
        ends_chord: raw.chord_of,
        state,
        also_store,
        publish,
        dead_letter: None,
        release_unique: unique_release(raw, true),
    }
}

/// Counts a revoked chord member as a failure of its chord, with the text
/// ([`FailureReason::Revoked`]) from which the callback reports it; the callback, when
/// this fires it, goes into `publish`.
async fn revoked_member(
    shared: &Shared,
    member: &GroupMember,
    state: &TaskState,
    reason: &str,
    publish: &mut Vec<Outgoing>,
) {
    let mut counted = state.clone();
    counted.error = Some(
        FailureReason::Revoked {
            reason: reason.to_owned(),
        }
        .to_string(),
    );
    match shared
        .server
        .backend()
        .chord_member_done(member, &counted)
        .await
    {
        Ok(Some(callback)) => publish.push(callback),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(group = %member.group_uuid, task.id = %state.uuid, error = %e, "cannot count a revoked chord member")
        }
    }
}

fn context(raw: &RawSignature, delivery: &Delivery, cancel: CancellationToken) -> TaskContext {
    TaskContext {
        uuid: raw.uuid,
        name: raw.name.clone(),
        retried: raw.retried,
        retries_left: raw.retry_count,
        delivery_count: delivery.delivery_count,
        headers: raw.headers.clone(),
        group_uuid: raw.group_uuid,
        queue: delivery.queue.clone(),
        trace: TaskTrace::start(raw, &delivery.queue, delivery.delivery_count),
        cancel,
        progress: None,
    }
}

/// Everything a finished run decides: the state, what it sends, the later steps it
/// stops and the chord it counts toward; dead-lettered instead of acknowledged when
/// `dead_letter` is set (the outcome is then a failure). `started_at`: when the run
/// started (ms), 0 when the task never ran.
async fn settle(
    shared: &Shared,
    raw: &RawSignature,
    ctx: &TaskContext,
    delivery: &Delivery,
    outcome: std::result::Result<Vec<u8>, TaskError>,
    dead_letter: Option<DeadLetterReason>,
    started_at: u64,
) -> Completion {
    let (state, mut publish) = ctx
        .trace
        .in_scope(|| settle_outcome(shared, raw, ctx, delivery, started_at, outcome));
    let mut also_store = Vec::new();
    if state.state == State::Failure {
        stop_downstream(
            shared,
            raw,
            &state,
            &delivery.queue,
            &mut also_store,
            &mut publish,
        )
        .await;
    }
    let terminal = state.state.is_terminal();
    Completion {
        delivery: delivery.clone(),
        group: if terminal {
            raw.chord_member(&delivery.queue)
        } else {
            None
        },
        ends_chord: raw.chord_of.filter(|_| terminal),
        release_unique: unique_release(raw, terminal),
        state,
        also_store,
        publish,
        dead_letter,
    }
}

/// The unique lock a task in a final state releases: its key, unless it keeps the lock
/// until the TTL (or holds none: an empty key deduplicates by UUID only).
fn unique_release(raw: &RawSignature, terminal: bool) -> Option<String> {
    raw.unique
        .as_ref()
        .filter(|u| terminal && !u.until_ttl && !u.key.is_empty())
        .map(|u| u.key.clone())
}

/// Hands a completion to the completer, once the task's STARTED write (if any) is done,
/// and counts it; `times` when the task function ran. Returns the reason when the
/// engine refused it because the task was revoked meanwhile (the lease is kept: the
/// caller settles the task as revoked).
async fn send_completion(
    shared: &Shared,
    delivery: &Delivery,
    mut completion: Completion,
    started: &mut StartGate,
    times: Option<RunTimes>,
) -> Option<String> {
    let delivery = shared.settle(delivery)?;
    count(shared, &delivery.queue, &completion, times);
    completion.delivery = delivery;
    started.finished().await;
    let uuid = completion.state.uuid;
    // A REVOKED completion is never refused: nothing to wait for.
    let (reply, refused) = if completion.state.state == State::Revoked {
        (None, None)
    } else {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    };
    if send(shared, completion, reply).await.is_err() {
        tracing::error!(task.id = %uuid, "worker is stopping; the completion is lost and the task will run again");
        return None;
    }
    match refused?.await {
        Ok(Err(Error::Revoked { reason, .. })) => Some(reason),
        _ => None,
    }
}

/// Queues a completion for the completer.
async fn send(
    shared: &Shared,
    completion: Completion,
    reply: Option<oneshot::Sender<Result<()>>>,
) -> std::result::Result<(), ()> {
    shared
        .completions
        .send(Settled { completion, reply })
        .await
        .map_err(|_| ())
}

/// Counts a settled delivery for the registry record, the statistics and the metrics.
fn count(shared: &Shared, queue: &str, completion: &Completion, times: Option<RunTimes>) {
    let state = &completion.state;
    let failed = state.state == State::Failure;
    let outcome = match (&completion.dead_letter, state.state) {
        (Some(_), _) => Outcome::DeadLetter { failed },
        (None, State::Success) => Outcome::Success,
        (None, State::Retry) => Outcome::Retry,
        (None, State::Revoked) => Outcome::Revoked,
        (None, _) => Outcome::Failure,
    };
    let failure = failed.then_some((state.queue.as_str(), state.uuid));
    shared
        .observer
        .finished(queue, &state.name, outcome, failure, times);
}

/// For a chord callback: the arguments to run it with (the members' results, a
/// `Vec<T>` in member order, appended), or a failure when a member failed. `None`: run
/// with the arguments as sent.
async fn chord_arguments(
    shared: &Shared,
    raw: &RawSignature,
    queue: &str,
) -> std::result::Result<Option<Vec<u8>>, TaskError> {
    let Some(group) = raw.chord_of else {
        return Ok(None);
    };
    let outcome = shared
        .server
        .backend()
        .chord_outcome(raw.state_queue(queue), group)
        .await
        .map_err(|e| TaskError::msg(format!("cannot read the results of chord {group}: {e}")))?;
    if let Some((index, name, error)) = outcome.failure {
        return Err(TaskError::fatal(match FailureReason::parse(&error) {
            FailureReason::Revoked { reason } => {
                format!("chord member #{index} (`{name}`) revoked: {reason}")
            }
            _ => format!("chord member #{index} (`{name}`) failed: {error}"),
        }));
    }
    if raw.immutable {
        return Ok(None);
    }
    let mut list = Vec::with_capacity(outcome.results.iter().map(Vec::len).sum::<usize>() + 5);
    codec::write_array_len(&mut list, outcome.results.len())
        .map_err(|e| TaskError::fatal(e.to_string()))?;
    for r in &outcome.results {
        list.extend_from_slice(r);
    }
    codec::append_arg(&raw.args, &list)
        .map(Some)
        .map_err(|e| TaskError::fatal(e.to_string()))
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
    let reason = FailureReason::UpstreamFailed {
        name: raw.name.clone(),
        uuid: raw.uuid.to_string(),
        error: failed.error.clone().unwrap_or_default(),
    }
    .to_string();
    let downstream = match raw.downstream() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(task.id = %raw.uuid, error = %e, "cannot read the rest of the workflow to stop it");
            Vec::new()
        }
    };
    for next in &downstream {
        let mut st = shared.task_state(next, State::Failure, queue);
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
    args: Vec<u8>,
    ctx: TaskContext,
) -> std::result::Result<Vec<u8>, TaskError> {
    let trace = ctx.trace.clone();
    let invocation = Invocation { args, ctx };
    let fut = AssertUnwindSafe(trace.scope((entry.handler)(invocation))).catch_unwind();
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

/// Turns a run's outcome into the state to store and the messages to publish. A
/// success whose followers cannot be sent (a result too large to pass on), or a failure
/// whose retry cannot be sent, ends FAILURE saying why: nothing is dropped silently.
fn settle_outcome(
    shared: &Shared,
    raw: &RawSignature,
    ctx: &TaskContext,
    delivery: &Delivery,
    started_at: u64,
    outcome: std::result::Result<Vec<u8>, TaskError>,
) -> (TaskState, Vec<Outgoing>) {
    let mut state = shared.run_state(
        raw,
        State::Success,
        &delivery.queue,
        delivery.delivery_count,
        started_at,
    );
    let err = match outcome.and_then(|result| success_followers(shared, raw, result)) {
        Ok((result, publish)) => {
            state.result = Some(result);
            return (state, publish);
        }
        Err(err) => err,
    };
    ctx.trace.failed();
    let mut message = err.message().to_owned();
    shared.hooks.on_error(ctx, &message);
    if !err.is_fatal() && raw.retry_count > 0 {
        let delay = err.retry_delay().unwrap_or_else(|| {
            let base = if raw.retry_timeout == 0 {
                DEFAULT_RETRY_BASE
            } else {
                Duration::from_millis(raw.retry_timeout)
            };
            let cap = shared.server.config().retry_max_delay;
            fibonacci_delay(raw.retried, base, cap)
        });
        let mut next = raw.clone();
        next.retry_count -= 1;
        next.retried = next.retried.saturating_add(1);
        next.eta = Some(eta_after(delay));
        match shared.server.outgoing(&mut next) {
            Ok(retry) => {
                tracing::warn!(task.id = %raw.uuid, task.name = %raw.name, error = %message, retry_in = ?delay, retries_left = raw.retry_count - 1, "task failed; retrying");
                state.state = State::Retry;
                state.error = Some(message);
                return (state, vec![retry]);
            }
            Err(e) => {
                message = format!("{message} (and its retry could not be sent: {e})");
            }
        }
    }
    tracing::error!(task.id = %raw.uuid, task.name = %raw.name, error = %message, "task failed");
    let mut publish = Vec::new();
    match codec::to_vec(&message, "error text") {
        Ok(text) => {
            for cb in &raw.on_error {
                let mut cb = cb.clone();
                let sent = codec::prepend_arg(&cb.args, &text).and_then(|args| {
                    cb.args = args;
                    shared.server.outgoing(&mut cb)
                });
                match sent {
                    Ok(o) => publish.push(o),
                    Err(e) => {
                        tracing::error!(task.id = %raw.uuid, callback = %cb.name, error = %e, "cannot send an error callback");
                        message = format!(
                            "{message} (and its error callback `{}` could not be sent: {e})",
                            cb.name
                        );
                    }
                }
            }
        }
        Err(e) => tracing::error!(task.id = %raw.uuid, error = %e, "cannot encode the error text"),
    }
    state.state = State::Failure;
    state.error = Some(message);
    (state, publish)
}

/// The messages a success sends (success callbacks, the next step of its chain), with
/// the result appended where they take it; an error when one cannot be sent.
fn success_followers(
    shared: &Shared,
    raw: &RawSignature,
    result: Vec<u8>,
) -> std::result::Result<(Vec<u8>, Vec<Outgoing>), TaskError> {
    let followers = raw.followers().map_err(|e| {
        TaskError::fatal(format!(
            "the rest of its workflow could not be read, so it cannot go on: {e}"
        ))
    })?;
    let mut publish = Vec::with_capacity(followers.len());
    for mut cb in followers {
        let sent = if cb.immutable {
            shared.server.outgoing(&mut cb)
        } else {
            codec::append_arg(&cb.args, &result).and_then(|args| {
                cb.args = args;
                shared.server.outgoing(&mut cb)
            })
        };
        match sent {
            Ok(o) => publish.push(o),
            Err(e) => {
                return Err(TaskError::fatal(format!(
                    "its result could not be passed on to `{}`: {e}",
                    cb.name
                )));
            }
        }
    }
    Ok((result, publish))
}

/// Dead-letters a message that does not decode (no state is written: nobody can know
/// its task).
async fn dead_letter(shared: &Shared, delivery: &Delivery, reason: &DeadLetterReason) {
    let Some(delivery) = shared.settle(delivery) else {
        return;
    };
    shared.observer.finished(
        &delivery.queue,
        "",
        Outcome::DeadLetter { failed: false },
        None,
        None,
    );
    if let Err(e) = shared.server.broker().dead_letter(&delivery, reason).await {
        tracing::error!(error = %e, "could not dead-letter a message; it will be delivered again");
    }
}

/// Fails a task that cannot run and moves its message to the dead-letter queue, in one
/// step: its later steps fail, its chord counts the failure, its error callbacks run.
async fn fail_and_dead_letter(
    shared: &Shared,
    delivery: &Delivery,
    raw: &RawSignature,
    reason: DeadLetterReason,
    mut started: StartGate,
) {
    let ctx = context(raw, delivery, CancellationToken::new());
    let completion = settle(
        shared,
        raw,
        &ctx,
        delivery,
        Err(TaskError::fatal(reason.to_string())),
        Some(reason),
        0,
    )
    .await;
    send_completion(shared, delivery, completion, &mut started, None).await;
}

async fn unregistered(
    shared: &Shared,
    delivery: &Delivery,
    raw: &RawSignature,
    started: StartGate,
) {
    if raw.ignore_when_not_registered {
        // Dropped, not dead-lettered; but whoever waits on it, or on what follows it,
        // learns that it will not run.
        tracing::warn!(task.id = %raw.uuid, task.name = %raw.name, "no such task on this worker; dropping it (ignore_when_not_registered)");
        let reason = FailureReason::Dropped {
            name: raw.name.clone(),
        }
        .to_string();
        let ctx = context(raw, delivery, CancellationToken::new());
        let mut started = started;
        let completion = settle(
            shared,
            raw,
            &ctx,
            delivery,
            Err(TaskError::fatal(reason)),
            None,
            0,
        )
        .await;
        send_completion(shared, delivery, completion, &mut started, None).await;
        return;
    }
    let limit = shared.server.config().unregistered_requeues;
    if delivery.delivery_count <= limit {
        tracing::warn!(task.id = %raw.uuid, task.name = %raw.name, delivery = delivery.delivery_count, limit, "no such task on this worker; requeueing for another worker");
        let Some(d) = shared.settle(delivery) else {
            return;
        };
        let delay = Duration::from_millis(200).saturating_mul(delivery.delivery_count);
        if let Err(e) = shared.server.broker().release(&d, Some(delay)).await {
            tracing::warn!(error = %e, "could not requeue the message");
        }
    } else {
        let reason = DeadLetterReason::NotRegistered {
            name: raw.name.clone(),
            deliveries: delivery.delivery_count,
        };
        tracing::error!(task.id = %raw.uuid, task.name = %raw.name, "{reason}; moving it to the dead-letter queue");
        fail_and_dead_letter(shared, delivery, raw, reason, started).await;
    }
}
