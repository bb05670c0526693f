//! The Redis broker's admin plane: queue counts, paged listings (with consumption
//! between pages), cursors, finding and deleting by UUID, purging, dead letters one at
//! a time, pausing, the worker registry and statistics, against a private
//! `redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use machinery_core::engine::{Broker, BrokerAdmin, Outgoing, ResultBackend};
use machinery_core::inspect::{
    ListedTask, RegisteredTask, RunningTask, StatsBucket, TaskList, WorkerInfo,
};
use machinery_core::{Config, Error, RawSignature, State, TaskState};
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

/// A message of task `uuid` as the library encodes it.
fn message(queue: &str, uuid: Uuid, priority: u8, eta: Option<u64>) -> Outgoing {
    let mut raw = RawSignature::new("t", vec![0x90]);
    raw.uuid = uuid;
    raw.priority = priority;
    raw.eta = eta;
    Outgoing {
        uuid,
        queue: queue.to_owned(),
        eta,
        priority,
        payload: raw.encode().unwrap(),
    }
}

fn messages(queue: &str, n: usize) -> (Vec<Uuid>, Vec<Outgoing>) {
    let uuids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let out = uuids.iter().map(|u| message(queue, *u, 0, None)).collect();
    (uuids, out)
}

async fn engine_with(url: &str, config: Config) -> (RedisBroker, RedisBackend, Config) {
    let config = common::config_for(url, config);
    let (broker, backend) = machinery_redis::connect(&config).await.unwrap();
    (broker, backend, config)
}

async fn engine() -> (RedisBroker, RedisBackend, Config) {
    engine_with(&common::shared().url(), Config::default()).await
}

fn uuids(items: &[ListedTask]) -> Vec<Uuid> {
    items.iter().map(|t| t.uuid.unwrap()).collect()
}

fn q() -> Vec<String> {
    vec!["q".to_owned()]
}

/// Every page of `list`, `limit` at a time, calling `between` after each page.
async fn walk(
    b: &RedisBroker,
    list: TaskList,
    limit: usize,
    mut between: impl AsyncFnMut(usize),
) -> Vec<ListedTask> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for page_no in 0.. {
        let page = b.tasks("q", list, cursor.as_deref(), limit).await.unwrap();
        assert!(page.items.len() <= limit);
        all.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        between(page_no).await;
    }
    all
}

#[tokio::test]
async fn pending_pages_skip_nothing_while_the_queue_is_consumed() {
    let (b, _, _) = engine().await;
    let (ids, out) = messages("q", 250);
    b.publish(out).await.unwrap();
    let mut consumed: HashSet<Uuid> = HashSet::new();
    let mut fetched = Vec::new();
    let listed = walk(&b, TaskList::Pending, 40, async |_| {
        // Workers take the next 30 between pages: the front of the queue moves.
        let got = b.fetch(&q(), 30, Duration::ZERO).await.unwrap();
        fetched.extend(got);
    })
    .await;
    for d in &fetched {
        consumed.insert(RawSignature::decode(&d.payload).unwrap().uuid);
    }
    let listed_ids = uuids(&listed);
    let unique: HashSet<Uuid> = listed_ids.iter().copied().collect();
    assert_eq!(unique.len(), listed_ids.len(), "an item was listed twice");
    // Every message still ready when its page was read is listed, in delivery order.
    for id in &ids {
        assert!(
            unique.contains(id) || consumed.contains(id),
            "message {id} was skipped"
        );
    }
    let order: Vec<usize> = listed_ids
        .iter()
        .map(|u| ids.iter().position(|i| i == u).unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "not in delivery order"
    );
    assert!(listed.iter().all(|t| t.queue == "q" && t.deliveries == 0));
    // Consumption only took messages already listed (30 per page of 40), so every one
    // is listed: a listing by offset would have skipped 30 per page.
    assert_eq!(listed_ids, ids);
    assert_eq!(fetched.len(), 180);
}

