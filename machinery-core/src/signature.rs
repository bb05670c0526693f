//! The task message: [`RawSignature`] on the wire, [`Signature<T>`] for users.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::broker::GroupMember;
use crate::codec::{self, WIRE_VERSION};
use crate::error::{Error, Result};
use crate::registry::TaskEntry;
use crate::result::{AsyncResult, State, TaskState};
use crate::server::Server;

/// The task message as it travels through the broker: every field of Machinery's
/// signature, encoded as a MessagePack map keyed by field name behind a version byte.
///
/// Users build these through the typed [`Signature<T>`]; engines and tools see this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RawSignature {
    /// The task's UUID, kept across retries.
    pub uuid: Uuid,
    /// The registered task name.
    pub name: String,
    /// The queue; empty means the server's default queue.
    pub routing_key: String,
    /// Earliest start, in milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<u64>,
    /// The group (or chord) this task belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_uuid: Option<Uuid>,
    /// How many tasks the group has.
    #[serde(skip_serializing_if = "is_zero")]
    pub group_task_count: u32,
    /// This task's position in its group.
    #[serde(skip_serializing_if = "is_zero")]
    pub group_index: u32,
    /// The arguments: a positional MessagePack array.
    #[serde(with = "codec::bytes")]
    pub args: Vec<u8>,
    /// Free-form headers, visible to the task through its context.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Higher runs first (0–9 are honoured; larger values count as 9).
    #[serde(skip_serializing_if = "is_zero_u8")]
    pub priority: u8,
    /// When set, workflow steps do not append the previous result to the arguments.
    #[serde(skip_serializing_if = "is_false")]
    pub immutable: bool,
    /// Retries left.
    #[serde(skip_serializing_if = "is_zero")]
    pub retry_count: u32,
    /// The base retry delay in milliseconds (0: 1 s). Retry `n` waits
    /// `fib(n) × base` with fib = 1, 2, 3, 5, 8…
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub retry_timeout: u64,
    /// Retries done so far.
    #[serde(skip_serializing_if = "is_zero")]
    pub retried: u32,
    /// Tasks to send with the result appended when this one succeeds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<RawSignature>,
    /// Tasks to send with the error text when this one fails.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_error: Vec<RawSignature>,
    /// Machinery's per-member copy of the chord callback. Chords sent by this crate keep
    /// the callback once in the result backend instead (see
    /// [`ResultBackend::init_chord`](crate::ResultBackend::init_chord)), so a
    /// 10,000-member chord does not carry it 10,000 times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chord_callback: Option<Box<RawSignature>>,
    /// A member of a chord: its final state counts toward the chord's callback.
    #[serde(skip_serializing_if = "is_false")]
    pub chord: bool,
    /// For a chord member: the queue of the chord's callback, where the chord is kept.
    /// Empty means the member's own queue.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chord_queue: String,
    /// This task is the callback of chord `chord_of`: the members' results, in member
    /// order, become its last argument.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chord_of: Option<Uuid>,
    /// Drop the message at once when no worker knows the task name.
    #[serde(skip_serializing_if = "is_false")]
    pub ignore_when_not_registered: bool,
    /// The producer's argument schema, e.g. `add(i64, i64) -> i64`.
    pub schema: String,
    /// FNV-1a hash of `schema`.
    pub fingerprint: u64,
    /// When the message was created, in milliseconds since the Unix epoch.
    pub created_at: u64,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

impl Default for RawSignature {
    fn default() -> Self {
        RawSignature {
            uuid: Uuid::nil(),
            name: String::new(),
            routing_key: String::new(),
            eta: None,
            group_uuid: None,
            group_task_count: 0,
            group_index: 0,
            args: Vec::new(),
            headers: BTreeMap::new(),
            priority: 0,
            immutable: false,
            retry_count: 0,
            retry_timeout: 0,
            retried: 0,
            on_success: Vec::new(),
            on_error: Vec::new(),
            chord_callback: None,
            chord: false,
            chord_queue: String::new(),
            chord_of: None,
            ignore_when_not_registered: false,
            schema: String::new(),
            fingerprint: 0,
            created_at: 0,
        }
    }
}

impl RawSignature {
    /// The queue this task's state is kept under: its routing key, or `fallback` (the
    /// queue it was fetched from) when it has none.
    pub(crate) fn state_queue<'a>(&'a self, fallback: &'a str) -> &'a str {
        if self.routing_key.is_empty() {
            fallback
        } else {
            &self.routing_key
        }
    }

    /// A state record of this task at `state` (queue as in
    /// [`state_queue`](Self::state_queue)).
    pub(crate) fn task_state(&self, state: State, fallback_queue: &str) -> TaskState {
        let mut s = TaskState::new(
            self.uuid,
            self.name.clone(),
            self.state_queue(fallback_queue),
            state,
        );
        s.retried = self.retried;
        s.group_uuid = self.group_uuid;
        s
    }

