//! The chunked snapshot format of the compacted state topic, for a snapshot larger than one
//! record may be (the topic's `max.message.bytes`, about 1 MiB by default):
//!
//! - chunk records keyed `<target>#<generation>#<index>` (index from 0), each holding a slice
//!   of the encoded [`SnapshotRecord`] JSON, written first;
//! - then, only once every chunk is acknowledged, a manifest record keyed `<target>` naming the
//!   generation, the chunk count, the total length and the CRC-32 of the whole, plus the
//!   record's metadata (topic, partition, offsets), so a reader can decide from the manifest
//!   alone whether it wants the chunks;
//! - once the manifest is acknowledged, tombstones for the chunk keys of earlier generations.
//!
//! A snapshot that fits in one record stays one record keyed `<target>` (the format written
//! before chunking existed, still read). Target ids never contain `#`, so the keys cannot
//! collide. Format and arithmetic only: this module must not talk to Kafka.

use serde::{Deserialize, Serialize};

use super::record::SnapshotRecord;

/// The `format` value that marks a manifest record.
pub const MANIFEST_FORMAT: &str = "sluice.snapshot.chunked.v1";

/// The record size assumed when the broker does not say (librdkafka's mock cluster): Kafka's
/// default `max.message.bytes` rounded down.
pub const ASSUMED_RECORD_LIMIT: u64 = 1_000_000;

/// The smallest chunk ever written, whatever the limits say.
const MIN_CHUNK: usize = 4096;

/// The manifest of a chunked snapshot (key = target id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The target id (also the record key).
    pub target: String,
    /// The events topic the offsets refer to.
    pub topic: String,
    /// The events partition the target's records are in.
    pub partition: i32,
    /// The events topic's partition count the snapshot was built for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// The offset of the first record not reflected in the snapshot.
    pub next_offset: i64,
    /// When it was written, RFC 3339.
    pub written_at: String,
    /// The generation: this snapshot's chunks are keyed `<target>#<generation>#<index>`.
    pub generation: u64,
    /// How many chunks.
    pub chunks: u32,
    /// The length of the whole encoded record.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the whole encoded record.
    pub crc32: u32,
}

impl Manifest {
    /// The manifest of `record` encoded as `bytes`, cut into `chunks` chunks of `generation`.
    pub fn of(record: &SnapshotRecord, bytes: &[u8], generation: u64, chunks: u32) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.to_owned(),
            target: record.target.clone(),
            topic: record.topic.clone(),
            partition: record.partition,
            partitions: record.partitions,
            next_offset: record.next_offset,
            written_at: record.written_at.clone(),
            generation,
            chunks,
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }

    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether `record` (assembled from this manifest's chunks) is the snapshot it describes.
    pub fn describes(&self, record: &SnapshotRecord) -> bool {
        record.target == self.target
            && record.topic == self.topic
            && record.partition == self.partition
            && record.partitions == self.partitions
            && record.next_offset == self.next_offset
    }
}

/// What a value under a bare target key says about itself, read without building the state
/// (serde skips the `state` field unread): enough to tell a manifest from a whole record and
/// to check the partition count.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Head {
    /// [`MANIFEST_FORMAT`] for a manifest; absent for a whole record.
    #[serde(default)]
    pub format: Option<String>,
    /// The events topic.
    pub topic: String,
    /// The events partition.
    pub partition: i32,
    /// The partition count it was built for, when recorded.
    #[serde(default)]
    pub partitions: Option<i32>,
}

impl Head {
    /// Reads the head of a value under a target key.
    pub fn read(bytes: &[u8]) -> Result<Head, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether the value is a manifest.
    pub fn is_manifest(&self) -> bool {
        self.format.as_deref() == Some(MANIFEST_FORMAT)
    }
}

/// What a state-topic key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'k> {
    /// A target's manifest or whole snapshot.
    Target(&'k str),
    /// One chunk of a target's snapshot.
    Chunk {
        /// The target id.
        target: &'k str,
        /// The snapshot's generation.
        generation: u64,
        /// The chunk's index.
        index: u32,
    },
    /// Neither (a `#` key that does not parse): not Sluice's, skipped.
    Other,
}

impl<'k> Key<'k> {
    /// Reads a key.
    pub fn parse(key: &'k str) -> Key<'k> {
        let mut parts = key.split('#');
        let (Some(target), generation, index, rest) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Key::Other;
        };
        match (generation, index, rest) {
            (None, _, _) => Key::Target(target),
            (Some(generation), Some(index), None) => match (generation.parse(), index.parse()) {
                (Ok(generation), Ok(index)) if !target.is_empty() => Key::Chunk {
                    target,
                    generation,
                    index,
                },
                _ => Key::Other,
            },
            _ => Key::Other,
        }
    }

    /// The target the key belongs to.
    pub fn target(&self) -> Option<&'k str> {
        match self {
            Key::Target(target) | Key::Chunk { target, .. } => Some(target),
            Key::Other => None,
        }
    }
}

