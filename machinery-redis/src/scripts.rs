//! The Lua scripts, each prefixed with `lua/lib.lua`, and their argument encoders.
//!
//! Every script opens with a header listing its `KEYS`, `ARGV` and reply. One struct
//! per script here builds both lists in that layout, and one decoder at the top of the
//! script (with `lib.lua`'s `queue_keys`) reads them: the layout is written in those
//! three places only. Every key a script touches is passed in `KEYS`, built by
//! [`Keys`], so Redis Cluster can check that a call stays in one slot; no script builds
//! a key name.

use machinery_core::engine::{Completion, Outgoing};
use machinery_core::{Result as CoreResult, State, TaskState};
use redis::{Script, ScriptInvocation};
use uuid::Uuid;

use crate::keys::{Keys, QUEUE_KEYS};

const LIB: &str = include_str!("lua/lib.lua");

/// Every script the engine runs.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) fetch: Script,
    pub(crate) settle: Script,
    pub(crate) extend: Script,
    pub(crate) complete: Script,
    pub(crate) chord_done: Script,
    pub(crate) requeue: Script,
    pub(crate) store: Script,
    pub(crate) pending: Script,
    pub(crate) page: Script,
    pub(crate) find: Script,
    pub(crate) dead_one: Script,
    pub(crate) purge: Script,
    pub(crate) worker_register: Script,
    pub(crate) publish_unique: Script,
    pub(crate) unique_release: Script,
    pub(crate) revocation: Script,
    pub(crate) revocations: Script,
    pub(crate) revoke: Script,
}

impl Scripts {
    /// The scripts; with `shebang` (Redis 7 and later) each starts with `#!lua`, which
    /// makes Redis check that a script touches the keys of one cluster slot only and
    /// refuse it whole, before it runs, when the server is out of memory.
    pub(crate) fn new(shebang: bool) -> Self {
        let script = |body: &str| {
            let head = if shebang { "#!lua\n" } else { "" };
            Script::new(&format!("{head}{LIB}\n{body}"))
        };
        Scripts {
            publish: script(include_str!("lua/publish.lua")),
            fetch: script(include_str!("lua/fetch.lua")),
            settle: script(include_str!("lua/settle.lua")),
            extend: script(include_str!("lua/extend.lua")),
            complete: script(include_str!("lua/complete.lua")),
            chord_done: script(include_str!("lua/chord_done.lua")),
            requeue: script(include_str!("lua/requeue.lua")),
            store: script(include_str!("lua/store.lua")),
            pending: script(include_str!("lua/pending.lua")),
            page: script(include_str!("lua/page.lua")),
            find: script(include_str!("lua/find.lua")),
            dead_one: script(include_str!("lua/dead_one.lua")),
            purge: script(include_str!("lua/purge.lua")),
            worker_register: script(include_str!("lua/worker_register.lua")),
            publish_unique: script(include_str!("lua/publish_unique.lua")),
            unique_release: script(include_str!("lua/unique_release.lua")),
            revocation: script(include_str!("lua/revocation.lua")),
            revocations: script(include_str!("lua/revocations.lua")),
            revoke: script(include_str!("lua/revoke.lua")),
        }
    }

    /// Every script, to load them all again (a restarted Redis forgets them).
    pub(crate) fn all(&self) -> [&Script; 19] {
        [
            &self.publish,
            &self.fetch,
            &self.settle,
            &self.extend,
            &self.complete,
            &self.chord_done,
            &self.requeue,
            &self.store,
            &self.pending,
            &self.page,
            &self.find,
            &self.dead_one,
            &self.purge,
            &self.worker_register,
            &self.publish_unique,
            &self.unique_release,
            &self.revocation,
            &self.revocations,
            &self.revoke,
        ]
    }
}

/// A call of a queue script on `queue`: its keys (`lib.lua`'s `queue_keys`) come first.
fn queue_call<'s>(script: &'s Script, keys: &Keys, queue: &str) -> ScriptInvocation<'s> {
    let mut invocation = script.prepare_invoke();
    for kind in QUEUE_KEYS {
        invocation.key(keys.queue(queue, kind));
    }
    invocation
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// `publish.lua`: messages all sent to `queue`.
pub(crate) struct PublishArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) messages: &'a [&'a Outgoing],
}

