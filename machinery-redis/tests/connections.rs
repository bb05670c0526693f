//! URLs, AUTH and unreachable servers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use machinery_core::{Config, Server};
use machinery_redis as _;

fn config(url: String) -> Config {
    let mut c = Config::default();
    c.broker = url;
    c.redis.connect_timeout_ms = 500;
    c
}

#[tokio::test]
async fn auth_with_password() {
    let port = common::start_redis(&["--requirepass", "s3cret-pw"]);
    let ok = Server::from_config(config(format!("redis://:s3cret-pw@127.0.0.1:{port}/")))
        .await
        .expect("right password connects");
    assert_eq!(ok.broker().engine(), "redis");
    for url in [
        format!("redis://:wrong-pw@127.0.0.1:{port}/"),
        format!("redis://127.0.0.1:{port}/"),
    ] {
        let err = Server::from_config(config(url))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot connect"), "{err}");
        assert!(!err.contains("wrong-pw"), "password leaked: {err}");
    }
    let debug = format!("{ok:?}");
    assert!(!debug.contains("s3cret-pw"), "password leaked: {debug}");
}

#[tokio::test]
async fn unreachable_redis_fails_fast_and_clearly() {
    let port = common::free_port();
    let start = Instant::now();
    let err = Server::from_config(config(format!("redis://:pw@127.0.0.1:{port}/")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.contains("cannot connect to Redis"), "{err}");
    assert!(err.contains(&port.to_string()), "{err}");
    assert!(!err.contains(":pw@"), "password leaked: {err}");
}

#[tokio::test]
async fn url_errors_are_clear() {
    let err = Server::from_config(config("rediss://127.0.0.1:1/".into()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("TLS"), "{err}");
    let err = Server::from_config(config("nats://127.0.0.1:4222".into()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("broker"), "{err}");
}

#[tokio::test]
async fn unix_socket_urls_work() {
    let dir = std::env::temp_dir().join(format!("machinery-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("redis.sock");
    let sock_arg = sock.display().to_string();
    common::start_redis(&["--unixsocket", &sock_arg, "--unixsocketperm", "700"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server = Server::from_config(config(format!("redis+unix://{sock_arg}")))
        .await
        .unwrap();
    assert_eq!(server.broker().engine(), "redis");
}
