//! Revoking tasks on Redis: the outcome for each stored state, the store rule (only a
//! new send replaces a REVOKED state), the complete script's refusal of a task revoked
//! while it ran, revoked chord members, and the revocations set and channel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use machinery_core::engine::{
    Broker, BrokerAdmin, Completion, Delivery, GroupMember, Outgoing, ResultBackend, Revocation,
    RevokeOutcome,
};
use machinery_core::{Config, Error, State, TaskState};
use machinery_redis::{RedisBackend, RedisBroker, RedisConfig};
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

fn with_ttl(secs: u64) -> Config {
    let mut c = Config::default();
    c.results_expire_in = Duration::from_secs(secs);
    c
}

async fn engine_on(url: &str, config: Config) -> (RedisBroker, RedisBackend, Config) {
    let config = common::config_for(url, config);
    let (broker, backend) = machinery_redis::connect(&config).await.unwrap();
    (broker, backend, config)
}

async fn engine(config: Config) -> (RedisBroker, RedisBackend, Config) {
    engine_on(&common::shared().url(), config).await
}

fn prefix(config: &Config) -> String {
    config.section::<RedisConfig>().key_prefix.clone()
}

fn redis_con() -> redis::Connection {
    common::shared().client().get_connection().unwrap()
}

fn pttl(config: &Config, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(format!("{}:{key}", prefix(config)))
        .query(&mut redis_con())
        .unwrap()
}

fn state(uuid: Uuid, queue: &str, s: State) -> TaskState {
    let mut t = TaskState::new(uuid, "job", queue, s);
    match s {
        State::Success => t.result = Some(vec![0x2a]),
        State::Failure | State::Retry => t.error = Some("boom".into()),
        State::Revoked => t.error = Some("revoked".into()),
        _ => {}
    }
    t
}

fn msg(queue: &str, payload: &str) -> Outgoing {
    Outgoing {
        uuid: Uuid::new_v4(),
        queue: queue.to_owned(),
        eta: None,
        priority: 0,
        payload: payload.as_bytes().to_vec(),
    }
}

fn completion(d: &Delivery, state: TaskState) -> Completion {
    Completion {
        delivery: d.clone(),
        state,
        also_store: Vec::new(),
        publish: Vec::new(),
        group: None,
        dead_letter: None,
        release_unique: None,
        ends_chord: None,
    }
}

fn q(name: &str) -> Vec<String> {
    vec![name.to_owned()]
}

/// Polls `f` every 20 ms until it is true, for at most 10 s.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PENDING and RETRY become REVOKED (error text: the reason; the results TTL; waiters
/// woken); RECEIVED and STARTED are left to their worker; final states stay; no state
/// is Unknown. Every revocation is recorded, whatever it found.
#[tokio::test]
async fn revoke_decides_by_the_stored_state() {
    let (_, b, config) = engine(with_ttl(100)).await;
    let until = Some(now_ms() + 100_000);
    for s in [State::Pending, State::Retry] {
        let uuid = Uuid::new_v4();
        b.store(&[state(uuid, "q", s)]).await.unwrap();
        let waiter = {
            let b = machinery_redis::connect(&config).await.unwrap().1;
            tokio::spawn(async move { b.wait("q", uuid, Some(Duration::from_secs(10))).await })
        };
        // The waiter reads the state first; give it a moment to subscribe (its result
        // is right whether it wakes by the message or by its read).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let outcome = b.revoke("q", uuid, "stop it", until).await.unwrap();
        assert_eq!(outcome, RevokeOutcome::Revoked, "{s}");
        let stored = b.load("q", uuid).await.unwrap().unwrap();
        assert_eq!(stored.state, State::Revoked);
        assert_eq!(stored.error.as_deref(), Some("stop it"));
        assert_eq!((stored.name.as_str(), stored.queue.as_str()), ("job", "q"));
        let ttl = pttl(&config, &format!("{{q:q}}:state:{uuid}"));
        assert!((90_000..=100_000).contains(&ttl), "PTTL {ttl}");
        let woken = waiter.await.unwrap().unwrap();
        assert_eq!(woken.state, State::Revoked);
        assert!(matches!(
            woken.value::<i64>(),
            Err(Error::Revoked { reason, .. }) if reason == "stop it"
        ));
    }
    let cases = [
        (State::Received, RevokeOutcome::Cancelling),
        (State::Started, RevokeOutcome::Cancelling),
        (State::Success, RevokeOutcome::Finished(State::Success)),
        (State::Failure, RevokeOutcome::Finished(State::Failure)),
        (State::Revoked, RevokeOutcome::Finished(State::Revoked)),
    ];
    for (s, expected) in cases {
        let uuid = Uuid::new_v4();
        let before = state(uuid, "q", s);
        b.store(std::slice::from_ref(&before)).await.unwrap();
        assert_eq!(b.revoke("q", uuid, "r", until).await.unwrap(), expected);
        assert_eq!(b.load("q", uuid).await.unwrap().unwrap(), before, "{s}");
    }
    let unknown = Uuid::new_v4();
    assert_eq!(
        b.revoke("q", unknown, "r", until).await.unwrap(),
        RevokeOutcome::Unknown
    );
    assert!(b.load("q", unknown).await.unwrap().is_none());
    let recorded = b.revocations().await.unwrap();
    assert_eq!(recorded.len(), 8);
    assert!(
        recorded
            .iter()
            .any(|r| r.uuid == unknown && r.reason == "r" && r.until == until)
    );
}

