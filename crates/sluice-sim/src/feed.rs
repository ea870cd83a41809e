//! The shared feed: the head sequence number advancing with (tokio) time, and the state at head.
//!
//! Deltas are pure functions of their sequence number, so the feed stores no delta bodies: the
//! replay history is a window `(head - history, head]` of sequence numbers that streams may
//! regenerate. The state is maintained incrementally so a snapshot is a copy, not a replay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::SimConfig;
use crate::model::{Book, Snapshot, delta};
use crate::render::ResetReason;

/// Shortest generator tick: above it, several deltas are produced per tick.
const MIN_TICK: Duration = Duration::from_millis(1);
/// Longest generator tick, so a slow feed still notices shutdown and rate promptly.
const MAX_TICK: Duration = Duration::from_secs(1);

/// Where a new stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    /// The first sequence number to send.
    pub next: u64,
    /// Send a `reset` event (with the head at the time) before anything else.
    pub reset: Option<(ResetReason, u64)>,
}

pub(crate) struct Feed {
    pub seed: u64,
    pub entities: usize,
    pub history: u64,
    pub max_events: Option<u64>,
    book: Mutex<Book>,
    head: watch::Sender<u64>,
    /// `GET /v1/snapshot` requests served.
    snapshot_requests: AtomicU64,
    /// `GET /v1/snapshot/pages` requests served.
    page_requests: AtomicU64,
}

impl Feed {
    pub fn new(config: &SimConfig) -> Self {
        Feed {
            seed: config.seed,
            entities: config.entities,
            history: u64::try_from(config.history).unwrap_or(u64::MAX),
            max_events: config.max_events,
            book: Mutex::new(Book::new(config.entities)),
            head: watch::Sender::new(0),
            snapshot_requests: AtomicU64::new(0),
            page_requests: AtomicU64::new(0),
        }
    }

    /// The snapshot a `GET /v1/snapshot` request gets, counted.
    pub fn serve_snapshot(&self) -> Snapshot {
        self.snapshot_requests.fetch_add(1, Ordering::Relaxed);
        self.snapshot()
    }

    /// The state a `GET /v1/snapshot/pages` request cuts its page from, counted.
    pub fn serve_page(&self) -> Snapshot {
        self.page_requests.fetch_add(1, Ordering::Relaxed);
        self.snapshot()
    }

    /// How many `GET /v1/snapshot/pages` requests were served.
    pub fn page_requests(&self) -> u64 {
        self.page_requests.load(Ordering::Relaxed)
    }

    /// How many `GET /v1/snapshot` requests were served.
    pub fn snapshot_requests(&self) -> u64 {
        self.snapshot_requests.load(Ordering::Relaxed)
    }

    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot()
    }

    /// Applies deltas up to `target` to the state, then publishes the new head.
    fn advance_to(&self, target: u64) {
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let from = book.version() + 1;
        for seq in from..=target {
            book.apply(&delta(self.seed, self.entities, seq));
        }
        drop(book);
        self.head.send_replace(target);
    }

    /// Decides where a stream starts from its `Last-Event-ID` (absent or empty: at the head).
    ///
    /// A firehose stream can start anywhere (every delta can be regenerated), so only an id
    /// that is not a number resets it.
    pub fn start(&self, last_event_id: Option<&str>, firehose: bool) -> Start {
        let head = self.head();
        let live = Start {
            next: head + 1,
            reset: None,
        };
        let Some(raw) = last_event_id.filter(|id| !id.is_empty()) else {
            return live;
        };
        let reset = |reason| Start {
            next: head + 1,
            reset: Some((reason, head)),
        };
        let Ok(id) = raw.trim().parse::<u64>() else {
            return reset(ResetReason::InvalidId);
        };
        if firehose {
            return Start {
                next: id.saturating_add(1),
                reset: None,
            };
        }
        if id > head {
            return reset(ResetReason::IdInFuture);
        }
        if id < head.saturating_sub(self.history) {
            return reset(ResetReason::HistoryExhausted);
        }
        Start {
            next: id + 1,
            reset: None,
        }
    }

    /// Advances the head at `rate` deltas per second until `max_events` or shutdown.
    pub async fn run(&self, rate: f64, shutdown: CancellationToken) {
        if rate <= 0.0 {
            // Firehose: streams generate deltas themselves; the shared feed stays put.
            return;
        }
        let tick = Duration::from_secs_f64(1.0 / rate).clamp(MIN_TICK, MAX_TICK);
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let started = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            // Pace from the start time, not per tick, so timer jitter does not drift the rate.
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            let target = self.max_events.map_or(due, |max| due.min(max));
            if target > self.head() {
                self.advance_to(target);
            }
            if self.max_events.is_some_and(|max| target >= max) {
                tracing::debug!(head = target, "feed reached max_events");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(history: usize) -> Feed {
        Feed::new(&SimConfig {
            history,
            ..SimConfig::default()
        })
    }

    #[test]
    fn start_without_id_is_live_from_head() {
        let f = feed(10);
        f.advance_to(50);
        assert_eq!(
            f.start(None, false),
            Start {
                next: 51,
                reset: None
            }
        );
        assert_eq!(f.start(Some(""), false).next, 51);
    }

    #[test]
    fn start_replays_within_history_and_resets_outside_it() {
        let f = feed(10);
        f.advance_to(50);
        assert_eq!(f.start(Some("40"), false).next, 41);
        assert_eq!(f.start(Some("50"), false).next, 51);
        assert_eq!(
            f.start(Some("39"), false).reset,
            Some((ResetReason::HistoryExhausted, 50))
        );
        assert_eq!(
            f.start(Some("51"), false).reset,
            Some((ResetReason::IdInFuture, 50))
        );
        assert_eq!(
            f.start(Some("abc"), false).reset,
            Some((ResetReason::InvalidId, 50))
        );
    }

    #[test]
    fn firehose_start_accepts_any_numeric_id() {
        let f = feed(10);
        assert_eq!(f.start(Some("1000000"), true).next, 1_000_001);
        assert_eq!(f.start(None, true).next, 1);
    }

    #[test]
    fn advancing_applies_every_delta_to_the_state() {
        let f = feed(10);
        f.advance_to(300);
        assert_eq!(f.head(), 300);
        assert_eq!(f.snapshot(), crate::model::state_at(1, 100, 300));
    }

    #[tokio::test(start_paused = true)]
    async fn run_advances_at_rate_and_stops_at_max_events() {
        let f = std::sync::Arc::new(Feed::new(&SimConfig {
            rate: 100.0,
            max_events: Some(250),
            ..SimConfig::default()
        }));
        let mut head = f.subscribe();
        let task = tokio::spawn({
            let f = f.clone();
            async move { f.run(100.0, CancellationToken::new()).await }
        });
        head.wait_for(|h| *h >= 100).await.expect("feed alive");
        let at = Instant::now();
        head.wait_for(|h| *h >= 250).await.expect("feed alive");
        task.await.expect("generator ends at max_events");
        assert_eq!(f.head(), 250);
        // Paused clock: 150 deltas at 100/s take 1.5s of virtual time.
        let took = at.elapsed();
        assert!(
            took >= Duration::from_millis(1_400) && took <= Duration::from_millis(1_600),
            "{took:?}"
        );
    }
}
