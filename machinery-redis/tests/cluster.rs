//! The engine conformance suite on a Redis Cluster node that owns every slot. Such a node
//! refuses any command, and any `#!lua` script, that touches keys of several slots, as a
//! cluster of many nodes would: every test here also checks that each operation of the
//! engine stays within one slot.

mod common;

use std::time::Duration;

use machinery_core::engine::Outgoing;
use machinery_core::inspect::{StatsBucket, TaskList, WorkerInfo};
use machinery_core::{Config, RawSignature, Server};
use machinery_redis as _;
use uuid::Uuid;

machinery_core::conformance_suite!(common::cluster_server);

#[test]
fn the_node_refuses_scripts_across_slots() {
    let mut con = common::shared_cluster().client().get_connection().unwrap();
    let r: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg("#!lua\nredis.call('SET', '{a}x', 1)\nredis.call('SET', '{b}y', 1)\nreturn 1")
        .arg(0)
        .query(&mut con);
    let err = r.unwrap_err().to_string();
    assert!(err.contains("same slot"), "{err}");
    let r: redis::RedisResult<Option<String>> = redis::cmd("BLPOP")
        .arg("{a}x")
        .arg("{b}y")
        .arg(0.01)
        .query(&mut con);
    let err = r.unwrap_err();
    assert_eq!(
        err.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot),
        "{err}"
    );
}

#[tokio::test]
async fn the_engine_runs_its_scripts_with_flags() {
    let config = common::config_for(&common::shared_cluster().url(), Config::default());
    let server = Server::from_config(config).await.unwrap();
    server
        .broker()
        .publish(vec![Outgoing {
            uuid: Uuid::new_v4(),
            queue: "q".into(),
            eta: None,
            priority: 0,
            payload: b"m".to_vec(),
        }])
        .await
        .unwrap();
    // The slot checks apply to `#!lua` scripts only: the engine must send those.
    let publish = redis::Script::new(&format!(
        "#!lua\n{}\n{}",
        include_str!("../src/lua/lib.lua"),
        include_str!("../src/lua/publish.lua")
    ));
    let mut con = common::shared_cluster().client().get_connection().unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(publish.get_hash())
        .query(&mut con)
        .unwrap();
    assert_eq!(exists, [1]);
    let depth = server.admin().unwrap().depth("q").await.unwrap();
    assert_eq!(depth.ready, 1);
}

/// Every admin operation keeps to the slots the key layout promises: one queue's keys
/// per script or multi-key command, the worker registry in its own slot.
#[tokio::test]
async fn admin_operations_stay_within_one_slot() {
    let config = common::config_for(&common::shared_cluster().url(), Config::default());
    let server = Server::from_config(config).await.unwrap();
    let broker = server.broker();
    let admin = server.admin().unwrap();
    let mut messages = Vec::new();
    for i in 0..5u8 {
        let mut raw = RawSignature::new("t", vec![0x90]);
        raw.uuid = Uuid::new_v4();
        messages.push(Outgoing {
            uuid: raw.uuid,
            queue: "q".into(),
            eta: (i == 4).then_some(u64::MAX / 2),
            priority: i,
            payload: raw.encode().unwrap(),
        });
    }
    let ids: Vec<Uuid> = messages.iter().map(|m| m.uuid).collect();
    broker.publish(messages).await.unwrap();
    let got = broker
        .fetch(&["q".to_owned()], 2, Duration::ZERO)
        .await
        .unwrap();
    broker.dead_letter(&got[0], &"x".into()).await.unwrap();
    for list in TaskList::ALL {
        let page = admin.tasks("q", list, None, 1).await.unwrap();
        if let Some(next) = page.next {
            admin.tasks("q", list, Some(&next), 1).await.unwrap();
        }
    }
    assert_eq!(admin.queues().await.unwrap().len(), 1);
    for id in &ids {
        admin.find("q", *id).await.unwrap();
    }
    assert!(admin.delete_pending("q", ids[0]).await.unwrap());
    assert!(admin.pause("q").await.unwrap());
    assert!(admin.resume("q").await.unwrap());
    admin
        .record_failures(&[("q".into(), ids[1], 1)], Duration::from_secs(60))
        .await
        .unwrap();
    let minute = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
        / 60_000;
    let mut bucket = StatsBucket::new(minute, "q", "t");
    bucket.processed = 1;
    admin
        .record_stats(&[bucket], Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(admin.stats(0, None).await.unwrap().len(), 1);
    let worker = WorkerInfo {
        id: "w".into(),
        name: "w".into(),
        host: "h".into(),
        pid: 1,
        version: "0".into(),
        queues: vec!["q".into()],
        concurrency: 1,
        prefetch: 1,
        tasks: Vec::new(),
        started_at: 0,
        heartbeat_at: 0,
        running: Vec::new(),
        processed: 0,
        failed: 0,
    };
    admin
        .register_worker(&worker, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(admin.workers().await.unwrap().len(), 1);
    admin.unregister_worker("w").await.unwrap();
    let dead = RawSignature::decode(&got[0].payload).unwrap().uuid;
    assert!(admin.requeue_dead_letter("q", dead).await.unwrap());
    assert!(admin.purge("q").await.unwrap() > 0);
    assert!(!admin.delete_dead_letter("q", dead).await.unwrap());
}
