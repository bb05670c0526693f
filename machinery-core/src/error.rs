//! The error type of machinery-core.

use std::fmt;
use std::time::Duration;

use uuid::Uuid;

use crate::result::State;

/// Everything that can go wrong in machinery-core, apart from a task's own failure
/// (that one is a [`TaskError`](crate::TaskError), recorded in the task's state).
///
/// [`kind`](Error::kind) tells what a caller can do about it: retry after a pause
/// ([`is_retryable`](Error::is_retryable)) or give up. Each variant documents its kind.
///
/// `Debug` prints the same sentence as `Display`, followed by the causes not already
/// part of it (`caused by: …`), so `fn main() -> Result<(), Error>` reports a readable
/// message.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid. `key` names it as the user wrote it
    /// (`MACHINERY_RESULTS_EXPIRE_IN`, `results_expire_in`, …). Kind: [`ErrorKind::Config`].
    #[error("invalid configuration value for `{key}`: {reason}")]
    Config {
        /// The key, as spelled where it was read.
        key: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// A configuration file could not be read or parsed. Kind: [`ErrorKind::Config`].
    #[error("cannot read configuration file `{path}`: {reason}")]
    ConfigFile {
        /// The path of the file.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// A URL names an engine this build does not know. Kind: [`ErrorKind::Config`].
    #[error("unsupported engine URL `{url}`: {reason}")]
    UnsupportedUrl {
        /// The URL, with any password redacted.
        url: String,
        /// What is supported.
        reason: String,
    },
    /// Arguments or a result could not be encoded. Kind: [`ErrorKind::Codec`].
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        reason: String,
    },
    /// Bytes could not be decoded. Kind: [`ErrorKind::Codec`].
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The engine (broker or result backend) failed. Whether the call may be retried
    /// depends on `kind`, decided by the engine where the error was made: a lost
    /// connection or a busy server may be retried, a refused password or a script error
    /// may not.
    #[error("{engine} error: {message}")]
    Engine {
        /// Which engine (`memory`, `redis`, …).
        engine: &'static str,
        /// What the caller can do about it.
        kind: ErrorKind,
        /// What happened.
        message: String,
        /// The engine's own error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A listing's cursor was not made by that listing (or by this version). Kind:
    /// [`ErrorKind::Rejected`].
    #[error(
        "invalid cursor `{cursor}`: pass the `next` cursor of the previous page of the same listing"
    )]
    InvalidCursor {
        /// The cursor as given.
        cursor: String,
    },
    /// The engine does not offer this operation. Kind: [`ErrorKind::Rejected`].
    #[error("the {engine} engine does not support {what}")]
    Unsupported {
        /// Which engine.
        engine: &'static str,
        /// What was asked of it.
        what: &'static str,
    },
    /// A message is larger than the broker accepts. Kind: [`ErrorKind::MessageTooLarge`].
    #[error("message of {size} bytes exceeds the broker's limit of {limit} bytes")]
    MessageTooLarge {
        /// The encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The worker no longer holds this delivery: its visibility deadline passed and
    /// the message may now belong to another worker. Nothing was written.
    /// Kind: [`ErrorKind::LeaseLost`].
    #[error("lease lost for delivery `{receipt}`: the message may now belong to another worker")]
    LeaseLost {
        /// The engine's receipt of the delivery.
        receipt: String,
    },
    /// No process-wide server is installed; call [`Server::install`](crate::Server::install)
    /// or send with [`Signature::send_with`](crate::Signature::send_with).
    /// Kind: [`ErrorKind::Config`].
    #[error("no default server is installed: call `Server::install()` or use `send_with(&server)`")]
    NoDefaultServer,
    /// Waiting for a result took longer than the given timeout. When the wait was for
    /// one task, the error names it, its queue and the last state seen, so the waiter
    /// can tell "still queued: is a worker consuming this queue?" from "running long".
    /// Kind: [`ErrorKind::Timeout`].
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
    /// The task failed; the message is the task's error text. Kind:
    /// [`ErrorKind::TaskFailed`].
    #[error("task {name} ({uuid}) failed: {message}")]
    TaskFailed {
        /// The task's UUID.
        uuid: Uuid,
        /// The task's registered name.
        name: String,
        /// The error text recorded in the FAILURE state.
        message: String,
    },
    /// The task was revoked (cancelled, or expired before it started) and ends without
    /// a result; the reason is the REVOKED state's error text (`revoked`, `expired`, …).
    /// Kind: [`ErrorKind::TaskFailed`].
    #[error("task {name} ({uuid}) was revoked: {reason}")]
    Revoked {
        /// The task's UUID.
        uuid: Uuid,
        /// The task's registered name.
        name: String,
        /// Why: the error text recorded in the REVOKED state.
        reason: String,
    },
    /// A unique task (`unique_for`, `unique_key`, or a UUID given with `with_uuid`) was
    /// sent while a task with the same key is pending, delayed or running: nothing was
    /// enqueued. Kind: [`ErrorKind::Rejected`].
    #[error("a task with the same unique key is already queued or running: {uuid}")]
    Duplicate {
        /// The task that holds the key.
        uuid: Uuid,
        /// The queue it was sent to (where its state is kept).
        queue: String,
    },
    /// The result of the task is not (or no longer) stored: unknown UUID or expired.
    /// Kind: [`ErrorKind::NotFound`].
    #[error("no result stored for task {0} (unknown, or expired after the results TTL)")]
    ResultMissing(Uuid),
    /// A worker refused to start. Kind: [`ErrorKind::Config`].
    #[error("worker cannot start: {0}")]
    Worker(String),
    /// An HTTP endpoint (the metrics of [`Worker::metrics_listen`](crate::Worker::metrics_listen)
    /// or of [`metrics::serve`](crate::metrics::serve)) cannot listen on its address: it
    /// does not resolve, is in use, or is not this host's. Kind: [`ErrorKind::Config`].
    #[error("cannot listen on `{addr}`: {reason}")]
    Listen {
        /// The address as given.
        addr: String,
        /// Why, as the operating system says it.
        reason: String,
    },
    /// A periodic task is invalid: a cron spec that does not parse or never matches,
    /// an unknown time zone, an entry name registered twice. `what` names it
    /// (``schedule `61 * * * *` ``, ``entry `report` ``). Kind: [`ErrorKind::Config`].
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

    /// An [`Error::Engine`] of `kind` from an engine's own error.
    pub fn engine<E>(engine: &'static str, kind: ErrorKind, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error::Engine {
            engine,
            kind,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// An [`Error::Engine`] of `kind` with a message and no underlying error.
    pub fn engine_msg(engine: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::Engine {
            engine,
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// What a caller can do about this error; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. }
            | Error::ConfigFile { .. }
            | Error::UnsupportedUrl { .. }
            | Error::NoDefaultServer
            | Error::Worker(_)
            | Error::Listen { .. }
            | Error::Periodic { .. } => ErrorKind::Config,
            Error::Encode { .. } | Error::Decode { .. } => ErrorKind::Codec,
            Error::Engine { kind, .. } => *kind,
            Error::MessageTooLarge { .. } => ErrorKind::MessageTooLarge,
            Error::LeaseLost { .. } => ErrorKind::LeaseLost,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::TaskFailed { .. } | Error::Revoked { .. } => ErrorKind::TaskFailed,
            Error::Duplicate { .. } => ErrorKind::Rejected,
            Error::ResultMissing(_) => ErrorKind::NotFound,
            Error::Unsupported { .. } | Error::InvalidCursor { .. } => ErrorKind::Rejected,
        }
    }

    /// Whether the same call may succeed if made again after a pause: a transient
    /// engine condition, a timeout or a lost connection. See [`ErrorKind::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Whether the same call would fail the same way again; the opposite of
    /// [`is_retryable`](Error::is_retryable).
    pub fn is_permanent(&self) -> bool {
        self.kind().is_permanent()
    }

    /// Whether this is a timeout: [`Error::Timeout`], or an engine's command that got no
    /// reply in time.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// Whether the connection to the engine failed (refused, reset, closed).
    pub fn is_connection(&self) -> bool {
        self.kind() == ErrorKind::Connection
    }

    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Debug for Error {
    /// The `Display` sentence, then each cause whose text it does not already contain.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let line = c.to_string();
            if !text.contains(&line) {
                text.push_str("\ncaused by: ");
                text.push_str(&line);
            }
            cause = c.source();
        }
        f.write_str(&text)
    }
}

