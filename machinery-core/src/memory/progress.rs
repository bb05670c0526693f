//! The memory backend's task progress: the last value of each task, with the results
//! TTL, and a watch channel per task for its watchers.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures_util::stream::BoxStream;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

/// Writes between two sweeps of expired values.
const SWEEP_EVERY: u64 = 1024;

/// Progress values by task.
#[derive(Default)]
pub(super) struct ProgressStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<Uuid, Slot>,
    writes: u64,
}

struct Slot {
    /// The last value and when it expires (`None`: never); `None` before the first
    /// write (a watcher came first) or once it expired.
    value: Option<(Vec<u8>, Option<Instant>)>,
    /// Every write is sent here; watchers hold receivers.
    tx: watch::Sender<Vec<u8>>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            value: None,
            tx: watch::channel(Vec::new()).0,
        }
    }

    fn live(&self, now: Instant) -> Option<&Vec<u8>> {
        self.value
            .as_ref()
            .filter(|(_, expires)| expires.is_none_or(|e| e > now))
            .map(|(v, _)| v)
    }
}

impl ProgressStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `value` for `uuid`, kept for `ttl` (forever when `None`), and sends it
    /// to the task's watchers.
    pub(super) fn set(&self, uuid: Uuid, value: &[u8], ttl: Option<Duration>) {
        let now = Instant::now();
        let mut inner = self.lock();
        let slot = inner.tasks.entry(uuid).or_insert_with(Slot::new);
        slot.value = Some((value.to_vec(), ttl.map(|t| now + t)));
        slot.tx.send_replace(value.to_vec());
        inner.writes += 1;
        if inner.writes >= SWEEP_EVERY {
            inner.writes = 0;
            // Dropping a slot ends its watchers' streams; a slot with watchers and no
            // value is kept for them.
            inner
                .tasks
                .retain(|_, s| s.live(now).is_some() || s.tx.receiver_count() > 0);
        }
    }

    /// The live value of `uuid`.
    pub(super) fn get(&self, uuid: Uuid) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.lock()
            .tasks
            .get(&uuid)
            .and_then(|s| s.live(now))
            .cloned()
    }

    /// The values written for `uuid` from now on.
    pub(super) fn watch(&self, uuid: Uuid) -> BoxStream<'static, Vec<u8>> {
        let rx = self
            .lock()
            .tasks
            .entry(uuid)
            .or_insert_with(Slot::new)
            .tx
            .subscribe();
        watch_stream(rx)
    }

    /// Drops the value of `uuid` (its state was deleted); its watchers' streams end.
    pub(super) fn forget(&self, uuid: Uuid) {
        self.lock().tasks.remove(&uuid);
    }
}

/// The values sent on `rx` after it was made, the newest when several came between two
/// reads; ends when the sender is dropped.
pub(crate) fn watch_stream<T: Clone + Send + Sync + 'static>(
    rx: watch::Receiver<T>,
) -> BoxStream<'static, T> {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let value = rx.borrow_and_update().clone();
        Some((value, rx))
    }))
}
