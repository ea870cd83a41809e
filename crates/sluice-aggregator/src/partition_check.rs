//! The start-up check that the events topics still have the partition count the stored
//! snapshots were built with. A snapshot places its target in a partition chosen for N
//! partitions (`partition_for`); with another count the target's records now land elsewhere,
//! so restoring it (or committing for it) would silently move targets between partitions.
//! The aggregator refuses to start instead.
//!
//! Reads only: it must not write to any topic or decide anything but "start or refuse".
//! Snapshots without a recorded count (written by older releases), of targets no longer
//! configured, or of topics that do not exist yet are not checked; when the state topic
//! cannot be read the check is skipped with a warning (restore at assignment still refuses a
//! mismatched snapshot).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::snapshot::Head;
use crate::store::TargetDef;

/// How long the check may read the state topic and the events topics' metadata.
const TIMEOUT: Duration = Duration::from_secs(60);

/// An events topic whose partition count is not the one its snapshots were built with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "events topic {topic} has {current} partitions, but the snapshots in state topic {state_topic} were built for {recorded} (target {target}): targets would silently move between partitions; restore the topic's partition count, or start from fresh base states with a new (or emptied) state topic"
)]
pub struct PartitionCountChanged {
    /// The events topic.
    pub topic: String,
    /// The state topic holding the snapshots.
    pub state_topic: String,
    /// The partition count the snapshots were built for.
    pub recorded: i32,
    /// The topic's partition count now.
    pub current: i32,
    /// One target whose snapshot says so.
    pub target: String,
}

impl PartitionCountChanged {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        "partition_count_changed"
    }
}

/// Checks the snapshots in `state_topic` against the current partition counts of the
/// configured targets' topics. Blocking.
pub fn check_partition_counts(
    reader: &ClientConfig,
    state_topic: &str,
    defs: &HashMap<String, Arc<TargetDef>>,
) -> Result<(), PartitionCountChanged> {
    // The head of the latest value of each configured target's key (a whole record or a
    // manifest; chunks are skipped unread): the state itself is never built.
    let mut heads: HashMap<String, Head> = HashMap::new();
    let read =
        sluice_publish::read_compacted_each(reader.clone(), state_topic, TIMEOUT, |key, value| {
            if !defs.contains_key(key) {
                return;
            }
            match value.map(Head::read) {
                Some(Ok(head)) => {
                    heads.insert(key.to_owned(), head);
                }
                Some(Err(_)) | None => {
                    heads.remove(key);
                }
            }
        });
    match read {
        Ok(()) => {}
        Err(sluice_publish::CheckpointReadError::TopicMissing { .. }) => return Ok(()),
        Err(error) => {
            tracing::warn!(%error, topic = %state_topic, "cannot read the state topic at start: partition counts not checked");
            return Ok(());
        }
    }
    // Each (topic, count) recorded, with the first target (by id) recording it.
    let mut recorded: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut sorted: Vec<_> = heads.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, head) in sorted {
        let Some(def) = defs.get(&id) else {
            continue;
        };
        let Some(partitions) = head.partitions else {
            continue;
        };
        if head.topic == def.target.topic {
            recorded.entry((head.topic, partitions)).or_insert(id);
        }
    }
    if recorded.is_empty() {
        return Ok(());
    }
    let consumer: BaseConsumer = match reader.create() {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::warn!(%error, "cannot create a metadata client at start: partition counts not checked");
            return Ok(());
        }
    };
    let mut counts: HashMap<String, Option<i32>> = HashMap::new();
    for ((topic, partitions), target) in recorded {
        if !counts.contains_key(&topic) {
            counts.insert(topic.clone(), current_count(&consumer, &topic));
        }
        match counts.get(&topic).copied().flatten() {
            Some(current) if current != partitions => {
                return Err(PartitionCountChanged {
                    topic,
                    state_topic: state_topic.to_owned(),
                    recorded: partitions,
                    current,
                    target,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// `topic`'s partition count, `None` when it does not exist or its metadata cannot be read.
fn current_count(consumer: &BaseConsumer, topic: &str) -> Option<i32> {
    match consumer.fetch_metadata(Some(topic), TIMEOUT) {
        Ok(metadata) => metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
            .filter(|count| *count > 0),
        Err(error) => {
            tracing::warn!(%error, topic, "cannot read the events topic's metadata at start: its partition count is not checked");
            None
        }
    }
}
