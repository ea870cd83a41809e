//! The publishing side of one target: the delivery window, the queue of records the producer
//! had no room for, retries of failed deliveries, and the checkpoint.
//!
//! Invariant: the checkpoint written for a target never passes an event Kafka has not
//! acknowledged together with every earlier event of that target ([`CheckpointTracker`]). A
//! record is held here until Kafka took it; reading pauses while [`WINDOW`] records are in
//! flight or any wait for room.
//!
//! What it must NOT do: drop a record, block the task, or read from the upstream.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use sluice_config::TargetConfig;
use sluice_publish::{CheckpointTracker, RecordMeta, TrySendError, record_key};
use sluice_sse::Event;
use tokio::time::{Instant, sleep, sleep_until};

use super::checkpoint::Checkpoints;
use super::in_flight::{BoxFuture, Done, InFlight, InFlightSet};
use super::kafka::Kafka;
use crate::status::{Delivery, TargetStatus};

/// Events of one target sent to Kafka and not yet acknowledged before reading pauses.
pub const WINDOW: usize = 4096;
/// How long failed deliveries wait before they are sent again.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// Blocked records with nothing of this target in flight wait for another target's answer
/// ([`Kafka::room`]); this long at most, for room freed by answers not reported to it.
const ROOM_FALLBACK: Duration = Duration::from_secs(2);
/// A final checkpoint the full producer did not take is tried again this often while stopping.
const CHECKPOINT_ROOM_POLL: Duration = Duration::from_millis(50);

/// What an event's record is made of, kept until Kafka took it (to send it again after a
/// failure). Not the built [`sluice_publish::Record`]: each send writes the headers straight
/// into the producer's, which saves an allocation per header on every event.
pub(crate) struct Outgoing {
    pub(crate) event: Event,
    /// The record key when it is not the target id (a JSON Pointer key).
    key: Option<Box<[u8]>>,
    received_wall: SystemTime,
    generation: u64,
    resume: Option<Box<str>>,
}

impl Outgoing {
    /// Hands the record with sequence number `seq` to the producer.
    fn try_send<K: Kafka>(
        &self,
        kafka: &K,
        config: &TargetConfig,
        seq: u64,
    ) -> Result<K::Ack, TrySendError> {
        let meta = RecordMeta {
            target: &config.id,
            received_at: self.received_wall,
            connection: self.generation,
            seq,
            resume: self.resume.as_deref(),
            cloudevents: config.cloudevents,
        };
        let key = self
            .key
            .as_deref()
            .unwrap_or_else(|| config.id.as_str().as_bytes());
        kafka.send_event(&config.topic, key, &self.event, &meta)
    }
}

/// The publishing side of a target.
pub(crate) struct Pipe<K: Kafka> {
    pub(crate) kafka: Arc<K>,
    pub(crate) config: Arc<TargetConfig>,
    /// The status row, which holds the target's metrics too.
    pub(crate) status: Arc<TargetStatus>,
    tracker: CheckpointTracker,
    pub(crate) deliveries: InFlightSet<K::Ack, Outgoing>,
    /// Records waiting to be sent, in sequence order: those the producer had no room for, and
    /// failed deliveries waiting to be sent again.
    blocked: VecDeque<(u64, Instant, Outgoing)>,
    /// After a failed delivery: the highest sequence number that failed. Until a record at or
    /// past it is acknowledged, records are sent one at a time, so a target's records reach
    /// Kafka in order across retries.
    recovering: Option<u64>,
    /// Failed deliveries are not sent again before this.
    hold_until: Option<Instant>,
    /// While records wait and nothing of this target is in flight, or a final checkpoint waits
    /// for room while stopping: what wakes the target to try the producer again.
    pub(crate) room_wait: Option<BoxFuture<()>>,
    /// The `paused` value last published to the status row and metrics.
    paused: bool,
    pub(crate) checkpoints: Checkpoints<K::Ack>,
    /// When the last chunk or acknowledgement was handled (read then anyway).
    pub(crate) now: Instant,
    failed: bool,
}

impl<K: Kafka> Pipe<K> {
    pub(crate) fn new(
        kafka: Arc<K>,
        config: Arc<TargetConfig>,
        status: Arc<TargetStatus>,
        resume: &str,
        epoch: u64,
    ) -> Pipe<K> {
        kafka.begin(&config.id, epoch);
        Pipe {
            kafka,
            config,
            status,
            tracker: CheckpointTracker::new(),
            deliveries: InFlightSet::default(),
            blocked: VecDeque::new(),
            recovering: None,
            hold_until: None,
            room_wait: None,
            paused: false,
            checkpoints: Checkpoints::new(resume, epoch),
            now: Instant::now(),
            failed: false,
        }
    }

