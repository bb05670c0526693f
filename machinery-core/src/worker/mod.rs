//! The worker: consumes queues and runs tasks.

mod hooks;
mod limit;
pub(crate) mod observe;
mod process;
mod progress;
mod report;
mod run;
#[cfg(feature = "metrics")]
mod serve;
mod started;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::context::TaskContext;
use crate::error::{Error, Result};
use crate::registry::{Registry, TaskEntry};
use crate::result::TaskState;
use crate::server::Server;

pub(crate) use hooks::Hooks;
pub(crate) use progress::ProgressSink;

/// Consumes queues and runs the tasks it knows.
///
/// Build it with [`Worker::auto`] (every `#[task]` linked into the binary) or
/// [`Worker::new`] plus [`Worker::task`], set options, then [`run`](Worker::run) it until
/// SIGINT/SIGTERM or [`spawn`](Worker::spawn) it and keep the handle.
///
/// ```
/// use machinery_core::prelude::*;
///
/// #[task]
/// async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
///     Ok(a + b)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), machinery_core::Error> {
/// let server = Server::memory();
/// let worker = Worker::new()
///     .task(add::ENTRY)
///     .server(&server)
///     .concurrency(4)
///     .spawn()?;
/// let sum = add::s(2, 3).send_with(&server).await?.get().await?;
/// assert_eq!(sum, 5);
/// worker.shutdown().await?;
/// # Ok(())
/// # }
/// ```
///
/// Tasks defined in another crate register only if that crate is linked: reference it
/// (`use my_tasks as _;`) or list its tasks with [`Worker::task`]. `auto()` logs the
/// names it found and refuses to start with none.
#[derive(Clone)]
pub struct Worker {
    pub(crate) server: Option<Server>,
    pub(crate) auto: bool,
    pub(crate) entries: Vec<TaskEntry>,
    pub(crate) name: String,
    pub(crate) concurrency: usize,
    pub(crate) queues: Vec<String>,
    pub(crate) prefetch: usize,
    pub(crate) grace: Duration,
    pub(crate) hooks: Hooks,
    // Periodic tasks (opt-in): see `Worker::scheduler`.
    pub(crate) scheduler: Option<crate::periodic::Scheduler>,
    // The metrics endpoint (opt-in): see `Worker::metrics_listen`.
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<serve::MetricsAddr>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("auto", &self.auto)
            .field(
                "tasks",
                &self.entries.iter().map(|e| e.name).collect::<Vec<_>>(),
            )
            .field("concurrency", &self.concurrency)
            .field("queues", &self.queues)
            .field("prefetch", &self.prefetch)
            .field("grace", &self.grace)
            .field("metrics", &self.metrics_shown())
            .finish_non_exhaustive()
    }
}

impl Default for Worker {
    fn default() -> Self {
        Worker::new()
    }
}

