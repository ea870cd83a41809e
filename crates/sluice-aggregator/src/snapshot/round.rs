//! One snapshot round: every synced target (of some partitions, or all) that moved since its
//! last snapshot is written to the state topic (and its file), the round waits for Kafka's
//! acknowledgements, then commits per partition the smallest acknowledged snapshot offset.
//!
//! Invariant: the committed offset of a partition never passes the `next_offset` of the last
//! acknowledged snapshot of any target in it. A round must not run on a lost assignment (the
//! next owner may already be ahead).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use super::record::{SnapshotRecord, write_file};
use crate::rebalance::Ctx;
use crate::shared::{Shared, TopicPartition};
use crate::store::Cell;

/// How long a snapshot round waits for Kafka's acknowledgements.
const SNAPSHOT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one producer poll waits while a snapshot round waits for acknowledgements.
const ACK_POLL: Duration = Duration::from_millis(10);

/// A snapshot queued in Kafka: its target, the offset it stands at, its delivery id.
struct Queued {
    cell: Arc<Cell>,
    next_offset: i64,
    id: usize,
}

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
    let written_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let cells = shared.store.all();
    let mut queued = Vec::new();
    for cell in &cells {
        let Some(record) = record_of(shared, cell, only, &written_at) else {
            continue;
        };
        if let Some(sent) = send(shared, cell, &record) {
            queued.push(sent);
        }
    }
    if !queued.is_empty() {
        await_acks(shared, queued);
    }
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

/// Writes the file (when configured) and queues the record in Kafka.
fn send(shared: &Shared, cell: &Arc<Cell>, record: &SnapshotRecord) -> Option<Queued> {
    let metrics = &shared.metrics;
    let bytes = record.encode();
    if let Some(dir) = &shared.snapshot_dir {
        match write_file(dir, cell.def.id(), &bytes) {
            Ok(_) => metrics.snapshots_written.with_label_values(&["file"]).inc(),
            Err(error) => {
                metrics.snapshot_errors.with_label_values(&["file"]).inc();
                tracing::warn!(target_id = %cell.def.id(), dir = %dir.display(), %error, "writing the snapshot file failed");
            }
        }
    }
    let id = shared.next_delivery_id();
    let sent = shared.producer.send(
        BaseRecord::with_opaque_to(&shared.state_topic, id)
            .key(cell.def.id())
            .payload(&bytes),
    );
    match sent {
        Ok(()) => Some(Queued {
            cell: cell.clone(),
            next_offset: record.next_offset,
            id,
        }),
        Err((error, _)) => {
            metrics.snapshot_errors.with_label_values(&["kafka"]).inc();
            tracing::warn!(target_id = %cell.def.id(), %error, "queueing the snapshot failed");
            None
        }
    }
}

/// Polls the producer until every queued snapshot is acknowledged (or the round's timeout),
/// then moves each acknowledged target's snapshot offset.
fn await_acks(shared: &Shared, queued: Vec<Queued>) {
    let metrics = &shared.metrics;
    let deadline = Instant::now() + SNAPSHOT_ACK_TIMEOUT;
    let ids: Vec<usize> = queued.iter().map(|q| q.id).collect();
    while !shared.producer.context().all_done(&ids) && Instant::now() < deadline {
        shared.producer.poll(ACK_POLL);
    }
    let mut results = shared.producer.context().take();
    for Queued {
        cell,
        next_offset,
        id,
    } in queued
    {
        match results.remove(&id) {
            Some(Ok(())) => {
                metrics
                    .snapshots_written
                    .with_label_values(&["kafka"])
                    .inc();
                let mut inner = cell.lock();
                inner.snapshot_offset = Some(next_offset);
                if inner.next_offset == next_offset {
                    inner.dirty = false;
                }
            }
            Some(Err(error)) => {
                metrics.snapshot_errors.with_label_values(&["kafka"]).inc();
                tracing::warn!(target_id = %cell.def.id(), %error, "snapshot not written; the committed offset stays behind it");
            }
            None => {
                metrics.snapshot_errors.with_label_values(&["kafka"]).inc();
                tracing::warn!(target_id = %cell.def.id(), "snapshot not acknowledged in time; the committed offset stays behind it");
            }
        }
    }
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
