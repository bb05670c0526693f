//! The Redis broker at the engine level: delivery, priority, delays, leases, fencing,
//! dead letters, limits and blocking reads, against a private `redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use machinery_core::engine::{Broker, BrokerAdmin, Completion, Delivery, Outgoing, ResultBackend};
use machinery_core::{Config, Error, State, TaskState};
use machinery_redis::{RedisBackend, RedisBroker};
use uuid::Uuid;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn msg(queue: &str, priority: u8, payload: &str) -> Outgoing {
    Outgoing {
        uuid: Uuid::new_v4(),
        queue: queue.to_owned(),
        eta: None,
        priority,
        payload: payload.as_bytes().to_vec(),
    }
}

async fn engine_on(url: &str, config: Config) -> (RedisBroker, RedisBackend, Config) {
    let config = common::config_for(url, config);
    let (broker, backend) = machinery_redis::connect(&config).await.unwrap();
    (broker, backend, config)
}

async fn engine(config: Config) -> (RedisBroker, RedisBackend, Config) {
    engine_on(&common::shared().url(), config).await
}

fn q() -> Vec<String> {
    vec!["q".to_owned()]
}

fn text(d: &Delivery) -> String {
    String::from_utf8(d.payload.clone()).unwrap()
}

fn texts(payloads: &[Vec<u8>]) -> Vec<String> {
    payloads
        .iter()
        .map(|p| String::from_utf8(p.clone()).unwrap())
        .collect()
}

fn with(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    f(&mut c);
    c
}

fn short_lease() -> Config {
    with(|c| c.visibility_timeout = std::time::Duration::from_secs(1))
}