/// With an empty queue the task is looked up in every queue published to, as `load`
/// does, and revoked there.
#[tokio::test]
async fn revoke_finds_the_queue() {
    let (_, b, _) = engine(with_ttl(100)).await;
    let uuid = Uuid::new_v4();
    b.store(&[state(uuid, "elsewhere", State::Pending)])
        .await
        .unwrap();
    assert_eq!(
        b.revoke("", uuid, "revoked", None).await.unwrap(),
        RevokeOutcome::Revoked
    );
    let stored = b.load("elsewhere", uuid).await.unwrap().unwrap();
    assert_eq!(stored.state, State::Revoked);
    assert_eq!(
        b.revoke("", Uuid::new_v4(), "revoked", None).await.unwrap(),
        RevokeOutcome::Unknown
    );
}

/// No write replaces a REVOKED state (SUCCESS, FAILURE, RETRY, RECEIVED, STARTED,
/// PENDING through `store`) except a new send (`store_new`, and a publish with states).
#[tokio::test]
async fn only_a_new_send_replaces_a_revoked_state() {
    let (broker, b, _) = engine(with_ttl(100)).await;
    let uuid = Uuid::new_v4();
    let revoked = state(uuid, "q", State::Revoked);
    b.store(std::slice::from_ref(&revoked)).await.unwrap();
    for s in [
        State::Success,
        State::Failure,
        State::Retry,
        State::Received,
        State::Started,
        State::Pending,
    ] {
        b.store(&[state(uuid, "q", s)]).await.unwrap();
        assert_eq!(b.load("q", uuid).await.unwrap().unwrap(), revoked, "{s}");
    }
    // A REVOKED state replaces a running one, and a SUCCESS a SUCCESS, as before.
    let other = Uuid::new_v4();
    b.store(&[state(other, "q", State::Started)]).await.unwrap();
    b.store(&[state(other, "q", State::Revoked)]).await.unwrap();
    assert_eq!(
        b.load("q", other).await.unwrap().unwrap().state,
        State::Revoked
    );
    // A new send starts over.
    b.store_new(&[state(uuid, "q", State::Pending)])
        .await
        .unwrap();
    assert_eq!(
        b.load("q", uuid).await.unwrap().unwrap().state,
        State::Pending
    );
    b.store(&[state(uuid, "q", State::Revoked)]).await.unwrap();
    let mut resent = msg("q", "again");
    resent.uuid = uuid;
    broker
        .publish_with_states(vec![resent], &[state(uuid, "q", State::Pending)], &b)
        .await
        .unwrap();
    assert_eq!(
        b.load("q", uuid).await.unwrap().unwrap().state,
        State::Pending
    );
}

