//! The handle a running call's task watches: whether the call was cancelled or its deadline
//! passed, and the credit its stream may spend. The connection's [`CallTable`](super::calls::CallTable) holds the other
//! end.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::calls::CallControl;
use rpc_codec::{MAX_STREAM_CREDIT, STREAM_WINDOW, WINDOWED_STREAM_CREDIT};

/// Why a call stopped before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The client cancelled it, or the connection closed.
    Cancelled,
    /// Its deadline passed.
    DeadlinePassed,
}

/// One call's cancel flag, deadline and stream credit, shared by the table and the call's task.
#[derive(Debug)]
pub(crate) struct CallSignal {
    cancelled: AtomicBool,
    /// The call's deadline, kept by the connection's one timer ([`CallTable::deadlines_passed`]
    /// sets `passed`).
    ///
    /// [`CallTable::deadlines_passed`]: super::calls::CallTable::deadlines_passed
    deadline: Option<Instant>,
    passed: AtomicBool,
    /// Woken when the call is cancelled or its deadline passes.
    waker: AtomicWaker,
    /// Items the stream may still send. Closed when the call is cancelled.
    credit: Semaphore,
    /// The most unused credit kept.
    cap: usize,
    /// The byte window the client announced for the stream, if it did.
    window: Option<u64>,
    /// Every grant's count added up (before the cap): under a byte window, how many of the
    /// items sent the client has consumed.
    granted: AtomicU64,
    /// Woken by every grant, for a stream waiting on its byte window.
    grants: Notify,
}

impl CallSignal {
    /// The signal of a call whose stream, if it has one, is bounded by `window` bytes as well as
    /// by items (when the client announced a window).
    pub(crate) fn new(window: Option<u64>, deadline: Option<Instant>) -> Arc<Self> {
        let (initial, cap) = match window {
            None => (STREAM_WINDOW, MAX_STREAM_CREDIT),
            Some(_) => (WINDOWED_STREAM_CREDIT, WINDOWED_STREAM_CREDIT),
        };
        Arc::new(CallSignal {
            cancelled: AtomicBool::new(false),
            deadline,
            passed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            credit: Semaphore::new(initial as usize),
            cap: cap as usize,
            window,
            granted: AtomicU64::new(0),
            grants: Notify::new(),
        })
    }

    /// Resolves once the call is cancelled or its deadline passed, and says which (a cancel
    /// first). One task waits on it at a time.
    pub(crate) async fn stopped(&self) -> Stop {
        poll_fn(|cx| {
            if let Some(stop) = self.stop() {
                return Poll::Ready(stop);
            }
            self.waker.register(cx.waker());
            self.stop().map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }

    fn stop(&self) -> Option<Stop> {
        if self.cancelled.load(Ordering::Acquire) {
            Some(Stop::Cancelled)
        } else if self.passed.load(Ordering::Acquire) {
            Some(Stop::DeadlinePassed)
        } else {
            None
        }
    }

    /// Waits for one item's credit; false once the call is cancelled.
    pub(crate) async fn acquire(&self) -> bool {
        match self.credit.acquire().await {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Takes the credit there is now, up to `max` items; how many it took.
    pub(crate) fn take_up_to(&self, max: u32) -> u32 {
        // Only the call's task takes credit, so what is there stays there until it is taken.
        let there = u32::try_from(self.credit.available_permits()).unwrap_or(u32::MAX);
        let n = there.min(max);
        if n == 0 {
            return 0;
        }
        match self.credit.try_acquire_many(n) {
            Ok(permit) => {
                permit.forget();
                n
            }
            Err(_) => 0,
        }
    }

    /// Gives back credit taken and not used (up to the cap: a grant that came meanwhile may
    /// have filled it).
    pub(crate) fn give_back(&self, n: u32) {
        let room = self.cap.saturating_sub(self.credit.available_permits());
        let n = (n as usize).min(room);
        if n > 0 {
            self.credit.add_permits(n);
        }
    }

    /// The byte window the client announced, if it did.
    pub(crate) fn window(&self) -> Option<u64> {
        self.window
    }

    /// Every grant's count added up.
    pub(crate) fn granted(&self) -> u64 {
        self.granted.load(Ordering::Acquire)
    }

    /// Waits until `full` says the byte window has room, checking again after every grant.
    pub(crate) async fn wait_for_room(&self, mut full: impl FnMut(u64) -> bool) {
        loop {
            let grant = self.grants.notified();
            if !full(self.granted()) {
                return;
            }
            grant.await;
        }
    }
}

impl CallControl for Arc<CallSignal> {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.credit.close();
        self.waker.wake();
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn deadline_passed(&self) {
        self.passed.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn grant(&self, credit: u32) {
        let room = self.cap.saturating_sub(self.credit.available_permits());
        self.credit.add_permits((credit as usize).min(room));
        if self.window.is_some() {
            self.granted.fetch_add(u64::from(credit), Ordering::Release);
            self.grants.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn credit_is_clamped_to_the_cap() {
        let max = MAX_STREAM_CREDIT as usize;
        let signal = CallSignal::new(None, None);
        signal.grant(u32::MAX);
        assert_eq!(signal.credit.available_permits(), max);
        for _ in 0..max {
            assert!(signal.acquire().now_or_never().unwrap());
        }
        assert_eq!(signal.take_up_to(5), 0);
        signal.grant(3);
        assert_eq!(signal.credit.available_permits(), 3);
        // Credit taken and given back stays under the cap too.
        assert_eq!(signal.take_up_to(2), 2);
        signal.grant(u32::MAX);
        signal.give_back(2);
        assert_eq!(signal.credit.available_permits(), max);
    }

    #[test]
    fn cancel_wakes_the_waiter_and_stops_credit() {
        let signal = CallSignal::new(None, None);
        let mut waiting = Box::pin(signal.stopped());
        assert!((&mut waiting).now_or_never().is_none());
        signal.cancel();
        assert_eq!(waiting.now_or_never(), Some(Stop::Cancelled));
        assert!(!signal.acquire().now_or_never().unwrap());
        assert_eq!(signal.stopped().now_or_never(), Some(Stop::Cancelled));
    }

    #[test]
    fn a_passed_deadline_wakes_the_waiter_and_a_cancel_still_wins() {
        let deadline = Instant::now();
        let signal = CallSignal::new(None, Some(deadline));
        assert_eq!(signal.deadline(), Some(deadline));
        let mut waiting = Box::pin(signal.stopped());
        assert!((&mut waiting).now_or_never().is_none());
        signal.deadline_passed();
        assert_eq!(waiting.now_or_never(), Some(Stop::DeadlinePassed));
        signal.cancel();
        assert_eq!(signal.stopped().now_or_never(), Some(Stop::Cancelled));
    }

    #[test]
    fn a_windowed_stream_starts_with_its_larger_credit_and_counts_grants() {
        let signal = CallSignal::new(Some(1 << 20), None);
        assert_eq!(
            signal.credit.available_permits(),
            WINDOWED_STREAM_CREDIT as usize
        );
        assert_eq!(signal.take_up_to(10), 10);
        signal.grant(4);
        signal.grant(6);
        assert_eq!(signal.granted(), 10);
        assert_eq!(
            signal.credit.available_permits(),
            WINDOWED_STREAM_CREDIT as usize
        );
        // A waiter for room is woken by a grant.
        let mut room = false;
        let mut wait = Box::pin(signal.wait_for_room(|granted| {
            room = granted >= 11;
            !room
        }));
        assert!((&mut wait).now_or_never().is_none());
        signal.grant(1);
        assert!(wait.now_or_never().is_some());
    }
}
