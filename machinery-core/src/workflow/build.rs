//! Turning a workflow into messages: encoding the later steps of a chain into its first
//! step's flat [`RawSignature::chain`], marking group members, collecting chords to
//! register and PENDING states to store before anything is published.

use uuid::Uuid;

use crate::codec;
use crate::error::{Error, Result};
use crate::result::{State, TaskState};
use crate::server::Server;
use crate::signature::{RawSignature, Signature, push_step};

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
    /// PENDING states of everything that runs later (every task but the entries).
    pub(crate) later: Vec<TaskState>,
    /// The workflow's id and its encoded record, stored once before anything else.
    pub(crate) workflow: Option<(Uuid, Vec<u8>)>,
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

/// Builds the messages of a flow; returns its entry messages (routed to their
/// queues). `plan` collects the chords to register and the PENDING states of every
/// task that runs later, except the returned entries themselves.
///
/// The steps after the first travel in the first step's [`RawSignature::chain`], flat.
/// A chord step ends a chain: the steps after it travel in the chord's callback.
pub(crate) fn build(
    server: &Server,
    links: Vec<Link>,
    plan: &mut Plan,
) -> Result<Vec<RawSignature>> {
    // The flow's first step: the messages published now.
    let mut entries: Option<Vec<RawSignature>> = None;
    // Who carries `tail`: a chord callback (index in `plan.chords`) or the first step.
    let mut owner: Option<usize> = None;
    let mut tail = Vec::new();
    let extended = server.config().result_extended;
    for (i, link) in links.into_iter().enumerate() {
        let (step, callback) = match link {
            Link::Broken(reason) => {
                return Err(Error::Encode {
                    what: "workflow step arguments",
                    reason,
                });
            }
            Link::Task(mut raw) => {
                // Workflow parts are not deduplicated (see `UniqueLock`): a part held
                // back would leave its workflow waiting.
                raw.unique = None;
                server.route(&mut raw);
                (vec![*raw], None)
            }
            Link::Chord(c) if c.members.is_empty() => {
                // As in Celery, the callback of an empty chord runs at once with no
                // results; it is a plain step, so it takes no result from the step
                // before it either.
                let mut callback = *c.callback;
                callback.unique = None;
                if !callback.immutable {
                    callback.args = codec::append_arg(&callback.args, &[0x90])?;
                    callback.immutable = true;
                }
                server.route(&mut callback);
                (vec![callback], None)
            }
            Link::Chord(c) => {
                let mut callback = *c.callback;
                callback.unique = None;
                server.route(&mut callback);
                callback.chord_of = Some(c.group);
                let count = u32::try_from(c.members.len()).map_err(|_| Error::Encode {
                    what: "chord",
                    reason: "more than u32::MAX members".into(),
                })?;
                let mut members = Vec::new();
                for mut member in c.members {
                    set_chord_queues(&mut member, c.group, &callback.routing_key);
                    members.extend(build(server, member, plan)?);
                }
                if i > 0 {
                    // Members of a chord that follows a step do not take its result.
                    for e in &mut members {
                        e.immutable = true;
                    }
                }
                (members, Some((c.group, count, callback)))
            }
        };
        if entries.is_none() {
            entries = Some(step);
        } else {
            for e in &step {
                plan.later.push(pending(e, extended));
                collect_nested(e, extended, &mut plan.later);
            }
            push_step(&mut tail, &step)?;
        }
        if let Some((group, count, callback)) = callback {
            attach(std::mem::take(&mut tail), owner, &mut entries, plan)?;
            plan.later.push(pending(&callback, extended));
            collect_nested(&callback, extended, &mut plan.later);
            owner = Some(plan.chords.len());
            plan.chords.push((group, count, callback));
        }
    }
    attach(tail, owner, &mut entries, plan)?;
    // The entries' success callbacks get their PENDING states when the entries are
    // sent (`Server::send_batch`).
    Ok(entries.unwrap_or_default())
}

/// Gives the chain bytes `tail` to whoever runs before them: the chord callback
/// `owner`, or the flow's first step.
fn attach(
    tail: Vec<u8>,
    owner: Option<usize>,
    entries: &mut Option<Vec<RawSignature>>,
    plan: &mut Plan,
) -> Result<()> {
    if tail.is_empty() {
        return Ok(());
    }
    let carrier = match owner {
        Some(k) => plan.chords.get_mut(k).map(|(_, _, callback)| callback),
        None => match entries.as_deref_mut() {
            Some([first]) => Some(first),
            _ => None,
        },
    };
    let Some(carrier) = carrier else {
        return Err(Error::Encode {
            what: "chain",
            reason: "steps follow a step that is not a single task".into(),
        });
    };
    carrier.chain = tail;
    Ok(())
}

/// Tells the chord member that ends flow `member` (its last task, or the callback of
/// its last chord) the queue its chord `group` is kept in, before the flow is built
/// (and its later steps encoded into a chain).
fn set_chord_queues(member: &mut [Link], group: Uuid, queue: &str) {
    let raw = match member.last_mut() {
        Some(Link::Task(raw)) => raw,
        Some(Link::Chord(c)) => &mut c.callback,
        _ => return,
    };
    if raw.chord && raw.group_uuid == Some(group) {
        queue.clone_into(&mut raw.chord_queue);
    }
}

/// PENDING states for everything nested in `raw`'s success callbacks (the steps of
/// its chain are recorded by [`build`] as it encodes them); `extended` keeps their
/// arguments, headers and schema too (`result_extended`).
pub(crate) fn collect_nested(raw: &RawSignature, extended: bool, out: &mut Vec<TaskState>) {
    let mut stack: Vec<&RawSignature> = raw.on_success.iter().collect();
    while let Some(cb) = stack.pop() {
        out.push(pending(cb, extended));
        stack.extend(cb.on_success.iter());
    }
}

/// The PENDING state of a task sent later (routed already): the arguments it is sent
/// with, before a previous step's result is appended to them.
fn pending(raw: &RawSignature, extended: bool) -> TaskState {
    let mut s = raw.task_state(State::Pending, "");
    if extended {
        raw.extend_state(&mut s);
    }
    s
}

/// Stores the workflow's record and PENDING states, registers the plan's chords, then
/// publishes the entries in batches of `batch` messages.
pub(crate) async fn send(server: &Server, plan: Plan, batch: usize) -> Result<()> {
    // The record first: whoever finds a part of the workflow can show the whole.
    if let Some((workflow, record)) = &plan.workflow {
        server.backend().store_workflow(*workflow, record).await?;
    }
    // Everything that runs later gets a PENDING state now, so handles can wait on it.
    if !plan.later.is_empty() {
        server.backend().store(&plan.later).await?;
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
