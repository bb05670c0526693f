//! The task message: [`RawSignature`] on the wire, [`Signature<T>`] for users.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, WIRE_VERSION};
use crate::engine::{Enqueued, GroupMember};
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
    /// The workflow (chain, group or chord) this task is part of: a fresh UUID v7 made
    /// when the workflow is sent, carried by every part of it (each task, each later
    /// step inside [`chain`](Self::chain), each chord member and the chord callback),
    /// under which the workflow's shape is stored
    /// ([`ResultBackend::store_workflow`](crate::engine::ResultBackend::store_workflow)).
    /// `None` for a task sent on its own. Celery's protocol carries the same thing as
    /// `root_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Uuid>,
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
    /// The rest of this task's chain: the steps that run after it, one after another,
    /// as a flat list (never nested, so a chain of any length decodes at a constant
    /// depth). MessagePack `bin`, left out when empty.
    ///
    /// The bytes are a sequence of **steps**, each a big-endian `u32` length followed by
    /// that many bytes; a step's bytes are a sequence of **entries**, each a big-endian
    /// `u32` length followed by one envelope as [`RawSignature::encode`] writes it
    /// (version byte included):
    ///
    /// ```text
    /// chain = step*      step  = u32be len, entry+      entry = u32be len, envelope
    /// ```
    ///
    /// A step of one entry is a task; a step of several is the members of a chord,
    /// each of which may carry its own `chain` (a member that is a chain). A chord step
    /// is always the last of a chain: what follows a chord is carried by the chord's
    /// callback, stored once with the chord. When this task succeeds the worker decodes
    /// step 0 only and hands the remaining bytes, as they are, to the step's task, so a
    /// step costs the same whatever the chain's length.
    #[serde(with = "codec::bytes", skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<u8>,
    /// Machinery's per-member copy of the chord callback. Chords sent by this crate keep
    /// the callback once in the result backend instead (see
    /// [`ResultBackend::init_chord`](crate::engine::ResultBackend::init_chord)), so a
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
    /// The latest start, in milliseconds since the Unix epoch (Celery's `expires`): a
    /// message not started by then is revoked with reason `expired` and never runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// The unique lock this task holds while it is pending, delayed or running (see
    /// [`UniqueLock`]); a second send with the same key does not enqueue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique: Option<UniqueLock>,
}

