//! A repeatable wake-up of one target task: "write your checkpoint again", sent when a record
//! of an older owner (a zombie's late checkpoint) landed after this run's.
//!
//! What it must NOT do: carry data, or cost a target task more than an atomic swap and a
//! waker registration per wake-up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// Set any number of times; the task sees it once per [`Nudge::poll_nudged`] that is ready.
#[derive(Default)]
pub(crate) struct Nudge {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl Nudge {
    /// Sets the flag and wakes the task.
    pub(crate) fn nudge(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready (and cleared) once nudged since the last ready poll.
    pub(crate) fn poll_nudged(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.set.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.set.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn each_nudge_wakes_the_waiting_task_once() {
        let nudge = Arc::new(Nudge::default());
        let waiter = {
            let nudge = nudge.clone();
            tokio::spawn(async move {
                poll_fn(|cx| nudge.poll_nudged(cx)).await;
                poll_fn(|cx| nudge.poll_nudged(cx)).await;
            })
        };
        tokio::task::yield_now().await;
        nudge.nudge();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one nudge, one wake-up");
        nudge.nudge();
        waiter.await.expect("woken twice");
    }
}
