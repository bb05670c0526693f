//! Conformance tests of unique tasks: `unique_for`, `unique_key`, `unique_until_ttl`,
//! `on_duplicate_error`, `with_uuid` and `#[task(unique)]`, on every engine.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use uuid::Uuid;

use super::Harness;
use super::tasks::{self, add, fail, flaky, gate, multiply, sum};
use crate::config::Config;
use crate::engine::Enqueued;
use crate::error::Error;
use crate::result::State;
use crate::server::Server;
use crate::signature::{RawSignature, Signature, UniqueLock};
use crate::worker::{Worker, WorkerHandle};
use crate::{TaskError, task};

const WAIT: Duration = Duration::from_secs(20);
const HOUR: Duration = Duration::from_secs(3600);

/// Unique for an hour by default: its signatures take the lock without asking.
#[task(name = "conformance.unique_add", unique = "1h")]
pub async fn unique_add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

fn key(name: &str) -> String {
    format!("{name}-{}", Uuid::now_v7())
}

async fn server<H: Harness>(h: &H) -> Server {
    h.server(Config {
        unregistered_requeues: 1,
        ..Config::default()
    })
    .await
}

fn worker(server: &Server) -> WorkerHandle {
    Worker::auto()
        .server(server)
        .grace_period(Duration::from_secs(10))
        .spawn()
        .expect("worker starts")
}

/// Polls `cond` every 10 ms until it holds, for at most [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `sig` and says what was enqueued.
async fn send<T>(server: &Server, sig: Signature<T>) -> Enqueued {
    let mut raw = sig.into_raw().unwrap();
    server.route(&mut raw);
    server.send_raw(raw).await.unwrap()
}

/// How many messages wait in the default queue (ready and delayed).
async fn waiting(server: &Server) -> usize {
    let q = server.config().default_queue.clone();
    server.pending_tasks(&q).await.unwrap().len()
        + server.delayed_tasks(Some(&q)).await.unwrap().len()
}

