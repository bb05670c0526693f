//! Task progress on Redis: the key and its TTL, the pub/sub channel shared with result
//! waiters, streams that survive a dropped connection, and no polling.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use machinery_core::engine::ResultBackend;
use machinery_core::{AsyncResult, Config, State, TaskState};
use machinery_redis::{RedisBackend, RedisConfig};
use uuid::Uuid;

async fn backend_on(url: &str, config: Config) -> (Arc<RedisBackend>, Config) {
    let config = common::config_for(url, config);
    let (_, backend) = machinery_redis::connect(&config).await.unwrap();
    (Arc::new(backend), config)
}

fn prefix(config: &Config) -> String {
    config.section::<RedisConfig>().key_prefix
}

fn state(uuid: Uuid, s: State) -> TaskState {
    TaskState::new(uuid, "t", "q", s)
}

/// `n` (below 128) encoded as MessagePack: one byte.
fn value(n: u8) -> Vec<u8> {
    assert!(n < 128);
    vec![n]
}

/// Polls `cond` every 20 ms for at most 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn channels(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(pattern)
        .query(con)
        .unwrap()
}

#[tokio::test]
async fn the_value_has_the_results_ttl_and_reaches_watchers() {
    let server = common::RedisServer::start(&[]);
    let mut con = server.client().get_connection().unwrap();
    for (ttl, expect_ttl) in [(Duration::from_secs(60), true), (Duration::ZERO, false)] {
        let mut config = Config::default();
        config.results_expire_in = ttl;
        let (b, config) = backend_on(&server.url(), config).await;
        let uuid = Uuid::new_v4();
        let mut watch = b.watch_progress("q", uuid).await.unwrap();
        b.set_progress("q", uuid, &value(7)).await.unwrap();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .unwrap(),
            Some(value(7))
        );
        let key = format!("{}:{{q:q}}:progress:{uuid}", prefix(&config));
        let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap();
        if expect_ttl {
            assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
        } else {
            assert_eq!(pttl, -1, "kept forever with a results TTL of 0");
        }
        assert_eq!(b.progress("q", uuid).await.unwrap(), Some(value(7)));
        assert_eq!(b.progress("other", uuid).await.unwrap(), None);
        // Found by UUID alone through the task's state (a PENDING state registers its
        // queue for lookups).
        assert_eq!(b.progress("", uuid).await.unwrap(), None, "no state stored");
        b.store(&[state(uuid, State::Pending)]).await.unwrap();
        assert_eq!(b.progress("", uuid).await.unwrap(), Some(value(7)));
        // Dropping the watch gives its channel up.
        drop(watch);
        let pattern = format!("{}:progress:*", prefix(&config));
        eventually("the channel is unsubscribed", || {
            channels(&mut con, &pattern).is_empty()
        })
        .await;
    }
}

#[tokio::test]
async fn streams_share_the_waiters_pubsub_connection() {
    let server = common::RedisServer::start(&[]);
    let (b, config) = backend_on(&server.url(), Config::default()).await;
    let uuids: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    let started: Vec<TaskState> = uuids.iter().map(|u| state(*u, State::Started)).collect();
    b.store(&started).await.unwrap();
    let streams: Vec<_> = uuids
        .iter()
        .map(|u| {
            let handle: AsyncResult<()> = AsyncResult::new(*u, "t", "q", b.clone());
            tokio::spawn(async move {
                let mut s = handle.progress_stream::<u32>();
                let mut seen = Vec::new();
                while let Some(v) = s.next().await {
                    seen.push(v.unwrap());
                }
                seen
            })
        })
        .collect();
    let mut con = server.client().get_connection().unwrap();
    let p = prefix(&config);
    eventually("every stream subscribed to progress and done", || {
        channels(&mut con, &format!("{p}:progress:*")).len() == 50
            && channels(&mut con, &format!("{p}:done:*")).len() == 50
    })
    .await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut con)
        .unwrap();
    assert_eq!(clients.lines().count(), 1, "{clients}");
    for u in &uuids {
        b.set_progress("q", *u, &value(1)).await.unwrap();
    }
    let done: Vec<TaskState> = uuids.iter().map(|u| state(*u, State::Success)).collect();
    b.store(&done).await.unwrap();
    for s in streams {
        let seen = tokio::time::timeout(Duration::from_secs(10), s)
            .await
            .expect("each stream ends at the final state")
            .unwrap();
        assert_eq!(seen, vec![1]);
    }
    eventually("every channel is given up", || {
        channels(&mut con, &format!("{p}:*")).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_stream_survives_a_dropped_pubsub_connection() {
    let server = common::RedisServer::start(&[]);
    let (b, _) = backend_on(&server.url(), Config::default()).await;
    let uuid = Uuid::new_v4();
    b.store(&[state(uuid, State::Started)]).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle: AsyncResult<()> = AsyncResult::new(uuid, "t", "q", b.clone());
    let follower = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut s = handle.progress_stream::<u32>();
            while let Some(v) = s.next().await {
                seen.lock().unwrap().push(v.unwrap());
            }
        }
    });
    let mut con = server.client().get_connection().unwrap();
    eventually("subscribed", || {
        !channels(&mut con, "*:progress:*").is_empty()
    })
    .await;
    b.set_progress("q", uuid, &value(1)).await.unwrap();
    eventually("the first value", || seen.lock().unwrap().as_slice() == [1]).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut con)
        .unwrap();
    assert_eq!(killed, 1);
    // Written while the stream may be between connections: it reads the value again
    // when it subscribes again, or gets it published. Written again until seen, for
    // the case it was written before the drop was noticed (repeats are not yielded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().last() != Some(&2) {
        assert!(Instant::now() < deadline, "{:?}", seen.lock().unwrap());
        b.set_progress("q", uuid, &value(2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.store(&[state(uuid, State::Success)]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the stream ends at the final state")
        .unwrap();
    assert_eq!(seen.lock().unwrap().as_slice(), [1, 2]);
}

/// A stream waiting on a quiet task sends Redis nothing: no polling.
#[tokio::test]
async fn a_waiting_stream_does_not_poll() {
    let server = common::RedisServer::start(&[]);
    let (b, _) = backend_on(&server.url(), Config::default()).await;
    let uuid = Uuid::new_v4();
    b.store(&[state(uuid, State::Started)]).await.unwrap();
    let handle: AsyncResult<()> = AsyncResult::new(uuid, "t", "q", b.clone());
    let follower = tokio::spawn(async move {
        let mut s = handle.progress_stream::<u32>();
        let mut n = 0;
        while let Some(v) = s.next().await {
            v.unwrap();
            n += 1;
        }
        n
    });
    let mut con = server.client().get_connection().unwrap();
    eventually("subscribed to progress and done", || {
        channels(&mut con, "*:progress:*").len() == 1 && channels(&mut con, "*:done:*").len() == 1
    })
    .await;
    let processed = |con: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(con).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = processed(&mut con);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = processed(&mut con);
    // The two INFO calls themselves; the pub/sub keep-alive pings every two response
    // timeouts (10 s by default), so none falls in here.
    assert!(
        after - before <= 2,
        "{} commands while idle",
        after - before
    );
    b.store(&[state(uuid, State::Success)]).await.unwrap();
    assert_eq!(follower.await.unwrap(), 0);
}
