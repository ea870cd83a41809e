//! The Kafka record for one SSE event: key, value and headers. Pure, no I/O.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Only on the first record published from each connection generation: the `Last-Event-ID`
    /// the connection was opened with, empty when it sent none (it did not resume, so events
    /// may have been missed between the generations: a consumer keeping state must re-sync).
    pub const RESUME: &str = "sluice.resume";

    // CloudEvents Kafka protocol binding, binary content mode: attributes as `ce_` headers with
    // UTF-8 string values. Only on targets with `cloudevents: true`.

    /// CloudEvents `specversion`: always `1.0`.
    pub const CE_SPECVERSION: &str = "ce_specversion";
    /// CloudEvents `id`: `<target id>:<sse.id>` when the event has an SSE id (a replayed
    /// duplicate keeps its `ce_id`, so consumers can drop it by `ce_source` + `ce_id`), else
    /// `<target id>:<sluice.connection>:<sluice.seq>`, which is unique only within one worker
    /// process (both counters restart with the process).
    pub const CE_ID: &str = "ce_id";
    /// CloudEvents `source`: `urn:sluice:target:<target id>` (never the URL: it may carry secrets).
    pub const CE_SOURCE: &str = "ce_source";
    /// CloudEvents `type`: the SSE event type (same as `sse.event`).
    pub const CE_TYPE: &str = "ce_type";
    /// CloudEvents `time`: when the worker received the event, RFC 3339 UTC with milliseconds
    /// (`2023-11-14T22:13:20.123Z`).
    pub const CE_TIME: &str = "ce_time";
}

/// The CloudEvents `specversion` Sluice writes.
pub const CE_SPECVERSION_VALUE: &str = "1.0";

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
    /// `Some(last event id sent)` on the first record of a connection generation (see
    /// [`headers::RESUME`]); `None` on every other record.
    pub resume: Option<&'a str>,
    /// Whether to add the CloudEvents binary-mode headers (`headers::CE_*`) too.
    pub cloudevents: bool,
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

/// The largest record an event within `limits` can make: its data (the value), a key taken
/// from the data (at most as long), the `sse.id`, `sse.event` and `sluice.resume` headers (each
/// at most a line), and the fixed headers. The producer's `message.max.bytes` and the
/// `max.message.bytes` of the topics Sluice creates are set from it, so an event the parser
/// accepts is one Kafka takes.
pub fn max_record_bytes(limits: sluice_sse::Limits) -> usize {
    /// The other headers (target, times, connection, sequence, CloudEvents ones) and the
    /// record batch's framing, with room to spare.
    const FIXED: usize = 16 * 1024;
    limits
        .max_event_bytes
        .saturating_mul(2)
        .saturating_add(limits.max_line_bytes.saturating_mul(3))
        .saturating_add(FIXED)
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
    let key = record_key(event, key, meta)?.into_owned();
    let mut headers = Vec::with_capacity(if meta.cloudevents { 12 } else { 7 });
    for_each_header(event, meta, |name, value| {
        headers.push((name, value.to_vec()))
    });
    Ok(Record {
        key,
        value: event.data.clone().into_bytes(),
        headers,
    })
}

/// The key of the record for `event` (see [`build_record`]); borrowed when it is the target id.
pub fn record_key<'a>(
    event: &Event,
    key: &RecordKey,
    meta: &RecordMeta<'a>,
) -> Result<Cow<'a, [u8]>, KeyError> {
    match key {
        RecordKey::Target => Ok(Cow::Borrowed(meta.target.as_str().as_bytes())),
        RecordKey::Pointer(pointer) => pointer_key(event.data.as_bytes(), pointer).map(Cow::Owned),
    }
}

