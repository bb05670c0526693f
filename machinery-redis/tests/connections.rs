//! URLs, AUTH, unix sockets and unreachable servers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::RedisServer;
use machinery_core::engine::{Broker, ResultBackend};
use machinery_core::prelude::*;
use machinery_core::{Config, Server};
use machinery_redis as _;

fn config(url: String) -> Config {
    let mut c = Config::default();
    c.broker = url;
    c.section_mut::<machinery_redis::RedisConfig>()
        .connect_timeout = std::time::Duration::from_millis(500);
    c
}

async fn connect_err(url: String) -> String {
    let err = Server::from_config(config(url))
        .await
        .expect_err("the connection must fail");
    if err.to_string().contains("authentication") {
        // Retrying with the same credentials cannot help.
        assert_eq!(err.kind(), machinery_core::ErrorKind::Auth, "{err}");
        assert!(!err.is_retryable());
    }
    err.to_string()
}

#[tokio::test]
async fn auth_with_password() {
    let server = RedisServer::start(&["--requirepass", "s3cret-pw"]);
    let port = server.port;
    let ok = Server::from_config(config(format!("redis://:s3cret-pw@127.0.0.1:{port}/")))
        .await
        .expect("the right password connects");
    assert_eq!(ok.broker().engine(), "redis");
    assert_eq!(ok.backend().engine(), "redis");
    let debug = format!("{ok:?}");
    assert!(!debug.contains("s3cret-pw"), "password leaked: {debug}");
    // The engines themselves, with their connections open (blocking and pub/sub too).
    let mut c = config(format!("redis://:s3cret-pw@127.0.0.1:{port}/"));
    c.section_mut::<machinery_redis::RedisConfig>().key_prefix = common::fresh_prefix();
    let (broker, backend) = machinery_redis::connect(&c).await.unwrap();
    let _ = broker
        .fetch(&["q".to_owned()], 1, Duration::from_millis(50))
        .await
        .unwrap();
    let _ = backend
        .wait("q", uuid::Uuid::new_v4(), Some(Duration::from_millis(50)))
        .await;
    let debug = format!("{broker:?} {backend:?}");
    assert!(debug.contains("redis://"), "{debug}");
    assert!(!debug.contains("s3cret-pw"), "password leaked: {debug}");

    let err = connect_err(format!("redis://:wrong-pw@127.0.0.1:{port}/")).await;
    assert!(err.contains("cannot connect to Redis"), "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrong-pw"), "password leaked: {err}");
    let err = connect_err(format!("redis://127.0.0.1:{port}/")).await;
    assert!(err.contains("cannot connect to Redis"), "{err}");
    assert!(err.contains("authentication required"), "{err}");
}

#[tokio::test]
async fn auth_with_an_acl_user() {
    let server = RedisServer::start(&["--user", "worker", "on", ">w0rker-pw", "~*", "&*", "+@all"]);
    let port = server.port;
    let ok = Server::from_config(config(format!(
        "redis://worker:w0rker-pw@127.0.0.1:{port}/"
    )))
    .await
    .expect("the ACL user connects");
    assert!(!format!("{ok:?}").contains("w0rker-pw"));
    let err = connect_err(format!("redis://worker:bad-pw@127.0.0.1:{port}/")).await;
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("bad-pw"), "password leaked: {err}");
}

#[tokio::test]
async fn unreachable_redis_fails_fast_and_clearly() {
    let port = common::free_port();
    let start = Instant::now();
    let err = connect_err(format!("redis://:pw@127.0.0.1:{port}/")).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.contains("cannot connect to Redis"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains(":pw@"), "password leaked: {err}");
}

#[tokio::test]
async fn a_silent_server_times_out_at_connect() {
    // Something accepts the connection but never answers: bounded by the connect timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let start = Instant::now();
    let err = connect_err(format!("redis://:pw@127.0.0.1:{port}/")).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.contains("cannot connect to Redis"), "{err}");
    assert!(!err.contains(":pw@"), "password leaked: {err}");
    drop(listener);
}