impl Worker {
    /// A worker for the tasks listed with [`Worker::task`].
    pub fn new() -> Self {
        let host = host_name();
        Worker {
            server: None,
            auto: false,
            entries: Vec::new(),
            name: format!("worker@{host}:{}", std::process::id()),
            concurrency: 0,
            queues: Vec::new(),
            prefetch: 64,
            grace: Duration::from_secs(30),
            hooks: Hooks::default(),
            scheduler: None,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// The metrics address as given, for `Debug`.
    fn metrics_shown(&self) -> Option<&str> {
        #[cfg(feature = "metrics")]
        return self.metrics.as_ref().map(|m| m.shown.as_str());
        #[cfg(not(feature = "metrics"))]
        return None;
    }

    /// A worker for every task registered with `#[task]` in this binary.
    pub fn auto() -> Self {
        Worker {
            auto: true,
            ..Worker::new()
        }
    }

    /// Adds a task (`my_task::ENTRY`).
    pub fn task(mut self, entry: TaskEntry) -> Self {
        self.entries.push(entry);
        self
    }

    /// The server to consume from; the process-wide default when not set.
    pub fn server(mut self, server: &Server) -> Self {
        self.server = Some(server.clone());
        self
    }

    /// The worker's name, for logs and its registry record (default
    /// `worker@HOST:PID`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many tasks run at once; 0 (the default) sets no fixed limit: every task
    /// fetched runs at once, and the worker holds at most 64 fetches' worth
    /// ([`prefetch`](Worker::prefetch) × 64) so that a deep queue is not taken whole
    /// into memory.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Consumes `queue` (call again for more). Without any, the worker consumes the
    /// default queue plus every queue its tasks name in `#[task(queue = ...)]`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
        self
    }

    /// How many messages one fetch may take (default 64). The worker never holds more
    /// messages than it has free slots to run them, so a crash strands nothing that
    /// was not running.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// How long shutdown waits for running tasks before handing their messages back
    /// (default 30 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Runs `hook` before each task.
    pub fn before_task(mut self, hook: impl Fn(&TaskContext) + Send + Sync + 'static) -> Self {
        self.hooks.before.push(Arc::new(hook));
        self
    }

    /// Runs `hook` after each task with the state it ended in (SUCCESS, RETRY, FAILURE).
    pub fn after_task(
        mut self,
        hook: impl Fn(&TaskContext, &TaskState) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.after.push(Arc::new(hook));
        self
    }

    /// Runs `hook` when a task fails or is retried, with the error text.
    pub fn on_error(mut self, hook: impl Fn(&TaskContext, &str) + Send + Sync + 'static) -> Self {
        self.hooks.on_error.push(Arc::new(hook));
        self
    }

    /// Also runs `scheduler`, publishing its periodic entries while the worker runs
    /// (started with the worker, stopped first at shutdown). Any number of workers may
    /// run the same entries: each tick is still published once.
    pub fn scheduler(mut self, scheduler: crate::periodic::Scheduler) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// Serves Prometheus metrics at `http://ADDR/metrics` while the worker runs (feature
    /// `metrics`): this worker's task counters and run and wait histograms, and the
    /// broker's queue depths and live workers (the list is in [`crate::metrics`]). The
    /// address is bound when the worker starts; port 0 picks a free port, which
    /// [`WorkerHandle::metrics_addr`] tells.
    ///
    /// Starting fails with [`Error::Listen`] when the address does not resolve or cannot
    /// be bound (in use, not this host's).
    ///
    /// ```
    /// # use machinery_core::prelude::*;
    /// # #[task]
    /// # async fn add(a: i64, b: i64) -> Result<i64, TaskError> { Ok(a + b) }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), machinery_core::Error> {
    /// let server = Server::memory();
    /// let worker = Worker::new()
    ///     .task(add::ENTRY)
    ///     .server(&server)
    ///     .metrics_listen("127.0.0.1:0")
    ///     .spawn()?;
    /// let addr = worker.metrics_addr().expect("listening");
    /// assert!(addr.port() > 0);
    /// worker.shutdown().await
    /// # }
    /// ```
    #[cfg(feature = "metrics")]
    pub fn metrics_listen(mut self, addr: impl std::net::ToSocketAddrs + fmt::Debug) -> Self {
        let shown = crate::metrics::shown_addr(&addr);
        let resolved = addr
            .to_socket_addrs()
            .map(Iterator::collect::<Vec<_>>)
            .map_err(|e| e.to_string())
            .and_then(|addrs| {
                if addrs.is_empty() {
                    Err("the address resolves to nothing".to_owned())
                } else {
                    Ok(addrs)
                }
            });
        self.metrics = Some(serve::MetricsAddr { shown, resolved });
        self
    }

    pub(crate) fn registry(&self) -> Result<Registry> {
        let auto = if self.auto {
            TaskEntry::all().copied().collect()
        } else {
            Vec::new()
        };
        let registry = Registry::build(auto.into_iter().chain(self.entries.iter().copied()))
            .map_err(Error::Worker)?;
        if registry.len() == 0 {
            return Err(Error::Worker(
                "no tasks registered: define tasks with #[task] in a crate this binary links \
                 (reference the crate, e.g. `use my_tasks as _;`) or add them with `Worker::task(my_task::ENTRY)`"
                    .into(),
            ));
        }
        Ok(registry)
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully: stops fetching, lets
    /// running tasks finish within the grace period, hands the rest back to the broker.
    /// A second signal skips the wait.
    ///
    /// An engine error that retrying cannot fix ([`Error::is_permanent`]: a refused
    /// password, a script error, …) met by the worker's loops stops it the same way,
    /// with one error log line; transient ones are retried with a capped exponential
    /// backoff.
    ///
    /// # Errors
    /// [`Error::Worker`] when it cannot start (no tasks, a name registered twice, no
    /// server); [`Error::Listen`] when its metrics address cannot be bound; the
    /// permanent error that stopped the worker.
    pub async fn run(self) -> Result<()> {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let signals = tokio::spawn(run::watch_signals(stop.clone(), abort.clone()));
        let result = run::Runner::start(self, stop, abort)?.wait().await;
        signals.abort();
        result
    }

    /// Starts the worker on the current tokio runtime and returns a handle to stop it.
    /// Signals are not watched.
    ///
    /// # Errors
    /// [`Error::Worker`] when it cannot start; [`Error::Listen`] when its metrics
    /// address cannot be bound.
    pub fn spawn(self) -> Result<WorkerHandle> {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let runner = run::Runner::start(self, stop.clone(), abort.clone())?;
        #[cfg(feature = "metrics")]
        let metrics_addr = runner.metrics_addr();
        Ok(WorkerHandle {
            stop,
            abort,
            join: tokio::spawn(runner.wait()),
            #[cfg(feature = "metrics")]
            metrics_addr,
        })
    }
}

/// This host's name, for the default worker name and the registry record.
pub(crate) fn host_name() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// A worker started with [`Worker::spawn`].
#[derive(Debug)]
pub struct WorkerHandle {
    stop: CancellationToken,
    abort: CancellationToken,
    join: JoinHandle<Result<()>>,
    #[cfg(feature = "metrics")]
    metrics_addr: Option<std::net::SocketAddr>,
}

impl WorkerHandle {
    /// Where the worker serves its metrics ([`Worker::metrics_listen`]), with the port
    /// picked when port 0 was asked for; `None` when it serves none.
    #[cfg(feature = "metrics")]
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Graceful shutdown: stops fetching, waits for running tasks up to the grace
    /// period, hands unfinished messages back, and returns when all is settled.
    ///
    /// # Errors
    /// The permanent error that stopped the worker by itself, if one did (see
    /// [`Worker::run`]); else engine errors met while settling.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.cancel();
        self.join_result().await
    }

    /// Immediate shutdown: aborts running tasks and hands their messages back.
    ///
    /// # Errors
    /// As [`shutdown`](WorkerHandle::shutdown).
    pub async fn abort(self) -> Result<()> {
        self.stop.cancel();
        self.abort.cancel();
        self.join_result().await
    }

    /// Whether the worker has stopped by itself (after a permanent error) or been
    /// shut down.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Waits until the worker stops by itself, which it does only on a permanent engine
    /// error (see [`Worker::run`]); it shuts down gracefully first.
    ///
    /// # Errors
    /// The error that stopped it; engine errors met while settling.
    pub async fn wait(self) -> Result<()> {
        self.join_result().await
    }

    async fn join_result(self) -> Result<()> {
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(Error::Worker(format!("worker loop ended abnormally: {e}"))),
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
