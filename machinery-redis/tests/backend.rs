//! The Redis result backend: states with their TTL, and waiting without polling.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use machinery_core::engine::ResultBackend;
use machinery_core::{Config, Error, State, TaskState};
use machinery_redis::RedisBackend;
use uuid::Uuid;

async fn backend_on(url: &str, config: Config) -> (RedisBackend, Config) {
    let config = common::config_for(url, config);
    let (_, backend) = machinery_redis::connect(&config).await.unwrap();
    (backend, config)
}

async fn backend(config: Config) -> (RedisBackend, Config) {
    backend_on(&common::shared().url(), config).await
}

fn state(uuid: Uuid, s: State) -> TaskState {
    let mut t = TaskState::new(uuid, "t", "q", s);
    if s == State::Success {
        t.result = Some(vec![0x2a]);
    }
    t
}

fn with(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    f(&mut c);
    c
}

fn pttl(config: &Config, uuid: Uuid) -> i64 {
    let mut con = common::shared().client().get_connection().unwrap();
    redis::cmd("PTTL")
        .arg(format!(
            "{}:{{q:q}}:state:{uuid}",
            config.section::<machinery_redis::RedisConfig>().key_prefix
        ))
        .query(&mut con)
        .unwrap()
}

#[tokio::test]
async fn states_expire_after_the_results_ttl() {
    let (b, config) = backend(with(|c| {
        c.results_expire_in = std::time::Duration::from_secs(100)
    }))
    .await;
    let uuid = Uuid::new_v4();
    let stored = state(uuid, State::Success);
    b.store(std::slice::from_ref(&stored)).await.unwrap();
    let ttl = pttl(&config, uuid);
    assert!((90_000..=100_000).contains(&ttl), "PTTL {ttl}");
    assert_eq!(b.load("q", uuid).await.unwrap().unwrap(), stored);
    b.forget("q", uuid).await.unwrap();
    assert!(b.load("q", uuid).await.unwrap().is_none());

    let (b, _) = backend(with(|c| {
        c.results_expire_in = std::time::Duration::from_secs(1)
    }))
    .await;
    b.store(&[state(uuid, State::Success)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert!(b.load("q", uuid).await.unwrap().is_none());
}

#[tokio::test]
async fn only_final_states_have_a_ttl() {
    let (b, config) = backend(with(|c| {
        c.results_expire_in = std::time::Duration::from_secs(100)
    }))
    .await;
    let uuid = Uuid::new_v4();
    for open in [
        State::Pending,
        State::Received,
        State::Started,
        State::Retry,
    ] {
        b.store(&[state(uuid, open)]).await.unwrap();
        assert_eq!(pttl(&config, uuid), -1, "{open} has no TTL");
    }
    b.store(&[state(uuid, State::Failure)]).await.unwrap();
    let ttl = pttl(&config, uuid);
    assert!((90_000..=100_000).contains(&ttl), "PTTL {ttl}");
    // A late non-final write leaves the final state and its TTL.
    b.store(&[state(uuid, State::Started)]).await.unwrap();
    assert_eq!(
        b.load("q", uuid).await.unwrap().unwrap().state,
        State::Failure
    );
    let ttl = pttl(&config, uuid);
    assert!((80_000..=100_000).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn finality_is_read_from_the_state_field_not_the_bytes() {
    let (b, _) = backend(Config::default()).await;
    // A UUID whose 16 bytes hold the encoding of `state: SUCCESS`: a byte search would
    // take this STARTED for a final state and refuse to replace it.
    let mut bytes = [0u8; 16];
    bytes[..14].copy_from_slice(b"\xa5state\xa7SUCCESS");
    let uuid = Uuid::from_bytes(bytes);
    let mut started = state(uuid, State::Started);
    started.name = "state SUCCESS \u{a5}".into();
    started.group_uuid = Some(uuid);
    b.store(&[started]).await.unwrap();
    b.store(&[state(uuid, State::Retry)]).await.unwrap();
    assert_eq!(
        b.load("q", uuid).await.unwrap().unwrap().state,
        State::Retry
    );
    // Long strings (str8/str16 headers), a large result, every optional field: still
    // recognised as final.
    let uuid = Uuid::new_v4();
    let mut done = state(uuid, State::Success);
    done.name = "n".repeat(300);
    done.queue = "q".into();
    done.result = Some(vec![0xa7; 70_000]);
    done.error = Some("e".repeat(40));
    done.retried = 70_000;
    done.group_uuid = Some(Uuid::new_v4());
    b.store(std::slice::from_ref(&done)).await.unwrap();
    b.store(&[state(uuid, State::Pending)]).await.unwrap();
    assert_eq!(b.load("q", uuid).await.unwrap().unwrap(), done);
}

#[tokio::test]
async fn ttl_zero_keeps_states_forever() {
    let (b, config) = backend(with(|c| {
        c.results_expire_in = std::time::Duration::from_secs(0)
    }))
    .await;
    let uuid = Uuid::new_v4();
    b.store(&[state(uuid, State::Success)]).await.unwrap();
    assert_eq!(pttl(&config, uuid), -1);
}

#[tokio::test]
async fn wait_wakes_when_the_state_is_written() {
    let (b, _) = backend(Config::default()).await;
    let b = Arc::new(b);
    let uuid = Uuid::new_v4();
    b.store(&[state(uuid, State::Started)]).await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move {
            let s = b.wait("q", uuid, Some(Duration::from_secs(10))).await;
            (Instant::now(), s)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = Instant::now();
    b.store(&[state(uuid, State::Success)]).await.unwrap();
    let (woken, s) = waiter.await.unwrap();
    assert_eq!(s.unwrap().state, State::Success);
    let latency = woken - written;
    assert!(
        latency < Duration::from_millis(100),
        "woken after {latency:?}"
    );
}

#[tokio::test]
async fn wait_sees_a_task_that_finished_before() {
    let (b, _) = backend(Config::default()).await;
    let uuid = Uuid::new_v4();
    b.store(&[state(uuid, State::Failure)]).await.unwrap();
    let s = b
        .wait("q", uuid, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(s.state, State::Failure);
    let s = b.wait("q", uuid, None).await.unwrap();
    assert_eq!(s.state, State::Failure);
}

#[tokio::test]
async fn wait_timeout_and_missing_are_distinct() {
    let (b, _) = backend(Config::default()).await;
    let uuid = Uuid::new_v4();
    assert!(matches!(
        b.wait("q", uuid, Some(Duration::from_millis(100))).await,
        Err(Error::ResultMissing(u)) if u == uuid
    ));
    b.store(&[state(uuid, State::Pending)]).await.unwrap();
    let started = Instant::now();
    assert!(matches!(
        b.wait("q", uuid, Some(Duration::from_millis(300))).await,
        Err(Error::Timeout { .. })
    ));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn waiters_share_one_pubsub_connection_and_unsubscribe() {
    let server = common::RedisServer::start(&[]);
    let (b, config) = backend_on(&server.url(), Config::default()).await;
    let b = Arc::new(b);
    let uuids: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
    let pending: Vec<TaskState> = uuids.iter().map(|u| state(*u, State::Pending)).collect();
    b.store(&pending).await.unwrap();
    let waiters: Vec<_> = uuids
        .iter()
        .map(|u| {
            let b = b.clone();
            let u = *u;
            tokio::spawn(async move { b.wait("q", u, Some(Duration::from_secs(20))).await })
        })
        .collect();
    let mut con = server.client().get_connection().unwrap();
    let pattern = format!(
        "{}:done:*",
        config.section::<machinery_redis::RedisConfig>().key_prefix
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(&pattern)
            .query(&mut con)
            .unwrap();
        if channels.len() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{} subscribed", channels.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut con)
        .unwrap();
    assert_eq!(clients.lines().count(), 1, "{clients}");
    let done: Vec<TaskState> = uuids.iter().map(|u| state(*u, State::Success)).collect();
    b.store(&done).await.unwrap();
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap().state, State::Success);
    }
    // Every channel is given up once its waiters are gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(&pattern)
            .query(&mut con)
            .unwrap();
        if channels.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} still subscribed",
            channels.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn waiters_survive_a_dropped_pubsub_connection() {
    let server = common::RedisServer::start(&[]);
    let (b, _) = backend_on(&server.url(), Config::default()).await;
    let b = Arc::new(b);
    let uuid = Uuid::new_v4();
    b.store(&[state(uuid, State::Started)]).await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.wait("q", uuid, Some(Duration::from_secs(10))).await }
    });
    let mut con = server.client().get_connection().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let subscribed: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut con).unwrap();
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query(&mut con)
            .unwrap();
        if subscribed == 0 && !channels.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut con)
        .unwrap();
    assert_eq!(killed, 1);
    // Give the waiter time to subscribe again on a new connection, then finish the task.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.store(&[state(uuid, State::Success)]).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap().state, State::Success);
    // A later wait works too, on the new connection.
    let other = Uuid::new_v4();
    b.store(&[state(other, State::Pending)]).await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.wait("q", other, Some(Duration::from_secs(10))).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.store(&[state(other, State::Success)]).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap().state, State::Success);
}

