//! The Kafka side: an idempotent producer for event and checkpoint records (the reading of
//! compacted topics is in `compacted`).

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use sluice_config::TargetId;

use sluice_sse::Event;

use crate::checkpoint_record::Stamp;
use crate::partitions::{PartitionCounts, PartitionsError, count_in};
use crate::{Record, RecordMeta, for_each_header, headers, partition_for};

/// How long a send may wait for room in the producer queue before it fails (backpressure).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Kafka stored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The partition.
    pub partition: i32,
    /// The offset in that partition.
    pub offset: i64,
}

/// Why a record was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer could not be created from its config.
    #[error("creating kafka producer failed: {0}")]
    Create(#[source] KafkaError),
    /// Kafka did not acknowledge the record.
    #[error("kafka delivery failed: {0}")]
    Delivery(#[source] KafkaError),
    /// Flushing the producer queue failed or timed out.
    #[error("flushing kafka producer failed: {0}")]
    Flush(#[source] KafkaError),
    /// The topic's partition count is not known, so no partition can be chosen.
    #[error(transparent)]
    Partitions(#[from] PartitionsError),
}

impl PublishError {
    /// A bounded label for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::Create(_) => "create",
            PublishError::Delivery(_) => "delivery",
            PublishError::Flush(_) => "flush",
            PublishError::Partitions(_) => "partitions",
        }
    }

    /// Whether sending again may succeed. Zero loss means a retryable delivery error is retried,
    /// never dropped; the others need an operator (bad config, a record the broker rejects).
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::Create(_) => false,
            // A missing topic may be created (by Sluice at start, or by an operator).
            PublishError::Flush(_) | PublishError::Partitions(_) => true,
            PublishError::Delivery(error) => !matches!(
                error.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::InvalidMessage
                        | RDKafkaErrorCode::InvalidMessageSize
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::ClusterAuthorizationFailed
                        | RDKafkaErrorCode::Fatal
                )
            ),
        }
    }
}

/// Why [`Publisher::try_send`] did not hand a record to the producer.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// The producer queue is full: wait for acknowledgements, then send again (backpressure).
    #[error("kafka producer queue is full")]
    QueueFull,
    /// The producer refused the record for another reason.
    #[error(transparent)]
    Failed(PublishError),
}

/// A record the producer accepted, whose acknowledgement is pending. Resolves to where Kafka
/// stored it, or why it did not.
pub struct Pending(DeliveryFuture);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl std::future::Future for Pending {
    type Output = Result<Delivered, PublishError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| match result {
                Ok(Ok(delivery)) => Ok(Delivered {
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                Ok(Err((error, _))) => Err(PublishError::Delivery(error)),
                Err(_) => Err(PublishError::Delivery(KafkaError::Canceled)),
            })
    }
}

