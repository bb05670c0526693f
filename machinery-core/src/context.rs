//! What a running task knows about itself.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::trace::{TaskTrace, TraceContext};

/// Information about the running task, given to a task whose first parameter is
/// `TaskContext` (that parameter is not sent as an argument).
///
/// ```
/// use machinery_core::prelude::*;
///
/// #[task]
/// async fn whoami(ctx: TaskContext, greeting: String) -> Result<String, TaskError> {
///     Ok(format!("{greeting} from {} (attempt {})", ctx.name(), ctx.retried() + 1))
/// }
/// # fn main() {}
/// ```
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub(crate) uuid: Uuid,
    pub(crate) name: String,
    pub(crate) retried: u32,
    pub(crate) retries_left: u32,
    pub(crate) delivery_count: u32,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) group_uuid: Option<Uuid>,
    pub(crate) queue: String,
    pub(crate) trace: TaskTrace,
    /// Fired when the task is revoked while it runs.
    pub(crate) cancel: CancellationToken,
    /// Where [`set_progress`](TaskContext::set_progress) sends values; `None` outside a
    /// worker.
    pub(crate) progress: Option<std::sync::Arc<crate::worker::ProgressSink>>,
}

impl TaskContext {
    /// The task's UUID (the same across its retries).
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The registered name of the task.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many times this task was retried before this run (0 on the first run).
    pub fn retried(&self) -> u32 {
        self.retried
    }

    /// How many retries remain after this run.
    pub fn retries_left(&self) -> u32 {
        self.retries_left
    }

    /// How many times the broker delivered this message (1 unless a worker died or lost
    /// the message's lease while holding it).
    pub fn delivery_count(&self) -> u32 {
        self.delivery_count
    }

    /// The headers set on the signature.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// One header.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.get(key).map(String::as_str)
    }

    /// The UUID of the group (or chord) this task belongs to.
    pub fn group_uuid(&self) -> Option<Uuid> {
        self.group_uuid
    }

    /// The queue the task was consumed from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// This run's place in its trace: the parent every message it sends names in its
    /// [`traceparent`](crate::trace) header (with feature `otel` and an OpenTelemetry
    /// layer, the exported span of the run).
    pub fn trace(&self) -> TraceContext {
        self.trace.context()
    }

    /// Completes once the task is revoked ([`Server::revoke`](crate::Server::revoke),
    /// [`AsyncResult::cancel`](crate::AsyncResult::cancel)) while it runs; never, when it
    /// is not. An async task selects on it to stop early:
    ///
    /// ```
    /// use machinery_core::prelude::*;
    /// use std::time::Duration;
    ///
    /// #[task]
    /// async fn crawl(ctx: TaskContext, pages: u32) -> Result<u32, TaskError> {
    ///     let mut done = 0;
    ///     for _ in 0..pages {
    ///         tokio::select! {
    ///             () = ctx.cancelled() => break,
    ///             () = tokio::time::sleep(Duration::from_millis(10)) => done += 1,
    ///         }
    ///     }
    ///     Ok(done)
    /// }
    /// # fn main() {}
    /// ```
    ///
    /// Once the task is revoked its outcome is REVOKED whatever it returns; a task that
    /// has not returned `revoke_grace` after the revocation is dropped (aborted) by its
    /// worker.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Whether the task was revoked while it runs: what a blocking `fn` task checks
    /// between steps, since its thread cannot be stopped from outside (after
    /// `revoke_grace` its worker records REVOKED and stops waiting for it, but the
    /// thread runs on until the function returns).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Reports the task's progress: any serde value (a percentage, a struct of counts),
    /// encoded with MessagePack (as a map keyed by field name) and readable by anyone
    /// holding the task's handle: [`AsyncResult::progress`](crate::AsyncResult::progress),
    /// [`AsyncResult::progress_stream`](crate::AsyncResult::progress_stream), and
    /// `machinery task show`.
    ///
    /// Cheap and never blocking, so it can be called from a tight loop, in `async` and
    /// blocking `fn` tasks alike: the value is handed to the worker, which writes the
    /// first one at once, then at most one per `progress_interval` (default 250 ms; the
    /// newest, values in between are dropped), and always the last one before the
    /// task's final state. Calls after the task settled, and on a
    /// [`detached`](TaskContext::detached) context, do nothing.
    ///
    /// Never fails the task: a value that cannot be encoded, or a write the result
    /// backend refuses, is logged and dropped. The value is kept for the results TTL
    /// after its write.
    ///
    /// ```
    /// use machinery_core::prelude::*;
    ///
    /// #[task]
    /// async fn import(ctx: TaskContext, rows: u32) -> Result<u32, TaskError> {
    ///     for done in 1..=rows {
    ///         // ... import one row ...
    ///         ctx.set_progress(done * 100 / rows);
    ///     }
    ///     Ok(rows)
    /// }
    /// # fn main() {}
    /// ```
    pub fn set_progress(&self, value: impl Serialize) {
        let Some(sink) = &self.progress else {
            return;
        };
        match crate::codec::to_vec_named(&value, "task progress") {
            Ok(bytes) => sink.set(bytes),
            Err(e) => {
                tracing::warn!(task.id = %self.uuid, task.name = %self.name, error = %e, "progress value cannot be encoded; dropped");
            }
        }
    }

    /// A context for calling a task function directly, outside a worker (tests).
    pub fn detached(name: impl Into<String>) -> Self {
        let uuid = Uuid::now_v7();
        TaskContext {
            trace: TaskTrace::detached(uuid),
            uuid,
            name: name.into(),
            retried: 0,
            retries_left: 0,
            delivery_count: 1,
            headers: BTreeMap::new(),
            group_uuid: None,
            queue: String::new(),
            cancel: CancellationToken::new(),
            progress: None,
        }
    }
}
