//! End-to-end tests of Machinery for Rust; the tests live in `tests/tests/`.
//!
//! This library holds what they share: a private `redis-server` per test, the tasks
//! run by the `fault_worker` child process and those of the model-based workflow test.

pub mod model_tasks;
pub mod redis_server;
pub mod tasks;

pub use redis_server::RedisServer;
