use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::backend::ResultBackend;
use crate::error::{Error, Result};
use crate::result::TaskState;

/// The in-memory result backend. See the [module docs](crate::memory).
pub struct MemoryBackend {
    inner: Mutex<Inner>,
    ttl: Option<Duration>,
}

#[derive(Default)]
struct Inner {
    states: HashMap<Uuid, Stored>,
    waiters: HashMap<Uuid, Arc<Notify>>,
    writes: u64,
}

struct Stored {
    state: TaskState,
    expires: Option<Instant>,
}

impl MemoryBackend {
    /// A backend keeping each state for `ttl` after its last write (forever when `None`).
    pub fn new(ttl: Option<Duration>) -> Self {
        MemoryBackend {
            inner: Mutex::new(Inner::default()),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
        let now = Instant::now();
        let expires = self.ttl.map(|t| now + t);
        let mut inner = self.lock();
        for state in states {
            let terminal = state.state.is_terminal();
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
        }
        Ok(())
    }

    async fn load(&self, uuid: Uuid) -> Result<Option<TaskState>> {
        Ok(self.lock().live(&uuid, Instant::now()).cloned())
    }

    async fn wait(&self, uuid: Uuid, timeout: Option<Duration>) -> Result<TaskState> {
        let deadline = timeout.map(|t| Instant::now() + t);
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
            // Written between the check and `enable`? Then it is visible now.
            if let Some(s) = self.lock().live(&uuid, Instant::now())
                && s.state.is_terminal()
            {
                return Ok(s.clone());
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, woken).await.is_err() {
                        return Err(Error::Timeout(timeout.unwrap_or_default()));
                    }
                }
                None => woken.await,
            }
        }
    }

    async fn forget(&self, uuid: Uuid) -> Result<()> {
        self.lock().states.remove(&uuid);
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
