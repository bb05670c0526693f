//! What an entry publishes at each tick: the messages of a signature or workflow,
//! recorded once, replayed at every tick with deterministic UUIDs.
//!
//! Recording sends the flow through the ordinary send path into an engine that only
//! writes down what it is asked to do (store states, register chords, publish). The
//! replay does the same against the real engines after renaming every UUID in it
//! (tasks, groups, chords) to [`tick_uuid`]`(entry, instant, n)`, `n` numbering the
//! UUIDs in the order the recording met them. So periodic sends are sent exactly like
//! direct ones, and two schedulers publishing the same tick would publish the very
//! same messages.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::context::TaskContext;
use crate::engine::{Broker, ChordOutcome, Delivery, GroupMember, Outgoing, ResultBackend};
use crate::error::{Error, ErrorKind, Result};
use crate::result::TaskState;
use crate::server::Server;
use crate::signature::{RawSignature, Signature, now_ms};
use crate::workflow::record::Record;
use crate::workflow::{Chain, Chord, Group};

/// The namespace of periodic tick UUIDs (a UUID v5 namespace).
const NAMESPACE: Uuid = Uuid::from_u128(0x6d61_6368_696e_4572_a5f0_7065_7269_6f64);

/// Header carrying the entry's name on every periodic message.
pub const HEADER_ENTRY: &str = "periodic.entry";
/// Header carrying the tick's scheduled instant (RFC 3339, UTC) on every periodic
/// message.
pub const HEADER_AT: &str = "periodic.at";

/// The UUID of the `index`-th UUID of entry `entry`'s tick at `scheduled_at_ms`
/// (milliseconds since the Unix epoch): a UUID v5 of the three. Every scheduler derives
/// the same one, so a tick's messages are the same whoever publishes them. For a single
/// signature, its task is index 0.
pub fn tick_uuid(entry: &str, scheduled_at_ms: u64, index: u32) -> Uuid {
    let name = format!("{entry}\n{scheduled_at_ms}\n{index}");
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

/// When the periodic tick that published the running task was scheduled (its
/// [`HEADER_AT`] header); `None` for a task no scheduler published.
///
/// ```
/// use machinery_core::periodic::scheduled_at;
/// use machinery_core::prelude::*;
///
/// #[task]
/// async fn hourly_report(ctx: TaskContext) -> Result<(), TaskError> {
///     let hour = scheduled_at(&ctx).ok_or_else(|| TaskError::fatal("not periodic"))?;
///     // … the report for the hour before `hour`, however late the task runs
///     # let _ = hour;
///     Ok(())
/// }
/// # fn main() {}
/// ```
pub fn scheduled_at(ctx: &TaskContext) -> Option<SystemTime> {
    let at: jiff::Timestamp = ctx.header(HEADER_AT)?.parse().ok()?;
    Some(SystemTime::from(at))
}

mod sealed {
    pub trait Sealed {}
}

/// What a periodic entry can publish: a [`Signature`], a [`Chain`], a [`Group`] or a
/// [`Chord`].
pub trait Schedulable: sealed::Sealed {
    /// Sends through `server`; returns the UUID of the handle a caller would wait on.
    #[doc(hidden)]
    fn send_for_template(self, server: &Server) -> impl Future<Output = Result<Uuid>>;
}

impl<T> sealed::Sealed for Signature<T> {}
impl<T: DeserializeOwned> Schedulable for Signature<T> {
    async fn send_for_template(self, server: &Server) -> Result<Uuid> {
        Ok(self.send_with(server).await?.uuid())
    }
}

impl<T> sealed::Sealed for Chain<T> {}
impl<T: DeserializeOwned> Schedulable for Chain<T> {
    async fn send_for_template(self, server: &Server) -> Result<Uuid> {
        Ok(self.send_with(server).await?.last().uuid())
    }
}

impl<T> sealed::Sealed for Group<T> {}
impl<T: DeserializeOwned> Schedulable for Group<T> {
    async fn send_for_template(self, server: &Server) -> Result<Uuid> {
        Ok(self.send_with(server).await?.uuid())
    }
}

impl<T> sealed::Sealed for Chord<T> {}
impl<T: DeserializeOwned> Schedulable for Chord<T> {
    async fn send_for_template(self, server: &Server) -> Result<Uuid> {
        Ok(self.send_with(server).await?.callback().uuid())
    }
}

/// One engine call of a send.
#[derive(Debug, Clone)]
enum Op {
    Store(Vec<TaskState>),
    InitChord {
        group: Uuid,
        count: u32,
        callback: Box<RawSignature>,
    },
    Publish {
        messages: Vec<RawSignature>,
        states: Vec<TaskState>,
    },
    StoreWorkflow {
        id: Uuid,
        record: Record,
    },
}

/// The recorded messages of one entry.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    ops: Vec<Op>,
    /// Recorded UUID → its number.
    index: HashMap<Uuid, u32>,
    /// The recorded UUID of the handle (see [`Schedulable`]).
    handle: Uuid,
    /// When the recording was made: ETAs are replayed relative to the tick.
    recorded_at: u64,
}