impl PublishArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.publish, keys, self.queue);
        for m in self.messages {
            message_args(&mut invocation, m);
        }
        invocation
    }
}

/// `publish_unique.lua`: one message of `queue` with its task's PENDING state
/// (`state`, encoded) and its unique lock `lock` (`None`: deduplicated by UUID only)
/// held for `ttl_ms`.
pub(crate) struct PublishUniqueArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) message: &'a Outgoing,
    pub(crate) state: &'a [u8],
    pub(crate) lock: Option<&'a str>,
    pub(crate) ttl_ms: u64,
}

impl PublishUniqueArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.publish_unique, keys, self.queue);
        invocation.key(keys.state(self.queue, self.message.uuid));
        if let Some(lock) = self.lock {
            invocation.key(keys.unique(self.queue, lock));
        }
        invocation
            .arg(self.message.uuid.to_string())
            .arg(self.ttl_ms.max(1))
            .arg(self.state);
        message_args(&mut invocation, self.message);
        invocation
    }
}

/// `unique_release.lua`: the lock `key` of `queue`, if task `uuid` holds it.
pub(crate) struct UniqueReleaseArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) key: &'a str,
    pub(crate) uuid: Uuid,
}

impl UniqueReleaseArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = scripts.unique_release.prepare_invoke();
        invocation
            .key(keys.unique(self.queue, self.key))
            .arg(self.uuid.to_string());
        invocation
    }
}

/// A message's fields (publish.lua, complete.lua): ETA, priority, payload.
fn message_args(invocation: &mut ScriptInvocation<'_>, m: &Outgoing) {
    invocation
        .arg(m.eta.unwrap_or(0))
        .arg(m.priority.min(9))
        .arg(m.payload.as_slice());
}

/// `fetch.lua`: up to `max` messages of `queue`, leased for `visibility_ms`, unless the
/// queue is paused.
pub(crate) struct FetchArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) max: usize,
    pub(crate) visibility_ms: u64,
}

impl FetchArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.fetch, keys, self.queue);
        invocation
            .key(keys.paused(self.queue))
            .arg(self.max)
            .arg(self.visibility_ms);
        invocation
    }
}

/// What `settle.lua` does with a delivery it still holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settle<'a> {
    /// Done: forgotten.
    Ack,
    /// Ready again (after `delay_ms`), this delivery counted.
    Release { delay_ms: u64 },
    /// Into the dead-letter queue.
    Dead { reason: &'a str },
    /// Ready again at once, this delivery not counted (its fetch was cancelled).
    Return,
    /// Ready again after `delay_ms`, this delivery not counted (it did not run: its
    /// rate limit had no start slot near).
    Defer { delay_ms: u64 },
}

/// `settle.lua`: one delivery of `queue`, message `id`, held as `receipt`.
pub(crate) struct SettleArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) id: &'a str,
    pub(crate) receipt: &'a str,
    pub(crate) action: Settle<'a>,
}

impl SettleArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.settle, keys, self.queue);
        invocation.arg(self.id).arg(self.receipt);
        match self.action {
            Settle::Ack => invocation.arg("ack").arg(""),
            Settle::Release { delay_ms } => invocation.arg("release").arg(delay_ms),
            Settle::Dead { reason } => invocation.arg("dead").arg(reason),
            Settle::Return => invocation.arg("return").arg(0),
            Settle::Defer { delay_ms } => invocation.arg("return").arg(delay_ms),
        };
        invocation
    }
}

/// `extend.lua`: the leases `receipts` of deliveries of `queue`, extended by
/// `visibility_ms`.
pub(crate) struct ExtendArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) visibility_ms: u64,
    pub(crate) receipts: Vec<&'a str>,
}

impl ExtendArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.extend, keys, self.queue);
        invocation.arg(self.visibility_ms);
        for r in &self.receipts {
            invocation.arg(*r);
        }
        invocation
    }
}

/// `requeue.lua`: up to `max` dead letters of `queue` back into it.
pub(crate) struct RequeueArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) max: usize,
}

