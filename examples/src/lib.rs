//! Runnable examples of Machinery for Rust; see the `examples/` folder. The library
//! holds what the measuring binaries (`src/bin/`) share.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The error of the measuring binaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A private `redis-server` on a free loopback port, with no persistence, stopped on
/// drop: measurements never touch a server they did not start.
#[derive(Debug)]
pub struct PrivateRedis {
    child: Child,
    /// `redis://127.0.0.1:<port>/`.
    pub url: String,
}

impl PrivateRedis {
    /// Starts it (see [`wait_ready`](Self::wait_ready)).
    ///
    /// # Errors
    /// No free port, or no `redis-server` to run (the message says how to install it).
    pub fn start() -> Result<Self, BoxError> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start redis-server ({e}); install it (apt-get install redis-server)"
                )
            })?;
        Ok(PrivateRedis {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
        })
    }

    /// A connection once the server answers `PING` (within 5 s).
    ///
    /// # Errors
    /// It did not answer in time.
    pub async fn wait_ready(&self) -> Result<redis::aio::MultiplexedConnection, BoxError> {
        let client = redis::Client::open(self.url.as_str())?;
        for _ in 0..100 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return Ok(c);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("redis-server did not answer".into())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
