//! Tasks of the model-based workflow test (`tests/tests/model.rs`).
//!
//! Every task is told what to do by a [`Spec`]: add its constant to its input and
//! succeed, fail (plainly or fatally), panic, fail until its `n`-th retry, run past its
//! time limit or return a result too large to pass on. Results are [`Val`]s, so a test
//! can compute every result ahead of time. Every error and panic message names the node
//! (`[node N]`), so a failure can be traced to the part of the workflow that caused it.

use std::time::Duration;

use machinery_core::{TaskContext, TaskError, task};
use serde::{Deserialize, Serialize};

/// The time limit of every model task.
pub const TIME_LIMIT: Duration = Duration::from_secs(1);

/// Length of the padding of a [`Act::Big`] result: over the 64 KiB message limit the
/// model test configures, so the result cannot be passed on to a next step.
pub const BIG_PAD: usize = 80 * 1024;

/// The value every model task returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Val {
    /// The number the test predicts.
    pub n: i64,
    /// Empty, or [`BIG_PAD`] bytes for a [`Act::Big`] task.
    pub pad: String,
}

/// What a model task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Act {
    /// Succeeds.
    Ok,
    /// Fails with a plain error (retried while retries remain).
    Fail,
    /// Fails with a fatal error (never retried).
    Fatal,
    /// Panics.
    Panic,
    /// Fails until its `n`-th retry, then succeeds.
    Flaky(u32),
    /// Sleeps past its time limit.
    Slow,
    /// Succeeds with a result of [`BIG_PAD`] bytes.
    Big,
}

/// The instructions of one task run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The node of the workflow this task is.
    pub id: u32,
    /// Added to the input.
    pub k: i64,
    /// What to do.
    pub act: Act,
    /// For a chord callback: how many member results it must receive.
    pub inputs: u32,
}

/// The marker of a panic planned by the model; the test's panic hook keeps quiet
/// about panics that carry it.
pub const PLANNED_PANIC: &str = "planned panic of the model";

async fn perform(ctx: &TaskContext, spec: Spec, input: i64) -> Result<Val, TaskError> {
    let id = spec.id;
    let n = spec.k.wrapping_add(input);
    match spec.act {
        Act::Ok => Ok(Val {
            n,
            pad: String::new(),
        }),
        Act::Big => Ok(Val {
            n,
            pad: "x".repeat(BIG_PAD),
        }),
        Act::Fail => Err(TaskError::msg(format!("[node {id}] fails"))),
        Act::Fatal => Err(TaskError::fatal(format!("[node {id}] fails fatally"))),
        Act::Panic => panic!("[node {id}] {PLANNED_PANIC}"),
        Act::Flaky(times) if ctx.retried() < times => Err(TaskError::msg(format!(
            "[node {id}] fails on run {} of {}",
            ctx.retried() + 1,
            times + 1
        ))),
        Act::Flaky(_) => Ok(Val {
            n,
            pad: String::new(),
        }),
        Act::Slow => {
            tokio::time::sleep(TIME_LIMIT * 30).await;
            Err(TaskError::fatal(format!(
                "[node {id}] outlived its time limit"
            )))
        }
    }
}

/// A task that takes no input: a workflow's first step, a step that ignores the
/// previous result, an immutable chord callback.
#[task(name = "model.leaf", timeout = "1s")]
pub async fn leaf(ctx: TaskContext, spec: Spec) -> Result<Val, TaskError> {
    perform(&ctx, spec, 0).await
}

/// A chain step: adds its constant to the previous result.
#[task(name = "model.step", timeout = "1s")]
pub async fn step(ctx: TaskContext, spec: Spec, prev: Val) -> Result<Val, TaskError> {
    perform(&ctx, spec, prev.n).await
}

/// A chord callback: adds its constant to the sum of the members' results, after
/// checking it received exactly one result per member.
#[task(name = "model.join", timeout = "1s")]
pub async fn join(ctx: TaskContext, spec: Spec, members: Vec<Val>) -> Result<Val, TaskError> {
    if members.len() != spec.inputs as usize {
        return Err(TaskError::fatal(format!(
            "chord callback {} received {} member results, expected {}",
            spec.id,
            members.len(),
            spec.inputs
        )));
    }
    let sum = members.iter().fold(0i64, |acc, v| acc.wrapping_add(v.n));
    perform(&ctx, spec, sum).await
}
