//! Measures the dashboard against a deep queue: the overview, the queues page and a
//! page of pending tasks, served over HTTP, with 10 and then `--tasks` (default
//! 1,000,000) pending tasks in one queue. For each page and depth: the Redis commands
//! one request sends (`INFO commandstats`) and the time of a request (median and
//! slowest of `--requests`).
//!
//! ```sh
//! cargo run --release -p examples --bin dashboard_scale
//! ```
//!
//! It starts its own `redis-server` on a free loopback port (and stops it at the end)
//! and prints one JSON object.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::Parser;
use machinery_core::{Config, RawSignature, Server};
use machinery_dashboard::{Dashboard, DashboardConfig};
use serde_json::{Value, json};

use machinery_redis as _;

use examples::{BoxError, PrivateRedis};

#[derive(Debug, Parser)]
#[command(about = "Machinery dashboard: page cost with a deep queue")]
struct Args {
    /// Pending tasks of the deep queue.
    #[arg(long, default_value_t = 1_000_000)]
    tasks: usize,
    /// Requests per page and depth.
    #[arg(long, default_value_t = 20)]
    requests: usize,
}

/// The queue measured.
const QUEUE: &str = "deep";

/// `count` signatures of a task nobody runs, for the deep queue.
fn pending(from: usize, count: usize) -> Result<Vec<RawSignature>, BoxError> {
    (from..from + count)
        .map(|i| {
            let args = rmp_serde::to_vec(&(i as u64, "payload of a waiting task"))?;
            let mut raw = RawSignature::new("dashboard_scale::waiting", args);
            raw.routing_key = QUEUE.to_owned();
            Ok(raw)
        })
        .collect()
}

/// Calls per Redis command, without `INFO`.
async fn commandstats(
    con: &mut redis::aio::MultiplexedConnection,
) -> Result<BTreeMap<String, u64>, BoxError> {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            (name != "info").then(|| (name.to_owned(), calls))
        })
        .collect())
}

/// `GET path` over a fresh HTTP/1.1 connection (blocking: run it off the runtime);
/// the status and the body's length.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, usize), BoxError> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    Ok((status, body))
}

/// One page at one depth: commands of one request, and request times.
async fn measure(
    addr: SocketAddr,
    con: &mut redis::aio::MultiplexedConnection,
    path: &str,
    requests: usize,
) -> Result<Value, BoxError> {
    let before = commandstats(con).await?;
    let owned = path.to_owned();
    let (status, bytes) = tokio::task::spawn_blocking(move || get(addr, &owned)).await??;
    if status != 200 {
        return Err(format!("{path} answered {status}").into());
    }
    let after = commandstats(con).await?;
    let commands: BTreeMap<String, u64> = after
        .iter()
        .filter_map(|(name, calls)| {
            let delta = calls - before.get(name).copied().unwrap_or(0);
            (delta > 0).then(|| (name.clone(), delta))
        })
        .collect();
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let owned = path.to_owned();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || get(addr, &owned)).await??;
        times.push(started.elapsed());
    }
    times.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    Ok(json!({
        "redis_commands": commands.values().sum::<u64>(),
        "by_command": commands,
        "bytes": bytes,
        "median_ms": ms(times[times.len() / 2]),
        "max_ms": ms(times[times.len() - 1]),
    }))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let requests = args.requests.max(1);
    let redis = PrivateRedis::start()?;
    let mut con = redis.wait_ready().await?;
    let mut config = Config::default();
    config.broker.clone_from(&redis.url);
    let server = Server::from_config(config).await?;

    let mut settings = DashboardConfig::default();
    settings.refresh = Duration::ZERO;
    let dashboard = Dashboard::new(server.inspect()?, settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        machinery_dashboard::serve(&dashboard, listener, async {
            let _ = stopped.await;
        })
        .await
    });

    let pages = [
        "/".to_owned(),
        "/queues".to_owned(),
        format!("/tasks?queue={QUEUE}&list=pending"),
    ];
    let mut out = serde_json::Map::new();
    let mut seeded = 0;
    for depth in [10, args.tasks.max(10)] {
        let started = Instant::now();
        while seeded < depth {
            let n = (depth - seeded).min(10_000);
            server.send_batch(pending(seeded, n)?).await?;
            seeded += n;
        }
        let seeding = started.elapsed();
        let mut at = serde_json::Map::new();
        at.insert("seed_s".into(), json!(seeding.as_secs_f64()));
        for path in &pages {
            at.insert(path.clone(), measure(addr, &mut con, path, requests).await?);
        }
        out.insert(depth.to_string(), Value::Object(at));
    }
    let _ = stop.send(());
    serving.await??;
    let same = pages.iter().all(|p| {
        let counts: Vec<&Value> = out.values().map(|at| &at[p]["by_command"]).collect();
        counts.windows(2).all(|w| w[0] == w[1])
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "pending": out,
            "requests_per_page": requests,
            "same_redis_commands": same,
        }))?
    );
    Ok(())
}
