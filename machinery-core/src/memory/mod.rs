//! The in-memory engine: a broker and a result backend inside the process.
//!
//! It behaves like a remote engine — delayed messages wait, unacknowledged deliveries
//! come back after the visibility timeout, results expire — so code and tests written
//! against it hold on Redis. It keeps nothing across restarts and is not shared between
//! processes. Time is tokio's clock, so tests can run it with a paused clock.
//!
//! The broker implements the whole admin plane ([`BrokerAdmin`](crate::engine::BrokerAdmin)):
//! listings are paged by keyset cursors (a page costs its own size and a few lookups,
//! never a copy of the queue; at most 1,000 items a page), paused queues, worker records (expiring on tokio's clock)
//! and statistics (kept by wall-clock minute) live in the broker and go with it.

mod backend;
mod broker;
mod progress;
mod rate;
mod ready;

pub use backend::MemoryBackend;
pub use broker::MemoryBroker;