/// Sends `sig()` until it is enqueued (the lock `holder` holds is freed), for at most
/// [`WAIT`]; returns the task sent.
async fn send_when_free<T>(server: &Server, sig: impl Fn() -> Signature<T>, holder: Uuid) -> Uuid {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match send(server, sig()).await {
            Enqueued::Sent { uuid } => return uuid,
            Enqueued::Duplicate { uuid } => assert_eq!(uuid, holder),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the lock's TTL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sent(e: Enqueued) -> Uuid {
    match e {
        Enqueued::Sent { uuid } => uuid,
        Enqueued::Duplicate { uuid } => panic!("expected a send, got a duplicate of {uuid}"),
    }
}

/// Same name and arguments in one queue: one task; other arguments, another name or
/// another queue: a task each.
pub async fn unique_by_name_and_args<H: Harness>(h: &H) {
    let server = server(h).await;
    let first = sent(send(&server, add::s(1, 2).unique_for(HOUR)).await);
    assert_eq!(
        send(&server, add::s(1, 2).unique_for(HOUR)).await,
        Enqueued::Duplicate { uuid: first }
    );
    // The key is the name and a hash of the argument bytes, whatever the TTL.
    let sig = add::s(1, 2).unique_for(Duration::from_secs(5));
    let lock = sig.raw().unique.clone().unwrap();
    assert_eq!(lock.key, sig.raw().unique_key_of());
    assert!(lock.key.starts_with("conformance.add:"), "{}", lock.key);
    assert_eq!(lock.key.len(), "conformance.add:".len() + 32);
    assert_eq!(lock.ttl_ms, 5_000);
    assert_eq!(
        send(&server, sig).await,
        Enqueued::Duplicate { uuid: first }
    );
    // Other arguments, argument order, another task, another queue.
    let other_args = sent(send(&server, add::s(1, 3).unique_for(HOUR)).await);
    let swapped = sent(send(&server, add::s(2, 1).unique_for(HOUR)).await);
    let other_name = sent(send(&server, multiply::s(1, 2).unique_for(HOUR)).await);
    let other_queue = sent(send(&server, add::s(1, 2).unique_for(HOUR).queue(&key("q"))).await);
    let all = [first, other_args, swapped, other_name, other_queue];
    for (i, a) in all.iter().enumerate() {
        assert!(!all[i + 1..].contains(a), "distinct tasks");
    }
    assert_eq!(
        waiting(&server).await,
        4,
        "one message per distinct send in the queue"
    );
    // A plain send of the same task is not unique and always enqueues.
    sent(send(&server, add::s(1, 2)).await);
    assert_eq!(waiting(&server).await, 5);
}

/// `unique_key` replaces name and arguments: any task with that key is a duplicate.
pub async fn unique_key_is_explicit<H: Harness>(h: &H) {
    let server = server(h).await;
    let k = key("account-42");
    let first = sent(send(&server, add::s(1, 2).unique_key(&k)).await);
    assert_eq!(
        send(&server, multiply::s(7, 7).unique_key(&k)).await,
        Enqueued::Duplicate { uuid: first }
    );
    // `unique_for` after `unique_key` keeps the key, sets the TTL.
    let sig = add::s(9, 9)
        .unique_key(&k)
        .unique_for(Duration::from_secs(7));
    assert_eq!(sig.raw().unique.as_ref().unwrap().key, k);
    assert_eq!(sig.raw().unique.as_ref().unwrap().ttl_ms, 7_000);
    assert_eq!(
        send(&server, sig).await,
        Enqueued::Duplicate { uuid: first }
    );
    // Without a TTL of its own, a key lasts the default hour.
    let sig = add::s(1, 2).unique_key(key("other"));
    assert_eq!(sig.raw().unique.as_ref().unwrap().ttl_ms, 3_600_000);
    sent(send(&server, sig).await);
    assert_eq!(waiting(&server).await, 2);
}

/// A duplicate returns the holder's handle (its UUID; `get` gives its result), or
/// `Error::Duplicate` naming it with `on_duplicate_error`.
pub async fn unique_duplicate_returns_holder<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("holder");
    let first = gate::s(k.clone())
        .unique_for(HOUR)
        .send_with(&server)
        .await
        .unwrap();
    eventually("the holder runs", || async { tasks::count(&k) == 1 }).await;
    // Running: still held.
    let second = gate::s(k.clone())
        .unique_for(HOUR)
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(second.uuid(), first.uuid());
    let err = gate::s(k.clone())
        .unique_for(HOUR)
        .on_duplicate_error()
        .send_with(&server)
        .await
        .unwrap_err();
    match &err {
        Error::Duplicate { uuid, queue } => {
            assert_eq!(*uuid, first.uuid());
            assert_eq!(queue, &server.config().default_queue);
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(err.kind(), crate::ErrorKind::Rejected);
    tasks::open(&k);
    assert_eq!(second.get_timeout(WAIT).await.unwrap(), k);
    assert_eq!(first.get_timeout(WAIT).await.unwrap(), k);
    assert_eq!(tasks::count(&k), 1, "the duplicate never ran");
    w.shutdown().await.unwrap();
}

/// The lock goes with the final state: after SUCCESS, FAILURE or a dead letter, the
/// same send enqueues again (at once: whoever sees the final state finds the lock
/// released).
pub async fn unique_released_when_finished<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    // SUCCESS.
    let a = add::s(4, 4)
        .unique_for(HOUR)
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(a.get_timeout(WAIT).await.unwrap(), 8);
    let b = add::s(4, 4)
        .unique_for(HOUR)
        .send_with(&server)
        .await
        .unwrap();
    assert_ne!(b.uuid(), a.uuid(), "released by SUCCESS");
    assert_eq!(b.get_timeout(WAIT).await.unwrap(), 8);
    // FAILURE.
    let m = key("boom");
    let a = fail::s(m.clone())
        .unique_for(HOUR)
        .send_with(&server)
        .await
        .unwrap();
    assert!(a.get_timeout(WAIT).await.is_err());
    assert_eq!(a.state().await.unwrap(), State::Failure);
    let b = fail::s(m.clone())
        .unique_for(HOUR)
        .send_with(&server)
        .await
        .unwrap();
    assert_ne!(b.uuid(), a.uuid(), "released by FAILURE");
    assert!(b.get_timeout(WAIT).await.is_err());
    // Dead-lettered (no worker knows the task).
    let lock_key = key("nobody");
    let nobody = || {
        let mut raw = RawSignature::new("conformance.unique_nobody_runs_this", vec![0x90]);
        raw.unique = Some(UniqueLock {
            key: lock_key.clone(),
            ttl_ms: 3_600_000,
            until_ttl: false,
        });
        raw
    };
    let first = sent(server.send_raw(nobody()).await.unwrap());
    assert_eq!(
        server.send_raw(nobody()).await.unwrap(),
        Enqueued::Duplicate { uuid: first }
    );
    let r = server.result::<()>(first, "conformance.unique_nobody_runs_this");
    let err = r.get_timeout(WAIT).await.unwrap_err().to_string();
    assert!(err.contains("not registered"), "{err}");
    let again = sent(server.send_raw(nobody()).await.unwrap());
    assert_ne!(again, first, "released by the dead letter");
    w.shutdown().await.unwrap();
}

/// A RETRY keeps the lock; the final state after it releases it.
pub async fn unique_kept_while_retrying<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("flaky");
    let sig = || {
        flaky::s(k.clone(), 1)
            .retries(1)
            .retry_timeout(Duration::from_secs(2))
            .unique_for(HOUR)
    };
    let first = sig().send_with(&server).await.unwrap();
    eventually("the first run failed and waits to retry", || async {
        first.state().await.unwrap() == State::Retry
    })
    .await;
    assert_eq!(
        send(&server, sig()).await,
        Enqueued::Duplicate { uuid: first.uuid() },
        "RETRY keeps the lock"
    );
    assert_eq!(first.get_timeout(WAIT).await.unwrap(), 1);
    assert_ne!(sent(send(&server, sig()).await), first.uuid());
    w.shutdown().await.unwrap();
}

