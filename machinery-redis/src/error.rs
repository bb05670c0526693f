//! The error type of machinery-redis, and how Redis's errors map to
//! [`machinery_core::ErrorKind`].

use std::time::Duration;

use machinery_core::ErrorKind;

/// What can go wrong talking to Redis. Converted into
/// [`machinery_core::Error::Engine`] (engine `redis`) at the trait boundary, with the
/// [`kind`](Error::kind) that tells the caller whether to retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot be used. The URL in the message has its password redacted.
    /// Kind: [`ErrorKind::Config`].
    #[error("invalid Redis URL `{url}`: {reason}")]
    Url {
        /// The redacted URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Redis could not be reached within the connect timeout. Kind:
    /// [`ErrorKind::Connection`].
    #[error("cannot connect to Redis at `{url}`: {reason}")]
    Connect {
        /// The redacted URL.
        url: String,
        /// Why (the password is never part of it).
        reason: String,
    },
    /// Redis refused the credentials (wrong password or user, no password given) or the
    /// user's permissions (ACL) while connecting. Kind: [`ErrorKind::Auth`].
    #[error("cannot connect to Redis at `{url}`: {reason}")]
    Auth {
        /// The redacted URL.
        url: String,
        /// Why (the password is never part of it).
        reason: String,
    },
    /// A command failed: its kind is read from Redis's error (see [`Error::kind`]).
    #[error("Redis command failed: {0}")]
    Command(#[source] redis::RedisError),
    /// No reply within the time allowed; the connection is dropped and the next call
    /// opens a new one. Kind: [`ErrorKind::Timeout`].
    #[error("no reply from Redis to {what} within {after:?}; reconnecting")]
    Timeout {
        /// What was waited for (`a blocking read`).
        what: &'static str,
        /// How long.
        after: Duration,
    },
    /// A call ended without its reply: the task running it stopped (the runtime is
    /// shutting down). Kind: [`ErrorKind::Transient`].
    #[error("{0}")]
    Interrupted(&'static str),
    /// A setting of the `redis` section is invalid (checked again at connect, for a
    /// configuration changed by hand after it was loaded). Kind: [`ErrorKind::Config`].
    #[error("invalid configuration key `{key}`: {reason}")]
    Config {
        /// The YAML path of the key: `redis.block_ms`.
        key: String,
        /// What is accepted and what was found.
        reason: String,
    },
    /// Redis answered something this crate does not understand. Kind:
    /// [`ErrorKind::Rejected`].
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
}

impl Error {
    /// What the caller can do about this error. For [`Error::Command`], the kind comes
    /// from Redis's error code first (Redis sends most codes as "extension" errors
    /// redis-rs does not classify), then from redis-rs's own kind:
    ///
    /// - a reply timeout: [`ErrorKind::Timeout`];
    /// - an I/O error (refused, reset, closed), an unparsable reply stream, no node to talk
    ///   to: [`ErrorKind::Connection`] (the connection manager reconnects);
    /// - `BUSY`, `LOADING`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `MOVED`, `ASK`,
    ///   `READONLY`, `NOREPLICAS`, `OOM`, `MISCONF`: [`ErrorKind::Transient`] (the server
    ///   or cluster gets over it);
    /// - `WRONGPASS`, `NOAUTH`, `NOPERM`, a failed `AUTH`, and the `Protocol error:
    ///   unauthenticated …` a server that now requires a password sends a client that
    ///   has not authenticated: [`ErrorKind::Auth`];
    /// - an invalid client configuration: [`ErrorKind::Config`];
    /// - anything else (`ERR`, a script error, `WRONGTYPE`, `NOSCRIPT` after the engine
    ///   reloaded its scripts, `EXECABORT`, `CROSSSLOT`, a reply of the wrong type):
    ///   [`ErrorKind::Rejected`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Url { .. } | Error::Config { .. } => ErrorKind::Config,
            Error::Connect { .. } => ErrorKind::Connection,
            Error::Auth { .. } => ErrorKind::Auth,
            Error::Command(e) => kind_of(e),
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Interrupted(_) => ErrorKind::Transient,
            Error::Protocol(_) => ErrorKind::Rejected,
        }
    }
}