impl RequeueArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.requeue, keys, self.queue);
        invocation.arg(self.max);
        invocation
    }
}

/// `pending.lua`: the ready messages of `queue`, next first.
pub(crate) struct PendingArgs<'a> {
    pub(crate) queue: &'a str,
}

impl PendingArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        queue_call(&scripts.pending, keys, self.queue)
    }
}

/// The sorted sets of a queue that `page.lua` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PagedSet {
    Ready,
    Delayed,
    InFlight,
    Failed,
}

/// Where a page starts: after the member `member` of score `score` (as Redis
/// formatted it), in the listing's order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct After<'a> {
    pub(crate) score: &'a str,
    pub(crate) member: &'a [u8],
}

/// `page.lua`: up to `limit` members of one of `queue`'s sorted sets after `after`
/// (from the start when `None`); ascending, but the failures newest first.
pub(crate) struct PageArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) set: PagedSet,
    pub(crate) after: Option<After<'a>>,
    pub(crate) limit: usize,
}

impl PageArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.page, keys, self.queue);
        let (key, order, payloads) = match self.set {
            PagedSet::Ready => (keys.ready(self.queue), "asc", true),
            PagedSet::Delayed => (keys.delayed(self.queue), "asc", true),
            PagedSet::InFlight => (keys.inflight(self.queue), "asc", true),
            PagedSet::Failed => (keys.failed(self.queue), "desc", false),
        };
        let (score, member) = self
            .after
            .as_ref()
            .map_or(("", &[][..]), |a| (a.score, a.member));
        invocation
            .key(key)
            .arg(order)
            .arg(flag(self.after.is_some()))
            .arg(score)
            .arg(member)
            .arg(self.limit)
            .arg(flag(payloads));
        invocation
    }
}

/// The bytes `find.lua` and `dead_one.lua` look for in a payload: the envelope's first
/// field, the key `uuid` and the UUID as a 16-byte MessagePack `bin` (what
/// `RawSignature::encode` writes first; a unit test checks it).
pub(crate) fn uuid_needle(uuid: Uuid) -> Vec<u8> {
    let mut needle = Vec::with_capacity(23);
    needle.extend_from_slice(&[0xa4, b'u', b'u', b'i', b'd', 0xc4, 16]);
    needle.extend_from_slice(uuid.as_bytes());
    needle
}

/// `find.lua`: up to `budget` fields of `queue`'s payload hash from HSCAN cursor
/// `cursor`, looking for task `uuid`'s message; with `delete`, the first match that is
/// ready or delayed is deleted.
pub(crate) struct FindArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) cursor: &'a str,
    pub(crate) budget: usize,
    pub(crate) uuid: Uuid,
    pub(crate) delete: bool,
}

impl FindArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.find, keys, self.queue);
        invocation
            .arg(self.cursor)
            .arg(self.budget)
            .arg(uuid_needle(self.uuid))
            .arg(flag(self.delete));
        invocation
    }
}

/// What `dead_one.lua` does with the dead letter it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadAction {
    Find,
    Delete,
    Requeue,
}

/// `dead_one.lua`: up to `budget` dead letters of `queue` from index `start`, looking
/// for task `uuid`'s.
pub(crate) struct DeadOneArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) action: DeadAction,
    pub(crate) start: u64,
    pub(crate) budget: usize,
    pub(crate) uuid: Uuid,
}

impl DeadOneArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.dead_one, keys, self.queue);
        let action = match self.action {
            DeadAction::Find => "find",
            DeadAction::Delete => "delete",
            DeadAction::Requeue => "requeue",
        };
        invocation
            .arg(action)
            .arg(self.start)
            .arg(self.budget)
            .arg(uuid_needle(self.uuid));
        invocation
    }
}

/// `purge.lua`: up to `max` ready and delayed messages of `queue` deleted.
pub(crate) struct PurgeArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) max: usize,
}

impl PurgeArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.purge, keys, self.queue);
        invocation.arg(self.max);
        invocation
    }
}

