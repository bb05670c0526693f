//! Private `redis-server` processes for tests: each on a free loopback port, in a
//! temporary directory, with no persistence, killed when dropped (and, should the test
//! process die without dropping it, by a watchdog that notices the process is gone).
//! Tests never touch a server they did not start.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use machinery_core::{Config, Server};

/// A free loopback port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `redis-server` of this test process.
#[derive(Debug)]
pub struct RedisServer {
    /// Its loopback port.
    pub port: u16,
    /// Its working directory (removed on drop).
    pub dir: PathBuf,
    args: Vec<String>,
    child: Child,
    watchdog: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server --port P --bind 127.0.0.1 --save "" --appendonly no` plus
    /// `extra` arguments, and waits until it answers.
    ///
    /// # Panics
    /// When `redis-server` is not installed (the message says how to install it) or does
    /// not start.
    pub fn start(extra: &[&str]) -> RedisServer {
        static N: AtomicU64 = AtomicU64::new(0);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "machinery-redis-test-{}-{}-{port}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .into_iter()
            .chain(["--save", "", "--appendonly", "no", "--dir"])
            .map(str::to_owned)
            .collect();
        args.push(dir.display().to_string());
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let (child, watchdog) = launch(&args);
        let mut server = RedisServer {
            port,
            dir,
            args,
            child,
            watchdog,
        };
        server.wait_until_listening();
        server
    }

    /// Starts a Redis Cluster node that owns every slot: a one-node cluster. It refuses
    /// what a cluster of many nodes refuses (a command or a `#!lua` script touching keys
    /// of several slots), so tests against it check the key layout.
    pub fn start_cluster() -> RedisServer {
        let server = RedisServer::start(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ]);
        let mut con = server.client().get_connection().unwrap();
        let () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query(&mut con)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut con).unwrap();
            if info.contains("cluster_state:ok") {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster node did not come up: {info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again after [`kill`](Self::kill): same port, directory and
    /// arguments (so an append-only file is read back).
    pub fn restart(&mut self) {
        self.kill();
        let (child, watchdog) = launch(&self.args);
        self.child = child;
        self.watchdog = watchdog;
        self.wait_until_listening();
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "redis-server exited at start ({status}); arguments: {:?}",
                    self.args
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A synchronous client for inspecting keys from tests.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as in
    /// a silent network partition.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a [`pause`](Self::pause)d server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills the server now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Spawns `redis-server args` and its watchdog, which stops it should this process die
/// without dropping the guard (a static, an abort).
fn launch(args: &[String]) -> (Child, Option<Child>) {
    let child = Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not installed; the Redis tests need it: apt-get install redis-server"
        ),
        Err(e) => panic!("cannot start redis-server: {e}"),
    };
    let watchdog = Command::new("sh")
        .args([
            "-c",
            &format!(
                "while kill -0 {me} 2>/dev/null && kill -0 {rs} 2>/dev/null; do sleep 0.5; done; kill {rs} 2>/dev/null",
                me = std::process::id(),
                rs = child.id()
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok();
    (child, watchdog)
}

/// The server shared by the tests of this binary (each uses its own key prefix). It
/// lives as long as the process; the watchdog stops it.
pub fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| RedisServer::start(&[]))
}

/// The cluster node shared by the tests of this binary (see
/// [`RedisServer::start_cluster`]).
pub fn shared_cluster() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start_cluster)
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

/// `config` pointed at `url` under a fresh prefix, with short connect timeouts.
pub fn config_for(url: &str, mut config: Config) -> Config {
    config.broker = url.to_owned();
    config
        .section_mut::<machinery_redis::RedisConfig>()
        .key_prefix = fresh_prefix();
    config
        .section_mut::<machinery_redis::RedisConfig>()
        .connect_timeout = std::time::Duration::from_millis(2000);
    config
}

/// The conformance harness: `config` on the shared server under a fresh prefix.
pub async fn server(config: Config) -> Server {
    Server::from_config(config_for(&shared().url(), config))
        .await
        .expect("connect to the test redis-server")
}

/// The conformance harness on the shared cluster node.
pub async fn cluster_server(config: Config) -> Server {
    Server::from_config(config_for(&shared_cluster().url(), config))
        .await
        .expect("connect to the test cluster node")
}
