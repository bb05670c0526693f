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
/// A boxed error does not implement `std::error::Error` (the standard library's
/// `impl Error for Box<T>` needs a sized `T`), so it has no `From` conversion; convert it
/// with [`TaskError::boxed`]. A `#[task]` function may still return
/// `Result<T, Box<dyn Error + Send + Sync>>` (or `Box<dyn Error>`, with or without
/// `Send`/`Sync`) as written out: the macro recognises that spelling and converts it.
/// It cannot see through a type alias, so a task returning `Result<T, BoxError>` with
/// `type BoxError = Box<dyn Error + Send + Sync>;` is refused; write the box out, or
/// return `Result<T, TaskError>` and convert with `.map_err(TaskError::boxed)`.
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

    /// A failure converted from a boxed error, keeping it as [`source`](TaskError::source);
    /// the message is its text followed by the texts of its causes, joined by `": "`, as
    /// for any converted error. The task is retried while it has retries left.
    ///
    /// ```
    /// use machinery_core::TaskError;
    ///
    /// fn parse(s: &str) -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
    ///     Ok(s.parse()?)
    /// }
    /// let e = parse("x").map_err(TaskError::boxed).unwrap_err();
    /// assert_eq!(e.message(), "invalid digit found in string");
    /// assert!(e.source().is_some());
    /// ```
    pub fn boxed(err: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        TaskError {
            kind: Kind::Failed,
            message: chain_text(&*err),
            source: Some(err),
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
        TaskError {
            kind: Kind::Failed,
            message: chain_text(&err),
            source: Some(Box::new(err)),
        }
    }
}

/// `err`'s text followed by the texts of its causes, joined by `": "`.
pub(crate) fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
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
    fn boxed_errors_keep_their_causes() {
        let boxed: Box<dyn std::error::Error + Send + Sync> =
            Box::new(Outer(std::io::Error::other("inner")));
        let e = TaskError::boxed(boxed);
        assert_eq!(e.message(), "outer: inner");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("outer")
        );
        assert!(!e.is_fatal());
        assert_eq!(e.retry_delay(), None);
    }

    #[test]
    fn retry_in_carries_its_delay() {
        let e = TaskError::retry_in(Duration::from_secs(3), "later");
        assert_eq!(e.retry_delay(), Some(Duration::from_secs(3)));
        assert_eq!(TaskError::fatal("x").retry_delay(), None);
    }
}