/// What a caller can do about an [`Error`], from [`Error::kind`].
///
/// The first three kinds are retryable: the same call may succeed after a pause
/// (a worker backs off and tries again). Every other kind is permanent: retrying the
/// same call gives the same answer, so a worker's loop stops on it with an error.
/// Modelled on redis-rs's `ErrorKind` and `RetryMethod`. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The engine cannot serve the call right now (busy running a script, loading its
    /// data, a cluster slot moving or down): retry after a pause.
    Transient,
    /// No answer within the time allowed: a command's reply, or a wait for a result.
    /// Retryable.
    Timeout,
    /// The connection to the engine failed: refused, reset or closed. Retryable: the
    /// engine reconnects.
    Connection,
    /// Configuration or set-up is wrong: an invalid value or URL, an unsupported engine,
    /// a worker without tasks, an invalid periodic entry, no default server. Permanent.
    Config,
    /// The engine refused the credentials or the permission (wrong password, ACL).
    /// Permanent.
    Auth,
    /// Arguments, results or a message could not be encoded or decoded. Permanent.
    Codec,
    /// A message is larger than the broker accepts. Permanent.
    MessageTooLarge,
    /// The delivery's lease is no longer held: nothing was written and the message may
    /// belong to another worker now. Permanent for this delivery.
    LeaseLost,
    /// The task ran and failed; its error text is in the error. Permanent.
    TaskFailed,
    /// The result asked for is not stored (unknown, or expired). Permanent.
    NotFound,
    /// The engine rejected the call for good: a script error, a key holding the wrong
    /// type, a reply this version does not understand. Permanent.
    Rejected,
}

