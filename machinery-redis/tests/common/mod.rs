//! A private `redis-server` for one test binary, on a free loopback port. A watchdog
//! shell stops it when the test process exits (static values are never dropped).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use machinery_core::{Config, Server};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts `redis-server` with `extra` arguments; returns its port. It lives until this
/// test process exits.
pub fn start_redis(extra: &[&str]) -> u16 {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("machinery-redis-test-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = format!(
        "--port {port} --bind 127.0.0.1 --save '' --appendonly no --dir '{}'",
        dir.display()
    );
    for a in extra {
        args.push_str(&format!(" '{a}'"));
    }
    let script = format!(
        "command -v redis-server >/dev/null || {{ echo 'redis-server is not installed: apt-get install redis-server' >&2; exit 1; }}; \
         redis-server {args} >/dev/null 2>&1 & rs=$!; trap 'kill $rs' EXIT; \
         while kill -0 {pid} 2>/dev/null && kill -0 $rs 2>/dev/null; do sleep 0.5; done",
        pid = std::process::id()
    );
    // The watchdog outlives this call on purpose: it stops redis-server when the test
    // process exits; its exit status is of no interest.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("sh");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not start on port {port}; is it installed? (apt-get install redis-server)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    port
}

/// The shared server of this test binary.
pub fn shared_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| start_redis(&[]))
}

/// A fresh key prefix, so tests sharing one server do not see each other.
pub fn fresh_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The conformance harness: `config` on the shared server under a fresh prefix.
pub async fn server(mut config: Config) -> Server {
    config.broker = format!("redis://127.0.0.1:{}/", shared_port());
    config.redis.key_prefix = fresh_prefix();
    Server::from_config(config)
        .await
        .expect("connect to the test redis-server")
}