/// The key of chunk `index` of `target`'s snapshot `generation`.
pub fn chunk_key(target: &str, generation: u64, index: u32) -> String {
    format!("{target}#{generation}#{index}")
}

/// The largest chunk (and whole record value) to write, for a state topic taking records of
/// up to `record_limit` bytes (its `max.message.bytes`, which bounds the compressed batch):
/// the limit minus headroom for the key, the record and batch framing and lz4's worst-case
/// growth (under 0.4%), so a chunk alone in its batch always fits.
pub fn chunk_limit(record_limit: u64) -> usize {
    let headroom = (record_limit / 64).max(1024);
    let limit = record_limit.saturating_sub(headroom);
    usize::try_from(limit).unwrap_or(usize::MAX).max(MIN_CHUNK)
}

/// The next generation for a target whose snapshots used up to `previous`: the wall clock in
/// milliseconds, or `previous + 1` when the clock is not ahead of it, so every generation of a
/// target is new and the keys of two generations never meet.
pub fn next_generation(previous: u64, now_millis: u64) -> u64 {
    now_millis.max(previous.saturating_add(1))
}

/// Why chunks did not assemble into the snapshot their manifest describes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// A chunk record is not in the topic.
    #[error("chunk {index} of generation {generation} is missing")]
    Missing {
        /// The generation.
        generation: u64,
        /// The missing chunk.
        index: u32,
    },
    /// The chunks' total length or checksum is not the manifest's.
    #[error("the chunks of generation {generation} do not match their manifest ({reason})")]
    Mismatch {
        /// The generation.
        generation: u64,
        /// `length` or `checksum`.
        reason: &'static str,
    },
}

impl AssembleError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AssembleError::Missing { .. } => "missing_chunk",
            AssembleError::Mismatch { .. } => "chunk_mismatch",
        }
    }
}

/// Joins the chunks of `manifest` (looked up by index with `chunk`) and checks them against
/// it: every chunk present, the total length and the CRC-32 the manifest's. Never allocates
/// more than the manifest's length (a bad manifest cannot make it reserve more than it reads).
pub fn assemble<'c>(
    manifest: &Manifest,
    mut chunk: impl FnMut(u32) -> Option<&'c [u8]>,
) -> Result<Vec<u8>, AssembleError> {
    let generation = manifest.generation;
    let mismatch = |reason| AssembleError::Mismatch { generation, reason };
    let expected = usize::try_from(manifest.bytes).map_err(|_| mismatch("length"))?;
    let mut whole = Vec::new();
    for index in 0..manifest.chunks {
        let part = chunk(index).ok_or(AssembleError::Missing { generation, index })?;
        if whole.len() + part.len() > expected {
            return Err(mismatch("length"));
        }
        whole.extend_from_slice(part);
    }
    if whole.len() != expected {
        return Err(mismatch("length"));
    }
    if crc32fast::hash(&whole) != manifest.crc32 {
        return Err(mismatch("checksum"));
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_name_targets_and_chunks() {
        assert_eq!(Key::parse("prices"), Key::Target("prices"));
        assert_eq!(
            Key::parse(&chunk_key("prices", 17, 3)),
            Key::Chunk {
                target: "prices",
                generation: 17,
                index: 3
            }
        );
        for other in ["a#1", "a#x#1", "a#1#y", "a#1#2#3", "#1#2"] {
            assert_eq!(Key::parse(other), Key::Other, "{other}");
        }
    }

    #[test]
    fn the_chunk_limit_leaves_headroom_below_the_record_limit() {
        let limit = chunk_limit(1_048_588);
        assert!(limit < 1_048_588 - 1_048_588 / 255 - 1024, "{limit}");
        assert!(limit > 1_000_000, "{limit}");
        assert_eq!(chunk_limit(10), MIN_CHUNK);
    }

    #[test]
    fn generations_always_move_forward() {
        assert_eq!(next_generation(0, 1_000), 1_000);
        assert_eq!(next_generation(1_000, 1_000), 1_001);
        assert_eq!(next_generation(5_000, 1_000), 5_001);
        assert_eq!(next_generation(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn heads_tell_a_manifest_from_a_whole_record() {
        let whole = br#"{"target":"t","topic":"ev","partition":2,"next_offset":5,"written_at":"x","state":{"version":1,"change_seq":0,"last_connection":null,"recent_ids":[],"entities":{}}}"#;
        let head = Head::read(whole).unwrap();
        assert!(!head.is_manifest());
        assert_eq!((head.topic.as_str(), head.partition), ("ev", 2));
        let manifest = Manifest {
            format: MANIFEST_FORMAT.to_owned(),
            target: "t".into(),
            topic: "ev".into(),
            partition: 1,
            partitions: Some(4),
            next_offset: 9,
            written_at: "x".into(),
            generation: 3,
            chunks: 2,
            bytes: 10,
            crc32: 0,
        };
        let head = Head::read(&manifest.encode()).unwrap();
        assert!(head.is_manifest());
        assert_eq!(head.partitions, Some(4));
        assert_eq!(chunk_key("t", manifest.generation, 1), "t#3#1");
    }
}
