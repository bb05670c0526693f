//! The error a task returns.

use std::fmt;
use std::time::Duration;

/// The error of a task.
///
/// Any `std::error::Error + Send + Sync + 'static` converts into it with `?`, so a task
/// can return `Result<T, TaskError>` or `Result<T, MyError>`. Like `anyhow::Error`,
/// `TaskError` does not implement `std::error::Error` itself; that is what makes the
/// blanket conversion possible.
///
/// Besides failing, a task can ask to be retried later ([`TaskError::retry_in`]) or
/// to fail without using its remaining retries ([`TaskError::fatal`]).
///
/// ```
/// use machinery_core::TaskError;
/// use std::time::Duration;
///
/// fn parse(s: &str) -> Result<i64, TaskError> {
///     let n: i64 = s.parse()?; // ParseIntError converts
///     if n < 0 {
///         return Err(TaskError::fatal("negative input can never succeed"));
///     }
///     if n == 0 {
///         return Err(TaskError::retry_in(Duration::from_secs(5), "not ready yet"));
///     }
///     Ok(n)
/// }
/// assert!(parse("x").is_err());
/// ```
pub struct TaskError {
    kind: Kind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Failed,
    RetryIn(Duration),
    Fatal,
}

impl TaskError {
    /// A failure with a message. The task is retried while it has retries left.
    pub fn msg(message: impl fmt::Display) -> Self {
        TaskError {
            kind: Kind::Failed,
            message: message.to_string(),
            source: None,
        }
    }

    /// Asks to run the task again after `delay`. This counts against the task's retry
    /// budget; once the budget is spent the task fails with `message`.
    pub fn retry_in(delay: Duration, message: impl fmt::Display) -> Self {
        TaskError {
            kind: Kind::RetryIn(delay),
            message: message.to_string(),
            source: None,
        }
    }

    /// A failure that is never retried, whatever retries remain.
    pub fn fatal(message: impl fmt::Display) -> Self {
        TaskError {
            kind: Kind::Fatal,
            message: message.to_string(),
            source: None,
        }
    }

    /// The error text, as stored in the FAILURE state.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The delay asked for by [`TaskError::retry_in`], if any.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self.kind {
            Kind::RetryIn(d) => Some(d),
            _ => None,
        }
    }

    /// Whether the task must not be retried.
    pub fn is_fatal(&self) -> bool {
        self.kind == Kind::Fatal
    }

    /// The underlying error, when the `TaskError` was converted from one.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E> From<E> for TaskError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut cause = err.source();
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        TaskError {
            kind: Kind::Failed,
            message,
            source: Some(Box::new(err)),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn converts_errors_with_their_causes() {
        let e: TaskError = Outer(std::io::Error::other("inner")).into();
        assert_eq!(e.message(), "outer: inner");
        assert!(e.source().is_some());
        assert!(!e.is_fatal());
    }

    #[test]
    fn retry_in_carries_its_delay() {
        let e = TaskError::retry_in(Duration::from_secs(3), "later");
        assert_eq!(e.retry_delay(), Some(Duration::from_secs(3)));
        assert_eq!(TaskError::fatal("x").retry_delay(), None);
    }
}