/// Calls `f` with each header of the record for `event`, in [`Record::headers`] order, without
/// building the record: a producer can copy them straight into its own headers.
pub fn for_each_header(
    event: &Event,
    meta: &RecordMeta<'_>,
    mut f: impl FnMut(&'static str, &[u8]),
) {
    let received_at_ms = meta
        .received_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut digits = itoa::Buffer::new();
    f(headers::SSE_ID, event.id.as_bytes());
    f(headers::SSE_EVENT, event.event.as_bytes());
    f(headers::TARGET, meta.target.as_str().as_bytes());
    f(
        headers::RECEIVED_AT,
        digits
            .format(u64::try_from(received_at_ms).unwrap_or(u64::MAX))
            .as_bytes(),
    );
    f(
        headers::CONNECTION,
        digits.format(meta.connection).as_bytes(),
    );
    f(headers::SEQ, digits.format(meta.seq).as_bytes());
    if let Some(resume) = meta.resume {
        f(headers::RESUME, resume.as_bytes());
    }
    if meta.cloudevents {
        let target = meta.target.as_str();
        let ce_id = if event.id.is_empty() {
            format!("{target}:{}:{}", meta.connection, meta.seq)
        } else {
            format!("{target}:{}", event.id.as_str())
        };
        f(headers::CE_SPECVERSION, CE_SPECVERSION_VALUE.as_bytes());
        f(headers::CE_ID, ce_id.as_bytes());
        f(
            headers::CE_SOURCE,
            format!("urn:sluice:target:{target}").as_bytes(),
        );
        f(headers::CE_TYPE, event.event.as_bytes());
        f(
            headers::CE_TIME,
            rfc3339_millis(meta.received_at).as_bytes(),
        );
    }
}

/// When the worker received the event, as RFC 3339 UTC with millisecond precision
/// (`1970-01-01T00:00:00.000Z`). humantime formats years 1970 to 9999 only (it panics outside
/// them), so a clock outside that range reads as the nearest end.
fn rfc3339_millis(received_at: SystemTime) -> String {
    const LAST: Duration = Duration::from_millis(253_402_300_799_999); // 9999-12-31T23:59:59.999Z
    let at = received_at.clamp(UNIX_EPOCH, UNIX_EPOCH + LAST);
    humantime::format_rfc3339_millis(at).to_string()
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
            resume: None,
            cloudevents: false,
        };
        build_record(&event("e-7", data), key, &meta)
    }

    fn build_ce(id: &'static str) -> Record {
        let target: TargetId = "binance-btc".parse().unwrap();
        let meta = RecordMeta {
            target: &target,
            received_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            connection: 3,
            seq: 42,
            resume: None,
            cloudevents: true,
        };
        build_record(&event(id, "{}"), &RecordKey::Target, &meta).unwrap()
    }

    #[test]
    fn resume_header_only_on_the_record_that_carries_it() {
        let target: TargetId = "binance-btc".parse().unwrap();
        let mut meta = RecordMeta {
            target: &target,
            received_at: UNIX_EPOCH,
            connection: 2,
            seq: 1,
            resume: Some("e-6"),
            cloudevents: false,
        };
        let first = build_record(&event("e-7", "{}"), &RecordKey::Target, &meta).unwrap();
        assert_eq!(first.header(headers::RESUME), Some(&b"e-6"[..]));
        meta.resume = Some("");
        let fresh = build_record(&event("e-7", "{}"), &RecordKey::Target, &meta).unwrap();
        assert_eq!(fresh.header(headers::RESUME), Some(&b""[..]));
        meta.resume = None;
        let later = build_record(&event("e-8", "{}"), &RecordKey::Target, &meta).unwrap();
        assert_eq!(later.header(headers::RESUME), None);
    }

    #[test]
    fn cloudevents_off_adds_no_ce_header() {
        let record = build("{}", &RecordKey::Target).unwrap();
        assert!(
            record.headers.iter().all(|(n, _)| !n.starts_with("ce_")),
            "{:?}",
            record.headers
        );
    }

    #[test]
    fn cloudevents_on_adds_binary_mode_headers_after_the_usual_ones() {
        let record = build_ce("e-7");
        let actual: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_slice()))
            .collect();
        let expected: Vec<(&str, &[u8])> = vec![
            ("sse.id", b"e-7"),
            ("sse.event", b"trade"),
            ("sluice.target", b"binance-btc"),
            ("sluice.received_at", b"1700000000123"),
            ("sluice.connection", b"3"),
            ("sluice.seq", b"42"),
            ("ce_specversion", b"1.0"),
            ("ce_id", b"binance-btc:e-7"),
            ("ce_source", b"urn:sluice:target:binance-btc"),
            ("ce_type", b"trade"),
            ("ce_time", b"2023-11-14T22:13:20.123Z"),
        ];
        assert_eq!(actual, expected);
    }

    #[test]
    fn cloudevents_id_without_an_sse_id_is_connection_and_seq() {
        let record = build_ce("");
        assert_eq!(
            record.header(headers::CE_ID),
            Some(&b"binance-btc:3:42"[..])
        );
    }

    #[test]
    fn rfc3339_millis_formats_known_instants() {
        let cases: &[(u128, &str)] = &[
            (0, "1970-01-01T00:00:00.000Z"),
            (999, "1970-01-01T00:00:00.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (951_868_799_001, "2000-02-29T23:59:59.001Z"),
            (951_868_800_000, "2000-03-01T00:00:00.000Z"),
            (1_709_164_800_000, "2024-02-29T00:00:00.000Z"),
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
            (1_735_689_599_999, "2024-12-31T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ];
        for (ms, expected) in cases {
            let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(*ms).unwrap_or(u64::MAX));
            assert_eq!(rfc3339_millis(at), *expected, "{ms}");
            // Below a millisecond is cut, not rounded.
            let later = at + Duration::from_micros(999);
            assert_eq!(rfc3339_millis(later), *expected, "{ms} + 999 µs");
        }
        // A clock outside humantime's years reads as the nearest end, never a panic.
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(400 * 365 * 86_400 * 100)),
            "9999-12-31T23:59:59.999Z"
        );
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
