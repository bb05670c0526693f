//! Load benchmark: runs one scenario (or all) against Redis or the memory engine and
//! prints one JSON object per scenario (`--json`) or a short table.
//!
//! ```sh
//! cargo run --release -p examples --bin bench -- --redis-url redis://127.0.0.1:6379/ --scenario all --json
//! ```
//!
//! It only ever touches keys under its own prefix (`--prefix`, default `machinery-bench`),
//! which it deletes before and after each scenario.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use machinery_core::engine::Completion;
use machinery_core::prelude::*;
use machinery_core::{Config, Error, RawSignature, State, TaskState};
use serde_json::{Value, json};
use tokio::sync::Notify;

use machinery_redis as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    /// What this machine and this Redis do without the framework: the yardstick.
    Reference,
    Enqueue,
    E2e,
    Latency,
    Chord,
    Delayed,
    Idle,
    /// Not part of `all`: see `engine_cost`.
    Engine,
    E2eMemory,
    LatencyMemory,
    /// Not part of `all`: e2e with statistics off and on, alternating (see `stats_cost`).
    E2eStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    Bench,
    Worker,
}

#[derive(Debug, Parser)]
#[command(about = "Machinery for Rust load benchmark")]
struct Args {
    /// Redis to run against (only keys under --prefix are touched).
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    /// Key prefix of every key the benchmark writes.
    #[arg(long, default_value = "machinery-bench")]
    prefix: String,
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Tasks per scenario (each scenario has its own default).
    #[arg(long)]
    tasks: Option<u64>,
    /// Worker concurrency (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// Messages per fetch.
    #[arg(long, default_value_t = 256)]
    prefetch: usize,
    /// e2e: drain with this many separate worker processes instead of in-process.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Print one JSON object per scenario.
    #[arg(long)]
    json: bool,
    /// Print Redis's time per command and per task on stderr (from INFO commandstats).
    #[arg(long)]
    breakdown: bool,
    /// Worker statistics (per-minute counts and histograms written to the broker); the
    /// `e2e-stats` scenario switches them itself.
    #[arg(long, value_enum, default_value = "on")]
    stats: Switch,
    /// e2e-stats: runs of each setting (off and on alternate).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, value_enum, default_value = "bench", hide = true)]
    role: Role,
}

// ---- tasks ----

#[task(name = "bench.noop")]
async fn noop(i: u64) -> Result<u64, TaskError> {
    Ok(i)
}

#[task(name = "bench.add")]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

#[task(name = "bench.sum")]
async fn sum(values: Vec<i64>) -> Result<i64, TaskError> {
    Ok(values.iter().sum())
}

static EARLIEST_LATENESS_MS: AtomicI64 = AtomicI64::new(i64::MAX);
static LATEST_LATENESS_MS: AtomicI64 = AtomicI64::new(i64::MIN);

#[task(name = "bench.delayed")]
async fn delayed(eta_ms: i64) -> Result<(), TaskError> {
    let lateness = now_ms() - eta_ms;
    EARLIEST_LATENESS_MS.fetch_min(lateness, Ordering::Relaxed);
    LATEST_LATENESS_MS.fetch_max(lateness, Ordering::Relaxed);
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---- helpers ----

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn kib_field(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn own_peak_rss_mb() -> Option<f64> {
    kib_field(std::process::id(), "VmHWM:")
}

/// CPU time used so far by this process's live threads, in nanoseconds (Linux's
/// per-thread `schedstat`; `None` elsewhere). Steadier than throughput on a busy
/// machine: time spent waiting for a core is not counted.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread that ended meanwhile is skipped.
        if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat"))
            && let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        {
            total += ns;
        }
    }
    Some(total)
}

struct Redis {
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
}

impl Redis {
    async fn connect(url: &str, prefix: &str) -> Result<Self, BoxError> {
        let client = redis::Client::open(url)?;
        Ok(Redis {
            conn: client.get_multiplexed_async_connection().await?,
            prefix: prefix.to_owned(),
        })
    }