impl ErrorKind {
    /// Whether a call that failed with this kind may succeed if made again after a
    /// pause: [`Transient`](ErrorKind::Transient), [`Timeout`](ErrorKind::Timeout) and
    /// [`Connection`](ErrorKind::Connection).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Transient | ErrorKind::Timeout | ErrorKind::Connection
        )
    }

    /// The opposite of [`is_retryable`](ErrorKind::is_retryable): the same call gives the
    /// same answer.
    pub fn is_permanent(self) -> bool {
        !self.is_retryable()
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::Config => "configuration",
            ErrorKind::Auth => "authentication",
            ErrorKind::Codec => "encoding",
            ErrorKind::MessageTooLarge => "message too large",
            ErrorKind::LeaseLost => "lease lost",
            ErrorKind::TaskFailed => "task failed",
            ErrorKind::NotFound => "not found",
            ErrorKind::Rejected => "rejected",
        })
    }
}

/// `Result` with machinery-core's [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Io;
    impl fmt::Display for Io {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection reset by peer")
        }
    }
    impl std::error::Error for Io {}

    #[derive(Debug)]
    struct Wrapper(Io);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("command failed")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn debug_reads_like_display() {
        let e = Error::config("MACHINERY_MAX_DELIVERIES", "expected a whole number");
        assert_eq!(
            format!("{e:?}"),
            "invalid configuration value for `MACHINERY_MAX_DELIVERIES`: expected a whole number"
        );
        assert_eq!(format!("{e:?}"), e.to_string());
        let e = Error::MessageTooLarge { size: 10, limit: 5 };
        assert_eq!(
            format!("{e:?}"),
            "message of 10 bytes exceeds the broker's limit of 5 bytes"
        );
    }

    #[test]
    fn debug_adds_the_causes_not_already_said() {
        // The engine's message is its source's text: said once, then the deeper cause.
        let e = Error::engine("redis", ErrorKind::Connection, Wrapper(Io));
        assert_eq!(
            format!("{e:?}"),
            "redis error: command failed\ncaused by: connection reset by peer"
        );
        let e = Error::engine("redis", ErrorKind::Connection, Io);
        assert_eq!(format!("{e:?}"), "redis error: connection reset by peer");
    }

    #[test]
    fn every_variant_has_a_kind() {
        assert!(Error::timeout(Duration::from_secs(1)).is_timeout());
        assert!(Error::timeout(Duration::from_secs(1)).is_retryable());
        assert!(Error::engine_msg("x", ErrorKind::Timeout, "no reply").is_timeout());
        assert!(Error::engine_msg("x", ErrorKind::Connection, "refused").is_connection());
        assert!(Error::engine_msg("x", ErrorKind::Transient, "busy").is_retryable());
        assert!(Error::engine_msg("x", ErrorKind::Auth, "wrong password").is_permanent());
        assert!(Error::engine_msg("x", ErrorKind::Rejected, "WRONGTYPE").is_permanent());
        assert_eq!(Error::config("k", "r").kind(), ErrorKind::Config);
        assert_eq!(Error::NoDefaultServer.kind(), ErrorKind::Config);
        assert_eq!(Error::Worker("no tasks".into()).kind(), ErrorKind::Config);
        assert_eq!(
            Error::Decode {
                what: "message",
                reason: "eof".into()
            }
            .kind(),
            ErrorKind::Codec
        );
        assert_eq!(
            Error::MessageTooLarge { size: 2, limit: 1 }.kind(),
            ErrorKind::MessageTooLarge
        );
        assert_eq!(
            Error::LeaseLost {
                receipt: "r".into()
            }
            .kind(),
            ErrorKind::LeaseLost
        );
        assert_eq!(
            Error::ResultMissing(Uuid::nil()).kind(),
            ErrorKind::NotFound
        );
        assert!(!Error::ResultMissing(Uuid::nil()).is_retryable());
    }
}
