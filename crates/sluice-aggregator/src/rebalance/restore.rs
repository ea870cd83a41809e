//! An assignment: the partitions' targets come back from the state topic (`Merger::restore` of
//! their last complete snapshot, whole or chunked, replaying from its offset), and the
//! configured targets of those partitions without a usable snapshot start fresh (queued for a
//! base fetch, taking records from the partition's start offset). Only the records of targets
//! the partitioner places in the assigned partitions are kept from the read (a key filter).
//!
//! A snapshot is not used when it is older than the partition's start offset (its writer had
//! lost the partition already) or was built for another partition count of its topic (the
//! target may now live in another partition). This module must not fetch base states or
//! handle records.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::BaseConsumer;
use sluice_merge::Merger;
use sluice_publish::partition_for;

use super::start_offsets::{Starts, partition_count, pin_start_offsets};
use super::{Ctx, partitions};
use crate::shared::{Shared, TopicPartition};
use crate::snapshot::{Found, SnapshotRecord, StateTable};
use crate::store::{Inner, TargetDef};

/// How long reading the state topic at an assignment may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Restores the targets of newly assigned partitions (from the state topic), and starts
/// fresh the configured targets of those partitions that have no snapshot.
pub fn restore(shared: &Shared, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
    let parts = partitions(tpl);
    tracing::info!(partitions = ?parts, "partitions assigned");
    shared.add_assigned(&parts);
    if !parts.is_empty() {
        let starts = pin_start_offsets(consumer, tpl);
        let topics: BTreeSet<&str> = parts.iter().map(|(t, _)| t.as_str()).collect();
        for topic in topics {
            shared.set_partition_count(topic, partition_count(consumer, topic));
        }
        let (restored, mut leftovers) = restore_snapshots(shared, &parts, &starts.offsets);
        start_fresh(shared, &parts, &starts, &restored, &mut leftovers);
    }
    shared.set_assigned_once(true);
}

/// What the state topic holds of a target that was not restored: its chunk records (for
/// clean-up after its first snapshot) and highest generation.
type Leftovers = HashMap<String, (Vec<String>, u64)>;

/// Reads the state topic's records of the targets of `parts`. A read that fails for a reason
/// that may pass (no leader just after a broker restart, a metadata timeout) is tried again
/// until [`RESTORE_TIMEOUT`] has passed in all: falling back to fresh base states is correct but
/// costs every target a base fetch, so it is the last resort (`None`, logged as an error).
fn read_state_table<'a>(
    shared: &'a Shared,
    parts: &'a BTreeSet<TopicPartition>,
) -> Option<StateTable<impl Fn(&str) -> bool + 'a>> {
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    let mut pause = Duration::from_millis(200);
    loop {
        let mut table = StateTable::new(|id: &str| wanted(shared, parts, id));
        let left = deadline.saturating_duration_since(Instant::now());
        let read = sluice_publish::read_compacted_each(
            shared.reader.clone(),
            &shared.state_topic,
            left.max(Duration::from_secs(1)),
            |key, value| table.offer(key, value),
        );
        match read {
            Ok(()) | Err(sluice_publish::CheckpointReadError::TopicMissing { .. }) => {
                return Some(table);
            }
            Err(error) if error.is_retryable() && Instant::now() + pause < deadline => {
                tracing::warn!(%error, kind = error.kind(), topic = %shared.state_topic, retry_in = ?pause, "cannot read the state topic yet: trying again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                tracing::error!(%error, kind = error.kind(), topic = %shared.state_topic, "cannot read the state topic: assigned targets start from fresh base states");
                return None;
            }
        }
    }
}

/// Restores every configured target of `parts` that has a usable snapshot; returns their ids,
/// and the chunk keys of those read but not restored.
fn restore_snapshots(
    shared: &Shared,
    parts: &BTreeSet<TopicPartition>,
    starts: &HashMap<TopicPartition, i64>,
) -> (BTreeSet<String>, Leftovers) {
    let Some(mut table) = read_state_table(shared, parts) else {
        return (BTreeSet::new(), HashMap::new());
    };
    let mut restored = BTreeSet::new();
    let mut leftovers = HashMap::new();
    let ids: Vec<String> = table.targets().map(str::to_owned).collect();
    for id in ids {
        let Some(def) = shared.defs.get(&id) else {
            continue;
        };
        let Found {
            record,
            chunk_keys,
            generation,
        } = table.take(&id);
        let Some(record) = record.filter(|record| {
            let key = (record.topic.clone(), record.partition);
            parts.contains(&key)
                && record.topic == def.target.topic
                && usable(shared, &id, record, starts.get(&key).copied())
        }) else {
            leftovers.insert(id, (chunk_keys, generation));
            continue;
        };
        restore_one(shared, def, record, chunk_keys, generation);
        restored.insert(id);
    }
    (restored, leftovers)
}

