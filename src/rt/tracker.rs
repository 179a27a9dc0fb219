//! A count of running tasks of one kind (connections, tunnels), so that shutdown can wait for them to end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts running tasks of one kind (connections, tunnels) so that shutdown can wait for them.
#[derive(Default)]
pub struct Tracker {
    count: AtomicUsize,
    done: Notify,
}

/// Held by a tracked task; dropping it ends the task's count.
pub struct Tracked(Arc<Tracker>);

impl Tracker {
    /// Count one more task until the returned guard is dropped.
    pub fn track(self: &Arc<Self>) -> Tracked {
        self.count.fetch_add(1, Ordering::AcqRel);
        Tracked(self.clone())
    }

    /// Tasks currently counted.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves when no task is counted.
    pub async fn idle(&self) {
        loop {
            let notified = self.done.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}
