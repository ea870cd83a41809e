//! The checkpoint record's format, in every version a fleet may run side by side.
//!
//! Key: the target id. Value: the last event id Kafka holds together with every earlier event
//! of the target, as UTF-8 — the same in every format version, so any worker resumes from any
//! record. Headers say who wrote it:
//! - `sluice-checkpoint-format`: the format version ([`CHECKPOINT_FORMAT`], 1 today). A record
//!   without it is format 0 (written before owners were stamped: epoch 0, no owner). A newer
//!   version is read the same way (its value keeps its meaning); headers it adds are ignored.
//! - `sluice-owner-epoch`: the epoch of the run that wrote it. A worker that starts a target
//!   takes the highest epoch it read for that target plus one, so a later owner's records carry
//!   a higher epoch than any earlier owner's, and a zombie's late record is recognised by its
//!   lower epoch.
//! - `sluice-owner`: which worker process wrote it (for operators and for a worker to tell its
//!   own records from others'); never a secret.
//! - `sluice-handover` (optional, see [`Mark`]): the record's part in a planned handover:
//!   `offer` (the owner lost the target's partition and keeps streaming until a new owner
//!   claims it), `claim` (a new owner takes it over: the old owner stops) and `release` (the old
//!   owner's final checkpoint after a claim: the new owner resumes from it). A reader that does
//!   not know the header reads the record as a plain checkpoint, which it still is.
//!
//! What it must NOT do: decide what a lower or higher epoch means (the worker does), or touch
//! Kafka.

use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};

/// The checkpoint format this build writes.
pub const CHECKPOINT_FORMAT: u32 = 1;
/// Header naming the checkpoint format version.
pub const FORMAT_HEADER: &str = "sluice-checkpoint-format";
/// Header carrying the writer's owner epoch.
pub const EPOCH_HEADER: &str = "sluice-owner-epoch";
/// Header naming the writing worker process.
pub const OWNER_HEADER: &str = "sluice-owner";
/// Header naming the record's part in a planned handover.
pub const HANDOVER_HEADER: &str = "sluice-handover";

/// A checkpoint record's part in a planned handover between two workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mark {
    /// A checkpoint, nothing more.
    #[default]
    Plain,
    /// The owner's partition was revoked: it keeps streaming the target until a claim.
    Offer,
    /// A new owner claims the target (its run's epoch is above the offer's).
    Claim,
    /// The old owner stopped after a claim: its final checkpoint.
    Release,
}

impl Mark {
    /// The header value (`None` for [`Mark::Plain`], which has no header).
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Mark::Plain => None,
            Mark::Offer => Some("offer"),
            Mark::Claim => Some("claim"),
            Mark::Release => Some("release"),
        }
    }

    /// Reads a header value; an unknown one is [`Mark::Plain`] (a newer format's mark).
    fn parse(value: Option<&[u8]>) -> Mark {
        match value {
            Some(b"offer") => Mark::Offer,
            Some(b"claim") => Mark::Claim,
            Some(b"release") => Mark::Release,
            _ => Mark::Plain,
        }
    }
}

/// Who writes a checkpoint: the run's owner epoch and the worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The owner epoch of the target's run.
    pub epoch: u64,
    /// The worker process (its fleet instance id or host name, and its process id).
    pub owner: Arc<str>,
    /// The record's part in a handover.
    pub mark: Mark,
}

impl Stamp {
    /// The record headers of this stamp, in the current format.
    pub fn headers(&self) -> OwnedHeaders {
        let format = CHECKPOINT_FORMAT.to_string();
        let epoch = self.epoch.to_string();
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: FORMAT_HEADER,
                value: Some(format.as_bytes()),
            })
            .insert(Header {
                key: EPOCH_HEADER,
                value: Some(epoch.as_bytes()),
            })
            .insert(Header {
                key: OWNER_HEADER,
                value: Some(self.owner.as_bytes()),
            });
        match self.mark.as_str() {
            Some(mark) => headers.insert(Header {
                key: HANDOVER_HEADER,
                value: Some(mark.as_bytes()),
            }),
            None => headers,
        }
    }
}

/// Where a target resumes, as the checkpoint topic says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The event id to resume after.
    pub event_id: String,
    /// The highest owner epoch any of the target's records carried (0: none was stamped).
    pub epoch: u64,
    /// An offer of a planned handover not yet claimed: the owner named here streams the
    /// target still, and stops once a new owner's claim lands.
    pub offered_by: Option<Offer>,
}

/// An owner that offered a target in a planned handover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The offering run's epoch.
    pub epoch: u64,
    /// The offering worker process.
    pub owner: String,
}

impl Resume {
    /// The epoch of a new run of the target: above every epoch read.
    pub fn next_epoch(&self) -> u64 {
        self.epoch.saturating_add(1)
    }
}

