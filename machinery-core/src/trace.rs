//! Tracing across tasks: one span per task run, and the W3C trace context that carries
//! a trace from a producer through every task it leads to.
//!
//! **The span.** A worker runs each delivery inside an `INFO` span named `task`, with
//! the fields `task.id`, `task.name`, `queue`, `retried` (retries before this run),
//! `delivery` (the broker's delivery count), `group` (the group or chord it is a member
//! of), `chord` (the chord it is the callback of) and the trace fields `trace_id` (32 hex digits), `span_id` (16) and `parent_id` (16,
//! when the message named a parent). Whatever the task logs is inside it, and so are the
//! worker's own lines about the run ("task failed; retrying", …), so a log line can be
//! tied to its task and its trace with any `tracing` subscriber. The span is a root in
//! the process's span tree: its parent is the message's, not whatever ran before. Its
//! target is `machinery_core::trace`: a filter that drops it (`machinery_core=warn`)
//! drops the spans, not the trace context, which messages carry on regardless.
//!
//! **The header.** Messages carry their parent in the header [`TRACEPARENT`]
//! (`traceparent`, as [W3C Trace Context](https://www.w3.org/TR/trace-context/) writes
//! it: `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`). Every message sent
//! while a task runs, by the task itself or by the worker on its behalf (the next step
//! of a chain, the members of a chord that follows it, its retry, its success and error
//! callbacks), gets a `traceparent` naming the running task's trace and span, replacing
//! any it had. A message sent outside a task gets one only from an OpenTelemetry span
//! (feature `otel`); otherwise it is sent as it is, and the task that runs it starts a
//! trace whose id is the task's UUID (`0190a2b4-…` becomes trace `0190a2b4…`), which its
//! chain, retries and callbacks continue. A header that is not a valid `traceparent`
//! (wrong length, bad or upper-case hex, an all-zero id, version `ff`) is ignored: the
//! task starts a trace of its own.
//!
//! A chord's callback is written once, when the chord is sent, and queued by the engine
//! when the last member finishes, so its parent is the span that sent the chord (the
//! producer's, or the task's that sent it), not one of the members; the members and the
//! callback share the trace, and the chord's UUID is the members' `group` and the
//! callback's `chord`.
//!
//! **OpenTelemetry** (feature `otel`). The task span's OpenTelemetry parent is the
//! message's `traceparent`, it is a `consumer` span named after the task, and it ends
//! with an error status when the run fails. A message sent inside any OpenTelemetry span
//! (a request handler's, or a span inside a task) carries that span's context. Export is
//! the application's: install `tracing-opentelemetry`'s layer with a tracer; the `trace_id`
//! and `span_id` fields then name the exported spans. The `tracestate` header is not
//! carried.
//!
//! Without `otel` the same header is read and written, with span ids of the worker's
//! own: logs correlate by `trace_id` and parent links, at no cost beyond one 55-byte
//! header on each message a task sends.
//!
//! ```standalone_crate
//! use machinery_core::prelude::*;
//! use machinery_core::trace::{TRACEPARENT, TraceContext};
//!
//! #[task]
//! async fn parent_of(ctx: TaskContext) -> Result<(String, String), TaskError> {
//!     // This run's own context, and the header naming its parent.
//!     let me = ctx.trace();
//!     assert_eq!(TraceContext::current(), Some(me));
//!     Ok((me.to_string(), ctx.header(TRACEPARENT).unwrap_or_default().to_owned()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), machinery_core::Error> {
//! let server = Server::memory();
//! let worker = Worker::auto().server(&server).spawn()?;
//! let (me, parent) = parent_of::s().send_with(&server).await?.get().await?;
//! // Sent outside any trace: no parent, and a trace of its own.
//! assert_eq!(parent, "");
//! assert!(TraceContext::parse(&me).is_some());
//! # worker.shutdown().await
//! # }
//! ```

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher, RandomState};

