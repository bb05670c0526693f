use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::engine::RevokeOutcome;

use crate::error::{Error, Result};
use crate::result::id::{self, TaskRef};
use crate::result::{AsyncResult, State};
use crate::server::Server;
use crate::signature::Signature;

use crate::inspect::WorkflowKind;

use super::build::{self, Link, Plan};
use super::record::{self, Record};
use super::step::{Flow, Step};

/// Steps run one after another, each receiving the previous result as its last
/// argument. `T` is the last step's result. Build with [`Signature::then`].
pub struct Chain<T> {
    pub(crate) links: Vec<Link>,
    _out: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Chain<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain").field("links", &self.links).finish()
    }
}

impl<T> From<Signature<T>> for Chain<T> {
    fn from(sig: Signature<T>) -> Self {
        Chain::from_links(vec![Link::task(sig)])
    }
}

impl<T> Chain<T> {
    pub(crate) fn from_links(links: Vec<Link>) -> Self {
        Chain {
            links,
            _out: PhantomData,
        }
    }

    /// Appends a step that receives this chain's result.
    pub fn then<S: Step<T>>(mut self, next: S) -> Chain<S::Output> {
        self.links.extend(next.into_links());
        Chain::from_links(self.links)
    }

    /// Sends the chain on the process-wide server.
    ///
    /// # Errors
    /// [`Error::NoDefaultServer`], encoding and engine errors.
    pub async fn send(self) -> Result<ChainResult<T>> {
        self.send_with(&Server::global()?).await
    }

    /// Sends the chain on `server`: the first step is published, the others follow as
    /// each step succeeds. Every step gets a PENDING state now.
    ///
    /// # Errors
    /// Encoding and engine errors.
    pub async fn send_with(mut self, server: &Server) -> Result<ChainResult<T>> {
        let workflow = Uuid::now_v7();
        record::stamp(server, &mut self.links, workflow);
        let kind = match self.links.as_slice() {
            [Link::Chord(_)] => WorkflowKind::Chord,
            _ => WorkflowKind::Chain,
        };
        let record = Record::of_links(kind, &self.links).encode()?;
        let mut uuids = Vec::new();
        collect_uuids(&self.links, &mut uuids);
        let (last, name, queue) = build::end_of(&self.links).ok_or_else(|| Error::Encode {
            what: "chain",
            reason: "a chain needs at least one step".into(),
        })?;
        let mut plan = Plan {
            workflow: Some((workflow, record)),
            ..Plan::default()
        };
        plan.entries = build::build(server, self.links, &mut plan)?;
        build::send(server, plan, usize::MAX).await?;
        Ok(ChainResult {
            last: AsyncResult::on(server, last, name, server.queue_or(queue)),
            steps: uuids,
            workflow: Some(workflow),
        })
    }
}

fn collect_uuids(links: &[Link], out: &mut Vec<Uuid>) {
    for link in links {
        match link {
            Link::Task(raw) => out.push(raw.uuid),
            Link::Chord(c) => {
                for m in &c.members {
                    collect_uuids(m, out);
                }
                out.push(c.callback.uuid);
            }
            Link::Broken(_) => {}
        }
    }
}

impl<T> Flow for Chain<T> {
    type Output = T;
    fn into_links(self) -> Vec<Link> {
        self.links
    }
}

/// The handle of a sent chain: waits for the last step.
pub struct ChainResult<T> {
    last: AsyncResult<T>,
    steps: Vec<Uuid>,
    workflow: Option<Uuid>,
}

impl<T> fmt::Debug for ChainResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainResult")
            .field("last", &self.last)
            .field("steps", &self.steps)
            .field("workflow", &self.workflow)
            .finish()
    }
}

impl<T> ChainResult<T> {
    /// The handle as text (`chain.v1.` then base64url): its steps' UUIDs and the last
    /// step's UUID, task name and queue, for [`restore`](ChainResult::restore) in this
    /// process or another.
    pub fn id(&self) -> String {
        id::encode("chain", &(self.last.task_ref(), &self.steps))
    }

    /// The handle saved as [`id`](ChainResult::id), reading from `server`'s result
    /// backend. `T` must be the chain's result type, as for the original handle.
    ///
    /// # Errors
    /// [`Error::Decode`] when `id` is not the id of a chain handle.
    pub fn restore(server: &Server, id: &str) -> Result<Self> {
        let (last, steps): (TaskRef, Vec<Uuid>) = id::decode("chain", id)?;
        Ok(ChainResult {
            last: AsyncResult::from_ref(server, last),
            steps,
            workflow: None,
        })
    }
}

impl<T: DeserializeOwned> ChainResult<T> {
    /// The UUIDs of every step, in order (chord members before their callback).
    pub fn steps(&self) -> &[Uuid] {
        &self.steps
    }

    /// The chain's workflow id ([`RawSignature::workflow`](crate::RawSignature::workflow)),
    /// under which [`Inspector::workflow`](crate::inspect::Inspector::workflow) shows
    /// it; `None` for a handle restored from its [`id`](ChainResult::id) (any step's
    /// UUID finds the workflow too).
    pub fn workflow(&self) -> Option<Uuid> {
        self.workflow
    }

    /// The handle of the last step.
    pub fn last(&self) -> &AsyncResult<T> {
        &self.last
    }

    /// The state of the last step. A failed step makes every later step FAILURE.
    ///
    /// # Errors
    /// Engine errors; [`Error::ResultMissing`] once expired.
    pub async fn state(&self) -> Result<State> {
        self.last.state().await
    }

    /// Waits for the last step's result. When a step fails, this fails with an error
    /// naming that step and its error.
    ///
    /// # Errors
    /// [`Error::TaskFailed`], [`Error::ResultMissing`], engine errors.
    pub async fn get(&self) -> Result<T> {
        self.last.get().await
    }

    /// Like [`get`](ChainResult::get), giving up after `timeout`.
    ///
    /// # Errors
    /// As [`get`](ChainResult::get), plus [`Error::Timeout`].
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.last.get_timeout(timeout).await
    }

    /// Revokes every step (see [`AsyncResult::cancel`]), first to last: the step that
    /// runs is cancelled, the later ones never run and are REVOKED. Returns what each
    /// revoke found, in [`steps`](ChainResult::steps) order.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) when the result backend cannot
    /// revoke; engine errors (the steps before the failing one are revoked).
    pub async fn cancel(&self) -> Result<Vec<RevokeOutcome>> {
        let mut out = Vec::with_capacity(self.steps.len());
        for uuid in &self.steps {
            let queue = if *uuid == self.last.uuid() {
                self.last.queue()
            } else {
                ""
            };
            out.push(self.last.revoke_uuid(queue, *uuid).await?);
        }
        Ok(out)
    }
}
