//! The Kafka edge of a target, as a small trait: send an event's record, write a checkpoint,
//! and Kafka's answers to both. Its one production implementation is [`KafkaSink`] (the shared
//! rdkafka [`Publisher`]); the target's tests use a fake that acknowledges when told to.
//!
//! What it must NOT do: retry, pace or order anything (the pipe does), or block: a full
//! producer queue is an immediate [`TrySendError::QueueFull`].

use std::future::Future;

use sluice_config::TargetId;
use sluice_publish::{Delivered, Pending, PublishError, Publisher, RecordMeta, TrySendError};
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

    /// Hands a checkpoint record (`target` → `event_id`) to the producer.
    fn write_checkpoint(
        &self,
        target: &TargetId,
        event_id: &str,
    ) -> Result<Self::Ack, TrySendError>;
}

/// The production Kafka edge: the worker's one producer and its checkpoint topic.
pub(crate) struct KafkaSink {
    pub(crate) publisher: Publisher,
    pub(crate) checkpoint_topic: String,
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

    fn write_checkpoint(&self, target: &TargetId, event_id: &str) -> Result<Pending, TrySendError> {
        self.publisher
            .try_write_checkpoint(&self.checkpoint_topic, target, event_id)
    }
}
