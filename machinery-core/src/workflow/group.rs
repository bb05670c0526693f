use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::engine::RevokeOutcome;

use crate::error::{Error, Result};
use crate::result::id::{self, TaskRef, TaskRefs};
use crate::result::{AsyncResult, State};
use crate::server::Server;

use crate::inspect::WorkflowKind;

use super::build::{self, ChordLink, Link, Plan};
use super::record::{self, Record};
use super::step::{Flow, Step};

/// Members that run in parallel; `T` is each member's result.
///
/// ```
/// use machinery_core::prelude::*;
///
/// #[task]
/// async fn square(x: u64) -> Result<u64, TaskError> {
///     Ok(x * x)
/// }
///
/// # fn main() {
/// let g = group((1..=3).map(square::s)).send_concurrency(2);
/// assert_eq!(g.len(), 3);
/// # }
/// ```
pub struct Group<T> {
    members: Vec<Vec<Link>>,
    batch: usize,
    _out: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Group<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("members", &self.members)
            .field("batch", &self.batch)
            .finish()
    }
}

/// A group of signatures or chains with the same result type.
pub fn group<F: Flow>(members: impl IntoIterator<Item = F>) -> Group<F::Output> {
    Group {
        members: members.into_iter().map(Flow::into_links).collect(),
        batch: usize::MAX,
        _out: PhantomData,
    }
}

impl<T> Group<T> {
    /// Publishes at most `n` members per engine call (default: all in one batch).
    pub fn send_concurrency(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// How many members the group has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Makes a chord: `callback` runs once every member succeeded, with the members'
    /// results (`Vec<T>`, in member order) as its last argument. The callback of an
    /// empty chord runs at once with an empty `Vec` (as in Celery).
    pub fn chord<S: Step<Vec<T>>>(self, callback: S) -> Chord<S::Output> {
        let group = Uuid::now_v7();
        let mut callback_links = callback.into_links();
        let callback = match callback_links.pop() {
            Some(Link::Task(raw)) if callback_links.is_empty() => Ok(raw),
            Some(Link::Broken(e)) => Err(e),
            _ => Err("a chord callback must be a single task".to_owned()),
        };
        Chord {
            group,
            members: self.members,
            callback,
            batch: self.batch,
            _out: PhantomData,
        }
    }

    /// Sends the group on the process-wide server.
    ///
    /// # Errors
    /// [`Error::NoDefaultServer`], encoding and engine errors.
    pub async fn send(self) -> Result<GroupResult<T>> {
        self.send_with(&Server::global()?).await
    }

    /// Sends the group on `server`, members in one pipelined batch where the engine
    /// allows (or batches of [`send_concurrency`](Group::send_concurrency)).
    ///
    /// # Errors
    /// Encoding and engine errors.
    pub async fn send_with(self, server: &Server) -> Result<GroupResult<T>> {
        let group = Uuid::now_v7();
        let count = member_count(self.members.len())?;
        let workflow = Uuid::now_v7();
        let mut members = self.members;
        for m in &mut members {
            record::stamp(server, m, workflow);
        }
        let mut plan = Plan {
            workflow: Some((workflow, Record::of_group(group, &members).encode()?)),
            ..Plan::default()
        };
        let mut ends = Vec::with_capacity(members.len());
        for (i, mut member) in members.into_iter().enumerate() {
            build::mark_member(&mut member, group, i as u32, count, false);
            ends.push(end(&member)?);
            let entries = build::build(server, member, &mut plan)?;
            plan.entries.extend(entries);
        }
        build::send(server, plan, self.batch).await?;
        Ok(GroupResult {
            group,
            members: ends
                .into_iter()
                .map(|(uuid, name, queue)| {
                    AsyncResult::on(server, uuid, name, server.queue_or(queue))
                })
                .collect(),
        })
    }
}

fn member_count(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Encode {
        what: "group",
        reason: "more than u32::MAX members".into(),
    })
}

fn end(links: &[Link]) -> Result<(Uuid, String, String)> {
    build::end_of(links).ok_or_else(|| Error::Encode {
        what: "group member",
        reason: "a member has no steps or arguments that do not encode".into(),
    })
}

/// The handle of a sent group.
pub struct GroupResult<T> {
    group: Uuid,
    members: Vec<AsyncResult<T>>,
}

impl<T> fmt::Debug for GroupResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupResult")
            .field("group", &self.group)
            .field("members", &self.members)
            .finish()
    }
}