use tracing::Instrument;
use tracing::field::{Empty, display};

use crate::signature::RawSignature;

/// The header that carries a message's parent span: `traceparent`, as W3C Trace
/// Context names it.
pub const TRACEPARENT: &str = "traceparent";

/// The sampled flag of [`TraceContext::flags`].
const SAMPLED: u8 = 0x01;

tokio::task_local! {
    /// The trace context of the task running on this tokio task.
    static CURRENT: TraceContext;
}

/// A span's place in a trace: trace id, span id and flags, as a W3C `traceparent`
/// header names a parent (`00-<trace id>-<span id>-<flags>`). Neither id is ever zero.
///
/// ```
/// use machinery_core::trace::TraceContext;
///
/// let cx = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
///     .expect("valid");
/// assert_eq!(cx.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
/// assert_eq!(cx.span_id(), 0x00f067aa0ba902b7);
/// assert!(cx.sampled());
/// assert_eq!(cx.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceContext {
    /// A context from its parts; `None` when an id is zero (W3C's invalid ids). Only
    /// the sampled bit (`0x01`) of `flags` is kept, the one flag version `00` defines.
    pub fn new(trace_id: u128, span_id: u64, flags: u8) -> Option<Self> {
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            flags: flags & SAMPLED,
        })
    }

    /// Reads a `traceparent` header value. `None` for anything W3C Trace Context says
    /// to ignore: a length other than 55 for version `00`, a later version shorter than
    /// that or not followed by `-`, version `ff`, hex that is not lower-case, an
    /// all-zero trace or span id. Surrounding spaces are allowed. Never panics.
    pub fn parse(header: &str) -> Option<Self> {
        let h = header.trim_matches([' ', '\t']).as_bytes();
        let version = hex_field(h.get(0..2)?)?;
        let fits = match version {
            0xff => false,
            0 => h.len() == 55,
            // A later version may add fields after ours, behind a dash.
            _ => h.len() == 55 || h.get(55) == Some(&b'-'),
        };
        if !fits || h[2] != b'-' || h[35] != b'-' || h[52] != b'-' {
            return None;
        }
        let trace_id = hex_field(&h[3..35])?;
        let span_id = u64::try_from(hex_field(&h[36..52])?).ok()?;
        let flags = u8::try_from(hex_field(&h[53..55])?).ok()?;
        TraceContext::new(trace_id, span_id, flags)
    }

    /// The trace id (16 bytes, big-endian as a number).
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The span id (8 bytes, big-endian as a number).
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// The trace flags (only the sampled bit is kept).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the trace is sampled: the producer may have recorded it.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The context messages sent from here would carry as their parent: with feature
    /// `otel`, the current OpenTelemetry span's; otherwise, and when there is none,
    /// the running task's (see [`scope`](TraceContext::scope) for futures a task
    /// spawns). `None` outside both.
    pub fn current() -> Option<Self> {
        #[cfg(feature = "otel")]
        if let Some(cx) = otel::current() {
            return Some(cx);
        }
        CURRENT.try_with(|cx| *cx).ok()
    }

    /// Runs `fut` with this context as [`current`](TraceContext::current): messages it
    /// sends name this span as their parent. A task's run is scoped so already; a future
    /// it hands to `tokio::spawn` is not, and can be wrapped in
    /// `TraceContext::current()`'s scope to keep its sends in the task's trace.
    pub fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }

    /// Runs `f` with this context as [`current`](TraceContext::current), synchronously.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }

    /// A fresh span in this trace: same trace id and flags, a new span id.
    fn child(self) -> Self {
        TraceContext {
            span_id: random_id(),
            ..self
        }
    }
}

/// The `traceparent` header value: `00-<trace id>-<span id>-<flags>`, 55 characters.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// Lower-case hex digits (never a sign or upper case, which `from_str_radix` allows) as
/// a number; `None` past 32 digits.
fn hex_field(digits: &[u8]) -> Option<u128> {
    if digits.is_empty() || digits.len() > 32 {
        return None;
    }
    digits.iter().try_fold(0u128, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u128::from(v))
    })
}

