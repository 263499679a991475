//! The handle a running call's task watches: whether the call was cancelled, and the credit its
//! stream may spend. The connection's [`CallTable`](super::calls::CallTable) holds the other
//! end.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;
use tokio::sync::Semaphore;

use super::calls::CallControl;
use rpc_codec::{MAX_STREAM_CREDIT, STREAM_WINDOW};

const MAX_CREDIT: usize = MAX_STREAM_CREDIT as usize;

/// One call's cancel flag and stream credit, shared by the table and the call's task.
#[derive(Debug)]
pub(crate) struct CallSignal {
    cancelled: AtomicBool,
    waker: AtomicWaker,
    /// Items the stream may still send. Closed when the call is cancelled.
    credit: Semaphore,
}

impl CallSignal {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(CallSignal {
            cancelled: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            credit: Semaphore::new(STREAM_WINDOW as usize),
        })
    }

    /// Resolves once the call is cancelled. One task waits on it at a time.
    pub(crate) async fn cancelled(&self) {
        poll_fn(|cx| {
            if self.cancelled.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.cancelled.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
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

    /// Takes one item's credit if there is some now.
    pub(crate) fn try_acquire(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.credit.try_acquire().ok()
    }
}

impl CallControl for Arc<CallSignal> {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.credit.close();
        self.waker.wake();
    }

    fn grant(&self, credit: u32) {
        let room = MAX_CREDIT.saturating_sub(self.credit.available_permits());
        self.credit.add_permits((credit as usize).min(room));
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn credit_is_clamped_to_the_cap() {
        let signal = CallSignal::new();
        signal.grant(u32::MAX);
        assert_eq!(signal.credit.available_permits(), MAX_CREDIT);
        for _ in 0..MAX_CREDIT {
            assert!(signal.acquire().now_or_never().unwrap());
        }
        assert!(signal.try_acquire().is_none());
        signal.grant(3);
        assert_eq!(signal.credit.available_permits(), 3);
    }

    #[test]
    fn cancel_wakes_the_waiter_and_stops_credit() {
        let signal = CallSignal::new();
        let mut waiting = Box::pin(signal.cancelled());
        assert!((&mut waiting).now_or_never().is_none());
        signal.cancel();
        assert!(waiting.now_or_never().is_some());
        assert!(!signal.acquire().now_or_never().unwrap());
        assert!(signal.cancelled().now_or_never().is_some());
    }
}
