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
use sluice_publish::{
    Delivered, Mark, Pending, PublishError, Publisher, RecordMeta, Stamp, TrySendError,
};
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
}

/// The production Kafka edge: the worker's one producer and its checkpoint topic.
pub(crate) struct KafkaSink {
    publisher: Publisher,
    checkpoint_topic: String,
    /// This worker process, as its checkpoint records name it.
    owner: Arc<str>,
    room: Room,
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
    type Ack = Pending;

    fn send_event(
        &self,
        topic: &str,
        key: &[u8],
        event: &Event,
        meta: &RecordMeta<'_>,
    ) -> Result<Pending, TrySendError> {
        self.publisher.try_send_event(topic, key, event, meta)
    }

    fn write_checkpoint(
        &self,
        target: &TargetId,
        event_id: &str,
        epoch: u64,
        mark: Mark,
    ) -> Result<Pending, TrySendError> {
        let stamp = Stamp {
            epoch,
            owner: self.owner.clone(),
            mark,
        };
        self.publisher
            .try_write_checkpoint(&self.checkpoint_topic, target, event_id, &stamp)
    }

    fn answered(&self) {
        self.room.answered();
    }

    fn room(&self) -> BoxFuture<()> {
        self.room.wait()
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
