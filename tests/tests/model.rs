//! Model-based test of workflows, on the memory engine and on Redis.
//!
//! The promise under test: every message that was accepted reaches exactly one final
//! state (SUCCESS, or FAILURE, a dead letter included), every workflow whose part ends
//! badly ends badly as a whole, and a waiter always learns it.
//!
//! A generator (proptest) builds random workflows: chains, groups and chords nested up
//! to depth 4, up to 50 task parts, with empty chords, tasks that fail, fail fatally,
//! panic, succeed after retries, run past their time limit, return a result too large
//! to pass on, or name a task no worker knows. A reference evaluator computes what every
//! handle must return (the README's "Workflows" semantics), and the test waits on every
//! handle, the workflow's and each task's, with a time bound.
//!
//! The fixed set of cases (200 per engine) runs in CI. Larger runs, by hand:
//!
//! ```sh
//! MODEL_CASES=5000 cargo test -p tests --test model --release -- --nocapture
//! ```
//!
//! Other knobs: `MODEL_SEED` (a number: another deterministic set of cases),
//! `MODEL_TIMEOUT_SECS` (bound of every handle, 30), `MODEL_PARALLEL` (cases in flight,
//! 64), `MODEL_SHOW` (failing cases printed in full, 12).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use machinery_core::{
    AsyncResult, Chain, ChainResult, Chord, ChordResult, Config, Error, GroupResult, Partial,
    RawSignature, Server, Signature, State, Worker, WorkerHandle, group,
};
use machinery_redis as _;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use tests::RedisServer;
use tests::model_tasks::{Act, BIG_PAD, PLANNED_PANIC, Spec, Val, join, leaf, step};
use uuid::Uuid;

// ---------------------------------------------------------------------------------
// The model: a workflow as data.

/// One task of a workflow.
#[derive(Clone, Debug)]
struct Task {
    /// Unique in its workflow; set by [`number`].
    id: u32,
    k: i64,
    act: Act,
    retries: u32,
    /// Sent under a name no worker registers (`model.nope<id>`).
    unknown: bool,
}

/// A chord: members in parallel, then the callback.
#[derive(Clone, Debug)]
struct ChordM {
    members: Vec<Flow>,
    callback: Task,
    /// The callback is a full signature that ignores the members' results.
    ignores: bool,
}

#[derive(Clone, Debug)]
enum Head {
    Task(Task),
    Chord(ChordM),
}

/// A chain step after the first.
#[derive(Clone, Debug)]
enum StepM {
    /// Receives the previous result (`step::partial(..)`).
    Take(Task),
    /// Ignores it (`leaf::s(..)`, made immutable).
    Ignore(Task),
    /// A chord; its members do not take the previous result.
    Chord(ChordM),
}

/// A chain (a single task or a single chord when `steps` is empty).
#[derive(Clone, Debug)]
struct Flow {
    head: Head,
    steps: Vec<StepM>,
}

/// What is sent.
#[derive(Clone, Debug)]
enum Top {
    Flow(Flow),
    Group(Vec<Flow>),
}

impl Task {
    fn name(&self) -> String {
        if self.unknown {
            format!("model.nope{}", self.id)
        } else {
            String::new()
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.id)?;
        if self.unknown {
            return write!(f, " UNKNOWN");
        }
        write!(f, " {:+}", self.k)?;
        match self.act {
            Act::Ok => {}
            Act::Fail => write!(f, " fail")?,
            Act::Fatal => write!(f, " fatal")?,
            Act::Panic => write!(f, " panic")?,
            Act::Flaky(n) => write!(f, " flaky{n}")?,
            Act::Slow => write!(f, " slow")?,
            Act::Big => write!(f, " big")?,
        }
        if self.retries > 0 {
            write!(f, " r{}", self.retries)?;
        }
        Ok(())
    }
}

