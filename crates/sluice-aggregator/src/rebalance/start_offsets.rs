//! Where an assigned partition starts: its committed offset, or (none committed yet) its high
//! watermark, committed now, before the assignment takes effect. Also the topic's partition
//! count, which says which configured targets an assignment brings.
//!
//! Without the pin the consumer would resolve `latest` lazily, possibly after a base state was
//! fetched, and skip the deltas in between (continuity would catch that as a gap, at the price
//! of a second fetch). With it, consumption starts no later than any base fetch this
//! assignment triggers. It must not move an offset that was already committed, except one the
//! broker no longer has (below the low watermark: retention removed records this group never
//! read): that partition is pinned at its high watermark like one without a committed offset,
//! and reported, so its targets start from fresh base states (reason `offset_out_of_range`)
//! instead of a snapshot the lost records would have changed.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::shared::TopicPartition;

/// How long reading committed offsets, watermarks or metadata at an assignment may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the assigned partitions start.
#[derive(Debug, Default)]
pub struct Starts {
    /// Each partition's start offset where known (committed, or pinned).
    pub offsets: HashMap<TopicPartition, i64>,
    /// Partitions whose committed offset the broker no longer has (pinned anew).
    pub gone: BTreeSet<TopicPartition>,
}

/// Pins the start of assigned partitions that have no committed offset, or one below the low
/// watermark, at their high watermark, and returns each partition's start.
pub fn pin_start_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> Starts {
    let mut starts = Starts::default();
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
        let committed = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        let watermarks = consumer.fetch_watermarks(element.topic(), element.partition(), TIMEOUT);
        match (committed, watermarks) {
            (Some(offset), Ok((low, _))) if offset >= low => {
                starts.offsets.insert(key, offset);
            }
            (committed, Ok((low, high))) => {
                if let Some(offset) = committed {
                    tracing::warn!(
                        topic = element.topic(),
                        partition = element.partition(),
                        committed = offset,
                        low,
                        high,
                        "the committed offset is no longer on the broker (retention removed records never read): starting at the high watermark with fresh base states"
                    );
                    starts.gone.insert(key.clone());
                }
                let _ = pins.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    Offset::Offset(high),
                );
                starts.offsets.insert(key, high);
            }
            (committed, Err(error)) => {
                tracing::warn!(topic = element.topic(), partition = element.partition(), %error, "cannot read the watermarks at assignment");
                if let Some(offset) = committed {
                    starts.offsets.insert(key, offset);
                }
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