/// A random non-zero id, in a few instructions: SplitMix64 over a per-thread counter
/// that starts at a random point (std's random hash keys, seeded from the OS once per
/// thread). SplitMix64 is a bijection, so a thread repeats no id before 2^64 of them.
fn random_id() -> u64 {
    thread_local! {
        static NEXT: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish());
    }
    let mut z = NEXT.with(|n| {
        let x = n.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        n.set(x);
        x
    });
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    match z ^ (z >> 31) {
        0 => 1,
        id => id,
    }
}

/// Gives `raw` a `traceparent` naming the current context (see
/// [`TraceContext::current`]), replacing any it had; leaves it as it is outside any.
pub(crate) fn inject(raw: &mut RawSignature) {
    let Some(cx) = TraceContext::current() else {
        return;
    };
    match raw.headers.get_mut(TRACEPARENT) {
        Some(value) => {
            value.clear();
            // Writing into a String cannot fail.
            let _ = fmt::Write::write_fmt(value, format_args!("{cx}"));
        }
        None => {
            raw.headers.insert(TRACEPARENT.to_owned(), cx.to_string());
        }
    }
}

/// The span and trace context of one task run, kept in its
/// [`TaskContext`](crate::TaskContext). The wrappers take the task's boxed future and
/// the worker's synchronous settling, never a large future, so that tracing costs no
/// copies of big future states.
#[derive(Debug, Clone)]
pub(crate) struct TaskTrace {
    span: tracing::Span,
    context: TraceContext,
}

impl TaskTrace {
    /// Opens the span of a run of `raw`, delivered from `queue` for the `delivery`th
    /// time, as a child of the message's `traceparent` (or the root of a new trace).
    pub(crate) fn start(raw: &RawSignature, queue: &str, delivery: u32) -> Self {
        let parent = raw
            .headers
            .get(TRACEPARENT)
            .and_then(|h| TraceContext::parse(h));
        let span = task_span(raw, queue, delivery);
        if span.is_disabled() {
            // Nobody records spans; sends still carry the trace on.
            return TaskTrace {
                context: own_context(raw, parent),
                span,
            };
        }
        let context = exported(&span, parent).unwrap_or_else(|| own_context(raw, parent));
        span.record(
            "trace_id",
            display(format_args!("{:032x}", context.trace_id)),
        );
        span.record("span_id", display(format_args!("{:016x}", context.span_id)));
        if let Some(p) = parent {
            span.record("parent_id", display(format_args!("{:016x}", p.span_id)));
        }
        if let Some(g) = raw.group_uuid {
            span.record("group", display(g));
        }
        if let Some(c) = raw.chord_of {
            span.record("chord", display(c));
        }
        TaskTrace { span, context }
    }

    /// A run outside any worker ([`TaskContext::detached`](crate::TaskContext::detached)):
    /// no span, and a trace of its own named by `uuid`.
    pub(crate) fn detached(uuid: uuid::Uuid) -> Self {
        let raw = RawSignature {
            uuid,
            ..RawSignature::default()
        };
        TaskTrace {
            span: tracing::Span::none(),
            context: own_context(&raw, None),
        }
    }

    /// The context messages sent during the run name as their parent.
    pub(crate) fn context(&self) -> TraceContext {
        self.context
    }

    /// Runs `fut` inside the span, with this run's context current.
    pub(crate) fn scope<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT
            .scope(self.context, fut)
            .instrument(self.span.clone())
    }

    /// Runs `f` inside the span, with this run's context current.
    pub(crate) fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        self.span.in_scope(|| CURRENT.sync_scope(self.context, f))
    }

    /// Marks the span failed (an error status in OpenTelemetry).
    pub(crate) fn failed(&self) {
        self.span.record("otel.status_code", "error");
    }
}