impl fmt::Display for ChordM {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chord[")?;
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            if m.steps.is_empty() {
                write!(f, "{m}")?;
            } else {
                write!(f, "({m})")?;
            }
        }
        let kind = if self.ignores { "leaf" } else { "join" };
        write!(f, "] => {kind}({})", self.callback)
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.head {
            Head::Task(t) => write!(f, "leaf({t})")?,
            Head::Chord(c) => write!(f, "{c}")?,
        }
        for s in &self.steps {
            match s {
                StepM::Take(t) => write!(f, " -> step({t})")?,
                StepM::Ignore(t) => write!(f, " -> leaf({t})")?,
                StepM::Chord(c) => write!(f, " -> {c}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Top {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Top::Flow(flow) => write!(f, "{flow}"),
            Top::Group(members) => {
                write!(f, "group[")?;
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "({m})")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// Every task of the workflow, in numbering order.
fn tasks_of(top: &Top) -> Vec<&Task> {
    fn flow<'a>(f: &'a Flow, out: &mut Vec<&'a Task>) {
        match &f.head {
            Head::Task(t) => out.push(t),
            Head::Chord(c) => chord(c, out),
        }
        for s in &f.steps {
            match s {
                StepM::Take(t) | StepM::Ignore(t) => out.push(t),
                StepM::Chord(c) => chord(c, out),
            }
        }
    }
    fn chord<'a>(c: &'a ChordM, out: &mut Vec<&'a Task>) {
        for m in &c.members {
            flow(m, out);
        }
        out.push(&c.callback);
    }
    let mut out = Vec::new();
    match top {
        Top::Flow(f) => flow(f, &mut out),
        Top::Group(members) => members.iter().for_each(|m| flow(m, &mut out)),
    }
    out
}

/// Every task of the workflow, mutably, in numbering order.
fn visit_tasks(top: &mut Top, visit: &mut dyn FnMut(&mut Task)) {
    fn flow(f: &mut Flow, visit: &mut dyn FnMut(&mut Task)) {
        match &mut f.head {
            Head::Task(t) => visit(t),
            Head::Chord(c) => chord(c, visit),
        }
        for s in &mut f.steps {
            match s {
                StepM::Take(t) | StepM::Ignore(t) => visit(t),
                StepM::Chord(c) => chord(c, visit),
            }
        }
    }
    fn chord(c: &mut ChordM, visit: &mut dyn FnMut(&mut Task)) {
        for m in &mut c.members {
            flow(m, visit);
        }
        visit(&mut c.callback);
    }
    match top {
        Top::Flow(f) => flow(f, visit),
        Top::Group(members) => members.iter_mut().for_each(|m| flow(m, visit)),
    }
}

fn is_bare_chord(f: &Flow) -> bool {
    f.steps.is_empty() && matches!(f.head, Head::Chord(_))
}

fn ok_task() -> Task {
    Task {
        id: 0,
        k: 1,
        act: Act::Ok,
        retries: 0,
        unknown: false,
    }
}

/// The typed API takes group members of one type: all chords, or all chains. A bare
/// chord among chains gets one more step.
fn homogenise(members: &mut [Flow]) {
    let bare = members.iter().filter(|m| is_bare_chord(m)).count();
    if bare > 0 && bare < members.len() {
        for m in members.iter_mut().filter(|m| is_bare_chord(m)) {
            m.steps.push(StepM::Take(ok_task()));
        }
    }
    for m in members {
        homogenise_flow(m);
    }
}

fn homogenise_flow(f: &mut Flow) {
    if let Head::Chord(c) = &mut f.head {
        homogenise(&mut c.members);
    }
    for s in &mut f.steps {
        if let StepM::Chord(c) = s {
            homogenise(&mut c.members);
        }
    }
}

/// Makes the workflow buildable and numbers its tasks 1, 2, 3… in order.
fn number(mut top: Top) -> Top {
    match &mut top {
        Top::Flow(f) => homogenise_flow(f),
        Top::Group(members) => homogenise(members),
    }
    let mut next = 0;
    visit_tasks(&mut top, &mut |t| {
        next += 1;
        t.id = next;
    });
    top
}

// ---------------------------------------------------------------------------------
// The generator.

fn act() -> impl Strategy<Value = (Act, u32)> {
    prop_oneof![
        30 => Just((Act::Ok, 0)),
        4 => (0u32..3).prop_map(|r| (Act::Fail, r)),
        2 => (0u32..3).prop_map(|r| (Act::Fatal, r)),
        2 => (0u32..2).prop_map(|r| (Act::Panic, r)),
        5 => (1u32..3).prop_map(|n| (Act::Flaky(n), n)),
        1 => Just((Act::Slow, 0)),
        3 => Just((Act::Big, 0)),
    ]
}

fn task() -> impl Strategy<Value = Task> {
    (act(), -50i64..50, proptest::bool::weighted(0.04)).prop_map(|((act, retries), k, unknown)| {
        Task {
            id: 0,
            k,
            act,
            retries: if unknown { 0 } else { retries },
            unknown,
        }
    })
}

fn flow() -> impl Strategy<Value = Flow> {
    let single = task().prop_map(|t| Flow {
        head: Head::Task(t),
        steps: Vec::new(),
    });
    single.prop_recursive(4, 40, 4, |inner| {
        // One chord in ten is empty.
        let member = inner.clone();
        let members = prop_oneof![1 => Just(0usize), 9 => 1usize..4]
            .prop_flat_map(move |n| proptest::collection::vec(member.clone(), n));
        let chord = (members, task(), proptest::bool::weighted(0.1))
            .prop_map(|(members, callback, ignores)| ChordM {
                members,
                callback,
                ignores,
            })
            .boxed();
        let next = prop_oneof![
            4 => task().prop_map(StepM::Take),
            1 => task().prop_map(StepM::Ignore),
            2 => chord.clone().prop_map(StepM::Chord),
        ];
        prop_oneof![
            3 => (inner, proptest::collection::vec(next, 1..4)).prop_map(|(mut f, more)| {
                f.steps.extend(more);
                f
            }),
            2 => chord.prop_map(|c| Flow { head: Head::Chord(c), steps: Vec::new() }),
        ]
    })
}

fn workflow() -> impl Strategy<Value = Top> {
    prop_oneof![
        3 => flow().prop_map(Top::Flow),
        1 => proptest::collection::vec(flow(), 0..4).prop_map(Top::Group),
    ]
    .prop_map(number)
    .prop_filter("at most 50 task parts", |t| tasks_of(t).len() <= 50)
}

// ---------------------------------------------------------------------------------
// The reference evaluator.

/// Why a part fails: each cause leaves a mark in the error text of every part it fails.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    /// The task failed, failed fatally or panicked: `[node N]`.
    Task(u32),
    /// The task ran past its time limit.
    Slow(u32),
    /// No worker knows the task: dead-lettered, its name in the error.
    Unknown(u32),
    /// The task's result could not be passed on to the next step: that step's message
    /// would be over the message limit.
    Oversize(u32),
}

impl Cause {
    fn marks(&self) -> Vec<String> {
        match self {
            Cause::Task(n) => vec![format!("[node {n}]")],
            Cause::Slow(_) => vec!["exceeded its time limit".into()],
            Cause::Unknown(n) => vec![format!("model.nope{n}")],
            Cause::Oversize(_) => vec!["exceeds".into(), "too large".into()],
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Task(n) => write!(f, "#{n} failing"),
            Cause::Slow(n) => write!(f, "#{n} over its time limit"),
            Cause::Unknown(n) => write!(f, "#{n} unknown to every worker"),
            Cause::Oversize(n) => write!(f, "#{n} result too large to pass on"),
        }
    }
}

/// A failure: any one of these causes may be the one reported (members of a chord fail
/// in any order).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Failure(BTreeSet<Cause>);

impl Failure {
    fn one(c: Cause) -> Self {
        Failure(BTreeSet::from([c]))
    }