impl<T> GroupResult<T> {
    /// The handle as text (`group.v1.` then base64url): the group's UUID and each
    /// member's UUID, task name and queue, for [`restore`](GroupResult::restore) in this
    /// process or another. Names and queues shared by members are saved once.
    pub fn id(&self) -> String {
        let mut refs = TaskRefs::default();
        for m in &self.members {
            let (uuid, name, queue) = m.task_ref();
            refs.push(uuid, &name, &queue);
        }
        id::encode("group", &(self.group, refs))
    }

    /// The handle saved as [`id`](GroupResult::id), reading from `server`'s result
    /// backend. `T` must be the members' result type, as for the original handle.
    ///
    /// # Errors
    /// [`Error::Decode`] when `id` is not the id of a group handle.
    pub fn restore(server: &Server, id: &str) -> Result<Self> {
        let (group, refs): (Uuid, TaskRefs) = id::decode("group", id)?;
        Ok(GroupResult {
            group,
            members: refs
                .into_refs()?
                .into_iter()
                .map(|r| AsyncResult::from_ref(server, r))
                .collect(),
        })
    }
}

impl<T: DeserializeOwned> GroupResult<T> {
    /// The group's UUID.
    pub fn uuid(&self) -> Uuid {
        self.group
    }

    /// The members' handles, in member order.
    pub fn members(&self) -> &[AsyncResult<T>] {
        &self.members
    }

