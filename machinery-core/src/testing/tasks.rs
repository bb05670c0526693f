//! The tasks the conformance suite runs. Their state lives in process-wide maps keyed
//! by a per-test string, so tests running in parallel do not see each other.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::{TaskContext, TaskError, task};

#[derive(Default)]
struct Board {
    counters: HashMap<String, u32>,
    running: HashMap<String, (u32, u32)>,
    log: HashMap<String, Vec<String>>,
    times: HashMap<String, Vec<Instant>>,
    gates: HashMap<String, watch::Sender<bool>>,
}

fn board() -> std::sync::MutexGuard<'static, Board> {
    static BOARD: OnceLock<Mutex<Board>> = OnceLock::new();
    BOARD
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// How many times `key` was counted.
pub fn count(key: &str) -> u32 {
    board().counters.get(key).copied().unwrap_or(0)
}

/// The items recorded under `key`, in order.
pub fn log(key: &str) -> Vec<String> {
    board().log.get(key).cloned().unwrap_or_default()
}

/// When the runs counted under `key` started.
pub fn times(key: &str) -> Vec<Instant> {
    board().times.get(key).cloned().unwrap_or_default()
}

/// The most runs of `key` seen at once.
pub fn peak(key: &str) -> u32 {
    board().running.get(key).map_or(0, |r| r.1)
}

/// Opens the gate `key`, releasing every `gate` task waiting on it.
pub fn open(key: &str) {
    let tx = gate_sender(key);
    tx.send_replace(true);
}

fn gate_sender(key: &str) -> watch::Sender<bool> {
    board()
        .gates
        .entry(key.to_owned())
        .or_insert_with(|| watch::channel(false).0)
        .clone()
}

fn bump(key: &str) -> u32 {
    let mut b = board();
    b.times
        .entry(key.to_owned())
        .or_default()
        .push(Instant::now());
    let c = b.counters.entry(key.to_owned()).or_default();
    *c += 1;
    *c
}

/// Adds two numbers.
#[task(name = "conformance.add")]
pub async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

/// Adds two numbers; sent to its own queue, which `#[task(queue = ..)]` names.
#[task(name = "conformance.routed_add", queue = "conformance-routed")]
pub async fn routed_add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

/// Always fails with `message`.
#[task(name = "conformance.fail")]
pub async fn fail(message: String) -> Result<(), TaskError> {
    Err(TaskError::msg(message))
}

/// Fails its first `failures` runs, then returns how many retries it took.
#[task(name = "conformance.flaky")]
pub async fn flaky(ctx: TaskContext, key: String, failures: u32) -> Result<u32, TaskError> {
    let n = bump(&key);
    if n <= failures {
        Err(TaskError::msg(format!("failure {n} of {failures}")))
    } else {
        Ok(ctx.retried())
    }
}

/// Always asks to be retried after `delay_ms`.
#[task(name = "conformance.later")]
pub async fn later(key: String, delay_ms: u64) -> Result<(), TaskError> {
    let n = bump(&key);
    Err(TaskError::retry_in(
        Duration::from_millis(delay_ms),
        format!("not yet ({n})"),
    ))
}

/// Panics with `message`.
#[task(name = "conformance.panics")]
pub async fn panics(message: String) -> Result<(), TaskError> {
    panic!("{message}")
}

