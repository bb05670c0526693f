//! Rate limits: start slots reserved by `lua/rate.lua`, on the server's clock.

use std::sync::LazyLock;
use std::time::Duration;

use machinery_core::engine::Reservation;
use machinery_core::{RateLimit, Result as CoreResult};
use redis::Script;

use super::RedisBroker;
use crate::error::Error;

/// `lua/rate.lua`, on its own: it touches one key and needs nothing of `lib.lua`.
static RATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/rate.lua")));

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RedisBroker {
    /// One script call: see [`Broker::reserve_rate`](machinery_core::engine::Broker::reserve_rate).
    pub(crate) async fn reserve(
        &self,
        key: &str,
        limit: RateLimit,
        horizon: Duration,
    ) -> CoreResult<Reservation> {
        // Kept below 2^53 µs, the largest whole number a Lua double holds exactly.
        let cap = 1u64 << 52;
        let (granted, us): (i64, i64) = RATE
            .key(self.engine.keys.rate(key))
            .arg(limit.interval_us().min(cap))
            .arg(micros(horizon).min(cap))
            .invoke_async(&mut self.conn())
            .await
            .map_err(Error::from)?;
        let d = Duration::from_micros(u64::try_from(us).unwrap_or(0));
        Ok(if granted == 1 {
            Reservation::Granted { wait: d }
        } else {
            Reservation::Later { retry_after: d }
        })
    }
}