/// `unique_until_ttl` keeps the lock after the task succeeded, until the TTL ends.
pub async fn unique_until_ttl_outlives_the_task<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let a = add::s(6, 1)
        .unique_for(HOUR)
        .unique_until_ttl()
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(a.get_timeout(WAIT).await.unwrap(), 7);
    assert_eq!(
        send(&server, add::s(6, 1).unique_for(HOUR)).await,
        Enqueued::Duplicate { uuid: a.uuid() },
        "kept after SUCCESS"
    );
    // With a short TTL: held after the task, then free.
    let short = || {
        add::s(6, 2)
            .unique_for(Duration::from_millis(800))
            .unique_until_ttl()
    };
    let a = short().send_with(&server).await.unwrap();
    assert_eq!(a.get_timeout(WAIT).await.unwrap(), 8);
    let freed = send_when_free(&server, short, a.uuid()).await;
    assert_ne!(freed, a.uuid());
    // Alone, `unique_until_ttl` makes the task unique by name and arguments for an hour.
    let sig = add::s(1, 1).unique_until_ttl();
    let lock = sig.raw().unique.clone().unwrap();
    assert_eq!((lock.ttl_ms, lock.until_ttl), (3_600_000, true));
    assert_eq!(lock.key, sig.raw().unique_key_of());
    w.shutdown().await.unwrap();
}