/// A unique task's lock, carried by its message so the worker can release it when the
/// task reaches its final state.
///
/// The lock is kept per queue under `key` (the task name and a hash of the argument
/// bytes, or the key given with [`Signature::unique_key`]); it holds the UUID of the task
/// that took it and lasts at most `ttl_ms` from the send. A send that finds the key held
/// enqueues nothing ([`Error::Duplicate`], or the holder's handle).
///
/// An empty `key` takes no lock: the send is deduplicated by the task's UUID alone (a
/// task whose stored state is not final is not sent again). [`Signature::with_uuid`]
/// sets such a lock.
///
/// Only a message sent on its own (a [`Signature`] sent, or [`Server::send_batch`]) is
/// deduplicated. The parts of a workflow (chain steps, group and chord members, chord
/// callbacks) drop their lock when the workflow is built, and success or error
/// callbacks are sent by the worker without one: a workflow always runs whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct UniqueLock {
    /// The lock's key, unique within the queue.
    pub key: String,
    /// The lock's TTL, in milliseconds from the send.
    pub ttl_ms: u64,
    /// Keep the lock until its TTL ends even after the task finished (asynq's `Unique`);
    /// off, the lock is released when the task reaches a final state.
    #[serde(skip_serializing_if = "is_false")]
    pub until_ttl: bool,
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
            workflow: None,
            args: Vec::new(),
            headers: BTreeMap::new(),
            priority: 0,
            immutable: false,
            retry_count: 0,
            retry_timeout: 0,
            retried: 0,
            on_success: Vec::new(),
            on_error: Vec::new(),
            chain: Vec::new(),
            chord_callback: None,
            chord: false,
            chord_queue: String::new(),
            chord_of: None,
            ignore_when_not_registered: false,
            schema: String::new(),
            fingerprint: 0,
            created_at: 0,
            expires: None,
            unique: None,
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
    /// [`state_queue`](Self::state_queue)), with when it was sent.
    pub(crate) fn task_state(&self, state: State, fallback_queue: &str) -> TaskState {
        let mut s = TaskState::new(
            self.uuid,
            self.name.clone(),
            self.state_queue(fallback_queue),
            state,
        );
        s.retried = self.retried;
        s.group_uuid = self.group_uuid;
        s.workflow = self.workflow;
        s.sent_at = self.created_at;
        s
    }

    /// Copies what `result_extended` keeps with every state into `state`: the
    /// arguments, the headers and the argument schema.
    pub(crate) fn extend_state(&self, state: &mut TaskState) {
        state.args = Some(self.args.clone());
        state.headers.clone_from(&self.headers);
        state.schema = Some(self.schema.clone()).filter(|s| !s.is_empty());
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
        let mut out = self.on_success.clone();
        if self.chain.is_empty() {
            return Ok(out);
        }
        let (step, rest) = take_framed(&self.chain, "chain step")?;
        let mut entries = decode_step(step)?;
        if !rest.is_empty() {
            let [next] = entries.as_mut_slice() else {
                return Err(bad_chain(format!(
                    "a step of {} tasks is followed by more steps; only a chain's last step \
                     may be a chord",
                    entries.len()
                )));
            };
            // A task step carries no chain of its own; should it, the rest follows it.
            next.chain.extend_from_slice(rest);
        }
        out.append(&mut entries);
        Ok(out)
    }

    /// Every task that would run after this one had it succeeded, transitively: success
    /// callbacks, the later steps of its chain, chord members started by a later step
    /// and their own chains. A failure marks them all FAILURE.
    ///
    /// # Errors
    /// [`Error::Decode`] when the chain carried by the message does not decode.
    pub(crate) fn downstream(&self) -> Result<Vec<RawSignature>> {
        let mut out = Vec::new();
        let mut stack = Vec::new();
        self.push_next(&mut stack)?;
        while let Some(next) = stack.pop() {
            next.push_next(&mut stack)?;
            out.push(next);
        }
        Ok(out)
    }

    /// Pushes what runs right after this task: its success callbacks and every entry
    /// of every step of its chain (not what those carry in turn).
    fn push_next(&self, out: &mut Vec<RawSignature>) -> Result<()> {
        out.extend(self.on_success.iter().cloned());
        out.extend(self.chained()?);
        Ok(())
    }

    /// The entries of every step of this task's chain, in order; each keeps its own
    /// chain (a chord member that is a chain) but not the steps after it.
    ///
    /// # Errors
    /// [`Error::Decode`] when the chain does not decode.
    pub(crate) fn chained(&self) -> Result<Vec<RawSignature>> {
        let mut out = Vec::new();
        let mut rest = self.chain.as_slice();
        while !rest.is_empty() {
            let (step, after) = take_framed(rest, "chain step")?;
            out.extend(decode_step(step)?);
            rest = after;
        }
        Ok(out)
    }

    /// Rewrites every entry of every step of this task's chain with `f`.
    ///
    /// # Errors
    /// [`Error::Decode`] when the chain does not decode; `f`'s errors; [`Error::Encode`].
    pub(crate) fn map_chain(
        &mut self,
        mut f: impl FnMut(&mut RawSignature) -> Result<()>,
    ) -> Result<()> {
        let mut chain = Vec::with_capacity(self.chain.len());
        let mut rest = self.chain.as_slice();
        while !rest.is_empty() {
            let (step, after) = take_framed(rest, "chain step")?;
            let mut entries = decode_step(step)?;
            for e in &mut entries {
                f(e)?;
            }
            push_step(&mut chain, &entries)?;
            rest = after;
        }
        self.chain = chain;
        Ok(())
    }

    /// How deeply the encoded message nests MessagePack maps and arrays: 1 for a
    /// message without headers or callbacks, 2 more for each level of success or error
    /// callbacks (an array of maps), 1 more for headers. Counted without recursion, so
    /// any message can be measured.
    pub fn nesting(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(self, 1usize)];
        while let Some((raw, depth)) = stack.pop() {
            let headers = usize::from(!raw.headers.is_empty());
            let arrays = usize::from(!raw.on_success.is_empty() || !raw.on_error.is_empty());
            deepest = deepest.max(depth + headers.max(arrays));
            for child in raw.on_success.iter().chain(&raw.on_error) {
                stack.push((child, depth + 2));
            }
            if let Some(cb) = raw.chord_callback.as_deref() {
                stack.push((cb, depth + 1));
            }
        }
        deepest
    }

    /// The lock key [`Signature::unique_for`] derives from this message: the task name,
    /// `:`, and the 128-bit FNV-1a hash of the argument bytes as 32 lowercase hex
    /// digits (e.g. `add:6c62…`). Stable across processes, builds and platforms.
    pub fn unique_key_of(&self) -> String {
        format!("{}:{:032x}", self.name, fnv1a_128(&self.args))
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
    ///
    /// # Errors
    /// [`Error::Encode`] when the message nests deeper than [`MAX_NESTING`] (callbacks
    /// of callbacks, see [`nesting`](Self::nesting)): no worker could decode it.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let nesting = self.nesting();
        if nesting > MAX_NESTING {
            return Err(Error::Encode {
                what: "signature",
                reason: format!(
                    "task `{}` nests callbacks {nesting} MessagePack levels deep, over the \
                     limit of {MAX_NESTING} a worker decodes; chain the steps with `.then(..)` \
                     instead of nesting `.on_success(..)` callbacks",
                    self.name
                ),
            });
        }
        let mut out =
            Vec::with_capacity(96 + self.args.len() + self.schema.len() + self.chain.len());
        out.push(WIRE_VERSION);
        rmp_serde::encode::write_named(&mut out, self).map_err(|e| Error::Encode {
            what: "signature",
            reason: e.to_string(),
        })?;
        Ok(out)
    }

    /// Decodes an envelope written by [`RawSignature::encode`]. Any input is safe: the
    /// MessagePack nesting is limited to [`MAX_NESTING`] levels, so hostile bytes cannot
    /// exhaust the stack.
    ///
    /// # Errors
    /// [`Error::Decode`] for an empty message, an unknown version byte, bad MessagePack
    /// or nesting deeper than [`MAX_NESTING`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&WIRE_VERSION, rest)) => {
                let mut de = rmp_serde::Deserializer::from_read_ref(rest);
                // rmp-serde fails when its counter reaches 0 on entering a level.
                de.set_max_depth(MAX_NESTING + 1);
                RawSignature::deserialize(&mut de).map_err(|e| Error::Decode {
                    what: "signature",
                    reason: match e {
                        rmp_serde::decode::Error::DepthLimitExceeded => {
                            format!("nested more than {MAX_NESTING} MessagePack levels deep")
                        }
                        e => e.to_string(),
                    },
                })
            }
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

