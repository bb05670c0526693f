//! The memory engine's rate limiter: the GCRA of every engine, on the process clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::{Reservation, gcra};
use crate::rate::RateLimit;

/// Theoretical arrival times by key, in µs since `epoch` (tokio time, so tests with a
/// paused clock see the limiter follow it).
pub(crate) struct Rates {
    tats: Mutex<HashMap<String, u64>>,
    epoch: Instant,
}

impl Rates {
    pub(crate) fn new() -> Self {
        Rates {
            tats: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    /// [`Broker::reserve_rate`](crate::engine::Broker::reserve_rate) within the process.
    pub(crate) fn reserve(&self, key: &str, limit: RateLimit, horizon: Duration) -> Reservation {
        // Offset by one second so that a fresh key's TAT of 0 is always in the past.
        let now = u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1_000_000);
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(key).copied().unwrap_or(0);
        let (reservation, next) = gcra(tat, now, limit, horizon);
        if let Some(next) = next {
            // A key whose TAT is in the past is the same as no key: drop those now and
            // then so that a map of many short-lived keys does not grow forever.
            if tats.len() > 1024 {
                tats.retain(|_, t| *t > now);
            }
            tats.insert(key.to_owned(), next);
        }
        reservation
    }
}