#[tokio::test]
async fn pending_pages_follow_priority_then_age() {
    let (b, _, _) = engine().await;
    let mut sent = Vec::new();
    for (i, p) in [0u8, 5, 9, 5, 0, 9].into_iter().enumerate() {
        let u = Uuid::from_u128(i as u128 + 1);
        sent.push((p, u));
        b.publish(vec![message("q", u, p, None)]).await.unwrap();
    }
    let listed = uuids(&walk(&b, TaskList::Pending, 2, async |_| {}).await);
    let u = |n: u128| Uuid::from_u128(n);
    assert_eq!(listed, [u(3), u(6), u(2), u(4), u(1), u(5)]);
    // The same order as delivery.
    let got = b.fetch(&q(), 10, Duration::ZERO).await.unwrap();
    let delivered: Vec<Uuid> = got
        .iter()
        .map(|d| RawSignature::decode(&d.payload).unwrap().uuid)
        .collect();
    assert_eq!(listed, delivered);
}

#[tokio::test]
async fn delayed_pages_keep_their_place_among_equal_etas() {
    let (b, _, _) = engine().await;
    let eta = now_ms() + 3_600_000;
    // 30 messages share one ETA (the cursor lands inside the tie), 5 come later.
    let mut ids = Vec::new();
    let mut out = Vec::new();
    for i in 0..35 {
        let u = Uuid::new_v4();
        ids.push(u);
        out.push(message(
            "q",
            u,
            0,
            Some(eta + if i < 30 { 0 } else { 1000 }),
        ));
    }
    b.publish(out).await.unwrap();
    let mut deleted = HashSet::new();
    let mut listed_so_far: Vec<Uuid> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = b
            .tasks("q", TaskList::Delayed, cursor.as_deref(), 7)
            .await
            .unwrap();
        for t in &page.items {
            let at = t.eta.unwrap();
            assert!(at == eta || at == eta + 1000);
        }
        let page_ids = uuids(&page.items);
        // Delete something already listed, before the cursor: nothing after it moves.
        if let Some(first) = page_ids.first() {
            assert!(b.delete_pending("q", *first).await.unwrap());
            deleted.insert(*first);
        }
        listed_so_far.extend(page_ids);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let unique: HashSet<Uuid> = listed_so_far.iter().copied().collect();
    assert_eq!(unique.len(), 35);
    assert_eq!(listed_so_far.len(), 35);
    let etas: Vec<u64> = walk(&b, TaskList::Delayed, 100, async |_| {})
        .await
        .iter()
        .map(|t| t.eta.unwrap())
        .collect();
    assert_eq!(etas.len(), 35 - deleted.len());
    assert!(etas.windows(2).all(|w| w[0] <= w[1]), "soonest first");
}

#[tokio::test]
async fn in_flight_pages_show_lease_deadlines_and_never_the_keeper() {
    let (b, _, _) = engine().await;
    let (_, out) = messages("q", 20);
    b.publish(out).await.unwrap();
    let before = now_ms();
    // One batch: every lease shares one deadline.
    let got = b.fetch(&q(), 20, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 20);
    let listed = walk(&b, TaskList::InFlight, 6, async |_| {}).await;
    assert_eq!(listed.len(), 20);
    let visibility = u64::try_from(b.visibility_timeout().as_millis()).unwrap();
    for t in &listed {
        let deadline = t.lease_deadline.unwrap();
        assert!(deadline >= before + visibility - 1000 && deadline <= now_ms() + visibility);
        assert_eq!(t.deliveries, 0);
        assert!(t.uuid.is_some());
    }
    let unique: HashSet<Uuid> = uuids(&listed).into_iter().collect();
    assert_eq!(unique.len(), 20);
    // Settled deliveries leave the listing.
    for d in &got[..15] {
        b.ack(d).await.unwrap();
    }
    let rest = walk(&b, TaskList::InFlight, 6, async |_| {}).await;
    assert_eq!(rest.len(), 5);
    let qi = b.queues().await.unwrap();
    assert_eq!(qi[0].in_flight, 5);
}