    fn matches(&self, text: &str) -> bool {
        self.0
            .iter()
            .any(|c| c.marks().iter().any(|m| text.contains(m.as_str())))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FAILURE caused by ")?;
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, " or ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// A predicted value: the number and whether it carries the big padding.
type Value = (i64, bool);
type Expect = Result<Value, Failure>;

fn show_expect(e: &Expect) -> String {
    match e {
        Ok((n, false)) => format!("SUCCESS {n}"),
        Ok((n, true)) => format!("SUCCESS {n} (big)"),
        Err(f) => f.to_string(),
    }
}

/// A task's outcome given its input: `Err` when something before it failed, else the
/// number it adds to and whether that input (passed in its message) is too large.
fn eval_task(t: &Task, input: Result<Value, Failure>, out: &mut HashMap<u32, Expect>) -> Expect {
    let r = match input {
        // A task no worker knows may be dead-lettered before its failed input is seen
        // (a chord callback is published to be failed): either cause is a fair report.
        Err(mut f) if t.unknown => {
            f.0.insert(Cause::Unknown(t.id));
            Err(f)
        }
        Err(f) => Err(f),
        Ok(_) if t.unknown => Err(Failure::one(Cause::Unknown(t.id))),
        // A big input never arrives: `eval_flow` fails its producer first.
        Ok((base, _)) => match t.act {
            Act::Ok | Act::Flaky(_) => Ok((t.k.wrapping_add(base), false)),
            Act::Big => Ok((t.k.wrapping_add(base), true)),
            Act::Fail | Act::Fatal | Act::Panic => Err(Failure::one(Cause::Task(t.id))),
            Act::Slow => Err(Failure::one(Cause::Slow(t.id))),
        },
    };
    out.insert(t.id, r.clone());
    r
}

/// A chord runs once `gate` (the step before it) succeeded; its members take no input.
fn eval_chord(c: &ChordM, gate: Result<(), Failure>, out: &mut HashMap<u32, Expect>) -> Expect {
    let members: Vec<Expect> = c
        .members
        .iter()
        .map(|m| eval_flow(m, gate.clone(), out))
        .collect();
    let mut causes = BTreeSet::new();
    for m in &members {
        if let Err(f) = m {
            causes.extend(f.0.iter().cloned());
        }
    }
    let input = match gate {
        // Members stopped by the gate fail with its causes, and an unknown chord
        // callback among them may report itself instead: either is a fair report.
        Err(mut f) => {
            f.0.extend(causes);
            Err(f)
        }
        Ok(()) if !causes.is_empty() => Err(Failure(causes)),
        // The callback reads the members' results itself: a big member result is not
        // passed in a message.
        Ok(()) if c.ignores => Ok((0, false)),
        Ok(()) => Ok((
            members
                .iter()
                .flatten()
                .fold(0i64, |acc, (n, _)| acc.wrapping_add(*n)),
            false,
        )),
    };
    eval_task(&c.callback, input, out)
}

fn eval_flow(f: &Flow, gate: Result<(), Failure>, out: &mut HashMap<u32, Expect>) -> Expect {
    let (mut cur, mut last) = match &f.head {
        Head::Task(t) => (eval_task(t, gate.map(|()| (0, false)), out), t.id),
        Head::Chord(c) => (eval_chord(c, gate, out), c.callback.id),
    };
    for s in &f.steps {
        // A result too large to pass on fails the task that produced it (its follower
        // cannot be sent), and so the rest of the chain.
        if let (StepM::Take(_), Ok((_, true))) = (s, &cur) {
            let failed = Failure::one(Cause::Oversize(last));
            out.insert(last, Err(failed.clone()));
            cur = Err(failed);
        }
        (cur, last) = match s {
            StepM::Take(t) => (eval_task(t, cur, out), t.id),
            StepM::Ignore(t) => (eval_task(t, cur.map(|_| (0, false)), out), t.id),
            StepM::Chord(c) => (eval_chord(c, cur.map(|_| ()), out), c.callback.id),
        };
    }
    cur
}

/// What the workflow's handle must return (a group: the first failed member in member
/// order, else every result) and what each task's handle must return.
fn evaluate(top: &Top) -> (Result<Vec<Value>, Failure>, HashMap<u32, Expect>) {
    let mut out = HashMap::new();
    let whole = match top {
        Top::Flow(f) => eval_flow(f, Ok(()), &mut out).map(|v| vec![v]),
        Top::Group(members) => {
            let results: Vec<Expect> = members
                .iter()
                .map(|m| eval_flow(m, Ok(()), &mut out))
                .collect();
            results.into_iter().collect()
        }
    };
    (whole, out)
}

// ---------------------------------------------------------------------------------
// Building and sending a workflow with the typed API.

const RETRY_DELAY: Duration = Duration::from_millis(10);

/// The task handles of a sent workflow: id, UUID, name.
type Sent = Vec<(u32, Uuid, String)>;

fn spec(t: &Task, inputs: usize) -> Spec {
    Spec {
        id: t.id,
        k: t.k,
        act: t.act,
        inputs: u32::try_from(inputs).expect("few members"),
    }
}

fn options<T>(t: &Task, sig: Signature<T>) -> Signature<T> {
    let sig = if t.retries > 0 {
        sig.retries(t.retries).retry_timeout(RETRY_DELAY)
    } else {
        sig
    };
    if t.unknown {
        // The same arguments, under a name no worker registers.
        Signature::from_raw(RawSignature::new(t.name(), sig.raw().args.clone()))
    } else {
        sig
    }
}

fn record<T>(t: &Task, sig: &Signature<T>, sent: &mut Sent) {
    sent.push((t.id, sig.uuid(), sig.raw().name.clone()));
}

fn leaf_sig(t: &Task, sent: &mut Sent) -> Signature<Val> {
    let sig = options(t, leaf::s(spec(t, 0)));
    record(t, &sig, sent);
    sig
}

fn step_partial(t: &Task, sent: &mut Sent) -> Partial<Val, Val> {
    let sig = options(t, step::partial(spec(t, 0)).signature().clone());
    record(t, &sig, sent);
    Partial::new(sig)
}

fn join_partial(t: &Task, inputs: usize, sent: &mut Sent) -> Partial<Vec<Val>, Val> {
    let sig = options(t, join::partial(spec(t, inputs)).signature().clone());
    record(t, &sig, sent);
    Partial::new(sig)
}

fn build_chord(c: &ChordM, sent: &mut Sent) -> Chord<Val> {
    fn finish<F: machinery_core::workflow::Flow<Output = Val>>(
        members: Vec<F>,
        c: &ChordM,
        sent: &mut Sent,
    ) -> Chord<Val> {
        let g = group(members);
        if c.ignores {
            g.chord(leaf_sig(&c.callback, sent))
        } else {
            g.chord(join_partial(&c.callback, c.members.len(), sent))
        }
    }
    if !c.members.is_empty() && c.members.iter().all(is_bare_chord) {
        let members: Vec<Chord<Val>> = c
            .members
            .iter()
            .map(|m| match &m.head {
                Head::Chord(inner) => build_chord(inner, sent),
                Head::Task(_) => unreachable!("a bare chord"),
            })
            .collect();
        finish(members, c, sent)
    } else {
        let members: Vec<Chain<Val>> = c.members.iter().map(|m| build_chain(m, sent)).collect();
        finish(members, c, sent)
    }
}

/// A flow as a chain. A bare chord is not a chain: the caller handles it.
fn build_chain(f: &Flow, sent: &mut Sent) -> Chain<Val> {
    let mut steps = f.steps.iter();
    let mut chain = match &f.head {
        Head::Task(t) => Chain::from(leaf_sig(t, sent)),
        Head::Chord(c) => {
            let chord = build_chord(c, sent);
            match steps.next().expect("a chord head with a step") {
                StepM::Take(t) => chord.then(step_partial(t, sent)),
                StepM::Ignore(t) => chord.then(leaf_sig(t, sent)),
                StepM::Chord(c) => chord.then(build_chord(c, sent)),
            }
        }
    };
    for s in steps {
        chain = match s {
            StepM::Take(t) => chain.then(step_partial(t, sent)),
            StepM::Ignore(t) => chain.then(leaf_sig(t, sent)),
            StepM::Chord(c) => chain.then(build_chord(c, sent)),
        };
    }
    chain
}

/// The handle of a sent workflow.
enum Handle {
    Task(AsyncResult<Val>),
    Chain(ChainResult<Val>),
    Chord(ChordResult<Val>),
    Group(GroupResult<Val>),
}

impl Handle {
    async fn get(&self, timeout: Duration) -> Result<Vec<Val>, Error> {
        match self {
            Handle::Task(h) => h.get_timeout(timeout).await.map(|v| vec![v]),
            Handle::Chain(h) => h.get_timeout(timeout).await.map(|v| vec![v]),
            Handle::Chord(h) => h.get_timeout(timeout).await.map(|v| vec![v]),
            Handle::Group(h) => h.get_timeout(timeout).await,
        }
    }
}

async fn send(server: &Server, top: &Top, sent: &mut Sent) -> Result<Handle, Error> {
    match top {
        Top::Flow(f) if is_bare_chord(f) => match &f.head {
            Head::Chord(c) => Ok(Handle::Chord(build_chord(c, sent).send_with(server).await?)),
            Head::Task(_) => unreachable!("a bare chord"),
        },
        Top::Flow(Flow {
            head: Head::Task(t),
            steps,
        }) if steps.is_empty() => Ok(Handle::Task(leaf_sig(t, sent).send_with(server).await?)),
        Top::Flow(f) => Ok(Handle::Chain(build_chain(f, sent).send_with(server).await?)),
        Top::Group(members) if !members.is_empty() && members.iter().all(is_bare_chord) => {
            let members: Vec<Chord<Val>> = members
                .iter()
                .map(|m| match &m.head {
                    Head::Chord(c) => build_chord(c, sent),
                    Head::Task(_) => unreachable!("a bare chord"),
                })
                .collect();
            Ok(Handle::Group(group(members).send_with(server).await?))
        }
        Top::Group(members) => {
            let members: Vec<Chain<Val>> = members.iter().map(|m| build_chain(m, sent)).collect();
            Ok(Handle::Group(group(members).send_with(server).await?))
        }
    }
}

// ---------------------------------------------------------------------------------
// Running a case.

fn value_of(v: &Val) -> Value {
    (v.n, v.pad.len() == BIG_PAD)
}

fn show_got(got: &Result<Vec<Val>, Error>) -> String {
    match got {
        Ok(vs) => {
            let shown: Vec<String> = vs.iter().map(|v| show_expect(&Ok(value_of(v)))).collect();
            shown.join(", ")
        }
        Err(Error::Timeout { .. }) => format!("did not resolve: {}", got.as_ref().err().unwrap()),
        Err(e) => format!("error: {e}"),
    }
}

/// `None` when `got` is what `want` says.
fn compare(want: &Result<Vec<Value>, Failure>, got: &Result<Vec<Val>, Error>) -> Option<String> {
    let fine = match (want, got) {
        (Ok(w), Ok(g)) => *w == g.iter().map(value_of).collect::<Vec<_>>(),
        (Err(f), Err(Error::TaskFailed { .. })) => {
            f.matches(&got.as_ref().err().unwrap().to_string())
        }
        _ => false,
    };
    if fine {
        return None;
    }
    let want = match want {
        Ok(vs) => vs
            .iter()
            .map(|v| show_expect(&Ok(*v)))
            .collect::<Vec<_>>()
            .join(", "),
        Err(f) => f.to_string(),
    };
    Some(format!("expected {want}; got {}", show_got(got)))
}

/// Sends `top` and checks every handle within `timeout`; the problems found.
async fn run_case(server: &Server, top: &Top, timeout: Duration) -> Vec<String> {
    let (want_whole, want_tasks) = evaluate(top);
    let mut sent = Sent::new();
    let handle = match send(server, top, &mut sent).await {
        Ok(h) => h,
        Err(e) => return vec![format!("cannot send: {e}")],
    };
    let mut waits = tokio::task::JoinSet::new();
    for (id, uuid, name) in sent {
        let h = server.result::<Val>(uuid, &name);
        waits.spawn(async move {
            let got = h.get_timeout(timeout).await;
            (id, h, got)
        });
    }
    let mut problems = Vec::new();
    let got = handle.get(timeout).await;
    if let Some(p) = compare(&want_whole, &got) {
        problems.push(format!("workflow handle: {p}"));
    }
    let mut per_task = Vec::new();
    let mut resolved = Vec::new();
    while let Some(joined) = waits.join_next().await {
        let (id, h, got) = joined.expect("a waiting task");
        match &got {
            Ok(_) => resolved.push((id, h, State::Success)),
            Err(Error::TaskFailed { .. }) => resolved.push((id, h, State::Failure)),
            Err(_) => {}
        }
        let want = want_tasks[&id].clone().map(|v| vec![v]);
        if let Some(p) = compare(&want, &got.map(|v| vec![v])) {
            per_task.push((id, p));
        }
    }
    // A final state is final: once every handle is done, each task that resolved is
    // still in the state its handle reported.
    for (id, h, first) in resolved {
        match h.state().await {
            Ok(now) if now == first => {}
            Ok(now) => per_task.push((id, format!("was {first:?}, then became {now:?}"))),
            Err(e) => per_task.push((id, format!("was {first:?}, then reading it failed: {e}"))),
        }
    }
    per_task.sort_by_key(|(id, _)| *id);
    problems.extend(
        per_task
            .into_iter()
            .map(|(id, p)| format!("task #{id} handle: {p}")),
    );
    problems
}

// ---------------------------------------------------------------------------------
// Engines.

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Redis,
}

struct Engine {
    server: Server,
    worker: Option<WorkerHandle>,
    _redis: Option<RedisServer>,
}

fn quiet_planned_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !text.contains(PLANNED_PANIC) {
                previous(info);
            }
        }));
    });
}

