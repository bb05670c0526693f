//! The engine conformance suite on a Redis Cluster node that owns every slot. Such a node
//! refuses any command, and any `#!lua` script, that touches keys of several slots, as a
//! cluster of many nodes would: every test here also checks that each operation of the
//! engine stays within one slot.

mod common;

use machinery_core::engine::Outgoing;
use machinery_core::{Config, Server};
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
