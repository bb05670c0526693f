//! Periodic tasks: signatures, chains, groups and chords published on cron schedules,
//! once per tick however many schedulers run.
//!
//! - A [`Schedule`] says when: a 5- or 6-field cron spec, a nickname (`@hourly`), or a
//!   fixed period (`@every 10s`), in UTC or a given time zone.
//! - A [`Scheduler`] holds named entries (a schedule and what to publish) and fires
//!   them, standalone ([`Scheduler::run`], [`Scheduler::spawn`]) or inside a worker
//!   ([`Worker::scheduler`](crate::Worker::scheduler)).
//! - A [`PeriodicStore`] holds what every scheduler shares: the entries, their pause
//!   flags and last runs, and the tick claims. The memory engine keeps it in the
//!   process; `machinery-redis` keeps it in Redis.
//!
//! **Exactly once per tick.** At each tick every scheduler asks the store to claim the
//! tick (entry name + scheduled instant). The claim is atomic and monotonic: it
//! succeeds only for a tick later than every tick claimed before, so one scheduler wins
//! and no tick is claimed twice, however late a scheduler comes. The winner publishes
//! with UUIDs derived from the entry name, the instant and the message's position
//! ([`tick_uuid`]), so the same tick always has the same task UUIDs.
//!
//! **Missed ticks.** Ticks that passed while no scheduler could fire them are skipped
//! ([`MissedTicks::Skip`], the default); [`MissedTicks::CatchUpLast`] publishes the
//! most recent one once. Nothing ever bursts. A scheduler that loses its store (Redis
//! down) logs, keeps its schedule and fires again from the first tick after the store
//! is back.
//!
//! **Management.** [`Scheduler::entries`] lists entries with their spec, next run, last
//! run and last task UUID; [`Scheduler::pause`], [`Scheduler::resume`] and
//! [`Scheduler::remove`] act on every scheduler, since each tick's claim reads the
//! entry's state from the store.
//!
//! ```standalone_crate
//! use std::time::Duration;
//! use machinery_core::periodic::{Schedule, Scheduler};
//! use machinery_core::prelude::*;
//!
//! #[task]
//! async fn heartbeat() -> Result<(), TaskError> {
//!     Ok(())
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), machinery_core::Error> {
//!     let server = Server::memory();
//!     let scheduler = Scheduler::new(&server)
//!         .await?
//!         .add("heartbeat", Schedule::parse("@every 100ms")?, heartbeat::s())?;
//!     // Run it inside a worker; `scheduler.run().await` runs it alone.
//!     let worker = Worker::auto()
//!         .server(&server)
//!         .scheduler(scheduler.clone())
//!         .spawn()?;
//!
//!     // Wait for the first tick to be published (within ten seconds, for busy machines).
//!     let mut entries = scheduler.entries().await?;
//!     for _ in 0..100 {
//!         if entries.first().is_some_and(|e| e.last_task.is_some()) {
//!             break;
//!         }
//!         tokio::time::sleep(Duration::from_millis(100)).await;
//!         entries = scheduler.entries().await?;
//!     }
//!     assert_eq!(entries[0].name, "heartbeat");
//!     assert_eq!(entries[0].spec, "@every 100ms");
//!     assert!(entries[0].last_task.is_some());
//!
//!     scheduler.pause("heartbeat").await?;
//!     worker.shutdown().await
//! }
//! ```

mod memory;
mod schedule;
mod scheduler;
mod store;
mod template;

pub use memory::MemoryPeriodicStore;
pub use schedule::{MissedTicks, Schedule};
pub use scheduler::{Scheduler, SchedulerHandle};
pub use store::{
    Claim, ConnectPeriodicStore, EntrySpec, PeriodicEntry, PeriodicStore, PeriodicStoreFactory,
};
pub use template::{HEADER_AT, HEADER_ENTRY, Schedulable, scheduled_at, tick_uuid};
