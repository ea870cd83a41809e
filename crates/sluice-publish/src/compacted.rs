//! Reading compacted topics from the beginning up to the high watermarks they had when the read
//! started: the worker's checkpoints (with their owner stamps, see `checkpoint_record`) and the
//! aggregator's state snapshots.
//!
//! What it must NOT do: join a group or commit offsets (it assigns partitions itself), read past
//! the ends it noted, or write anything.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::time::Instant;

use crate::checkpoint_record::{self, Mark, Offer, Resume, StoredCheckpoint};

/// The consumer group id the compacted readers identify with; they never commit offsets.
const READER_GROUP: &str = "sluice-checkpoint-reader";

/// How long a read waits for a record before it looks at its positions (see the read loop).
const IDLE_CHECK: Duration = Duration::from_millis(200);

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

/// The checkpoint topic as read up to its ends.
#[derive(Debug, Clone, Default)]
pub struct Checkpoints {
    /// Per target id, where it resumes and the highest owner epoch any of its records carried.
    pub resume: HashMap<String, Resume>,
    /// Per partition, the offset the read ended at (its high watermark when the read started):
    /// where a reader that follows the topic from now on starts.
    pub ends: HashMap<i32, i64>,
}

/// Reads the compacted checkpoint `topic` from the beginning up to the high watermark each
/// partition had when the read started: per target id, the latest event id and the highest
/// owner epoch read (a zombie's late record may carry a lower epoch than the last owner's).
///
/// `config` names `bootstrap.servers` and any security settings; the reader assigns partitions
/// itself and commits nothing. A record without a value (a tombstone) removes its target; a
/// record whose key or value is not UTF-8, or whose stamp does not parse, is skipped with a
/// warning. Fails with [`CheckpointReadError::Timeout`] when the end is not reached within
/// `timeout`.
pub async fn read_checkpoints(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Checkpoints, CheckpointReadError> {
    read_checkpoints_of(config, topic, None, timeout).await
}

/// [`read_checkpoints`] of only the partitions `only` (all when `None`): a fleet worker reads
/// the partitions the group assigned it, not the whole topic.
pub async fn read_checkpoints_of(
    config: &ClientConfig,
    topic: &str,
    only: Option<Vec<i32>>,
    timeout: Duration,
) -> Result<Checkpoints, CheckpointReadError> {
    let config = config.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        read_checkpoints_blocking(config, &topic, only.as_deref(), timeout)
    })
    .await
    .map_err(|e| CheckpointReadError::Task(e.to_string()))?
}

fn read_checkpoints_blocking(
    config: ClientConfig,
    topic: &str,
    only: Option<&[i32]>,
    timeout: Duration,
) -> Result<Checkpoints, CheckpointReadError> {
    let mut resume: HashMap<String, Resume> = HashMap::new();
    let ends = read_compacted_records_of(config, topic, only, timeout, |key, message| {
        let Some(value) = message.payload() else {
            resume.remove(key);
            return;
        };
        let headers = message.headers().into_iter().flat_map(|h| h.iter());
        match checkpoint_record::decode(value, headers.map(|h| (h.key, h.value))) {
            Ok(stored) => {
                let before = resume.get(key);
                let epoch = before.map_or(stored.epoch, |r| r.epoch.max(stored.epoch));
                let offered_by = offer_after(before.and_then(|r| r.offered_by.as_ref()), &stored);
                resume.insert(
                    key.to_owned(),
                    Resume {
                        event_id: stored.event_id.to_owned(),
                        epoch,
                        offered_by,
                    },
                );
            }
            Err(error) => tracing::warn!(
                topic,
                key,
                offset = message.offset(),
                %error,
                kind = error.kind(),
                "skipping a checkpoint record"
            ),
        }
    })?;
    Ok(Checkpoints { resume, ends })
}

/// The open offer of a target after its record `stored` (read after one whose open offer was
/// `before`): an offer opens one; a claim or release closes it, and so does any record of a
/// newer run (a new owner runs the target); a record of the offering run or an older one (a
/// zombie's) leaves it open.
fn offer_after(before: Option<&Offer>, stored: &StoredCheckpoint<'_>) -> Option<Offer> {
    match stored.mark {
        Mark::Offer => Some(Offer {
            epoch: stored.epoch,
            owner: stored.owner.unwrap_or_default().to_owned(),
        }),
        Mark::Claim | Mark::Release => None,
        Mark::Plain => before.filter(|o| stored.epoch <= o.epoch).cloned(),
    }
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
    config: ClientConfig,
    topic: &str,
    timeout: Duration,
    mut each: impl FnMut(&str, Option<&[u8]>),
) -> Result<(), CheckpointReadError> {
    read_compacted_records(config, topic, timeout, |key, message| {
        each(key, message.payload());
    })
    .map(|_| ())
}

/// [`read_compacted_each`] with the whole record (headers, offset), returning the offset every
/// partition's read ended at (its high watermark when the read started; empty ones included).
pub fn read_compacted_records(
    config: ClientConfig,
    topic: &str,
    timeout: Duration,
    each: impl FnMut(&str, &BorrowedMessage<'_>),
) -> Result<HashMap<i32, i64>, CheckpointReadError> {
    read_compacted_records_of(config, topic, None, timeout, each)
}

/// [`read_compacted_records`] of only the partitions `only` (all when `None`; a partition the
/// topic does not have is left out).
pub fn read_compacted_records_of(
    mut config: ClientConfig,
    topic: &str,
    only: Option<&[i32]>,
    timeout: Duration,
    mut each: impl FnMut(&str, &BorrowedMessage<'_>),
) -> Result<HashMap<i32, i64>, CheckpointReadError> {
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
    let mut partitions = topic_partitions(&metadata, topic)?;
    if let Some(only) = only {
        partitions.retain(|p| only.contains(p));
    }

    // The end of each non-empty partition: the high watermark when the read started.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut highs: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, remaining())
            .map_err(CheckpointReadError::Metadata)?;
        highs.insert(partition, high);
        if high > low {
            ends.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(CheckpointReadError::Consume)?;
        }
    }
    if ends.is_empty() {
        return Ok(highs);
    }
    consumer
        .assign(&assignment)
        .map_err(CheckpointReadError::Consume)?;

    while !ends.is_empty() {
        let left = remaining();
        if left.is_zero() {
            return Err(timed_out());
        }
        // A transactional topic's last offset is a commit or abort marker, which a consumer
        // never receives: a partition whose position passed its end while no record came is
        // read to its end too.
        let Some(message) = consumer.poll(left.min(IDLE_CHECK)) else {
            if let Ok(positions) = consumer.position() {
                for element in positions.elements_for_topic(topic) {
                    let reached = match element.offset() {
                        Offset::Offset(position) => ends
                            .get(&element.partition())
                            .is_some_and(|end| position >= *end),
                        _ => false,
                    };
                    if reached {
                        ends.remove(&element.partition());
                    }
                }
            }
            continue;
        };
        let message = message.map_err(CheckpointReadError::Consume)?;
        let key = message.key().map(std::str::from_utf8);
        match key {
            Some(Ok(key)) => each(key, &message),
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
    Ok(highs)
}