#[tokio::test]
async fn publish_fetch_ack() {
    let (b, _, _) = engine(Config::default()).await;
    b.publish(vec![msg("q", 0, "a"), msg("q", 0, "b"), msg("q", 0, "c")])
        .await
        .unwrap();
    assert_eq!(b.depth("q").await.unwrap().ready, 3);
    let got = b.fetch(&q(), 10, Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert!(got.iter().all(|d| d.delivery_count == 1 && d.queue == "q"));
    let depth = b.depth("q").await.unwrap();
    assert_eq!((depth.ready, depth.in_flight), (0, Some(3)));
    for d in &got {
        b.ack(d).await.unwrap();
    }
    // Acked twice: the lease is gone.
    assert!(matches!(b.ack(&got[0]).await, Err(Error::LeaseLost { .. })));
    assert!(b.fetch(&q(), 10, Duration::ZERO).await.unwrap().is_empty());
    let depth = b.depth("q").await.unwrap();
    assert_eq!(
        (depth.ready, depth.delayed, depth.in_flight),
        (0, 0, Some(0))
    );
}

#[tokio::test]
async fn fetch_takes_at_most_max() {
    let (b, _, _) = engine(Config::default()).await;
    b.publish((0..10).map(|i| msg("q", 0, &i.to_string())).collect())
        .await
        .unwrap();
    assert_eq!(b.fetch(&q(), 3, Duration::ZERO).await.unwrap().len(), 3);
    assert_eq!(b.depth("q").await.unwrap().ready, 7);
}

#[tokio::test]
async fn priority_order_then_age() {
    let (b, _, _) = engine(Config::default()).await;
    b.publish(vec![
        msg("q", 0, "low-1"),
        msg("q", 5, "mid-1"),
        msg("q", 9, "high"),
        msg("q", 5, "mid-2"),
        msg("q", 0, "low-2"),
        msg("q", 200, "clamped-to-9"),
    ])
    .await
    .unwrap();
    let expected = ["high", "clamped-to-9", "mid-1", "mid-2", "low-1", "low-2"];
    assert_eq!(texts(&b.pending("q").await.unwrap()), expected);
    let mut order = Vec::new();
    while let Some(d) = b.fetch(&q(), 1, Duration::ZERO).await.unwrap().pop() {
        order.push(text(&d));
    }
    assert_eq!(order, expected);
}

/// A delayed message whose ETA has passed is listed as ready at the place fetch gives
/// it: by priority, then age, among the ready ones.
#[tokio::test]
async fn pending_lists_due_messages_in_their_place() {
    let (b, _, _) = engine(Config::default()).await;
    let eta = now_ms() + 1_000;
    let due = |priority, payload| {
        let mut m = msg("q", priority, payload);
        m.eta = Some(eta);
        m
    };
    b.publish(vec![
        msg("q", 0, "low-old"),
        due(5, "mid-due"),
        msg("q", 9, "high"),
        due(0, "low-due"),
        msg("q", 0, "low-new"),
    ])
    .await
    .unwrap();
    assert_eq!(b.delayed(Some("q")).await.unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let expected = ["high", "mid-due", "low-old", "low-due", "low-new"];
    assert_eq!(texts(&b.pending("q").await.unwrap()), expected);
    let mut order = Vec::new();
    while let Some(d) = b.fetch(&q(), 1, Duration::ZERO).await.unwrap().pop() {
        order.push(text(&d));
    }
    assert_eq!(order, expected);
}

#[tokio::test]
async fn delayed_messages_wait_for_their_eta() {
    let (b, _, _) = engine(Config::default()).await;
    let eta = now_ms() + 1_500;
    let mut later = msg("q", 0, "later");
    later.eta = Some(eta);
    let mut past = msg("q", 0, "past-eta");
    past.eta = Some(now_ms() - 10_000);
    b.publish(vec![later, past]).await.unwrap();
    assert_eq!(texts(&b.delayed(Some("q")).await.unwrap()), ["later"]);
    assert_eq!(texts(&b.delayed(None).await.unwrap()), ["later"]);
    assert_eq!(texts(&b.pending("q").await.unwrap()), ["past-eta"]);
    let first = b.fetch(&q(), 10, Duration::ZERO).await.unwrap();
    assert_eq!(first.iter().map(text).collect::<Vec<_>>(), ["past-eta"]);
    // Blocks until the ETA (the worker sleeps until the next due message), not earlier.
    let got = b.fetch(&q(), 10, Duration::from_secs(5)).await.unwrap();
    let at = now_ms();
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["later"]);
    assert!(at >= eta, "delivered {} ms early", eta - at);
    assert!(at < eta + 1_000, "delivered {} ms late", at - eta);
    assert!(b.delayed(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn many_delayed_messages_start_together_none_early() {
    let (b, _, _) = engine(Config::default()).await;
    let eta = now_ms() + 1_500;
    let batch: Vec<Outgoing> = (0..3_000)
        .map(|i| {
            let mut m = msg("q", 0, &i.to_string());
            m.eta = Some(eta);
            m
        })
        .collect();
    b.publish(batch).await.unwrap();
    assert_eq!(b.depth("q").await.unwrap().delayed, 3_000);
    let mut got = 0;
    let start = Instant::now();
    while got < 3_000 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "only {got} arrived"
        );
        let batch = b.fetch(&q(), 64, Duration::from_secs(5)).await.unwrap();
        let at = now_ms();
        if !batch.is_empty() {
            assert!(at >= eta, "delivered {} ms early", eta - at);
        }
        got += batch.len();
    }
    let late = now_ms() - eta;
    assert!(late < 2_000, "the last started {late} ms after the ETA");
}

#[tokio::test]
async fn expired_lease_is_delivered_again_with_a_higher_count() {
    let (b, _, _) = engine(short_lease()).await;
    b.publish(vec![msg("q", 0, "x")]).await.unwrap();
    let first = b.fetch(&q(), 1, Duration::ZERO).await.unwrap().remove(0);
    assert_eq!(first.delivery_count, 1);
    assert!(b.fetch(&q(), 1, Duration::ZERO).await.unwrap().is_empty());
    let started = Instant::now();
    let second = b
        .fetch(&q(), 1, Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(second.delivery_count, 2);
    assert_eq!(second.payload, first.payload);
    assert_ne!(second.receipt, first.receipt);
    let third = b
        .fetch(&q(), 1, Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(third.delivery_count, 3);
    // Fencing: only the current lease may settle.
    for stale in [&first, &second] {
        assert!(matches!(b.ack(stale).await, Err(Error::LeaseLost { .. })));
        assert!(matches!(
            b.release(stale, None).await,
            Err(Error::LeaseLost { .. })
        ));
        assert!(matches!(
            b.dead_letter(stale, &"stale".into()).await,
            Err(Error::LeaseLost { .. })
        ));
        assert_eq!(
            b.extend(std::slice::from_ref(stale)).await.unwrap(),
            [false]
        );
    }
    assert!(b.dead_letters("q").await.unwrap().is_empty());
    assert_eq!(b.depth("q").await.unwrap().in_flight, Some(1));
    b.ack(&third).await.unwrap();
}

#[tokio::test]
async fn stale_completion_writes_nothing() {
    let (b, backend, _) = engine(short_lease()).await;
    let uuid = Uuid::new_v4();
    b.publish(vec![msg("q", 0, "task")]).await.unwrap();
    let stale = b.fetch(&q(), 1, Duration::ZERO).await.unwrap().remove(0);
    // Its lease expires; another worker takes the message and finishes it.
    let current = b
        .fetch(&q(), 1, Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(current.delivery_count, 2);
    let completion = |d: &Delivery, result: &[u8], follow_up: &str| {
        let mut state = TaskState::new(uuid, "t", "q", State::Success);
        state.result = Some(result.to_vec());
        Completion {
            delivery: d.clone(),
            state,
            also_store: Vec::new(),
            publish: vec![msg("next", 0, follow_up)],
            group: None,
            dead_letter: None,
            ends_chord: None,
            release_unique: None,
        }
    };
    let r = b
        .complete(&[completion(&current, b"new", "from-current")], &backend)
        .await
        .unwrap();
    assert!(r[0].is_ok());
    // The worker that lost its lease comes back and tries to write its own result.
    let r = b
        .complete(&[completion(&stale, b"old", "from-stale")], &backend)
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::LeaseLost { .. })), "{r:?}");
    let state = backend.load("q", uuid).await.unwrap().unwrap();
    assert_eq!(state.result.as_deref(), Some(&b"new"[..]));
    assert_eq!(texts(&b.pending("next").await.unwrap()), ["from-current"]);
    let depth = b.depth("q").await.unwrap();
    assert_eq!((depth.ready, depth.in_flight), (0, Some(0)));
}

#[tokio::test]
async fn complete_settles_a_batch_and_reports_each() {
    let (b, backend, _) = engine(Config::default()).await;
    b.publish((0..5).map(|i| msg("q", 0, &i.to_string())).collect())
        .await
        .unwrap();
    let got = b.fetch(&q(), 5, Duration::ZERO).await.unwrap();
    b.ack(&got[2]).await.unwrap(); // settled elsewhere: its completion must fail alone
    let uuids: Vec<Uuid> = got.iter().map(|_| Uuid::new_v4()).collect();
    let completions: Vec<Completion> = got
        .iter()
        .zip(&uuids)
        .map(|(d, u)| Completion {
            delivery: d.clone(),
            state: TaskState::new(*u, "t", "q", State::Failure),
            also_store: vec![TaskState::new(Uuid::new_v4(), "t", "q", State::Failure)],
            publish: Vec::new(),
            group: None,
            dead_letter: None,
            ends_chord: None,
            release_unique: None,
        })
        .collect();
    let results = b.complete(&completions, &backend).await.unwrap();
    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, true, false, true, true]);
    for (i, u) in uuids.iter().enumerate() {
        assert_eq!(backend.load("q", *u).await.unwrap().is_some(), i != 2);
    }
    assert_eq!(b.depth("q").await.unwrap().in_flight, Some(0));
}