#[tokio::test]
async fn cancelled_waits_give_their_channel_up() {
    let server = common::RedisServer::start(&[]);
    let (b, _) = backend_on(&server.url(), Config::default()).await;
    let uuid = Uuid::new_v4();
    b.store(&[state(uuid, State::Pending)]).await.unwrap();
    for _ in 0..20 {
        let _ = tokio::time::timeout(Duration::from_millis(50), b.wait("q", uuid, None)).await;
    }
    let mut con = server.client().get_connection().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query(&mut con)
            .unwrap();
        if channels.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{channels:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And waiting on it again still works.
    let b = Arc::new(b);
    let waited = tokio::spawn({
        let b = b.clone();
        async move { b.wait("q", uuid, Some(Duration::from_secs(5))).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.store(&[state(uuid, State::Success)]).await.unwrap();
    assert_eq!(waited.await.unwrap().unwrap().state, State::Success);
}

/// A backend with short timeouts on `server`, a task STARTED there, and a waiter
/// without a timeout on it, subscribed by the time this returns.
async fn waiting_on(
    server: &common::RedisServer,
) -> (
    Arc<RedisBackend>,
    Uuid,
    tokio::task::JoinHandle<machinery_core::Result<TaskState>>,
) {
    let config = with(|c| {
        c.section_mut::<machinery_redis::RedisConfig>()
            .response_timeout = std::time::Duration::from_millis(300);
        c.section_mut::<machinery_redis::RedisConfig>()
            .connect_timeout = std::time::Duration::from_millis(300);
    });
    let (b, _) = backend_on(&server.url(), config).await;
    let b = Arc::new(b);
    let uuid = Uuid::new_v4();
    b.store(&[state(uuid, State::Started)]).await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.wait("q", uuid, None).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    (b, uuid, waiter)
}

/// A waiter without a timeout on a server that stops answering without closing its
/// connections (a silent partition) gets an error instead of waiting forever, and one
/// whose server comes back in time gets its result.
#[tokio::test]
async fn silent_partition_does_not_hang_waiters() {
    let server = common::RedisServer::start(&[]);
    let (_b, _, waiter) = waiting_on(&server).await;
    server.pause();
    let outcome = tokio::time::timeout(Duration::from_secs(20), waiter).await;
    server.resume();
    let err = outcome
        .expect("the waiter gave up within 20 s")
        .unwrap()
        .unwrap_err();
    assert!(!matches!(err, Error::Timeout { .. }), "{err:?}");

    // Back within the waiter's reconnection bound: the result arrives.
    let (b, uuid, waiter) = waiting_on(&server).await;
    server.pause();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.resume();
    b.store(&[state(uuid, State::Success)]).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter got its result")
        .unwrap()
        .unwrap();
    assert_eq!(s.state, State::Success);
}