#[tokio::test]
async fn a_page_is_capped_and_the_limit_is_at_least_one() {
    let (b, _, _) = engine().await;
    let (_, out) = messages("q", 1_005);
    b.publish(out).await.unwrap();
    let page = b.tasks("q", TaskList::Pending, None, 5_000).await.unwrap();
    assert_eq!(page.items.len(), 1_000);
    let rest = b
        .tasks("q", TaskList::Pending, page.next.as_deref(), 5_000)
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.next), (5, None));
    let one = b.tasks("q", TaskList::Pending, None, 0).await.unwrap();
    assert_eq!(one.items.len(), 1);
    assert!(one.next.is_some());
    for list in TaskList::ALL {
        let empty = b.tasks("other", list, None, 10).await.unwrap();
        assert_eq!((empty.items.len(), empty.next), (0, None), "{list:?}");
    }
}

#[tokio::test]
async fn a_cursor_not_made_by_the_listing_is_refused() {
    let (b, _, _) = engine().await;
    let (_, out) = messages("q", 5);
    b.publish(out).await.unwrap();
    let next = b
        .tasks("q", TaskList::Pending, None, 2)
        .await
        .unwrap()
        .next
        .unwrap();
    let mut damaged = next.clone();
    damaged.pop();
    for (queue, list, cursor) in [
        ("q", TaskList::Delayed, next.as_str()),
        ("other", TaskList::Pending, next.as_str()),
        ("q", TaskList::Pending, "not a cursor"),
        ("q", TaskList::Pending, ""),
        ("q", TaskList::Pending, damaged.as_str()),
        ("q", TaskList::Dead, next.as_str()),
        ("q", TaskList::Failed, "f.1.2.3"),
    ] {
        let e = b.tasks(queue, list, Some(cursor), 2).await.unwrap_err();
        assert!(
            matches!(e, Error::InvalidCursor { cursor: ref c } if c == cursor),
            "{list:?} {cursor}: {e}"
        );
    }
    // A cursor outlives the connection that made it.
    let again = b.tasks("q", TaskList::Pending, Some(&next), 2).await;
    assert_eq!(again.unwrap().items.len(), 2);
}

/// Publishes `n` messages and moves them to the dead-letter queue; returns their UUIDs
/// in dead-letter order.
async fn dead_letters(b: &RedisBroker, n: usize) -> Vec<Uuid> {
    let (ids, out) = messages("q", n);
    b.publish(out).await.unwrap();
    let got = b.fetch(&q(), n, Duration::ZERO).await.unwrap();
    for (i, d) in got.iter().enumerate() {
        b.dead_letter(d, &format!("reason {i}").into())
            .await
            .unwrap();
    }
    ids
}