/// A run's own context when no exported span gives one: the parent's trace, or a trace
/// whose id is the task's UUID (random in its low 62 bits), with a random span id.
fn own_context(raw: &RawSignature, parent: Option<TraceContext>) -> TraceContext {
    let uuid = raw.uuid.as_u128();
    let root = || {
        let trace_id = match uuid {
            0 => u128::from(random_id()) << 64 | u128::from(random_id()),
            id => id,
        };
        TraceContext {
            trace_id,
            span_id: 1,
            flags: SAMPLED,
        }
    };
    parent.unwrap_or_else(root).child()
}

/// The context of the exported span `span`, made a child of `parent`: with `otel`, when
/// an OpenTelemetry layer records it.
#[cfg(feature = "otel")]
fn exported(span: &tracing::Span, parent: Option<TraceContext>) -> Option<TraceContext> {
    otel::start(span, parent)
}

#[cfg(not(feature = "otel"))]
fn exported(_span: &tracing::Span, _parent: Option<TraceContext>) -> Option<TraceContext> {
    None
}

#[cfg(not(feature = "otel"))]
fn task_span(raw: &RawSignature, queue: &str, delivery: u32) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "task",
        task.id = %raw.uuid,
        task.name = %raw.name,
        queue = %queue,
        retried = raw.retried,
        delivery,
        group = Empty,
        chord = Empty,
        trace_id = Empty,
        span_id = Empty,
        parent_id = Empty,
        otel.status_code = Empty,
    )
}

