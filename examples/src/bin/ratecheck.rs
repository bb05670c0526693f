//! Measures rate limits on Redis: worker processes drain a backlog of a task limited to
//! `--rate` per second, and the starts are counted per 10 s window; then the idle cost
//! of a worker with a limited task registered, and the drain rate of unlimited tasks
//! with and without limits configured.
//!
//! ```sh
//! cargo run --release -p examples --bin ratecheck -- --json
//! ```
//!
//! It starts its own `redis-server` on a free loopback port (and stops it at the end)
//! and its own worker processes (this binary, `--role worker`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use machinery_core::prelude::*;
use machinery_core::{Config, RateLimit};
use serde_json::{Value, json};

use machinery_redis as _;

use examples::{BoxError, PrivateRedis};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    Check,
    Worker,
}

#[derive(Debug, Parser)]
#[command(about = "Machinery for Rust rate-limit measurement")]
struct Args {
    /// Worker processes draining the limited backlog.
    #[arg(long, default_value_t = 10)]
    workers: usize,
    /// Length of the measured run, in seconds (counted in 10 s windows).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Unlimited tasks per drain of the throughput comparison.
    #[arg(long, default_value_t = 50_000)]
    tasks: u64,
    /// Skip the 60 s rate run (idle and unlimited measurements only).
    #[arg(long)]
    skip_rate: bool,
    /// Print one JSON object per measurement.
    #[arg(long)]
    json: bool,
    #[arg(long, value_enum, default_value = "check", hide = true)]
    role: Role,
    #[arg(long, hide = true, default_value = "")]
    redis_url: String,
    /// Worker: where to write the start times (µs since the epoch, one a line).
    #[arg(long, hide = true)]
    starts: Option<PathBuf>,
    /// Worker: configure a queue limit (on a queue it does not consume).
    #[arg(long, hide = true)]
    queue_limit: bool,
    #[arg(long, hide = true, default_value_t = 20)]
    concurrency: usize,
}

/// The limit measured: the issue's 100 starts a second.
const RATE: u32 = 100;

static STARTS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Records its start; at most 100 starts a second across every worker.
#[task(name = "ratecheck.limited", rate_limit = "100/s")]
async fn limited(i: u64) -> Result<u64, TaskError> {
    STARTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(now_us());
    Ok(i)
}

/// No limit, no work.
#[task(name = "ratecheck.noop")]
async fn noop(i: u64) -> Result<u64, TaskError> {
    Ok(i)
}

fn config(url: &str, queue_limit: bool) -> Config {
    let mut config = Config::default();
    config.broker = url.to_owned();
    config.default_queue = "ratecheck".into();
    config.stats = false;
    if queue_limit {
        config
            .rate_limits
            .insert("ratecheck-other".into(), RateLimit::new(RATE, 1000));
    }
    config
}

async fn worker_role(args: &Args) -> Result<(), BoxError> {
    let server = Server::from_config(config(&args.redis_url, args.queue_limit)).await?;
    Worker::new()
        .task(limited::ENTRY)
        .task(noop::ENTRY)
        .server(&server)
        .queue("ratecheck")
        .concurrency(args.concurrency)
        .prefetch(args.concurrency)
        .run()
        .await?;
    if let Some(path) = &args.starts {
        let starts = STARTS.lock().unwrap_or_else(|p| p.into_inner());
        let text: String = starts.iter().map(|t| format!("{t}\n")).collect();
        std::fs::write(path, text)?;
    }
    Ok(())
}

fn spawn_worker(url: &str, starts: Option<&Path>, queue_limit: bool) -> Result<Child, BoxError> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--role", "worker", "--redis-url", url]);
    if let Some(path) = starts {
        cmd.arg("--starts").arg(path);
    }
    if queue_limit {
        cmd.arg("--queue-limit");
    }
    Ok(cmd.stdout(Stdio::null()).spawn()?)
}

fn stop(children: Vec<Child>) {
    for c in &children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for mut c in children {
        let _ = c.wait();
    }
}

