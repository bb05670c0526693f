//! Unique tasks on Redis across processes: ten producer processes with five concurrent
//! senders each (50 senders) race to send one task under one unique key, then under one
//! UUID (`with_uuid`); exactly one task is enqueued each time and every sender learns
//! its UUID.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use machinery_core::{Config, Server};
use machinery_redis as _;
use tests::RedisServer;

const PROCESSES: usize = 10;
const SENDERS: usize = 5;

/// Runs the producer processes against `redis` with `env` and returns every line they
/// printed (one per send).
fn race(redis: &RedisServer, prefix: &str, env: (&str, String)) -> Vec<String> {
    let start_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_000;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_unique_sender"))
                .env("MACHINERY_BROKER", redis.url())
                .env("MACHINERY_REDIS_KEY_PREFIX", prefix)
                .env("UNIQUE_SENDERS", SENDERS.to_string())
                .env("UNIQUE_START_AT", start_at.to_string())
                .env(env.0, &env.1)
                .stdout(Stdio::piped())
                .spawn()
                .expect("start unique_sender")
        })
        .collect();
    let mut lines = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("unique_sender runs");
        assert!(out.status.success(), "unique_sender failed: {out:?}");
        lines.extend(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
    }
    assert_eq!(lines.len(), PROCESSES * SENDERS, "{lines:?}");
    lines
}

/// The one task that was sent; every other line is a duplicate of it.
fn exactly_one_sent(lines: &[String]) -> String {
    let sent: Vec<&String> = lines.iter().filter(|l| l.starts_with("sent ")).collect();
    assert_eq!(sent.len(), 1, "{lines:?}");
    let uuid = sent[0].trim_start_matches("sent ").to_owned();
    for l in lines {
        assert!(
            l.ends_with(&uuid),
            "every sender gets the one task's UUID: {lines:?}"
        );
    }
    uuid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_senders_in_ten_processes_enqueue_one_task() {
    let redis = RedisServer::start();
    let prefix = format!("unique-race-{}", uuid::Uuid::now_v7());
    let config = Config::from_sources(
        None,
        [
            ("MACHINERY_BROKER".into(), redis.url()),
            ("MACHINERY_REDIS_KEY_PREFIX".into(), prefix.clone()),
        ],
    )
    .unwrap();
    let server = Server::from_config(config).await.unwrap();
    let queue = server.config().default_queue.clone();

    let lines = race(&redis, &prefix, ("UNIQUE_KEY", "one-key".into()));
    let uuid = exactly_one_sent(&lines);
    let pending = server.pending_tasks(&queue).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].uuid.to_string(), uuid);
    assert_eq!(pending[0].unique.as_ref().unwrap().key, "one-key");

    let id = uuid::Uuid::now_v7();
    let lines = race(&redis, &prefix, ("UNIQUE_UUID", id.to_string()));
    assert_eq!(exactly_one_sent(&lines), id.to_string());
    let pending = server.pending_tasks(&queue).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending.iter().filter(|p| p.uuid == id).count(), 1);
    // The key is still held (its task waits): a third race sends nothing.
    let lines = race(&redis, &prefix, ("UNIQUE_KEY", "one-key".into()));
    assert!(
        lines.iter().all(|l| l == &format!("duplicate {uuid}")),
        "{lines:?}"
    );
}