/// The deepest MessagePack nesting (maps and arrays inside each other) a message may
/// have: [`RawSignature::decode`] refuses deeper input and [`RawSignature::encode`]
/// refuses to write it. A message without callbacks nests 2 levels (its headers); each
/// level of `.on_success(..)`/`.on_error(..)` callbacks adds 2. Chains do not nest (see
/// [`RawSignature::chain`]). A debug build spends up to about 15 KiB of stack per level
/// decoding a signature (measured: nested chord callbacks overflow a 2 MiB stack past
/// about 140 levels, nested success callbacks past about 210), so this limit keeps a
/// decode under about 0.5 MiB, a quarter of a tokio worker's 2 MiB stack.
pub const MAX_NESTING: usize = 32;

fn bad_chain(reason: String) -> Error {
    Error::Decode {
        what: "workflow chain",
        reason,
    }
}

/// Splits `bytes` into the item behind its big-endian `u32` length prefix and what
/// follows it.
fn take_framed<'a>(bytes: &'a [u8], what: &str) -> Result<(&'a [u8], &'a [u8])> {
    let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(bad_chain(format!("{what}: truncated length")));
    };
    let len = usize::try_from(u32::from_be_bytes(*len))
        .map_err(|_| bad_chain(format!("{what}: length out of range")))?;
    if len > rest.len() {
        return Err(bad_chain(format!(
            "{what}: {len} bytes announced, {} left",
            rest.len()
        )));
    }
    Ok(rest.split_at(len))
}