/// The TTL frees the lock even while its task still waits: then a second one queues.
pub async fn unique_ttl_frees_a_pending_lock<H: Harness>(h: &H) {
    let server = server(h).await;
    let first = sent(send(&server, add::s(3, 3).unique_for(Duration::from_millis(300))).await);
    let second = send_when_free(&server, || add::s(3, 3).unique_for(HOUR), first).await;
    assert_ne!(second, first);
    assert_eq!(waiting(&server).await, 2, "both wait");
    // Both run; the first one's release does not free the second one's lock.
    let w = worker(&server);
    let r = server.result_in::<i64>(first, "conformance.add", &server.config().default_queue);
    assert_eq!(r.get_timeout(WAIT).await.unwrap(), 6);
    let r2 = server.result_in::<i64>(second, "conformance.add", &server.config().default_queue);
    assert_eq!(r2.get_timeout(WAIT).await.unwrap(), 6);
    w.shutdown().await.unwrap();
}

/// `with_uuid` sent while its task waits: one task; after it finished: it runs again.
pub async fn unique_with_uuid_deduplicates<H: Harness>(h: &H) {
    let server = server(h).await;
    let id = Uuid::now_v7();
    let a = add::s(1, 2).with_uuid(id).send_with(&server).await.unwrap();
    assert_eq!(a.uuid(), id);
    let b = add::s(5, 5).with_uuid(id).send_with(&server).await.unwrap();
    assert_eq!(b.uuid(), id);
    let err = add::s(5, 5)
        .with_uuid(id)
        .on_duplicate_error()
        .send_with(&server)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Duplicate { uuid, .. } if uuid == id),
        "{err:?}"
    );
    // Delayed counts as waiting too.
    let delayed = Uuid::now_v7();
    sent(send(&server, add::s(1, 1).with_uuid(delayed).delay(HOUR)).await);
    assert_eq!(
        send(&server, add::s(1, 1).with_uuid(delayed)).await,
        Enqueued::Duplicate { uuid: delayed }
    );
    assert_eq!(waiting(&server).await, 2);
    let w = worker(&server);
    assert_eq!(
        b.get_timeout(WAIT).await.unwrap(),
        3,
        "the first send's task"
    );
    // Finished: the same UUID starts over and runs again.
    let c = add::s(5, 5).with_uuid(id).send_with(&server).await.unwrap();
    assert_eq!(c.uuid(), id);
    assert_eq!(c.get_timeout(WAIT).await.unwrap(), 10);
    // `with_uuid` and a key: the key's holder is the duplicate's answer.
    let k = key("both");
    let holder = sent(send(&server, gate::s(k.clone()).unique_key(&k)).await);
    assert_eq!(
        send(
            &server,
            gate::s(k.clone()).unique_key(&k).with_uuid(Uuid::now_v7())
        )
        .await,
        Enqueued::Duplicate { uuid: holder }
    );
    tasks::open(&k);
    w.shutdown().await.unwrap();
}

/// `#[task(unique = "1h")]`: every signature of the task is unique for an hour by name
/// and arguments.
pub async fn unique_task_attribute<H: Harness>(h: &H) {
    let server = server(h).await;
    let sig = unique_add::s(2, 2);
    let lock = sig.raw().unique.clone().expect("unique by default");
    assert_eq!(lock.key, sig.raw().unique_key_of());
    assert_eq!((lock.ttl_ms, lock.until_ttl), (3_600_000, false));
    let a = unique_add::s(2, 2).send_with(&server).await.unwrap();
    let b = unique_add::s(2, 2).send_with(&server).await.unwrap();
    assert_eq!(a.uuid(), b.uuid());
    assert_ne!(
        unique_add::s(2, 3).send_with(&server).await.unwrap().uuid(),
        a.uuid()
    );
    let w = worker(&server);
    assert_eq!(b.get_timeout(WAIT).await.unwrap(), 4);
    let c = unique_add::s(2, 2).send_with(&server).await.unwrap();
    assert_ne!(c.uuid(), a.uuid());
    assert_eq!(c.get_timeout(WAIT).await.unwrap(), 4);
    w.shutdown().await.unwrap();
}

