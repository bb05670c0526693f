//! End-to-end tests of Machinery for Rust; the tests live in `tests/tests/`.
//!
//! This library holds what they share: a private `redis-server` per test and the tasks
//! run by the `fault_worker` child process.

pub mod redis_server;
pub mod tasks;

pub use redis_server::RedisServer;
