//! The result backend: where task states and results are kept.

use std::any::Any;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::result::TaskState;

/// Where task states and results are kept, each for the results TTL after its last
/// write (forever when the TTL is 0).
///
/// The stored state is the source of truth; [`wait`](ResultBackend::wait) only makes
/// seeing it fast.
#[async_trait]
pub trait ResultBackend: Send + Sync + 'static {
    /// The engine's name, for logs.
    fn engine(&self) -> &'static str;

    /// Stores states, each replacing the task's previous one and restarting its TTL.
    async fn store(&self, states: &[TaskState]) -> Result<()>;

    /// The stored state of a task, `None` when unknown or expired.
    async fn load(&self, uuid: Uuid) -> Result<Option<TaskState>>;

    /// Waits until the task is SUCCESS or FAILURE and returns that state. Never polls
    /// with sleeps: a waiter is woken when the state is written, and a task that
    /// finished before the call is seen at once.
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) when `timeout` passes first;
    /// [`Error::ResultMissing`](crate::Error::ResultMissing) when nothing is stored for
    /// the task (unknown UUID or expired).
    async fn wait(&self, uuid: Uuid, timeout: Option<Duration>) -> Result<TaskState>;

    /// Deletes a task's state.
    async fn forget(&self, uuid: Uuid) -> Result<()>;

    /// The engine object, for brokers that recognise a result backend of their own.
    fn as_any(&self) -> &dyn Any;
}
