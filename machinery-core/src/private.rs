//! Items used by the code `#[task]` generates. Not a public API: names and signatures
//! change without notice.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use inventory;
pub use rmp_serde;
pub use serde;
pub use tokio;
pub use uuid::Uuid;

pub use crate::context::TaskContext;
pub use crate::error::Error;
pub use crate::registry::{BoxFuture, Handler, Invocation, Outcome, TaskEntry, TaskOptions};
pub use crate::result::AsyncResult;
pub use crate::server::Server;
pub use crate::signature::Signature;
pub use crate::task_error::TaskError;
pub use crate::workflow::{ErrorCallback, Partial};

use crate::task_error::chain_text;

/// A type that can be a task argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent as a task argument",
    label = "this argument's type must implement `Serialize + DeserializeOwned + Send + 'static`",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it, and own its data (no borrowed references)"
)]
pub trait TaskArg: Serialize + DeserializeOwned + Send + 'static {}

impl<T> TaskArg for T where T: Serialize + DeserializeOwned + Send + 'static {}

/// A type that can be a task's result.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a task",
    label = "a task's `Ok` type must implement `Serialize + DeserializeOwned + Send + 'static`",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it, and own its data (no borrowed references)"
)]
pub trait TaskOutput: Serialize + DeserializeOwned + Send + 'static {}

impl<T> TaskOutput for T where T: Serialize + DeserializeOwned + Send + 'static {}

/// The shape of a task's return type: any `Result<T, E>`. Whether `E` converts into
/// [`TaskError`] is [`TaskFailure`]'s question, asked at `E`'s own span.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid task return type",
    label = "a task must return `Result<T, E>` where `E` converts into `TaskError`",
    note = "any `std::error::Error + Send + Sync + 'static` converts into `TaskError`; so does `TaskError` itself"
)]
pub trait TaskReturn {
    /// The `Ok` type.
    type Ok;
    /// The error type.
    type Err;
    /// The value as a plain `Result`.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl<T, E> TaskReturn for Result<T, E> {
    type Ok = T;
    type Err = E;
    fn into_result(self) -> Result<T, E> {
        self
    }
}

/// A type that can be a task's error: anything that converts into [`TaskError`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of a task: it does not convert into `TaskError`",
    label = "a task's error type must convert into `TaskError`",
    note = "return `Result<T, TaskError>` and convert the error where it is made, with `.map_err(TaskError::msg)`; or, for an error type of your own, implement `std::error::Error` (it must also be `Send + Sync + 'static`)"
)]
pub trait TaskFailure: Into<TaskError> {}

impl<E: Into<TaskError>> TaskFailure for E {}

/// A boxed error a task may return, written out as `Box<dyn Error ...>` in its signature
/// (which `#[task]` recognises, asking for this trait at `E` instead of
/// [`TaskFailure`]). A box has no `From` conversion into [`TaskError`]: see
/// [`TaskError::boxed`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of a task: it is not a boxed `std::error::Error`",
    label = "a boxed task error must be `Box<dyn std::error::Error + Send + Sync>`",
    note = "box a `std::error::Error` trait object, optionally with `+ Send + Sync`; or return `Result<T, TaskError>` and convert the error where it is made"
)]
pub trait BoxedTaskError {
    /// The error as a [`TaskError`].
    fn into_task_error(self) -> TaskError;
}

impl BoxedTaskError for Box<dyn std::error::Error + Send + Sync> {
    fn into_task_error(self) -> TaskError {
        TaskError::boxed(self)
    }
}

// Without `Send + Sync` the box cannot be kept as the `TaskError`'s source (which travels
// between threads); its text, causes included, is all a FAILURE state stores anyway.
impl BoxedTaskError for Box<dyn std::error::Error + Send> {
    fn into_task_error(self) -> TaskError {
        TaskError::msg(chain_text(&*self))
    }
}

impl BoxedTaskError for Box<dyn std::error::Error + Sync> {
    fn into_task_error(self) -> TaskError {
        TaskError::msg(chain_text(&*self))
    }
}

impl BoxedTaskError for Box<dyn std::error::Error> {
    fn into_task_error(self) -> TaskError {
        TaskError::msg(chain_text(&*self))
    }
}

/// Compile-time check that an argument type qualifies; called at the argument's span.
pub const fn assert_arg<T: TaskArg>() {}

/// Compile-time check that the output type qualifies; called at the `Ok` type's span.
pub const fn assert_output<T: TaskOutput>() {}

/// Compile-time check of the return type's shape; called at the return type's span.
pub const fn assert_return<T: TaskReturn>() {}

/// Compile-time check that the error type converts; called at the error type's span.
pub const fn assert_error<E: TaskFailure>() {}

/// Compile-time check that a boxed error type converts; called at the error type's span.
pub const fn assert_boxed_error<E: BoxedTaskError>() {}

/// The task's result with its error converted into [`TaskError`].
pub fn into_task_result<R, E>(value: R) -> Result<R::Ok, TaskError>
where
    R: TaskReturn<Err = E>,
    E: TaskFailure,
{
    value.into_result().map_err(Into::into)
}

/// The task's result with its boxed error converted into [`TaskError`].
pub fn boxed_into_task_result<R, E>(value: R) -> Result<R::Ok, TaskError>
where
    R: TaskReturn<Err = E>,
    E: BoxedTaskError,
{
    value.into_result().map_err(BoxedTaskError::into_task_error)
}

fn decode_args<A: DeserializeOwned>(inv: &Invocation, schema: &str) -> Result<A, TaskError> {
    rmp_serde::from_slice(&inv.args).map_err(|e| {
        TaskError::fatal(format!(
            "arguments of task `{}` do not decode as `{schema}`: {e}",
            inv.ctx.name
        ))
    })
}