#[tokio::test]
async fn dead_pages_realign_when_entries_before_the_cursor_go() {
    let (b, _, _) = engine().await;
    let ids = dead_letters(&b, 25).await;
    let mut removed = HashSet::new();
    let listed = walk(&b, TaskList::Dead, 10, async |page_no| {
        // Remove entries already listed: the next page must not skip any.
        let victim = ids[page_no * 10];
        let done = if page_no == 0 {
            b.requeue_dead_letter("q", victim).await.unwrap()
        } else {
            b.delete_dead_letter("q", victim).await.unwrap()
        };
        assert!(done);
        removed.insert(victim);
    })
    .await;
    assert_eq!(uuids(&listed), ids, "every dead letter once, oldest first");
    assert_eq!(listed[3].reason.as_ref().unwrap().to_string(), "reason 3");
    assert_eq!(b.queues().await.unwrap()[0].dead, 23);
    // The requeued one is ready again, its delivery count reset.
    let got = b.fetch(&q(), 10, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(RawSignature::decode(&got[0].payload).unwrap().uuid, ids[0]);
    assert_eq!(got[0].delivery_count, 1);
    // Removing the entry the cursor stands on: the page starts earlier, skips nothing.
    let page = b.tasks("q", TaskList::Dead, None, 5).await.unwrap();
    let last = page.items.last().unwrap().uuid.unwrap();
    assert!(b.delete_dead_letter("q", last).await.unwrap());
    let next = b
        .tasks("q", TaskList::Dead, page.next.as_deref(), 100)
        .await
        .unwrap();
    let after: HashSet<Uuid> = uuids(&next.items).into_iter().collect();
    let expected: Vec<Uuid> = ids
        .iter()
        .filter(|u| !removed.contains(u) && **u != last)
        .copied()
        .skip(4)
        .collect();
    assert!(expected.iter().all(|u| after.contains(u)));
    assert!(!b.delete_dead_letter("q", last).await.unwrap());
    assert!(!b.requeue_dead_letter("q", Uuid::new_v4()).await.unwrap());
}

#[tokio::test]
async fn find_and_delete_by_uuid_in_every_place() {
    let (b, _, config) = engine().await;
    let (ids, out) = messages("q", 3_000);
    b.publish(out).await.unwrap();
    let flying = b.fetch(&q(), 2, Duration::ZERO).await.unwrap();
    let in_flight = RawSignature::decode(&flying[0].payload).unwrap().uuid;
    b.dead_letter(&flying[1], &"poison".into()).await.unwrap();
    let dead = RawSignature::decode(&flying[1].payload).unwrap().uuid;
    let later = Uuid::new_v4();
    let eta = now_ms() + 3_600_000;
    b.publish(vec![message("q", later, 0, Some(eta))])
        .await
        .unwrap();
    let ready = ids[2_500];

    let (list, t) = b.find("q", ready).await.unwrap().unwrap();
    assert_eq!((list, t.uuid), (TaskList::Pending, Some(ready)));
    assert_eq!(RawSignature::decode(&t.payload).unwrap().uuid, ready);
    let (list, t) = b.find("q", later).await.unwrap().unwrap();
    assert_eq!((list, t.eta), (TaskList::Delayed, Some(eta)));
    let (list, t) = b.find("q", in_flight).await.unwrap().unwrap();
    assert_eq!(list, TaskList::InFlight);
    assert!(t.lease_deadline.unwrap() > now_ms());
    let (list, t) = b.find("q", dead).await.unwrap().unwrap();
    assert_eq!(list, TaskList::Dead);
    assert_eq!(t.reason.unwrap().to_string(), "poison");
    assert!(b.find("q", Uuid::new_v4()).await.unwrap().is_none());
    assert!(b.find("other", ready).await.unwrap().is_none());

    // Ready and delayed messages are deleted with their payloads; in flight is not.
    assert!(b.delete_pending("q", ready).await.unwrap());
    assert!(!b.delete_pending("q", ready).await.unwrap());
    assert!(b.find("q", ready).await.unwrap().is_none());
    assert!(b.delete_pending("q", later).await.unwrap());
    assert!(!b.delete_pending("q", in_flight).await.unwrap());
    assert!(!b.delete_pending("q", dead).await.unwrap());
    let depth = b.depth("q").await.unwrap();
    assert_eq!((depth.ready, depth.delayed), (2_997, 0));
    let mut con = common::shared()
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let prefix = &config.section::<RedisConfig>().key_prefix;
    let fields: u64 = redis::cmd("HLEN")
        .arg(format!("{prefix}:{{q:q}}:msg"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(fields, 2_997 + 1, "ready ones and the one in flight");
}

#[tokio::test]
async fn purge_deletes_a_large_queue_in_steps_and_keeps_what_is_in_flight() {
    let (b, _, _) = engine().await;
    let (_, out) = messages("q", 100_000);
    b.publish(out).await.unwrap();
    let eta = now_ms() + 3_600_000;
    b.publish(
        (0..500)
            .map(|_| message("q", Uuid::new_v4(), 0, Some(eta)))
            .collect(),
    )
    .await
    .unwrap();
    let flying = b.fetch(&q(), 10, Duration::ZERO).await.unwrap();
    b.dead_letter(&flying[0], &"x".into()).await.unwrap();

    // A UUID that is nowhere: the whole payload hash and dead-letter list are walked.
    let started = Instant::now();
    assert!(b.find("q", Uuid::new_v4()).await.unwrap().is_none());
    eprintln!("find walked 100,500 messages in {:?}", started.elapsed());

    let started = Instant::now();
    let purged = b.purge("q").await.unwrap();
    let took = started.elapsed();
    assert_eq!(purged, 100_000 - 10 + 500);
    let info = &b.queues().await.unwrap()[0];
    assert_eq!(
        (info.ready, info.delayed, info.in_flight, info.dead),
        (0, 0, 9, 1)
    );
    // The deliveries in flight still settle.
    for d in &flying[1..] {
        b.ack(d).await.unwrap();
    }
    assert_eq!(b.purge("q").await.unwrap(), 0);
    eprintln!("purged 100,500 messages in {took:?}");
}

#[tokio::test]
async fn queues_list_counts_and_paused_empty_queues() {
    let (b, _, _) = engine().await;
    assert!(b.queues().await.unwrap().is_empty());
    let (_, out) = messages("b", 3);
    b.publish(out).await.unwrap();
    let eta = now_ms() + 3_600_000;
    b.publish(vec![message("b", Uuid::new_v4(), 0, Some(eta))])
        .await
        .unwrap();
    b.fetch(&["b".to_owned()], 1, Duration::ZERO).await.unwrap();
    assert!(b.pause("a-empty").await.unwrap());
    let qs = b.queues().await.unwrap();
    let names: Vec<&str> = qs.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["a-empty", "b"]);
    assert!(qs[0].paused);
    assert_eq!((qs[0].ready, qs[0].in_flight), (0, 0));
    let b_info = &qs[1];
    assert_eq!(
        (
            b_info.ready,
            b_info.delayed,
            b_info.in_flight,
            b_info.dead,
            b_info.paused
        ),
        (2, 1, 1, 0, false)
    );
    assert_eq!(BrokerAdmin::engine(&b), "redis");
}

fn short_block(ms: u64) -> Config {
    let mut c = Config::default();
    c.section_mut::<RedisConfig>().block = Duration::from_millis(ms);
    c
}

/// How many scripts the server ran so far.
fn scripts_run(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test]
async fn a_paused_queue_hands_out_nothing_blocks_its_workers_and_wakes_them_on_resume() {
    // A server of its own: the test counts the scripts it runs.
    let server = common::RedisServer::start(&[]);
    let (b, _, config) = engine_with(&server.url(), short_block(200)).await;
    let (_, out) = messages("q", 3);
    b.publish(out).await.unwrap();
    assert!(b.pause("q").await.unwrap());
    assert!(!b.pause("q").await.unwrap(), "already paused");
    assert!(b.fetch(&q(), 10, Duration::ZERO).await.unwrap().is_empty());
    // A worker whose only queue is paused waits as on an empty queue: one blocking read
    // and one script per block period, not a loop of scripts.
    let mut con = server.client().get_connection().unwrap();
    let before = scripts_run(&mut con);
    let started = Instant::now();
    let got = b
        .fetch(&q(), 10, Duration::from_millis(1_000))
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
    let ran = scripts_run(&mut con) - before;
    assert!(
        ran <= 10,
        "{ran} scripts in one second of waiting: the worker spins"
    );
    // Published meanwhile: still nothing.
    let (_, more) = messages("q", 1);
    b.publish(more).await.unwrap();
    assert!(
        b.fetch(&q(), 10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );

    // The pause is the broker's: a new connection (a restarted worker) sees it.
    let (b2, _) = machinery_redis::connect(&config).await.unwrap();
    assert!(b2.fetch(&q(), 10, Duration::ZERO).await.unwrap().is_empty());
    assert!(b2.queues().await.unwrap()[0].paused);

    // A worker blocked on the paused queue wakes when it is resumed, well before its
    // blocking read would end by itself.
    let mut slow = config.clone();
    slow.section_mut::<RedisConfig>().block = Duration::from_secs(10);
    let (b3, _) = machinery_redis::connect(&slow).await.unwrap();
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let got = b3.fetch(&q(), 10, Duration::from_secs(20)).await.unwrap();
        (got.len(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.resume("q").await.unwrap());
    assert!(!b.resume("q").await.unwrap(), "already running");
    let (n, waited) = waiter.await.unwrap();
    assert_eq!(n, 4);
    assert!(waited < Duration::from_secs(3), "woke after {waited:?}");
    assert!(!b.queues().await.unwrap()[0].paused);
}

fn worker(id: &str, name: &str) -> WorkerInfo {
    WorkerInfo {
        id: id.to_owned(),
        name: name.to_owned(),
        host: "h".into(),
        pid: 7,
        version: "0.1.0".into(),
        queues: vec!["q".into()],
        concurrency: 4,
        prefetch: 8,
        tasks: vec![RegisteredTask {
            name: "add".into(),
            schema: "add(i64, i64) -> i64".into(),
            fingerprint: 42,
        }],
        started_at: 1,
        heartbeat_at: 2,
        running: vec![RunningTask {
            uuid: Uuid::new_v4(),
            name: "add".into(),
            queue: "q".into(),
            started_at: 3,
        }],
        processed: 10,
        failed: 1,
    }
}

#[tokio::test]
async fn worker_records_expire_unless_written_again() {
    let (b, _, _) = engine().await;
    assert!(b.workers().await.unwrap().is_empty());
    let w1 = worker("id-2", "alpha");
    let w2 = worker("id-1", "beta");
    let w3 = worker("id-0", "alpha");
    b.register_worker(&w1, Duration::from_secs(30))
        .await
        .unwrap();
    b.register_worker(&w2, Duration::from_millis(300))
        .await
        .unwrap();
    b.register_worker(&w3, Duration::from_secs(30))
        .await
        .unwrap();
    let all = b.workers().await.unwrap();
    assert_eq!(
        all,
        [w3.clone(), w1.clone(), w2.clone()],
        "by name, then id"
    );
    // Rewritten: the new record replaces the old one.
    let mut w1b = w1.clone();
    w1b.processed = 99;
    b.register_worker(&w1b, Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = b.workers().await.unwrap();
    assert_eq!(all, [w3.clone(), w1b.clone()], "the 300 ms record expired");
    b.unregister_worker("id-0").await.unwrap();
    b.unregister_worker("unknown").await.unwrap();
    assert_eq!(b.workers().await.unwrap(), [w1b]);
}

fn bucket(minute: u64, queue: &str, task: &str, processed: u64, run_ms: u64) -> StatsBucket {
    let mut b = StatsBucket::new(minute, queue, task);
    b.processed = processed;
    b.failed = 1;
    b.run_ms_sum = run_ms;
    b.run_ms[StatsBucket::bucket_of(run_ms)] += 1;
    b.wait_ms_sum = 3;
    b.wait_ms[StatsBucket::bucket_of(3)] += 1;
    b
}

#[tokio::test]
async fn statistics_merge_per_minute_queue_and_task_within_the_window() {
    let (b, _, _) = engine().await;
    let window = Duration::from_secs(3600);
    let now = now_ms() / 60_000;
    b.publish(messages("q", 1).1).await.unwrap();
    b.publish(messages("r", 1).1).await.unwrap();
    b.record_stats(
        &[
            bucket(now, "q", "mod::add", 2, 7),
            bucket(now - 5, "q", "mod::add", 1, 70_000),
            bucket(now, "r", "other", 4, 1),
            // Older than the window: dropped.
            bucket(now - 120, "q", "mod::add", 9, 1),
        ],
        window,
    )
    .await
    .unwrap();
    b.record_stats(&[bucket(now, "q", "mod::add", 3, 7)], window)
        .await
        .unwrap();
    let all = b.stats(0, None).await.unwrap();
    let keys: Vec<(u64, &str, &str)> = all
        .iter()
        .map(|s| (s.minute, s.queue.as_str(), s.task.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            (now - 5, "q", "mod::add"),
            (now, "q", "mod::add"),
            (now, "r", "other")
        ]
    );
    let merged = &all[1];
    let mut expected = bucket(now, "q", "mod::add", 2, 7);
    expected.add(&bucket(now, "q", "mod::add", 3, 7));
    assert_eq!(merged, &expected);
    assert_eq!(all[0].run_ms[StatsBucket::bucket_of(70_000)], 1);
    let since = b.stats(now - 1, Some("q")).await.unwrap();
    assert_eq!(since, [expected]);
    assert!(b.stats(0, Some("nowhere")).await.unwrap().is_empty());
}

#[tokio::test]
async fn statistics_expire_with_their_window() {
    let (b, _, _) = engine().await;
    b.publish(messages("q", 1).1).await.unwrap();
    let now_ms = now_ms();
    // A window that ends a second from now for this minute's bucket.
    let minute = now_ms / 60_000;
    let window = Duration::from_millis(now_ms + 1_000 - minute * 60_000);
    b.record_stats(&[bucket(minute, "q", "t", 1, 1)], window)
        .await
        .unwrap();
    assert_eq!(b.stats(0, None).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert!(b.stats(0, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn failures_are_listed_newest_first_while_their_state_is_kept() {
    let (b, backend, _) = engine().await;
    let base = now_ms();
    let mut failures = Vec::new();
    let mut kept = Vec::new();
    for i in 0..12u64 {
        let u = Uuid::new_v4();
        failures.push(("q".to_owned(), u, base - 1_000 + i));
        // Every third failure's state is gone (expired or forgotten).
        if i % 3 != 0 {
            backend
                .store(&[TaskState::new(u, "t", "q", State::Failure)])
                .await
                .unwrap();
            kept.push(u);
        }
    }
    // Older than the window: not recorded.
    failures.push(("q".to_owned(), Uuid::new_v4(), base - 7_200_000));
    b.record_failures(&failures, Duration::from_secs(3600))
        .await
        .unwrap();
    let listed = walk(&b, TaskList::Failed, 3, async |_| {}).await;
    kept.reverse();
    assert_eq!(uuids(&listed), kept);
    assert!(
        listed
            .iter()
            .all(|t| t.payload.is_empty() && t.failed_at.is_some())
    );
    assert!(listed.windows(2).all(|w| w[0].failed_at >= w[1].failed_at));
}

/// Pages cost O(page): a page deep into a large queue takes about as long as the first.
#[tokio::test]
async fn a_page_deep_in_a_large_queue_costs_what_the_first_does() {
    let (b, _, _) = engine().await;
    let n = 200_000;
    for _ in 0..n / 50_000 {
        b.publish(messages("q", 50_000).1).await.unwrap();
    }
    let mut cursor = None;
    let mut pages = 0;
    let mut first = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let page = b
            .tasks("q", TaskList::Pending, cursor.as_deref(), 1_000)
            .await
            .unwrap();
        let took = t.elapsed();
        if pages == 0 {
            first = took;
        } else {
            slowest = slowest.max(took);
        }
        pages += 1;
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, n / 1_000);
    eprintln!(
        "{pages} pages of 1,000 in {:?}: first {first:?}, slowest {slowest:?}",
        started.elapsed()
    );
    // A page that walked the queue from its start would take ~100 times the first.
    assert!(
        slowest < first * 20 + Duration::from_millis(100),
        "first {first:?}, slowest {slowest:?}"
    );
}
