//! The shape of a sent workflow, stored once per send under its workflow id
//! ([`RawSignature::workflow`]), so tools can show a chain or chord as its parts.
//!
//! The record is MessagePack behind a version byte, positional (arrays, not maps), with
//! each task name and queue written once: a task is its UUID and two indexes, so a
//! 10,000-member chord of one task name costs about 20 bytes a member.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec;
use crate::error::{Error, Result};
use crate::inspect::WorkflowKind;
use crate::server::Server;
use crate::signature::RawSignature;

use super::build::Link;

/// The first byte of every record.
const VERSION: u8 = 1;

/// A workflow's shape: its steps in order, names and queues listed once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) kind: WorkflowKind,
    names: Vec<String>,
    queues: Vec<String>,
    pub(crate) steps: Vec<RecordStep>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum RecordStep {
    /// A task.
    Task(RecordTask),
    /// A group, or a chord when it has a callback. Each member lists its tasks in
    /// order (one for a plain member; every task of a member that is a chain).
    Group {
        group: Uuid,
        members: Vec<Vec<RecordTask>>,
        callback: Option<RecordTask>,
    },
}

/// A task: its UUID and the indexes of its name and queue in the record's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordTask(pub(crate) Uuid, u32, u32);

impl Record {
    fn new(kind: WorkflowKind) -> Self {
        Record {
            kind,
            names: Vec::new(),
            queues: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// The record of a chain (or a chord sent alone, `kind` says) made of `links`.
    pub(crate) fn of_links(kind: WorkflowKind, links: &[Link]) -> Self {
        let mut record = Record::new(kind);
        for link in links {
            match link {
                Link::Task(raw) => {
                    let t = record.task(raw);
                    record.steps.push(RecordStep::Task(t));
                }
                Link::Chord(c) => {
                    let members = c.members.iter().map(|m| record.flat(m)).collect();
                    let callback = Some(record.task(&c.callback));
                    record.steps.push(RecordStep::Group {
                        group: c.group,
                        members,
                        callback,
                    });
                }
                Link::Broken(_) => {}
            }
        }
        record
    }

    /// The record of group `group` of `members`.
    pub(crate) fn of_group(group: Uuid, members: &[Vec<Link>]) -> Self {
        let mut record = Record::new(WorkflowKind::Group);
        let members = members.iter().map(|m| record.flat(m)).collect();
        record.steps.push(RecordStep::Group {
            group,
            members,
            callback: None,
        });
        record
    }

    /// Every task of `links` in order (a nested chord: its members' tasks, then its
    /// callback).
    fn flat(&mut self, links: &[Link]) -> Vec<RecordTask> {
        let mut out = Vec::new();
        for link in links {
            match link {
                Link::Task(raw) => out.push(self.task(raw)),
                Link::Chord(c) => {
                    for m in &c.members {
                        let mut tasks = self.flat(m);
                        out.append(&mut tasks);
                    }
                    out.push(self.task(&c.callback));
                }
                Link::Broken(_) => {}
            }
        }
        out
    }

    fn task(&mut self, raw: &RawSignature) -> RecordTask {
        let name = index_of(&mut self.names, &raw.name);
        let queue = index_of(&mut self.queues, &raw.routing_key);
        RecordTask(raw.uuid, name, queue)
    }

    /// The name and queue of `task`; empty when the record does not list them.
    pub(crate) fn name_queue(&self, task: &RecordTask) -> (&str, &str) {
        let name = self.names.get(task.1 as usize).map_or("", String::as_str);
        let queue = self.queues.get(task.2 as usize).map_or("", String::as_str);
        (name, queue)
    }

    /// Renames every UUID in the record (tasks and groups) with `f`.
    pub(crate) fn map_uuids(&mut self, mut f: impl FnMut(Uuid) -> Uuid) {
        for step in &mut self.steps {
            match step {
                RecordStep::Task(t) => t.0 = f(t.0),
                RecordStep::Group {
                    group,
                    members,
                    callback,
                } => {
                    *group = f(*group);
                    for t in members.iter_mut().flatten().chain(callback.as_mut()) {
                        t.0 = f(t.0);
                    }
                }
            }
        }
    }

    /// Every UUID in the record, in order (tasks and groups).
    pub(crate) fn uuids(&self) -> Vec<Uuid> {
        let mut out = Vec::new();
        let mut copy = self.clone();
        copy.map_uuids(|u| {
            out.push(u);
            u
        });
        out
    }

    /// Encodes the record: the version byte, then positional MessagePack.
    ///
    /// # Errors
    /// [`Error::Encode`].
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![VERSION];
        out.extend(codec::to_vec(self, "workflow record")?);
        Ok(out)
    }

    /// Decodes a record written by [`encode`](Record::encode).
    ///
    /// # Errors
    /// [`Error::Decode`] for bytes of another version or that do not decode.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => codec::from_slice(rest, "workflow record"),
            Some((v, _)) => Err(Error::Decode {
                what: "workflow record",
                reason: format!("version {v} is not known (this build reads version {VERSION})"),
            }),
            None => Err(Error::Decode {
                what: "workflow record",
                reason: "the record is empty".into(),
            }),
        }
    }
}

/// Marks every part of `links` (each task, each chord member and callback, nested
/// flows included) as part of workflow `workflow`, and routes it, so the record names
/// the queues the parts are sent to.
pub(crate) fn stamp(server: &Server, links: &mut [Link], workflow: Uuid) {
    for link in links {
        match link {
            Link::Task(raw) => {
                raw.workflow = Some(workflow);
                server.route(raw);
            }
            Link::Chord(c) => {
                for m in &mut c.members {
                    stamp(server, m, workflow);
                }
                c.callback.workflow = Some(workflow);
                server.route(&mut c.callback);
            }
            Link::Broken(_) => {}
        }
    }
}

fn index_of(list: &mut Vec<String>, value: &str) -> u32 {
    // Workflows use a handful of names and queues: a linear search is the fastest here.
    let i = match list.iter().position(|v| v == value) {
        Some(i) => i,
        None => {
            list.push(value.to_owned());
            list.len() - 1
        }
    };
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_stays_small() {
        let group = Uuid::now_v7();
        let members: Vec<Vec<RecordTask>> = Vec::new();
        let mut record = Record::new(WorkflowKind::Chord);
        let raw = RawSignature::new("add", Vec::new());
        let first = record.task(&raw);
        record.steps.push(RecordStep::Task(first));
        let mut members = members;
        for _ in 0..10_000 {
            let m = RawSignature::new("add", Vec::new());
            members.push(vec![record.task(&m)]);
        }
        let callback = Some(record.task(&RawSignature::new("sum", Vec::new())));
        record.steps.push(RecordStep::Group {
            group,
            members,
            callback,
        });
        let bytes = record.encode().unwrap();
        assert!(bytes.len() < 10_000 * 24, "{} bytes", bytes.len());
        assert_eq!(Record::decode(&bytes).unwrap(), record);
        assert_eq!(record.uuids().len(), 10_003);
        assert!(Record::decode(&[9, 1]).is_err());
    }
}