    /// What Redis has done so far: commands per command name (from INFO commandstats)
    /// and its CPU time (from INFO cpu). Server-wide: other clients count too.
    async fn counters(&mut self) -> Result<Counters, BoxError> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .arg("cpu")
            .query_async(&mut self.conn)
            .await?;
        let mut c = Counters::default();
        for line in info.lines() {
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                let Some((name, fields)) = rest.split_once(':') else {
                    continue;
                };
                let field = |key: &str| {
                    fields
                        .split(',')
                        .find_map(|f| f.strip_prefix(key))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                c.by_command
                    .insert(name.to_owned(), (field("calls="), field("usec=")));
            } else if let Some(v) = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))
            {
                c.cpu_seconds += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
        Ok(c)
    }

    /// Deletes every key under the benchmark's prefix.
    async fn flush(&mut self) -> Result<(), BoxError> {
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut self.conn)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Sequential LPUSH round trips per second on a scratch key, for reference.
    async fn raw_lpush_rate(&mut self, n: u64) -> Result<f64, BoxError> {
        let key = format!("{}:raw-lpush", self.prefix);
        let start = Instant::now();
        for i in 0..n {
            let _: () = redis::cmd("LPUSH")
                .arg(&key)
                .arg(i)
                .query_async(&mut self.conn)
                .await?;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut self.conn)
            .await?;
        Ok(rate)
    }
}

fn progress(n: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(n);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

struct Ctx {
    args: Args,
    redis: Option<Redis>,
}

impl Ctx {
    fn config(&self, memory: bool) -> Config {
        let mut c = Config::default();
        if !memory {
            c.broker = self.args.redis_url.clone();
            c.section_mut::<machinery_redis::RedisConfig>().key_prefix = self.args.prefix.clone();
            c.section_mut::<machinery_redis::RedisConfig>().fetch_batch =
                self.args.prefetch.clamp(1, 1000);
        }
        c.default_queue = "bench".into();
        c.stats = self.args.stats == Switch::On;
        c
    }

    async fn server(&mut self, memory: bool) -> Result<Server, BoxError> {
        if let (false, Some(r)) = (memory, self.redis.as_mut()) {
            r.flush().await?;
        }
        Ok(Server::from_config(self.config(memory)).await?)
    }

    async fn commands(&mut self, memory: bool) -> Option<Counters> {
        if memory {
            return None;
        }
        self.redis.as_mut()?.counters().await.ok()
    }

    /// Redis's cost per task between two readings, as JSON fields; with `--breakdown`,
    /// also a table per command on stderr.
    fn cost(&self, before: Option<Counters>, after: Option<Counters>, n: u64) -> Value {
        let (Some(b), Some(a)) = (before, after) else {
            return json!({ "redis_commands_per_task": null });
        };
        if n == 0 {
            return json!({ "redis_commands_per_task": null });
        }
        let per = |x: f64| (x / n as f64 * 100.0).round() / 100.0;
        let calls = a.calls().saturating_sub(b.calls());
        let cpu_us = (a.cpu_seconds - b.cpu_seconds) * 1e6;
        if self.args.breakdown {
            let mut rows: Vec<(String, u64, u64)> = a
                .by_command
                .iter()
                .map(|(name, &(c, u))| {
                    let (c0, u0) = b.by_command.get(name).copied().unwrap_or((0, 0));
                    (name.clone(), c.saturating_sub(c0), u.saturating_sub(u0))
                })
                .filter(|r| r.1 > 0)
                .collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.2));
            eprintln!(
                "{:<24} {:>12} {:>14} {:>12}",
                "command", "calls/task", "usec/task", "usec/call"
            );
            for (name, c, u) in rows {
                eprintln!(
                    "{name:<24} {:>12.3} {:>14.3} {:>12.2}",
                    c as f64 / n as f64,
                    u as f64 / n as f64,
                    u as f64 / c as f64
                );
            }
            eprintln!("{:<24} {:>12} {:>14.3}", "redis cpu", "", cpu_us / n as f64);
        }
        json!({
            "redis_commands_per_task": per(calls as f64),
            "redis_cpu_us_per_task": per(cpu_us),
        })
    }

    fn worker(&self, server: &Server) -> Worker {
        Worker::auto()
            .server(server)
            .concurrency(self.args.concurrency)
            .prefetch(self.args.prefetch)
    }
}

