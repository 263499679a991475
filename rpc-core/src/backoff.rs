//! Reconnect delays: exponential backoff with full jitter (sans-IO).

use std::time::Duration;

/// Exponential backoff with full jitter for reconnect attempts. Sans-IO: the caller supplies the
/// attempt number and the random draw.
///
/// The delay before attempt `n` (1-based) is drawn uniformly from `[0, min(cap, base × 2^(n-1))]`
/// ("full jitter"), so that many clients cut off together do not reconnect together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// The ceiling of the first delay. Default: 100 ms.
    pub base: Duration,
    /// The largest ceiling. Default: 5 s.
    pub cap: Duration,
    /// How many attempts in a row may fail before the client gives up; `None` (the default)
    /// retries for ever.
    pub max_attempts: Option<u32>,
}

impl Backoff {
    /// A backoff with the given base and cap and no attempt limit.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            max_attempts: None,
        }
    }

    /// Sets the attempt limit.
    pub fn with_max_attempts(mut self, max_attempts: Option<u32>) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The ceiling of the delay before attempt `attempt` (1-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << shift.min(31))
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The delay before attempt `attempt` (1-based), given a uniform random draw in `[0, 1)`;
    /// `None` when the attempt limit has been reached.
    pub fn delay(&self, attempt: u32, random: f64) -> Option<Duration> {
        if self.max_attempts.is_some_and(|max| attempt > max) {
            return None;
        }
        Some(self.ceiling(attempt).mul_f64(random.clamp(0.0, 1.0)))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<_> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn attempt_limit_stops() {
        let b = Backoff::default().with_max_attempts(Some(3));
        assert!(b.delay(3, 0.5).is_some());
        assert_eq!(b.delay(4, 0.5), None);
    }

    proptest! {
        #[test]
        fn delays_stay_within_the_ceiling(
            base_ms in 1u64..1000,
            cap_ms in 1u64..60_000,
            attempt in 1u32..100,
            r in 0.0f64..1.0,
        ) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
            let d = b.delay(attempt, r).unwrap();
            prop_assert!(d <= b.ceiling(attempt));
            prop_assert!(b.ceiling(attempt) <= b.cap);
            prop_assert!(b.ceiling(attempt) <= b.ceiling(attempt + 1));
        }
    }
}
