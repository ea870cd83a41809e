//! A partition whose next record is no longer in Kafka (retention, or a `DeleteRecords`, ran
//! ahead of the aggregator). The consumer is built with `auto.offset.reset=error`, so librdkafka
//! reports it instead of jumping silently to the end; the deltas in between are lost, so every
//! target of the partition needs a fresh base state: each is `synced: false` (its last complete
//! state still served) until its fetch lands, counted as re-snapshot reason
//! `offset_out_of_range`.
//!
//! Where consumption restarts follows the rule for a partition without a committed offset
//! (`rebalance::start_offsets`): at its high watermark, read and assigned before any of those
//! fetches starts, so every delta newer than the fetched base state is consumed. The same
//! loss found at an assignment (a committed offset below the low watermark) is handled there,
//! before the assignment takes effect. This module must not merge or fetch; it only marks the
//! targets and queues them for the fetcher.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_merge::ResnapshotReason;

use crate::rebalance::Ctx;
use crate::shared::Shared;

/// How long reading the watermarks or the positions may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Marks every target of `topic`/`partition` as having lost deltas (queued for a fresh base
/// state), then restarts the partition at its high watermark.
pub fn restart_partition(
    shared: &Shared,
    consumer: &BaseConsumer<Ctx>,
    topic: &str,
    partition: i32,
) {
    let high = match consumer.fetch_watermarks(topic, partition, TIMEOUT) {
        Ok((_, high)) => Offset::Offset(high),
        Err(error) => {
            tracing::warn!(topic, partition, %error, "cannot read the high watermark of a partition whose next offset is gone: restarting it at its end");
            Offset::End
        }
    };
    mark_targets(shared, topic, partition);
    // A partition in this state does not fetch again until it is assigned anew (`seek` is
    // refused). The group is cooperative (`membership`), so only this partition is taken out
    // of the assignment and put back at `high`; the others keep fetching where they are.
    let mut tpl = TopicPartitionList::new();
    if let Err(error) = tpl.add_partition_offset(topic, partition, high) {
        tracing::error!(topic, partition, %error, "cannot restart a partition whose next offset is gone: its targets wait for the next rebalance");
        return;
    }
    let restarted = consumer
        .incremental_unassign(&tpl)
        .and_then(|()| consumer.incremental_assign(&tpl));
    if let Err(error) = restarted {
        tracing::error!(topic, partition, %error, "cannot restart a partition whose next offset is gone: its targets wait for the next rebalance");
        return;
    }
    // Taking the partition out stops its fetcher, which clears its forwarding.
    consumer.context().forward(&tpl);
    tracing::warn!(topic, partition, offset = ?high, "records were removed before the aggregator read them: the partition restarts at its high watermark and its targets fetch fresh base states");
}

/// Restarts every assigned partition whose position is below its low watermark (for the report
/// that came without its partition: through the consumer's own queue).
pub fn restart_gone_partitions(shared: &Shared, consumer: &BaseConsumer<Ctx>) {
    let positions = match consumer.position() {
        Ok(positions) => positions,
        Err(error) => {
            tracing::error!(%error, "cannot read positions after an offset-out-of-range report");
            return;
        }
    };
    for element in positions.elements() {
        let Offset::Offset(position) = element.offset() else {
            continue;
        };
        match consumer.fetch_watermarks(element.topic(), element.partition(), TIMEOUT) {
            Ok((low, _)) if position < low => {
                restart_partition(shared, consumer, element.topic(), element.partition())
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(topic = element.topic(), partition = element.partition(), %error, "cannot read the low watermark after an offset-out-of-range report")
            }
        }
    }
}

/// Every target of the partition: the deltas after its state are lost.
fn mark_targets(shared: &Shared, topic: &str, partition: i32) {
    for cell in shared.store.all() {
        if cell.def.target.topic != topic {
            continue;
        }
        let mut inner = cell.lock();
        if inner.partition != partition {
            continue;
        }
        inner.merger.deltas_lost(ResnapshotReason::OffsetOutOfRange);
        drop(inner);
        shared.want_fetch(cell);
    }
}
