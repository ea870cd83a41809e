//! The state topic as an assignment reads it: the records of wanted targets only (the caller's
//! key filter; other keys are skipped without copying their values), then per target the
//! newest snapshot that is complete. A whole record (the one-record format) is used as it is;
//! a manifest is used only when all its chunks are there and their length and CRC-32 match,
//! and the record they assemble to is the one it describes. Otherwise the next older version
//! the read saw is tried (a read before compaction sees several), and when none is complete
//! the target has no snapshot (a fresh base state): never a state assembled from the wrong
//! chunks.
//!
//! It also reports every chunk key of the target still in the topic, which the target's next
//! acknowledged snapshot makes obsolete (tombstoned then), and the highest generation seen.
//! Reading only: it must not write to Kafka or decide whether a snapshot is recent enough.

use std::collections::{HashMap, VecDeque};

use super::chunks::{Head, Key, Manifest, assemble, chunk_key};
use super::record::SnapshotRecord;

/// How many versions of a target key are kept while reading (newest last).
const VERSIONS: usize = 4;

/// One value seen under a target key.
enum Version {
    /// A whole snapshot record.
    Whole(Vec<u8>),
    /// A chunked snapshot's manifest.
    Chunked(Manifest),
}

/// What the read saw of one target.
#[derive(Default)]
struct Seen {
    versions: VecDeque<Version>,
    chunks: HashMap<(u64, u32), Vec<u8>>,
}

/// One target's result.
#[derive(Debug, Default)]
pub struct Found {
    /// Its newest complete snapshot, if any.
    pub record: Option<SnapshotRecord>,
    /// The keys of its chunk records in the topic (sorted).
    pub chunk_keys: Vec<String>,
    /// The highest chunk generation seen (0: none).
    pub generation: u64,
}

/// The wanted targets' records of the state topic (see the module doc).
pub struct StateTable<F> {
    wanted: F,
    seen: HashMap<String, Seen>,
}

impl<F: Fn(&str) -> bool> StateTable<F> {
    /// An empty table keeping the records of the targets `wanted` accepts.
    pub fn new(wanted: F) -> StateTable<F> {
        StateTable {
            wanted,
            seen: HashMap::new(),
        }
    }

    /// Takes one record, in topic order (`None`: a tombstone).
    pub fn offer(&mut self, key: &str, value: Option<&[u8]>) {
        let key = Key::parse(key);
        let Some(target) = key.target() else {
            return;
        };
        if !(self.wanted)(target) {
            return;
        }
        let seen = self.seen.entry(target.to_owned()).or_default();
        match (key, value) {
            (Key::Target(_), None) => seen.versions.clear(),
            (Key::Target(_), Some(value)) => seen.push(target, value),
            (
                Key::Chunk {
                    generation, index, ..
                },
                Some(value),
            ) => {
                seen.chunks.insert((generation, index), value.to_vec());
            }
            (
                Key::Chunk {
                    generation, index, ..
                },
                None,
            ) => {
                seen.chunks.remove(&(generation, index));
            }
            (Key::Other, _) => {}
        }
    }

    /// The targets with anything in the table.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.seen.keys().map(String::as_str)
    }

    /// Takes `target`'s result out of the table.
    pub fn take(&mut self, target: &str) -> Found {
        let Some(mut seen) = self.seen.remove(target) else {
            return Found::default();
        };
        let mut chunk_keys: Vec<(u64, u32)> = seen.chunks.keys().copied().collect();
        chunk_keys.sort_unstable();
        let manifests = seen.versions.iter().filter_map(|v| match v {
            Version::Chunked(m) => Some(m.generation),
            Version::Whole(_) => None,
        });
        let generation = chunk_keys
            .iter()
            .map(|(g, _)| *g)
            .chain(manifests)
            .max()
            .unwrap_or(0);
        let mut record = None;
        while let Some(version) = seen.versions.pop_back() {
            record = seen.complete(target, version);
            if record.is_some() {
                break;
            }
            if !seen.versions.is_empty() {
                tracing::warn!(target_id = %target, "falling back to an earlier snapshot of the target");
            }
        }
        Found {
            record,
            chunk_keys: chunk_keys
                .into_iter()
                .map(|(g, i)| chunk_key(target, g, i))
                .collect(),
            generation,
        }
    }
}