    /// This task's place in its chord, when it is a chord member.
    pub(crate) fn chord_member(&self, fallback_queue: &str) -> Option<GroupMember> {
        let group_uuid = self.group_uuid.filter(|_| self.chord)?;
        let queue = if self.chord_queue.is_empty() {
            self.state_queue(fallback_queue)
        } else {
            &self.chord_queue
        };
        Some(GroupMember {
            group_uuid,
            queue: queue.to_owned(),
            index: self.group_index,
            count: self.group_task_count,
        })
    }

    /// The messages to send when this task succeeds, before its result is appended to
    /// their arguments: its success callbacks and the next step of its chain (carrying
    /// the rest of the chain).
    ///
    /// # Errors
    /// [`Error::Decode`] when the chain carried by the message does not decode.
    pub(crate) fn followers(&self) -> Result<Vec<RawSignature>> {
        Ok(self.on_success.clone())
    }

    /// Every task that would run after this one had it succeeded, transitively: success
    /// callbacks, the later steps of its chain, chord members started by a later step
    /// and their own chains. A failure marks them all FAILURE.
    ///
    /// # Errors
    /// [`Error::Decode`] when the chain carried by the message does not decode.
    pub(crate) fn downstream(&self) -> Result<Vec<RawSignature>> {
        let mut out = Vec::new();
        let mut stack: Vec<&RawSignature> = self.on_success.iter().collect();
        while let Some(next) = stack.pop() {
            out.push(next.clone());
            stack.extend(next.on_success.iter());
        }
        Ok(out)
    }

    /// A signature for `name` with encoded `args` and a fresh time-ordered UUID.
    pub fn new(name: impl Into<String>, args: Vec<u8>) -> Self {
        RawSignature {
            uuid: Uuid::now_v7(),
            name: name.into(),
            args,
            created_at: now_ms(),
            ..RawSignature::default()
        }
    }

