//! Turning a workflow into messages: nesting steps into success callbacks, marking
//! group members, collecting chords to register before anything is published.

use std::collections::HashMap;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::result::{State, TaskState};
use crate::server::Server;
use crate::signature::{RawSignature, Signature};

/// One step of a workflow.
#[doc(hidden)]
#[derive(Debug)]
pub enum Link {
    /// A task.
    Task(Box<RawSignature>),
    /// A chord: members in parallel, then the callback.
    Chord(ChordLink),
    /// A step whose arguments could not be encoded.
    Broken(String),
}

/// The parts of a chord.
#[doc(hidden)]
#[derive(Debug)]
pub struct ChordLink {
    pub(crate) group: Uuid,
    pub(crate) members: Vec<Vec<Link>>,
    pub(crate) callback: Box<RawSignature>,
}

impl Link {
    pub(crate) fn task<T>(sig: Signature<T>) -> Link {
        match sig.into_raw() {
            Ok(raw) => Link::Task(Box::new(raw)),
            Err(e) => Link::Broken(e.to_string()),
        }
    }
}

/// A workflow ready to send.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Messages to publish now.
    pub(crate) entries: Vec<RawSignature>,
    /// Chords to register before publishing: group, member count, callback.
    pub(crate) chords: Vec<(Uuid, u32, RawSignature)>,
}

/// Where a flow's result will be: the UUID, name and routing key (empty: the default
/// queue) of its last task.
pub(crate) fn end_of(links: &[Link]) -> Option<(Uuid, String, String)> {
    let raw = match links.last()? {
        Link::Task(raw) => raw,
        Link::Chord(c) => &c.callback,
        Link::Broken(_) => return None,
    };
    Some((raw.uuid, raw.name.clone(), raw.routing_key.clone()))
}

/// Marks the last task of a flow as member `index` of `count` in `group`.
pub(crate) fn mark_member(links: &mut [Link], group: Uuid, index: u32, count: u32, chord: bool) {
    let raw = match links.last_mut() {
        Some(Link::Task(raw)) => raw,
        Some(Link::Chord(c)) => &mut c.callback,
        _ => return,
    };
    raw.group_uuid = Some(group);
    raw.group_index = index;
    raw.group_task_count = count;
    raw.chord = chord;
}

/// Builds the messages of a flow; returns its entry messages. `plan` collects the
/// chords to register.
pub(crate) fn build(links: Vec<Link>, plan: &mut Plan) -> Result<Vec<RawSignature>> {
    let mut next: Vec<RawSignature> = Vec::new();
    for (i, link) in links.into_iter().enumerate().rev() {
        next = match link {
            Link::Broken(reason) => {
                return Err(Error::Encode {
                    what: "workflow step arguments",
                    reason,
                });
            }
            Link::Task(mut raw) => {
                raw.on_success.append(&mut next);
                vec![*raw]
            }
            Link::Chord(c) => {
                let mut callback = *c.callback;
                callback.on_success.append(&mut next);
                callback.chord_of = Some(c.group);
                let count = u32::try_from(c.members.len()).map_err(|_| Error::Encode {
                    what: "chord",
                    reason: "more than u32::MAX members".into(),
                })?;
                plan.chords.push((c.group, count, callback));
                let mut entries = Vec::new();
                for member in c.members {
                    entries.extend(build(member, plan)?);
                }
                if i > 0 {
                    // Members of a chord that follows a step do not take its result.
                    for e in &mut entries {
                        e.immutable = true;
                    }
                }
                entries
            }
        };
    }
    Ok(next)
}

/// Tells each chord member in `raw` (nested ones too) the queue its chord is kept in.
fn set_chord_queues(raw: &mut RawSignature, chord_queues: &HashMap<Uuid, String>) {
    if raw.chord
        && let Some(queue) = raw.group_uuid.and_then(|g| chord_queues.get(&g))
    {
        raw.chord_queue.clone_from(queue);
    }
    for cb in &mut raw.on_success {
        set_chord_queues(cb, chord_queues);
    }
}

/// PENDING states for everything nested in `raw`'s success callbacks.
fn collect_nested(raw: &RawSignature, out: &mut Vec<TaskState>) {
    for cb in &raw.on_success {
        out.push(pending(cb));
        collect_nested(cb, out);
    }
}

fn pending(raw: &RawSignature) -> TaskState {
    let mut s = TaskState::new(
        raw.uuid,
        raw.name.clone(),
        raw.routing_key.clone(),
        State::Pending,
    );
    s.group_uuid = raw.group_uuid;
    s
}

/// Stores PENDING states, registers the plan's chords, then publishes the entries in
/// batches of `batch` messages.
pub(crate) async fn send(server: &Server, mut plan: Plan, batch: usize) -> Result<()> {
    // Every task gets its queue now, and every chord member the queue its chord is kept
    // in (the callback's), before any state is written.
    let mut chord_queues = HashMap::new();
    for (group, _, callback) in &mut plan.chords {
        server.route(callback);
        chord_queues.insert(*group, callback.routing_key.clone());
    }
    for raw in plan
        .entries
        .iter_mut()
        .chain(plan.chords.iter_mut().map(|(_, _, callback)| callback))
    {
        server.route(raw);
        set_chord_queues(raw, &chord_queues);
    }
    // Everything that runs later gets a PENDING state now, so handles can wait on it.
    let mut later = Vec::new();
    for e in &plan.entries {
        collect_nested(e, &mut later);
    }
    for (_, _, callback) in &plan.chords {
        later.push(pending(callback));
        collect_nested(callback, &mut later);
    }
    if !later.is_empty() {
        server.backend().store(&later).await?;
    }
    for (group, count, mut callback) in plan.chords {
        let outgoing = server.outgoing(&mut callback)?;
        server.backend().init_chord(group, count, &outgoing).await?;
    }
    let mut entries = plan.entries;
    while !entries.is_empty() {
        let rest = entries.split_off(batch.min(entries.len()));
        server.send_batch(entries).await?;
        entries = rest;
    }
    Ok(())
}