/// Sleeps longer than its 200 ms time limit.
#[task(name = "conformance.too_slow", timeout = "200ms")]
pub async fn too_slow(ms: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// Waits until gate `key` opens, then returns `key`.
#[task(name = "conformance.gate")]
pub async fn gate(key: String) -> Result<String, TaskError> {
    bump(&key);
    let mut rx = gate_sender(&key).subscribe();
    rx.wait_for(|open| *open)
        .await
        .map_err(|_| TaskError::msg("gate dropped"))?;
    Ok(key)
}

/// Appends `item` to the log `key` and returns the log's length.
#[task(name = "conformance.record")]
pub async fn record(key: String, item: String) -> Result<usize, TaskError> {
    let mut b = board();
    let log = b.log.entry(key).or_default();
    log.push(item);
    Ok(log.len())
}

/// Sleeps `ms` while counted as running under `key`; returns the peak seen so far.
#[task(name = "conformance.occupy")]
pub async fn occupy(key: String, ms: u64) -> Result<u32, TaskError> {
    {
        let mut b = board();
        let r = b.running.entry(key.clone()).or_default();
        r.0 += 1;
        r.1 = r.1.max(r.0);
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let mut b = board();
    let r = b.running.entry(key).or_default();
    r.0 -= 1;
    Ok(r.1)
}

/// Returns what the context says: name, header `x`, retries left, queue.
#[task(name = "conformance.context")]
pub async fn context(ctx: TaskContext) -> Result<(String, Option<String>, u32, String), TaskError> {
    Ok((
        ctx.name().to_owned(),
        ctx.header("x").map(str::to_owned),
        ctx.retries_left(),
        ctx.queue().to_owned(),
    ))
}

/// Adds on the blocking pool.
#[task(name = "conformance.blocking_add")]
pub fn blocking_add(a: i64, b: i64) -> Result<i64, TaskError> {
    std::thread::sleep(Duration::from_millis(5));
    Ok(a + b)
}

/// Counts its runs under `key`, then sleeps `ms`.
#[task(name = "conformance.count_then_sleep")]
pub async fn count_then_sleep(key: String, ms: u64) -> Result<u32, TaskError> {
    let n = bump(&key);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(n)
}

/// Adds three numbers.
#[task(name = "conformance.add3")]
pub async fn add3(a: i64, b: i64, c: i64) -> Result<i64, TaskError> {
    Ok(a + b + c)
}

/// Multiplies two numbers.
#[task(name = "conformance.multiply")]
pub async fn multiply(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a * b)
}

/// Sums a list.
#[task(name = "conformance.sum")]
pub async fn sum(values: Vec<i64>) -> Result<i64, TaskError> {
    Ok(values.iter().sum())
}

/// Multiplies a list.
#[task(name = "conformance.product")]
pub async fn product(values: Vec<i64>) -> Result<i64, TaskError> {
    Ok(values.iter().product())
}

/// Fails when `x` exceeds `limit`, else returns `x`.
#[task(name = "conformance.at_most")]
pub async fn at_most(limit: i64, x: i64) -> Result<i64, TaskError> {
    if x > limit {
        Err(TaskError::msg(format!("{x} is over {limit}")))
    } else {
        Ok(x)
    }
}

/// Counts its runs under `key`; returns how many values it got.
#[task(name = "conformance.count_values")]
pub async fn count_values(key: String, values: Vec<i64>) -> Result<usize, TaskError> {
    bump(&key);
    Ok(values.len())
}

/// Records `value` under `key`.
#[task(name = "conformance.note")]
pub async fn note(key: String, value: i64) -> Result<(), TaskError> {
    board().log.entry(key).or_default().push(value.to_string());
    Ok(())
}

/// Records an error text under `key` (an error callback: the error comes first).
#[task(name = "conformance.note_error")]
pub async fn note_error(error: String, key: String) -> Result<(), TaskError> {
    board().log.entry(key).or_default().push(error);
    Ok(())
}

/// A string of `n` bytes (a result too large to pass on under a small
/// `max_message_bytes`).
#[task(name = "conformance.big")]
pub async fn big(n: u64) -> Result<String, TaskError> {
    Ok("x".repeat(usize::try_from(n).unwrap_or(usize::MAX)))
}

/// The length of a string.
#[task(name = "conformance.length")]
pub async fn length(text: String) -> Result<i64, TaskError> {
    Ok(i64::try_from(text.len()).unwrap_or(i64::MAX))
}

/// Sums `values`, failing its first run under `key` (a chord callback that is retried).
#[task(name = "conformance.sum_after_a_failure")]
pub async fn sum_after_a_failure(key: String, values: Vec<i64>) -> Result<i64, TaskError> {
    board()
        .log
        .entry(key.clone())
        .or_default()
        .push(format!("{values:?}"));
    if bump(&key) == 1 {
        return Err(TaskError::msg("first run fails"));
    }
    Ok(values.iter().sum())
}

/// Asks to be retried after `Duration::MAX`: never, in practice.
#[task(name = "conformance.retry_never")]
pub async fn retry_never() -> Result<(), TaskError> {
    Err(TaskError::retry_in(Duration::MAX, "not now"))
}