/// In `send_batch` each unique message is decided on its own; plain messages go as
/// before.
pub async fn unique_in_a_batch<H: Harness>(h: &H) {
    let server = server(h).await;
    let k = key("batch");
    let held = sent(send(&server, add::s(0, 0).unique_key(format!("{k}-held"))).await);
    let raw = |sig: Signature<i64>| {
        let mut raw = sig.into_raw().unwrap();
        server.route(&mut raw);
        raw
    };
    let batch = vec![
        raw(add::s(1, 1).unique_key(format!("{k}-a"))),
        raw(add::s(2, 2).unique_key(format!("{k}-a"))),
        raw(add::s(3, 3)),
        raw(add::s(4, 4).unique_key(format!("{k}-held"))),
        raw(add::s(5, 5).unique_key(format!("{k}-b"))),
        raw(add::s(6, 6)),
    ];
    let uuids: Vec<Uuid> = batch.iter().map(|r| r.uuid).collect();
    let out = server.send_batch(batch).await.unwrap();
    assert_eq!(out.len(), 6);
    assert_eq!(out[0], Enqueued::Sent { uuid: uuids[0] });
    assert_eq!(
        out[1],
        Enqueued::Duplicate { uuid: uuids[0] },
        "within the batch"
    );
    assert_eq!(out[2], Enqueued::Sent { uuid: uuids[2] });
    assert_eq!(
        out[3],
        Enqueued::Duplicate { uuid: held },
        "held before the batch"
    );
    assert_eq!(out[4], Enqueued::Sent { uuid: uuids[4] });
    assert_eq!(out[5], Enqueued::Sent { uuid: uuids[5] });
    assert_eq!(waiting(&server).await, 5);
    // A duplicate's success callbacks get no state; a sent one's do.
    let cb_sent = Uuid::now_v7();
    let cb_dup = Uuid::now_v7();
    let with_cb = |uuid: Uuid, key: String| {
        let mut r = raw(add::s(7, 7).unique_key(key));
        let mut cb = add::s(1, 1).into_raw().unwrap();
        cb.uuid = uuid;
        r.on_success.push(cb);
        r
    };
    let out = server
        .send_batch(vec![
            with_cb(cb_sent, format!("{k}-c")),
            with_cb(cb_dup, format!("{k}-c")),
        ])
        .await
        .unwrap();
    assert!(out[1].is_duplicate());
    let q = server.config().default_queue.clone();
    assert_eq!(
        server
            .backend()
            .load(&q, cb_sent)
            .await
            .unwrap()
            .map(|s| s.state),
        Some(State::Pending)
    );
    assert!(server.backend().load(&q, cb_dup).await.unwrap().is_none());
}

/// A delayed unique task holds its lock while it waits for its ETA.
pub async fn unique_delayed_holds_the_lock<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let first = add::s(8, 8)
        .unique_for(HOUR)
        .delay(Duration::from_millis(500))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(
        send(&server, add::s(8, 8).unique_for(HOUR)).await,
        Enqueued::Duplicate { uuid: first.uuid() },
    );
    assert_eq!(first.get_timeout(WAIT).await.unwrap(), 16);
    assert_ne!(
        sent(send(&server, add::s(8, 8).unique_for(HOUR)).await),
        first.uuid()
    );
    w.shutdown().await.unwrap();
}