impl Template {
    /// Records what sending `flow` on `server` does.
    pub(crate) fn record<F: Schedulable>(server: &Server, flow: F) -> Result<Self> {
        let log = Arc::new(Recorder::default());
        let recording = Server::new(server.config().clone(), log.clone(), log.clone());
        let recorded_at = now_ms();
        let handle = poll_once(flow.send_for_template(&recording))?;
        let ops = std::mem::take(&mut *log.lock());
        let mut index = HashMap::new();
        let mut number = |u: Uuid| {
            let next = u32::try_from(index.len()).unwrap_or(u32::MAX);
            index.entry(u).or_insert(next);
        };
        for op in &ops {
            match op {
                Op::Store(states) => states.iter().for_each(|s| state_uuids(s, &mut number)),
                Op::InitChord {
                    group, callback, ..
                } => {
                    number(*group);
                    raw_uuids(callback, &mut number)?;
                }
                Op::Publish { messages, states } => {
                    for m in messages {
                        raw_uuids(m, &mut number)?;
                    }
                    states.iter().for_each(|s| state_uuids(s, &mut number));
                }
                // Numbered last (below), so the numbers of the other UUIDs are the
                // same as before workflows had ids.
                Op::StoreWorkflow { .. } => {}
            }
        }
        number(handle);
        for op in &ops {
            if let Op::StoreWorkflow { id, record } = op {
                number(*id);
                record.uuids().into_iter().for_each(&mut number);
            }
        }
        Ok(Template {
            ops,
            index,
            handle,
            recorded_at,
        })
    }

    /// The handle's UUID at the tick `at_ms` of `entry`.
    pub(crate) fn handle_uuid(&self, entry: &str, at_ms: u64) -> Uuid {
        self.rename(entry, at_ms, self.handle)
    }

    fn rename(&self, entry: &str, at_ms: u64, recorded: Uuid) -> Uuid {
        match self.index.get(&recorded) {
            Some(n) => tick_uuid(entry, at_ms, *n),
            // Every recorded UUID is numbered; this is unreachable but harmless.
            None => recorded,
        }
    }