async fn send<F>(server: &Server, n: u64, make: F) -> Result<(), BoxError>
where
    F: Fn(u64) -> Result<machinery_core::RawSignature, machinery_core::Error>,
{
    let mut batch = Vec::with_capacity(1_000);
    for i in 0..n {
        batch.push(make(i)?);
        if batch.len() == 1_000 {
            server.send_batch(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        server.send_batch(batch).await?;
    }
    Ok(())
}

/// Worker processes drain a backlog of the limited task for `seconds`; starts counted
/// per 10 s window from the first.
async fn rate(args: &Args, url: &str) -> Result<Value, BoxError> {
    let server = Server::from_config(config(url, false)).await?;
    let seconds = args.seconds.max(10);
    let backlog = u64::from(RATE) * (seconds + 15);
    send(&server, backlog, |i| limited::s(i).into_raw()).await?;
    let dir = std::env::temp_dir().join(format!("ratecheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut children = Vec::new();
    for k in 0..args.workers {
        let path = dir.join(format!("starts-{k}"));
        children.push(spawn_worker(url, Some(&path), false)?);
    }
    eprintln!(
        "ratecheck: {} workers draining {backlog} tasks limited to {RATE}/s for {seconds} s",
        args.workers
    );
    tokio::time::sleep(Duration::from_secs(seconds + 3)).await;
    stop(children);
    let mut starts = Vec::new();
    for k in 0..args.workers {
        let text = std::fs::read_to_string(dir.join(format!("starts-{k}")))?;
        starts.extend(text.lines().filter_map(|l| l.parse::<u64>().ok()));
    }
    let _ = std::fs::remove_dir_all(&dir);
    starts.sort_unstable();
    let first = *starts.first().ok_or("no task started")?;
    let windows: Vec<u64> = (0..seconds / 10)
        .map(|w| {
            let (from, to) = (first + w * 10_000_000, first + (w + 1) * 10_000_000);
            starts.iter().filter(|t| (from..to).contains(*t)).count() as u64
        })
        .collect();
    let expected = f64::from(RATE) * 10.0;
    let worst = windows
        .iter()
        .map(|n| (*n as f64 - expected) / expected * 100.0)
        .fold(0.0f64, |a, d| if d.abs() > a.abs() { d } else { a });
    let within = windows
        .iter()
        .all(|n| (*n as f64 - expected).abs() <= expected * 0.05);
    Ok(json!({
        "measurement": "rate", "workers": args.workers, "limit_per_sec": RATE,
        "seconds": seconds, "starts_per_10s_window": windows,
        "worst_deviation_percent": (worst * 100.0).round() / 100.0,
        "within_5_percent": within,
    }))
}

/// Redis commands per second of one idle worker with the limited task registered (and,
/// with `queue_limit`, a queue limit configured), counted with INFO commandstats.
async fn idle(url: &str, queue_limit: bool) -> Result<Value, BoxError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    let worker = spawn_worker(url, None, queue_limit)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = |info: String| -> BTreeMap<String, u64> {
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let n = rest
                    .split_once("calls=")?
                    .1
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), n))
            })
            .collect()
    };
    let before = calls(
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?,
    );
    let window = 20.0;
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let after = calls(
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?,
    );
    let mut by_command = BTreeMap::new();
    for (name, n) in &after {
        let mut d = n - before.get(name).copied().unwrap_or(0);
        if name == "info" {
            // The first INFO counts itself.
            d = d.saturating_sub(1);
        }
        if d > 0 {
            by_command.insert(name.clone(), d);
        }
    }
    let total: u64 = by_command.values().sum();
    stop(vec![worker]);
    let per_sec = total as f64 / window;
    Ok(json!({
        "measurement": "idle", "queue_limit_configured": queue_limit,
        "limited_task_registered": true, "seconds": window,
        "redis_commands_per_sec": (per_sec * 100.0).round() / 100.0,
        "commands_in_window": by_command,
    }))
}

/// Drains `n` unlimited tasks with two worker processes; tasks per second.
async fn drain(url: &str, n: u64, queue_limit: bool) -> Result<f64, BoxError> {
    let server = Server::from_config(config(url, false)).await?;
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    send(&server, n, |i| noop::s(i).into_raw()).await?;
    let start = Instant::now();
    let children = vec![
        spawn_worker(url, None, queue_limit)?,
        spawn_worker(url, None, queue_limit)?,
    ];
    let admin = server.admin()?;
    loop {
        let depth = admin.depth("ratecheck").await?;
        if depth.ready == 0 && depth.in_flight.unwrap_or(0) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    stop(children);
    Ok(n as f64 / secs)
}

/// Unlimited drains with and without limits configured, alternating, six of each.
async fn unlimited(args: &Args, url: &str) -> Result<Value, BoxError> {
    let mut plain = Vec::new();
    let mut limited = Vec::new();
    for run in 0..6 {
        // Alternating which goes first, so that neither always follows the other.
        if run % 2 == 0 {
            plain.push(drain(url, args.tasks, false).await?);
            limited.push(drain(url, args.tasks, true).await?);
        } else {
            limited.push(drain(url, args.tasks, true).await?);
            plain.push(drain(url, args.tasks, false).await?);
        }
    }
    let runs = json!({ "no_limits": plain.clone(), "limits_configured": limited.clone() });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, l) = (median(&mut plain), median(&mut limited));
    Ok(json!({
        "measurement": "unlimited", "tasks": args.tasks, "worker_processes": 2, "runs_each": 6, "runs": runs,
        "tasks_per_sec_no_limits": p.round(),
        "tasks_per_sec_limits_configured": l.round(),
        "ratio": (l / p * 1000.0).round() / 1000.0,
    }))
}

fn print(v: &Value, as_json: bool) {
    if as_json {
        println!("{v}");
        return;
    }
    if let Value::Object(map) = v {
        let fields: BTreeMap<_, _> = map.iter().collect();
        let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{}", line.join("  "));
    }
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
    let redis = PrivateRedis::start()?;
    redis.wait_ready().await?;
    let url = redis.url.clone();
    if !args.skip_rate {
        print(&rate(&args, &url).await?, args.json);
    }
    print(&idle(&url, false).await?, args.json);
    print(&idle(&url, true).await?, args.json);
    print(&unlimited(&args, &url).await?, args.json);
    drop(redis);
    Ok(())
}
