//! Listing a queue of 1,000,000 pending tasks page by page keeps the CLI small: the
//! `machinery tasks ls --all` process never holds more than a page, and its peak
//! resident set stays under 50 MB.
//!
//! Measured on 2 cores with debug builds: about 30 s to seed, 60 s to list, a peak of
//! 17 MB; under 2 minutes in all, so it runs with the other tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use machinery_core::engine::Outgoing;
use machinery_core::{Config, RawSignature, Server};
use machinery_redis as _;
use tests::RedisServer;

const TASKS: usize = 1_000_000;
const LIMIT_KB: u64 = 50 * 1024;

/// The peak resident set (`VmHWM`, kB) of a running process; `None` once it exited.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Publishes `n` small messages to `queue` in batches of 10,000, without states.
async fn seed(server: &Server, queue: &str, n: usize) {
    const BATCH: usize = 10_000;
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        let mut messages: Vec<Outgoing> = Vec::with_capacity(k);
        for i in 0..k {
            let mut raw = RawSignature::new("bulk::item", rmp_serde::to_vec(&(i,)).unwrap());
            raw.routing_key = queue.to_owned();
            messages.push(server.outgoing(&mut raw).unwrap());
        }
        server.broker().publish(messages).await.unwrap();
        left -= k;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_pending_tasks_are_listed_in_pages_under_50_mb() {
    let redis = RedisServer::start();
    let config =
        Config::from_sources(None, [("MACHINERY_BROKER".to_owned(), redis.url())]).unwrap();
    let server = Server::from_config(config).await.unwrap();
    let started = Instant::now();
    seed(&server, "big", TASKS).await;
    let seeded = started.elapsed();

    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_machinery"));
    for (name, _) in std::env::vars() {
        if name.starts_with("MACHINERY_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .args(["--json", "--broker", &redis.url()])
        .args([
            "tasks", "ls", "--queue", "big", "--state", "pending", "--all",
        ])
        .args(["--limit", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = HashSet::with_capacity(TASKS);
        // Read as text (a JSON parse per line would make this reader, not the CLI,
        // the bottleneck of a debug build).
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            assert!(line.contains(r#""name":"bulk::item""#), "{line}");
            let uuid = line
                .split_once(r#""uuid":""#)
                .and_then(|(_, rest)| rest.get(..36))
                .and_then(|u| uuid::Uuid::parse_str(u).ok())
                .unwrap_or_else(|| panic!("no uuid in {line}"));
            assert!(seen.insert(uuid.as_u128()), "listed twice: {line}");
        }
        seen.len()
    });
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Some(kb) = peak_rss_kb(pid) {
            peak = peak.max(kb);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let listed = reader.join().unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "seeded {TASKS} tasks in {seeded:?}; listed {listed} in pages of 100 in {:?}; \
         peak RSS of the CLI {} kB",
        started.elapsed(),
        peak
    );
    assert_eq!(listed, TASKS);
    assert!(peak > 0, "the CLI's memory was never read");
    assert!(peak < LIMIT_KB, "peak RSS {peak} kB is over {LIMIT_KB} kB");
}
