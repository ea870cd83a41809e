//! The Kafka side: an idempotent producer for event and checkpoint records, and the replay of
//! the checkpoint topic at start.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sluice_config::TargetId;
use tokio::time::Instant;

use sluice_sse::Event;

use crate::partitions::{PartitionCounts, PartitionsError, count_in};
use crate::{Record, RecordMeta, for_each_header, headers, partition_for};

/// How long a send may wait for room in the producer queue before it fails (backpressure).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// The consumer group id the checkpoint reader identifies with; it never commits offsets.
const READER_GROUP: &str = "sluice-checkpoint-reader";

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

/// The partitions of `topic` in `metadata`, each with a leader. Only the broker's "unknown
/// topic" (or no entry at all) is [`CheckpointReadError::TopicMissing`]: any other error on the
/// topic or one of its partitions (authorization denied, no leader while a broker restarts) is
/// [`CheckpointReadError::Unavailable`], which callers retry instead of starting without the
/// checkpoints the topic holds.
fn topic_partitions(
    metadata: &rdkafka::metadata::Metadata,
    topic: &str,
) -> Result<Vec<i32>, CheckpointReadError> {
    let missing = || CheckpointReadError::TopicMissing {
        topic: topic.to_owned(),
    };
    let unavailable = |code: RDKafkaErrorCode| CheckpointReadError::Unavailable {
        topic: topic.to_owned(),
        code,
    };
    let Some(entry) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(missing());
    };
    match entry.error().map(RDKafkaErrorCode::from) {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Err(missing()),
        Some(code) => return Err(unavailable(code)),
        None => {}
    }
    let mut partitions = Vec::with_capacity(entry.partitions().len());
    for partition in entry.partitions() {
        if let Some(code) = partition.error().map(RDKafkaErrorCode::from) {
            return Err(unavailable(code));
        }
        if partition.leader() < 0 {
            return Err(unavailable(RDKafkaErrorCode::LeaderNotAvailable));
        }
        partitions.push(partition.id());
    }
    if partitions.is_empty() {
        // A topic has at least one partition; an empty list is a metadata answer to retry.
        return Err(unavailable(RDKafkaErrorCode::LeaderNotAvailable));
    }
    Ok(partitions)
}

