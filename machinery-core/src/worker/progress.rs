//! Progress writes of running tasks, coalesced.
//!
//! [`TaskContext::set_progress`](crate::TaskContext::set_progress) hands each value to
//! its run's [`ProgressSink`] without waiting. The sink writes the first value at once,
//! then at most one value per `progress_interval` (always the newest: values reported in
//! between are dropped), and [`finish`](ProgressSink::finish) writes the last one before
//! the task's final state is settled. After that the sink is closed and later values (a
//! clone of the context kept by a spawned task, a blocking thread that outlived its
//! timeout) are dropped.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::runtime::Handle;
use uuid::Uuid;

use crate::engine::ResultBackend;

/// How long [`ProgressSink::finish`] waits for the last write: a backend that does not
/// answer must not hold the task's completion for long.
const FINISH_LIMIT: Duration = Duration::from_secs(5);

/// The progress writer of one run of one task.
pub(crate) struct ProgressSink {
    backend: Arc<dyn ResultBackend>,
    /// The queue the task's state is kept under.
    queue: String,
    uuid: Uuid,
    interval: Duration,
    runtime: Handle,
    pending: Mutex<Pending>,
    /// Held for the whole of each write, and while a value is taken for one: writes go
    /// out one at a time, each with the newest value at the moment it starts, so an
    /// older value never lands after a newer one.
    writing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Pending {
    /// The newest value not written yet.
    value: Option<Vec<u8>>,
    /// A writer task is running (writing, or waiting out the interval).
    writer: bool,
    /// The run ended: nothing more is written.
    closed: bool,
    /// The engine cannot store progress: said once, then values are dropped.
    unsupported: bool,
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressSink")
            .field("queue", &self.queue)
            .field("uuid", &self.uuid)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl ProgressSink {
    /// A sink writing the progress of task `uuid`, whose state is kept under `queue`,
    /// to `backend`, at most once per `interval`. Must be called within a tokio
    /// runtime (the worker's), where its writes then run.
    pub(crate) fn new(
        backend: Arc<dyn ResultBackend>,
        queue: &str,
        uuid: Uuid,
        interval: Duration,
    ) -> Option<Arc<Self>> {
        let runtime = Handle::try_current().ok()?;
        Some(Arc::new(ProgressSink {
            backend,
            queue: queue.to_owned(),
            uuid,
            interval,
            runtime,
            pending: Mutex::new(Pending::default()),
            writing: tokio::sync::Mutex::new(()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `value` as the task's newest progress; never blocks on the backend.
    pub(crate) fn set(self: &Arc<Self>, value: Vec<u8>) {
        let mut p = self.lock();
        if p.closed || p.unsupported {
            return;
        }
        p.value = Some(value);
        if p.writer {
            return;
        }
        p.writer = true;
        drop(p);
        let sink = self.clone();
        self.runtime.spawn(async move { sink.write_loop().await });
    }

    /// Writes the newest value, waits out the interval, and goes on while values keep
    /// coming; ends when none came during an interval, or the run ended.
    async fn write_loop(self: Arc<Self>) {
        loop {
            {
                let _writing = self.writing.lock().await;
                let value = {
                    let mut p = self.lock();
                    match p.value.take() {
                        Some(v) if !p.closed => v,
                        _ => {
                            p.writer = false;
                            return;
                        }
                    }
                };
                self.write(value).await;
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    /// One write; errors are logged (a lost progress value is not worth failing or
    /// slowing the task).
    async fn write(&self, value: Vec<u8>) {
        match self
            .backend
            .set_progress(&self.queue, self.uuid, &value)
            .await
        {
            Ok(()) => {}
            Err(crate::Error::Unsupported { engine, .. }) => {
                let first = !std::mem::replace(&mut self.lock().unsupported, true);
                if first {
                    tracing::debug!(task.id = %self.uuid, engine, "the result backend cannot store task progress; progress values are dropped");
                }
            }
            Err(e) => {
                tracing::warn!(task.id = %self.uuid, queue = %self.queue, error = %e, "could not record the task's progress");
            }
        }
    }

    /// The run ended: writes the value not written yet (if any), after any write under
    /// way, and closes the sink. Returns once that write is done (or gave up after a
    /// few seconds), so the value lands before the task's final state.
    pub(crate) async fn finish(&self) {
        let finished = async {
            let _writing = self.writing.lock().await;
            let value = {
                let mut p = self.lock();
                p.closed = true;
                p.value.take()
            };
            if let Some(value) = value {
                self.write(value).await;
            }
        };
        if tokio::time::timeout(FINISH_LIMIT, finished).await.is_err() {
            self.lock().closed = true;
            tracing::warn!(task.id = %self.uuid, "the task's last progress value was not written within {FINISH_LIMIT:?}");
        }
    }
}
