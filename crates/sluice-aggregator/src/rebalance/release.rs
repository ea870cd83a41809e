//! A revocation: the partitions' synced targets get a final snapshot and a synchronous commit,
//! then leave the store (their `/stream` clients are closed, their series forgotten). A lost
//! assignment (the group moved on without us) drops them without writing anything: another
//! aggregator may already own them, so a snapshot or commit now could only go backwards.

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

use super::{Ctx, partitions};
use crate::shared::Shared;
use crate::snapshot::snapshot_round;

/// Snapshots and commits the targets of revoked partitions, then lets them go.
pub fn release(shared: &Shared, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
    let parts = partitions(tpl);
    if consumer.assignment_lost() {
        tracing::warn!(partitions = ?parts, "partitions lost (consumer group session timed out): dropping their targets without a final snapshot; the next owner replays from the last committed snapshot");
        // Not ready again until the group assigns partitions anew.
        shared.set_assigned_once(false);
    } else {
        tracing::info!(partitions = ?parts, "partitions revoked: writing final snapshots");
        snapshot_round(shared, consumer, Some(&parts), CommitMode::Sync);
    }
    let removed = shared
        .store
        .remove_where(|c| parts.contains(&(c.def.target.topic.clone(), c.lock().partition)));
    for cell in removed {
        shared.metrics.forget_target(cell.def.id());
        shared.deliveries.forget(cell.def.id());
    }
    shared.remove_assigned(&parts);
}
