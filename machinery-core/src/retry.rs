//! Retry delays: Machinery's Fibonacci backoff, capped.

use std::time::Duration;

/// The base delay when a signature sets none.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(1);

/// The delay before retry number `retried + 1`: `fib(retried + 1) × base` with the
/// Fibonacci sequence 1, 2, 3, 5, 8, 13…, never more than `cap`.
///
/// ```
/// use machinery_core::retry::fibonacci_delay;
/// use std::time::Duration;
///
/// let s = Duration::from_secs(1);
/// let cap = Duration::from_secs(600);
/// let delays: Vec<u64> = (0..6).map(|n| fibonacci_delay(n, s, cap).as_secs()).collect();
/// assert_eq!(delays, [1, 2, 3, 5, 8, 13]);
/// assert_eq!(fibonacci_delay(40, s, cap), cap);
/// ```
pub fn fibonacci_delay(retried: u32, base: Duration, cap: Duration) -> Duration {
    let (mut a, mut b) = (1u64, 2u64);
    for _ in 0..retried {
        let next = a.saturating_add(b);
        a = b;
        b = next;
        if a > 1 << 40 {
            break;
        }
    }
    let millis = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(millis.saturating_mul(a)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_fibonacci_from_the_base_and_caps() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(3);
        let got: Vec<_> = (0..5).map(|n| fibonacci_delay(n, base, cap)).collect();
        assert_eq!(
            got,
            [500, 1000, 1500, 2500, 3000]
                .map(Duration::from_millis)
                .to_vec()
        );
        assert_eq!(fibonacci_delay(u32::MAX, base, cap), cap);
    }
}