    /// Publishes the tick `at_ms` of `entry` on `server`; returns the handle's UUID.
    pub(crate) async fn publish(&self, server: &Server, entry: &str, at_ms: u64) -> Result<Uuid> {
        let at = at_header(at_ms);
        let now = now_ms();
        let rename_state = |s: &TaskState| {
            let mut s = s.clone();
            s.uuid = self.rename(entry, at_ms, s.uuid);
            s.group_uuid = s.group_uuid.map(|g| self.rename(entry, at_ms, g));
            s.workflow = s.workflow.map(|w| self.rename(entry, at_ms, w));
            s.updated_at = now;
            s
        };
        let rename_raw = |raw: &RawSignature| {
            let mut raw = raw.clone();
            self.rename_raw(&mut raw, entry, at_ms, &at, now)?;
            Ok::<_, Error>(raw)
        };
        for op in &self.ops {
            match op {
                Op::StoreWorkflow { id, record } => {
                    let mut record = record.clone();
                    record.map_uuids(|u| self.rename(entry, at_ms, u));
                    let id = self.rename(entry, at_ms, *id);
                    server
                        .backend()
                        .store_workflow(id, &record.encode()?)
                        .await?;
                }
                Op::Store(states) => {
                    let states: Vec<TaskState> = states.iter().map(rename_state).collect();
                    server.backend().store(&states).await?;
                }
                Op::InitChord {
                    group,
                    count,
                    callback,
                } => {
                    let mut callback = rename_raw(callback)?;
                    let outgoing = server.outgoing(&mut callback)?;
                    let group = self.rename(entry, at_ms, *group);
                    server
                        .backend()
                        .init_chord(group, *count, &outgoing)
                        .await?;
                }
                Op::Publish { messages, states } => {
                    let mut outgoing = Vec::with_capacity(messages.len());
                    for m in messages {
                        let mut raw = rename_raw(m)?;
                        outgoing.push(server.outgoing(&mut raw)?);
                    }
                    let states: Vec<TaskState> = states.iter().map(rename_state).collect();
                    server
                        .broker()
                        .publish_with_states(outgoing, &states, server.backend().as_ref())
                        .await?;
                }
            }
        }
        Ok(self.handle_uuid(entry, at_ms))
    }

    fn rename_raw(
        &self,
        raw: &mut RawSignature,
        entry: &str,
        at_ms: u64,
        at: &str,
        now: u64,
    ) -> Result<()> {
        raw.uuid = self.rename(entry, at_ms, raw.uuid);
        raw.group_uuid = raw.group_uuid.map(|g| self.rename(entry, at_ms, g));
        raw.chord_of = raw.chord_of.map(|g| self.rename(entry, at_ms, g));
        raw.workflow = raw.workflow.map(|w| self.rename(entry, at_ms, w));
        // A delay set on the signature counts from the tick.
        raw.eta = raw
            .eta
            .map(|eta| at_ms.saturating_add(eta.saturating_sub(self.recorded_at)));
        raw.created_at = now;
        raw.headers
            .insert(HEADER_ENTRY.to_owned(), entry.to_owned());
        raw.headers.insert(HEADER_AT.to_owned(), at.to_owned());
        for child in raw
            .on_success
            .iter_mut()
            .chain(raw.on_error.iter_mut())
            .chain(raw.chord_callback.as_deref_mut())
        {
            self.rename_raw(child, entry, at_ms, at, now)?;
        }
        raw.map_chain(|step| self.rename_raw(step, entry, at_ms, at, now))
    }
}

fn at_header(at_ms: u64) -> String {
    i64::try_from(at_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| at_ms.to_string(), |t| t.to_string())
}

fn state_uuids(s: &TaskState, number: &mut impl FnMut(Uuid)) {
    number(s.uuid);
    if let Some(g) = s.group_uuid {
        number(g);
    }
}

fn raw_uuids(raw: &RawSignature, number: &mut impl FnMut(Uuid)) -> Result<()> {
    number(raw.uuid);
    if let Some(g) = raw.group_uuid {
        number(g);
    }
    if let Some(g) = raw.chord_of {
        number(g);
    }
    for child in raw
        .on_success
        .iter()
        .chain(raw.on_error.iter())
        .chain(raw.chord_callback.as_deref())
    {
        raw_uuids(child, number)?;
    }
    for step in raw.chained()? {
        raw_uuids(&step, number)?;
    }
    Ok(())
}

/// Runs a future that never waits (it only calls the [`Recorder`]) to completion.
fn poll_once<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(Error::engine_msg(
            "periodic",
            ErrorKind::Rejected,
            "recording a periodic entry's messages unexpectedly waited",
        )),
    }
}

