//! The in-memory engine: a broker and a result backend inside the process.
//!
//! It behaves like a remote engine — delayed messages wait, unacknowledged deliveries
//! come back after the visibility timeout, results expire — so code and tests written
//! against it hold on Redis. It keeps nothing across restarts and is not shared between
//! processes. Time is tokio's clock, so tests can run it with a paused clock.

mod backend;
mod broker;

pub use backend::MemoryBackend;
pub use broker::MemoryBroker;