/// A thin wrapper over an idempotent rdkafka producer (`acks=all`, `enable.idempotence=true`).
///
/// Every record's partition is set explicitly: [`partition_for`] of its target id (event and
/// checkpoint records alike) over the topic's partition count, read from the broker on the
/// topic's first use and kept (see `partitions.rs`). The record key does not choose the
/// partition, so an entity-keyed target's records stay in one partition, in order.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    partitions: std::sync::Arc<PartitionCounts>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// A producer from `config` (which names `bootstrap.servers` and any security settings),
    /// with `acks=all` and `enable.idempotence=true` forced on.
    pub fn new(config: &ClientConfig) -> Result<Publisher, PublishError> {
        let producer = config
            .clone()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .map_err(PublishError::Create)?;
        Ok(Publisher {
            producer,
            partitions: Default::default(),
        })
    }

    /// The partition of `target`'s records in `topic`: [`partition_for`] over the topic's
    /// partition count (read on first use; a blocking metadata request, once per topic).
    pub fn partition(&self, topic: &str, target: &str) -> Result<i32, PublishError> {
        let count = self.partitions.get(topic, |topic, timeout| {
            let metadata = self
                .producer
                .client()
                .fetch_metadata(Some(topic), timeout)
                .map_err(|source| PartitionsError::Metadata {
                    topic: topic.to_owned(),
                    source,
                })?;
            count_in(&metadata, topic)
        })?;
        Ok(partition_for(target, count))
    }

    /// The partition of a built record: by its `sluice.target` header, else by its key.
    fn record_partition(&self, topic: &str, record: &Record) -> Result<i32, PublishError> {
        let target = record.header(headers::TARGET).unwrap_or(&record.key);
        self.partition(topic, &String::from_utf8_lossy(target))
    }

    /// Sends `record` to `topic` and waits until Kafka acknowledged it. Waits up to 30 s for
    /// room in the producer queue when it is full.
    pub async fn publish(&self, topic: &str, record: &Record) -> Result<Delivered, PublishError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_slice()),
            });
        }
        let partition = self.record_partition(topic, record)?;
        let message = FutureRecord::to(topic)
            .partition(partition)
            .key(record.key.as_slice())
            .payload(record.value.as_ref())
            .headers(headers);
        self.send(message).await
    }

    /// Writes `value` under `key` to a compacted `topic` (a tombstone when `value` is `None`),
    /// with `headers`, and waits until Kafka acknowledged it: the targets topic's definitions.
    pub async fn put_keyed(
        &self,
        topic: &str,
        key: &str,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> Result<Delivered, PublishError> {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(*value),
            });
        }
        let partition = self.partition(topic, key)?;
        let message = FutureRecord::to(topic)
            .partition(partition)
            .key(key.as_bytes())
            .headers(owned);
        match value {
            Some(value) => self.send(message.payload(value)).await,
            None => self.send::<[u8], [u8]>(message).await,
        }
    }

    /// Hands `record` to the producer without waiting: the record is queued (in call order, which
    /// keeps a partition's order) and the returned [`Pending`] resolves on acknowledgement.
    pub fn try_send(&self, topic: &str, record: &Record) -> Result<Pending, TrySendError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_slice()),
            });
        }
        let partition = self
            .record_partition(topic, record)
            .map_err(TrySendError::Failed)?;
        let message = FutureRecord::to(topic)
            .partition(partition)
            .key(record.key.as_slice())
            .payload(record.value.as_ref())
            .headers(headers);
        self.try_enqueue(message)
    }

    /// [`Publisher::try_send`] of `build_record(event, ..)` with the key `key` (from
    /// [`crate::record_key`]), without building the [`Record`]: the headers go straight into
    /// the producer's, which saves an allocation per header on every event.
    pub fn try_send_event(
        &self,
        topic: &str,
        key: &[u8],
        event: &Event,
        meta: &RecordMeta<'_>,
    ) -> Result<Pending, TrySendError> {
        let partition = self
            .partition(topic, meta.target.as_str())
            .map_err(TrySendError::Failed)?;
        let mut headers = Some(OwnedHeaders::new_with_capacity(if meta.cloudevents {
            12
        } else {
            7
        }));
        for_each_header(event, meta, |key, value| {
            headers = headers.take().map(|headers| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        });
        let mut message = FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(event.data.as_bytes());
        if let Some(headers) = headers {
            message = message.headers(headers);
        }
        self.try_enqueue(message)
    }

    /// [`Publisher::write_checkpoint`] without waiting for the acknowledgement.
    pub fn try_write_checkpoint(
        &self,
        topic: &str,
        target: &TargetId,
        event_id: &str,
        stamp: &Stamp,
    ) -> Result<Pending, TrySendError> {
        let partition = self
            .partition(topic, target.as_str())
            .map_err(TrySendError::Failed)?;
        let message = FutureRecord::to(topic)
            .partition(partition)
            .key(target.as_str())
            .payload(event_id)
            .headers(stamp.headers());
        self.try_enqueue(message)
    }

    /// Initialises a transactional producer (`transactional.id` in its config): fences every
    /// earlier producer with that id and ends (aborts) its open transaction. Blocking.
    pub fn init_transactions(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.init_transactions(timeout)
    }

    /// Starts a transaction: the records sent until it is committed or aborted are in it.
    pub fn begin_transaction(&self) -> Result<(), KafkaError> {
        self.producer.begin_transaction()
    }

    /// Sends every queued record of the transaction and commits it. Blocking.
    pub fn commit_transaction(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.commit_transaction(timeout)
    }

    /// Aborts the transaction (its records are dropped from the queue, and `read_committed`
    /// readers never see those already written). Blocking.
    pub fn abort_transaction(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.abort_transaction(timeout)
    }

    /// librdkafka's fatal error, once the producer has one (an idempotent producer that lost its
    /// guarantees, e.g. its producer id was refused): it delivers nothing more, ever.
    pub fn fatal_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.producer.client().fatal_error()
    }

    /// Records handed to the producer and not yet acknowledged or failed, process-wide.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    fn try_enqueue<K, P>(&self, message: FutureRecord<'_, K, P>) -> Result<Pending, TrySendError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        match self.producer.send_result(message) {
            Ok(future) => Ok(Pending(future)),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(TrySendError::QueueFull)
            }
            Err((error, _)) => Err(TrySendError::Failed(PublishError::Delivery(error))),
        }
    }

    /// Writes the checkpoint of `target` to the compacted `topic`: key = target id, value =
    /// event id, headers = `stamp` (see `checkpoint_record`). Call it only with an id from
    /// [`crate::CheckpointTracker::checkpoint`].
    pub async fn write_checkpoint(
        &self,
        topic: &str,
        target: &TargetId,
        event_id: &str,
        stamp: &Stamp,
    ) -> Result<Delivered, PublishError> {
        let partition = self.partition(topic, target.as_str())?;
        let message = FutureRecord::to(topic)
            .partition(partition)
            .key(target.as_str())
            .payload(event_id)
            .headers(stamp.headers());
        self.send(message).await
    }

    /// Waits until every queued record is delivered or `timeout` passed.
    pub async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|_| PublishError::Flush(KafkaError::Canceled))?
            .map_err(PublishError::Flush)
    }

    async fn send<K, P>(&self, message: FutureRecord<'_, K, P>) -> Result<Delivered, PublishError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let delivery = self
            .producer
            .send(message, QUEUE_TIMEOUT)
            .await
            .map_err(|(error, _)| PublishError::Delivery(error))?;
        Ok(Delivered {
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }
}
