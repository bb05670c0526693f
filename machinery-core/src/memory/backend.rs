use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use futures_util::stream::BoxStream;
use tokio::sync::broadcast;

use crate::engine::{
    ChordOutcome, GroupMember, Outgoing, ResultBackend, Revocation, RevokeOutcome, StoreId,
};
use crate::error::{Error, ErrorKind, Result};
use crate::result::State;
use crate::result::TaskState;

/// The store of every memory backend: the process.
pub(crate) static STORE: LazyLock<StoreId> = LazyLock::new(|| StoreId::new("memory", "process"));

/// The in-memory result backend. See the [module docs](crate::memory).
pub struct MemoryBackend {
    inner: Mutex<Inner>,
    ttl: Option<Duration>,
    /// Revocations as they are recorded, for the workers watching them.
    revoked: broadcast::Sender<Revocation>,
    progress: super::progress::ProgressStore,
}

struct Chord {
    count: u32,
    callback: Outgoing,
    results: HashMap<u32, Vec<u8>>,
    failure: Option<(u32, String, String)>,
    fired: bool,
    /// None until the callback's state is final (`chord_finished`).
    expires: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    states: HashMap<Uuid, Stored>,
    chords: HashMap<Uuid, Chord>,
    waiters: HashMap<Uuid, Arc<Notify>>,
    /// Recorded revocations: the reason, and until when (ms since the Unix epoch) the
    /// revocation is kept.
    revocations: HashMap<Uuid, (String, Option<u64>)>,
    /// Workflow records, and when each expires (`None`: never).
    workflows: HashMap<Uuid, (Arc<[u8]>, Option<Instant>)>,
    writes: u64,
}

struct Stored {
    state: TaskState,
    /// None for a non-final state, and with no results TTL.
    expires: Option<Instant>,
}

