//! The targets topic: a compacted topic of target definitions (key = target id, value = a
//! target file's YAML, header `sluice-format` = [`FORMAT`]; a tombstone removes the target).
//! [`Follower`] reads it by `assign()` from the beginning on a thread of its own and keeps
//! following it, reporting each record and, once, that it read to the end it found; [`put`]
//! writes one definition or tombstone and waits for Kafka's acknowledgement.
//!
//! What it must NOT do: validate or act on a definition (the worker's loop validates with the
//! config crate and the catalogue merges), join a group or commit offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sluice_publish::{PublishError, Publisher};
use tokio::sync::mpsc;

/// The definition format this worker writes and reads (the `sluice-format` header; a record
/// without the header is taken as this format).
pub(crate) const FORMAT: &str = "1";
/// The header naming a record's format.
pub(crate) const FORMAT_HEADER: &str = "sluice-format";

/// One poll: how soon a stop is seen.
const POLL: Duration = Duration::from_millis(100);
/// How long one setup attempt may take to learn the topic's partitions.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait between setup attempts.
const RETRY: Duration = Duration::from_secs(2);

/// What the follower reports.
#[derive(Debug)]
pub(crate) enum Read {
    /// A record: its key, its value (`None`: a tombstone) and its format header.
    Record {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        format: Option<String>,
    },
    /// Every record up to the ends found at the start has been reported.
    Loaded,
    /// The topic cannot be read (yet): why. Setup is retried.
    Unreadable(String),
}

/// The follower's thread and what it reports.
pub(crate) struct Follower {
    reads: mpsc::UnboundedReceiver<Read>,
    stop: Arc<AtomicBool>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Follower {
    /// Follows `topic` from the beginning, in the background: first creates it (compacted,
    /// 1 partition) when missing. A topic that cannot be created or read is reported, and
    /// retried; nothing here waits for Kafka.
    pub(crate) fn start(kafka: &ClientConfig, topic: &str) -> Result<Follower, KafkaError> {
        let mut config = kafka.clone();
        config
            .set("group.id", "sluice-targets-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = config.create()?;
        let (tx, reads) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = Arc::new(std::sync::Mutex::new(None));
        {
            let kafka = kafka.clone();
            let stop = stop.clone();
            let thread = thread.clone();
            let topic = topic.to_owned();
            tokio::spawn(async move {
                if let Err(sluice_publish::PartitionsError::TopicMissing { .. }) =
                    sluice_publish::topics::partition_count(&kafka, &topic).await
                    && let Err(error) = sluice_publish::topics::create_topic_partitioned(
                        &kafka,
                        &topic,
                        1,
                        true,
                        &[],
                    )
                    .await
                {
                    tracing::warn!(%error, topic, "cannot create the targets topic yet");
                }
                let following = {
                    let stop = stop.clone();
                    let topic = topic.clone();
                    std::thread::Builder::new()
                        .name("sluice-targets".to_owned())
                        .spawn(move || follow(&consumer, &topic, &stop, &tx))
                };
                match following {
                    Ok(handle) => {
                        *thread
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
                    }
                    Err(error) => {
                        tracing::error!(%error, topic, "cannot start following the targets topic");
                    }
                }
            });
        }
        Ok(Follower {
            reads,
            stop,
            thread,
        })
    }

    /// The next report (`None` once the thread ended).
    pub(crate) async fn next(&mut self) -> Option<Read> {
        self.reads.recv().await
    }

    /// A report already waiting, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<Read> {
        self.reads.try_recv().ok()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Assigns every partition of `topic` from the beginning; the ends (high watermarks) of the
/// partitions that hold records.
fn assign(consumer: &BaseConsumer, topic: &str) -> Result<BTreeMap<i32, i64>, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), SETUP_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(format!("topic {topic} is missing"));
    };
    if let Some(error) = found.error() {
        return Err(format!(
            "topic {topic}: {}",
            rdkafka::types::RDKafkaErrorCode::from(error)
        ));
    }
    let partitions: BTreeSet<i32> = found.partitions().iter().map(|p| p.id()).collect();
    if partitions.is_empty() {
        return Err(format!("topic {topic} has no partitions"));
    }
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *partition, SETUP_TIMEOUT)
            .map_err(|e| e.to_string())?;
        if high > low {
            ends.insert(*partition, high);
        }
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    Ok(ends)
}

/// Drops from `pending` the partitions whose position reached their end (compaction may have
/// removed the last offsets, so the position, not the last record, tells).
fn reached(consumer: &BaseConsumer, topic: &str, pending: &mut BTreeMap<i32, i64>) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    for element in positions.elements_for_topic(topic) {
        if let Offset::Offset(at) = element.offset()
            && pending
                .get(&element.partition())
                .is_some_and(|end| at >= *end)
        {
            pending.remove(&element.partition());
        }
    }
}

fn follow(
    consumer: &BaseConsumer,
    topic: &str,
    stop: &AtomicBool,
    reads: &mpsc::UnboundedSender<Read>,
) {
    let mut reported = None::<String>;
    let mut pending = loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match assign(consumer, topic) {
            Ok(partitions) => break partitions,
            Err(reason) => {
                if reported.as_deref() != Some(reason.as_str()) {
                    if reads.send(Read::Unreadable(reason.clone())).is_err() {
                        return;
                    }
                    reported = Some(reason);
                }
                // A thread of its own, off the runtime: it waits in steps that see a stop.
                for _ in 0..RETRY.as_millis() / POLL.as_millis() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
    };
    let mut loaded = false;
    while !stop.load(Ordering::Relaxed) {
        if !loaded && pending.is_empty() {
            loaded = true;
            if reads.send(Read::Loaded).is_err() {
                return;
            }
        }
        let Some(message) = consumer.poll(POLL) else {
            if !loaded {
                reached(consumer, topic, &mut pending);
            }
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, topic, "following the targets topic");
                continue;
            }
        };
        if !loaded
            && pending
                .get(&message.partition())
                .is_some_and(|end| message.offset() + 1 >= *end)
        {
            pending.remove(&message.partition());
        }
        let Some(key) = message.key() else {
            continue; // no key: no target
        };
        let format = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == FORMAT_HEADER)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        let read = Read::Record {
            key: key.to_vec(),
            value: message.payload().map(<[u8]>::to_vec),
            format,
        };
        if reads.send(read).is_err() {
            return;
        }
    }
}

/// Writes `id`'s definition (`Some(yaml)`) or its tombstone (`None`) and waits for Kafka.
pub(crate) async fn put(
    publisher: &Publisher,
    topic: &str,
    id: &str,
    yaml: Option<&str>,
) -> Result<sluice_publish::Delivered, PublishError> {
    publisher
        .put_keyed(
            topic,
            id,
            yaml.map(str::as_bytes),
            &[(FORMAT_HEADER, FORMAT.as_bytes())],
        )
        .await
}