/// A broker and result backend that write down what they are asked to do.
#[derive(Default)]
struct Recorder {
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Vec<Op>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unsupported<T>(what: &str) -> Result<T> {
        Err(Error::engine_msg(
            "periodic",
            ErrorKind::Rejected,
            format!("recording a periodic entry cannot {what}"),
        ))
    }
}

fn decode(outgoing: &Outgoing) -> Result<RawSignature> {
    RawSignature::decode(&outgoing.payload)
}

#[async_trait]
impl Broker for Recorder {
    fn engine(&self) -> &'static str {
        "periodic-recorder"
    }

    fn visibility_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }

    async fn publish(&self, messages: Vec<Outgoing>) -> Result<()> {
        let messages = messages.iter().map(decode).collect::<Result<_>>()?;
        self.lock().push(Op::Publish {
            messages,
            states: Vec::new(),
        });
        Ok(())
    }

    async fn publish_with_states(
        &self,
        messages: Vec<Outgoing>,
        states: &[TaskState],
        _backend: &dyn ResultBackend,
    ) -> Result<()> {
        let messages = messages.iter().map(decode).collect::<Result<_>>()?;
        self.lock().push(Op::Publish {
            messages,
            states: states.to_vec(),
        });
        Ok(())
    }

    async fn fetch(&self, _: &[String], _: usize, _: Duration) -> Result<Vec<Delivery>> {
        Self::unsupported("fetch")
    }

    async fn ack(&self, _: &Delivery) -> Result<()> {
        Self::unsupported("ack")
    }

    async fn extend(&self, _: &[Delivery]) -> Result<Vec<bool>> {
        Self::unsupported("extend leases")
    }

    async fn release(&self, _: &Delivery, _: Option<Duration>) -> Result<()> {
        Self::unsupported("release")
    }

    async fn dead_letter(&self, _: &Delivery, _: &crate::DeadLetterReason) -> Result<()> {
        Self::unsupported("dead-letter")
    }
}

