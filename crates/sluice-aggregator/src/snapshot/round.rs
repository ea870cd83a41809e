//! One snapshot round: every synced target (of some partitions, or all) that moved since its
//! last snapshot is written to the state topic (and its file; `write`: one record, or chunks
//! and a manifest), the round waits for Kafka's acknowledgements, then commits per partition
//! the smallest acknowledged snapshot offset.
//!
//! Invariant: the committed offset of a partition never passes the `next_offset` of the last
//! acknowledged snapshot of any target in it. A round must not run on a lost assignment (the
//! next owner may already be ahead).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::record::SnapshotRecord;
use super::write::write_snapshots;
use crate::rebalance::Ctx;
use crate::shared::{Shared, TopicPartition};
use crate::store::Cell;

/// Writes a snapshot of every synced target (of `only`'s partitions, when given) that moved
/// since its last one, waits for Kafka, then commits each partition's safe offset.
pub fn snapshot_round(
    shared: &Shared,
    consumer: &BaseConsumer<Ctx>,
    only: Option<&BTreeSet<TopicPartition>>,
    mode: CommitMode,
) {
    if consumer.assignment_lost() {
        return;
    }
    // A periodic round after one that gave up waiting (the broker down) waits for that
    // round's records instead of queueing another copy of every snapshot behind them. A
    // revocation's or shutdown's round (`only`, or a synchronous commit) always runs.
    let periodic = only.is_none() && matches!(mode, CommitMode::Async);
    if periodic && !shared.producer.context().idle() {
        tracing::debug!(
            "snapshot round skipped: an earlier round's records are not acknowledged yet"
        );
        return;
    }
    let written_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let cells = shared.store.all();
    let records: Vec<_> = cells
        .iter()
        .filter_map(|cell| Some((cell.clone(), record_of(shared, cell, only, &written_at)?)))
        .collect();
    write_snapshots(shared, records);
    commit(consumer, &cells, only, mode);
}

/// The snapshot `cell` needs now, if any: in scope, synced, moved since its last one.
fn record_of(
    shared: &Shared,
    cell: &Cell,
    only: Option<&BTreeSet<TopicPartition>>,
    written_at: &str,
) -> Option<SnapshotRecord> {
    let inner = cell.lock();
    let topic = &cell.def.target.topic;
    if only.is_some_and(|o| !o.contains(&(topic.clone(), inner.partition))) {
        return None;
    }
    if !inner.merger.is_synced() {
        return None;
    }
    if !inner.dirty && inner.snapshot_offset == Some(inner.next_offset) {
        return None;
    }
    if inner.next_offset < 0 {
        return None;
    }
    let state = inner.merger.export()?;
    Some(SnapshotRecord {
        target: cell.def.id().to_owned(),
        topic: topic.clone(),
        partition: inner.partition,
        partitions: shared.partition_count(topic),
        next_offset: inner.next_offset,
        written_at: written_at.to_owned(),
        state,
    })
}

/// Commits, per partition, the smallest snapshot offset of its targets.
fn commit(
    consumer: &BaseConsumer<Ctx>,
    cells: &[Arc<Cell>],
    only: Option<&BTreeSet<TopicPartition>>,
    mode: CommitMode,
) {
    let mut safe: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for cell in cells {
        let inner = cell.lock();
        let key = (cell.def.target.topic.clone(), inner.partition);
        if only.is_some_and(|o| !o.contains(&key)) {
            continue;
        }
        if let Some(offset) = inner.snapshot_offset {
            let entry = safe.entry(key).or_insert(offset);
            *entry = (*entry).min(offset);
        }
    }
    if safe.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in &safe {
        if let Err(error) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(%error, "cannot build the offset commit");
            return;
        }
    }
    if let Err(error) = consumer.commit(&tpl, mode) {
        tracing::warn!(%error, "committing offsets failed; the next round tries again");
    } else {
        tracing::debug!(offsets = ?safe, "offsets committed");
    }
}
