//! The Kafka edge of a target, as a small trait: send an event's record, write a checkpoint,
//! and Kafka's answers to both. Its one production implementation is [`KafkaSink`] (the shared
//! rdkafka [`Publisher`]); the target's tests use a fake that acknowledges when told to.
//!
//! What it must NOT do: retry, pace or order anything (the pipe does), or block: a full
//! producer queue is an immediate [`TrySendError::QueueFull`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_config::TargetId;
use tokio::sync::Notify;

use super::in_flight::BoxFuture;
use rdkafka::error::KafkaError;
use sluice_publish::{
    Delivered, Mark, Pending, PublishError, Publisher, RecordMeta, Stamp, TrySendError,
};

use crate::exactly_once::{LaneAck, Lanes};
use sluice_sse::Event;

/// Where a target's records and checkpoints go.
pub(crate) trait Kafka: Send + Sync + 'static {
    /// Kafka's answer to one record.
    type Ack: Future<Output = Result<Delivered, PublishError>> + Send + Unpin + 'static;

    /// Hands one event's record to the producer.
    fn send_event(
        &self,
        topic: &str,
        key: &[u8],
        event: &Event,
        meta: &RecordMeta<'_>,
    ) -> Result<Self::Ack, TrySendError>;

    /// Hands a checkpoint record (`target` → `event_id`, stamped with the run's owner
    /// `epoch`) to the producer.
    fn write_checkpoint(
        &self,
        target: &TargetId,
        event_id: &str,
        epoch: u64,
        mark: Mark,
    ) -> Result<Self::Ack, TrySendError>;

    /// A record's answer came, so the producer queue may have room: wakes one target waiting
    /// for it. Called by every target for every answer; costs one atomic load when nobody waits.
    fn answered(&self);

    /// Resolves after some record's answer came once this was called (a target whose records
    /// wait for room, with nothing of its own in flight, waits on it instead of polling).
    fn room(&self) -> BoxFuture<()>;

    /// A run of `target` starts, stamping its checkpoints with owner `epoch`.
    fn begin(&self, _target: &TargetId, _epoch: u64) {}
}

/// The production Kafka edge: the worker's one producer and its checkpoint topic, or with
/// exactly-once delivery its transactional lanes (`crate::exactly_once`).
pub(crate) struct KafkaSink {
    publisher: Publisher,
    checkpoint_topic: String,
    /// This worker process, as its checkpoint records name it.
    owner: Arc<str>,
    room: Room,
    exactly_once: Option<Lanes>,
}

impl KafkaSink {
    pub(crate) fn new(
        publisher: Publisher,
        checkpoint_topic: String,
        owner: Arc<str>,
    ) -> KafkaSink {
        KafkaSink {
            publisher,
            checkpoint_topic,
            owner,
            room: Room::default(),
            exactly_once: None,
        }
    }

    /// This sink, its events and checkpoints going through `lanes` in transactions.
    pub(crate) fn with_lanes(mut self, lanes: Lanes) -> KafkaSink {
        self.exactly_once = Some(lanes);
        self
    }
}

/// Kafka's answer to a record of a [`KafkaSink`].
pub(crate) enum SinkAck {
    /// Acknowledged by the idempotent producer.
    Sent(Pending),
    /// Committed in a lane's transaction.
    Committed(LaneAck),
    /// Answered already (a checkpoint a lane writes itself).
    Ready(Option<Result<Delivered, PublishError>>),
}

impl Future for SinkAck {
    type Output = Result<Delivered, PublishError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut *self {
            SinkAck::Sent(pending) => std::pin::Pin::new(pending).poll(cx),
            SinkAck::Committed(ack) => std::pin::Pin::new(ack).poll(cx),
            SinkAck::Ready(answer) => std::task::Poll::Ready(
                answer
                    .take()
                    .unwrap_or(Err(PublishError::Delivery(KafkaError::Canceled))),
            ),
        }
    }
}

/// Targets waiting for room in the shared producer queue, woken one per answer.
#[derive(Default)]
struct Room {
    notify: Arc<Notify>,
    waiting: Arc<AtomicUsize>,
}

impl Room {
    fn answered(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.notify.notify_one();
        }
    }

    fn wait(&self) -> BoxFuture<()> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(self.waiting.clone());
        let notified = self.notify.clone().notified_owned();
        Box::pin(async move {
            notified.await;
            drop(waiting);
        })
    }
}

/// Counts a waiting target for as long as its wait lives.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Kafka for KafkaSink {
    type Ack = SinkAck;

    fn send_event(
        &self,
        topic: &str,
        key: &[u8],
        event: &Event,
        meta: &RecordMeta<'_>,
    ) -> Result<SinkAck, TrySendError> {
        match &self.exactly_once {
            None => self
                .publisher
                .try_send_event(topic, key, event, meta)
                .map(SinkAck::Sent),
            Some(lanes) => lanes
                .send_event(topic, key, event, meta)
                .map(SinkAck::Committed),
        }
    }

    fn write_checkpoint(
        &self,
        target: &TargetId,
        event_id: &str,
        epoch: u64,
        mark: Mark,
    ) -> Result<SinkAck, TrySendError> {
        if self.exactly_once.is_some() {
            // A lane wrote this checkpoint in the transaction of the events it covers (a target
            // asks for it only once they are acknowledged, that is committed): stored already.
            return Ok(SinkAck::Ready(Some(Ok(Delivered {
                partition: -1,
                offset: -1,
            }))));
        }
        let stamp = Stamp {
            epoch,
            owner: self.owner.clone(),
            mark,
        };
        self.publisher
            .try_write_checkpoint(&self.checkpoint_topic, target, event_id, &stamp)
            .map(SinkAck::Sent)
    }

    fn answered(&self) {
        self.room.answered();
    }

    fn room(&self) -> BoxFuture<()> {
        self.room.wait()
    }

    fn begin(&self, target: &TargetId, epoch: u64) {
        if let Some(lanes) = &self.exactly_once {
            lanes.begin(target, epoch);
        }
    }
}

impl KafkaSink {
    /// Writes the tombstone of `target`'s checkpoint (a reset) and waits for Kafka.
    pub(crate) async fn delete_checkpoint(
        &self,
        target: &TargetId,
    ) -> Result<sluice_publish::Delivered, sluice_publish::PublishError> {
        self.publisher
            .put_keyed(&self.checkpoint_topic, target.as_str(), None, &[])
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use super::*;

    fn ready(wait: &mut BoxFuture<()>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(wait.as_mut().poll(&mut cx), Poll::Ready(()))
    }

    #[test]
    fn an_answer_wakes_one_waiting_target_and_costs_nothing_without_waiters() {
        let room = Room::default();
        room.answered(); // nobody waits: no permit is stored
        let mut first = room.wait();
        let mut second = room.wait();
        assert!(!ready(&mut first));
        assert!(!ready(&mut second));
        assert_eq!(room.waiting.load(Ordering::Relaxed), 2);
        room.answered();
        assert!(ready(&mut first));
        assert!(!ready(&mut second));
        drop(first);
        drop(second);
        assert_eq!(room.waiting.load(Ordering::Relaxed), 0);
    }
}