impl MemoryBackend {
    /// A backend keeping each final state, and each finished chord, for `ttl` (forever
    /// when `None`); non-final states and running chords do not expire.
    pub fn new(ttl: Option<Duration>) -> Self {
        MemoryBackend {
            inner: Mutex::new(Inner::default()),
            ttl,
            revoked: broadcast::channel(1024).0,
            progress: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `states`; with `guarded`, a non-final state does not replace a final one,
    /// and nothing but another REVOKED replaces a REVOKED one.
    fn write(&self, states: &[TaskState], guarded: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        for state in states {
            let terminal = state.state.is_terminal();
            if guarded
                && inner.live(&state.uuid, now).is_some_and(|s| {
                    (!terminal && s.state.is_terminal())
                        || (s.state == State::Revoked && state.state != State::Revoked)
                })
            {
                continue;
            }
            let expires = if terminal {
                self.ttl.map(|t| now + t)
            } else {
                None
            };
            inner.states.insert(
                state.uuid,
                Stored {
                    state: state.clone(),
                    expires,
                },
            );
            if terminal && let Some(n) = inner.waiters.remove(&state.uuid) {
                n.notify_waiters();
            }
        }
        inner.writes += states.len() as u64;
        // Sweep expired states now and then so an unread result does not live forever.
        if inner.writes >= 4096 {
            inner.writes = 0;
            inner
                .states
                .retain(|_, s| s.expires.is_none_or(|e| e > now));
            inner
                .chords
                .retain(|_, c| c.expires.is_none_or(|e| e > now));
            inner
                .workflows
                .retain(|_, (_, expires)| expires.is_none_or(|e| e > now));
        }
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// The chord `group`, unless unknown or expired.
    fn chord(&mut self, group: &Uuid, now: Instant) -> Option<&mut Chord> {
        let expired = self
            .chords
            .get(group)
            .is_some_and(|c| c.expires.is_some_and(|e| e <= now));
        if expired {
            self.chords.remove(group);
        }
        self.chords.get_mut(group)
    }

    fn live(&mut self, uuid: &Uuid, now: Instant) -> Option<&TaskState> {
        let expired = self
            .states
            .get(uuid)
            .is_some_and(|s| s.expires.is_some_and(|e| e <= now));
        if expired {
            self.states.remove(uuid);
        }
        self.states.get(uuid).map(|s| &s.state)
    }
}

#[async_trait]
impl ResultBackend for MemoryBackend {
    fn engine(&self) -> &'static str {
        "memory"
    }

    async fn store(&self, states: &[TaskState]) -> Result<()> {
        self.write(states, true);
        Ok(())
    }

    async fn store_new(&self, states: &[TaskState]) -> Result<()> {
        self.write(states, false);
        Ok(())
    }

    async fn store_workflow(&self, workflow: Uuid, record: &[u8]) -> Result<()> {
        let expires = self.ttl.map(|t| Instant::now() + t);
        let mut inner = self.lock();
        inner.workflows.insert(workflow, (record.into(), expires));
        inner.writes += 1;
        Ok(())
    }

    async fn load_workflow(&self, workflow: Uuid) -> Result<Option<Vec<u8>>> {
        let now = Instant::now();
        let inner = self.lock();
        Ok(inner
            .workflows
            .get(&workflow)
            .filter(|(_, expires)| expires.is_none_or(|e| e > now))
            .map(|(record, _)| record.to_vec()))
    }

    // One process, no slots: a state is found by its UUID alone.
    async fn load(&self, _queue: &str, uuid: Uuid) -> Result<Option<TaskState>> {
        Ok(self.lock().live(&uuid, Instant::now()).cloned())
    }

    async fn wait(&self, _queue: &str, uuid: Uuid, timeout: Option<Duration>) -> Result<TaskState> {
        // Past what `Instant` can hold (`Duration::MAX`): no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let notify = {
                let mut inner = self.lock();
                match inner.live(&uuid, Instant::now()) {
                    Some(s) if s.state.is_terminal() => return Ok(s.clone()),
                    Some(_) => {}
                    None => return Err(Error::ResultMissing(uuid)),
                }
                inner.waiters.entry(uuid).or_default().clone()
            };
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // Written or forgotten between the check and `enable`? Then it shows now.
            match self.lock().live(&uuid, Instant::now()) {
                Some(s) if s.state.is_terminal() => return Ok(s.clone()),
                Some(_) => {}
                None => return Err(Error::ResultMissing(uuid)),
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, woken).await.is_err() {
                        return Err(Error::timeout(timeout.unwrap_or_default()));
                    }
                }
                None => woken.await,
            }
        }
    }

    async fn init_chord(&self, group: Uuid, count: u32, callback: &Outgoing) -> Result<()> {
        self.lock().chords.insert(
            group,
            Chord {
                count,
                callback: callback.clone(),
                results: HashMap::new(),
                failure: None,
                fired: false,
                expires: None,
            },
        );
        Ok(())
    }

    async fn chord_member_done(
        &self,
        member: &GroupMember,
        state: &TaskState,
    ) -> Result<Option<Outgoing>> {
        let mut inner = self.lock();
        let Some(chord) = inner.chord(&member.group_uuid, Instant::now()) else {
            // Ended and expired (a member run again from the dead letters), or never
            // registered: nothing left to count toward.
            tracing::warn!(group = %member.group_uuid, task.id = %state.uuid, "chord member finished after its chord ended, or of an unknown chord; not counted");
            return Ok(None);
        };
        match state.state {
            State::Success => {
                chord
                    .results
                    .insert(member.index, state.result.clone().unwrap_or_default());
            }
            // A revoked member fails its chord: the callback cannot have all results.
            State::Failure | State::Revoked => {
                chord.failure.get_or_insert_with(|| {
                    (
                        member.index,
                        state.name.clone(),
                        state.error.clone().unwrap_or_default(),
                    )
                });
            }
            _ => return Ok(None),
        }
        let complete = chord.results.len() >= chord.count as usize;
        if !chord.fired && (complete || chord.failure.is_some()) {
            chord.fired = true;
            return Ok(Some(chord.callback.clone()));
        }
        Ok(None)
    }

    async fn chord_finished(&self, _queue: &str, group: Uuid) -> Result<()> {
        let now = Instant::now();
        let expires = self.ttl.map(|t| now + t);
        if let Some(chord) = self.lock().chord(&group, now) {
            chord.expires = expires;
        }
        Ok(())
    }

    async fn chord_outcome(&self, _queue: &str, group: Uuid) -> Result<ChordOutcome> {
        let mut inner = self.lock();
        let Some(chord) = inner.chord(&group, Instant::now()) else {
            return Err(Error::engine_msg(
                "memory",
                ErrorKind::NotFound,
                format!("chord {group} is unknown or expired"),
            ));
        };
        let mut results = Vec::with_capacity(chord.count as usize);
        for i in 0..chord.count {
            if let Some(r) = chord.results.get(&i) {
                results.push(r.clone());
            }
        }
        Ok(ChordOutcome {
            results,
            failure: chord.failure.clone(),
        })
    }

    async fn forget(&self, _queue: &str, uuid: Uuid) -> Result<()> {
        let mut inner = self.lock();
        inner.states.remove(&uuid);
        // Its waiters look again, find nothing and return `ResultMissing`.
        if let Some(n) = inner.waiters.remove(&uuid) {
            n.notify_waiters();
        }
        drop(inner);
        self.progress.forget(uuid);
        Ok(())
    }

    async fn revoke(
        &self,
        _queue: &str,
        uuid: Uuid,
        reason: &str,
        until: Option<u64>,
    ) -> Result<RevokeOutcome> {
        let now = Instant::now();
        let outcome = {
            let mut inner = self.lock();
            inner.revocations.insert(uuid, (reason.to_owned(), until));
            let now_ms = crate::signature::now_ms();
            inner
                .revocations
                .retain(|_, (_, until)| until.is_none_or(|u| u > now_ms));
            match inner.live(&uuid, now).map(|s| s.state) {
                None => RevokeOutcome::Unknown,
                Some(s) if s.is_terminal() => RevokeOutcome::Finished(s),
                Some(State::Received | State::Started) => RevokeOutcome::Cancelling,
                Some(_) => {
                    // PENDING or RETRY: no worker runs it; REVOKED now, under the same
                    // lock as the check.
                    let Some(stored) = inner.states.get_mut(&uuid) else {
                        return Err(Error::ResultMissing(uuid));
                    };
                    stored.state.state = State::Revoked;
                    stored.state.error = Some(reason.to_owned());
                    stored.state.result = None;
                    stored.expires = self.ttl.map(|t| now + t);
                    if let Some(n) = inner.waiters.remove(&uuid) {
                        n.notify_waiters();
                    }
                    RevokeOutcome::Revoked
                }
            }
        };
        // No watcher is no error: the revocation is recorded.
        let _ = self.revoked.send(Revocation {
            uuid,
            reason: reason.to_owned(),
            until,
        });
        Ok(outcome)
    }

    async fn revocations(&self) -> Result<Vec<Revocation>> {
        let now_ms = crate::signature::now_ms();
        let mut inner = self.lock();
        inner
            .revocations
            .retain(|_, (_, until)| until.is_none_or(|u| u > now_ms));
        Ok(inner
            .revocations
            .iter()
            .map(|(uuid, (reason, until))| Revocation {
                uuid: *uuid,
                reason: reason.clone(),
                until: *until,
            })
            .collect())
    }

    async fn watch_revocations(&self) -> Result<BoxStream<'static, Revocation>> {
        let rx = self.revoked.subscribe();
        // A watcher that lags ends its stream, and re-reads the recorded revocations
        // when it watches again: nothing is missed.
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.ok().map(|r| (r, rx))
        });
        Ok(Box::pin(stream))
    }

    async fn set_progress(&self, _queue: &str, uuid: Uuid, value: &[u8]) -> Result<()> {
        self.progress.set(uuid, value, self.ttl);
        Ok(())
    }

    async fn progress(&self, _queue: &str, uuid: Uuid) -> Result<Option<Vec<u8>>> {
        Ok(self.progress.get(uuid))
    }

    async fn watch_progress(
        &self,
        _queue: &str,
        uuid: Uuid,
    ) -> Result<futures_util::stream::BoxStream<'static, Vec<u8>>> {
        Ok(self.progress.watch(uuid))
    }

    // Every memory backend lives in this process: its writes cannot fail, which is what
    // the memory broker relies on when it shares the store.
    fn store_id(&self) -> Option<&StoreId> {
        Some(&STORE)
    }
}