impl Engine {
    async fn start(kind: Kind) -> Engine {
        quiet_planned_panics();
        let mut config = Config::default();
        config.default_queue = "model".into();
        config.max_message_bytes = 64 * 1024;
        config.unregistered_requeues = 1;
        let (server, redis) = match kind {
            Kind::Memory => (Server::memory_with(config), None),
            Kind::Redis => {
                let redis = RedisServer::start();
                config.broker = redis.url();
                config
                    .section_mut::<machinery_redis::RedisConfig>()
                    .key_prefix = "model".into();
                let server = Server::from_config(config)
                    .await
                    .expect("connect to the test redis");
                (server, Some(redis))
            }
        };
        let worker = Worker::new()
            .server(&server)
            .task(leaf::ENTRY)
            .task(step::ENTRY)
            .task(join::ENTRY)
            .concurrency(8)
            .spawn()
            .expect("start the worker");
        Engine {
            server,
            worker: Some(worker),
            _redis: redis,
        }
    }

    async fn stop(mut self) {
        if let Some(w) = self.worker.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), w.abort()).await;
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

fn handle_timeout() -> Duration {
    Duration::from_secs(env_number("MODEL_TIMEOUT_SECS", 30))
}

/// The fixed cases of a run: `MODEL_CASES` workflows from the deterministic RNG (or
/// from `MODEL_SEED`).
fn cases() -> Vec<Top> {
    let count = env_number("MODEL_CASES", 200);
    let rng = match std::env::var("MODEL_SEED") {
        Ok(_) => {
            let seed = env_number("MODEL_SEED", 0);
            let mut bytes = [0u8; 32];
            for (i, chunk) in bytes.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&seed.wrapping_add(i as u64).to_le_bytes());
            }
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
        }
        Err(_) => TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    };
    let config = RunnerConfig {
        cases: u32::try_from(count).expect("MODEL_CASES fits in u32"),
        ..RunnerConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = workflow();
    (0..count)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("generate a workflow")
                .current()
        })
        .collect()
}

