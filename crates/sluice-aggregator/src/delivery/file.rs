//! Delivery files on disk: their names, the atomic write of one file (a temporary name in the
//! same directory, write, fsync, rename, fsync of the directory), and retention.
//!
//! A delivery is visible only through its manifest, written after its data file: a reader that
//! lists `*.manifest.json` never finds a manifest whose data file is missing or partial, and
//! temporary files are dot-prefixed, so no listing of deliveries shows one. Nothing here
//! encodes states or decides when to deliver.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How a delivery's manifest file name ends.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// The stem of a delivery's files: `<UTC timestamp>-v<version>` (`-s<change seq>` for a state
/// without a version), so names sort by time, e.g. `20261203T141530.123Z-v42`.
pub fn stem(at: SystemTime, version: Option<u64>, change_seq: u64) -> String {
    // RFC 3339 with millis, without the separators a file name does not need.
    let time: String = humantime::format_rfc3339_millis(at)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    match version {
        Some(version) => format!("{time}-v{version}"),
        None => format!("{time}-s{change_seq}"),
    }
}

/// Writes `bytes` to `dir/name` atomically (see the module doc); returns the path.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    // Unique per write: two aggregators (a rebalance's old and new owner, on one shared
    // directory, possibly with the same pid on two hosts) never write into one temporary file.
    let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    let path = dir.join(name);
    if let Err(error) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Keeps the newest `keep` deliveries in `dir` and deletes the rest ([`expired`]). Returns the
/// deliveries deleted.
pub fn retain(dir: &Path, keep: usize) -> io::Result<usize> {
    let names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    let expired = expired(names, keep);
    for name in &expired.names {
        fs::remove_file(dir.join(name))?;
    }
    if !expired.names.is_empty() {
        File::open(dir)?.sync_all()?;
    }
    Ok(expired.deliveries)
}

/// What retention deletes from one target's listing.
#[derive(Debug, PartialEq, Eq)]
pub struct Expired {
    /// Names to delete, in this order: the manifests first (so a delivery never shows without
    /// its data), then data files.
    pub names: Vec<String>,
    /// Deliveries (manifests) among them.
    pub deliveries: usize,
}

/// The deliveries beyond the newest `keep` (by manifest name) among `names` (one target's
/// files), data and manifest; a data file older than the oldest kept manifest and without a
/// manifest of its own (a write interrupted between the two) goes too. Dot-prefixed names (a
/// write in flight) are never touched.
pub fn expired(mut names: Vec<String>, keep: usize) -> Expired {
    names.retain(|name| !name.starts_with('.'));
    names.sort();
    let manifests: Vec<&str> = names
        .iter()
        .filter_map(|name| name.strip_suffix(MANIFEST_SUFFIX))
        .collect();
    if manifests.len() <= keep {
        return Expired {
            names: Vec::new(),
            deliveries: 0,
        };
    }
    let old = &manifests[..manifests.len() - keep];
    let oldest_kept = manifests[manifests.len() - keep];
    let mut out: Vec<String> = old
        .iter()
        .map(|stem| format!("{stem}{MANIFEST_SUFFIX}"))
        .collect();
    out.extend(
        names
            .iter()
            .filter(|name| !name.ends_with(MANIFEST_SUFFIX) && name.as_str() < oldest_kept)
            .cloned(),
    );
    Expired {
        names: out,
        deliveries: old.len(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::Duration;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-delivery-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn stems_sort_by_time_and_name_the_version_or_the_change_sequence() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_771_330_123);
        assert_eq!(stem(t, Some(42), 7), "20251203T141530.123Z-v42");
        assert_eq!(stem(t, None, 7), "20251203T141530.123Z-s7");
        let later = stem(t + Duration::from_millis(1), Some(1), 0);
        assert!(later > stem(t, Some(42), 7));
    }

    #[test]
    fn an_atomic_write_leaves_only_the_final_name() {
        let d = dir("write");
        let path = write_atomic(&d, "a.jsonl", b"{}\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}\n");
        assert_eq!(listing(&d), ["a.jsonl"]);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_write_into_a_missing_directory_fails_and_leaves_nothing() {
        let d = dir("missing");
        assert!(write_atomic(&d.join("nope"), "a.jsonl", b"x").is_err());
        assert!(listing(&d).is_empty());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn retention_keeps_the_newest_deliveries_and_drops_orphans_older_than_them() {
        let d = dir("retain");
        for stem in ["1", "2", "3", "4"] {
            fs::write(d.join(format!("{stem}.csv")), "x").unwrap();
            fs::write(d.join(format!("{stem}{MANIFEST_SUFFIX}")), "{}").unwrap();
        }
        fs::write(d.join("25.csv"), "orphan, older than the oldest kept").unwrap();
        fs::write(d.join("5.csv"), "newest, its manifest not written yet").unwrap();
        fs::write(d.join(".6.csv.tmp-1"), "in flight").unwrap();
        assert_eq!(retain(&d, 2).unwrap(), 2);
        assert_eq!(
            listing(&d),
            [
                ".6.csv.tmp-1",
                "3.csv",
                "3.manifest.json",
                "4.csv",
                "4.manifest.json",
                "5.csv"
            ]
        );
        assert_eq!(retain(&d, 2).unwrap(), 0, "nothing more to delete");
        fs::remove_dir_all(d).unwrap();
    }
}