#[tokio::test]
async fn heartbeat_keeps_the_lease() {
    let (b, _, _) = engine(short_lease()).await;
    b.publish(vec![msg("q", 0, "slow")]).await.unwrap();
    let d = b.fetch(&q(), 1, Duration::ZERO).await.unwrap().remove(0);
    let until = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < until {
        assert_eq!(b.extend(std::slice::from_ref(&d)).await.unwrap(), [true]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(b.fetch(&q(), 1, Duration::ZERO).await.unwrap().is_empty());
    }
    b.ack(&d).await.unwrap();
    assert_eq!(b.extend(&[d]).await.unwrap(), [false]);
}

#[tokio::test]
async fn release_hands_back_now_or_later() {
    let (b, _, _) = engine(Config::default()).await;
    b.publish(vec![msg("q", 0, "first"), msg("q", 0, "second")])
        .await
        .unwrap();
    let d = b.fetch(&q(), 1, Duration::ZERO).await.unwrap().remove(0);
    assert_eq!(text(&d), "first");
    b.release(&d, None).await.unwrap();
    // Back at its old place, its delivery counted.
    assert_eq!(texts(&b.pending("q").await.unwrap()), ["first", "second"]);
    let again = b.fetch(&q(), 1, Duration::ZERO).await.unwrap().remove(0);
    assert_eq!((text(&again), again.delivery_count), ("first".into(), 2));
    b.release(&again, Some(Duration::from_millis(800)))
        .await
        .unwrap();
    assert_eq!(texts(&b.delayed(Some("q")).await.unwrap()), ["first"]);
    let next = b.fetch(&q(), 1, Duration::ZERO).await.unwrap().remove(0);
    assert_eq!(text(&next), "second");
    let started = Instant::now();
    let later = b
        .fetch(&q(), 1, Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((text(&later), later.delivery_count), ("first".into(), 3));
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn dead_letters_list_requeue_purge() {
    let (b, _, _) = engine(Config::default()).await;
    b.publish(vec![msg("q", 3, "bad-1"), msg("q", 0, "bad-2")])
        .await
        .unwrap();
    let got = b.fetch(&q(), 2, Duration::ZERO).await.unwrap();
    b.dead_letter(&got[0], &"cannot decode: reason with: colons".into())
        .await
        .unwrap();
    b.dead_letter(&got[1], &"".into()).await.unwrap();
    let dead = b.dead_letters("q").await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].reason, "cannot decode: reason with: colons");
    assert_eq!(dead[0].payload, b"bad-1");
    assert_eq!(dead[0].queue, "q");
    assert_eq!(
        (dead[1].reason.to_string().as_str(), &dead[1].payload[..]),
        ("", &b"bad-2"[..])
    );
    assert_eq!(b.depth("q").await.unwrap().in_flight, Some(0));
    assert_eq!(b.requeue_dead_letters("q").await.unwrap(), 2);
    assert!(b.dead_letters("q").await.unwrap().is_empty());
    assert_eq!(texts(&b.pending("q").await.unwrap()), ["bad-1", "bad-2"]);
    let got = b.fetch(&q(), 2, Duration::ZERO).await.unwrap();
    for d in &got {
        b.dead_letter(d, &"again".into()).await.unwrap();
    }
    assert_eq!(b.purge_dead_letters("q").await.unwrap(), 2);
    assert_eq!(b.purge_dead_letters("q").await.unwrap(), 0);
    assert!(b.dead_letters("q").await.unwrap().is_empty());
    assert_eq!(b.requeue_dead_letters("q").await.unwrap(), 0);
}

#[tokio::test]
async fn oversized_messages_are_refused_whole() {
    let (b, backend, _) = engine(with(|c| c.max_message_bytes = 1024)).await;
    let big = Outgoing {
        payload: vec![7; 1025],
        ..msg("q", 0, "")
    };
    let err = b.publish(vec![msg("q", 0, "small"), big.clone()]).await;
    assert!(
        matches!(
            err,
            Err(Error::MessageTooLarge {
                size: 1025,
                limit: 1024
            })
        ),
        "{err:?}"
    );
    let state = TaskState::new(big.uuid, "t", "q", State::Pending);
    let err = b
        .publish_with_states(vec![big.clone()], std::slice::from_ref(&state), &backend)
        .await;
    assert!(matches!(err, Err(Error::MessageTooLarge { .. })), "{err:?}");
    assert!(backend.load("q", big.uuid).await.unwrap().is_none());
    assert!(b.pending("q").await.unwrap().is_empty());
    b.publish(vec![Outgoing {
        payload: vec![7; 1024],
        ..big
    }])
    .await
    .unwrap();
    assert_eq!(b.pending("q").await.unwrap().len(), 1);
}

#[tokio::test]
async fn publish_with_states_writes_both() {
    let (b, backend, _) = engine(Config::default()).await;
    let m = msg("q", 0, "m");
    let state = TaskState::new(m.uuid, "t", "q", State::Pending);
    b.publish_with_states(vec![m.clone()], &[state], &backend)
        .await
        .unwrap();
    assert_eq!(
        backend.load("q", m.uuid).await.unwrap().map(|s| s.state),
        Some(State::Pending)
    );
    assert_eq!(texts(&b.pending("q").await.unwrap()), ["m"]);
}

#[tokio::test]
async fn foreign_members_are_delivered_as_payloads() {
    // Something other than this engine pushes raw bytes straight into the ready set.
    let (b, _, config) = engine(Config::default()).await;
    let mut con = common::shared().client().get_connection().unwrap();
    let garbage: Vec<u8> = vec![0xff, 0x00, 0xc1, b'/', b':'];
    let ready = format!(
        "{}:{{q:q}}:ready",
        config.section::<machinery_redis::RedisConfig>().key_prefix
    );
    let _: () = redis::cmd("ZADD")
        .arg(&ready)
        .arg(0)
        .arg(&garbage)
        .query(&mut con)
        .unwrap();
    b.publish(vec![msg("q", 0, "valid")]).await.unwrap();
    let got = b.fetch(&q(), 10, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 2);
    let bad = got
        .iter()
        .find(|d| d.payload == garbage)
        .expect("the garbage");
    b.dead_letter(bad, &"undecodable".into()).await.unwrap();
    let dead = b.dead_letters("q").await.unwrap();
    assert_eq!(dead[0].payload, garbage);
    let good = got.iter().find(|d| d.payload == b"valid").unwrap();
    b.ack(good).await.unwrap();
}

#[tokio::test]
async fn several_queues_take_turns() {
    let (b, _, _) = engine(Config::default()).await;
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.push(msg("a", 0, &format!("a{i}")));
        batch.push(msg("b", 0, &format!("b{i}")));
    }
    b.publish(batch).await.unwrap();
    let queues = vec!["a".to_owned(), "b".to_owned()];
    let mut seen_a = 0;
    let mut seen_b = 0;
    for _ in 0..4 {
        for d in b.fetch(&queues, 5, Duration::ZERO).await.unwrap() {
            match d.queue.as_str() {
                "a" => seen_a += 1,
                "b" => seen_b += 1,
                other => panic!("queue {other}"),
            }
        }
    }
    assert_eq!((seen_a, seen_b), (10, 10));
}