/// The kinds of parts a workflow has, to tell which ones the failed cases share.
fn features(top: &Top) -> BTreeSet<&'static str> {
    fn chord(c: &ChordM, out: &mut BTreeSet<&'static str>) {
        if c.members.is_empty() {
            out.insert("empty chord");
        }
        if c.callback.retries > 0 && !c.ignores {
            out.insert("chord callback with retries");
        }
        c.members.iter().for_each(|m| flow(m, out));
    }
    fn flow(f: &Flow, out: &mut BTreeSet<&'static str>) {
        if let Head::Chord(c) = &f.head {
            chord(c, out);
        }
        for s in &f.steps {
            if let StepM::Chord(c) = s {
                out.insert("chord as a chain step");
                chord(c, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    match top {
        Top::Flow(f) => flow(f, &mut out),
        Top::Group(members) => {
            out.insert("group");
            members.iter().for_each(|m| flow(m, &mut out));
        }
    }
    for t in tasks_of(top) {
        if t.unknown {
            out.insert("unknown task");
            continue;
        }
        out.insert(match t.act {
            Act::Ok => "succeeding task",
            Act::Fail => "failing task",
            Act::Fatal => "fatal task",
            Act::Panic => "panicking task",
            Act::Flaky(_) => "task succeeding after retries",
            Act::Slow => "task over its time limit",
            Act::Big => "big result",
        });
    }
    out
}

struct Failed {
    index: usize,
    parts: usize,
    top: Top,
    problems: Vec<String>,
}

async fn run_model(kind: Kind) {
    let cases = cases();
    let timeout = handle_timeout();
    let parallel = usize::try_from(env_number("MODEL_PARALLEL", 64)).expect("small");
    let engine = Engine::start(kind).await;
    let started = Instant::now();
    let server = Arc::new(engine.server.clone());
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut runs = tokio::task::JoinSet::new();
    for (index, top) in cases.iter().cloned().enumerate() {
        let server = Arc::clone(&server);
        let gate = Arc::clone(&gate);
        runs.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("open semaphore");
            let problems = run_case(&server, &top, timeout).await;
            (index, top, problems)
        });
    }
    let mut failed = Vec::new();
    while let Some(joined) = runs.join_next().await {
        let (index, top, problems) = joined.expect("a case");
        if !problems.is_empty() {
            failed.push(Failed {
                index,
                parts: tasks_of(&top).len(),
                top,
                problems,
            });
        }
    }
    let elapsed = started.elapsed();
    engine.stop().await;
    eprintln!(
        "model on {kind:?}: {} cases in {elapsed:.1?}, {} failed",
        cases.len(),
        failed.len()
    );
    if failed.is_empty() {
        return;
    }
    let mut tally: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for f in &failed {
        for feature in features(&f.top) {
            tally.entry(feature).or_default().0 += 1;
        }
    }
    for top in &cases {
        for feature in features(top) {
            tally.entry(feature).or_default().1 += 1;
        }
    }
    let unresolved = failed
        .iter()
        .filter(|f| f.problems.iter().any(|p| p.contains("did not resolve")))
        .count();
    let mut summary = format!(
        "\n{unresolved} of the failed cases have a handle that did not resolve.\nFailed cases with each feature (of all cases with it):\n"
    );
    for (feature, (bad, all)) in &tally {
        summary.push_str(&format!("    {feature}: {bad} of {all}\n"));
    }
    failed.sort_by_key(|f| (f.parts, f.index));
    let show = usize::try_from(env_number("MODEL_SHOW", 12)).expect("small");
    let mut report = String::new();
    for f in failed.iter().take(show) {
        report.push_str(&format!(
            "\n--- case {} ({} tasks): {}\n",
            f.index, f.parts, f.top
        ));
        for p in &f.problems {
            report.push_str(&format!("    {p}\n"));
        }
    }
    panic!(
        "{} of {} workflows on {kind:?} broke the promise.{summary}Smallest first, {} shown:{report}",
        failed.len(),
        cases.len(),
        show.min(failed.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_memory() {
    run_model(Kind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_redis() {
    run_model(Kind::Redis).await;
}

// ---------------------------------------------------------------------------------
// Named examples: each kind of workflow the generator covers, as its own test.

fn t(k: i64, act: Act) -> Task {
    let retries = match act {
        Act::Flaky(n) => n,
        _ => 0,
    };
    Task {
        id: 0,
        k,
        act,
        retries,
        unknown: false,
    }
}

fn ok(k: i64) -> Task {
    t(k, Act::Ok)
}

fn nope() -> Task {
    Task {
        unknown: true,
        ..ok(0)
    }
}

fn single(task: Task) -> Flow {
    Flow {
        head: Head::Task(task),
        steps: Vec::new(),
    }
}

fn chord(members: Vec<Flow>, callback: Task) -> ChordM {
    ChordM {
        members,
        callback,
        ignores: false,
    }
}

fn chain(head: Head, steps: Vec<StepM>) -> Top {
    number(Top::Flow(Flow { head, steps }))
}

fn bare(c: ChordM) -> Top {
    chain(Head::Chord(c), Vec::new())
}

/// leaf → (unknown task) → step: the dead-lettered step and the one after it FAIL.
fn dead_lettered_step_fails_the_rest_of_the_chain() -> Top {
    let head = Head::Task(ok(1));
    chain(head, vec![StepM::Take(nope()), StepM::Take(ok(2))])
}

/// (unknown task) → step.
fn dead_lettered_first_step_fails_the_chain() -> Top {
    chain(Head::Task(nope()), vec![StepM::Take(ok(2))])
}

/// chord[(unknown task), leaf] => join.
fn dead_lettered_member_fails_the_chord() -> Top {
    bare(chord(vec![single(nope()), single(ok(3))], ok(1)))
}

/// chord[leaf] => (unknown task) → step.
fn dead_lettered_callback_fails_the_chain() -> Top {
    let head = Head::Chord(chord(vec![single(ok(3))], nope()));
    chain(head, vec![StepM::Take(ok(2))])
}

/// chord[] => join: the callback runs with no results.
fn empty_chord_runs_its_callback() -> Top {
    bare(chord(Vec::new(), ok(5)))
}

/// leaf → chord[] => join → step.
fn empty_chord_as_a_chain_step() -> Top {
    let head = Head::Task(ok(1));
    chain(
        head,
        vec![StepM::Chord(chord(Vec::new(), ok(5))), StepM::Take(ok(2))],
    )
}

/// leaf (fails) → chord[] => join: the empty chord after a failed step FAILS.
fn empty_chord_after_a_failed_step_fails() -> Top {
    let head = Head::Task(t(1, Act::Fail));
    chain(head, vec![StepM::Chord(chord(Vec::new(), ok(5)))])
}

/// chord[chord[] => join, chord[leaf] => join] => join.
fn empty_chord_as_a_chord_member() -> Top {
    bare(chord(
        vec![
            Flow {
                head: Head::Chord(chord(Vec::new(), ok(5))),
                steps: Vec::new(),
            },
            Flow {
                head: Head::Chord(chord(vec![single(ok(1))], ok(2))),
                steps: Vec::new(),
            },
        ],
        ok(10),
    ))
}

/// leaf (big result) → step: the result cannot be passed on: the leaf FAILS, and the
/// step with it.
fn oversize_result_fails_the_next_step() -> Top {
    chain(Head::Task(t(1, Act::Big)), vec![StepM::Take(ok(2))])
}

/// leaf (big) → step → step.
fn oversize_result_fails_the_rest_of_the_chain() -> Top {
    let head = Head::Task(t(1, Act::Big));
    chain(head, vec![StepM::Take(ok(2)), StepM::Take(ok(3))])
}

/// chord[leaf] => join (big) → step.
fn oversize_callback_result_fails_the_next_step() -> Top {
    let head = Head::Chord(chord(vec![single(ok(1))], t(2, Act::Big)));
    chain(head, vec![StepM::Take(ok(3))])
}

/// chord[leaf (big), leaf] => join: the callback reads big results itself and succeeds.
fn oversize_member_result_reaches_the_callback() -> Top {
    bare(chord(vec![single(t(1, Act::Big)), single(ok(2))], ok(3)))
}

/// leaf (big) → leaf: a step that ignores the big result runs.
fn oversize_result_before_an_immutable_step() -> Top {
    chain(Head::Task(t(1, Act::Big)), vec![StepM::Ignore(ok(2))])
}

/// chord[leaf, leaf] => join (fails twice, then succeeds): one copy of the input.
fn retried_callback_gets_its_input_once() -> Top {
    bare(chord(
        vec![single(ok(1)), single(ok(2))],
        t(3, Act::Flaky(2)),
    ))
}

/// chord[leaf (big)] => join (fails, one retry): the retry is sent and FAILS in the end.
fn retried_callback_with_a_big_member_result_ends() -> Top {
    let mut fails = t(2, Act::Fail);
    fails.retries = 1;
    bare(chord(vec![single(t(1, Act::Big))], fails))
}

/// chord[leaf (fails), leaf] => join → step.
fn failed_member_fails_the_chord_and_the_rest() -> Top {
    let head = Head::Chord(chord(vec![single(t(1, Act::Fail)), single(ok(2))], ok(3)));
    chain(head, vec![StepM::Take(ok(4))])
}

/// leaf (fails) → chord[leaf, leaf] => join → step.
fn chord_after_a_failed_step_fails() -> Top {
    let head = Head::Task(t(1, Act::Fail));
    chain(
        head,
        vec![
            StepM::Chord(chord(vec![single(ok(2)), single(ok(3))], ok(4))),
            StepM::Take(ok(5)),
        ],
    )
}

/// chord[chord[leaf (fails)] => join, chord[leaf] => join] => join.
fn failed_inner_chord_fails_the_outer_chord() -> Top {
    bare(chord(
        vec![
            Flow {
                head: Head::Chord(chord(vec![single(t(1, Act::Fail))], ok(2))),
                steps: Vec::new(),
            },
            Flow {
                head: Head::Chord(chord(vec![single(ok(3))], ok(4))),
                steps: Vec::new(),
            },
        ],
        ok(5),
    ))
}

/// leaf → step (over its time limit) → step.
fn timed_out_step_fails_the_chain() -> Top {
    let head = Head::Task(ok(1));
    chain(head, vec![StepM::Take(t(2, Act::Slow)), StepM::Take(ok(3))])
}

/// leaf → step (panics, one retry) → step.
fn panicking_step_fails_the_chain() -> Top {
    let mut panics = t(2, Act::Panic);
    panics.retries = 1;
    chain(
        Head::Task(ok(1)),
        vec![StepM::Take(panics), StepM::Take(ok(3))],
    )
}

/// leaf → step (fatal, retries left) → step.
fn fatal_step_fails_the_chain() -> Top {
    let mut fatal = t(2, Act::Fatal);
    fatal.retries = 2;
    chain(
        Head::Task(ok(1)),
        vec![StepM::Take(fatal), StepM::Take(ok(3))],
    )
}

/// leaf (succeeds on its 2nd run) → step (on its 3rd).
fn flaky_steps_succeed_after_retries() -> Top {
    let head = Head::Task(t(1, Act::Flaky(1)));
    chain(head, vec![StepM::Take(t(2, Act::Flaky(2)))])
}

/// group[(leaf → step), (leaf (fails))]: the group's handle reports the failed member.
fn group_with_a_failed_member() -> Top {
    number(Top::Group(vec![
        Flow {
            head: Head::Task(ok(1)),
            steps: vec![StepM::Take(ok(2))],
        },
        single(t(3, Act::Fail)),
    ]))
}

/// group[]: resolves at once with no results.
fn empty_group() -> Top {
    Top::Group(Vec::new())
}

async fn run_example(kind: Kind, top: Top) {
    let engine = Engine::start(kind).await;
    let problems = run_case(&engine.server, &top, handle_timeout()).await;
    engine.stop().await;
    assert!(
        problems.is_empty(),
        "{top} on {kind:?}:\n    {}",
        problems.join("\n    ")
    );
}

macro_rules! examples {
    ($engine:ident, $kind:expr; $($name:ident),* $(,)?) => {
        mod $engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run_example($kind, super::$name()).await;
                }
            )*
        }
    };
}

macro_rules! all_examples {
    ($($engine:ident: $kind:expr),*) => {
        $(
            examples!($engine, $kind;
                dead_lettered_step_fails_the_rest_of_the_chain,
                dead_lettered_first_step_fails_the_chain,
                dead_lettered_member_fails_the_chord,
                dead_lettered_callback_fails_the_chain,
                empty_chord_runs_its_callback,
                empty_chord_as_a_chain_step,
                empty_chord_after_a_failed_step_fails,
                empty_chord_as_a_chord_member,
                oversize_result_fails_the_next_step,
                oversize_result_fails_the_rest_of_the_chain,
                oversize_callback_result_fails_the_next_step,
                oversize_member_result_reaches_the_callback,
                oversize_result_before_an_immutable_step,
                retried_callback_gets_its_input_once,
                retried_callback_with_a_big_member_result_ends,
                failed_member_fails_the_chord_and_the_rest,
                chord_after_a_failed_step_fails,
                failed_inner_chord_fails_the_outer_chord,
                timed_out_step_fails_the_chain,
                panicking_step_fails_the_chain,
                fatal_step_fails_the_chain,
                flaky_steps_succeed_after_retries,
                group_with_a_failed_member,
                empty_group,
            );
        )*
    };
}

all_examples!(memory: super::Kind::Memory, redis: super::Kind::Redis);