fn encode_output<T: Serialize>(value: &T) -> Outcome {
    rmp_serde::to_vec(value)
        .map_err(|e| TaskError::fatal(format!("cannot encode the task's result: {e}")))
}

/// Runs an `async fn` task: decodes `A`, awaits `f`, encodes the `Ok` value.
pub fn run_async<A, F, Fut, T>(inv: Invocation, schema: &'static str, f: F) -> BoxFuture<Outcome>
where
    A: DeserializeOwned + Send + 'static,
    F: FnOnce(TaskContext, A) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
    T: Serialize,
{
    let args = decode_args::<A>(&inv, schema);
    Box::pin(async move {
        let args = args?;
        let value = f(inv.ctx, args).await?;
        encode_output(&value)
    })
}

/// Runs a plain `fn` task on tokio's blocking pool.
pub fn run_blocking<A, F, T>(inv: Invocation, schema: &'static str, f: F) -> BoxFuture<Outcome>
where
    A: DeserializeOwned + Send + 'static,
    F: FnOnce(TaskContext, A) -> Result<T, TaskError> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let args = decode_args::<A>(&inv, schema);
    Box::pin(async move {
        let args = args?;
        let ctx = inv.ctx;
        // The blocking thread runs inside the task's span and trace.
        let span = tracing::Span::current();
        let trace = crate::TraceContext::current();
        let joined = tokio::task::spawn_blocking(move || {
            let run = || {
                let value = f(ctx, args)?;
                encode_output(&value)
            };
            span.in_scope(|| match trace {
                Some(cx) => cx.sync_scope(run),
                None => run(),
            })
        })
        .await;
        match joined {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => Err(TaskError::msg(format!(
                "task panicked: {}",
                crate::worker::panic_message(e.into_panic().as_ref())
            ))),
            Err(e) => Err(TaskError::msg(format!("task was cancelled: {e}"))),
        }
    })
}

/// Builds the typed signature of a call.
pub fn signature<T, A: Serialize + ?Sized>(entry: &'static TaskEntry, args: &A) -> Signature<T> {
    Signature::for_entry(entry, rmp_serde::to_vec(args).map_err(|e| e.to_string()))
}

/// Encodes one argument; named at the argument's span with its type, right after that
/// type's `assert_arg`, so a bad type is reported once.
pub fn encode_arg<T: TaskArg>(value: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec(value).map_err(|e| e.to_string())
}

/// Joins encoded arguments into a positional array.
pub fn encode_args(parts: Vec<Result<Vec<u8>, String>>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    crate::codec::write_array_len(&mut out, parts.len()).map_err(|e| e.to_string())?;
    for part in parts {
        out.extend_from_slice(&part?);
    }
    Ok(out)
}

/// Builds a workflow step missing its last argument.
pub fn partial<L, T>(entry: &'static TaskEntry, args: Result<Vec<u8>, String>) -> Partial<L, T> {
    Partial::new(Signature::for_entry(entry, args))
}

/// Builds an error callback missing its first argument.
pub fn errback<F, T>(
    entry: &'static TaskEntry,
    args: Result<Vec<u8>, String>,
) -> ErrorCallback<F, T> {
    ErrorCallback::new(Signature::for_entry(entry, args))
}

/// The typed handle of task `uuid` of `entry` on the process-wide server, found in
/// whatever queue it was sent to (see [`Server::result`]).
///
/// # Errors
/// [`Error::NoDefaultServer`] when no server is installed.
pub fn result<T>(entry: &'static TaskEntry, uuid: Uuid) -> Result<AsyncResult<T>, Error> {
    Ok(result_with(&Server::global()?, entry, uuid))
}

/// The typed handle of task `uuid` of `entry` on `server`, found in whatever queue it
/// was sent to (see [`Server::result`]).
pub fn result_with<T>(server: &Server, entry: &'static TaskEntry, uuid: Uuid) -> AsyncResult<T> {
    AsyncResult::on(server, uuid, entry.name, "")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::error::Error as StdError;
    use std::time::Duration;

    use crate::error::Error;
    use crate::result::State;
    use crate::{Server, Worker, task};

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[task(name = "private.boxed_fail")]
    async fn boxed_fail(inner: String) -> Result<(), Box<dyn StdError + Send + Sync>> {
        tokio::task::yield_now().await;
        Err(Box::new(Outer(std::io::Error::other(inner))))
    }

    #[task(name = "private.boxed_local_fail")]
    fn boxed_local_fail(inner: String) -> Result<(), Box<dyn StdError>> {
        Err(Box::new(Outer(std::io::Error::other(inner))))
    }

    /// A task failing with a boxed error ends FAILURE with the error's text and its
    /// cause's, whether or not the box is `Send + Sync`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn boxed_errors_fail_with_their_causes() {
        let server = Server::memory();
        let worker = Worker::new()
            .task(boxed_fail::ENTRY)
            .task(boxed_local_fail::ENTRY)
            .server(&server)
            .spawn()
            .unwrap();
        let sent = [
            boxed_fail::s("shared".into())
                .send_with(&server)
                .await
                .unwrap(),
            boxed_local_fail::s("local".into())
                .send_with(&server)
                .await
                .unwrap(),
        ];
        for (r, cause) in sent.iter().zip(["shared", "local"]) {
            let expected = format!("outer: {cause}");
            match r.get_timeout(Duration::from_secs(20)).await {
                Err(Error::TaskFailed { message, .. }) => assert_eq!(message, expected),
                other => panic!("expected TaskFailed, got {other:?}"),
            }
            let state = r.task_state().await.unwrap();
            assert_eq!(state.state, State::Failure);
            assert_eq!(state.error.as_deref(), Some(expected.as_str()));
        }
        worker.shutdown().await.unwrap();
    }
}
