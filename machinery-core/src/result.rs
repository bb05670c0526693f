//! Task states and typed handles to results.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec;
use crate::engine::{ResultBackend, RevokeOutcome};
use crate::error::{Error, Result};
use crate::server::Server;

pub(crate) mod id;
mod progress;

/// Until when a revocation made now is kept (ms since the Unix epoch), for results TTL
/// `ttl` (`None`: forever).
pub(crate) fn revoke_until(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|t| {
        crate::signature::now_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
    })
}

/// The life cycle of a task, as Machinery defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Sent, waiting in the broker.
    Pending,
    /// Taken by a worker.
    Received,
    /// Running.
    Started,
    /// Failed and scheduled to run again.
    Retry,
    /// Finished with a result.
    Success,
    /// Failed for good.
    Failure,
    /// Cancelled before it finished: revoked ([`Server::revoke`](crate::Server::revoke),
    /// [`AsyncResult::cancel`]), expired before it started, or a later step of a
    /// workflow whose earlier step was revoked. It did not run, or its run was stopped;
    /// the state's [`error`](TaskState::error) says why (`revoked`, `expired`, …).
    /// Celery's `REVOKED`.
    Revoked,
}

impl State {
    /// SUCCESS, FAILURE or REVOKED: nothing more will happen to the task.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Success | State::Failure | State::Revoked)
    }

    /// The state's name as Machinery spells it (`PENDING`, `SUCCESS`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Received => "RECEIVED",
            State::Started => "STARTED",
            State::Retry => "RETRY",
            State::Success => "SUCCESS",
            State::Failure => "FAILURE",
            State::Revoked => "REVOKED",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored state of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskState {
    /// The task's UUID.
    pub uuid: Uuid,
    /// The registered task name.
    pub name: String,
    /// The queue the task is sent to (its routing key). Engines may keep the state next
    /// to that queue's messages (the Redis engine does, so that a task's state and its
    /// queue share one Redis Cluster slot).
    #[serde(default)]
    pub queue: String,
    /// Where the task is in its life cycle.
    pub state: State,
    /// The MessagePack-encoded result, on SUCCESS.
    #[serde(
        default,
        with = "codec::bytes::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Vec<u8>>,
    /// The error text, on FAILURE and RETRY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Retries done so far.
    #[serde(default)]
    pub retried: u32,
    /// The group the task belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_uuid: Option<Uuid>,
    /// The workflow the task is part of ([`RawSignature::workflow`](crate::RawSignature::workflow)),
    /// written with every state of the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Uuid>,
    /// When this state was written, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub updated_at: u64,
    /// When the task's message was created (sent), in milliseconds since the Unix
    /// epoch; 0 when unknown.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub sent_at: u64,
    /// When the run that wrote this state started (STARTED and the final states), in
    /// milliseconds since the Unix epoch; 0 when it has not started.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub started_at: u64,
    /// The [`WorkerInfo::id`](crate::inspect::WorkerInfo::id) of the worker that wrote
    /// this state (STARTED and the final states).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The delivery of the message that ran (1 for the first), for states written by a
    /// worker; 0 otherwise.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub delivery: u32,
    /// The task's arguments as sent (a positional MessagePack array), kept with every
    /// state when `result_extended` is on (the default), so `task show` can print them
    /// after the message is gone.
    #[serde(
        default,
        with = "codec::bytes::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub args: Option<Vec<u8>>,
    /// The message's headers, with `result_extended` (as [`args`](TaskState::args)).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The producer's argument schema, with `result_extended` (as
    /// [`args`](TaskState::args)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl TaskState {
    /// A state record for task `uuid`, sent to `queue`, at `state`, timestamped now.
    pub fn new(
        uuid: Uuid,
        name: impl Into<String>,
        queue: impl Into<String>,
        state: State,
    ) -> Self {
        TaskState {
            uuid,
            name: name.into(),
            queue: queue.into(),
            state,
            result: None,
            error: None,
            retried: 0,
            group_uuid: None,
            workflow: None,
            updated_at: crate::signature::now_ms(),
            sent_at: 0,
            started_at: 0,
            worker: None,
            delivery: 0,
            args: None,
            headers: std::collections::BTreeMap::new(),
            schema: None,
        }
    }

    /// Encodes the record (a MessagePack map).
    pub fn encode(&self) -> Result<Vec<u8>> {
        codec::to_vec_named(self, "task state")
    }

    /// Decodes a record written by [`TaskState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        codec::from_slice(bytes, "task state")
    }

    /// Why a FAILURE happened, read from its error text (see [`FailureReason`]): the
    /// worker's own reasons as values, a task's error as [`FailureReason::Task`]. `None`
    /// unless the state is FAILURE.
    ///
    /// [`FailureReason`]: crate::FailureReason
    /// [`FailureReason::Task`]: crate::FailureReason::Task
    pub fn failure_reason(&self) -> Option<crate::FailureReason> {
        (self.state == State::Failure)
            .then(|| crate::FailureReason::parse(self.error.as_deref().unwrap_or_default()))
    }

    /// Decodes the SUCCESS result as `T`, or turns FAILURE into [`Error::TaskFailed`].
    pub fn value<T: DeserializeOwned>(&self) -> Result<T> {
        match self.state {
            State::Success => {
                let bytes = self.result.as_deref().unwrap_or(&[0xc0]);
                codec::from_slice(bytes, "task result")
            }
            State::Failure => Err(Error::TaskFailed {
                uuid: self.uuid,
                name: self.name.clone(),
                message: self.error.clone().unwrap_or_default(),
            }),
            State::Revoked => Err(Error::Revoked {
                uuid: self.uuid,
                name: self.name.clone(),
                reason: self.error.clone().unwrap_or_default(),
            }),
            other => Err(Error::Decode {
                what: "task result",
                reason: format!("task {} is {other}, not finished", self.uuid),
            }),
        }
    }
}