/// Whether the state topic's records of target `id` are read at this assignment: only those
/// of configured targets the partitioner places in `parts` (all of a topic's targets when its
/// partition count is unknown), decided from the key alone, so the snapshots of other
/// partitions' targets are never copied, let alone parsed.
fn wanted(shared: &Shared, parts: &BTreeSet<TopicPartition>, id: &str) -> bool {
    let Some(def) = shared.defs.get(id) else {
        return false;
    };
    let topic = &def.target.topic;
    match shared.partition_count(topic) {
        Some(count) => parts.contains(&(topic.clone(), partition_for(id, count))),
        None => parts.iter().any(|(t, _)| t == topic),
    }
}

/// Whether `record` may be restored given its partition's start offset and the topic's
/// partition count now.
fn usable(shared: &Shared, id: &str, record: &SnapshotRecord, start: Option<i64>) -> bool {
    if let Some(start) = start
        && record.next_offset < start
    {
        // Committed offsets never pass a snapshot its owner wrote, so this one was written by
        // an owner that had already lost the partition: replaying from `start` would skip
        // records it lacks.
        tracing::warn!(target_id = %id, next_offset = record.next_offset, start, "snapshot is older than the partition's start offset: fetching a fresh base state instead");
        return false;
    }
    if let (Some(built), Some(now)) = (record.partitions, shared.partition_count(&record.topic))
        && built != now
    {
        tracing::error!(target_id = %id, topic = %record.topic, snapshot_partitions = built, partitions = now, "snapshot was built for another partition count of its topic: not restored");
        return false;
    }
    true
}

fn restore_one(
    shared: &Shared,
    def: &Arc<TargetDef>,
    record: SnapshotRecord,
    chunk_keys: Vec<String>,
    generation: u64,
) {
    let changed_at =
        humantime::parse_rfc3339(&record.written_at).unwrap_or_else(|_| SystemTime::now());
    let merger = Merger::restore(def.spec.clone(), record.state);
    tracing::info!(target_id = %def.id(), partition = record.partition, next_offset = record.next_offset, entities = merger.len(), version = ?merger.version(), "target restored from its snapshot");
    shared.insert_cell(
        def,
        Inner {
            merger,
            partition: record.partition,
            placed: true,
            next_offset: record.next_offset,
            snapshot_offset: Some(record.next_offset),
            dirty: false,
            changed_at,
            ring: Default::default(),
            fetching: None,
            chunk_keys,
            generation,
        },
    );
}

/// Starts fresh (base fetch queued) every configured target that `partition_for` places in
/// `parts` and that was not restored; in a partition whose committed offset was gone, the
/// fetch is counted as reason `offset_out_of_range`.
fn start_fresh(
    shared: &Shared,
    parts: &BTreeSet<TopicPartition>,
    starts: &Starts,
    restored: &BTreeSet<String>,
    leftovers: &mut Leftovers,
) {
    for def in shared.defs.values() {
        if restored.contains(def.id()) {
            continue;
        }
        let topic = &def.target.topic;
        let Some(count) = shared.partition_count(topic) else {
            continue;
        };
        if !parts.iter().any(|(t, _)| t == topic) {
            continue;
        }
        let partition = partition_for(def.id(), count);
        let key = (topic.clone(), partition);
        if parts.contains(&key) {
            tracing::info!(target_id = %def.id(), partition, "target assigned without a snapshot: fetching its base state");
            let start = starts.offsets.get(&key).copied().unwrap_or(-1);
            let gone = starts.gone.contains(&key);
            let cell = shared.insert_fresh_cell(def, partition, start, gone);
            if let Some((chunk_keys, generation)) = leftovers.remove(def.id()) {
                let mut inner = cell.lock();
                inner.chunk_keys = chunk_keys;
                inner.generation = generation;
            }
        }
    }
}