    /// Each member's state, in member order.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn states(&self) -> Result<Vec<State>> {
        let mut out = Vec::with_capacity(self.members.len());
        for m in &self.members {
            out.push(m.state().await?);
        }
        Ok(out)
    }

    /// Waits for every member; their results in member order. Fails with the first
    /// failed member's error.
    ///
    /// # Errors
    /// [`Error::TaskFailed`], [`Error::ResultMissing`], engine errors.
    pub async fn get(&self) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(self.members.len());
        for m in &self.members {
            out.push(m.get().await?);
        }
        Ok(out)
    }

    /// Like [`get`](GroupResult::get), giving up after `timeout` in all.
    ///
    /// # Errors
    /// As [`get`](GroupResult::get), plus [`Error::Timeout`], which names the first
    /// member still unfinished, its queue and its last state.
    pub async fn get_timeout(&self, timeout: Duration) -> Result<Vec<T>> {
        let started = tokio::time::Instant::now();
        let mut out = Vec::with_capacity(self.members.len());
        for m in &self.members {
            let left = timeout.saturating_sub(started.elapsed());
            match m.get_timeout(left).await {
                Ok(v) => out.push(v),
                // The whole wait, not the member's share of it.
                Err(Error::Timeout {
                    uuid,
                    queue,
                    last_state,
                    ..
                }) => {
                    return Err(Error::Timeout {
                        after: timeout,
                        uuid,
                        queue,
                        last_state,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Revokes every member (see [`AsyncResult::cancel`]); returns what each revoke
    /// found, in member order.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) when the result backend cannot
    /// revoke; engine errors (the members before the failing one are revoked).
    pub async fn cancel(&self) -> Result<Vec<RevokeOutcome>> {
        let mut out = Vec::with_capacity(self.members.len());
        for m in &self.members {
            out.push(m.cancel().await?);
        }
        Ok(out)
    }
}

/// A group whose callback receives every member's result. `U` is the callback's result.
pub struct Chord<U> {
    group: Uuid,
    members: Vec<Vec<Link>>,
    callback: std::result::Result<Box<crate::signature::RawSignature>, String>,
    batch: usize,
    _out: PhantomData<fn() -> U>,
}

impl<U> fmt::Debug for Chord<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chord")
            .field("group", &self.group)
            .field("members", &self.members)
            .field("callback", &self.callback)
            .finish()
    }
}

impl<U> Chord<U> {
    fn into_link(self) -> Result<Link> {
        let callback = self.callback.map_err(|reason| Error::Encode {
            what: "chord callback",
            reason,
        })?;
        let count = member_count(self.members.len())?;
        let mut members = self.members;
        for (i, m) in members.iter_mut().enumerate() {
            build::mark_member(m, self.group, i as u32, count, true);
        }
        Ok(Link::Chord(ChordLink {
            group: self.group,
            members,
            callback,
        }))
    }

    /// Runs `next` after the callback, with the callback's result.
    pub fn then<S: Step<U>>(self, next: S) -> super::Chain<S::Output> {
        super::Chain::from_links(self.into_links_or_broken()).then(next)
    }

    fn into_links_or_broken(self) -> Vec<Link> {
        match self.into_link() {
            Ok(l) => vec![l],
            Err(e) => vec![Link::Broken(e.to_string())],
        }
    }

    /// Sends the chord on the process-wide server.
    ///
    /// # Errors
    /// [`Error::NoDefaultServer`], encoding and engine errors.
    pub async fn send(self) -> Result<ChordResult<U>> {
        self.send_with(&Server::global()?).await
    }

    /// Sends the chord on `server`: registers it, then publishes the members.
    ///
    /// # Errors
    /// Encoding and engine errors.
    pub async fn send_with(self, server: &Server) -> Result<ChordResult<U>> {
        let group = self.group;
        let batch = self.batch;
        let link = self.into_link()?;
        let mut links = vec![link];
        let workflow = Uuid::now_v7();
        record::stamp(server, &mut links, workflow);
        let record = Record::of_links(WorkflowKind::Chord, &links).encode()?;
        let (uuid, name, queue) = end(&links)?;
        let mut plan = Plan {
            workflow: Some((workflow, record)),
            ..Plan::default()
        };
        plan.entries = build::build(server, links, &mut plan)?;
        build::send(server, plan, batch).await?;
        Ok(ChordResult {
            group,
            callback: AsyncResult::on(server, uuid, name, server.queue_or(queue)),
        })
    }
}

impl<U> Flow for Chord<U> {
    type Output = U;
    fn into_links(self) -> Vec<Link> {
        self.into_links_or_broken()
    }
}

impl<In, U> Step<In> for Chord<U> {
    type Output = U;
    fn into_links(self) -> Vec<Link> {
        self.into_links_or_broken()
    }
}

/// The handle of a sent chord: waits for the callback.
pub struct ChordResult<U> {
    group: Uuid,
    callback: AsyncResult<U>,
}

impl<U> fmt::Debug for ChordResult<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChordResult")
            .field("group", &self.group)
            .field("callback", &self.callback)
            .finish()
    }
}

impl<U> ChordResult<U> {
    /// The handle as text (`chord.v1.` then base64url): the chord's group UUID and the
    /// callback's UUID, task name and queue, for [`restore`](ChordResult::restore) in
    /// this process or another.
    pub fn id(&self) -> String {
        id::encode("chord", &(self.group, self.callback.task_ref()))
    }

    /// The handle saved as [`id`](ChordResult::id), reading from `server`'s result
    /// backend. `U` must be the callback's result type, as for the original handle.
    ///
    /// # Errors
    /// [`Error::Decode`] when `id` is not the id of a chord handle.
    pub fn restore(server: &Server, id: &str) -> Result<Self> {
        let (group, callback): (Uuid, TaskRef) = id::decode("chord", id)?;
        Ok(ChordResult {
            group,
            callback: AsyncResult::from_ref(server, callback),
        })
    }
}

impl<U: DeserializeOwned> ChordResult<U> {
    /// The chord's group UUID.
    pub fn uuid(&self) -> Uuid {
        self.group
    }

    /// The callback's handle.
    pub fn callback(&self) -> &AsyncResult<U> {
        &self.callback
    }

    /// The callback's state; FAILURE when a member failed.
    ///
    /// # Errors
    /// Engine errors.
    pub async fn state(&self) -> Result<State> {
        self.callback.state().await
    }

    /// Waits for the callback's result. When a member failed, fails with an error
    /// naming the member and its error.
    ///
    /// # Errors
    /// [`Error::TaskFailed`], [`Error::ResultMissing`], engine errors.
    pub async fn get(&self) -> Result<U> {
        self.callback.get().await
    }

    /// Like [`get`](ChordResult::get), giving up after `timeout`.
    ///
    /// # Errors
    /// As [`get`](ChordResult::get), plus [`Error::Timeout`].
    pub async fn get_timeout(&self, timeout: Duration) -> Result<U> {
        self.callback.get_timeout(timeout).await
    }

    /// Revokes the callback (see [`AsyncResult::cancel`]): it never runs and ends
    /// REVOKED, and so does its workflow. The handle does not know the members, which
    /// run on: revoke them with their group's handle (or by UUID with
    /// [`Server::revoke`]); a revoked member fails the chord.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) when the result backend cannot
    /// revoke; engine errors.
    pub async fn cancel(&self) -> Result<RevokeOutcome> {
        self.callback.cancel().await
    }
}
