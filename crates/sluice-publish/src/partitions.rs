//! The partition count of every topic a [`crate::Publisher`] writes to: read from the broker's
//! metadata on a topic's first use, then kept, so that each record's partition is set
//! explicitly by [`crate::partition_for`] and never by the producer's `partitioner` setting.
//!
//! A count, once known, is kept for the life of the producer: a topic whose partition count
//! grows while a worker runs keeps its targets where they were until the worker restarts (a
//! silent remap would move targets between partitions mid-stream). A failed read is remembered
//! for [`RETRY_AFTER_FAILURE`], so thousands of targets sending to a missing topic ask the
//! broker about once a second, not once per record.
//!
//! What it must NOT do: choose partitions (that is [`crate::partition_for`]) or produce records.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::time::Instant;

/// How long one metadata read may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a failed read is answered from memory before the broker is asked again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Why a topic's partition count is not known.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionsError {
    /// The broker says the topic does not exist (and did not create it).
    #[error("topic {topic} does not exist: create it, or let the broker create it")]
    TopicMissing {
        /// The topic's name.
        topic: String,
    },
    /// The broker lists the topic without a single partition.
    #[error("topic {topic} has no partitions")]
    NoPartitions {
        /// The topic's name.
        topic: String,
    },
    /// The broker answered for the topic with another error (authorization denied, no leader …).
    #[error("topic {topic} metadata is not available: {code}")]
    Unavailable {
        /// The topic's name.
        topic: String,
        /// The broker's error for the topic.
        code: RDKafkaErrorCode,
    },
    /// Another sender is reading the topic's partition count right now: send again shortly
    /// (waiting for it would block a runtime thread for as long as the broker takes).
    #[error("the partition count of topic {topic} is being read")]
    Reading {
        /// The topic's name.
        topic: String,
    },
    /// The metadata request itself failed (no broker reachable, timeout).
    #[error("reading the metadata of topic {topic} failed: {source}")]
    Metadata {
        /// The topic's name.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
}

impl PartitionsError {
    /// A bounded label for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            PartitionsError::TopicMissing { .. } => "topic_missing",
            PartitionsError::NoPartitions { .. } => "no_partitions",
            PartitionsError::Unavailable { .. } => "unavailable",
            PartitionsError::Reading { .. } => "reading",
            PartitionsError::Metadata { .. } => "metadata",
        }
    }
}

/// The kept partition counts, and the failures answered from memory for a while.
#[derive(Default)]
pub(crate) struct PartitionCounts {
    known: RwLock<HashMap<Box<str>, i32>>,
    failed: Mutex<HashMap<Box<str>, (Instant, PartitionsError)>>,
    /// Held while the broker is asked: one read at a time, not one per sender. Never waited
    /// for: a sender that finds it held gets [`PartitionsError::Reading`] at once, so no runtime
    /// thread blocks behind a read of an unreachable broker (which stalled every target and
    /// the worker's own loop).
    reading: Mutex<()>,
}

impl PartitionCounts {
    /// The partition count of `topic`: kept, or read with `read` (a blocking metadata request
    /// returning the topic's partition count) on first use.
    pub(crate) fn get(
        &self,
        topic: &str,
        read: impl FnOnce(&str, Duration) -> Result<i32, PartitionsError>,
    ) -> Result<i32, PartitionsError> {
        if let Some(count) = self.kept(topic) {
            return Ok(count);
        }
        let _reading = match self.reading.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(PartitionsError::Reading {
                    topic: topic.to_owned(),
                });
            }
        };
        // Another sender may have read it while this one waited.
        if let Some(count) = self.kept(topic) {
            return Ok(count);
        }
        {
            let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, error)) = failed.get(topic)
                && at.elapsed() < RETRY_AFTER_FAILURE
            {
                return Err(error.clone());
            }
        }
        let result = blocking(|| read(topic, METADATA_TIMEOUT));
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(count) => {
                failed.remove(topic);
                self.known
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(topic.into(), count);
                tracing::debug!(topic, partitions = count, "topic partition count read");
                Ok(count)
            }
            Err(error) => {
                failed.insert(topic.into(), (Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    fn kept(&self, topic: &str) -> Option<i32> {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .copied()
    }
}

/// Runs the blocking `f` off the async scheduler where the runtime allows it (a multi-thread
/// runtime moves its other tasks to another thread meanwhile), else in place.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The partition count of `topic` in a metadata answer.
pub(crate) fn count_in(
    metadata: &rdkafka::metadata::Metadata,
    topic: &str,
) -> Result<i32, PartitionsError> {
    let Some(entry) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(PartitionsError::TopicMissing {
            topic: topic.to_owned(),
        });
    };
    match entry.error().map(RDKafkaErrorCode::from) {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Err(PartitionsError::TopicMissing {
            topic: topic.to_owned(),
        }),
        Some(code) => Err(PartitionsError::Unavailable {
            topic: topic.to_owned(),
            code,
        }),
        None => match i32::try_from(entry.partitions().len()) {
            Ok(count) if count > 0 => Ok(count),
            _ => Err(PartitionsError::NoPartitions {
                topic: topic.to_owned(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_count_is_read_once_and_kept() {
        let counts = PartitionCounts::default();
        let reads = Cell::new(0);
        for _ in 0..3 {
            let got = counts.get("events", |_, _| {
                reads.set(reads.get() + 1);
                Ok(6)
            });
            assert_eq!(got.ok(), Some(6));
        }
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn a_sender_that_finds_a_read_under_way_does_not_wait_for_it() {
        let counts = std::sync::Arc::new(PartitionCounts::default());
        let (started, wait) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let reader = {
            let counts = counts.clone();
            std::thread::spawn(move || {
                counts.get("events", |_, _| {
                    started.send(()).unwrap();
                    released.recv().unwrap();
                    Ok(6)
                })
            })
        };
        wait.recv().unwrap();
        let other = counts.get("events", |_, _| panic!("a second read"));
        assert_eq!(other.err().map(|e| e.kind()), Some("reading"));
        release.send(()).unwrap();
        assert_eq!(reader.join().unwrap().ok(), Some(6));
        assert_eq!(counts.get("events", |_, _| Ok(1)).ok(), Some(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_read_is_answered_from_memory_then_asked_again() {
        let counts = PartitionCounts::default();
        let reads = Cell::new(0);
        let missing = |_: &str, _: Duration| {
            reads.set(reads.get() + 1);
            Err(PartitionsError::TopicMissing {
                topic: "events".to_owned(),
            })
        };
        assert_eq!(
            counts.get("events", missing).err().map(|e| e.kind()),
            Some("topic_missing")
        );
        assert_eq!(
            counts.get("events", missing).err().map(|e| e.kind()),
            Some("topic_missing")
        );
        assert_eq!(reads.get(), 1);
        tokio::time::advance(RETRY_AFTER_FAILURE).await;
        assert_eq!(counts.get("events", |_, _| Ok(2)).ok(), Some(2));
    }
}