#[tokio::test]
async fn url_errors_are_clear() {
    let err = connect_err("redis://:pw@127.0.0.1:notaport/".into()).await;
    // Refused when the configuration is validated, naming the key.
    assert!(err.contains("invalid `redis://` URL"), "{err}");
    assert!(err.contains("`broker`"), "{err}");
    assert!(!err.contains(":pw@"), "password leaked: {err}");
    let err = connect_err("nats://127.0.0.1:4222".into()).await;
    assert!(err.contains("broker"), "{err}");
}

#[tokio::test]
async fn unix_socket_urls_work() {
    let dir = std::env::temp_dir().join(format!("machinery-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("redis.sock");
    let sock_arg = sock.display().to_string();
    let _server = RedisServer::start(&["--unixsocket", &sock_arg, "--unixsocketperm", "700"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for url in [
        format!("redis+unix://{sock_arg}"),
        format!("unix://{sock_arg}"),
    ] {
        let server = Server::from_config(config(url)).await.unwrap();
        assert_eq!(server.broker().engine(), "redis");
        server
            .broker()
            .publish(vec![machinery_core::engine::Outgoing {
                uuid: uuid::Uuid::new_v4(),
                queue: "q".into(),
                eta: None,
                priority: 0,
                payload: b"over the socket".to_vec(),
            }])
            .await
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[task(name = "connections.echo")]
async fn echo(x: u32) -> Result<u32, TaskError> {
    Ok(x)
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let ok = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)")
        .success();
    assert!(ok, "openssl {args:?} failed");
}

#[tokio::test]
async fn tls_round_trip() {
    let dir = std::env::temp_dir().join(format!("machinery-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=machinery-test-ca",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
        ],
    );
    let tls_port = common::free_port();
    let path = |f: &str| dir.join(f).display().to_string();
    let _redis = RedisServer::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path("server.crt"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    // A self-signed test certificate: `#insecure` skips verification (never in production).
    let mut c = config(format!("rediss://127.0.0.1:{tls_port}/#insecure"));
    c.section_mut::<machinery_redis::RedisConfig>().key_prefix = common::fresh_prefix();
    let server = Server::from_config(c).await.expect("TLS connection");
    let worker = Worker::new()
        .task(echo::ENTRY)
        .server(&server)
        .spawn()
        .unwrap();
    let r = echo::s(7).send_with(&server).await.unwrap();
    assert_eq!(r.get_timeout(Duration::from_secs(20)).await.unwrap(), 7);
    worker.shutdown().await.unwrap();
    // Without `#insecure` the self-signed certificate is refused, with a clear error.
    let err = Server::from_config(config(format!("rediss://127.0.0.1:{tls_port}/")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot connect"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_worker_refused_by_redis_stops_with_the_error() {
    let redis = RedisServer::start(&["--requirepass", "s3cret-pw"]);
    let port = redis.port;
    let mut c = config(format!("redis://:s3cret-pw@127.0.0.1:{port}/"));
    c.section_mut::<machinery_redis::RedisConfig>().key_prefix = common::fresh_prefix();
    let server = Server::from_config(c)
        .await
        .expect("the right password connects");
    let worker = Worker::new()
        .task(echo::ENTRY)
        .server(&server)
        .spawn()
        .unwrap();
    let r = echo::s(7).send_with(&server).await.unwrap();
    assert_eq!(r.get_timeout(Duration::from_secs(20)).await.unwrap(), 7);
    // The password changes and every connection is dropped: the worker's reconnections
    // are refused, which no retry can fix.
    let mut admin = redis::Client::open(format!("redis://:s3cret-pw@127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("n3w-pw")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the worker stops instead of retrying a refused password");
    let err = stopped.expect_err("the error that stopped it");
    assert_eq!(err.kind(), machinery_core::ErrorKind::Auth, "{err}");
    assert!(
        !format!("{err:?}").contains("s3cret-pw"),
        "password leaked: {err:?}"
    );
}