/// One checkpoint record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint<'a> {
    /// The event id.
    pub event_id: &'a str,
    /// The format version (0: no format header).
    pub format: u32,
    /// The owner epoch (0 when the record has none).
    pub epoch: u64,
    /// The writing worker, when stamped.
    pub owner: Option<&'a str>,
    /// Its part in a handover.
    pub mark: Mark,
}

/// Why a checkpoint record cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointFormatError {
    /// The value is not UTF-8.
    #[error("the checkpoint value is not utf-8")]
    ValueNotUtf8,
    /// A header the format defines has a value that does not parse.
    #[error("checkpoint header {header} is not a number or not utf-8")]
    BadHeader {
        /// The header's name.
        header: &'static str,
    },
}

impl CheckpointFormatError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckpointFormatError::ValueNotUtf8 => "value_not_utf8",
            CheckpointFormatError::BadHeader { .. } => "bad_header",
        }
    }
}

/// Decodes a checkpoint record from its value and headers (name, value) in any format version.
pub fn decode<'a>(
    value: &'a [u8],
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Result<StoredCheckpoint<'a>, CheckpointFormatError> {
    let event_id = std::str::from_utf8(value).map_err(|_| CheckpointFormatError::ValueNotUtf8)?;
    let mut stored = StoredCheckpoint {
        event_id,
        format: 0,
        epoch: 0,
        owner: None,
        mark: Mark::Plain,
    };
    for (name, value) in headers {
        match name {
            FORMAT_HEADER => stored.format = number(FORMAT_HEADER, value)?,
            EPOCH_HEADER => stored.epoch = number(EPOCH_HEADER, value)?,
            OWNER_HEADER => {
                stored.owner = value.and_then(|v| std::str::from_utf8(v).ok());
            }
            HANDOVER_HEADER => stored.mark = Mark::parse(value),
            _ => {}
        }
    }
    Ok(stored)
}

fn number<T: std::str::FromStr>(
    header: &'static str,
    value: Option<&[u8]>,
) -> Result<T, CheckpointFormatError> {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or(CheckpointFormatError::BadHeader { header })
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn a_record_without_headers_is_format_0_with_epoch_0() {
        let stored = decode(b"ev-41", []).expect("decodes");
        assert_eq!(
            stored,
            StoredCheckpoint {
                event_id: "ev-41",
                format: 0,
                epoch: 0,
                owner: None,
                mark: Mark::Plain,
            }
        );
    }

    #[test]
    fn a_stamp_round_trips_through_its_headers() {
        let stamp = Stamp {
            epoch: 7,
            owner: Arc::from("worker-1#42"),
            mark: Mark::Plain,
        };
        let headers = stamp.headers();
        let pairs: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|h| (h.key, h.value)).collect();
        let stored = decode(b"900", pairs).expect("decodes");
        assert_eq!(stored.format, CHECKPOINT_FORMAT);
        assert_eq!(stored.epoch, 7);
        assert_eq!(stored.owner, Some("worker-1#42"));
        assert_eq!(stored.event_id, "900");
        assert_eq!(stored.mark, Mark::Plain);
    }

    #[test]
    fn a_handover_mark_round_trips_and_an_unknown_one_reads_as_plain() {
        for mark in [Mark::Offer, Mark::Claim, Mark::Release] {
            let stamp = Stamp {
                epoch: 2,
                owner: Arc::from("w#1"),
                mark,
            };
            let headers = stamp.headers();
            let pairs: Vec<(&str, Option<&[u8]>)> =
                headers.iter().map(|h| (h.key, h.value)).collect();
            assert_eq!(decode(b"5", pairs).expect("decodes").mark, mark);
        }
        let unknown: [(&str, Option<&[u8]>); 1] = [(HANDOVER_HEADER, Some(b"hand-wave"))];
        assert_eq!(decode(b"5", unknown).expect("decodes").mark, Mark::Plain);
    }

    #[test]
    fn a_newer_format_is_read_by_its_value_and_known_headers() {
        let headers: [(&str, Option<&[u8]>); 3] = [
            (FORMAT_HEADER, Some(b"2")),
            (EPOCH_HEADER, Some(b"3")),
            ("sluice-handover-from", Some(b"55")),
        ];
        let stored = decode(b"60", headers).expect("decodes");
        assert_eq!((stored.format, stored.epoch, stored.event_id), (2, 3, "60"));
    }

    #[test]
    fn a_bad_epoch_or_value_is_named() {
        let headers: [(&str, Option<&[u8]>); 1] = [(EPOCH_HEADER, Some(b"seven"))];
        assert_eq!(
            decode(b"1", headers),
            Err(CheckpointFormatError::BadHeader {
                header: EPOCH_HEADER
            })
        );
        assert_eq!(
            decode(&[0xff, 0xfe], []),
            Err(CheckpointFormatError::ValueNotUtf8)
        );
    }

    #[test]
    fn the_next_run_takes_an_epoch_above_every_one_read() {
        let resume = Resume {
            event_id: "1".into(),
            epoch: 4,
            offered_by: None,
        };
        assert_eq!(resume.next_epoch(), 5);
    }
}
