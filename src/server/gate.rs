//! A future that is polled only when something it waits on has woken it.
//!
//! A connection's task is woken for every readable or writable socket event, and `select!` then polls every
//! branch: with the watchdog, the shutdown signal and the parking timer beside the connection, that was three
//! timer and notification checks on each wake, several times a request. Behind a gate those branches are polled
//! only when their own timer or notification fired, and stay as cheap as an atomic load otherwise.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Set by the inner future's wakers; wakes the task that polls the gate.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Polls `F` on its first poll and then only after one of the wakers it was given has been woken.
pub struct Gated<F> {
    inner: F,
    flag: Arc<Flag>,
    /// The waker handed to `inner`, made once.
    waker: Waker,
}

impl<F: Future + Unpin> Gated<F> {
    pub fn new(inner: F) -> Gated<F> {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Gated {
            inner,
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future + Unpin> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is read, so a wake between the two is not lost.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_gated_timer_fires() {
        let sleep = std::pin::pin!(tokio::time::sleep(Duration::from_millis(5)));
        let started = tokio::time::Instant::now();
        Gated::new(sleep).await;
        assert!(started.elapsed() >= Duration::from_millis(5));
    }

    #[tokio::test]
    async fn the_inner_future_is_not_polled_without_its_own_wake() {
        let polls = std::cell::Cell::new(0);
        let notify = tokio::sync::Notify::new();
        let inner = std::pin::pin!(async {
            polls.set(polls.get() + 1);
            notify.notified().await;
            polls.set(polls.get() + 1);
        });
        let mut gated = Gated::new(inner);
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 1, "polled again without a wake");
        notify.notify_one();
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready());
        assert_eq!(polls.get(), 2);
    }
}
