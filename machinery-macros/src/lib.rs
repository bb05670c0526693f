//! The `#[task]` attribute of [`machinery-core`](https://docs.rs/machinery-core).
//!
//! Do not depend on this crate directly: `machinery-core` re-exports the attribute as
//! `machinery_core::task` (and in its prelude), and the code it generates names only
//! `machinery_core`, `core` and `std`.
//!
//! `#[task]` keeps the function as written and adds, beside it, a module of the same
//! name holding the task's registration and typed senders. See [`macro@task`] for the
//! rules, the options and the generated items.
//!
//! ```
//! use machinery_core::prelude::*;
//!
//! #[task(queue = "math", retries = 3)]
//! async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
//!     Ok(a + b)
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), machinery_core::Error> {
//!     let server = Server::memory();
//!     let worker = Worker::new().task(add::ENTRY).server(&server).spawn()?;
//!     let sum = add::s(1, 2).send_with(&server).await?.get().await?;
//!     assert_eq!(sum, 3);
//!     worker.shutdown().await
//! }
//! ```

mod args;
mod expand;
mod model;
mod validate;

use proc_macro::TokenStream;

/// Turns a function into a task: keeps the function and adds a module of the same name
/// with its registration and typed senders.
///
/// ```
/// use machinery_core::prelude::*;
///
/// #[task(name = "math.add", queue = "math", retries = 3, retry_timeout = "2s", timeout = "30s")]
/// pub async fn add(ctx: TaskContext, a: i64, b: i64) -> Result<i64, TaskError> {
///     Ok(a + b)
/// }
///
/// # fn main() {
/// let signature: Signature<i64> = add::s(1, 2); // a call, not yet sent
/// assert_eq!(add::NAME, "math.add");
/// assert_eq!(add::SCHEMA, "add(i64, i64) -> i64");
/// let _ = Worker::new().task(add::ENTRY);
/// # let _ = signature;
/// # }
/// ```
///
/// # The function
///
/// - `async fn` runs on the worker's runtime; a plain `fn` runs on tokio's blocking pool.
/// - An optional **first** parameter of type `TaskContext` (by value) receives the running
///   task's context; it is not sent.
/// - Every other parameter is an argument: a plain name (`x` or `mut x`) with an owned type
///   that implements `Serialize + DeserializeOwned + Send + 'static`. No generics,
///   references, `impl Trait` or patterns.
/// - It returns `Result<T, E>` (any path ending in `Result`, such as `io::Result<T>`),
///   where `T` is serializable like an argument and `E: Into<TaskError>`.
/// - It must be an item of a module, not declared inside a function body: the generated
///   module reaches the function and the types it names through `super`. (In doc tests,
///   write `fn main` yourself so rustdoc does not wrap the example in one.)
///
/// # Options
///
/// | option | value | default |
/// |---|---|---|
/// | `name` | the registered name, a non-empty string | the function's name |
/// | `queue` | the default queue, a non-empty string | the server's default queue |
/// | `retries` | how many times a failed run is retried, an integer | no retries |
/// | `retry_timeout` | the first retry delay | the server's default |
/// | `timeout` | the time limit of one run | none |
///
/// Durations are an integer number of seconds (`30`) or a whole number with a unit, as a
/// string or a suffix: `"500ms"`, `"2s"`, `"5m"`, `"1h"`, `500ms`.
///
/// # Generated items
///
/// For `fn add(ctx: TaskContext, a: i64, b: i64) -> Result<i64, E>`, a module `add` with
/// the function's visibility:
///
/// | item | what it is |
/// |---|---|
/// | `add::NAME: &str` | the registered name |
/// | `add::SCHEMA: &str` | the argument schema as written: `"add(i64, i64) -> i64"` |
/// | `add::FINGERPRINT: u64` | 64-bit FNV-1a of `SCHEMA`, compared by workers |
/// | `add::Output` | the result type, `i64` |
/// | `add::ENTRY: TaskEntry` | the registration, for `Worker::task(add::ENTRY)` |
/// | `add::s(a, b) -> Signature<Output>` | the call as a signature, to configure and send |
/// | `add::send(a, b).await` | sends the call on the process-wide server |
/// | `add::result(uuid) -> Result<AsyncResult<Output>, Error>` | the handle of a call sent earlier, on the process-wide server, found in whatever queue it went to |
/// | `add::result_with(&server, uuid) -> AsyncResult<Output>` | the same on `server` |
///
/// The arguments travel as a positional MessagePack array, in order. Every task is also
/// registered through `inventory`, for `Worker::auto()`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(attr.into(), item.into()).into()
}
