//! The error type of machinery-redis.

/// What can go wrong talking to Redis. Converted into
/// [`machinery_core::Error::Engine`] (engine `redis`) at the trait boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot be used. The URL in the message has its password redacted.
    #[error("invalid Redis URL `{url}`: {reason}")]
    Url {
        /// The redacted URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Redis could not be reached within the connect timeout.
    #[error("cannot connect to Redis at `{url}`: {reason}")]
    Connect {
        /// The redacted URL.
        url: String,
        /// Why (the password is never part of it).
        reason: String,
    },
    /// A command failed (connection lost, timeout, script error, …); may be retried.
    #[error("Redis command failed: {0}")]
    Command(#[source] redis::RedisError),
    /// A setting of the `redis` section is invalid (checked again at connect, for a
    /// configuration changed by hand after it was loaded).
    #[error("invalid configuration key `{key}`: {reason}")]
    Config {
        /// The YAML path of the key: `redis.block_ms`.
        key: String,
        /// What is accepted and what was found.
        reason: String,
    },
    /// Redis answered something this crate does not understand.
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Command(e)
    }
}

impl From<Error> for machinery_core::Error {
    fn from(e: Error) -> Self {
        machinery_core::Error::engine("redis", e)
    }
}

/// `Result` with this crate's [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;