/// A task revoked while it ran: its SUCCESS, FAILURE, RETRY or dead-letter completion
/// is refused with `Error::Revoked` (reason: the stored state's error text); nothing of
/// it is written, published or acknowledged, and its lease holds, so the worker
/// completes it again as REVOKED, which settles it. The other completions of the same
/// batch are settled.
#[tokio::test]
async fn complete_refuses_a_task_revoked_while_it_ran() {
    let (b, backend, _) = engine(with_ttl(100)).await;
    let kinds: [(&str, Shape); 5] = [
        ("success", |c| {
            c.state = state(c.state.uuid, "q", State::Success)
        }),
        ("failure", |c| {
            c.state = state(c.state.uuid, "q", State::Failure)
        }),
        ("retry", |c| {
            c.state = state(c.state.uuid, "q", State::Retry);
            c.publish.push(msg("q", "the retry"));
        }),
        ("dead letter", |c| {
            c.state = state(c.state.uuid, "q", State::Failure);
            c.dead_letter = Some("too many deliveries".into());
        }),
        // Work for another queue (a chain's next step): not done either.
        ("follow-up elsewhere", |c| {
            c.state = state(c.state.uuid, "q", State::Success);
            c.publish.push(msg("next", "next step"));
            c.also_store
                .push(state(Uuid::new_v4(), "next", State::Pending));
        }),
    ];
    for (what, shape) in kinds {
        b.publish(vec![msg("q", "revoked"), msg("q", "fine")])
            .await
            .unwrap();
        let got = b.fetch(&q("q"), 2, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 2);
        let (revoked_uuid, fine_uuid) = (Uuid::new_v4(), Uuid::new_v4());
        backend
            .store(&[
                state(revoked_uuid, "q", State::Started),
                state(fine_uuid, "q", State::Started),
            ])
            .await
            .unwrap();
        assert_eq!(
            backend
                .revoke("q", revoked_uuid, "cancelled by ops", None)
                .await
                .unwrap(),
            RevokeOutcome::Cancelling
        );
        // The worker stopped the task; another worker wrote REVOKED meanwhile (here:
        // the revoke came while it ran, and the worker's own settle is below).
        backend
            .store(&[state(revoked_uuid, "q", State::Revoked)])
            .await
            .unwrap();
        let mut c = completion(&got[0], state(revoked_uuid, "q", State::Success));
        shape(&mut c);
        let mut fine = completion(&got[1], state(fine_uuid, "q", State::Success));
        fine.publish.push(msg("q", "fine's callback"));
        let results = b.complete(&[c, fine], &backend).await.unwrap();
        match &results[0] {
            Err(Error::Revoked { uuid, name, reason }) => {
                assert_eq!((*uuid, name.as_str()), (revoked_uuid, "job"), "{what}");
                assert_eq!(reason, "revoked", "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(results[1].is_ok(), "{what}: {:?}", results[1]);
        let stored = backend.load("q", revoked_uuid).await.unwrap().unwrap();
        assert_eq!(stored.state, State::Revoked, "{what}");
        assert_eq!(
            backend.load("q", fine_uuid).await.unwrap().unwrap().state,
            State::Success
        );
        // Only fine's callback was queued; the refused delivery is still held.
        let pending = b.pending("q").await.unwrap();
        assert_eq!(pending, [b"fine's callback".to_vec()], "{what}");
        assert!(b.pending("next").await.unwrap().is_empty(), "{what}");
        assert!(b.dead_letters("q").await.unwrap().is_empty(), "{what}");
        assert_eq!(b.depth("q").await.unwrap().in_flight, Some(1), "{what}");
        assert_eq!(b.extend(&got[..1]).await.unwrap(), [true], "{what}");
        // Settled again as revoked: accepted.
        let again = completion(&got[0], state(revoked_uuid, "q", State::Revoked));
        let results = b.complete(&[again], &backend).await.unwrap();
        assert!(results[0].is_ok(), "{what}: {results:?}");
        assert_eq!(b.depth("q").await.unwrap().in_flight, Some(0), "{what}");
        // Clean up for the next kind.
        let cb = b.fetch(&q("q"), 10, Duration::ZERO).await.unwrap();
        for d in &cb {
            b.ack(d).await.unwrap();
        }
    }
}

/// Turns a completion into one kind of outcome.
type Shape = fn(&mut Completion);

/// The refusal is decided by the stored state the moment the completion is settled:
/// revoked through `revoke` while PENDING (the worker fetched it before the revoke was
/// seen) it is refused with the revoke's reason; a lost lease stays `LeaseLost`.
#[tokio::test]
async fn complete_refuses_with_the_reason_and_a_lost_lease_stays_lost() {
    let (b, backend, _) = engine(with_ttl(100)).await;
    b.publish(vec![msg("q", "a")]).await.unwrap();
    let d = b.fetch(&q("q"), 1, Duration::ZERO).await.unwrap().remove(0);
    let uuid = Uuid::new_v4();
    backend
        .store(&[state(uuid, "q", State::Pending)])
        .await
        .unwrap();
    assert_eq!(
        backend.revoke("q", uuid, "expired", None).await.unwrap(),
        RevokeOutcome::Revoked
    );
    let results = b
        .complete(
            &[completion(&d, state(uuid, "q", State::Success))],
            &backend,
        )
        .await
        .unwrap();
    assert!(
        matches!(&results[0], Err(Error::Revoked { reason, .. }) if reason == "expired"),
        "{results:?}"
    );
    // The lease is lost (acknowledged by a "stale" path): LeaseLost, not Revoked.
    b.ack(&d).await.unwrap();
    let results = b
        .complete(
            &[completion(&d, state(uuid, "q", State::Success))],
            &backend,
        )
        .await
        .unwrap();
    assert!(
        matches!(&results[0], Err(Error::LeaseLost { .. })),
        "{results:?}"
    );
}

/// A task whose state is kept under another queue than its delivery's (its work all
/// belongs to other slots) is checked before that work is done.
#[tokio::test]
async fn complete_refuses_a_revoked_task_whose_state_is_elsewhere() {
    let (b, backend, _) = engine(with_ttl(100)).await;
    b.publish(vec![msg("moved", "a")]).await.unwrap();
    let d = b
        .fetch(&q("moved"), 1, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    let uuid = Uuid::new_v4();
    backend
        .store(&[state(uuid, "home", State::Revoked)])
        .await
        .unwrap();
    let mut c = completion(&d, state(uuid, "home", State::Success));
    c.publish.push(msg("home", "callback"));
    let results = b.complete(&[c], &backend).await.unwrap();
    assert!(
        matches!(&results[0], Err(Error::Revoked { .. })),
        "{results:?}"
    );
    assert!(b.pending("home").await.unwrap().is_empty());
    assert_eq!(
        backend.load("home", uuid).await.unwrap().unwrap().state,
        State::Revoked
    );
    assert_eq!(b.depth("moved").await.unwrap().in_flight, Some(1));
    let again = completion(&d, state(uuid, "home", State::Revoked));
    assert!(b.complete(&[again], &backend).await.unwrap()[0].is_ok());
    assert_eq!(b.depth("moved").await.unwrap().in_flight, Some(0));
}

/// Another task's SUCCESS or FAILURE written by a completion (`also_store`) does not
/// replace its REVOKED state either, in the completion's queue or another.
#[tokio::test]
async fn completions_keep_other_revoked_states() {
    let (b, backend, _) = engine(with_ttl(100)).await;
    for queue in ["q", "other"] {
        b.publish(vec![msg("q", "a")]).await.unwrap();
        let d = b.fetch(&q("q"), 1, Duration::ZERO).await.unwrap().remove(0);
        let step = Uuid::new_v4();
        backend
            .store(&[state(step, queue, State::Revoked)])
            .await
            .unwrap();
        let mut c = completion(&d, state(Uuid::new_v4(), "q", State::Failure));
        c.also_store.push(state(step, queue, State::Failure));
        assert!(b.complete(&[c], &backend).await.unwrap()[0].is_ok());
        assert_eq!(
            backend.load(queue, step).await.unwrap().unwrap().state,
            State::Revoked,
            "{queue}"
        );
    }
}

/// A REVOKED chord member fails the chord like a failure, with its reason as the
/// error text: through the complete script and through the backend.
#[tokio::test]
async fn a_revoked_chord_member_fails_the_chord() {
    let (b, backend, _) = engine(with_ttl(100)).await;
    // Through complete.lua (the chord kept under the member's queue).
    let group = Uuid::new_v4();
    backend
        .init_chord(group, 3, &msg("m", "callback"))
        .await
        .unwrap();
    b.publish(vec![msg("m", "member")]).await.unwrap();
    let d = b.fetch(&q("m"), 1, Duration::ZERO).await.unwrap().remove(0);
    let mut member = state(Uuid::new_v4(), "m", State::Revoked);
    member.error = Some("revoked by ops".into());
    let mut c = completion(&d, member);
    c.group = Some(GroupMember {
        group_uuid: group,
        queue: "m".into(),
        index: 1,
        count: 3,
    });
    assert!(b.complete(&[c], &backend).await.unwrap()[0].is_ok());
    assert_eq!(b.pending("m").await.unwrap(), [b"callback".to_vec()]);
    let outcome = backend.chord_outcome("m", group).await.unwrap();
    assert_eq!(
        outcome.failure,
        Some((1, "job".to_owned(), "revoked by ops".to_owned()))
    );
    // Through ResultBackend::chord_member_done.
    let group = Uuid::new_v4();
    backend
        .init_chord(group, 2, &msg("cb", "callback"))
        .await
        .unwrap();
    let member = GroupMember {
        group_uuid: group,
        queue: "cb".into(),
        index: 0,
        count: 2,
    };
    let fired = backend
        .chord_member_done(&member, &state(Uuid::new_v4(), "m", State::Revoked))
        .await
        .unwrap();
    assert_eq!(fired.map(|o| o.payload), Some(b"callback".to_vec()));
    let outcome = backend.chord_outcome("cb", group).await.unwrap();
    assert_eq!(
        outcome.failure,
        Some((0, "job".to_owned(), "revoked".to_owned()))
    );
}

/// Revocations are kept in Redis: a backend connected later (a worker that starts)
/// reads them, with their reasons and ends; revoking again replaces both.
#[tokio::test]
async fn revocations_survive_and_are_read_by_a_new_backend() {
    let (_, first, config) = engine(with_ttl(100)).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let until = now_ms() + 100_000;
    first.revoke("q", a, "revoked", Some(until)).await.unwrap();
    first.revoke("q", b, "expired", None).await.unwrap();
    drop(first);
    let later = machinery_redis::connect(&config).await.unwrap().1;
    let mut got = later.revocations().await.unwrap();
    got.sort_by_key(|r| r.uuid == b);
    assert_eq!(
        got,
        [
            Revocation {
                uuid: a,
                reason: "revoked".into(),
                until: Some(until),
            },
            Revocation {
                uuid: b,
                reason: "expired".into(),
                until: None,
            },
        ]
    );
    later.revoke("q", a, "again", None).await.unwrap();
    let again: Vec<Revocation> = later
        .revocations()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.uuid == a)
        .collect();
    assert_eq!(
        again,
        [Revocation {
            uuid: a,
            reason: "again".into(),
            until: None,
        }]
    );
}

/// A revocation whose end passed is not listed, and is dropped with its reason by the
/// next record or read.
#[tokio::test]
async fn ended_revocations_are_dropped() {
    let (_, b, config) = engine(with_ttl(100)).await;
    let (ended, soon, kept) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    b.revoke("q", ended, "revoked", Some(now_ms().saturating_sub(1_000)))
        .await
        .unwrap();
    b.revoke("q", soon, "revoked", Some(now_ms() + 300))
        .await
        .unwrap();
    b.revoke("q", kept, "revoked", None).await.unwrap();
    let listed = |rs: Vec<Revocation>| {
        let mut ids: Vec<Uuid> = rs.into_iter().map(|r| r.uuid).collect();
        ids.sort();
        ids
    };
    assert!(!listed(b.revocations().await.unwrap()).contains(&ended));
    eventually("the short revocation ends", async || {
        listed(b.revocations().await.unwrap()) == [kept]
    })
    .await;
    let p = prefix(&config);
    let mut con = redis_con();
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{p}:{{revoked}}"))
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(members, [kept.to_string()]);
    let reasons: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{p}:{{revoked}}:reason"))
        .query(&mut con)
        .unwrap();
    assert_eq!(reasons, [kept.to_string()]);
}

/// A watcher gets each revocation as it is recorded (by pub/sub: it prints the
/// latency), with its reason and end; dropping the watch closes its connection.
#[tokio::test]
async fn watchers_get_revocations_at_once() {
    let (_, revoker, config) = engine(with_ttl(100)).await;
    let watcher = machinery_redis::connect(&config).await.unwrap().1;
    let mut watch = watcher.watch_revocations().await.unwrap();
    let mut latencies = Vec::new();
    for i in 0..20u64 {
        let uuid = Uuid::new_v4();
        let until = (i % 2 == 0).then(|| now_ms() + 100_000);
        let reason = format!("reason\nline {i}");
        let started = Instant::now();
        revoker.revoke("q", uuid, &reason, until).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a revocation within 10 s")
            .expect("the watch is open");
        latencies.push(started.elapsed());
        assert_eq!(
            got,
            Revocation {
                uuid,
                reason,
                until
            }
        );
    }
    latencies.sort();
    println!(
        "revoke → watcher: median {:?}, max {:?} (20 revocations, revoke's round trips included)",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    let count = |con: &mut redis::Connection| -> i64 {
        let reply: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{}:revoked", prefix(&config)))
            .query(con)
            .unwrap();
        redis::from_redis_value(reply[1].clone()).unwrap()
    };
    let mut con = redis_con();
    assert_eq!(count(&mut con), 1);
    drop(watch);
    eventually("the dropped watch unsubscribes", async || {
        count(&mut redis_con()) == 0
    })
    .await;
}

/// The watch ends when its connection is lost (here: the server kills it), so the
/// worker subscribes again and re-reads the revocations.
#[tokio::test]
async fn a_watch_ends_when_its_connection_drops() {
    // A server of this test's own: every pub/sub client on it is ours.
    let server = common::RedisServer::start(&[]);
    let (_, b, _) = engine_on(&server.url(), with_ttl(100)).await;
    let mut watch = b.watch_revocations().await.unwrap();
    let mut con = server.client().get_connection().unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut con)
        .unwrap();
    assert_eq!(killed, 1);
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch ends within 10 s");
    assert!(end.is_none(), "{end:?}");
    // Watching again works.
    let mut watch = b.watch_revocations().await.unwrap();
    let uuid = Uuid::new_v4();
    b.revoke("q", uuid, "revoked", None).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.uuid, uuid);
}

/// On a cluster node (which refuses a `#!lua` script or command across slots) revoke,
/// revocations, the watch and the refusal all keep to their slots.
#[tokio::test]
async fn revoking_keeps_to_one_slot_per_call_on_a_cluster_node() {
    let (b, backend, _) = engine_on(&common::shared_cluster().url(), with_ttl(100)).await;
    let mut watch = backend.watch_revocations().await.unwrap();
    b.publish(vec![msg("q", "a")]).await.unwrap();
    let d = b.fetch(&q("q"), 1, Duration::ZERO).await.unwrap().remove(0);
    let (pending, running) = (Uuid::new_v4(), Uuid::new_v4());
    backend
        .store(&[
            state(pending, "other", State::Pending),
            state(running, "q", State::Started),
        ])
        .await
        .unwrap();
    assert_eq!(
        backend.revoke("", pending, "revoked", None).await.unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        backend.revoke("q", running, "revoked", None).await.unwrap(),
        RevokeOutcome::Cancelling
    );
    assert_eq!(backend.revocations().await.unwrap().len(), 2);
    for expected in [pending, running] {
        let got = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.uuid, expected);
    }
    backend
        .store(&[state(running, "q", State::Revoked)])
        .await
        .unwrap();
    let mut c = completion(&d, state(running, "q", State::Success));
    c.publish.push(msg("next", "step"));
    let results = b.complete(&[c], &backend).await.unwrap();
    assert!(
        matches!(&results[0], Err(Error::Revoked { .. })),
        "{results:?}"
    );
    let again = completion(&d, state(running, "q", State::Revoked));
    assert!(b.complete(&[again], &backend).await.unwrap()[0].is_ok());
}

/// The refusal reads the `state` field: a task whose arguments hold the bytes of
/// `state: "REVOKED"` is not taken for a revoked one.
#[tokio::test]
async fn the_revoked_bytes_in_arguments_do_not_refuse() {
    let (b, backend, _) = engine(with_ttl(100)).await;
    b.publish(vec![msg("q", "a")]).await.unwrap();
    let d = b.fetch(&q("q"), 1, Duration::ZERO).await.unwrap().remove(0);
    let uuid = Uuid::new_v4();
    let mut running = state(uuid, "q", State::Started);
    running.args = Some(b"\xa5state\xa7REVOKED".to_vec());
    running.error = Some("\u{a5}state\u{a7}REVOKED".into());
    backend.store(std::slice::from_ref(&running)).await.unwrap();
    let mut done = state(uuid, "q", State::Success);
    done.args = running.args.clone();
    let results = b.complete(&[completion(&d, done)], &backend).await.unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(
        backend.load("q", uuid).await.unwrap().unwrap().state,
        State::Success
    );
}