/// Workflow parts ignore `unique_for`, `unique_key` and `with_uuid`'s deduplication:
/// a workflow sent twice runs twice, and identical unique members all run.
pub async fn unique_ignored_in_workflows<H: Harness>(h: &H) {
    let server = server(h).await;
    let w = worker(&server);
    let k = key("wf");
    let chain = || {
        add::s(1, 1)
            .unique_key(&k)
            .then(add::partial(1).map(|s| s.unique_key(&k)))
    };
    let a = chain().send_with(&server).await.unwrap();
    let b = chain().send_with(&server).await.unwrap();
    assert_ne!(a.id(), b.id());
    assert_eq!(a.get_timeout(WAIT).await.unwrap(), 3);
    assert_eq!(b.get_timeout(WAIT).await.unwrap(), 3);
    let members = || vec![add::s(2, 2).unique_for(HOUR), add::s(2, 2).unique_for(HOUR)];
    let g = crate::group(members()).send_with(&server).await.unwrap();
    assert_eq!(g.get_timeout(WAIT).await.unwrap(), vec![4, 4]);
    let c = crate::group(members())
        .chord(sum::partial().map(|s| s.unique_key(&k)))
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(c.get_timeout(WAIT).await.unwrap(), 8);
    // Nothing of them holds the key: a task sent on its own takes it.
    sent(send(&server, add::s(0, 1).unique_key(&k)).await);
    w.shutdown().await.unwrap();
}

/// 50 concurrent senders with one key enqueue exactly one task; every one of them gets
/// its UUID. The same with one UUID (`with_uuid`).
pub async fn unique_race_of_fifty_senders<H: Harness>(h: &H) {
    let server = server(h).await;
    let k = key("race");
    let mut senders = Vec::new();
    for i in 0..50 {
        let server = server.clone();
        let k = k.clone();
        senders.push(tokio::spawn(async move {
            send(&server, add::s(i, i).unique_key(k)).await
        }));
    }
    let mut out = Vec::new();
    for s in senders {
        out.push(s.await.unwrap());
    }
    let winners: Vec<Uuid> = out
        .iter()
        .filter(|e| !e.is_duplicate())
        .map(Enqueued::uuid)
        .collect();
    assert_eq!(winners.len(), 1, "{out:?}");
    assert!(out.iter().all(|e| e.uuid() == winners[0]), "{out:?}");
    assert_eq!(waiting(&server).await, 1);
    let id = Uuid::now_v7();
    let mut senders = Vec::new();
    for i in 0..50 {
        let server = server.clone();
        senders.push(tokio::spawn(async move {
            send(&server, add::s(i, 1).with_uuid(id)).await
        }));
    }
    let mut sends = 0;
    for s in senders {
        let e = s.await.unwrap();
        assert_eq!(e.uuid(), id);
        sends += usize::from(!e.is_duplicate());
    }
    assert_eq!(sends, 1);
    assert_eq!(waiting(&server).await, 2);
}

/// A unique task revoked before any worker took it frees its key at once: the next send
/// enqueues (its message waits to be skipped, which does not hold the key), and a worker
/// then runs the new task and skips the revoked one.
pub async fn unique_revoked_holder_frees_the_key<H: Harness>(h: &H) {
    let server = server(h).await;
    let k = key("revoked-holder");
    let a = add::s(6, 6)
        .unique_key(k.clone())
        .send_with(&server)
        .await
        .unwrap();
    assert_eq!(
        a.cancel().await.unwrap(),
        crate::engine::RevokeOutcome::Revoked
    );
    let b = add::s(6, 6)
        .unique_key(k.clone())
        .on_duplicate_error()
        .send_with(&server)
        .await
        .expect("the revoked holder's key is free");
    assert_ne!(b.uuid(), a.uuid());
    // The new holder keeps the key as usual.
    match add::s(6, 6)
        .unique_key(k.clone())
        .on_duplicate_error()
        .send_with(&server)
        .await
    {
        Err(Error::Duplicate { uuid, .. }) => assert_eq!(uuid, b.uuid()),
        other => panic!("expected the new holder's duplicate: {other:?}"),
    }
    let w = worker(&server);
    assert_eq!(b.get_timeout(WAIT).await.unwrap(), 12);
    assert!(matches!(
        a.get_timeout(WAIT).await,
        Err(Error::Revoked { .. })
    ));
    w.shutdown().await.unwrap();
}
