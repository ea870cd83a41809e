//! One delivery of one state version: encode it, write the data file and then its manifest
//! (both atomically, `file`), then apply retention. Blocking file I/O: run it on
//! `spawn_blocking`. It must not touch the target's cell or its lock: it gets the version.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use sluice_config::DeliveryFormat;

use super::file::{self, MANIFEST_SUFFIX};
use super::format;
use crate::versions::StateView;

/// Why a delivery was not written.
#[derive(Debug, thiserror::Error)]
#[error("{stage} {path}: {source}")]
pub struct DeliveryError {
    /// Where it failed.
    pub stage: Stage,
    /// The file or directory.
    pub path: String,
    /// The OS error.
    pub source: std::io::Error,
}

/// The step of a delivery that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Creating the target's directory.
    CreateDir,
    /// Encoding the state (the Parquet writer).
    Encode,
    /// Writing (or syncing, renaming) the data file.
    Data,
    /// Writing the manifest.
    Manifest,
    /// The blocking task itself (it panicked or was cancelled).
    Task,
}

impl Stage {
    /// A bounded label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::CreateDir => "create_dir",
            Stage::Encode => "encode",
            Stage::Data => "data",
            Stage::Manifest => "manifest",
            Stage::Task => "task",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::CreateDir => "creating the delivery directory",
            Stage::Encode => "encoding the delivery of",
            Stage::Data => "writing the delivery file",
            Stage::Manifest => "writing the delivery manifest",
            Stage::Task => "running the delivery into",
        })
    }
}

impl DeliveryError {
    /// A bounded label for logs. Every kind is retried: a full or read-only disk may be fixed
    /// meanwhile.
    pub fn kind(&self) -> &'static str {
        self.stage.as_str()
    }
}

/// What was written.
#[derive(Debug)]
pub struct Delivered {
    /// The data file.
    pub data: PathBuf,
    /// Its manifest.
    pub manifest: PathBuf,
    /// Bytes of both files.
    pub bytes: u64,
    /// Older deliveries deleted by retention.
    pub deleted: usize,
}

/// The manifest (a JSON object next to the data file).
#[derive(Debug, serde::Serialize)]
struct Manifest<'a> {
    target: &'a str,
    /// The data file's name (in the same directory).
    file: &'a str,
    format: &'static str,
    version: Option<u64>,
    change_seq: u64,
    kafka: serde_json::Value,
    rows: usize,
    bytes: u64,
    sha256: String,
    /// When the state last changed.
    as_of: String,
    /// When the delivery was written.
    delivered_at: String,
}

/// Delivers `view` into `dir/<target>/` in `format`, then keeps the newest `keep` there.
/// Retention problems are logged, not failures (the delivery itself is complete).
pub fn deliver(
    dir: &Path,
    view: &StateView,
    format: DeliveryFormat,
    keep: usize,
    now: SystemTime,
) -> Result<Delivered, DeliveryError> {
    let target_dir = dir.join(view.target());
    let error = |stage, path: &Path| {
        let path = path.display().to_string();
        move |source| DeliveryError {
            stage,
            path,
            source,
        }
    };
    std::fs::create_dir_all(&target_dir).map_err(error(Stage::CreateDir, &target_dir))?;
    let encoded = format::encode(&view.entities, format).map_err(|e| DeliveryError {
        stage: Stage::Encode,
        path: target_dir.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let stem = file::stem(now, view.version, view.change_seq);
    let data_name = format!("{stem}.{}", format.as_str());
    let data = file::write_atomic(&target_dir, &data_name, &encoded.bytes)
        .map_err(error(Stage::Data, &target_dir.join(&data_name)))?;
    let manifest = Manifest {
        target: view.target(),
        file: &data_name,
        format: format.as_str(),
        version: view.version,
        change_seq: view.change_seq,
        kafka: view.kafka(),
        rows: encoded.rows,
        bytes: encoded.bytes.len() as u64,
        sha256: hex(&Sha256::digest(&encoded.bytes)),
        as_of: view.as_of(),
        delivered_at: humantime::format_rfc3339_millis(now).to_string(),
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    manifest_bytes.push(b'\n');
    let manifest_name = format!("{stem}{MANIFEST_SUFFIX}");
    let manifest_path = file::write_atomic(&target_dir, &manifest_name, &manifest_bytes)
        .map_err(error(Stage::Manifest, &target_dir.join(&manifest_name)))?;
    let deleted = match file::retain(&target_dir, keep) {
        Ok(deleted) => deleted,
        Err(error) => {
            tracing::warn!(target_id = view.target(), dir = %target_dir.display(), %error, "delivery retention failed; the next delivery tries again");
            0
        }
    };
    Ok(Delivered {
        data,
        manifest: manifest_path,
        bytes: encoded.bytes.len() as u64 + manifest_bytes.len() as u64,
        deleted,
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(
            hex(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
