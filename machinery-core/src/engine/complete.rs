//! Settling completions from an engine's primitives, for engines without an atomic
//! completion of their own.

use super::backend::ResultBackend;
use super::broker::{Broker, Completion};
use crate::error::{Error, Result};
use crate::result::State;

/// [`Broker::complete`] from the broker's and backend's primitives, one completion after
/// the other: lease check (a heartbeat), state writes, chord step (the member, then
/// [`ResultBackend::chord_finished`] for [`Completion::ends_chord`] when the state is
/// final), publishes, then ack, or [`Broker::dead_letter`] for
/// [`Completion::dead_letter`] (so there is a moment when the FAILURE is stored and the
/// dead letter not yet listed; a crash there leaves the message to be delivered again). A lost
/// lease is that completion's own result; any other error fails the batch, which the
/// caller retries (completions already settled then report a lost lease: their ack
/// ended the lease).
///
/// A completion of a task whose stored state is REVOKED (and whose own state is not) is
/// refused with [`Error::Revoked`], its own result: the state is stored first (the
/// backend drops it, as it drops anything that would replace a REVOKED state), then
/// loaded back; when it reads REVOKED nothing more is written, published or
/// acknowledged. This costs one [`ResultBackend::load`] per completion. A revoke that
/// comes between the two finds the final state stored and changes nothing, so the task
/// ends in exactly one final state.
///
/// # Errors
/// Engine errors.
pub async fn complete_step_by_step<B: Broker + ?Sized>(
    broker: &B,
    completions: &[Completion],
    backend: &dyn ResultBackend,
) -> Result<Vec<Result<()>>> {
    settle_each(completions, |c| complete_one(broker, c, backend)).await
}

/// Settles completions one after the other with `settle`: a lost lease, or a refusal
/// because the task was revoked, is that completion's own result; any other error fails
/// the batch (the caller retries it).
pub(crate) async fn settle_each<'a, F, Fut>(
    completions: &'a [Completion],
    mut settle: F,
) -> Result<Vec<Result<()>>>
where
    F: FnMut(&'a Completion) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut out = Vec::with_capacity(completions.len());
    for c in completions {
        match settle(c).await {
            Err(e @ (Error::LeaseLost { .. } | Error::Revoked { .. })) => out.push(Err(e)),
            Err(e) => return Err(e),
            Ok(()) => out.push(Ok(())),
        }
    }
    Ok(out)
}

pub(crate) async fn complete_one<B: Broker + ?Sized>(
    broker: &B,
    c: &Completion,
    backend: &dyn ResultBackend,
) -> Result<()> {
    let held = broker.extend(std::slice::from_ref(&c.delivery)).await?;
    if !held.first().copied().unwrap_or(false) {
        return Err(Error::LeaseLost {
            receipt: c.delivery.receipt.clone(),
        });
    }
    record(broker, c, backend).await?;
    match &c.dead_letter {
        Some(reason) => broker.dead_letter(&c.delivery, reason).await,
        None => broker.ack(&c.delivery).await,
    }
}

/// [`Error::Revoked`] when the stored state of the completion's task is REVOKED and the
/// completion's own state is not: the completion must not be recorded.
pub(crate) async fn refuse_revoked(c: &Completion, backend: &dyn ResultBackend) -> Result<()> {
    if c.state.state == State::Revoked {
        return Ok(());
    }
    match backend.load(&c.state.queue, c.state.uuid).await? {
        Some(stored) if stored.state == State::Revoked => Err(Error::Revoked {
            uuid: c.state.uuid,
            name: c.state.name.clone(),
            reason: stored.error.unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

/// What a completion writes besides settling its delivery, in order: the release of its
/// unique lock, its states (a completion of a task revoked meanwhile is refused here),
/// its chord step, the end of the chord it is the callback of, its follow-up
/// messages.
pub(crate) async fn record<B: Broker + ?Sized>(
    broker: &B,
    c: &Completion,
    backend: &dyn ResultBackend,
) -> Result<()> {
    // The lock goes first: whoever sees the final state finds the lock released. (A
    // completion refused below ends REVOKED instead, which releases it as well.)
    if let Some(key) = &c.release_unique {
        broker
            .release_unique(&c.delivery.queue, key, c.state.uuid)
            .await?;
    }
    if c.state.state == State::Revoked {
        let mut states = Vec::with_capacity(1 + c.also_store.len());
        states.push(c.state.clone());
        states.extend(c.also_store.iter().cloned());
        backend.store(&states).await?;
    } else {
        backend.store(std::slice::from_ref(&c.state)).await?;
        refuse_revoked(c, backend).await?;
        if !c.also_store.is_empty() {
            backend.store(&c.also_store).await?;
        }
    }
    let mut publish = c.publish.clone();
    if let Some(member) = &c.group
        && let Some(callback) = backend.chord_member_done(member, &c.state).await?
    {
        publish.push(callback);
    }
    if let Some(group) = c.ends_chord
        && c.state.state.is_terminal()
    {
        backend.chord_finished(&c.state.queue, group).await?;
    }
    if !publish.is_empty() {
        broker.publish(publish).await?;
    }
    Ok(())
}
