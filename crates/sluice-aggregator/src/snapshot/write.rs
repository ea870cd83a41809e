//! Writing a round's snapshot records to the state topic, in the order the chunked format
//! needs (`chunks`): a snapshot that fits in `Shared::snapshot_chunk_bytes` is one record; a
//! larger one is its chunks, then (once every chunk is acknowledged) its manifest. Once a
//! snapshot is acknowledged, the target's obsolete chunk records are tombstoned.
//!
//! A snapshot counts as written (its offset may be committed) only when its last record (the
//! whole record or the manifest) is acknowledged; chunks of a failed write are remembered and
//! tombstoned after the target's next successful one. It must not choose which targets to
//! snapshot or commit offsets (`round`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer};
use tokio::time::Instant;

use super::chunks::{Manifest, chunk_key, next_generation};
use super::record::{SnapshotRecord, write_file};
use crate::shared::Shared;
use crate::store::Cell;

/// How long each phase of a round waits for Kafka's acknowledgements at most.
const SNAPSHOT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a phase waits when no acknowledgement arrives at all (the broker is down or
/// hung): the consumer loop then goes on, so merging and the group's rebalances (a lost
/// session above all) are served while the records wait in the producer. Their reports come
/// later; a periodic round waits for them before it queues another copy.
const SNAPSHOT_ACK_STALL: Duration = Duration::from_secs(5);
/// How long one producer poll waits while a round waits for acknowledgements.
const ACK_POLL: Duration = Duration::from_millis(10);

/// One target's snapshot on its way to Kafka.
pub struct Queued {
    cell: Arc<Cell>,
    next_offset: i64,
    /// The delivery ids of the records of the current phase.
    ids: Vec<usize>,
    /// A chunked snapshot's manifest, sent once its chunks are acknowledged.
    manifest: Option<Manifest>,
    /// A chunked snapshot's chunk keys (empty for a whole record).
    keys: Vec<String>,
}

/// Writes the snapshots of `records` (with their targets): files, chunks or whole records,
/// manifests, tombstones; an acknowledged snapshot moves its target's snapshot offset.
pub fn write_snapshots(shared: &Shared, records: Vec<(Arc<Cell>, SnapshotRecord)>) {
    let queued: Vec<Queued> = records
        .into_iter()
        .filter_map(|(cell, record)| send(shared, cell, &record))
        .collect();
    if queued.is_empty() {
        return;
    }
    let mut last = Vec::new();
    let mut manifests = Vec::new();
    for mut sent in await_acks(shared, queued) {
        match sent.manifest.take() {
            None => last.push(sent),
            Some(manifest) => {
                let id = shared.next_delivery_id();
                let value = manifest.encode();
                let record = BaseRecord::with_opaque_to(&shared.state_topic, id)
                    .key(sent.cell.def.id())
                    .payload(value.as_slice());
                if queue(shared, record, sent.cell.def.id()) {
                    sent.ids = vec![id];
                    manifests.push(sent);
                } else {
                    failed(&sent);
                }
            }
        }
    }
    if !manifests.is_empty() {
        last.extend(await_acks(shared, manifests));
    }
    let mut obsolete = Vec::with_capacity(last.len());
    for sent in last {
        shared
            .metrics
            .snapshots_written
            .with_label_values(&["kafka"])
            .inc();
        let mut inner = sent.cell.lock();
        inner.snapshot_offset = Some(sent.next_offset);
        if inner.next_offset == sent.next_offset {
            inner.dirty = false;
        }
        let old = std::mem::replace(&mut inner.chunk_keys, sent.keys);
        drop(inner);
        obsolete.push((sent.cell, old));
    }
    tombstone(shared, obsolete);
}

/// Writes the file (when configured) and queues the record, or the chunks, in Kafka.
fn send(shared: &Shared, cell: Arc<Cell>, record: &SnapshotRecord) -> Option<Queued> {
    let bytes = record.encode();
    let id_of = cell.def.id();
    if let Some(dir) = &shared.snapshot_dir {
        match write_file(dir, id_of, &bytes) {
            Ok(_) => shared
                .metrics
                .snapshots_written
                .with_label_values(&["file"])
                .inc(),
            Err(error) => {
                shared
                    .metrics
                    .snapshot_errors
                    .with_label_values(&["file"])
                    .inc();
                tracing::warn!(target_id = %id_of, dir = %dir.display(), %error, "writing the snapshot file failed");
            }
        }
    }
    let limit = shared.snapshot_chunk_bytes;
    if bytes.len() <= limit {
        let id = shared.next_delivery_id();
        let sent = BaseRecord::with_opaque_to(&shared.state_topic, id)
            .key(id_of)
            .payload(bytes.as_slice());
        return queue(shared, sent, id_of).then(|| Queued {
            next_offset: record.next_offset,
            ids: vec![id],
            manifest: None,
            keys: Vec::new(),
            cell: cell.clone(),
        });
    }
    let parts: Vec<&[u8]> = bytes.chunks(limit).collect();
    let Ok(count) = u32::try_from(parts.len()) else {
        tracing::warn!(target_id = %id_of, bytes = bytes.len(), "snapshot too large to chunk");
        return None;
    };
    let generation = {
        let mut inner = cell.lock();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        inner.generation = next_generation(inner.generation, now);
        inner.generation
    };
    let mut queued = Queued {
        next_offset: record.next_offset,
        ids: Vec::with_capacity(parts.len()),
        manifest: Some(Manifest::of(record, &bytes, generation, count)),
        keys: Vec::with_capacity(parts.len()),
        cell: cell.clone(),
    };
    for (index, part) in (0..count).zip(parts) {
        let key = chunk_key(id_of, generation, index);
        let id = shared.next_delivery_id();
        let sent = BaseRecord::with_opaque_to(&shared.state_topic, id)
            .key(key.as_str())
            .payload(part);
        let ok = queue(shared, sent, id_of);
        queued.keys.push(key);
        if !ok {
            failed(&queued);
            return None;
        }
        queued.ids.push(id);
    }
    tracing::debug!(target_id = %id_of, generation, chunks = count, bytes = bytes.len(), "snapshot written in chunks");
    Some(queued)
}

/// Queues one record; false (counted and logged) when the producer refuses it.
fn queue(shared: &Shared, record: BaseRecord<'_, str, [u8], usize>, target: &str) -> bool {
    let id = record.delivery_opaque;
    match shared.producer.send(record) {
        Ok(()) => {
            shared.producer.context().sent(id);
            true
        }
        Err((error, _)) => {
            shared
                .metrics
                .snapshot_errors
                .with_label_values(&["kafka"])
                .inc();
            tracing::warn!(target_id = %target, %error, "queueing the snapshot failed");
            false
        }
    }
}

/// A snapshot that will not be written: chunks it may have written are tombstoned after the
/// target's next successful snapshot.
fn failed(sent: &Queued) {
    sent.cell
        .lock()
        .chunk_keys
        .extend(sent.keys.iter().cloned());
}

/// Polls the producer until every one of `ids` is reported, or until
/// [`SNAPSHOT_ACK_TIMEOUT`], or until none was reported for [`SNAPSHOT_ACK_STALL`]; then
/// takes the reports.
fn reports(shared: &Shared, ids: &[usize]) -> HashMap<usize, Result<(), KafkaError>> {
    let context = shared.producer.context();
    let start = Instant::now();
    let deadline = start + SNAPSHOT_ACK_TIMEOUT;
    let (mut reported, mut progress_at) = (0, start);
    while !context.all_done(ids) {
        let now = Instant::now();
        if now >= deadline || now.duration_since(progress_at) >= SNAPSHOT_ACK_STALL {
            break;
        }
        shared.producer.poll(ACK_POLL);
        let now_reported = context.reported(ids);
        if now_reported > reported {
            (reported, progress_at) = (now_reported, Instant::now());
        }
    }
    context.take()
}

/// Polls the producer until every record of `queued` is reported (or the timeout); returns
/// the snapshots all of whose records were acknowledged, counting and logging the others.
fn await_acks(shared: &Shared, queued: Vec<Queued>) -> Vec<Queued> {
    let ids: Vec<usize> = queued.iter().flat_map(|q| q.ids.iter().copied()).collect();
    let mut results = reports(shared, &ids);
    let mut acked = Vec::with_capacity(queued.len());
    for sent in queued {
        let mut error = None;
        let mut missing = false;
        for id in &sent.ids {
            match results.remove(id) {
                Some(Ok(())) => {}
                Some(Err(e)) => error = Some(e),
                None => missing = true,
            }
        }
        let target = sent.cell.def.id();
        if error.is_none() && !missing {
            acked.push(sent);
            continue;
        }
        shared
            .metrics
            .snapshot_errors
            .with_label_values(&["kafka"])
            .inc();
        match error {
            Some(error) => {
                tracing::warn!(target_id = %target, %error, "snapshot not written; the committed offset stays behind it")
            }
            None => {
                tracing::warn!(target_id = %target, "snapshot not acknowledged in time; the committed offset stays behind it")
            }
        }
        failed(&sent);
    }
    acked
}

/// Tombstones each target's obsolete chunk records and waits for them; keys whose tombstone
/// was not acknowledged go back to the target, for its next snapshot.
fn tombstone(shared: &Shared, obsolete: Vec<(Arc<Cell>, Vec<String>)>) {
    let mut sent = Vec::new();
    for (cell, keys) in obsolete {
        for key in keys {
            let id = shared.next_delivery_id();
            let record = BaseRecord::<str, [u8], usize>::with_opaque_to(&shared.state_topic, id)
                .key(key.as_str());
            match shared.producer.send(record) {
                Ok(()) => {
                    shared.producer.context().sent(id);
                    sent.push((cell.clone(), key, id));
                }
                Err(_) => cell.lock().chunk_keys.push(key),
            }
        }
    }
    if sent.is_empty() {
        return;
    }
    let ids: Vec<usize> = sent.iter().map(|(_, _, id)| *id).collect();
    let mut results = reports(shared, &ids);
    let mut kept = 0usize;
    for (cell, key, id) in sent {
        if !matches!(results.remove(&id), Some(Ok(()))) {
            kept += 1;
            cell.lock().chunk_keys.push(key);
        }
    }
    if kept > 0 {
        tracing::warn!(
            records = kept,
            "obsolete snapshot chunks not deleted yet; the next snapshot tries again"
        );
    }
}