#[async_trait]
impl ResultBackend for Recorder {
    fn engine(&self) -> &'static str {
        "periodic-recorder"
    }

    async fn store(&self, states: &[TaskState]) -> Result<()> {
        self.lock().push(Op::Store(states.to_vec()));
        Ok(())
    }

    async fn store_new(&self, states: &[TaskState]) -> Result<()> {
        self.store(states).await
    }

    async fn load(&self, _: &str, _: Uuid) -> Result<Option<TaskState>> {
        Self::unsupported("load states")
    }

    async fn store_workflow(&self, id: Uuid, record: &[u8]) -> Result<()> {
        let record = Record::decode(record)?;
        self.lock().push(Op::StoreWorkflow { id, record });
        Ok(())
    }

    async fn wait(&self, _: &str, _: Uuid, _: Option<Duration>) -> Result<TaskState> {
        Self::unsupported("wait for results")
    }

    async fn init_chord(&self, group: Uuid, count: u32, callback: &Outgoing) -> Result<()> {
        let callback = Box::new(decode(callback)?);
        self.lock().push(Op::InitChord {
            group,
            count,
            callback,
        });
        Ok(())
    }

    async fn chord_member_done(&self, _: &GroupMember, _: &TaskState) -> Result<Option<Outgoing>> {
        Self::unsupported("complete chords")
    }

    async fn chord_outcome(&self, _: &str, _: Uuid) -> Result<ChordOutcome> {
        Self::unsupported("read chords")
    }

    async fn chord_finished(&self, _: &str, _: Uuid) -> Result<()> {
        Self::unsupported("finish chords")
    }

    async fn forget(&self, _: &str, _: Uuid) -> Result<()> {
        Self::unsupported("forget states")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tasks::{add, sum};
    use crate::workflow::group;

    #[test]
    fn tick_uuids_are_deterministic_and_distinct() {
        let a = tick_uuid("report", 1_000, 0);
        assert_eq!(a, tick_uuid("report", 1_000, 0));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, tick_uuid("report", 2_000, 0));
        assert_ne!(a, tick_uuid("report", 1_000, 1));
        assert_ne!(a, tick_uuid("other", 1_000, 0));
        // The separator keeps ("a\n1", 0) apart from ("a", 1…).
        assert_ne!(tick_uuid("a\n1", 0, 0), tick_uuid("a", 10, 0));
    }

    #[test]
    fn a_signature_is_one_message_with_the_tick_uuid() {
        let server = Server::memory();
        let t = Template::record(&server, add::s(1, 2)).expect("records");
        assert_eq!(t.index.len(), 1);
        assert_eq!(t.handle_uuid("e", 5_000), tick_uuid("e", 5_000, 0));
        assert!(matches!(&t.ops[..], [Op::Publish { messages, states }]
            if messages.len() == 1 && states.len() == 1));
    }

    #[tokio::test]
    async fn two_recordings_replay_the_same_messages() {
        let server = Server::memory();
        let flow = || {
            group(vec![add::s(1, 1), add::s(2, 2)])
                .chord(sum::partial())
                .then(add::partial(10))
        };
        let a = Template::record(&server, flow()).expect("records");
        let b = Template::record(&server, flow()).expect("records");
        assert_eq!(a.handle_uuid("e", 1_000), b.handle_uuid("e", 1_000));
        assert_ne!(a.handle_uuid("e", 1_000), a.handle_uuid("e", 2_000));
        // chord group, two members, callback, the chained step, the workflow id.
        assert_eq!(a.index.len(), 6);

        let s1 = Server::memory();
        let s2 = Server::memory();
        a.publish(&s1, "e", 1_000).await.expect("publishes");
        b.publish(&s2, "e", 1_000).await.expect("publishes");
        let mut p1 = s1.pending_tasks("machinery_tasks").await.expect("pending");
        let mut p2 = s2.pending_tasks("machinery_tasks").await.expect("pending");
        assert_eq!(p1.len(), 2);
        for p in p1.iter_mut().chain(p2.iter_mut()) {
            p.created_at = 0;
        }
        assert_eq!(p1, p2);
        for m in &p1 {
            assert_eq!(m.headers.get(HEADER_ENTRY).map(String::as_str), Some("e"));
            assert_eq!(
                m.headers.get(HEADER_AT).map(String::as_str),
                Some("1970-01-01T00:00:01Z")
            );
            assert!(m.chord);
        }
    }

    #[tokio::test]
    async fn chained_steps_are_renamed_too() {
        let server = Server::memory();
        let flow = add::s(1, 1).then(add::partial(2)).then(add::partial(3));
        let t = Template::record(&server, flow).expect("records");
        // Three steps, then the workflow id.
        assert_eq!(t.index.len(), 4);
        let s1 = Server::memory();
        let handle = t.publish(&s1, "e", 1_000).await.expect("publishes");
        let pending = s1.pending_tasks("machinery_tasks").await.expect("pending");
        let [first] = &pending[..] else {
            panic!("one message: {pending:?}");
        };
        let steps = first.chained().expect("chain");
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].uuid, handle);
        let ticks: Vec<Uuid> = (0..3).map(|n| tick_uuid("e", 1_000, n)).collect();
        for step in std::iter::once(first).chain(&steps) {
            assert!(ticks.contains(&step.uuid), "{}", step.uuid);
            assert_eq!(
                step.headers.get(HEADER_ENTRY).map(String::as_str),
                Some("e")
            );
            let state = s1.result::<i64>(step.uuid, &step.name).state().await;
            assert!(matches!(state, Ok(crate::State::Pending)), "{state:?}");
            assert_eq!(step.workflow, Some(tick_uuid("e", 1_000, 3)));
        }
        // The tick's workflow record names the tick's UUIDs.
        let info = s1
            .inspect()
            .expect("inspector")
            .workflow(handle)
            .await
            .expect("loads")
            .expect("recorded");
        assert_eq!(info.id, tick_uuid("e", 1_000, 3));
        assert_eq!(info.steps.len(), 3);
    }
}
