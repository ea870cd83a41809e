//! A target's snapshot as stored in the compacted state topic (key = target id) and, when
//! configured, in `<dir>/<target>.json`: the merged state plus where in the events topic it
//! stands, so a restart (or the next owner after a rebalance) resumes exactly there. Format and
//! file writing only: it must not talk to Kafka.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_merge::TargetSnapshot;

/// One target's snapshot record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The target id (also the record key).
    pub target: String,
    /// The events topic the offsets refer to.
    pub topic: String,
    /// The events partition the target's records are in.
    pub partition: i32,
    /// The events topic's partition count when the record was written: the target's partition
    /// was chosen for that many (`partition_for`). Absent in records written before it was
    /// recorded, which cannot be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// The offset of the first record not reflected in `state`.
    pub next_offset: i64,
    /// When it was written, RFC 3339.
    pub written_at: String,
    /// The merged state.
    pub state: TargetSnapshot,
}

impl SnapshotRecord {
    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record value; `None` (logged by the caller) when it is not a snapshot.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Writes `bytes` to `<dir>/<target>.json` atomically: a temporary file in the same directory,
/// synced, then renamed over the old one, so a reader never sees half a file.
pub fn write_file(dir: &Path, target: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{target}.json"));
    let tmp = dir.join(format!(".{target}.json.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn file_snapshot_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("sluice-snap-{}", std::process::id()));
        let path = write_file(&dir, "t1", b"{\"a\":1}").unwrap();
        write_file(&dir, "t1", b"{\"a\":2}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":2}");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