#[cfg(feature = "otel")]
fn task_span(raw: &RawSignature, queue: &str, delivery: u32) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "task",
        task.id = %raw.uuid,
        task.name = %raw.name,
        queue = %queue,
        retried = raw.retried,
        delivery,
        group = Empty,
        chord = Empty,
        trace_id = Empty,
        span_id = Empty,
        parent_id = Empty,
        otel.name = %raw.name,
        otel.kind = "consumer",
        otel.status_code = Empty,
    )
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceContext;

    /// Sets the OpenTelemetry parent of a task span from the message's context, then
    /// reads the span's own; `None` when no OpenTelemetry layer records the span.
    pub(super) fn start(
        span: &tracing::Span,
        parent: Option<TraceContext>,
    ) -> Option<TraceContext> {
        if let Some(p) = parent {
            let remote = SpanContext::new(
                TraceId::from(p.trace_id),
                SpanId::from(p.span_id),
                TraceFlags::new(p.flags),
                true,
                TraceState::NONE,
            );
            // Fails only without an OpenTelemetry layer, when `span.context()` below
            // finds nothing either.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        of(span)
    }

    /// The current OpenTelemetry span's context, when there is one.
    pub(super) fn current() -> Option<TraceContext> {
        of(&tracing::Span::current())
    }

    fn of(span: &tracing::Span) -> Option<TraceContext> {
        if span.is_disabled() {
            return None;
        }
        let cx = span.context();
        let otel_span = cx.span();
        let sc = otel_span.span_context();
        if !sc.is_valid() {
            return None;
        }
        TraceContext::new(
            u128::from_be_bytes(sc.trace_id().to_bytes()),
            u64::from_be_bytes(sc.span_id().to_bytes()),
            sc.trace_flags().to_u8(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_writes_the_w3c_example() {
        let cx = TraceContext::parse(GOOD).expect("valid");
        assert_eq!(cx.trace_id(), 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        assert_eq!(cx.span_id(), 0x00f0_67aa_0ba9_02b7);
        assert_eq!(cx.flags(), 1);
        assert_eq!(cx.to_string(), GOOD);
        assert_eq!(cx.to_string().len(), 55);
        let unsampled = TraceContext::parse(&GOOD.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.sampled());
        assert_eq!(
            TraceContext::parse(&format!("  {GOOD}\t")),
            Some(cx),
            "spaces around"
        );
    }

    #[test]
    fn refuses_what_w3c_says_to_ignore() {
        let bad = [
            "",
            "00",
            // Version 00 is exactly 55 characters.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            // Version ff is invalid, whatever follows.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Upper case, signs, other characters.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            // A later version with more fields needs the dash.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
        ];
        for b in bad {
            assert_eq!(TraceContext::parse(b), None, "{b:?}");
        }
    }

    #[test]
    fn later_versions_are_read_as_version_00() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        let cx = TraceContext::parse(later).expect("valid");
        assert_eq!(cx.to_string(), GOOD);
        assert_eq!(
            TraceContext::parse(&GOOD.replacen("00", "01", 1)),
            Some(cx),
            "a later version of exactly 55 characters"
        );
        // Unknown flags are dropped: only the sampled bit is carried on.
        let flags = TraceContext::parse(&GOOD.replace("-01", "-ff")).expect("valid");
        assert_eq!(flags.flags(), 1);
    }

    fn id_hex(width: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                8 => proptest::char::range('0', '9'),
                8 => proptest::char::range('a', 'f'),
                1 => proptest::char::range('A', 'F'),
                1 => Just('-'),
                1 => Just('g'),
                1 => Just('é'),
            ],
            width - 1..=width + 1,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_string_is_read_without_panicking(s in any::<String>()) {
            let _ = TraceContext::parse(&s);
        }

        #[test]
        fn near_headers_are_read_exactly_when_valid(
            version in id_hex(2),
            trace in id_hex(32),
            span in id_hex(16),
            flags in id_hex(2),
        ) {
            let header = format!("{version}-{trace}-{span}-{flags}");
            let lower = |s: &str, n: usize| {
                s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            };
            let zero = |s: &str| s.bytes().all(|b| b == b'0');
            let valid = lower(&version, 2)
                && version != "ff"
                && lower(&trace, 32)
                && !zero(&trace)
                && lower(&span, 16)
                && !zero(&span)
                && flags.as_bytes().get(..2).is_some_and(|f| lower(std::str::from_utf8(f).unwrap_or("-"), 2))
                // A later version may carry more after the flags, behind a dash.
                && (flags.len() == 2 || (version != "00" && flags.as_bytes()[2] == b'-'));
            let parsed = TraceContext::parse(&header);
            prop_assert_eq!(parsed.is_some(), valid, "{}", header);
            if let Some(cx) = parsed {
                prop_assert_eq!(format!("{:032x}", cx.trace_id()), trace);
                prop_assert_eq!(format!("{:016x}", cx.span_id()), span);
                let round = TraceContext::parse(&cx.to_string());
                prop_assert_eq!(round, Some(cx));
            }
        }

        #[test]
        fn contexts_round_trip(trace in 1u128.., span in 1u64.., flags in any::<u8>()) {
            let cx = TraceContext::new(trace, span, flags).expect("non-zero ids");
            let header = cx.to_string();
            prop_assert_eq!(header.len(), 55);
            prop_assert_eq!(TraceContext::parse(&header), Some(cx));
        }
    }

    #[test]
    fn span_ids_do_not_repeat_within_or_across_threads() {
        let draw = || (0..10_000).map(|_| random_id()).collect::<Vec<_>>();
        let other = std::thread::spawn(draw).join().expect("no panic");
        let mut all: Vec<u64> = draw().into_iter().chain(other).collect();
        assert!(all.iter().all(|&id| id != 0));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 20_000);
    }

    #[test]
    fn a_run_continues_its_parents_trace_with_a_span_of_its_own() {
        let mut raw = RawSignature::new("t", vec![0x90]);
        raw.headers.insert(TRACEPARENT.into(), GOOD.into());
        let parent = TraceContext::parse(GOOD).expect("valid");
        let a = TaskTrace::start(&raw, "q", 1).context();
        let b = TaskTrace::start(&raw, "q", 2).context();
        assert_eq!(a.trace_id(), parent.trace_id());
        assert_ne!(a.span_id(), parent.span_id());
        assert_ne!(a.span_id(), b.span_id(), "every run has its own span");
        assert!(a.sampled());
    }

    #[test]
    fn a_run_without_a_valid_parent_starts_a_trace_named_by_its_uuid() {
        let mut raw = RawSignature::new("t", vec![0x90]);
        raw.headers.insert(TRACEPARENT.into(), "00-garbage".into());
        let cx = TaskTrace::start(&raw, "q", 1).context();
        assert_eq!(cx.trace_id(), raw.uuid.as_u128());
        raw.uuid = uuid::Uuid::nil();
        let cx = TaskTrace::start(&raw, "q", 1).context();
        assert_ne!(cx.trace_id(), 0, "a nil UUID still gets a valid trace id");
    }

    #[tokio::test]
    async fn sends_inside_a_run_name_it_as_their_parent_and_outside_keep_their_header() {
        let raw = RawSignature::new("t", vec![0x90]);
        let run = TaskTrace::start(&raw, "q", 1);
        let mut child = RawSignature::new("child", vec![0x90]);
        child.headers.insert(TRACEPARENT.into(), GOOD.into());
        run.scope(async { inject(&mut child) }).await;
        let header = child.headers.get(TRACEPARENT).map(String::as_str);
        assert_eq!(
            header.and_then(TraceContext::parse),
            Some(run.context()),
            "replaced by the running task's context"
        );
        let mut outside = RawSignature::new("o", vec![0x90]);
        inject(&mut outside);
        assert!(outside.headers.is_empty(), "no header outside any trace");
        assert_eq!(TraceContext::current(), None);
    }
}

/// The header through a worker on the memory engine, without OpenTelemetry: every
/// message a run sends names that run's span as its parent.
#[cfg(test)]
mod propagation {
    use std::sync::{Mutex, MutexGuard, OnceLock};
    use std::time::Duration;

    use uuid::Uuid;

    use super::{TRACEPARENT, TraceContext};
    use crate::prelude::*;

    /// What one run saw: its task, argument, UUID, own context and parent.
    #[derive(Debug, Clone)]
    struct Seen {
        name: String,
        n: u64,
        uuid: Uuid,
        me: TraceContext,
        parent: Option<TraceContext>,
    }

    fn seen() -> MutexGuard<'static, Vec<Seen>> {
        static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
        SEEN.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(ctx: &TaskContext, n: u64) -> Result<(), TaskError> {
        let me = TraceContext::current().ok_or_else(|| TaskError::msg("no trace context"))?;
        if me != ctx.trace() {
            return Err(TaskError::msg("the context's trace is not the current one"));
        }
        seen().push(Seen {
            name: ctx.name().to_owned(),
            n,
            uuid: ctx.uuid(),
            me,
            parent: ctx.header(TRACEPARENT).and_then(TraceContext::parse),
        });
        Ok(())
    }

    fn find(name: &str, n: u64) -> Vec<Seen> {
        seen()
            .iter()
            .filter(|s| s.name == name && s.n == n)
            .cloned()
            .collect()
    }

    fn one(name: &str, n: u64) -> Seen {
        let mut all = find(name, n);
        assert_eq!(all.len(), 1, "{name}({n}) ran once: {all:?}");
        all.remove(0)
    }

    static SERVER: OnceLock<Server> = OnceLock::new();

    #[task(name = "trace.step")]
    async fn step(ctx: TaskContext, n: u64) -> Result<u64, TaskError> {
        note(&ctx, n)?;
        Ok(n + 1)
    }

    #[task(name = "trace.blocking_step")]
    fn blocking_step(ctx: TaskContext, n: u64) -> Result<u64, TaskError> {
        note(&ctx, n)?;
        Ok(n + 1)
    }

    #[task(name = "trace.flaky", retries = 1, retry_timeout = "10ms")]
    async fn flaky(ctx: TaskContext, n: u64) -> Result<u64, TaskError> {
        note(&ctx, n)?;
        if ctx.retried() == 0 {
            return Err(TaskError::msg("first run fails"));
        }
        Ok(n)
    }

    #[task(name = "trace.sum")]
    async fn sum(ctx: TaskContext, values: Vec<u64>) -> Result<u64, TaskError> {
        note(&ctx, 0)?;
        Ok(values.iter().sum())
    }

    /// Sends a task and a chord from inside a run, and waits for both.
    #[task(name = "trace.sender")]
    async fn sender(ctx: TaskContext) -> Result<u64, TaskError> {
        note(&ctx, 0)?;
        let server = SERVER.get().ok_or_else(|| TaskError::msg("no server"))?;
        let fail = |e: crate::Error| TaskError::msg(e.to_string());
        let one = step::s(100).send_with(server).await.map_err(fail)?;
        let chord = group(vec![step::s(200), step::s(300)])
            .chord(sum::partial())
            .send_with(server)
            .await
            .map_err(fail)?;
        let wait = Duration::from_secs(10);
        let a = one.get_timeout(wait).await.map_err(fail)?;
        let b = chord.get_timeout(wait).await.map_err(fail)?;
        Ok(a + b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_message_a_run_sends_names_the_run_as_its_parent() {
        let server = SERVER.get_or_init(Server::memory).clone();
        let worker = Worker::new()
            .task(step::ENTRY)
            .task(blocking_step::ENTRY)
            .task(flaky::ENTRY)
            .task(sum::ENTRY)
            .task(sender::ENTRY)
            .server(&server)
            .spawn()
            .expect("starts");
        let wait = Duration::from_secs(10);

        // A chain sent outside any trace: its first step starts a trace named by its
        // UUID; each later step's message names the step before it.
        let chain = step::s(0)
            .then(blocking_step::partial())
            .then(step::partial())
            .send_with(&server)
            .await
            .expect("sent");
        assert_eq!(chain.get_timeout(wait).await.expect("ran"), 3);
        let (first, second, third) = (
            one("trace.step", 0),
            one("trace.blocking_step", 1),
            one("trace.step", 2),
        );
        assert_eq!(first.parent, None, "sent outside any trace");
        assert_eq!(first.me.trace_id(), first.uuid.as_u128());
        assert_eq!(second.parent, Some(first.me), "step 2's parent is step 1");
        assert_eq!(third.parent, Some(second.me), "step 3's parent is step 2");
        assert_eq!(third.me.trace_id(), first.uuid.as_u128(), "one trace");
        assert_ne!(second.me.span_id(), third.me.span_id());

        // A retry's parent is the run that failed.
        let flaky = flaky::s(7).send_with(&server).await.expect("sent");
        assert_eq!(flaky.get_timeout(wait).await.expect("ran"), 7);
        let runs = find("trace.flaky", 7);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[1].parent, Some(runs[0].me));
        assert_eq!(runs[1].me.trace_id(), runs[0].uuid.as_u128());

        // Tasks and chords sent by a task: its span is the parent of the task, of the
        // chord's members and of the chord's callback.
        let sent = sender::s().send_with(&server).await.expect("sent");
        assert_eq!(sent.get_timeout(wait).await.expect("ran"), 101 + 201 + 301);
        let sender = one("trace.sender", 0);
        for (name, n) in [
            ("trace.step", 100),
            ("trace.step", 200),
            ("trace.step", 300),
        ] {
            assert_eq!(one(name, n).parent, Some(sender.me), "{name}({n})");
        }
        let callback = one("trace.sum", 0);
        assert_eq!(callback.parent, Some(sender.me), "the chord's sender");
        assert_eq!(callback.me.trace_id(), sender.uuid.as_u128());

        worker.shutdown().await.expect("stops");
    }
}