/// Why the checkpoint topic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointReadError {
    /// The consumer could not be created from its config.
    #[error("creating kafka consumer failed: {0}")]
    Create(#[source] KafkaError),
    /// Metadata or watermarks could not be fetched.
    #[error("fetching topic metadata failed: {0}")]
    Metadata(#[source] KafkaError),
    /// The checkpoint topic does not exist.
    #[error("topic {topic} does not exist")]
    TopicMissing {
        /// The topic's name.
        topic: String,
    },
    /// The broker answered for the topic with an error (authorization denied, no leader …):
    /// it may hold checkpoints, so it is read again later, never treated as missing.
    #[error("topic {topic} is not readable: {code}")]
    Unavailable {
        /// The topic's name.
        topic: String,
        /// The broker's error for the topic or one of its partitions.
        code: RDKafkaErrorCode,
    },
    /// Reading a record failed.
    #[error("consuming compacted topic failed: {0}")]
    Consume(#[source] KafkaError),
    /// Not every partition reached its high watermark in time.
    #[error("topic {topic} not read to its end within {timeout:?}")]
    Timeout {
        /// The topic's name.
        topic: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The blocking reader task died.
    #[error("compacted topic reader task failed: {0}")]
    Task(String),
}

impl CheckpointReadError {
    /// A bounded label for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckpointReadError::Create(_) => "create",
            CheckpointReadError::Metadata(_) => "metadata",
            CheckpointReadError::TopicMissing { .. } => "topic_missing",
            CheckpointReadError::Unavailable { .. } => "unavailable",
            CheckpointReadError::Consume(_) => "consume",
            CheckpointReadError::Timeout { .. } => "timeout",
            CheckpointReadError::Task(_) => "task",
        }
    }

    /// Whether reading again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            CheckpointReadError::Create(_)
            | CheckpointReadError::TopicMissing { .. }
            | CheckpointReadError::Task(_) => false,
            CheckpointReadError::Metadata(_)
            | CheckpointReadError::Unavailable { .. }
            | CheckpointReadError::Consume(_)
            | CheckpointReadError::Timeout { .. } => true,
        }
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
    ) -> Result<Pending, TrySendError> {
        let partition = self
            .partition(topic, target.as_str())
            .map_err(TrySendError::Failed)?;
        let message = FutureRecord::to(topic)
            .partition(partition)
            .key(target.as_str())
            .payload(event_id);
        self.try_enqueue(message)
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
    /// event id. Call it only with an id from [`crate::CheckpointTracker::checkpoint`].
    pub async fn write_checkpoint(
        &self,
        topic: &str,
        target: &TargetId,
        event_id: &str,
    ) -> Result<Delivered, PublishError> {
        let partition = self.partition(topic, target.as_str())?;
        let message = FutureRecord::to(topic)
            .partition(partition)
            .key(target.as_str())
            .payload(event_id);
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

/// Reads the compacted checkpoint `topic` from the beginning up to the high watermark each
/// partition had when the read started, and returns the latest event id per target id.
///
/// `config` names `bootstrap.servers` and any security settings; the reader assigns partitions
/// itself and commits nothing. A record without a value (a tombstone) removes its target; a
/// record whose key or value is not UTF-8 is skipped with a warning. Fails with
/// [`CheckpointReadError::Timeout`] when the end is not reached within `timeout`.
pub async fn read_checkpoints(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<HashMap<String, String>, CheckpointReadError> {
    let config = config.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_checkpoints_blocking(config, &topic, timeout))
        .await
        .map_err(|e| CheckpointReadError::Task(e.to_string()))?
}

fn read_checkpoints_blocking(
    config: ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<HashMap<String, String>, CheckpointReadError> {
    let table = read_compacted_blocking(config, topic, timeout)?;
    let mut checkpoints = HashMap::with_capacity(table.len());
    for (key, value) in table {
        match String::from_utf8(value) {
            Ok(value) => {
                checkpoints.insert(key, value);
            }
            Err(_) => tracing::warn!(topic, key, "skipping checkpoint whose value is not utf-8"),
        }
    }
    Ok(checkpoints)
}

/// Reads a compacted topic from the beginning up to the high watermarks it had when the read
/// started: the latest value of every key (a key whose latest record is a tombstone is absent).
/// Blocking; a missing topic is [`CheckpointReadError::TopicMissing`].
pub fn read_compacted_blocking(
    config: ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<HashMap<String, Vec<u8>>, CheckpointReadError> {
    let mut table = HashMap::new();
    read_compacted_each(config, topic, timeout, |key, value| match value {
        Some(value) => {
            table.insert(key.to_owned(), value.to_vec());
        }
        None => {
            table.remove(key);
        }
    })?;
    Ok(table)
}

/// [`read_compacted_blocking`] handing every record to `each` in each partition's order (key,
/// value; `None` for a tombstone) instead of keeping the latest values: the caller keeps what
/// it wants, so a reader that needs a few keys never copies the others' values.
pub fn read_compacted_each(
    mut config: ClientConfig,
    topic: &str,
    timeout: Duration,
    mut each: impl FnMut(&str, Option<&[u8]>),
) -> Result<(), CheckpointReadError> {
    let deadline = Instant::now() + timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let timed_out = || CheckpointReadError::Timeout {
        topic: topic.to_owned(),
        timeout,
    };
    let consumer: BaseConsumer = config
        .set("group.id", READER_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(CheckpointReadError::Create)?;

    let metadata = consumer
        .fetch_metadata(Some(topic), remaining())
        .map_err(CheckpointReadError::Metadata)?;
    let partitions = topic_partitions(&metadata, topic)?;

    // The end of each non-empty partition: the high watermark when the read started.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, remaining())
            .map_err(CheckpointReadError::Metadata)?;
        if high > low {
            ends.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(CheckpointReadError::Consume)?;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer
        .assign(&assignment)
        .map_err(CheckpointReadError::Consume)?;

    while !ends.is_empty() {
        let left = remaining();
        if left.is_zero() {
            return Err(timed_out());
        }
        let Some(message) = consumer.poll(left) else {
            continue;
        };
        let message = message.map_err(CheckpointReadError::Consume)?;
        let key = message.key().map(std::str::from_utf8);
        match key {
            Some(Ok(key)) => each(key, message.payload()),
            _ => tracing::warn!(
                topic,
                partition = message.partition(),
                offset = message.offset(),
                "skipping compacted record without a utf-8 key"
            ),
        }
        let partition = message.partition();
        if ends
            .get(&partition)
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&partition);
        }
    }
    Ok(())
}
