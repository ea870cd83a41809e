//! A target's stop signal, as its task watches it.
//!
//! Polling `CancellationToken::cancelled()` takes two mutexes on each wake-up of each target;
//! this costs one atomic load once the task is registered. Each target has its own, so the
//! supervisor can stop one target or all of them through the same path.
//!
//! What it must NOT do: anything but tell a task it should stop.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// Set once; every task registered with it is woken.
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    notify: Notify,
}

impl StopSignal {
    pub(crate) fn new() -> StopSignal {
        StopSignal {
            stopped: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Sets the flag, then wakes every task registered with [`StopSignal::poll_stopped`].
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// What a task passes to [`StopSignal::poll_stopped`]: create it before the task first
    /// polls, so a `stop` in between is not missed.
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Ready once stopped. The first call (`registered` false) polls `notified`, which stores
    /// the task's waker; later calls only read the flag, since a task's waker never changes and
    /// `stop` sets the flag before it wakes anyone.
    pub(crate) fn poll_stopped(
        &self,
        cx: &mut Context<'_>,
        notified: Pin<&mut Notified<'_>>,
        registered: &mut bool,
    ) -> Poll<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !*registered {
            *registered = true;
            if std::future::Future::poll(notified, cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}