    /// Whether the upstream may be read: nothing failed for good, nothing waits for room, and
    /// the window has space.
    pub(crate) fn can_read(&self) -> bool {
        !self.failed && self.blocked.is_empty() && self.deliveries.len() < WINDOW
    }

    /// Every record Kafka took has been answered.
    pub(crate) fn drained(&self) -> bool {
        self.deliveries.is_empty() && self.blocked.is_empty()
    }

    /// Publishes whether reading is paused (metric and delivery state), writing only changes.
    pub(crate) fn update_paused(&mut self) {
        let paused = !self.can_read();
        if paused != self.paused {
            self.paused = paused;
            self.status.paused.set(i64::from(paused));
        }
        let delivery = self.status.delivery();
        if self.failed || delivery == Delivery::Retrying {
            return;
        }
        let wanted = if paused {
            Delivery::Paused
        } else {
            Delivery::Ok
        };
        if delivery != wanted {
            self.status.set_delivery(wanted);
        }
    }

    /// Hands one event to Kafka (or to the blocked queue when the producer is full).
    /// `resume_id` is what the checkpoint becomes once it and every earlier event are
    /// acknowledged: the event's id, or the last id before it that can be sent back upstream.
    pub(crate) fn send(
        &mut self,
        event: Event,
        resume_id: &str,
        generation: u64,
        resume: Option<Box<str>>,
        received: Instant,
        received_wall: SystemTime,
    ) {
        let seq = self.tracker.sent(resume_id);
        let meta = RecordMeta {
            target: &self.config.id,
            received_at: received_wall,
            connection: generation,
            seq,
            resume: resume.as_deref(),
            cloudevents: self.config.cloudevents,
        };
        let key = match record_key(&event, &self.config.key, &meta) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(key)) => Some(key.into_boxed_slice()),
            Err(error) => {
                self.status.key_errors.inc();
                let count = self.status.key_errors.get();
                if count.is_power_of_two() {
                    tracing::warn!(
                        target_id = %self.config.id,
                        event_id = event.id.as_str(),
                        %error,
                        errors_so_far = count,
                        "cannot take the record key from the event; publishing it keyed by target id"
                    );
                }
                None
            }
        };
        let record = Outgoing {
            event,
            key,
            received_wall,
            generation,
            resume,
        };
        self.status.events.inc();
        self.status.queue_depth.inc();
        if self.blocked.is_empty() {
            self.enqueue(seq, received, record);
        } else {
            self.blocked.push_back((seq, received, record));
        }
    }

    fn enqueue(&mut self, seq: u64, received: Instant, record: Outgoing) {
        match record.try_send(&*self.kafka, &self.config, seq) {
            Ok(pending) => self
                .deliveries
                .push(InFlight::Sent(pending, Some((seq, received, record)))),
            Err(TrySendError::QueueFull) => self.blocked.push_front((seq, received, record)),
            // Failed at once (no partition count yet, say): back into the queue now, so the
            // records after it wait behind it and go out in order.
            Err(TrySendError::Failed(error)) => self.on_failed(seq, received, record, error),
        }
    }

    /// Sends the waiting records in order until the producer is full again; while recovering
    /// from a failed delivery, one at a time (the next once the previous is acknowledged), and
    /// not before the retry delay.
    pub(crate) fn flush_blocked(&mut self) {
        if let Some(until) = self.hold_until {
            if !self.deliveries.is_empty() || Instant::now() < until {
                return;
            }
            self.hold_until = None;
        }
        while let Some((seq, received, record)) = self.blocked.pop_front() {
            if self.recovering.is_some() && !self.deliveries.is_empty() {
                self.blocked.push_front((seq, received, record));
                break;
            }
            self.enqueue(seq, received, record);
            if self.blocked.front().is_some_and(|(s, _, _)| *s == seq) {
                break; // still full
            }
        }
    }

    /// Kafka answered a record.
    pub(crate) fn on_delivered(&mut self, done: Done<Outgoing>) {
        self.kafka.answered();
        match done.result {
            Ok(_) => {
                if self
                    .recovering
                    .is_some_and(|last_failed| done.seq >= last_failed)
                {
                    self.recovering = None;
                }
                self.now = Instant::now();
                self.tracker.acked(done.seq);
                self.status.acked.inc();
                self.checkpoints.update_lag(&self.tracker, &self.status);
                self.status.queue_depth.dec();
                self.status.latency.observe(
                    self.now
                        .saturating_duration_since(done.received)
                        .as_secs_f64(),
                );
                if self.status.delivery() == Delivery::Retrying {
                    self.status.set_delivery(Delivery::Ok);
                }
                if let Some(id) = self.tracker.checkpoint() {
                    self.status.set_last_acked_id(id);
                }
            }
            Err(error) => self.on_failed(done.seq, done.received, done.record, error),
        }
    }

    /// A record Kafka did not take: sent again in order after the retry delay when the error
    /// is retryable, else the target stops before it.
    fn on_failed(
        &mut self,
        seq: u64,
        received: Instant,
        record: Outgoing,
        error: sluice_publish::PublishError,
    ) {
        self.status.delivery_errors.inc();
        if error.is_retryable() {
            let failures = self.status.delivery_errors.get();
            if failures.is_power_of_two() {
                tracing::warn!(target_id = %self.config.id, seq, %error, failures_so_far = failures, "kafka delivery failed; sending again, in order");
            }
            self.status.set_delivery(Delivery::Retrying);
            self.status.set_error(Some(error.to_string()));
            // Back into the queue at its place in the sequence: the waiting records go
            // out in order, after the retry delay, one at a time until Kafka takes them.
            let at = self.blocked.partition_point(|(s, _, _)| *s < seq);
            self.blocked.insert(at, (seq, received, record));
            self.recovering = Some(self.recovering.map_or(seq, |s| s.max(seq)));
            self.hold_until = Some(Instant::now() + RETRY_DELAY);
        } else {
            // Once: the records in flight behind it fail the same way (a fenced transaction).
            if !self.failed {
                tracing::error!(target_id = %self.config.id, seq, %error, "kafka refused an event for good; the target stops before it (its checkpoint stays behind it)");
            }
            self.failed = true;
            self.status.set_delivery(Delivery::Failed);
            self.status
                .set_error(Some(format!("kafka refused an event: {error}")));
        }
    }

    /// Starts a checkpoint write when it is due ([`Checkpoints::maybe_write`]).
    pub(crate) fn maybe_checkpoint(&mut self, force: bool) {
        self.checkpoints.maybe_write(
            &*self.kafka,
            &self.config.id,
            &self.tracker,
            self.now,
            force,
            self.status.handing_over.load(Ordering::Relaxed),
            force && self.drained(),
        );
    }

    /// Takes the checkpoint write's answer if it came, without a wake-up of its own.
    pub(crate) fn take_checkpoint_answer(&mut self) {
        if self.checkpoints.take_answer(&self.tracker, &self.status) {
            self.kafka.answered();
        }
    }

    /// Kafka answered the checkpoint write of `id`.
    pub(crate) fn on_checkpoint(
        &mut self,
        id: String,
        result: Result<sluice_publish::Delivered, sluice_publish::PublishError>,
    ) {
        self.kafka.answered();
        self.checkpoints
            .on_answer(id, result, &self.tracker, &self.status);
    }

    /// The stored checkpoint is final: nothing in flight, nothing newer to write.
    pub(crate) fn checkpoint_settled(&self) -> bool {
        self.checkpoints.settled(
            &self.tracker,
            self.status.handing_over.load(Ordering::Relaxed),
        )
    }

    /// Arms or disarms what wakes the target to try the producer again when nothing of its own
    /// is in flight: the retry delay after a failed delivery; another target's answer (the
    /// producer queue is shared, so room comes from any answer), with a slow fallback; or,
    /// while stopping, a short poll for a final checkpoint the full queue did not take (without
    /// it every branch of the target's loop could be disabled). Returns whether it is armed.
    pub(crate) fn arm_room_wait(&mut self, stopping: bool) -> bool {
        let checkpoint_deferred = stopping
            && !self.checkpoints.in_flight()
            && self.drained()
            && !self.checkpoint_settled();
        let blocked_idle = !self.blocked.is_empty() && self.deliveries.is_empty();
        if !blocked_idle && !checkpoint_deferred {
            self.room_wait = None;
            return false;
        }
        if self.room_wait.is_none() {
            self.room_wait = Some(match self.hold_until {
                Some(until) if blocked_idle => Box::pin(sleep_until(until)),
                _ if blocked_idle => {
                    let room = self.kafka.room();
                    Box::pin(async move {
                        tokio::select! {
                            () = room => {}
                            () = sleep(ROOM_FALLBACK) => {}
                        }
                    })
                }
                _ => Box::pin(sleep(CHECKPOINT_ROOM_POLL)),
            });
        }
        true
    }

    /// The wait fired: try the producer again.
    pub(crate) fn on_room(&mut self) {
        self.room_wait = None;
        self.flush_blocked();
    }

    /// Whether records wait for room.
    pub(crate) fn has_blocked(&self) -> bool {
        !self.blocked.is_empty()
    }
}
