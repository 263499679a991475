//! One timer per connection for the deadlines of its calls, driven by the connection's read
//! loop, instead of a timer per call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

/// No deadline noted.
const NONE: u64 = u64::MAX;

/// The earliest deadline among a connection's calls.
///
/// A caller notes its call's deadline with [`add`](Self::add): one atomic minimum, and a
/// wake-up of the read loop only when the deadline is earlier than every one noted (calls with
/// the same timeout come in deadline order, so that is rare). The read loop's
/// [`DeadlineTimer`] sleeps until the earliest; when it fires, the loop [`take`](Self::take)s
/// the deadlines, looks through its calls, fails those whose deadline passed and notes the
/// earliest of the others again. So a call costs no timer of its own, and the loop looks
/// through its calls once per deadline that passes (not per call): with every call on the
/// default timeout, about once per timeout.
///
/// The order makes it race-free: a caller registers its call before noting the deadline, and
/// the loop forgets the deadlines before looking through the calls; a call the loop did not
/// see was noted after the loop forgot, so it wakes the loop again.
#[derive(Debug)]
pub(crate) struct Deadlines {
    base: Instant,
    /// Nanoseconds after `base` of the earliest deadline noted, or [`NONE`].
    earliest: AtomicU64,
    waker: AtomicWaker,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            base: Instant::now(),
            earliest: AtomicU64::new(NONE),
            waker: AtomicWaker::new(),
        }
    }
}

impl Deadlines {
    /// Notes a call's deadline (after the call is registered where the read loop finds it).
    pub(crate) fn add(&self, deadline: Instant) {
        let ticks = deadline
            .saturating_duration_since(self.base)
            .as_nanos()
            .min(u128::from(NONE - 1)) as u64;
        if ticks < self.earliest.fetch_min(ticks, Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// Forgets every deadline noted: the read loop is about to look through its calls and note
    /// the deadlines still ahead again.
    pub(crate) fn take(&self) {
        self.earliest.store(NONE, Ordering::SeqCst);
    }

    fn instant(&self, ticks: u64) -> Instant {
        self.base + Duration::from_nanos(ticks)
    }
}

/// The read loop's timer: asleep until the earliest deadline noted in a [`Deadlines`].
pub(crate) struct DeadlineTimer<'a> {
    deadlines: &'a Deadlines,
    /// The deadline `sleep` is set to, or [`NONE`].
    armed: u64,
    /// One allocation per connection; reset, never made again.
    sleep: Pin<Box<Sleep>>,
}

impl<'a> DeadlineTimer<'a> {
    pub(crate) fn new(deadlines: &'a Deadlines) -> Self {
        DeadlineTimer {
            deadlines,
            armed: NONE,
            sleep: Box::pin(tokio::time::sleep_until(deadlines.base)),
        }
    }

    /// Ready once the earliest deadline noted has come. The caller then takes the deadlines
    /// and notes those still ahead again.
    pub(crate) fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.deadlines.waker.register(cx.waker());
        let earliest = self.deadlines.earliest.load(Ordering::SeqCst);
        if earliest == NONE {
            self.armed = NONE;
            return Poll::Pending;
        }
        if earliest != self.armed {
            self.sleep.as_mut().reset(self.deadlines.instant(earliest));
            self.armed = earliest;
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.armed = NONE;
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_timer_fires_at_the_earliest_deadline_noted() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        let mut timer = DeadlineTimer::new(&deadlines);
        // Nothing noted: the timer never fires.
        let idle =
            tokio::time::timeout(Duration::from_secs(60), poll_fn(|cx| timer.poll_passed(cx)));
        assert!(idle.await.is_err());
        let start_noting = Instant::now();
        deadlines.add(start_noting + Duration::from_secs(5));
        deadlines.add(start_noting + Duration::from_secs(9));
        poll_fn(|cx| timer.poll_passed(cx)).await;
        assert_eq!(Instant::now() - start_noting, Duration::from_secs(5));
        // Taken and noted again: the later one is next.
        deadlines.take();
        deadlines.add(start_noting + Duration::from_secs(9));
        poll_fn(|cx| timer.poll_passed(cx)).await;
        assert_eq!(Instant::now() - start_noting, Duration::from_secs(9));
        assert!(Instant::now() > start);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_a_timer_set_to_a_later_one() {
        let deadlines = std::sync::Arc::new(Deadlines::default());
        let start = Instant::now();
        deadlines.add(start + Duration::from_secs(30));
        let noter = deadlines.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            noter.add(Instant::now() + Duration::from_secs(2));
        });
        let mut timer = DeadlineTimer::new(&deadlines);
        poll_fn(|cx| timer.poll_passed(cx)).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
    }
}
