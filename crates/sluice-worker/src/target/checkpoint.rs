//! Checkpoint pacing for one target: when to write the checkpoint, the write in flight, and
//! what Kafka has stored.
//!
//! The checkpoint ([`CheckpointTracker`]) only moves over events Kafka acknowledged together
//! with every earlier one; this writes it one write at a time: the first move after a start at
//! once, then when [`CHECKPOINT_INTERVAL`] passed, or sooner (at most once per
//! [`CHECKPOINT_MIN_INTERVAL`]) once [`CHECKPOINT_EVENTS`] events moved it. A busy target thus
//! checkpoints every second, so a crash replays about a second of its events, and a quiet one
//! costs a write per 5 s at most.
//!
//! What it must NOT do: write a checkpoint the tracker did not give, or wait for a write's
//! answer on its own wake-up (the answer is taken on the target's next one).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use sluice_config::TargetId;
use sluice_publish::{CheckpointTracker, Delivered, Mark, PublishError};
use tokio::time::Instant;

use super::kafka::Kafka;
use crate::status::TargetStatus;

/// Longest time a moved checkpoint waits to be written.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Least time between two checkpoint writes of one target.
pub const CHECKPOINT_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Events that make a checkpoint due before [`CHECKPOINT_INTERVAL`] (after the minimum).
pub const CHECKPOINT_EVENTS: u64 = 100;
/// How soon a write the full producer queue did not take is tried again.
const DEFERRED_RETRY: Duration = Duration::from_millis(50);

/// The checkpoint writes of one target.
pub(crate) struct Checkpoints<A> {
    /// The write in flight: the id written and Kafka's answer to come.
    write: Option<(String, A)>,
    /// The handover mark of the write in flight.
    pending_mark: Mark,
    /// While handing over: a release (the final checkpoint, marked so) is stored.
    released: bool,
    /// The id Kafka stored last (the resume point at start until the first write).
    written: Box<str>,
    /// `tracker.acked_prefix()` covered by `written` / by the write in flight.
    written_prefix: u64,
    pending_prefix: u64,
    /// When the last write started (`None`: none yet this run, so the first is due at once).
    last_at: Option<Instant>,
    /// The owner epoch this run stamps its writes with.
    epoch: u64,
    /// An older owner's record landed after this run's: write the checkpoint again.
    rewrite: bool,
    /// A write the full producer did not take is tried again at this time.
    deferred_until: Option<Instant>,
}

