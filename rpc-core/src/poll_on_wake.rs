//! A future polled only after it asked to be woken: for a branch of a loop's `select!` that is
//! rarely ready (a connection's stop signal), which would otherwise be polled on every turn.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// Polls the inner future only when it has woken its own waker since its last poll (and on
/// the first poll). Other polls cost an atomic swap and a waker check instead of whatever the
/// inner future does to find out it is not ready (a `Notify` takes a lock for that).
pub(crate) struct PollOnWake<F> {
    inner: Pin<Box<F>>,
    flag: Arc<WakeFlag>,
    /// The waker the inner future is polled with, made once.
    waker: Waker,
}

struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> PollOnWake<F> {
    pub(crate) fn new(inner: F) -> Self {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        PollOnWake {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future> Future for PollOnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered before the flag is read: a wake after the read reaches this task.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::FutureExt;
    use tokio::sync::Notify;

    use super::*;

    #[test]
    fn the_inner_future_is_polled_only_after_it_woke() {
        let notify = Arc::new(Notify::new());
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = {
            let notify = notify.clone();
            let polls = polls.clone();
            let mut notified = Box::pin(notify.notified_owned());
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::SeqCst);
                notified.as_mut().poll(cx)
            })
        };
        let mut future = PollOnWake::new(counted);
        for _ in 0..10 {
            assert!((&mut future).now_or_never().is_none());
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "polled once, then left alone"
        );
        notify.notify_waiters();
        assert!((&mut future).now_or_never().is_some());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_wake_from_another_task_completes_it() {
        let notify = Arc::new(Notify::new());
        let waiter = PollOnWake::new(notify.clone().notified_owned());
        let task = tokio::spawn(waiter);
        tokio::task::yield_now().await;
        notify.notify_waiters();
        task.await.unwrap();
    }
}
