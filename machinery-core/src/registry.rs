//! Tasks registered by `#[task]` through `inventory`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::context::TaskContext;
use crate::task_error::TaskError;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The call a worker makes into a task: encoded arguments and the context.
#[doc(hidden)]
pub struct Invocation {
    /// The positional MessagePack array of arguments.
    pub args: Vec<u8>,
    /// The task's context.
    pub ctx: TaskContext,
}

/// What a task handler returns: the encoded result, or the task's error.
#[doc(hidden)]
pub type Outcome = Result<Vec<u8>, TaskError>;

/// The type-erased entry point of a task.
#[doc(hidden)]
pub type Handler = fn(Invocation) -> BoxFuture<Outcome>;

/// Defaults given in `#[task(...)]`.
#[derive(Debug, Clone, Copy, Default)]
#[doc(hidden)]
pub struct TaskOptions {
    /// `queue = "..."`.
    pub queue: Option<&'static str>,
    /// `retries = N`.
    pub retries: Option<u32>,
    /// `retry_timeout = ...`, in milliseconds: the first retry delay.
    pub retry_timeout_ms: Option<u64>,
    /// `timeout = ...`, in milliseconds: the hard time limit of one run.
    pub timeout_ms: Option<u64>,
    /// `expires = ...`, in milliseconds after the send: a message not started by then
    /// is revoked with reason `expired` and never runs.
    pub expires_ms: Option<u64>,
    /// `unique = ...`, in milliseconds: sends are unique by task name and argument
    /// bytes, the lock kept at most this long.
    pub unique_ms: Option<u64>,
    /// `rate_limit = "100/s"`: starts of this task across every worker.
    pub rate_limit: Option<crate::RateLimit>,
    /// The function is synchronous and runs on the blocking pool.
    pub blocking: bool,
}

/// A task as registered by `#[task]`: its name, argument schema and handler.
///
/// Every `#[task]` function has one as `my_task::ENTRY`. [`Worker::auto`](crate::Worker::auto)
/// finds them all; [`Worker::task`](crate::Worker::task) takes them one by one.
#[derive(Clone, Copy)]
pub struct TaskEntry {
    #[doc(hidden)]
    pub name: &'static str,
    #[doc(hidden)]
    pub schema: &'static str,
    #[doc(hidden)]
    pub fingerprint: u64,
    #[doc(hidden)]
    pub location: &'static str,
    #[doc(hidden)]
    pub handler: Handler,
    #[doc(hidden)]
    pub options: TaskOptions,
}

inventory::collect!(TaskEntry);

impl TaskEntry {
    /// The name the task is registered under.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The argument schema as written, e.g. `add(i64, i64) -> i64`.
    pub fn schema(&self) -> &'static str {
        self.schema
    }

    /// Where the task is defined (`module::path::function`).
    pub fn location(&self) -> &'static str {
        self.location
    }

    /// The hard time limit of one run, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.options.timeout_ms.map(Duration::from_millis)
    }

    /// Every task registered in this binary through `#[task]`.
    pub fn all() -> impl Iterator<Item = &'static TaskEntry> {
        inventory::iter::<TaskEntry>.into_iter()
    }
}

impl fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskEntry")
            .field("name", &self.name)
            .field("schema", &self.schema)
            .field("location", &self.location)
            .field("options", &self.options)
            .finish()
    }
}

/// The tasks one worker runs, by name.
#[derive(Debug, Default, Clone)]
pub(crate) struct Registry {
    tasks: HashMap<&'static str, TaskEntry>,
}

impl Registry {
    /// Builds the registry, refusing two tasks under one name.
    pub(crate) fn build(entries: impl IntoIterator<Item = TaskEntry>) -> Result<Self, String> {
        let mut tasks: HashMap<&'static str, TaskEntry> = HashMap::new();
        let mut clashes = Vec::new();
        for entry in entries {
            if let Some(prev) = tasks.get(entry.name) {
                // Listing the same entry twice (auto() plus task()) is not a clash.
                if prev.location != entry.location || prev.schema != entry.schema {
                    clashes.push(format!(
                        "task name `{}` is registered twice: by `{}` and by `{}`; give one of them `#[task(name = \"...\")]`",
                        entry.name, prev.location, entry.location
                    ));
                }
                continue;
            }
            tasks.insert(entry.name, entry);
        }
        if clashes.is_empty() {
            Ok(Registry { tasks })
        } else {
            clashes.sort();
            Err(clashes.join("; "))
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&TaskEntry> {
        self.tasks.get(name)
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.tasks.keys().copied().collect();
        names.sort_unstable();
        names
    }
}
