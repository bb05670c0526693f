//! A sent workflow as its parts and their states: [`Inspector::workflow`](super::Inspector::workflow).

use std::collections::HashMap;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;
use crate::result::State;
use crate::server::Server;
use crate::workflow::record::{Record, RecordStep, RecordTask};

/// How many members of a group [`WorkflowGroup::members`] lists; the others are
/// counted only.
pub const WORKFLOW_MEMBERS_SHOWN: usize = 50;

/// How many states are read at once when a workflow is loaded.
const CONCURRENCY: usize = 64;

/// What kind of workflow was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowKind {
    /// Steps one after another (a chord among them ends the chain).
    Chain,
    /// Members in parallel.
    Group,
    /// Members in parallel, then a callback with their results.
    Chord,
}

impl WorkflowKind {
    /// The kind's name (`chain`, `group`, `chord`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowKind::Chain => "chain",
            WorkflowKind::Group => "group",
            WorkflowKind::Chord => "chord",
        }
    }
}

/// A sent workflow, its parts in order with their current states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkflowInfo {
    /// The workflow id ([`RawSignature::workflow`](crate::RawSignature::workflow)).
    pub id: Uuid,
    /// Chain, group or chord.
    pub kind: WorkflowKind,
    /// The steps, in the order they run.
    pub steps: Vec<WorkflowStep>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkflowStep {
    /// A task.
    Task(WorkflowTask),
    /// A group or chord.
    Group(WorkflowGroup),
}

/// A task of a workflow and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkflowTask {
    /// The task's UUID.
    pub uuid: Uuid,
    /// The task name.
    pub name: String,
    /// The queue it is sent to.
    pub queue: String,
    /// Its stored state; `None` when none is stored (expired, forgotten).
    pub state: Option<State>,
}

/// A group or chord step: its members counted per state, the first few listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkflowGroup {
    /// The group's UUID.
    pub group: Uuid,
    /// How many members it has.
    pub count: usize,
    /// How many members are in each state, in life-cycle order (PENDING first, no
    /// state last); states no member is in are left out. A member that is a chain is
    /// in the state of its first task that has not succeeded (SUCCESS when all have).
    pub states: Vec<StateCount>,
    /// The first [`WORKFLOW_MEMBERS_SHOWN`] members, in member order.
    pub members: Vec<WorkflowMember>,
    /// The chord's callback; `None` for a group.
    pub callback: Option<WorkflowTask>,
}

/// How many members of a group are in `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCount {
    /// The state; `None` for members without a stored state.
    pub state: Option<State>,
    /// How many members are in it.
    pub count: usize,
}

/// One member of a group: its tasks in order (one, or every task of a chain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkflowMember {
    /// The member's position in the group.
    pub index: usize,
    /// Its state, as [`WorkflowGroup::states`] counts it.
    pub state: Option<State>,
    /// Its tasks, in order.
    pub tasks: Vec<WorkflowTask>,
}

/// The order states are counted in.
const ORDER: [State; 7] = [
    State::Pending,
    State::Received,
    State::Started,
    State::Retry,
    State::Success,
    State::Failure,
    State::Revoked,
];

/// The workflow `id` recorded as `record`, with the states of its tasks read from
/// `server`'s result backend, [`CONCURRENCY`] at a time.
pub(crate) async fn load(server: &Server, id: Uuid, record: &Record) -> Result<WorkflowInfo> {
    // Owned, so the reads are futures of no borrow (the dashboard's handlers need
    // them `Send` for any lifetime).
    let mut wanted: Vec<(Uuid, String)> = Vec::new();
    let mut want = |t: &RecordTask| wanted.push((t.0, record.name_queue(t).1.to_owned()));
    for step in &record.steps {
        match step {
            RecordStep::Task(t) => want(t),
            RecordStep::Group {
                members, callback, ..
            } => {
                for t in members.iter().flatten().chain(callback.as_ref()) {
                    want(t);
                }
            }
        }
    }
    let backend = server.backend().clone();
    let found: Vec<Option<(Uuid, State)>> = stream::iter(wanted)
        .map(move |(uuid, queue)| {
            let backend = backend.clone();
            async move {
                let state = backend.load(&queue, uuid).await?;
                Ok::<_, crate::Error>(state.map(|s| (uuid, s.state)))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let states: HashMap<Uuid, State> = found.into_iter().flatten().collect();
    let task = |t: &RecordTask| {
        let (name, queue) = record.name_queue(t);
        WorkflowTask {
            uuid: t.0,
            name: name.to_owned(),
            queue: queue.to_owned(),
            state: states.get(&t.0).copied(),
        }
    };
    let steps = record
        .steps
        .iter()
        .map(|step| match step {
            RecordStep::Task(t) => WorkflowStep::Task(task(t)),
            RecordStep::Group {
                group,
                members,
                callback,
            } => {
                let mut counts: HashMap<Option<State>, usize> = HashMap::new();
                let mut shown = Vec::new();
                for (index, tasks) in members.iter().enumerate() {
                    let state = member_state(tasks.iter().map(|t| states.get(&t.0).copied()));
                    *counts.entry(state).or_default() += 1;
                    if index < WORKFLOW_MEMBERS_SHOWN {
                        shown.push(WorkflowMember {
                            index,
                            state,
                            tasks: tasks.iter().map(task).collect(),
                        });
                    }
                }
                let states = ORDER
                    .iter()
                    .map(|s| Some(*s))
                    .chain([None])
                    .filter_map(|state| {
                        counts.get(&state).map(|&count| StateCount { state, count })
                    })
                    .collect();
                WorkflowStep::Group(WorkflowGroup {
                    group: *group,
                    count: members.len(),
                    states,
                    members: shown,
                    callback: callback.as_ref().map(task),
                })
            }
        })
        .collect();
    Ok(WorkflowInfo {
        id,
        kind: record.kind,
        steps,
    })
}

/// A member's state: that of its first task that has not succeeded (SUCCESS when all
/// have; `None` when that task has no state).
fn member_state(mut tasks: impl Iterator<Item = Option<State>>) -> Option<State> {
    let mut last = None;
    for state in tasks.by_ref() {
        if state != Some(State::Success) {
            return state;
        }
        last = state;
    }
    last
}