    /// Encodes the envelope: version byte, then a MessagePack map.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(96 + self.args.len() + self.schema.len());
        out.push(WIRE_VERSION);
        rmp_serde::encode::write_named(&mut out, self).map_err(|e| Error::Encode {
            what: "signature",
            reason: e.to_string(),
        })?;
        Ok(out)
    }

    /// Decodes an envelope written by [`RawSignature::encode`].
    ///
    /// # Errors
    /// [`Error::Decode`] for an empty message, an unknown version byte or bad MessagePack.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&WIRE_VERSION, rest)) => codec::from_slice(rest, "signature"),
            Some((v, _)) => Err(Error::Decode {
                what: "signature",
                reason: format!(
                    "unknown wire format version {v} (this build reads {WIRE_VERSION})"
                ),
            }),
            None => Err(Error::Decode {
                what: "signature",
                reason: "empty message".into(),
            }),
        }
    }

    /// The ETA as a `SystemTime`.
    pub fn eta_time(&self) -> Option<SystemTime> {
        self.eta.map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

/// Milliseconds since the Unix epoch, `delay` from now; saturates instead of
/// overflowing, so any `Duration` is a valid delay (`Duration::MAX` is "never").
pub(crate) fn eta_after(delay: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A typed task call, built by `my_task::s(args…)`: options are set with the builder
/// methods, then it is sent with [`send`](Signature::send) or
/// [`send_with`](Signature::send_with). `T` is the task's result type.
///
/// ```
/// use machinery_core::prelude::*;
/// use std::time::Duration;
///
/// #[task]
/// async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
///     Ok(a + b)
/// }
///
/// # fn main() {
/// let sig = add::s(1, 2)
///     .delay(Duration::from_secs(10))
///     .retries(3)
///     .queue("math")
///     .priority(5)
///     .header("tenant", "acme");
/// assert_eq!(sig.raw().name, "add");
/// # }
/// ```
pub struct Signature<T> {
    raw: RawSignature,
    encode_error: Option<String>,
    _result: PhantomData<fn() -> T>,
}

impl<T> Clone for Signature<T> {
    fn clone(&self) -> Self {
        Signature {
            raw: self.raw.clone(),
            encode_error: self.encode_error.clone(),
            _result: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Signature<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signature").field("raw", &self.raw).finish()
    }
}

impl<T> Signature<T> {
    pub(crate) fn for_entry(entry: &'static TaskEntry, args: Result<Vec<u8>, String>) -> Self {
        let (args, encode_error) = match args {
            Ok(a) => (a, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut raw = RawSignature::new(entry.name, args);
        raw.schema = entry.schema.to_owned();
        raw.fingerprint = entry.fingerprint;
        if let Some(q) = entry.options.queue {
            raw.routing_key = q.to_owned();
        }
        raw.retry_count = entry.options.retries.unwrap_or(0);
        raw.retry_timeout = entry.options.retry_timeout_ms.unwrap_or(0);
        Signature {
            raw,
            encode_error,
            _result: PhantomData,
        }
    }

    /// Wraps a raw signature, trusting the caller that the task returns `T`.
    pub fn from_raw(raw: RawSignature) -> Self {
        Signature {
            raw,
            encode_error: None,
            _result: PhantomData,
        }
    }

    pub(crate) fn set_encode_error(&mut self, reason: String) {
        self.encode_error.get_or_insert(reason);
    }

    /// The message as it will be sent.
    pub fn raw(&self) -> &RawSignature {
        &self.raw
    }

    /// The message, mutably, for fields the builder does not cover.
    pub fn raw_mut(&mut self) -> &mut RawSignature {
        &mut self.raw
    }

    /// Unwraps the message.
    ///
    /// # Errors
    /// [`Error::Encode`] when the arguments could not be encoded.
    pub fn into_raw(self) -> Result<RawSignature> {
        match self.encode_error {
            Some(reason) => Err(Error::Encode {
                what: "task arguments",
                reason,
            }),
            None => Ok(self.raw),
        }
    }

    /// The task's UUID.
    pub fn uuid(&self) -> Uuid {
        self.raw.uuid
    }

    /// Sets the task's UUID, e.g. one derived from your own ids so the result can be
    /// found later by it. It does not deduplicate: sending the same UUID twice runs
    /// the task twice, and the second send restarts its stored state at PENDING.
    pub fn with_uuid(mut self, uuid: Uuid) -> Self {
        self.raw.uuid = uuid;
        self
    }

    /// Runs the task no earlier than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.raw.eta = Some(eta_after(delay));
        self
    }

    /// Runs the task no earlier than `eta`.
    pub fn eta(mut self, eta: SystemTime) -> Self {
        self.raw.eta = Some(to_ms(eta));
        self
    }

    /// Retries the task up to `retries` times when it fails.
    pub fn retries(mut self, retries: u32) -> Self {
        self.raw.retry_count = retries;
        self
    }

    /// The first retry delay; later ones follow the Fibonacci sequence from it
    /// (1, 2, 3, 5, 8… times this delay), capped by `retry_max_delay`.
    pub fn retry_timeout(mut self, delay: Duration) -> Self {
        self.raw.retry_timeout = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sends to `queue` instead of the task's or the server's default queue.
    pub fn queue(mut self, queue: &str) -> Self {
        self.raw.routing_key = queue.to_owned();
        self
    }

    /// Priority 0–9; higher runs first.
    pub fn priority(mut self, priority: u8) -> Self {
        self.raw.priority = priority.min(9);
        self
    }

    /// Adds a header, readable through [`TaskContext::header`](crate::TaskContext::header).
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.raw.headers.insert(key.into(), value.into());
        self
    }

    /// Drops the message when the worker that receives it does not know the task,
    /// instead of requeueing it for another worker; the task ends FAILURE saying so.
    pub fn ignore_when_not_registered(mut self) -> Self {
        self.raw.ignore_when_not_registered = true;
        self
    }

    /// Marks the signature immutable: as a workflow step or callback it takes no
    /// result from the step before it.
    pub fn immutable(mut self) -> Self {
        self.raw.immutable = true;
        self
    }

    /// Sends the task on the process-wide server.
    ///
    /// # Errors
    /// [`Error::NoDefaultServer`] when none is installed; engine errors from publishing.
    pub async fn send(self) -> Result<AsyncResult<T>> {
        let server = Server::global()?;
        self.send_with(&server).await
    }

    /// Sends the task on `server`.
    ///
    /// # Errors
    /// Encoding and engine errors.
    pub async fn send_with(self, server: &Server) -> Result<AsyncResult<T>> {
        let mut raw = self.into_raw()?;
        server.route(&mut raw);
        let result = AsyncResult::new(
            raw.uuid,
            raw.name.clone(),
            raw.routing_key.clone(),
            server.backend().clone(),
        );
        server.send_raw(raw).await?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_with_version_byte() {
        let mut raw = RawSignature::new("add", vec![0x92, 1, 2]);
        raw.headers.insert("k".into(), "v".into());
        raw.on_success.push(RawSignature::new("next", vec![0x90]));
        raw.eta = Some(42);
        let bytes = raw.encode().expect("encode");
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(RawSignature::decode(&bytes).expect("decode"), raw);
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        assert!(RawSignature::decode(&[]).is_err());
        assert!(RawSignature::decode(&[9, 1, 2]).is_err());
        assert!(RawSignature::decode(&[WIRE_VERSION, 0xc1]).is_err());
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        #[derive(Serialize)]
        struct Future<'a> {
            uuid: Uuid,
            name: &'a str,
            brand_new_field: u32,
        }
        let mut bytes = vec![WIRE_VERSION];
        bytes.extend(
            rmp_serde::to_vec_named(&Future {
                uuid: Uuid::nil(),
                name: "x",
                brand_new_field: 7,
            })
            .expect("encode"),
        );
        let raw = RawSignature::decode(&bytes).expect("decode");
        assert_eq!(raw.name, "x");
    }
}
