//! The error type of machinery-core.

use std::time::Duration;

use uuid::Uuid;

use crate::result::State;

/// Everything that can go wrong in machinery-core, apart from a task's own failure
/// (that one is a [`TaskError`](crate::TaskError), recorded in the task's state).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid. `key` names it as the user wrote it
    /// (`MACHINERY_RESULTS_EXPIRE_IN`, `results_expire_in`, …).
    #[error("invalid configuration value for `{key}`: {reason}")]
    Config {
        /// The key, as spelled where it was read.
        key: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// A configuration file could not be read or parsed.
    #[error("cannot read configuration file `{path}`: {reason}")]
    ConfigFile {
        /// The path of the file.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// A URL names an engine this build does not know.
    #[error("unsupported engine URL `{url}`: {reason}")]
    UnsupportedUrl {
        /// The URL, with any password redacted.
        url: String,
        /// What is supported.
        reason: String,
    },
    /// Arguments or a result could not be encoded.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        reason: String,
    },
    /// Bytes could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The engine (broker or result backend) failed; the call may be retried.
    #[error("{engine} error: {message}")]
    Engine {
        /// Which engine (`memory`, `redis`, …).
        engine: &'static str,
        /// What happened.
        message: String,
        /// The engine's own error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The engine does not offer this operation.
    #[error("the {engine} engine does not support {what}")]
    Unsupported {
        /// Which engine.
        engine: &'static str,
        /// What was asked of it.
        what: &'static str,
    },
    /// A message is larger than the broker accepts.
    #[error("message of {size} bytes exceeds the broker's limit of {limit} bytes")]
    MessageTooLarge {
        /// The encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The worker no longer holds this delivery: its visibility deadline passed and
    /// the message may now belong to another worker. Nothing was written.
    #[error("lease lost for delivery `{receipt}`: the message may now belong to another worker")]
    LeaseLost {
        /// The engine's receipt of the delivery.
        receipt: String,
    },
    /// No process-wide server is installed; call [`Server::install`](crate::Server::install)
    /// or send with [`Signature::send_with`](crate::Signature::send_with).
    #[error("no default server is installed: call `Server::install()` or use `send_with(&server)`")]
    NoDefaultServer,
    /// Waiting for a result took longer than the given timeout. When the wait was for
    /// one task, the error names it, its queue and the last state seen, so the waiter
    /// can tell "still queued: is a worker consuming this queue?" from "running long".
    #[error("{}", timeout_text(*after, uuid.as_ref(), queue.as_deref(), *last_state))]
    Timeout {
        /// How long was waited.
        after: Duration,
        /// The task waited for, when the wait was for one task.
        uuid: Option<Uuid>,
        /// The queue the task was sent to.
        queue: Option<String>,
        /// The last state read before giving up (`None`: not read, or nothing stored).
        last_state: Option<State>,
    },
    /// The task failed; the message is the task's error text.
    #[error("task {name} ({uuid}) failed: {message}")]
    TaskFailed {
        /// The task's UUID.
        uuid: Uuid,
        /// The task's registered name.
        name: String,
        /// The error text recorded in the FAILURE state.
        message: String,
    },
    /// The result of the task is not (or no longer) stored: unknown UUID or expired.
    #[error("no result stored for task {0} (unknown, or expired after the results TTL)")]
    ResultMissing(Uuid),
    /// A worker refused to start.
    #[error("worker cannot start: {0}")]
    Worker(String),
    /// A periodic task is invalid: a cron spec that does not parse or never matches,
    /// an unknown time zone, an entry name registered twice. `what` names it
    /// (``schedule `61 * * * *` ``, ``entry `report` ``).
    #[error("invalid periodic {what}: {reason}")]
    Periodic {
        /// What is invalid, with its value.
        what: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
}

fn timeout_text(
    after: Duration,
    uuid: Option<&Uuid>,
    queue: Option<&str>,
    last: Option<State>,
) -> String {
    let mut text = format!("timed out after {after:?} waiting for ");
    match uuid {
        Some(uuid) => text.push_str(&format!("the result of task {uuid}")),
        None => text.push_str("the result"),
    }
    if let Some(queue) = queue {
        text.push_str(&format!(" in queue `{queue}`"));
    }
    match last {
        Some(State::Pending) => text.push_str(&format!(
            "; it is still PENDING: no worker has taken it (is a worker consuming `{}`?)",
            queue.unwrap_or("its queue")
        )),
        Some(state) => text.push_str(&format!("; its last known state is {state}")),
        None => {}
    }
    text
}

impl Error {
    /// An [`Error::Timeout`] after `after`, naming no task.
    pub fn timeout(after: Duration) -> Self {
        Error::Timeout {
            after,
            uuid: None,
            queue: None,
            last_state: None,
        }
    }

    /// An [`Error::Engine`] from an engine's own error.
    pub fn engine<E>(engine: &'static str, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error::Engine {
            engine,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// An [`Error::Engine`] with a message and no underlying error.
    pub fn engine_msg(engine: &'static str, message: impl Into<String>) -> Self {
        Error::Engine {
            engine,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// `Result` with machinery-core's [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;