/// The kind of a redis-rs error, as [`Error::kind`] describes.
pub(crate) fn kind_of(e: &redis::RedisError) -> ErrorKind {
    use redis::ErrorKind as K;
    use redis::ServerErrorKind as S;
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    let code = e.code().map(str::to_owned).or_else(|| {
        // A pipeline's error: the code of its first failed command.
        e.clone()
            .into_server_errors()
            .and_then(|errors| errors.first().map(|(_, s)| s.code().to_owned()))
    });
    // A server that started requiring a password after this connection was made
    // answers a reconnected client's first long command (a script call) with this
    // `ERR`, and closes the connection, instead of `NOAUTH`.
    if e.detail()
        .is_some_and(|d| d.starts_with("Protocol error: unauthenticated"))
    {
        return ErrorKind::Auth;
    }
    if let Some(code) = code.as_deref() {
        match code {
            "WRONGPASS" | "NOAUTH" | "NOPERM" => return ErrorKind::Auth,
            "BUSY" | "LOADING" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "MOVED" | "ASK"
            | "READONLY" | "NOREPLICAS" | "OOM" | "MISCONF" => return ErrorKind::Transient,
            _ => {}
        }
    }
    match e.kind() {
        K::Io
        | K::Parse
        | K::ClusterConnectionNotFound
        | K::MasterNameNotFoundBySentinel
        | K::NoValidReplicasFoundBySentinel => ErrorKind::Connection,
        K::AuthenticationFailed | K::Server(S::NoPerm) => ErrorKind::Auth,
        K::InvalidClientConfig | K::EmptySentinelList | K::RESP3NotSupported => ErrorKind::Config,
        K::Server(
            S::BusyLoading
            | S::TryAgain
            | S::ClusterDown
            | S::MasterDown
            | S::Moved
            | S::Ask
            | S::ReadOnly,
        ) => ErrorKind::Transient,
        _ => ErrorKind::Rejected,
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Command(e)
    }
}

impl From<Error> for machinery_core::Error {
    fn from(e: Error) -> Self {
        machinery_core::Error::engine("redis", e.kind(), e)
    }
}

/// A redis-rs error as [`machinery_core::Error::Engine`] (engine `redis`), classified
/// by `kind_of`.
pub(crate) fn core_error(e: redis::RedisError) -> machinery_core::Error {
    Error::Command(e).into()
}

/// `Result` with this crate's [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str) -> redis::RedisError {
        redis::make_extension_error(code.to_owned(), Some("detail".to_owned()))
    }

    #[test]
    fn codes_map_to_kinds() {
        for code in ["BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MOVED", "OOM"] {
            assert_eq!(kind_of(&server_error(code)), ErrorKind::Transient, "{code}");
        }
        for code in ["WRONGPASS", "NOAUTH", "NOPERM"] {
            assert_eq!(kind_of(&server_error(code)), ErrorKind::Auth, "{code}");
        }
        for code in ["WRONGTYPE", "ERR", "NOSCRIPT"] {
            assert_eq!(kind_of(&server_error(code)), ErrorKind::Rejected, "{code}");
        }
        // What Redis answers a long command from a client that has not authenticated.
        let unauthenticated = redis::make_extension_error(
            "ERR".to_owned(),
            Some("Protocol error: unauthenticated multibulk length".to_owned()),
        );
        assert_eq!(kind_of(&unauthenticated), ErrorKind::Auth);
    }

    #[test]
    fn io_errors_are_connection_or_timeout() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(kind_of(&refused), ErrorKind::Connection);
        let reset =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(kind_of(&reset), ErrorKind::Connection);
        let timed_out = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(kind_of(&timed_out), ErrorKind::Timeout);
        let core: machinery_core::Error = Error::Command(timed_out).into();
        assert!(core.is_timeout());
        assert!(core.is_retryable());
    }

    #[test]
    fn crate_errors_have_kinds() {
        let url = Error::Url {
            url: "redis://x".into(),
            reason: "bad".into(),
        };
        assert_eq!(machinery_core::Error::from(url).kind(), ErrorKind::Config);
        let t = Error::Timeout {
            what: "a blocking read",
            after: Duration::from_secs(6),
        };
        assert!(machinery_core::Error::from(t).is_timeout());
        assert!(machinery_core::Error::from(Error::Protocol("?".into())).is_permanent());
    }
}
