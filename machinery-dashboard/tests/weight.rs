//! What the dashboard costs: the overview page with everything it loads stays under
//! 200 KB, and the pages cost the same number of Redis commands whether a queue holds
//! 10 pending tasks or hundreds of thousands (`MACHINERY_DASHBOARD_SCALE` sets how
//! many; `examples/src/bin/dashboard_scale.rs` measures a million in release).
//!
//! Run with `--nocapture` to see the figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{ENGINES, Engine, Env};
use machinery_core::{RawSignature, TaskError, Worker, task};
use machinery_dashboard::DashboardConfig;

/// The budget of the overview page and its assets, in bytes.
const BUDGET: usize = 200 * 1024;
/// Pending tasks of the big queue by default (debug builds seed about 20,000 a second).
const DEFAULT_SCALE: usize = 200_000;

#[task(name = "dash_weight::work")]
async fn work(n: u32) -> Result<u32, TaskError> {
    if n.is_multiple_of(5) {
        return Err(TaskError::msg(format!("{n} is a multiple of five")));
    }
    Ok(n * 2)
}

/// Polls `probe` until it returns `Some`, for up to 20 s.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `count` signatures of a task nobody runs, for `queue`.
fn pending(queue: &str, count: usize) -> Vec<RawSignature> {
    (0..count)
        .map(|i| {
            let args = rmp_serde::to_vec(&(i as u64, "payload of a waiting task")).unwrap();
            let mut raw = RawSignature::new("dash_weight::waiting", args);
            raw.routing_key = queue.to_owned();
            raw
        })
        .collect()
}

/// The URLs of every `<link href>`, `<script src>` and `<img src>` of `html`.
fn assets(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (tag, attribute) in [
        ("<link", "href=\""),
        ("<script", "src=\""),
        ("<img", "src=\""),
    ] {
        let mut rest = html;
        while let Some(at) = rest.find(tag) {
            let open = &rest[at..];
            let end = open.find('>').unwrap_or(open.len());
            let element = &open[..end];
            if let Some(start) = element.find(attribute) {
                let value = &element[start + attribute.len()..];
                let value = &value[..value.find('"').unwrap_or(value.len())];
                found.push(value.replace("&amp;", "&"));
            }
            rest = &open[end..];
        }
    }
    found
}