/// `worker_register.lua`: worker `id`'s record `record`, kept for `ttl_ms`.
pub(crate) struct RegisterArgs<'a> {
    pub(crate) id: &'a str,
    pub(crate) record: &'a [u8],
    pub(crate) ttl_ms: u64,
}

impl RegisterArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = scripts.worker_register.prepare_invoke();
        invocation
            .key(keys.worker(self.id))
            .key(keys.workers())
            .arg(self.id)
            .arg(self.record)
            .arg(self.ttl_ms.max(1));
        invocation
    }
}

/// A chord member's final state, as `chord_done.lua` and `complete.lua` record it.
pub(crate) struct MemberArgs<'a> {
    pub(crate) index: u32,
    pub(crate) success: bool,
    pub(crate) result: &'a [u8],
    pub(crate) name: &'a str,
    pub(crate) error: &'a str,
}

impl<'a> MemberArgs<'a> {
    /// Member `index`'s final `state`; `None` when the state is not final.
    pub(crate) fn new(index: u32, state: &'a TaskState) -> Option<Self> {
        let success = match state.state {
            State::Success => true,
            // A revoked member counts as failed: the first failure fires the callback,
            // which fails with the member's error text (its revocation reason).
            State::Failure | State::Revoked => false,
            _ => return None,
        };
        Some(MemberArgs {
            index,
            success,
            result: state.result.as_deref().unwrap_or_default(),
            name: &state.name,
            error: state.error.as_deref().unwrap_or_default(),
        })
    }

    fn add(&self, invocation: &mut ScriptInvocation<'_>) {
        invocation
            .arg(self.index)
            .arg(flag(self.success))
            .arg(self.result)
            .arg(self.name)
            .arg(self.error);
    }
}

/// `chord_done.lua`: a member of chord `group`, kept under `queue` (its callback's).
pub(crate) struct ChordDoneArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) group: Uuid,
    pub(crate) member: MemberArgs<'a>,
    /// Queue a fired callback in the same step (else it is returned).
    pub(crate) enqueue: bool,
}

impl ChordDoneArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.chord_done, keys, self.queue);
        invocation
            .key(keys.chord(self.queue, self.group))
            .key(keys.chord_results(self.queue, self.group));
        self.member.add(&mut invocation);
        invocation.arg(flag(self.enqueue));
        invocation
    }
}

/// `store.lua`: guarded state writes of tasks sent to one queue (non-final states, and
/// SUCCESS or FAILURE states, which never replace a REVOKED one).
pub(crate) struct StoreArgs<'s> {
    invocation: ScriptInvocation<'s>,
}

impl<'s> StoreArgs<'s> {
    /// Final states are written with `ttl_ms` (0 = kept).
    pub(crate) fn new(scripts: &'s Scripts, ttl_ms: u64) -> Self {
        let mut invocation = scripts.store.prepare_invoke();
        invocation.arg(ttl_ms);
        StoreArgs { invocation }
    }

    /// Adds the state `bytes` to write at `key`; `done` is its done channel when the
    /// state is final (published once written).
    pub(crate) fn push(&mut self, key: String, done: Option<String>, bytes: Vec<u8>) {
        self.invocation
            .key(key)
            .arg(done.unwrap_or_default())
            .arg(bytes);
    }

    pub(crate) fn invocation(&self) -> &ScriptInvocation<'s> {
        &self.invocation
    }
}

/// `revocation.lua`: records the revocation of task `uuid` until `until` (ms since the
/// Unix epoch; `None`: for ever) with `reason`, and publishes it.
pub(crate) struct RevocationArgs<'a> {
    pub(crate) uuid: Uuid,
    pub(crate) until: Option<u64>,
    pub(crate) reason: &'a str,
}

impl RevocationArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = scripts.revocation.prepare_invoke();
        let until = self
            .until
            .map_or_else(|| "+inf".to_owned(), |u| u.to_string());
        invocation
            .key(keys.revoked())
            .key(keys.revoked_reasons())
            .arg(self.uuid.to_string())
            .arg(&until)
            .arg(self.reason)
            .arg(keys.revoked_channel())
            .arg(revocation_message(self.uuid, self.until, self.reason));
        invocation
    }
}

