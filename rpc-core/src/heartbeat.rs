//! The liveness state machine of one connection (sans-IO): when to ping, when to give up.

use std::time::Duration;

use tokio::time::Instant;

/// What the connection driver should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeartbeatAction {
    /// Nothing until [`Heartbeat::next_wakeup`].
    Wait,
    /// Send a ping.
    Ping,
    /// Nothing was read for the idle timeout: the connection is dead.
    Dead,
}

/// The liveness state machine of one connection, on either side. Sans-IO: it is told when
/// frames are read and what time it is, and says when to ping and when to give up.
///
/// A side pings when it has read nothing for `interval` (and again every `interval` while the
/// silence lasts); it declares the connection dead when it has read nothing for `idle_timeout`.
/// Any frame read counts as life, not only pongs.
#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    interval: Duration,
    idle_timeout: Duration,
    last_read: Instant,
    last_ping: Option<Instant>,
}

impl Heartbeat {
    pub(crate) fn new(interval: Duration, idle_timeout: Duration, now: Instant) -> Self {
        Heartbeat {
            interval,
            idle_timeout: idle_timeout.max(interval),
            last_read: now,
            last_ping: None,
        }
    }

    pub(crate) fn on_read(&mut self, now: Instant) {
        self.last_read = now;
        self.last_ping = None;
    }

    pub(crate) fn poll(&mut self, now: Instant) -> HeartbeatAction {
        let silent = now.saturating_duration_since(self.last_read);
        if silent >= self.idle_timeout {
            return HeartbeatAction::Dead;
        }
        let ping_due = match self.last_ping {
            None => silent >= self.interval,
            Some(at) => now.saturating_duration_since(at) >= self.interval,
        };
        if ping_due {
            self.last_ping = Some(now);
            return HeartbeatAction::Ping;
        }
        HeartbeatAction::Wait
    }

    /// When [`Heartbeat::poll`] next has something to say.
    pub(crate) fn next_wakeup(&self) -> Instant {
        let dead_at = self.last_read + self.idle_timeout;
        let ping_at = match self.last_ping {
            None => self.last_read + self.interval,
            Some(at) => at + self.interval,
        };
        ping_at.min(dead_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pings_after_interval_then_dies_after_idle_timeout() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(S, 3 * S, t0);
        assert_eq!(hb.poll(t0), HeartbeatAction::Wait);
        assert_eq!(hb.next_wakeup(), t0 + S);
        assert_eq!(hb.poll(t0 + S), HeartbeatAction::Ping);
        assert_eq!(hb.poll(t0 + S), HeartbeatAction::Wait);
        assert_eq!(hb.next_wakeup(), t0 + 2 * S);
        assert_eq!(hb.poll(t0 + 2 * S), HeartbeatAction::Ping);
        assert_eq!(hb.next_wakeup(), t0 + 3 * S);
        assert_eq!(hb.poll(t0 + 3 * S), HeartbeatAction::Dead);
    }

    #[test]
    fn any_read_resets_the_clock() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(S, 3 * S, t0);
        assert_eq!(hb.poll(t0 + S), HeartbeatAction::Ping);
        hb.on_read(t0 + 2 * S);
        assert_eq!(hb.poll(t0 + 2 * S + S / 2), HeartbeatAction::Wait);
        assert_eq!(hb.next_wakeup(), t0 + 3 * S);
        assert_eq!(hb.poll(t0 + 4 * S + S / 2), HeartbeatAction::Ping);
        assert_eq!(hb.poll(t0 + 5 * S), HeartbeatAction::Dead);
    }

    #[test]
    fn idle_timeout_is_never_below_interval() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(3 * S, S, t0);
        assert_eq!(hb.poll(t0 + S), HeartbeatAction::Wait);
        assert_eq!(hb.poll(t0 + 3 * S), HeartbeatAction::Dead);
    }
}