/// A reading of Redis's counters.
#[derive(Debug, Default)]
struct Counters {
    /// Calls and microseconds per command name.
    by_command: std::collections::BTreeMap<String, (u64, u64)>,
    /// CPU seconds Redis has used (user + system).
    cpu_seconds: f64,
}

impl Counters {
    fn calls(&self) -> u64 {
        self.by_command.values().map(|&(c, _)| c).sum()
    }
}

/// Adds the fields of `extra` (an object) to `base` (an object).
fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// Runs `n` tasks through a worker on `server`; returns seconds from the worker's start
/// until the last result is stored.
async fn drain_in_process(ctx: &Ctx, server: &Server, n: u64) -> Result<f64, BoxError> {
    let done = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(Notify::new());
    let bar = progress(n, "drain");
    let (d, a, b) = (done.clone(), all_done.clone(), bar.clone());
    let start = Instant::now();
    let worker = ctx
        .worker(server)
        .after_task(move |_, _| {
            let c = d.fetch_add(1, Ordering::Relaxed) + 1;
            if c % 1024 == 0 {
                b.set_position(c);
            }
            if c == n {
                a.notify_one();
            }
        })
        .spawn()?;
    all_done.notified().await;
    // after_task runs before the completion is stored: wait until the queue is settled.
    let queue = server.config().default_queue.clone();
    loop {
        let depth = server.admin()?.depth(&queue).await?;
        if depth.ready == 0 && depth.in_flight.unwrap_or(0) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    worker.shutdown().await?;
    Ok(secs)
}

async fn enqueue_noops(server: &Server, n: u64) -> Result<(), Error> {
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        batch.push(noop::s(i).into_raw()?);
        if batch.len() == 10_000 {
            server.send_batch(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        server.send_batch(batch).await?;
    }
    Ok(())
}

// ---- scenarios ----

async fn enqueue(ctx: &mut Ctx) -> Result<Vec<Value>, BoxError> {
    let n = ctx.args.tasks.unwrap_or(200_000);
    let server = ctx.server(false).await?;
    let before = ctx.commands(false).await;
    let start = Instant::now();
    let mut batch: Vec<RawSignature> = Vec::with_capacity(10_000);
    for i in 0..n {
        batch.push(add::s(i as i64, 1).into_raw()?);
        if batch.len() == 10_000 {
            server.send_batch(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        server.send_batch(batch).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let after = ctx.commands(false).await;
    let batch_result = merged(
        json!({
            "scenario": "enqueue_batch", "tasks": n, "seconds": secs, "tasks_per_sec": n as f64 / secs,
        }),
        ctx.cost(before, after, n),
    );

    let n1 = ctx.args.tasks.map_or(20_000, |t| (t / 10).max(1));
    let server = ctx.server(false).await?;
    let before = ctx.commands(false).await;
    let bar = progress(n1, "send");
    let start = Instant::now();
    for i in 0..n1 {
        add::s(i as i64, 1).send_with(&server).await?;
        if i % 1024 == 0 {
            bar.set_position(i);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let after = ctx.commands(false).await;
    let raw = match ctx.redis.as_mut() {
        Some(r) => Some(r.raw_lpush_rate(n1).await?),
        None => None,
    };
    let rate = n1 as f64 / secs;
    let single = merged(
        json!({
            "scenario": "enqueue_single", "tasks": n1, "seconds": secs, "tasks_per_sec": rate,
            "raw_lpush_per_sec": raw, "ratio_to_raw_lpush": raw.map(|r| rate / r),
        }),
        ctx.cost(before, after, n1),
    );
    Ok(vec![batch_result, single])
}

async fn e2e(ctx: &mut Ctx, memory: bool) -> Result<Vec<Value>, BoxError> {
    let n = ctx.args.tasks.unwrap_or(200_000);
    let server = ctx.server(memory).await?;
    enqueue_noops(&server, n).await?;
    let before = ctx.commands(memory).await;
    let mut cpu_us_per_task = None;
    let (secs, rss) = if ctx.args.workers > 0 && !memory {
        drain_in_children(ctx, &server, n).await?
    } else {
        let cpu_before = process_cpu_ns();
        let secs = drain_in_process(ctx, &server, n).await?;
        if let (Some(b), Some(a)) = (cpu_before, process_cpu_ns()) {
            cpu_us_per_task = Some(a.saturating_sub(b) as f64 / 1000.0 / n as f64);
        }
        (secs, own_peak_rss_mb())
    };
    let after = ctx.commands(memory).await;
    Ok(vec![merged(
        json!({
            "scenario": if memory { "e2e_memory" } else { "e2e" },
            "tasks": n, "seconds": secs, "tasks_per_sec": n as f64 / secs,
            "workers": if memory { 0 } else { ctx.args.workers },
            "concurrency": ctx.args.concurrency, "prefetch": ctx.args.prefetch,
            "worker_peak_rss_mb": rss,
            "worker_cpu_us_per_task": cpu_us_per_task,
        }),
        ctx.cost(before, after, n),
    )])
}

/// What worker statistics cost end to end: the e2e scenario run `--runs` times with
/// statistics off and as many with them on, in the order off, on, on, off, off, on, …
/// (so that neither setting always goes first, and the machine's drift over the
/// session falls on both), after one run that is not counted (the first run of a
/// process is slower: connections, allocator, page faults); reports every run, the
/// median of each setting and the cost of statistics in percent of the median
/// throughput.
async fn stats_cost(ctx: &mut Ctx) -> Result<Vec<Value>, BoxError> {
    let kept = ctx.args.stats;
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut out = Vec::new();
    ctx.args.stats = Switch::On;
    e2e(ctx, false).await?;
    if let Some(r) = ctx.redis.as_mut() {
        r.flush().await?;
    }
    for run in 0..ctx.args.runs.max(1) * 2 {
        // 0 1 1 0 0 1 1 0 …
        let on = run.div_ceil(2) % 2 == 1;
        ctx.args.stats = if on { Switch::On } else { Switch::Off };
        for mut v in e2e(ctx, false).await? {
            if let Some(rate) = v.get("tasks_per_sec").and_then(Value::as_f64) {
                rates[usize::from(on)].push(rate);
            }
            if let Some(us) = v.get("worker_cpu_us_per_task").and_then(Value::as_f64) {
                cpu[usize::from(on)].push(us);
            }
            if let Some(o) = v.as_object_mut() {
                o.insert("scenario".into(), json!("e2e_stats_run"));
                o.insert("stats".into(), json!(if on { "on" } else { "off" }));
            }
            out.push(v);
        }
        if let Some(r) = ctx.redis.as_mut() {
            r.flush().await?;
        }
    }
    ctx.args.stats = kept;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let off = median(&mut rates[0]);
    let on = median(&mut rates[1]);
    let cpu_off = median(&mut cpu[0]);
    let cpu_on = median(&mut cpu[1]);
    out.push(json!({
        "scenario": "e2e_stats",
        "tasks": ctx.args.tasks.unwrap_or(200_000), "runs_each": ctx.args.runs.max(1),
        "median_tasks_per_sec_stats_off": off, "median_tasks_per_sec_stats_on": on,
        "stats_cost_percent": if off > 0.0 { (off - on) / off * 100.0 } else { 0.0 },
        "median_worker_cpu_us_per_task_stats_off": cpu_off,
        "median_worker_cpu_us_per_task_stats_on": cpu_on,
        "stats_cpu_cost_percent": if cpu_off > 0.0 { (cpu_on - cpu_off) / cpu_off * 100.0 } else { 0.0 },
    }));
    Ok(out)
}

/// Drains with `--workers` child processes; seconds until the queue is empty and
/// nothing is in flight (results are stored before acknowledgement).
async fn drain_in_children(
    ctx: &Ctx,
    server: &Server,
    n: u64,
) -> Result<(f64, Option<f64>), BoxError> {
    let start = Instant::now();
    let mut children: Vec<Child> = Vec::new();
    for _ in 0..ctx.args.workers {
        children.push(worker_process(ctx)?);
    }
    let queue = server.config().default_queue.clone();
    let bar = progress(n, "drain");
    let mut peak: f64 = 0.0;
    loop {
        let depth = server.admin()?.depth(&queue).await?;
        for c in &children {
            peak = peak.max(kib_field(c.id(), "VmRSS:").unwrap_or(0.0));
        }
        bar.set_position(n.saturating_sub(depth.ready as u64));
        if depth.ready == 0 && depth.in_flight.unwrap_or(0) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    for c in &mut children {
        peak = peak.max(kib_field(c.id(), "VmHWM:").unwrap_or(0.0));
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for mut c in children {
        let _ = c.wait();
    }
    Ok((secs, Some(peak)))
}

async fn latency(ctx: &mut Ctx, memory: bool) -> Result<Vec<Value>, BoxError> {
    let n = ctx.args.tasks.unwrap_or(5_000);
    let server = ctx.server(memory).await?;
    let worker = ctx.worker(&server).spawn()?;
    // Warm up connections and code paths.
    for i in 0..100 {
        add::s(i, 1).send_with(&server).await?.get().await?;
    }
    let before = ctx.commands(memory).await;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let bar = progress(n, "latency");
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let r = add::s(i as i64, 1).send_with(&server).await?;
        r.get().await?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
        if i % 256 == 0 {
            bar.set_position(i);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let after = ctx.commands(memory).await;
    worker.shutdown().await?;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(vec![merged(
        json!({
            "scenario": if memory { "latency_memory" } else { "latency" },
            "tasks": n, "seconds": secs, "tasks_per_sec": n as f64 / secs,
            "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "max_ms": hist.max() as f64 / 1000.0,
        }),
        ctx.cost(before, after, n),
    )])
}

async fn chord(ctx: &mut Ctx) -> Result<Vec<Value>, BoxError> {
    let n = ctx.args.tasks.unwrap_or(10_000);
    let server = ctx.server(false).await?;
    let worker = ctx.worker(&server).spawn()?;
    let before = ctx.commands(false).await;
    let start = Instant::now();
    let result = group((0..n as i64).map(|i| add::s(i, 0)))
        .chord(sum::partial())
        .send_with(&server)
        .await?;
    let total = result.get().await?;
    let secs = start.elapsed().as_secs_f64();
    let after = ctx.commands(false).await;
    worker.shutdown().await?;
    let expected: i64 = (0..n as i64).sum();
    if total != expected {
        return Err(format!("chord sum {total} != {expected}").into());
    }
    Ok(vec![merged(
        json!({
            "scenario": "chord", "tasks": n, "seconds": secs, "tasks_per_sec": n as f64 / secs,
        }),
        ctx.cost(before, after, n),
    )])
}

async fn delayed_scenario(ctx: &mut Ctx) -> Result<Vec<Value>, BoxError> {
    let n = ctx.args.tasks.unwrap_or(20_000);
    let server = ctx.server(false).await?;
    let worker = ctx.worker(&server).spawn()?;
    let eta = SystemTime::now() + Duration::from_secs(2);
    let eta_ms = eta.duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let mut batch = Vec::with_capacity(n as usize);
    for _ in 0..n {
        batch.push(delayed::s(eta_ms).eta(eta).into_raw()?);
    }
    let mut handles = Vec::new();
    for chunk in batch.chunks(10_000) {
        handles.extend(chunk.iter().map(|r| (r.uuid, r.name.clone())));
        server.send_batch(chunk.to_vec()).await?;
    }
    // Wait for the last one to finish.
    for (uuid, name) in handles.iter().rev().take(1) {
        server.result::<()>(*uuid, name).get().await?;
    }
    let queue = server.config().default_queue.clone();
    loop {
        let d = server.admin()?.depth(&queue).await?;
        if d.ready == 0 && d.delayed == 0 && d.in_flight.unwrap_or(0) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.shutdown().await?;
    let earliest = EARLIEST_LATENESS_MS.load(Ordering::Relaxed);
    let latest = LATEST_LATENESS_MS.load(Ordering::Relaxed);
    Ok(vec![json!({
        "scenario": "delayed", "tasks": n,
        "first_start_after_eta_ms": earliest, "last_start_after_eta_ms": latest,
        "started_early": earliest < 0,
    })])
}

/// A worker process of this binary (`--role worker`) on the benchmark's Redis and prefix.
fn worker_process(ctx: &Ctx) -> Result<Child, BoxError> {
    Ok(Command::new(std::env::current_exe()?)
        .args([
            "--role",
            "worker",
            "--redis-url",
            &ctx.args.redis_url,
            "--prefix",
            &ctx.args.prefix,
        ])
        .args(["--concurrency", &ctx.args.concurrency.to_string()])
        .args(["--prefetch", &ctx.args.prefetch.to_string()])
        .args([
            "--stats",
            if ctx.args.stats == Switch::On {
                "on"
            } else {
                "off"
            },
        ])
        .stdout(Stdio::null())
        .spawn()?)
}

/// The idle worker runs in a process of its own, so its RSS is its own, not that of
/// the scenarios run before in this one.
async fn idle(ctx: &mut Ctx) -> Result<Vec<Value>, BoxError> {
    let _server = ctx.server(false).await?;
    let mut worker = worker_process(ctx)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = ctx.commands(false).await;
    let window = 10.0;
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let after = ctx.commands(false).await;
    let rss = kib_field(worker.id(), "VmRSS:");
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
    // Each INFO call counts itself once.
    let per_sec = match (before, after) {
        (Some(b), Some(a)) => {
            json!((a.calls().saturating_sub(b.calls()).saturating_sub(1)) as f64 / window)
        }
        _ => Value::Null,
    };
    Ok(vec![json!({
        "scenario": "idle", "seconds": window, "redis_commands_per_sec": per_sec,
        "worker_rss_mb": rss,
    })])
}

/// Raw Redis through the same client library: `PING` round trips one at a time (the
/// floor of any send-to-result latency) and `LPUSH` from 50 connections at once (the
/// issue's raw rate), so figures of runs on machines of different speed compare.
async fn reference(ctx: &mut Ctx) -> Result<Vec<Value>, BoxError> {
    const CLIENTS: u64 = 50;
    let n = ctx.args.tasks.unwrap_or(200_000);
    let client = redis::Client::open(ctx.args.redis_url.as_str())?;
    let key = format!("{}:reference", ctx.args.prefix);
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..5_100u32 {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        // The first hundred warm the connection up.
        if i >= 100 {
            hist.record(t.elapsed().as_micros().max(1) as u64)?;
        }
    }
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(client.get_multiplexed_async_connection().await?);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in clients {
        let key = key.clone();
        tasks.spawn(async move {
            for i in 0..n / CLIENTS {
                let _: () = redis::cmd("LPUSH")
                    .arg(&key)
                    .arg(i)
                    .query_async(&mut conn)
                    .await?;
            }
            Ok::<(), redis::RedisError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let secs = start.elapsed().as_secs_f64();
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(vec![json!({
        "scenario": "reference",
        "ping_p50_ms": ms(0.5), "ping_p99_ms": ms(0.99),
        "lpush_50_clients_per_sec": (n / CLIENTS * CLIENTS) as f64 / secs,
    })])
}

/// The engine alone, in fixed batches (fetch and complete `--prefetch`, 256 unless
/// told, no worker): what Redis
/// spends per task with no scheduling in the figure, so two versions of the scripts
/// compare run to run (also instruction by instruction, with Redis under callgrind).
async fn engine_cost(ctx: &mut Ctx) -> Result<Vec<Value>, BoxError> {
    let n = ctx.args.tasks.unwrap_or(200_000);
    let server = ctx.server(false).await?;
    let batch_size = server
        .config()
        .section::<machinery_redis::RedisConfig>()
        .fetch_batch;
    enqueue_noops(&server, n).await?;
    let queue = server.config().default_queue.clone();
    let queues = vec![queue.clone()];
    let (broker, backend) = (server.broker().clone(), server.backend().clone());
    let before = ctx.commands(false).await;
    let start = Instant::now();
    let mut done = 0u64;
    while done < n {
        let batch = broker
            .fetch(&queues, batch_size, Duration::from_secs(5))
            .await?;
        if batch.is_empty() {
            return Err(format!("the queue ran dry after {done} of {n} tasks").into());
        }
        let mut completions = Vec::with_capacity(batch.len());
        for delivery in batch {
            let raw = RawSignature::decode(&delivery.payload)?;
            let mut state = TaskState::new(raw.uuid, raw.name, queue.as_str(), State::Success);
            // MessagePack for 0: what `noop` returns first.
            state.result = Some(vec![0]);
            completions.push(Completion {
                delivery,
                state,
                also_store: Vec::new(),
                publish: Vec::new(),
                group: None,
                dead_letter: None,
                ends_chord: None,
                release_unique: None,
            });
        }
        for r in broker.complete(&completions, backend.as_ref()).await? {
            r?;
        }
        done += completions.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let after = ctx.commands(false).await;
    Ok(vec![merged(
        json!({
            "scenario": "engine", "tasks": n, "seconds": secs, "tasks_per_sec": n as f64 / secs,
            "batch": batch_size,
        }),
        ctx.cost(before, after, n),
    )])
}

async fn run_scenario(ctx: &mut Ctx, s: Scenario) -> Result<Vec<Value>, BoxError> {
    let out = match s {
        // `main` expands `all` into the other scenarios.
        Scenario::All => Vec::new(),
        Scenario::Reference => reference(ctx).await?,
        Scenario::Enqueue => enqueue(ctx).await?,
        Scenario::E2e => e2e(ctx, false).await?,
        Scenario::Latency => latency(ctx, false).await?,
        Scenario::Chord => chord(ctx).await?,
        Scenario::Delayed => delayed_scenario(ctx).await?,
        Scenario::Idle => idle(ctx).await?,
        Scenario::Engine => engine_cost(ctx).await?,
        Scenario::E2eMemory => e2e(ctx, true).await?,
        Scenario::LatencyMemory => latency(ctx, true).await?,
        Scenario::E2eStats => stats_cost(ctx).await?,
    };
    if let Some(r) = ctx.redis.as_mut() {
        r.flush().await?;
    }
    Ok(out)
}

fn print(values: &[Value], as_json: bool) {
    for v in values {
        if as_json {
            println!("{v}");
        } else {
            let obj = v.as_object().cloned().unwrap_or_default();
            let name = obj.get("scenario").and_then(Value::as_str).unwrap_or("?");
            let rest: Vec<String> = obj
                .iter()
                .filter(|(k, v)| *k != "scenario" && !v.is_null())
                .map(|(k, v)| match v.as_f64() {
                    Some(f) if f.fract() != 0.0 => format!("{k}={f:.3}"),
                    _ => format!("{k}={v}"),
                })
                .collect();
            println!("{name:<16} {}", rest.join("  "));
        }
    }
}

async fn worker_role(args: &Args) -> Result<(), BoxError> {
    let mut config = Config::default();
    config.broker = args.redis_url.clone();
    config
        .section_mut::<machinery_redis::RedisConfig>()
        .key_prefix = args.prefix.clone();
    config
        .section_mut::<machinery_redis::RedisConfig>()
        .fetch_batch = args.prefetch.clamp(1, 1000);
    config.default_queue = "bench".into();
    config.stats = args.stats == Switch::On;
    let server = Server::from_config(config).await?;
    Worker::auto()
        .server(&server)
        .concurrency(args.concurrency)
        .prefetch(args.prefetch)
        .run()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MACHINERY_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    let args = Args::parse();
    if args.role == Role::Worker {
        return worker_role(&args).await;
    }
    let needs_redis = !matches!(args.scenario, Scenario::E2eMemory | Scenario::LatencyMemory);
    let redis = if needs_redis {
        Some(Redis::connect(&args.redis_url, &args.prefix).await?)
    } else {
        None
    };
    let scenario = args.scenario;
    let as_json = args.json;
    let mut ctx = Ctx { args, redis };
    let scenarios = if scenario == Scenario::All {
        vec![
            Scenario::Reference,
            Scenario::Enqueue,
            Scenario::E2e,
            Scenario::Latency,
            Scenario::Chord,
            Scenario::Delayed,
            Scenario::Idle,
            Scenario::E2eMemory,
            Scenario::LatencyMemory,
        ]
    } else {
        vec![scenario]
    };
    for s in scenarios {
        let values = run_scenario(&mut ctx, s).await?;
        print(&values, as_json);
    }
    Ok(())
}