/// The message published on the revocations channel: `<uuid>\n<until ms, or empty for
/// ever>\n<reason>` (the reason last: it may hold newlines). Read by
/// [`parse_revocation_message`].
pub(crate) fn revocation_message(uuid: Uuid, until: Option<u64>, reason: &str) -> String {
    let until = until.map(|u| u.to_string()).unwrap_or_default();
    format!("{uuid}\n{until}\n{reason}")
}

/// Reads a [`revocation_message`]; `None` when it is not one.
pub(crate) fn parse_revocation_message(raw: &[u8]) -> Option<(Uuid, Option<u64>, String)> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut parts = text.splitn(3, '\n');
    let uuid = parts.next()?.parse().ok()?;
    let until = match parts.next()? {
        "" => None,
        u => Some(u.parse().ok()?),
    };
    Some((uuid, until, parts.next()?.to_owned()))
}

/// `revocations.lua`: the revocations that have not ended.
pub(crate) fn revocations_invocation<'s>(
    scripts: &'s Scripts,
    keys: &Keys,
) -> ScriptInvocation<'s> {
    let mut invocation = scripts.revocations.prepare_invoke();
    invocation.key(keys.revoked()).key(keys.revoked_reasons());
    invocation
}

/// `revoke.lua`: replaces task `uuid`'s state `read` (sent to `queue`) with `revoked`,
/// if it is still stored, kept for `ttl_ms` (0 = kept).
pub(crate) struct RevokeArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) uuid: Uuid,
    pub(crate) read: &'a [u8],
    pub(crate) revoked: &'a [u8],
    pub(crate) ttl_ms: u64,
}

impl RevokeArgs<'_> {
    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = scripts.revoke.prepare_invoke();
        invocation
            .key(keys.state(self.queue, self.uuid))
            .arg(self.read)
            .arg(self.revoked)
            .arg(self.ttl_ms)
            .arg(keys.done(self.uuid));
        invocation
    }
}

/// `complete.lua`: finished deliveries of one queue, with the part of their work that
/// belongs to that queue. Its sections (deliveries, states, messages, chord members)
/// are gathered apart and joined in [`invocation`](Self::invocation).
pub(crate) struct CompleteArgs<'a> {
    queue: &'a str,
    ttl_ms: u64,
    only_subscribed: bool,
    deliveries: Vec<Delivery<'a>>,
    state_keys: Vec<String>,
    /// Per state: its done channel when final, whether it is guarded (a final state
    /// that must not replace a REVOKED one), its bytes.
    states: Vec<(Option<String>, bool, Vec<u8>)>,
    messages: Vec<&'a Outgoing>,
    member_keys: Vec<String>,
    members: Vec<MemberArgs<'a>>,
    ends_keys: Vec<String>,
    /// `complete.lua`'s tail: the unique locks to release, as (lock key, delivery
    /// number from 1, task UUID).
    releases: Vec<(String, usize, String)>,
}

/// One delivery's record in `complete.lua`'s first section.
struct Delivery<'a> {
    id: &'a str,
    receipt: &'a str,
    dead: Option<String>,
    states: usize,
    messages: usize,
    member: bool,
    ends: bool,
    /// The first state is the task's own and not REVOKED: refused when the stored one
    /// is REVOKED.
    check: bool,
}

