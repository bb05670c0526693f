//! Reading a task's progress from its handle: [`AsyncResult::progress`] and
//! [`AsyncResult::progress_stream`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{BoxStream, Stream, StreamExt};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::AsyncResult;
use crate::codec;
use crate::engine::ResultBackend;
use crate::error::{Error, Result};
use crate::registry::BoxFuture;

impl<T> AsyncResult<T> {
    /// The queue of the task, looked up when the handle does not know it; `None` when no
    /// state is stored for the task.
    async fn known_queue(&self) -> Result<Option<String>> {
        if let Some(q) = self.queue.get() {
            return Ok(Some(q.clone()));
        }
        Ok(self
            .backend
            .load("", self.uuid)
            .await?
            .map(|s| self.found(s).queue))
    }

    /// The task's last reported progress
    /// ([`TaskContext::set_progress`](crate::TaskContext::set_progress)), decoded as `P`;
    /// `None` when it reported none (yet), the task is unknown, or the value expired (it
    /// is kept for the results TTL after its last write, so about as long as the final
    /// state).
    ///
    /// `P` need not be the type the task reported, only one that decodes from it
    /// (`serde_json::Value`-like types take anything).
    ///
    /// # Errors
    /// [`Error::Decode`] when the value does not decode as `P`;
    /// [`Error::Unsupported`] when the result backend keeps no progress; engine errors.
    pub async fn progress<P: DeserializeOwned>(&self) -> Result<Option<P>> {
        let Some(queue) = self.known_queue().await? else {
            return Ok(None);
        };
        match self.backend.progress(&queue, self.uuid).await? {
            Some(bytes) => codec::from_slice(&bytes, "task progress").map(Some),
            None => Ok(None),
        }
    }

    /// The task's progress as it changes: the current value first (when there is one),
    /// then each new value as the worker writes it (at most one per
    /// `progress_interval`; a reader that falls behind gets the newest), ending once the
    /// task reaches a final state, after its last value. A value equal to the one
    /// yielded before it is not yielded again.
    ///
    /// Nothing polls: updates come from the result backend's watch (Redis pub/sub), and
    /// the end from the same wake-up [`get`](AsyncResult::get) uses. A task that is
    /// already final, or finishes at any point (even between the first read and the
    /// subscription), ends the stream; one that is never run keeps it open, as `get`
    /// waits. A watch that drops (a lost connection) is subscribed again and the value
    /// read again.
    ///
    /// The stream owns what it needs (`'static`), so it can outlive the handle, and is
    /// `Unpin`, so `StreamExt::next` takes it as it is.
    ///
    /// # Errors
    /// Items are [`Error::Decode`] for a value that does not decode as `P` (the stream
    /// goes on). The stream yields one error and ends on
    /// [`Error::ResultMissing`] (no state is stored for the task, or it was deleted),
    /// [`Error::Unsupported`] (the backend keeps no progress) and engine errors that
    /// outlast the backend's own retries.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use machinery_core::prelude::*;
    ///
    /// #[task]
    /// async fn count_to(ctx: TaskContext, n: u32) -> Result<u32, TaskError> {
    ///     for i in 1..=n {
    ///         ctx.set_progress(i);
    ///     }
    ///     Ok(n)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), machinery_core::Error> {
    /// let server = Server::memory();
    /// let worker = Worker::new().task(count_to::ENTRY).server(&server).spawn()?;
    /// let handle = count_to::s(1000).send_with(&server).await?;
    /// let mut updates = handle.progress_stream::<u32>();
    /// let mut last = 0;
    /// while let Some(value) = updates.next().await {
    ///     last = value?;
    /// }
    /// assert_eq!(last, 1000); // the last value always lands before the end
    /// assert_eq!(handle.progress::<u32>().await?, Some(1000));
    /// worker.shutdown().await
    /// # }
    /// ```
    pub fn progress_stream<P: DeserializeOwned + Send + 'static>(
        &self,
    ) -> impl Stream<Item = Result<P>> + Send + Unpin + 'static {
        let follow = Follow {
            backend: self.backend.clone(),
            uuid: self.uuid,
            queue: self.queue_hint().to_owned(),
            updates: None,
            done: None,
            last: None,
            ended: false,
            drops: 0,
        };
        Box::pin(futures_util::stream::unfold(
            follow,
            |mut follow| async move {
                let item = follow.next().await?;
                Some((
                    item.and_then(|bytes| codec::from_slice(&bytes, "task progress")),
                    follow,
                ))
            },
        ))
    }
}