#[tokio::test]
async fn a_blocked_fetch_wakes_at_once_on_publish() {
    // Blocking reads outlive the response timeout of ordinary commands.
    let mut config = Config::default();
    config
        .section_mut::<machinery_redis::RedisConfig>()
        .response_timeout = std::time::Duration::from_millis(300);
    config.section_mut::<machinery_redis::RedisConfig>().block =
        std::time::Duration::from_millis(2_000);
    let (b, _, config) = engine(config).await;
    let started = Instant::now();
    assert!(
        b.fetch(&q(), 1, Duration::from_millis(1_200))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(1_150));
    let consumer = tokio::spawn({
        let config = config.clone();
        async move {
            let (b2, _) = machinery_redis::connect(&config).await.unwrap();
            let queues = vec!["other".to_owned(), "q".to_owned()];
            let got = b2.fetch(&queues, 1, Duration::from_secs(10)).await.unwrap();
            (Instant::now(), got)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    b.publish(vec![msg("q", 0, "wake")]).await.unwrap();
    let (arrived, got) = consumer.await.unwrap();
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["wake"]);
    let latency = arrived - sent;
    assert!(
        latency < Duration::from_millis(100),
        "woke after {latency:?}"
    );
}

#[tokio::test]
async fn cancelled_fetches_lose_nothing() {
    let (b, _, _) = engine(Config::default()).await;
    b.publish((0..40).map(|i| msg("q", 0, &i.to_string())).collect())
        .await
        .unwrap();
    let mut got: Vec<Delivery> = Vec::new();
    // Cancel fetches at every point of their round trip.
    for i in 0..200u64 {
        let limit = Duration::from_micros(i * 15);
        if let Ok(batch) = tokio::time::timeout(limit, b.fetch(&q(), 2, Duration::ZERO)).await {
            got.extend(batch.unwrap());
        }
    }
    // What cancelled fetches took comes back at once, uncounted (no visibility wait).
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 40 {
        assert!(
            Instant::now() < deadline,
            "only {} of 40 came back",
            got.len()
        );
        got.extend(b.fetch(&q(), 40, Duration::from_millis(200)).await.unwrap());
    }
    let mut payloads: Vec<String> = got.iter().map(text).collect();
    payloads.sort_by_key(|p| p.parse::<u32>().unwrap());
    assert_eq!(payloads, (0..40).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(got.iter().all(|d| d.delivery_count == 1), "{got:?}");
}

#[tokio::test]
async fn cancelled_blocking_fetch_leaves_the_wake_up_to_others() {
    let (b, _, config) = engine(Config::default()).await;
    let blocked = tokio::spawn({
        let config = config.clone();
        async move {
            let (b2, _) = machinery_redis::connect(&config).await.unwrap();
            b2.fetch(&q(), 1, Duration::from_secs(30)).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocked.abort();
    let _ = blocked.await;
    b.publish(vec![msg("q", 0, "x")]).await.unwrap();
    let started = Instant::now();
    let got = b.fetch(&q(), 1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Whatever the cancelled read's pipelined script took was handed back uncounted.
    assert_eq!(got[0].delivery_count, 1);
}

#[tokio::test]
async fn a_blocked_fetch_survives_a_script_flush() {
    // The fetch script pipelined behind a blocking read meets a server that forgot it
    // (restart without persistence, SCRIPT FLUSH): the fetch loads it again.
    let server = common::RedisServer::start(&[]);
    let (b, _, config) = engine_on(&server.url(), Config::default()).await;
    let consumer = tokio::spawn({
        let config = config.clone();
        async move {
            let (b2, _) = machinery_redis::connect(&config).await.unwrap();
            b2.fetch(&q(), 1, Duration::from_secs(10)).await.unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut con = server.client().get_connection().unwrap();
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut con).unwrap();
    // A bare wake-up token (a publish would load the scripts again first): the read
    // returns and the script behind it is refused.
    let wake = format!(
        "{}:{{wake}}:q",
        config.section::<machinery_redis::RedisConfig>().key_prefix
    );
    let () = redis::cmd("LPUSH")
        .arg(&wake)
        .arg(1)
        .query(&mut con)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!consumer.is_finished(), "nothing was queued yet");
    b.publish(vec![msg("q", 0, "after-flush")]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), consumer)
        .await
        .expect("the blocked fetch returns")
        .unwrap();
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["after-flush"]);
}

/// Calls of each command since the server started.
fn command_calls(client: &redis::Client) -> std::collections::HashMap<String, u64> {
    let mut con = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut con)
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test]
async fn an_idle_consumer_only_blocks() {
    let server = common::RedisServer::start(&[]);
    let mut config = Config::default();
    config.section_mut::<machinery_redis::RedisConfig>().block =
        std::time::Duration::from_millis(1_000);
    let (b, _, _) = engine_on(&server.url(), config).await;
    let client = server.client();
    // Connect the blocking connection and load the scripts first.
    let _ = b.fetch(&q(), 1, Duration::from_millis(300)).await.unwrap();
    let before = command_calls(&client);
    let _ = b
        .fetch(&q(), 1, Duration::from_millis(3_500))
        .await
        .unwrap();
    let after = command_calls(&client);
    let delta = |c: &str| after.get(c).unwrap_or(&0) - before.get(c).unwrap_or(&0);
    // About one blocking read per block_ms, and one script call after each (pipelined
    // behind it), none before: the last fetch found the queue drained.
    assert!((3..=5).contains(&delta("blpop")), "{after:?}");
    assert!(delta("evalsha") <= delta("blpop"), "{after:?}");
    // Nothing else is sent from outside a script (commands run by scripts count too):
    // an idle fetch script checks the pause flag and reads the sets, nothing more.
    assert!(delta("exists") <= delta("evalsha"), "{after:?}");
    let issued: u64 = ["get", "zcard", "lpop", "llen", "hget"]
        .iter()
        .map(|c| delta(c))
        .sum();
    assert_eq!(issued, 0, "{after:?}");
}

#[tokio::test]
async fn work_survives_a_redis_restart_with_persistence() {
    // Kill Redis (SIGKILL) and start it again on the same port and data directory:
    // the broker reconnects by itself and the queued messages are still there.
    let mut server =
        common::RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut config = Config::default();
    config
        .section_mut::<machinery_redis::RedisConfig>()
        .response_timeout = std::time::Duration::from_millis(1_000);
    let (b, _, _) = engine_on(&server.url(), config).await;
    b.publish(vec![msg("q", 0, "before")]).await.unwrap();
    server.kill();
    assert!(b.publish(vec![msg("q", 0, "while-down")]).await.is_err());
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        match b.fetch(&q(), 10, Duration::from_millis(500)).await {
            Ok(got) if !got.is_empty() => break got,
            _ => assert!(Instant::now() < deadline, "never reconnected"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["before"]);
    b.ack(&got[0]).await.unwrap();
}

/// A delayed message whose ETA has passed is ready, in listings and counts, before any
/// fetch promotes it: listed by priority, then age, like the rest.
#[tokio::test]
async fn due_delayed_messages_count_as_ready() {
    let (b, _, _) = engine(Config::default()).await;
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let soon = Outgoing {
        eta: Some(now_ms + 300),
        ..msg("q", 5, "soon")
    };
    let later = Outgoing {
        eta: Some(now_ms + 600_000),
        ..msg("q", 0, "later")
    };
    b.publish(vec![msg("q", 0, "low"), soon, later, msg("q", 9, "high")])
        .await
        .unwrap();
    assert_eq!(texts(&b.pending("q").await.unwrap()), ["high", "low"]);
    assert_eq!(
        texts(&b.delayed(Some("q")).await.unwrap()),
        ["soon", "later"]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        texts(&b.pending("q").await.unwrap()),
        ["high", "soon", "low"]
    );
    assert_eq!(texts(&b.delayed(None).await.unwrap()), ["later"]);
    let depth = b.depth("q").await.unwrap();
    assert_eq!((depth.ready, depth.delayed), (3, 1));
    // A fetch promotes it to the same place.
    let got = b.fetch(&q(), 3, Duration::ZERO).await.unwrap();
    let got: Vec<String> = got.iter().map(text).collect();
    assert_eq!(got, ["high", "soon", "low"]);
}

fn key_pttl(config: &Config, key: &str) -> i64 {
    let mut con = common::shared().client().get_connection().unwrap();
    redis::cmd("PTTL")
        .arg(format!(
            "{}:{key}",
            config.section::<machinery_redis::RedisConfig>().key_prefix
        ))
        .query(&mut con)
        .unwrap()
}

fn completion(d: &Delivery, state: TaskState) -> Completion {
    Completion {
        delivery: d.clone(),
        state,
        also_store: Vec::new(),
        publish: Vec::new(),
        group: None,
        dead_letter: None,
        ends_chord: None,
        release_unique: None,
    }
}

/// A chord's hashes have no TTL while it runs; the callback's final state, settled on
/// the chord's queue or from another one, gives them the results TTL.
#[tokio::test]
async fn chords_expire_only_after_their_callback() {
    let (b, backend, config) = engine(with(|c| {
        c.results_expire_in = std::time::Duration::from_secs(100)
    }))
    .await;
    for delivery_queue in ["cb", "other"] {
        let group = Uuid::new_v4();
        let callback = msg("cb", 0, "callback");
        backend.init_chord(group, 2, &callback).await.unwrap();
        let chord = format!("{{q:cb}}:chord:{group}");
        let results = format!("{chord}:results");
        b.publish(vec![msg("m", 0, "0"), msg("m", 0, "1")])
            .await
            .unwrap();
        let members = b.fetch(&["m".to_owned()], 2, Duration::ZERO).await.unwrap();
        let done: Vec<Completion> = members
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut state = TaskState::new(Uuid::new_v4(), "t", "m", State::Success);
                state.result = Some(vec![i as u8]);
                let mut c = completion(d, state);
                c.group = Some(machinery_core::engine::GroupMember {
                    group_uuid: group,
                    queue: "cb".into(),
                    index: i as u32,
                    count: 2,
                });
                c
            })
            .collect();
        b.complete(&done[..1], &backend).await.unwrap();
        assert_eq!(
            (key_pttl(&config, &chord), key_pttl(&config, &results)),
            (-1, -1)
        );
        b.complete(&done[1..], &backend).await.unwrap();
        assert_eq!(
            (key_pttl(&config, &chord), key_pttl(&config, &results)),
            (-1, -1)
        );
        // The callback: fired into `cb`; settled here from `delivery_queue` (the worker
        // took it from there, as if it had been moved).
        let fired = b
            .fetch(&["cb".to_owned()], 1, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(texts(&[fired[0].payload.clone()]), ["callback"]);
        b.ack(&fired[0]).await.unwrap();
        b.publish(vec![msg(delivery_queue, 0, "callback")])
            .await
            .unwrap();
        let d = b
            .fetch(&[delivery_queue.to_owned()], 1, Duration::ZERO)
            .await
            .unwrap()
            .remove(0);
        let mut retry = completion(&d, TaskState::new(callback.uuid, "t", "cb", State::Retry));
        retry.ends_chord = Some(group);
        retry.publish.push(msg(delivery_queue, 0, "callback"));
        assert!(b.complete(&[retry], &backend).await.unwrap()[0].is_ok());
        assert_eq!(key_pttl(&config, &chord), -1, "a RETRY keeps the chord");
        let d = b
            .fetch(&[delivery_queue.to_owned()], 1, Duration::ZERO)
            .await
            .unwrap()
            .remove(0);
        let mut end = completion(&d, TaskState::new(callback.uuid, "t", "cb", State::Success));
        end.ends_chord = Some(group);
        assert!(b.complete(&[end], &backend).await.unwrap()[0].is_ok());
        for key in [&chord, &results] {
            let ttl = key_pttl(&config, key);
            assert!((90_000..=100_000).contains(&ttl), "{key}: PTTL {ttl}");
        }
    }
}

/// A dead-lettering completion: the entry is in settle.lua's format, written with the
/// state (also one kept on another queue) in one step; the RETRY of a task whose state
/// is final leaves it (and its TTL).
#[tokio::test]
async fn complete_dead_letters_with_the_state() {
    let (b, backend, config) = engine(with(|c| {
        c.results_expire_in = std::time::Duration::from_secs(100)
    }))
    .await;
    b.publish(vec![msg("q", 0, "poison"), msg("q", 0, "again")])
        .await
        .unwrap();
    let got = b.fetch(&q(), 2, Duration::ZERO).await.unwrap();
    let (here, elsewhere) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = completion(&got[0], TaskState::new(here, "t", "q", State::Failure));
    c.dead_letter = Some("gave up: 5 deliveries".into());
    let mut f = completion(
        &got[1],
        TaskState::new(elsewhere, "t", "other", State::Failure),
    );
    f.dead_letter = Some("other".into());
    let r = b.complete(&[c, f], &backend).await.unwrap();
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    let dead = b.dead_letters("q").await.unwrap();
    let dead: Vec<(String, &[u8])> = dead
        .iter()
        .map(|d| (d.reason.to_string(), d.payload.as_slice()))
        .collect();
    assert_eq!(
        dead,
        [
            ("gave up: 5 deliveries".to_owned(), &b"poison"[..]),
            ("other".to_owned(), &b"again"[..])
        ]
    );
    assert_eq!(
        backend.load("q", here).await.unwrap().unwrap().state,
        State::Failure
    );
    assert_eq!(
        backend
            .load("other", elsewhere)
            .await
            .unwrap()
            .unwrap()
            .state,
        State::Failure
    );
    let depth = b.depth("q").await.unwrap();
    assert_eq!((depth.ready, depth.in_flight), (0, Some(0)));
    // Requeued, it runs again and its RETRY is settled: the FAILURE stays.
    assert_eq!(b.requeue_dead_letters("q").await.unwrap(), 2);
    let got = b.fetch(&q(), 1, Duration::ZERO).await.unwrap();
    let retry = completion(&got[0], TaskState::new(here, "t", "q", State::Retry));
    assert!(b.complete(&[retry], &backend).await.unwrap()[0].is_ok());
    assert_eq!(
        backend.load("q", here).await.unwrap().unwrap().state,
        State::Failure
    );
    let mut con = common::shared().client().get_connection().unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!(
            "{}:{{q:q}}:state:{here}",
            config.section::<machinery_redis::RedisConfig>().key_prefix
        ))
        .query(&mut con)
        .unwrap();
    assert!((80_000..=100_000).contains(&ttl), "PTTL {ttl}");
}

/// `forget` tells waiters on the task's channel to read again.
#[tokio::test]
async fn forget_publishes_to_waiters() {
    let (_, backend, config) = engine(Config::default()).await;
    let uuid = Uuid::new_v4();
    let client = common::shared().client();
    let mut con = client.get_connection().unwrap();
    let mut pubsub = con.as_pubsub();
    pubsub
        .subscribe(format!(
            "{}:done:{uuid}",
            config.section::<machinery_redis::RedisConfig>().key_prefix
        ))
        .unwrap();
    backend
        .store(&[TaskState::new(uuid, "t", "q", State::Started)])
        .await
        .unwrap();
    backend.forget("q", uuid).await.unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let message = pubsub.get_message().unwrap();
    let payload: Vec<u8> = message.get_payload().unwrap();
    assert!(
        TaskState::decode(&payload).is_err(),
        "not a state: read again"
    );
    assert!(backend.load("q", uuid).await.unwrap().is_none());
}