/// A dashboard over `engine` with some of everything: three queues, a worker alive,
/// tasks processed and failed (statistics and recent failures), tasks waiting.
async fn busy(engine: Engine) -> (Env, machinery_core::WorkerHandle) {
    let env = Env::new(engine).await;
    let worker = Worker::new()
        .task(work::ENTRY)
        .queue("weight")
        .name("weight-worker")
        .server(&env.server)
        .spawn()
        .expect("start a worker");
    for n in 1..=20 {
        work::s(n)
            .queue("weight")
            .send_with(&env.server)
            .await
            .expect("send");
    }
    env.server
        .send_batch(pending("emails", 30))
        .await
        .expect("seed emails");
    env.server
        .send_batch(pending("reports", 5))
        .await
        .expect("seed reports");
    let inspector = env.server.inspect().expect("inspect");
    eventually("the worker to run every task", || async {
        let queues = inspector.queues().await.ok()?;
        let q = queues.iter().find(|q| q.name == "weight")?;
        (q.ready == 0 && q.in_flight == 0).then_some(())
    })
    .await;
    eventually("the worker to be registered", || async {
        (!inspector.workers().await.ok()?.is_empty()).then_some(())
    })
    .await;
    (env, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_and_its_assets_weigh_under_200_kb() {
    for engine in ENGINES {
        let (env, worker) = busy(engine).await;
        let page = env.get("/").await;
        assert_eq!(page.status, 200, "{engine:?}: {}", page.body);
        let mut total = page.body.len();
        let mut lines = vec![format!("  /  {} bytes", page.body.len())];
        let urls = assets(&page.body);
        assert!(
            urls.iter().any(|u| u.contains(".css")),
            "{engine:?}: the overview loads no stylesheet: {urls:?}"
        );
        for url in &urls {
            if url.starts_with("data:") {
                // Already counted in the page.
                continue;
            }
            assert!(
                url.starts_with('/'),
                "{engine:?}: the overview loads {url} from elsewhere: everything is embedded"
            );
            let asset = env.get(url).await;
            assert_eq!(asset.status, 200, "{engine:?}: {url}");
            total += asset.body.len();
            lines.push(format!("  {url}  {} bytes", asset.body.len()));
        }
        println!(
            "{engine:?}: the overview and its {} assets weigh {total} bytes ({:.1} KB; budget {} KB)\n{}",
            urls.len(),
            total as f64 / 1024.0,
            BUDGET / 1024,
            lines.join("\n")
        );
        assert!(
            total < BUDGET,
            "{engine:?}: the overview and its assets weigh {total} bytes, over {BUDGET}"
        );
        worker.shutdown().await.expect("stop the worker");
    }
}

/// Calls per Redis command (`INFO commandstats`), without the `INFO` calls.
async fn commandstats(con: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .expect("INFO commandstats");
    text.lines()
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
        .collect()
}

/// What one request cost: Redis commands by name, their total, and the time taken.
#[derive(Debug, Clone, PartialEq)]
struct Cost {
    commands: BTreeMap<String, u64>,
    total: u64,
    took: Duration,
}

/// Requests `path` three times and keeps the cheapest (in commands) of the three, so a
/// stray command from elsewhere cannot make a difference.
async fn cost(env: &Env, con: &mut redis::aio::MultiplexedConnection, path: &str) -> Cost {
    let mut best: Option<Cost> = None;
    for _ in 0..3 {
        let before = commandstats(con).await;
        let started = Instant::now();
        let reply = env.get(path).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let after = commandstats(con).await;
        let commands: BTreeMap<String, u64> = after
            .iter()
            .filter_map(|(name, calls)| {
                let delta = calls - before.get(name).copied().unwrap_or(0);
                (delta > 0).then(|| (name.clone(), delta))
            })
            .collect();
        let total = commands.values().sum();
        let this = Cost {
            commands,
            total,
            took,
        };
        if best.as_ref().is_none_or(|b| this.total < b.total) {
            best = Some(this);
        }
    }
    best.expect("three measurements")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cost_the_same_redis_commands_with_10_or_many_pending_tasks() {
    let scale: usize = std::env::var("MACHINERY_DASHBOARD_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SCALE);
    const QUEUE: &str = "big";
    let pages = [
        "/".to_owned(),
        "/queues".to_owned(),
        format!("/tasks?queue={QUEUE}&list=pending"),
    ];
    // One page of the listing shows 10 tasks: the small queue fills it exactly.
    let mut settings = DashboardConfig::default();
    settings.page_size = 10;
    let env = Env::with_config(Engine::Redis, settings).await;
    let redis = env.redis.as_ref().expect("a redis engine");
    let client = redis::Client::open(redis.url()).expect("redis client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");

    env.server
        .send_batch(pending(QUEUE, 10))
        .await
        .expect("seed 10");
    let mut small = Vec::new();
    for path in &pages {
        small.push(cost(&env, &mut con, path).await);
    }

    let started = Instant::now();
    let mut seeded = 10;
    while seeded < scale {
        let n = (scale - seeded).min(10_000);
        env.server
            .send_batch(pending(QUEUE, n))
            .await
            .expect("seed a batch");
        seeded += n;
    }
    let seeding = started.elapsed();
    let depth = env
        .server
        .inspect()
        .expect("inspect")
        .queues()
        .await
        .expect("queues")
        .into_iter()
        .find(|q| q.name == QUEUE)
        .map(|q| q.ready)
        .expect("the big queue");
    assert_eq!(depth, scale as u64, "pending tasks seeded");
    println!("seeded {scale} pending tasks in {seeding:.1?}");

    for (path, small) in pages.iter().zip(&small) {
        let big = cost(&env, &mut con, path).await;
        println!(
            "{path}: 10 pending: {} Redis commands, {:.1?}; {scale} pending: {} commands, {:.1?}\n  \
             10: {:?}\n  {scale}: {:?}",
            small.total, small.took, big.total, big.took, small.commands, big.commands
        );
        // A page that read nothing would prove nothing.
        assert!(small.total > 0, "{path} sent no command to Redis");
        assert_eq!(
            small.commands, big.commands,
            "{path} costs other Redis commands with {scale} pending tasks than with 10"
        );
    }
}