/// A typed handle to the result of a sent task.
///
/// The sender gets one from `send`; any process can make one later from the task's
/// UUID: [`Server::result`] or the task's generated `result(uuid)` find the task in
/// whatever queue it was sent to, and [`id`](AsyncResult::id) /
/// [`restore`](AsyncResult::restore) carry a handle across processes as text.
///
/// ```standalone_crate
/// use machinery_core::prelude::*;
///
/// #[task]
/// async fn double(x: i64) -> Result<i64, TaskError> {
///     Ok(x * 2)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), machinery_core::Error> {
/// let server = Server::memory();
/// let worker = Worker::auto().server(&server).queue("math").spawn()?;
/// let result = double::s(21).queue("math").send_with(&server).await?;
/// assert_eq!(result.get().await?, 42);
///
/// // Later, knowing only the UUID: the handle finds the task's queue.
/// let again = double::result_with(&server, result.uuid());
/// assert_eq!(again.get().await?, 42);
/// assert_eq!(again.queue(), "math");
///
/// // Or saved as text and restored, in this process or another.
/// let id = result.id();
/// let restored = AsyncResult::<i64>::restore(&server, &id)?;
/// assert_eq!(restored.get().await?, 42);
/// worker.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct AsyncResult<T> {
    uuid: Uuid,
    name: String,
    /// The queue the task was sent to; unset while not known (a handle made from a UUID
    /// alone, until a read finds the task).
    queue: OnceLock<String>,
    backend: Arc<dyn ResultBackend>,
    /// How long [`cancel`](AsyncResult::cancel) keeps the revocation: the results TTL of
    /// the server the handle came from (`None`: forever).
    results_ttl: Option<Duration>,
    _result: PhantomData<fn() -> T>,
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        AsyncResult {
            uuid: self.uuid,
            name: self.name.clone(),
            queue: self.queue.clone(),
            backend: self.backend.clone(),
            results_ttl: self.results_ttl,
            _result: PhantomData,
        }
    }
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("uuid", &self.uuid)
            .field("name", &self.name)
            .field("queue", &self.queue.get())
            .finish()
    }
}

impl<T> AsyncResult<T> {
    /// A handle to the result of task `uuid`, sent to `queue`, stored in `backend`.
    ///
    /// An empty `queue` means it is not known: the backend then looks the task up in
    /// every queue it knows (see [`ResultBackend::load`]), and the handle keeps the
    /// queue it found.
    pub fn new(
        uuid: Uuid,
        name: impl Into<String>,
        queue: impl Into<String>,
        backend: Arc<dyn ResultBackend>,
    ) -> Self {
        let queue: String = queue.into();
        AsyncResult {
            uuid,
            name: name.into(),
            queue: if queue.is_empty() {
                OnceLock::new()
            } else {
                OnceLock::from(queue)
            },
            backend,
            results_ttl: crate::Config::default().results_ttl(),
            _result: PhantomData,
        }
    }

    /// A handle to task `uuid` on `server` (its backend and results TTL).
    pub(crate) fn on(
        server: &Server,
        uuid: Uuid,
        name: impl Into<String>,
        queue: impl Into<String>,
    ) -> Self {
        let mut handle = AsyncResult::new(uuid, name, queue, server.backend().clone());
        handle.results_ttl = server.config().results_ttl();
        handle
    }

    /// Revokes the task (Celery's `revoke`, asynq's `CancelProcessing`): a task that has
    /// not started never runs and is REVOKED at once; a running one is told through
    /// [`TaskContext::cancelled`](crate::TaskContext::cancelled) and aborted after
    /// `revoke_grace`, then recorded REVOKED; the later steps of its workflow are
    /// REVOKED, and a chord it belongs to fails. The revocation is kept for the results
    /// TTL, so workers started later skip the task too. A handle made with
    /// [`AsyncResult::new`] keeps it for the default TTL (1 hour).
    ///
    /// Returns what the revoke found: [`Revoked`](RevokeOutcome::Revoked) (it had not
    /// started), [`Cancelling`](RevokeOutcome::Cancelling) (a worker runs it; it ends
    /// REVOKED unless it finishes first), [`Finished`](RevokeOutcome::Finished) (too
    /// late; nothing changed) or [`Unknown`](RevokeOutcome::Unknown) (no state stored;
    /// a message with this UUID is skipped if one comes).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the result backend cannot revoke; engine errors.
    pub async fn cancel(&self) -> Result<RevokeOutcome> {
        self.revoke_uuid(self.queue_hint(), self.uuid).await
    }