/// What a progress stream holds between two items.
struct Follow {
    backend: Arc<dyn ResultBackend>,
    uuid: Uuid,
    /// Empty until known (a handle made from a UUID alone).
    queue: String,
    /// The backend's watch; `None` before the first subscription and after it dropped.
    updates: Option<BoxStream<'static, Vec<u8>>>,
    /// Resolves when the task's state is final.
    done: Option<BoxFuture<Result<()>>>,
    /// The last value yielded.
    last: Option<Vec<u8>>,
    ended: bool,
    /// Watches that dropped in a row, for the backoff before subscribing again.
    drops: u32,
}

/// What ended a wait in [`Follow::next`].
enum Event {
    Update(Option<Vec<u8>>),
    Done(Result<()>),
}

impl Follow {
    /// `value` when it differs from the last value yielded (and it becomes that).
    fn fresh(&mut self, value: Vec<u8>) -> Option<Vec<u8>> {
        if self.last.as_ref() == Some(&value) {
            return None;
        }
        self.last = Some(value.clone());
        Some(value)
    }

    /// Subscribes to the task's updates, then reads its stored value: a value written
    /// in between is seen either way.
    async fn subscribe(&mut self) -> Result<Option<Vec<u8>>> {
        if self.queue.is_empty() {
            match self.backend.load("", self.uuid).await? {
                Some(s) => self.queue = s.queue,
                None => return Err(Error::ResultMissing(self.uuid)),
            }
        }
        self.updates = Some(self.backend.watch_progress(&self.queue, self.uuid).await?);
        self.backend.progress(&self.queue, self.uuid).await
    }

    /// The next value to yield, or an error to yield; `None` once the stream ended.
    async fn next(&mut self) -> Option<Result<Vec<u8>>> {
        loop {
            if self.ended {
                return None;
            }
            let Some(updates) = self.updates.as_mut() else {
                if self.drops > 0 {
                    let backoff = Duration::from_millis(50)
                        .saturating_mul(1 << self.drops.min(5))
                        .min(Duration::from_secs(1));
                    tokio::time::sleep(backoff).await;
                }
                match self.subscribe().await {
                    Ok(value) => {
                        if let Some(v) = value.and_then(|v| self.fresh(v)) {
                            return Some(Ok(v));
                        }
                    }
                    Err(e) => {
                        self.ended = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            let done = self.done.get_or_insert_with(|| {
                let (backend, queue, uuid) = (self.backend.clone(), self.queue.clone(), self.uuid);
                Box::pin(async move { backend.wait(&queue, uuid, None).await.map(drop) })
            });
            // Updates first: those written before the final state come out before the
            // end.
            let event = tokio::select! {
                biased;
                u = updates.next() => Event::Update(u),
                d = done => Event::Done(d),
            };
            match event {
                Event::Update(Some(v)) => {
                    self.drops = 0;
                    if let Some(v) = self.fresh(v) {
                        return Some(Ok(v));
                    }
                }
                Event::Update(None) => {
                    self.updates = None;
                    self.drops = self.drops.saturating_add(1);
                }
                Event::Done(result) => {
                    self.ended = true;
                    self.done = None;
                    self.updates = None;
                    if let Err(e) = result {
                        return Some(Err(e));
                    }
                    // The worker writes the last value before the final state: read it,
                    // whatever the watch had delivered.
                    return match self.backend.progress(&self.queue, self.uuid).await {
                        Ok(value) => value.and_then(|v| self.fresh(v)).map(Ok),
                        Err(e) => Some(Err(e)),
                    };
                }
            }
        }
    }
}
