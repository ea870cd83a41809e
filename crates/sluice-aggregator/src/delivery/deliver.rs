//! One delivery of one state version: [`prepare`] encodes it (the data file and its manifest,
//! in memory), [`write_dir`] writes both into a directory (atomically, `file`) and applies
//! retention; the S3 path is `s3`. Preparing is CPU-bound and the directory write blocking: run
//! both on `spawn_blocking`. Nothing here touches the target's cell or its lock: it gets the
//! version.

use std::path::Path;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use sluice_config::{Column, DeliveryFormat};

use super::file::{self, MANIFEST_SUFFIX};
use super::format;
use crate::versions::StateView;

/// Why a delivery was not written.
#[derive(Debug, thiserror::Error)]
#[error("{stage} {path}: {source}")]
pub struct DeliveryError {
    /// Where it failed.
    pub stage: Stage,
    /// The file, directory or object (never a credential).
    pub path: String,
    /// The OS's, the encoder's or the object store's error.
    pub source: std::io::Error,
}

/// The step of a delivery that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Setting up the destination: creating the target's directory, or reading the S3
    /// credentials and building the client.
    CreateDir,
    /// Encoding the state (the Parquet writer).
    Encode,
    /// Writing (or syncing, renaming, uploading) the data file.
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
            Stage::CreateDir => "destination",
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
            Stage::CreateDir => "setting up the delivery destination",
            Stage::Encode => "encoding the delivery of",
            Stage::Data => "writing the delivery file",
            Stage::Manifest => "writing the delivery manifest",
            Stage::Task => "running the delivery into",
        })
    }
}

impl DeliveryError {
    /// A bounded label for logs. Every kind but encoding is retried: a full or read-only disk,
    /// a missing bucket or a refused credential may be fixed meanwhile.
    pub fn kind(&self) -> &'static str {
        self.stage.as_str()
    }

    pub(super) fn new(
        stage: Stage,
        path: impl Into<String>,
        source: impl std::fmt::Display,
    ) -> Self {
        DeliveryError {
            stage,
            path: path.into(),
            source: std::io::Error::other(source.to_string()),
        }
    }
}

/// What was written.
#[derive(Debug)]
pub struct Delivered {
    /// The data file (a path, or `s3://bucket/key`).
    pub data: String,
    /// Its manifest.
    pub manifest: String,
    /// Bytes of both files.
    pub bytes: u64,
    /// Older deliveries deleted by retention.
    pub deleted: usize,
}

/// A delivery ready to be written: both files' names and bytes.
#[derive(Debug)]
pub struct Prepared {
    /// The target (the directory, or the object names' last prefix segment).
    pub target: String,
    /// The data file's name.
    pub data_name: String,
    /// Its bytes.
    pub data: bytes::Bytes,
    /// The manifest's name.
    pub manifest_name: String,
    /// Its bytes.
    pub manifest: bytes::Bytes,
}

impl Prepared {
    /// Bytes of both files.
    pub fn bytes(&self) -> u64 {
        (self.data.len() + self.manifest.len()) as u64
    }
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
    /// With configured columns: values written as null, not of their column's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    mismatched: Option<u64>,
    bytes: u64,
    sha256: String,
    /// When the state last changed.
    as_of: String,
    /// When the delivery was written.
    delivered_at: String,
}

/// Encodes `view` in `format` (with the configured `columns`) with its manifest, named for
/// `now`.
pub fn prepare(
    view: &StateView,
    format: DeliveryFormat,
    columns: Option<&[Column]>,
    now: SystemTime,
) -> Result<Prepared, DeliveryError> {
    let encoded = format::encode(&view.entities, format, columns)
        .map_err(|e| DeliveryError::new(Stage::Encode, view.target(), e))?;
    let stem = file::stem(now, view.version, view.change_seq);
    let data_name = format!("{stem}.{}", format.as_str());
    let manifest = Manifest {
        target: view.target(),
        file: &data_name,
        format: format.as_str(),
        version: view.version,
        change_seq: view.change_seq,
        kafka: view.kafka(),
        rows: encoded.rows,
        mismatched: encoded.mismatched,
        bytes: encoded.bytes.len() as u64,
        sha256: hex(&Sha256::digest(&encoded.bytes)),
        as_of: view.as_of(),
        delivered_at: humantime::format_rfc3339_millis(now).to_string(),
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    manifest_bytes.push(b'\n');
    Ok(Prepared {
        target: view.target().to_owned(),
        manifest_name: format!("{stem}{MANIFEST_SUFFIX}"),
        data_name,
        data: encoded.bytes.into(),
        manifest: manifest_bytes.into(),
    })
}

/// Writes `prepared` into `dir/<target>/`, data then manifest, then keeps the newest `keep`
/// there. Retention problems are logged, not failures (the delivery itself is complete).
pub fn write_dir(dir: &Path, prepared: &Prepared, keep: usize) -> Result<Delivered, DeliveryError> {
    let target_dir = dir.join(&prepared.target);
    let error = |stage, path: &Path| {
        let path = path.display().to_string();
        move |source| DeliveryError {
            stage,
            path,
            source,
        }
    };
    std::fs::create_dir_all(&target_dir).map_err(error(Stage::CreateDir, &target_dir))?;
    let data = file::write_atomic(&target_dir, &prepared.data_name, &prepared.data)
        .map_err(error(Stage::Data, &target_dir.join(&prepared.data_name)))?;
    let manifest =
        file::write_atomic(&target_dir, &prepared.manifest_name, &prepared.manifest).map_err(
            error(Stage::Manifest, &target_dir.join(&prepared.manifest_name)),
        )?;
    let deleted = match file::retain(&target_dir, keep) {
        Ok(deleted) => deleted,
        Err(error) => {
            tracing::warn!(target_id = %prepared.target, dir = %target_dir.display(), %error, "delivery retention failed; the next delivery tries again");
            0
        }
    };
    Ok(Delivered {
        data: data.display().to_string(),
        manifest: manifest.display().to_string(),
        bytes: prepared.bytes(),
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