    /// Revokes task `uuid` (of the same workflow) in `queue` (empty: looked up) through
    /// this handle's backend, kept as long as [`cancel`](AsyncResult::cancel) keeps it.
    pub(crate) async fn revoke_uuid(&self, queue: &str, uuid: Uuid) -> Result<RevokeOutcome> {
        self.backend
            .revoke(queue, uuid, "revoked", revoke_until(self.results_ttl))
            .await
    }

    /// The queue to read the state from: the known one, or `""` to look it up.
    fn queue_hint(&self) -> &str {
        self.queue.get().map_or("", String::as_str)
    }

    /// Keeps the queue of a state read for a handle that did not know it.
    fn found(&self, state: TaskState) -> TaskState {
        if self.queue.get().is_none() && !state.queue.is_empty() {
            let _ = self.queue.set(state.queue.clone());
        }
        state
    }

    /// The handle as text: its UUID, task name and queue, for
    /// [`restore`](AsyncResult::restore) in this process or another. The text is
    /// URL-safe (`task.v1.` then base64url) and holds no secret beyond the task's name
    /// and queue.
    pub fn id(&self) -> String {
        id::encode("task", &self.task_ref())
    }

    /// The parts [`id`](AsyncResult::id) saves.
    pub(crate) fn task_ref(&self) -> id::TaskRef {
        (self.uuid, self.name.clone(), self.queue_hint().to_owned())
    }

    /// A handle from the parts [`id`](AsyncResult::id) saved.
    pub(crate) fn from_ref(server: &Server, (uuid, name, queue): id::TaskRef) -> Self {
        AsyncResult::on(server, uuid, name, queue)
    }

    /// The handle saved as [`id`](AsyncResult::id), reading from `server`'s result
    /// backend. `T` must be the task's result type, as for the original handle.
    ///
    /// # Errors
    /// [`Error::Decode`] when `id` is not the id of a task handle.
    pub fn restore(server: &Server, id: &str) -> Result<Self> {
        Ok(AsyncResult::from_ref(server, id::decode("task", id)?))
    }
}

impl<T: DeserializeOwned> AsyncResult<T> {
    /// The task's UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The task's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue the task was sent to.
    ///
    /// Empty while not known: for a handle made from a UUID alone
    /// ([`Server::result`], the task's generated `result(uuid)`) until a read
    /// ([`state`](AsyncResult::state), [`get`](AsyncResult::get), …) found the task.
    /// Clones made before that read do not learn it.
    pub fn queue(&self) -> &str {
        self.queue_hint()
    }

    /// The task's current state.
    ///
    /// # Errors
    /// [`Error::ResultMissing`] when nothing is stored (unknown UUID, or expired);
    /// engine errors.
    pub async fn state(&self) -> Result<State> {
        Ok(self.task_state().await?.state)
    }

    /// The full stored record.
    ///
    /// # Errors
    /// [`Error::ResultMissing`] when nothing is stored (unknown UUID, or expired);
    /// engine errors.
    pub async fn task_state(&self) -> Result<TaskState> {
        self.backend
            .load(self.queue_hint(), self.uuid)
            .await?
            .map(|s| self.found(s))
            .ok_or(Error::ResultMissing(self.uuid))
    }

    /// Waits for the task to finish and returns its result.
    ///
    /// Every accepted task reaches SUCCESS or FAILURE, so this returns once a worker ran
    /// the task (or gave up on it: dead-lettered, its workflow stopped). It waits **as
    /// long as the task waits**: while nothing consumes the task's queue, or the task is
    /// delayed, or retried later, so does this call. Use
    /// [`get_timeout`](AsyncResult::get_timeout) to bound the wait.
    ///
    /// # Errors
    /// [`Error::TaskFailed`] when the task failed; [`Error::ResultMissing`] when nothing
    /// is stored (unknown UUID, or expired); engine and decoding errors.
    pub async fn get(&self) -> Result<T> {
        self.found(
            self.backend
                .wait(self.queue_hint(), self.uuid, None)
                .await?,
        )
        .value()
    }

    /// Like [`get`](AsyncResult::get), giving up after `timeout` with [`Error::Timeout`].
    ///
    /// # Errors
    /// As [`get`](AsyncResult::get), plus [`Error::Timeout`].
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T> {
        match self
            .backend
            .wait(self.queue_hint(), self.uuid, Some(timeout))
            .await
        {
            Ok(state) => self.found(state).value(),
            Err(Error::Timeout { after, .. }) => {
                // Name the task, its queue and what it was doing when time ran out.
                let last_state = self
                    .backend
                    .load(self.queue_hint(), self.uuid)
                    .await
                    .ok()
                    .flatten()
                    .map(|s| self.found(s).state);
                Err(Error::Timeout {
                    after,
                    uuid: Some(self.uuid),
                    queue: self.queue.get().cloned(),
                    last_state,
                })
            }
            Err(e) => Err(e),
        }
    }
}
