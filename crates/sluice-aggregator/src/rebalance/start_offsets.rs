//! Where an assigned partition starts: its committed offset, or (none committed yet) its high
//! watermark, committed now, before the assignment takes effect. Also the topic's partition
//! count, which says which configured targets an assignment brings.
//!
//! Without the pin the consumer would resolve `latest` lazily, possibly after a base state was
//! fetched, and skip the deltas in between (continuity would catch that as a gap, at the price
//! of a second fetch). With it, consumption starts no later than any base fetch this
//! assignment triggers. It must not move an offset that was already committed.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::shared::TopicPartition;

/// How long reading committed offsets, watermarks or metadata at an assignment may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Pins the start of assigned partitions that have no committed offset at their high
/// watermark, and returns each partition's start offset where known (committed, or pinned).
pub fn pin_start_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> HashMap<TopicPartition, i64> {
    let mut starts = HashMap::new();
    let committed = match consumer.committed_offsets(tpl.clone(), TIMEOUT) {
        Ok(committed) => committed,
        Err(error) => {
            tracing::warn!(%error, "cannot read committed offsets at assignment");
            return starts;
        }
    };
    let mut pins = TopicPartitionList::new();
    for element in committed.elements() {
        let key = (element.topic().to_owned(), element.partition());
        if let Offset::Offset(offset) = element.offset() {
            starts.insert(key, offset);
            continue;
        }
        match consumer.fetch_watermarks(element.topic(), element.partition(), TIMEOUT) {
            Ok((_, high)) => {
                let _ = pins.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    Offset::Offset(high),
                );
                starts.insert(key, high);
            }
            Err(error) => {
                tracing::warn!(topic = element.topic(), partition = element.partition(), %error, "cannot read the high watermark at assignment")
            }
        }
    }
    if pins.count() == 0 {
        return starts;
    }
    match consumer.commit(&pins, CommitMode::Sync) {
        Ok(()) => tracing::debug!(offsets = ?pins, "start offsets pinned at the high watermark"),
        Err(error) => tracing::warn!(%error, "cannot pin start offsets at assignment"),
    }
    starts
}

/// `topic`'s partition count (1, logged, when it cannot be read).
pub fn partition_count<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> i32 {
    match consumer.fetch_metadata(Some(topic), TIMEOUT) {
        Ok(metadata) => metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| i32::try_from(t.partitions().len()).unwrap_or(1))
            .unwrap_or(1),
        Err(error) => {
            tracing::warn!(topic, %error, "cannot read the topic's partition count; assuming 1");
            1
        }
    }
}
