//! Start-slot reservations for rate limits (GCRA with reservation).

use std::time::Duration;

use crate::rate::RateLimit;

/// The answer of [`Broker::reserve_rate`](super::Broker::reserve_rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// A start slot is reserved for the caller: start the task after `wait` (zero: at
    /// once). The slot is spent whether or not the task then starts.
    Granted {
        /// How long to wait before starting, at most the horizon asked for.
        wait: Duration,
    },
    /// The next free slot lies beyond the horizon; nothing was reserved. Ask again
    /// after `retry_after`, when the slot is half a horizon away.
    Later {
        /// When to ask again.
        retry_after: Duration,
    },
}

/// The GCRA step every engine shares. `tat_us`: the key's theoretical arrival time
/// (µs on the engine's clock, 0 when the key is new); `now_us`: the engine's clock.
/// Returns the reservation and, when granted, the new TAT to store.
///
/// With `start = max(now, tat)`: when `start - now <= horizon`, the slot at `start` is
/// taken and TAT moves one interval past it; otherwise nothing changes and the caller
/// is told to come back at `start - horizon/2`. Redis's `rate.lua` is the same
/// arithmetic on the server's clock.
pub fn gcra(
    tat_us: u64,
    now_us: u64,
    limit: RateLimit,
    horizon: Duration,
) -> (Reservation, Option<u64>) {
    let horizon_us = u64::try_from(horizon.as_micros()).unwrap_or(u64::MAX);
    let start = tat_us.max(now_us);
    let ahead = start - now_us;
    if ahead <= horizon_us {
        let next = start.saturating_add(limit.interval_us());
        (
            Reservation::Granted {
                wait: Duration::from_micros(ahead),
            },
            Some(next),
        )
    } else {
        (
            Reservation::Later {
                retry_after: Duration::from_micros(ahead - horizon_us / 2),
            },
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_grants_and_refuses_beyond_the_horizon() {
        let limit = RateLimit::new(10, 1000); // 100 ms apart
        let horizon = Duration::from_millis(250);
        let now = 1_000_000;
        let mut tat = 0;
        let mut waits = Vec::new();
        loop {
            match gcra(tat, now, limit, horizon) {
                (Reservation::Granted { wait }, Some(next)) => {
                    waits.push(wait.as_millis());
                    tat = next;
                }
                (Reservation::Later { retry_after }, None) => {
                    // The next slot is 300 ms ahead: come back when it is 125 ms away.
                    assert_eq!(retry_after, Duration::from_millis(175));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, [0, 100, 200]);
        // An idle key does not bank slots: a key last used long ago grants one at once
        // and the next one an interval later.
        let later = now + 60_000_000;
        let (r, next) = gcra(tat, later, limit, horizon);
        assert_eq!(
            r,
            Reservation::Granted {
                wait: Duration::ZERO
            }
        );
        assert_eq!(next, Some(later + 100_000));
    }
}