/// Appends `bytes` to `out` behind its big-endian `u32` length.
fn put_framed(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| Error::Encode {
        what: "workflow chain",
        reason: "a chain step over 4 GiB".into(),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Appends one step (a task, or the members of a chord) to the chain bytes `chain`
/// (format in [`RawSignature::chain`]).
///
/// # Errors
/// [`Error::Encode`] when an entry does not encode.
pub(crate) fn push_step(chain: &mut Vec<u8>, entries: &[RawSignature]) -> Result<()> {
    let mut step = Vec::new();
    for e in entries {
        put_framed(&mut step, &e.encode()?)?;
    }
    put_framed(chain, &step)
}

/// The entries of one step.
fn decode_step(mut step: &[u8]) -> Result<Vec<RawSignature>> {
    let mut entries = Vec::new();
    while !step.is_empty() {
        let (entry, rest) = take_framed(step, "chain step entry")?;
        entries.push(RawSignature::decode(entry)?);
        step = rest;
    }
    if entries.is_empty() {
        return Err(bad_chain("a chain step without tasks".into()));
    }
    Ok(entries)
}

/// FNV-1a, 128-bit (offset basis and prime from the FNV reference): the hash of the
/// argument bytes in unique keys.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

/// The TTL of a unique lock set by [`Signature::unique_key`] or
/// [`Signature::unique_until_ttl`] on a task without one: one hour.
pub const DEFAULT_UNIQUE_TTL: Duration = Duration::from_secs(3600);

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

/// Milliseconds since the Unix epoch, `delay` from now; saturates instead of
/// overflowing, so any `Duration` is a valid delay (`Duration::MAX` is "never").
pub(crate) fn eta_after(delay: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    /// A duplicate send fails with [`Error::Duplicate`] instead of returning the
    /// holder's handle.
    duplicate_error: bool,
    _result: PhantomData<fn() -> T>,
}

impl<T> Clone for Signature<T> {
    fn clone(&self) -> Self {
        Signature {
            raw: self.raw.clone(),
            encode_error: self.encode_error.clone(),
            duplicate_error: self.duplicate_error,
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
        raw.expires = entry
            .options
            .expires_ms
            .map(|ms| now_ms().saturating_add(ms));
        if let Some(ttl_ms) = entry.options.unique_ms {
            raw.unique = Some(UniqueLock {
                key: raw.unique_key_of(),
                ttl_ms,
                until_ttl: false,
            });
        }
        Signature {
            raw,
            encode_error,
            duplicate_error: false,
            _result: PhantomData,
        }
    }

    /// Wraps a raw signature, trusting the caller that the task returns `T`.
    pub fn from_raw(raw: RawSignature) -> Self {
        Signature {
            raw,
            encode_error: None,
            duplicate_error: false,
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
    /// found later by it (BullMQ's job ids).
    ///
    /// It deduplicates: sent while a task with this UUID is pending, delayed or running
    /// (its stored state is not final), nothing is enqueued and the send returns that
    /// task's handle ([`Error::Duplicate`] with
    /// [`on_duplicate_error`](Self::on_duplicate_error)). Sent after that task finished,
    /// it starts over: the task runs again and its stored state restarts at PENDING.
    /// Atomic per queue on engines that share their broker and result backend (Redis
    /// with its own backend, memory). As a workflow part it does not deduplicate (see
    /// [`UniqueLock`]).
    pub fn with_uuid(mut self, uuid: Uuid) -> Self {
        self.raw.uuid = uuid;
        if self.raw.unique.is_none() {
            self.raw.unique = Some(UniqueLock::default());
        }
        self
    }

    /// Makes the task unique for `ttl`: while a task with the same name and argument
    /// bytes is pending, delayed or running in the same queue (at most `ttl` from its
    /// send), sending this one enqueues nothing and returns that task's handle
    /// ([`Error::Duplicate`] with [`on_duplicate_error`](Self::on_duplicate_error)).
    ///
    /// The key is [`RawSignature::unique_key_of`] (name and FNV-1a 128 of the
    /// arguments), unless one was given with [`unique_key`](Self::unique_key). The lock
    /// is released when the task reaches a final state (SUCCESS, FAILURE, dead-lettered,
    /// REVOKED; a RETRY keeps it), or kept until `ttl` ends with
    /// [`unique_until_ttl`](Self::unique_until_ttl); the TTL frees it in any case, even
    /// if the task is still waiting. A TTL under 1 ms counts as 1 ms.
    pub fn unique_for(mut self, ttl: Duration) -> Self {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let auto = self.raw.unique_key_of();
        let lock = self.raw.unique.get_or_insert_with(UniqueLock::default);
        if lock.key.is_empty() {
            lock.key = auto;
        }
        lock.ttl_ms = ttl_ms;
        self
    }

    /// Makes the task unique under the key `key` (within its queue) instead of its name
    /// and arguments: tasks of any name and arguments sharing a key deduplicate each
    /// other. Keeps the TTL of [`unique_for`](Self::unique_for) or `#[task(unique)]`,
    /// else [`DEFAULT_UNIQUE_TTL`].
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        let lock = self.raw.unique.get_or_insert_with(UniqueLock::default);
        lock.key = key.into();
        if lock.ttl_ms == 0 {
            lock.ttl_ms = millis(DEFAULT_UNIQUE_TTL);
        }
        self
    }

    /// Keeps the unique lock until its TTL ends, even after the task finished (asynq's
    /// `Unique`): at most one such task per TTL. Without
    /// [`unique_for`](Self::unique_for) or [`unique_key`](Self::unique_key) the task is
    /// made unique by name and arguments for [`DEFAULT_UNIQUE_TTL`].
    pub fn unique_until_ttl(mut self) -> Self {
        let auto = self.raw.unique_key_of();
        let lock = self.raw.unique.get_or_insert_with(UniqueLock::default);
        if lock.key.is_empty() {
            lock.key = auto;
        }
        if lock.ttl_ms == 0 {
            lock.ttl_ms = millis(DEFAULT_UNIQUE_TTL);
        }
        lock.until_ttl = true;
        self
    }

    /// A send that finds the unique key (or the UUID) held fails with
    /// [`Error::Duplicate`] naming the holder, instead of returning the holder's handle
    /// (the default, as BullMQ does).
    pub fn on_duplicate_error(mut self) -> Self {
        self.duplicate_error = true;
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

    /// Revokes the task, with reason `expired`, unless a worker starts it within
    /// `d` from now (Celery's `expires`): a message fetched later is never run and its
    /// task ends REVOKED (downstream steps too). Overrides `#[task(expires = …)]`.
    pub fn expires_in(mut self, d: Duration) -> Self {
        self.raw.expires = Some(eta_after(d));
        self
    }

    /// Revokes the task, with reason `expired`, unless a worker starts it before `at`
    /// (see [`expires_in`](Signature::expires_in)).
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.raw.expires = Some(to_ms(at));
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

    /// Sends the task on `server`. A unique task (or one with a UUID given by
    /// [`with_uuid`](Self::with_uuid)) whose key is held returns the holder's handle:
    /// its UUID, and [`get`](AsyncResult::get) gives the holder's result.
    ///
    /// # Errors
    /// Encoding and engine errors; [`Error::Duplicate`] for a duplicate with
    /// [`on_duplicate_error`](Self::on_duplicate_error); [`Error::Unsupported`] for a
    /// unique send on an engine without unique tasks.
    pub async fn send_with(self, server: &Server) -> Result<AsyncResult<T>> {
        let duplicate_error = self.duplicate_error;
        let mut raw = self.into_raw()?;
        server.route(&mut raw);
        let (name, queue) = (raw.name.clone(), raw.routing_key.clone());
        let uuid = match server.send_raw(raw).await? {
            Enqueued::Sent { uuid } => uuid,
            Enqueued::Duplicate { uuid } if duplicate_error => {
                return Err(Error::Duplicate { uuid, queue });
            }
            Enqueued::Duplicate { uuid } => uuid,
        };
        Ok(AsyncResult::on(server, uuid, name, queue))
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

    fn task(name: &str) -> RawSignature {
        RawSignature::new(name, vec![0x90])
    }

    fn names(raws: &[RawSignature]) -> Vec<&str> {
        raws.iter().map(|r| r.name.as_str()).collect()
    }

    fn chain_of(steps: &[Vec<RawSignature>]) -> Vec<u8> {
        let mut chain = Vec::new();
        for step in steps {
            push_step(&mut chain, step).expect("push");
        }
        chain
    }

    #[test]
    fn chain_frames_are_length_prefixed_envelopes() {
        let b = task("b");
        let mut chain = Vec::new();
        push_step(&mut chain, std::slice::from_ref(&b)).expect("push");
        let envelope = b.encode().expect("encode");
        let entry_len = u32::try_from(envelope.len()).expect("small");
        let mut expected = (entry_len + 4).to_be_bytes().to_vec();
        expected.extend_from_slice(&entry_len.to_be_bytes());
        expected.extend_from_slice(&envelope);
        assert_eq!(chain, expected);
        // The chain travels as MessagePack `bin` and round-trips.
        let mut a = task("a");
        a.chain = chain;
        let decoded = RawSignature::decode(&a.encode().expect("encode")).expect("decode");
        assert_eq!(decoded, a);
    }

    #[test]
    fn followers_pop_one_step_and_pass_the_rest_on_as_bytes() {
        let mut a = task("a");
        a.on_success.push(task("callback"));
        let (c, d) = (task("c"), task("d"));
        a.chain = chain_of(&[vec![task("b")], vec![c.clone()], vec![d.clone()]]);
        let followers = a.followers().expect("followers");
        assert_eq!(names(&followers), ["callback", "b"]);
        let b = &followers[1];
        assert_eq!(b.chain, chain_of(&[vec![c], vec![d]]));
        let c = b.followers().expect("followers");
        assert_eq!(names(&c), ["c"]);
        let d = c[0].followers().expect("followers");
        assert_eq!(names(&d), ["d"]);
        assert!(d[0].chain.is_empty());
        assert!(d[0].followers().expect("followers").is_empty());
    }

    #[test]
    fn a_chord_step_ends_the_chain_and_members_keep_their_own_chains() {
        // a → chord(m1, m2 → m2b) — the callback carries what follows the chord.
        let mut m2 = task("m2");
        m2.chain = chain_of(&[vec![task("m2b")]]);
        let mut a = task("a");
        a.chain = chain_of(&[vec![task("b")], vec![task("m1"), m2]]);
        let b = a.followers().expect("followers").remove(0);
        let members = b.followers().expect("followers");
        assert_eq!(names(&members), ["m1", "m2"]);
        assert!(members[0].chain.is_empty());
        assert_eq!(names(&members[1].followers().expect("followers")), ["m2b"]);
        // Every later task, transitively, member chains included.
        let mut down = names(&a.downstream().expect("downstream"))
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        down.sort();
        assert_eq!(down, ["b", "m1", "m2", "m2b"]);
        assert_eq!(b.downstream().expect("downstream").len(), 3);
    }

    #[test]
    fn a_chord_step_followed_by_more_steps_is_refused() {
        let mut a = task("a");
        a.chain = chain_of(&[vec![task("m1"), task("m2")], vec![task("after")]]);
        assert!(matches!(a.followers(), Err(Error::Decode { .. })));
    }

    #[test]
    fn broken_chains_fail_to_decode_without_panicking() {
        let good = chain_of(&[vec![task("b")], vec![task("c")]]);
        let boundary = 4 + u32::from_be_bytes([good[0], good[1], good[2], good[3]]) as usize;
        for cut in 1..good.len() {
            let mut a = task("a");
            a.chain = good[..cut].to_vec();
            // Only a cut on a step boundary still reads.
            assert_eq!(a.downstream().is_ok(), cut == boundary, "cut {cut}");
            assert_eq!(a.chained().is_ok(), cut == boundary, "cut {cut}");
            let _ = a.followers();
        }
        let mut a = task("a");
        a.chain = vec![0, 0, 0, 0];
        assert!(a.followers().is_err(), "an empty step");
        a.chain = vec![0, 0, 0, 5, 0, 0, 0, 1, 1];
        assert!(a.followers().is_err(), "a bad envelope");
        a.chain = vec![0xff, 0xff, 0xff, 0xff];
        assert!(a.downstream().is_err(), "a length past the end");
    }

    #[test]
    fn map_chain_rewrites_every_step() {
        let mut a = task("a");
        a.chain = chain_of(&[vec![task("b")], vec![task("m1"), task("m2")]]);
        a.map_chain(|e| {
            e.name.push('!');
            Ok(())
        })
        .expect("map");
        assert_eq!(names(&a.chained().expect("chained")), ["b!", "m1!", "m2!"]);
    }

    #[test]
    fn nesting_counts_maps_and_arrays() {
        let mut a = task("a");
        assert_eq!(a.nesting(), 1);
        a.headers.insert("k".into(), "v".into());
        assert_eq!(a.nesting(), 2);
        a.on_success.push(task("b"));
        assert_eq!(a.nesting(), 3);
        a.on_error.push(task("e").clone());
        a.on_error[0].headers.insert("k".into(), "v".into());
        assert_eq!(a.nesting(), 4);
        a.chord_callback = Some(Box::new(task("cb")));
        assert_eq!(a.nesting(), 4);
        // What encode accepts, decode reads back; one level more is refused.
        let mut deep = task("leaf");
        while deep.nesting() + 2 <= MAX_NESTING {
            let mut parent = task("p");
            parent.on_success.push(deep);
            deep = parent;
        }
        let bytes = deep.encode().expect("at the limit");
        assert_eq!(RawSignature::decode(&bytes).expect("decodes"), deep);
        let mut parent = task("p");
        parent.on_success.push(deep);
        let err = parent.encode().expect_err("over the limit").to_string();
        assert!(err.contains("nests callbacks"), "{err}");
    }
}

/// Hostile input: [`RawSignature::decode`] never panics and never exhausts a 2 MiB
/// stack (tokio's worker stack), whatever the nesting.
#[cfg(test)]
mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// Runs `f` on a thread with tokio's default 2 MiB worker stack.
    fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .expect("thread")
            .join()
            .expect("no panic")
    }

    /// One level of nesting, as MessagePack prefix bytes.
    #[derive(Debug, Clone)]
    enum Level {
        Array,
        Map,
        OnSuccess,
        OnError,
        ChordCallback,
        Headers,
        UnknownField,
        Ext,
    }

    fn key(out: &mut Vec<u8>, name: &str) {
        out.push(0xa0 | u8::try_from(name.len()).expect("short"));
        out.extend_from_slice(name.as_bytes());
    }

    /// Bytes opening each level in turn around `leaf`; a level that needs an envelope
    /// around it opens one.
    fn nest(levels: &[Level], leaf: &[u8]) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        for level in levels {
            match level {
                Level::Array => out.push(0x91),
                Level::Map => out.extend_from_slice(&[0x81, 0x01]),
                Level::OnSuccess => {
                    out.push(0x81);
                    key(&mut out, "on_success");
                    out.push(0x91);
                }
                Level::OnError => {
                    out.push(0x81);
                    key(&mut out, "on_error");
                    out.push(0x91);
                }
                Level::ChordCallback => {
                    out.push(0x81);
                    key(&mut out, "chord_callback");
                }
                Level::Headers => {
                    out.push(0x81);
                    key(&mut out, "headers");
                    out.extend_from_slice(&[0x81, 0xa1, b'k']);
                }
                Level::UnknownField => {
                    out.push(0x81);
                    key(&mut out, "brand_new");
                }
                Level::Ext => out.extend_from_slice(&[0xc7, 0x01, 0x05]),
            }
        }
        out.extend_from_slice(leaf);
        out
    }

    fn level() -> impl Strategy<Value = Level> {
        prop_oneof![
            Just(Level::Array),
            Just(Level::Map),
            Just(Level::OnSuccess),
            Just(Level::OnError),
            Just(Level::ChordCallback),
            Just(Level::Headers),
            Just(Level::UnknownField),
            Just(Level::Ext),
        ]
    }

    #[test]
    fn the_deepest_nestings_are_refused_on_a_small_stack() {
        for level in [
            Level::Array,
            Level::Map,
            Level::OnSuccess,
            Level::OnError,
            Level::ChordCallback,
            Level::UnknownField,
        ] {
            let bytes = nest(&vec![level.clone(); 100_000], &[0x80]);
            let err = on_small_stack(move || RawSignature::decode(&bytes)).expect_err("too deep");
            let deep = matches!(
                level,
                Level::OnSuccess | Level::OnError | Level::ChordCallback | Level::UnknownField
            );
            if deep {
                assert!(err.to_string().contains("levels deep"), "{level:?}: {err}");
            }
        }
        // Just below the limit still decodes (chord callbacks cost the most stack).
        let bytes = nest(&vec![Level::ChordCallback; MAX_NESTING - 1], &[0x80]);
        on_small_stack(move || RawSignature::decode(&bytes)).expect("at the limit");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            on_small_stack(move || {
                let _ = RawSignature::decode(&bytes);
                let mut with_version = vec![WIRE_VERSION];
                with_version.extend_from_slice(&bytes);
                let _ = RawSignature::decode(&with_version);
            });
        }

        #[test]
        fn adversarial_nesting_never_overflows(
            levels in proptest::collection::vec(level(), 0..3_000),
            leaf in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let bytes = nest(&levels, &leaf);
            on_small_stack(move || {
                if let Ok(raw) = RawSignature::decode(&bytes) {
                    // What decodes can be walked and sent on.
                    let _ = raw.followers();
                    let _ = raw.downstream();
                    assert!(raw.nesting() <= MAX_NESTING);
                }
            });
        }

        #[test]
        fn chains_of_hostile_envelopes_never_panic(
            levels in proptest::collection::vec(level(), 0..200),
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let entry = nest(&levels, &[0x80]);
            on_small_stack(move || {
                let mut step = Vec::new();
                put_framed(&mut step, &entry).expect("frame");
                step.extend_from_slice(&junk);
                let mut chain = Vec::new();
                put_framed(&mut chain, &step).expect("frame");
                let mut raw = RawSignature::new("a", vec![0x90]);
                raw.chain = chain;
                let _ = raw.followers();
                let _ = raw.downstream();
                let _ = raw.chained();
            });
        }
    }
}
