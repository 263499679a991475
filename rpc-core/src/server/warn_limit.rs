//! A limit on repeated warnings, sans-IO: a flood of junk connections must not flood the log.

use std::time::Duration;

use tokio::time::Instant;

/// Allows at most `burst` warnings per `period`; the first one allowed after a period in which
/// some were held back says how many.
#[derive(Debug)]
pub(crate) struct WarnLimit {
    period: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    held_back: u64,
}

/// What to do with one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it; `held_back` warnings before it were not logged.
    Log {
        /// Warnings not logged since the last one that was.
        held_back: u64,
    },
    /// Do not log it.
    HoldBack,
}

impl WarnLimit {
    pub(crate) fn new(burst: u32, period: Duration) -> Self {
        WarnLimit {
            period,
            burst,
            window_start: None,
            in_window: 0,
            held_back: 0,
        }
    }

    /// One more warning, at `now`.
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        let fresh = match self.window_start {
            None => true,
            Some(start) => now.saturating_duration_since(start) >= self.period,
        };
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            let held_back = std::mem::take(&mut self.held_back);
            Verdict::Log { held_back }
        } else {
            self.held_back += 1;
            Verdict::HoldBack
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_then_held_back_and_counted() {
        let start = Instant::now();
        let mut limit = WarnLimit::new(3, Duration::from_secs(1));
        for _ in 0..3 {
            assert_eq!(limit.check(start), Verdict::Log { held_back: 0 });
        }
        for i in 1..=1000 {
            let at = start + Duration::from_millis(i % 999);
            assert_eq!(limit.check(at), Verdict::HoldBack);
        }
        let later = start + Duration::from_secs(1);
        assert_eq!(limit.check(later), Verdict::Log { held_back: 1000 });
        assert_eq!(limit.check(later), Verdict::Log { held_back: 0 });
    }
}