impl<A> Checkpoints<A>
where
    A: std::future::Future<Output = Result<Delivered, PublishError>> + Unpin,
{
    /// Nothing written yet this run; `resume` is what Kafka holds from before.
    pub(crate) fn new(resume: &str, epoch: u64) -> Checkpoints<A> {
        Checkpoints {
            write: None,
            pending_mark: Mark::Plain,
            released: false,
            written: resume.into(),
            written_prefix: 0,
            pending_prefix: 0,
            last_at: None,
            epoch,
            rewrite: false,
            deferred_until: None,
        }
    }

    /// Asks for the checkpoint to be written again (after any write in flight), moved or not:
    /// a record of an older owner landed after this run's, and the last record of the target
    /// must be this run's.
    pub(crate) fn rewrite(&mut self) {
        self.rewrite = true;
    }

    /// The id Kafka stored last.
    pub(crate) fn written(&self) -> &str {
        &self.written
    }

    pub(crate) fn in_flight(&self) -> bool {
        self.write.is_some()
    }

    /// Starts a write when the checkpoint moved, none is in flight and the interval passed
    /// (`force`: now, as when stopping). `now` is the time of the last chunk or
    /// acknowledgement (the checkpoint can only move on one), so "nothing new" reads no clock.
    ///
    /// `handing_over` (a planned fleet handover): the writes are offers, and the final one
    /// (`drained`: stopping, with nothing in flight, so the checkpoint moves no more) a
    /// release, written even when the checkpoint did not move, so the new owner learns where
    /// this run stopped.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn maybe_write<K: Kafka<Ack = A>>(
        &mut self,
        kafka: &K,
        target: &TargetId,
        tracker: &CheckpointTracker,
        now: Instant,
        force: bool,
        handing_over: bool,
        drained: bool,
    ) {
        if self.write.is_some() {
            return;
        }
        let mark = match (handing_over, drained) {
            (false, _) => Mark::Plain,
            (true, false) => Mark::Offer,
            (true, true) => Mark::Release,
        };
        if self.rewrite || (mark == Mark::Release && !self.released) {
            let now = Instant::now();
            let id = tracker.checkpoint().unwrap_or(&self.written).to_owned();
            if id.is_empty() {
                // Nothing to resume from: the other record's point stands (it is valid), and
                // there is nothing to release.
                self.rewrite = false;
                self.released = true;
            } else if self.deferred_until.is_none_or(|until| now >= until) {
                let started = self.start_write(kafka, target, tracker, id, now, mark);
                self.rewrite = self.rewrite && !started;
            }
            return;
        }
        if tracker.acked_prefix() == self.written_prefix {
            return;
        }
        let now = if force { Instant::now() } else { now };
        if !force && !self.due(tracker, now) {
            return;
        }
        let Some(id) = tracker.checkpoint() else {
            return;
        };
        if *id == *self.written {
            return;
        }
        let id = id.to_owned();
        self.start_write(kafka, target, tracker, id, now, mark);
    }

    fn start_write<K: Kafka<Ack = A>>(
        &mut self,
        kafka: &K,
        target: &TargetId,
        tracker: &CheckpointTracker,
        id: String,
        now: Instant,
        mark: Mark,
    ) -> bool {
        match kafka.write_checkpoint(target, &id, self.epoch, mark) {
            Ok(pending) => {
                self.pending_mark = mark;
                self.pending_prefix = tracker.acked_prefix();
                self.last_at = Some(now);
                self.deferred_until = None;
                self.write = Some((id, pending));
                true
            }
            Err(error) => {
                tracing::debug!(target_id = %target, %error, "checkpoint write deferred");
                // Try again soon, not at once (the producer is full).
                self.deferred_until = Some(now + DEFERRED_RETRY);
                false
            }
        }
    }

    /// Whether the moved checkpoint is due at `now`.
    fn due(&self, tracker: &CheckpointTracker, now: Instant) -> bool {
        if let Some(until) = self.deferred_until {
            return now >= until;
        }
        let Some(last) = self.last_at else {
            return true;
        };
        let since = now.saturating_duration_since(last);
        since >= CHECKPOINT_INTERVAL
            || (since >= CHECKPOINT_MIN_INTERVAL
                && tracker.acked_prefix().saturating_sub(self.pending_prefix) >= CHECKPOINT_EVENTS)
    }

    /// Kafka's answer to the write in flight, once it came (the write is then taken).
    pub(crate) fn poll_answer(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<(String, Result<Delivered, PublishError>)> {
        let Some((_, pending)) = self.write.as_mut() else {
            return Poll::Pending;
        };
        let result = ready!(Pin::new(pending).poll(cx));
        match self.write.take() {
            Some((id, _)) => Poll::Ready((id, result)),
            None => Poll::Pending,
        }
    }

    /// Takes the answer to the write in flight if it came, without asking to be woken for it:
    /// it is taken on the target's next wake-up (its next chunk or acknowledgement) instead of
    /// costing a wake-up of its own per checkpoint. Nothing waits on it but the next write, at
    /// least [`CHECKPOINT_INTERVAL`] later, and shutdown, which does wait for it.
    /// Returns whether an answer was taken.
    pub(crate) fn take_answer(
        &mut self,
        tracker: &CheckpointTracker,
        status: &TargetStatus,
    ) -> bool {
        let mut quiet = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready((id, result)) = self.poll_answer(&mut quiet) {
            self.on_answer(id, result, tracker, status);
            return true;
        }
        false
    }

    /// Kafka answered the write of `id`.
    pub(crate) fn on_answer(
        &mut self,
        id: String,
        result: Result<Delivered, PublishError>,
        tracker: &CheckpointTracker,
        status: &TargetStatus,
    ) {
        match result {
            Ok(_) => {
                if self.pending_mark == Mark::Release {
                    self.released = true;
                }
                status.checkpoints.inc();
                status.set_checkpoint(&id);
                self.written = id.into_boxed_str();
                self.written_prefix = self.pending_prefix;
                self.update_lag(tracker, status);
            }
            Err(error) => {
                tracing::warn!(target_id = %status.id, %error, "checkpoint write failed; will write again");
            }
        }
    }

    /// Publishes how many acknowledged events the stored checkpoint is behind.
    pub(crate) fn update_lag(&self, tracker: &CheckpointTracker, status: &TargetStatus) {
        let lag = tracker.acked_prefix().saturating_sub(self.written_prefix);
        status
            .checkpoint_lag
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// No write in flight and the stored checkpoint is the tracker's (and, `handing_over`,
    /// stored as the release).
    pub(crate) fn settled(&self, tracker: &CheckpointTracker, handing_over: bool) -> bool {
        self.write.is_none()
            && tracker.checkpoint().is_none_or(|id| *id == *self.written)
            && (!handing_over || self.released)
    }
}
