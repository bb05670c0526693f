//! What an engine implements: the traits and types for engine authors.
//!
//! Programs that send and run tasks need none of this; they use the crate root. An
//! engine (the in-memory one in [`memory`](crate::memory), `machinery-redis`, or your
//! own) provides:
//!
//! - a [`Broker`]: the data plane workers use (publish, fetch, ack, extend, release,
//!   dead-letter), each method with its contract written in its doc. Two methods,
//!   [`Broker::publish_with_states`] and [`Broker::complete`], have defaults built on
//!   the others and exist so an engine can do more in one step;
//! - a [`BrokerAdmin`], optional, handed out by [`Broker::admin`]: listings, counts and
//!   dead-letter handling for operators and tools;
//! - a [`ResultBackend`]: task states, results and chords;
//! - an [`EngineFactory`] registered with `inventory::submit!`, so that
//!   [`Server::from_config`](crate::Server::from_config) connects the engine for its URL
//!   schemes;
//! - optionally, an [`EngineSection`]: its own section of the configuration (`redis:`,
//!   `MACHINERY_REDIS_*`), registered with `inventory::submit!` through
//!   [`Section::of`], checked when a [`Config`](crate::Config) is loaded (unknown keys
//!   with "did you mean", invalid values naming the key) and read by the engine with
//!   [`Config::section`](crate::Config::section).
//!
//! **Sharing a store.** When an engine's broker and result backend keep their data in
//! the same place (one Redis), the broker can store a task's state and settle its
//! delivery atomically. That capability is explicit: the backend names its store with
//! [`ResultBackend::store_id`], and a broker that finds its own [`StoreId`] there writes
//! the states itself. Any other pairing (a Redis broker with an in-memory backend, a
//! third-party backend) goes through the traits, step by step
//! ([`complete_step_by_step`]).
//!
//! The conformance suite in `machinery_core::testing` (feature `test-util`) states the
//! behaviour every engine must have; an engine runs it against itself.

mod admin;
mod backend;
mod broker;
mod complete;
mod rate;

pub use crate::config::{EngineSection, FieldError, Section};
pub use crate::registry::BoxFuture;
pub use crate::server::{CheckUrl, ConnectBackend, ConnectBroker, EngineFactory};
pub use admin::{BrokerAdmin, DeadLetter, QueueDepth};
pub use backend::{ChordOutcome, ResultBackend, Revocation, RevokeOutcome, StoreId};
pub use broker::{Broker, Completion, Delivery, Enqueued, GroupMember, Outgoing};
pub use complete::complete_step_by_step;
pub(crate) use complete::{complete_one, record, refuse_revoked, settle_each};
pub use rate::{Reservation, gcra};