impl Seen {
    /// Remembers a value of the target key: a whole record replaces an older whole one (the
    /// big values are kept once), a manifest is kept beside them, at most [`VERSIONS`].
    fn push(&mut self, target: &str, value: &[u8]) {
        let version = match Head::read(value) {
            Ok(head) if head.is_manifest() => match serde_json::from_slice::<Manifest>(value) {
                Ok(manifest) => Version::Chunked(manifest),
                Err(error) => {
                    tracing::warn!(target_id = %target, %error, "skipping unreadable snapshot manifest");
                    return;
                }
            },
            _ => {
                self.versions.retain(|v| matches!(v, Version::Chunked(_)));
                Version::Whole(value.to_vec())
            }
        };
        if self.versions.len() == VERSIONS {
            self.versions.pop_front();
        }
        self.versions.push_back(version);
    }

    /// The snapshot `version` stands for, when it is complete and readable (logged if not).
    fn complete(&self, target: &str, version: Version) -> Option<SnapshotRecord> {
        let (bytes, manifest) = match version {
            Version::Whole(bytes) => (bytes, None),
            Version::Chunked(manifest) => {
                let assembled = assemble(&manifest, |index| {
                    self.chunks
                        .get(&(manifest.generation, index))
                        .map(Vec::as_slice)
                });
                match assembled {
                    Ok(bytes) => (bytes, Some(manifest)),
                    Err(error) => {
                        tracing::warn!(target_id = %target, kind = error.kind(), %error, "chunked snapshot incomplete: not restored");
                        return None;
                    }
                }
            }
        };
        let record = match SnapshotRecord::decode(&bytes) {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(target_id = %target, %error, "skipping unreadable snapshot record");
                return None;
            }
        };
        let describes = manifest.as_ref().is_none_or(|m| m.describes(&record));
        if record.target != target || !describes {
            tracing::warn!(target_id = %target, "snapshot record does not belong to its key: not restored");
            return None;
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::snapshot::chunks::chunk_key;

    fn record(target: &str, next_offset: i64, entities: usize) -> SnapshotRecord {
        let entities: String = (0..entities)
            .map(|i| {
                format!(r#""E{i:05}":{{"key":"E{i:05}","price":{i}.5,"version":{next_offset}}}"#)
            })
            .collect::<Vec<_>>()
            .join(",");
        let state = format!(
            r#"{{"version":{next_offset},"change_seq":1,"last_connection":null,"recent_ids":[],"entities":{{{entities}}}}}"#
        );
        SnapshotRecord {
            target: target.to_owned(),
            topic: "events".to_owned(),
            partition: 0,
            partitions: Some(1),
            next_offset,
            written_at: "2026-01-01T00:00:00Z".to_owned(),
            state: serde_json::from_str(&state).unwrap(),
        }
    }

    /// The records a chunked write of `record` produces: chunks, then the manifest.
    fn chunked(record: &SnapshotRecord, generation: u64, size: usize) -> Vec<(String, Vec<u8>)> {
        let bytes = record.encode();
        let parts: Vec<&[u8]> = bytes.chunks(size).collect();
        let manifest = Manifest::of(record, &bytes, generation, parts.len() as u32);
        let mut out: Vec<(String, Vec<u8>)> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (chunk_key(&record.target, generation, i as u32), p.to_vec()))
            .collect();
        out.push((record.target.clone(), manifest.encode()));
        out
    }

    fn new_table() -> StateTable<impl Fn(&str) -> bool> {
        StateTable::new(|t: &str| t != "unwanted")
    }

    fn offer_all(table: &mut StateTable<impl Fn(&str) -> bool>, records: &[(String, Vec<u8>)]) {
        for (key, value) in records {
            table.offer(key, Some(value));
        }
    }

    #[test]
    fn a_chunked_snapshot_assembles_to_the_record_it_was_cut_from() {
        let big = record("t", 40, 300);
        let records = chunked(&big, 7, 1000);
        assert!(records.len() > 5, "cut into several chunks");
        let mut table = new_table();
        offer_all(&mut table, &records);
        let found = table.take("t");
        assert_eq!(found.record, Some(big));
        assert_eq!(found.generation, 7);
        assert_eq!(found.chunk_keys.len(), records.len() - 1);
    }

    #[test]
    fn a_missing_chunk_falls_back_to_the_previous_complete_generation() {
        let old = record("t", 10, 200);
        let new = record("t", 20, 250);
        let mut records = chunked(&old, 1, 700);
        let mut newer = chunked(&new, 2, 700);
        newer.remove(3);
        records.extend(newer);
        let mut table = new_table();
        offer_all(&mut table, &records);
        let found = table.take("t");
        assert_eq!(found.record, Some(old), "the older complete generation");
        assert_eq!(found.generation, 2);
    }

    #[test]
    fn missing_or_corrupt_chunks_without_an_earlier_generation_mean_no_snapshot() {
        let new = record("t", 20, 250);
        // A chunk missing.
        let mut missing = chunked(&new, 2, 700);
        missing.remove(0);
        // A chunk of the same length with other bytes.
        let mut corrupt = chunked(&new, 2, 700);
        let last = corrupt[1].1.len() - 1;
        corrupt[1].1[last] ^= 0x20;
        // A chunk tombstoned after the manifest (as a later round's clean-up would).
        let tombstoned = chunked(&new, 2, 700);
        for records in [missing, corrupt] {
            let mut table = new_table();
            offer_all(&mut table, &records);
            assert_eq!(table.take("t").record, None, "never a wrong state");
        }
        let mut table = new_table();
        offer_all(&mut table, &tombstoned);
        table.offer(&chunk_key("t", 2, 1), None);
        assert_eq!(table.take("t").record, None);
    }

    #[test]
    fn chunks_of_another_generation_never_complete_a_manifest() {
        let a = record("t", 10, 200);
        let b = record("t", 20, 200);
        let mut records: Vec<_> = chunked(&a, 1, 700);
        records.pop(); // a's manifest never written (interrupted round)
        let mut second = chunked(&b, 2, 700);
        second.remove(0);
        records.extend(second);
        let mut table = new_table();
        offer_all(&mut table, &records);
        let found = table.take("t");
        assert_eq!(found.record, None);
        assert!(
            found.chunk_keys.iter().any(|k| k.starts_with("t#1#")),
            "orphans reported"
        );
    }

    #[test]
    fn a_whole_record_is_read_as_before_and_a_later_one_replaces_chunks() {
        let small = record("t", 5, 3);
        let mut table = new_table();
        table.offer("t", Some(&small.encode()));
        assert_eq!(table.take("t").record, Some(small.clone()));

        let big = record("t", 9, 200);
        let mut records = chunked(&big, 4, 700);
        records.push(("t".to_owned(), small.encode()));
        let mut table = new_table();
        offer_all(&mut table, &records);
        let found = table.take("t");
        assert_eq!(found.record, Some(small), "the newest version wins");
        assert_eq!(
            found.generation, 4,
            "its chunks are still reported for clean-up"
        );
        assert!(!found.chunk_keys.is_empty());
    }

    #[test]
    fn tombstones_and_unwanted_targets_leave_nothing() {
        let mut table = new_table();
        table.offer("t", Some(&record("t", 5, 3).encode()));
        table.offer("t", None);
        table.offer("unwanted", Some(&record("unwanted", 5, 3).encode()));
        table.offer("unwanted#1#0", Some(b"x"));
        assert_eq!(table.targets().collect::<Vec<_>>(), ["t"]);
        assert_eq!(table.take("t").record, None);
        assert_eq!(table.take("unwanted").record, None);
    }

    #[test]
    fn a_record_under_another_targets_key_is_refused() {
        let mut table = new_table();
        table.offer("t", Some(&record("u", 5, 3).encode()));
        assert_eq!(table.take("t").record, None);
    }
}
