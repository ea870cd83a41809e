//! The Kafka record for one SSE event: key, value and headers. Pure, no I/O.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_config::{RecordKey, TargetId};
use sluice_sse::Event;

/// The header names Sluice puts on every event record.
pub mod headers {
    /// The SSE event id (`id:` field in force at dispatch; empty when none).
    pub const SSE_ID: &str = "sse.id";
    /// The SSE event type (`message` when the stream named none).
    pub const SSE_EVENT: &str = "sse.event";
    /// The target id.
    pub const TARGET: &str = "sluice.target";
    /// When the worker received the event: unix time in milliseconds, as a decimal string.
    pub const RECEIVED_AT: &str = "sluice.received_at";
    /// The connection generation of the target (1 for the first connection), decimal.
    pub const CONNECTION: &str = "sluice.connection";
    /// The per-target sequence number from the checkpoint tracker, decimal.
    pub const SEQ: &str = "sluice.seq";
}

/// What the worker knows about an event besides the event itself.
#[derive(Debug, Clone, Copy)]
pub struct RecordMeta<'a> {
    /// The target the event came from.
    pub target: &'a TargetId,
    /// When the event was received (read by the caller; this module reads no clock).
    pub received_at: SystemTime,
    /// The connection generation the event arrived on.
    pub connection: u64,
    /// The per-target sequence number, from [`crate::CheckpointTracker::sent`].
    pub seq: u64,
}

/// The parts of one Kafka record, ready for the producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record key.
    pub key: Vec<u8>,
    /// The event's `data` bytes exactly as received.
    pub value: Bytes,
    /// Header names (see [`headers`]) and values, in a fixed order.
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

impl Record {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Why no record key could be taken from an event's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is a JSON Pointer but the data is not JSON.
    #[error("event data is not json: {reason}")]
    NotJson {
        /// The JSON parser's message.
        reason: String,
    },
    /// The JSON Pointer names nothing in the data.
    #[error("json pointer {pointer:?} is missing in the event data")]
    PointerMissing {
        /// The pointer.
        pointer: String,
    },
    /// The JSON Pointer names something other than a string or a number.
    #[error("json pointer {pointer:?} names a {found}, not a string or number")]
    NotScalar {
        /// The pointer.
        pointer: String,
        /// The JSON type found there.
        found: &'static str,
    },
}

impl KeyError {
    /// A bounded label for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyError::NotJson { .. } => "not_json",
            KeyError::PointerMissing { .. } => "pointer_missing",
            KeyError::NotScalar { .. } => "not_scalar",
        }
    }

    /// Whether sending the same event again could help: never, the data decides.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Builds the record for `event` with the key chosen by `key`.
///
/// The key is the target id, or the string (its characters, unquoted) or number (its JSON text)
/// at the JSON Pointer in the event's data.
pub fn build_record(
    event: &Event,
    key: &RecordKey,
    meta: &RecordMeta<'_>,
) -> Result<Record, KeyError> {
    let key = match key {
        RecordKey::Target => meta.target.as_str().as_bytes().to_vec(),
        RecordKey::Pointer(pointer) => pointer_key(event.data.as_bytes(), pointer)?,
    };
    let received_at_ms = meta
        .received_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let headers = vec![
        (headers::SSE_ID, event.id.as_bytes().to_vec()),
        (headers::SSE_EVENT, event.event.as_bytes().to_vec()),
        (headers::TARGET, meta.target.as_str().as_bytes().to_vec()),
        (
            headers::RECEIVED_AT,
            received_at_ms.to_string().into_bytes(),
        ),
        (
            headers::CONNECTION,
            meta.connection.to_string().into_bytes(),
        ),
        (headers::SEQ, meta.seq.to_string().into_bytes()),
    ];
    Ok(Record {
        key,
        value: event.data.clone().into_bytes(),
        headers,
    })
}