impl<'a> CompleteArgs<'a> {
    /// Completions of deliveries of `queue`: final states are written with `ttl_ms` (0 =
    /// kept), and published only to channels with subscribers when `only_subscribed`.
    pub(crate) fn new(queue: &'a str, ttl_ms: u64, only_subscribed: bool) -> Self {
        CompleteArgs {
            queue,
            ttl_ms,
            only_subscribed,
            deliveries: Vec::new(),
            state_keys: Vec::new(),
            states: Vec::new(),
            messages: Vec::new(),
            member_keys: Vec::new(),
            members: Vec::new(),
            ends_keys: Vec::new(),
            releases: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }

    /// Adds completion `c` of the delivery of message `id` (of this queue), with what
    /// of its work belongs to this queue (the rest is done apart, in other slots).
    ///
    /// # Errors
    /// A state that cannot be encoded.
    pub(crate) fn push(&mut self, keys: &Keys, c: &'a Completion, id: &'a str) -> CoreResult<()> {
        let queue = self.queue;
        let before = self.states.len();
        // The task's own state, when kept here, is checked first (a task revoked while
        // it ran is refused) and then written unguarded; other tasks' final states are
        // guarded one by one.
        let check = c.state.queue == queue && c.state.state != State::Revoked;
        for (i, state) in std::iter::once(&c.state)
            .chain(&c.also_store)
            .filter(|s| s.queue == queue)
            .enumerate()
        {
            self.state_keys.push(keys.state(queue, state.uuid));
            let terminal = state.state.is_terminal();
            let channel = terminal.then(|| keys.done(state.uuid));
            let guard = terminal && state.state != State::Revoked && !(check && i == 0);
            self.states.push((channel, guard, state.encode()?));
        }
        let states = self.states.len() - before;
        let before = self.messages.len();
        self.messages
            .extend(c.publish.iter().filter(|m| m.queue == queue));
        let messages = self.messages.len() - before;
        let member = c.group.as_ref().filter(|g| g.queue == queue);
        if let Some(g) = member {
            self.member_keys.push(keys.chord(queue, g.group_uuid));
            self.member_keys
                .push(keys.chord_results(queue, g.group_uuid));
            self.members.push(MemberArgs {
                index: g.index,
                // A REVOKED member counts as failed (see `MemberArgs::new`).
                success: c.state.state == State::Success,
                result: c.state.result.as_deref().unwrap_or_default(),
                name: &c.state.name,
                error: c.state.error.as_deref().unwrap_or_default(),
            });
        }
        // The chord lives under its callback's queue, the state's: here only when that
        // is this queue.
        let ends = c
            .ends_chord
            .filter(|_| c.state.state.is_terminal() && c.state.queue == queue);
        if let Some(group) = ends {
            self.ends_keys.push(keys.chord(queue, group));
            self.ends_keys.push(keys.chord_results(queue, group));
        }
        if let Some(key) = &c.release_unique {
            // The lock lives in the queue the message was published to: the delivery's.
            self.releases.push((
                keys.unique(queue, key),
                self.deliveries.len() + 1,
                c.state.uuid.to_string(),
            ));
        }
        self.deliveries.push(Delivery {
            id,
            receipt: &c.delivery.receipt,
            dead: c.dead_letter.as_ref().map(ToString::to_string),
            states,
            messages,
            member: member.is_some(),
            ends: ends.is_some(),
            check,
        });
        Ok(())
    }

    pub(crate) fn invocation<'s>(&self, scripts: &'s Scripts, keys: &Keys) -> ScriptInvocation<'s> {
        let mut invocation = queue_call(&scripts.complete, keys, self.queue);
        for k in self
            .state_keys
            .iter()
            .chain(&self.member_keys)
            .chain(&self.ends_keys)
        {
            invocation.key(k);
        }
        invocation
            .arg(self.ttl_ms)
            .arg(flag(self.only_subscribed))
            .arg(self.deliveries.len())
            .arg(self.states.len())
            .arg(self.messages.len())
            .arg(self.members.len());
        let on = |b: bool| if b { "1" } else { "" };
        for d in &self.deliveries {
            invocation
                .arg(d.id)
                .arg(d.receipt)
                .arg(on(d.dead.is_some()))
                .arg(d.dead.as_deref().unwrap_or_default())
                .arg(d.states)
                .arg(d.messages)
                .arg(on(d.member))
                .arg(on(d.ends))
                .arg(on(d.check));
        }
        for (channel, guard, bytes) in &self.states {
            invocation
                .arg(channel.as_deref().unwrap_or_default())
                .arg(on(*guard))
                .arg(bytes.as_slice());
        }
        for m in &self.messages {
            message_args(&mut invocation, m);
        }
        for m in &self.members {
            m.add(&mut invocation);
        }
        // The tail (last in KEYS and ARGV): the unique locks to release.
        for (key, delivery, uuid) in &self.releases {
            invocation.key(key).arg(*delivery).arg(uuid);
        }
        invocation.arg(self.releases.len());
        invocation
    }
}