fn pointer_key(data: &[u8], pointer: &str) -> Result<Vec<u8>, KeyError> {
    let value: serde_json::Value = serde_json::from_slice(data).map_err(|e| KeyError::NotJson {
        reason: e.to_string(),
    })?;
    let missing = || KeyError::PointerMissing {
        pointer: pointer.to_owned(),
    };
    let not_scalar = |found| KeyError::NotScalar {
        pointer: pointer.to_owned(),
        found,
    };
    match value.pointer(pointer).ok_or_else(missing)? {
        serde_json::Value::String(s) => Ok(s.as_bytes().to_vec()),
        serde_json::Value::Number(n) => Ok(n.to_string().into_bytes()),
        serde_json::Value::Null => Err(not_scalar("null")),
        serde_json::Value::Bool(_) => Err(not_scalar("bool")),
        serde_json::Value::Array(_) => Err(not_scalar("array")),
        serde_json::Value::Object(_) => Err(not_scalar("object")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use sluice_sse::Text;

    fn event(id: &'static str, data: &'static str) -> Event {
        Event {
            id: Text::from_static(id),
            event: Text::from_static("trade"),
            data: Text::from_static(data),
        }
    }

    fn build(data: &'static str, key: &RecordKey) -> Result<Record, KeyError> {
        let target: TargetId = "binance-btc".parse().unwrap();
        let meta = RecordMeta {
            target: &target,
            received_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            connection: 3,
            seq: 42,
        };
        build_record(&event("e-7", data), key, &meta)
    }

    #[test]
    fn target_key_record_carries_data_unchanged_and_every_header() {
        let data = " {\"p\": 1.50}  not json either ";
        let record = build(data, &RecordKey::Target).unwrap();
        assert_eq!(record.key, b"binance-btc");
        assert_eq!(record.value, data.as_bytes());
        let expected: Vec<(&str, &[u8])> = vec![
            ("sse.id", b"e-7"),
            ("sse.event", b"trade"),
            ("sluice.target", b"binance-btc"),
            ("sluice.received_at", b"1700000000123"),
            ("sluice.connection", b"3"),
            ("sluice.seq", b"42"),
        ];
        let actual: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_slice()))
            .collect();
        assert_eq!(actual, expected);
        assert_eq!(record.header(headers::SEQ), Some(&b"42"[..]));
    }

    #[test]
    fn pointer_key_takes_strings_unquoted_and_numbers_as_json_text() {
        let cases: &[(&str, &str, &[u8])] = &[
            (r#"{"s":{"sym":"BTCUSDT"}}"#, "/s/sym", b"BTCUSDT"),
            (r#"{"id":12345}"#, "/id", b"12345"),
            (r#"{"id":-1.5}"#, "/id", b"-1.5"),
            (r#"[{"k":"a"},{"k":"b"}]"#, "/1/k", b"b"),
            (r#""whole""#, "", b"whole"),
        ];
        for (data, pointer, expected) in cases {
            let record = build(data, &RecordKey::Pointer((*pointer).to_owned())).unwrap();
            assert_eq!(record.key, *expected, "pointer {pointer} in {data}");
            assert_eq!(record.value, data.as_bytes());
        }
    }

    #[test]
    fn pointer_key_reports_bad_data_with_a_typed_error() {
        let cases: &[(&str, &str, &str)] = &[
            ("not json", "/id", "not_json"),
            ("", "/id", "not_json"),
            (r#"{"id":1}"#, "/missing", "pointer_missing"),
            (r#"{"id":1}"#, "id", "pointer_missing"),
            (r#"{"id":null}"#, "/id", "not_scalar"),
            (r#"{"id":{"a":1}}"#, "/id", "not_scalar"),
            (r#"{"id":[1]}"#, "/id", "not_scalar"),
            (r#"{"id":true}"#, "/id", "not_scalar"),
        ];
        for (data, pointer, kind) in cases {
            let error = build(data, &RecordKey::Pointer((*pointer).to_owned())).unwrap_err();
            assert_eq!(error.kind(), *kind, "pointer {pointer} in {data}: {error}");
            assert!(!error.is_retryable());
        }
    }
}
