//! Per-connection stream options and faults: parsed from the query string or from the admin
//! endpoint's JSON into [`RawParams`], then validated into [`StreamOptions`] in one place.
//!
//! | parameter | effect |
//! |---|---|
//! | `last_event_id=N` | same as the `Last-Event-ID` header (the header wins) |
//! | `heartbeat=1s` | heartbeat interval for this connection (`0` disables) |
//! | `firehose=1` | push deltas as fast as the client reads (see the crate docs) |
//! | `close_after_events=N` | end the response cleanly after N events |
//! | `close_after=2s` | end the response cleanly after a duration |
//! | `reset_after_events=N` | abort the TCP connection with an RST after N events |
//! | `stall_after_events=N` | after N events send nothing more, not even heartbeats |
//! | `max_age=5s` | cut the TCP connection (FIN mid-body) at this age, like a proxy TTL |
//! | `status=500` (204, 4xx, 5xx) | answer this status instead of a stream |
//! | `retry_after=2` | with `status`: the `Retry-After` header, in seconds |
//! | `redirect=N` | answer 307 to the same URL with `redirect=N-1` (dropped at 0) |
//! | `content_type=text/plain` | stream with this `Content-Type` instead |
//! | `malformed_after_events=N` | after N events, one event with non-JSON data and a bad line |
//! | `oversized_after_events=N` | after N events, one event whose data line is `oversized_bytes` |
//! | `oversized_bytes=2000000` | size of that data line (default 1 MiB) |
//!
//! Durations take humantime (`500ms`, `2s`) or a bare number of seconds.

use std::collections::VecDeque;
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// Default size of the oversized event's data line.
pub const DEFAULT_OVERSIZED_BYTES: usize = 1 << 20;

/// A query or JSON value before validation: the query string only has strings, JSON has
/// numbers and booleans too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// `true` / `false`.
    Bool(bool),
    /// A non-negative integer.
    Num(u64),
    /// Any text.
    Str(String),
}

/// Stream parameters as written, before validation (see the module docs for their meaning).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firehose: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_after_events: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_after: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_after_events: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall_after_events: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed_after_events: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oversized_after_events: Option<Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oversized_bytes: Option<Scalar>,
}

impl RawParams {
    /// Parses a query string (without `?`).
    pub fn from_query(query: &str) -> Result<Self, String> {
        serde_urlencoded::from_str(query).map_err(|e| e.to_string())
    }

    /// The query string that reproduces these parameters.
    pub fn to_query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    /// Fills every parameter not set here from `other` (so `self` wins).
    pub fn or(self, other: RawParams) -> RawParams {
        RawParams {
            last_event_id: self.last_event_id.or(other.last_event_id),
            heartbeat: self.heartbeat.or(other.heartbeat),
            firehose: self.firehose.or(other.firehose),
            close_after_events: self.close_after_events.or(other.close_after_events),
            close_after: self.close_after.or(other.close_after),
            reset_after_events: self.reset_after_events.or(other.reset_after_events),
            stall_after_events: self.stall_after_events.or(other.stall_after_events),
            max_age: self.max_age.or(other.max_age),
            status: self.status.or(other.status),
            retry_after: self.retry_after.or(other.retry_after),
            redirect: self.redirect.or(other.redirect),
            content_type: self.content_type.or(other.content_type),
            malformed_after_events: self.malformed_after_events.or(other.malformed_after_events),
            oversized_after_events: self.oversized_after_events.or(other.oversized_after_events),
            oversized_bytes: self.oversized_bytes.or(other.oversized_bytes),
        }
    }

    /// Validates every parameter, reporting all problems at once.
    pub fn validate(&self) -> Result<StreamOptions, Vec<String>> {
        let mut v = Validator::default();
        let status = v.count("status", &self.status).and_then(|code| {
            match u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(s)
                    if s == StatusCode::NO_CONTENT
                        || s.is_client_error()
                        || s.is_server_error() =>
                {
                    Some(s)
                }
                _ => {
                    v.problems
                        .push(format!("status: must be 204, 4xx or 5xx, got {code}"));
                    None
                }
            }
        });
        let redirect = v.count("redirect", &self.redirect).map_or(0, |n| {
            u32::try_from(n).unwrap_or_else(|_| {
                v.problems.push(format!("redirect: too many hops ({n})"));
                0
            })
        });
        let oversized_bytes = v
            .count("oversized_bytes", &self.oversized_bytes)
            .map_or(DEFAULT_OVERSIZED_BYTES, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            });
        let options = StreamOptions {
            last_event_id: self.last_event_id.as_ref().map(|s| match s {
                Scalar::Bool(b) => b.to_string(),
                Scalar::Num(n) => n.to_string(),
                Scalar::Str(s) => s.clone(),
            }),
            heartbeat: v.duration("heartbeat", &self.heartbeat),
            firehose: v.flag("firehose", &self.firehose),
            close_after_events: v.count("close_after_events", &self.close_after_events),
            close_after: v.duration("close_after", &self.close_after),
            reset_after_events: v.count("reset_after_events", &self.reset_after_events),
            stall_after_events: v.count("stall_after_events", &self.stall_after_events),
            max_age: v.duration("max_age", &self.max_age),
            status,
            retry_after: v.count("retry_after", &self.retry_after),
            redirect,
            content_type: v.text("content_type", &self.content_type),
            malformed_after_events: v.count("malformed_after_events", &self.malformed_after_events),
            oversized_after_events: v.count("oversized_after_events", &self.oversized_after_events),
            oversized_bytes,
        };
        if let Some(ct) = &options.content_type {
            if http::HeaderValue::from_str(ct).is_err() {
                v.problems
                    .push("content_type: not a valid header value".to_owned());
            }
        }
        if v.problems.is_empty() {
            Ok(options)
        } else {
            Err(v.problems)
        }
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<String>,
}

impl Validator {
    fn count(&mut self, field: &str, value: &Option<Scalar>) -> Option<u64> {
        match value.as_ref()? {
            Scalar::Num(n) => Some(*n),
            Scalar::Str(s) => match s.parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problems.push(format!(
                        "{field}: expected a non-negative integer, got {s:?}"
                    ));
                    None
                }
            },
            Scalar::Bool(b) => {
                self.problems
                    .push(format!("{field}: expected a non-negative integer, got {b}"));
                None
            }
        }
    }

    fn duration(&mut self, field: &str, value: &Option<Scalar>) -> Option<Duration> {
        match value.as_ref()? {
            Scalar::Num(n) => Some(Duration::from_secs(*n)),
            Scalar::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok().map(Duration::from_secs)
            }
            Scalar::Str(s) => match humantime::parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.problems.push(format!(
                        "{field}: expected a duration like 2s, got {s:?} ({e})"
                    ));
                    None
                }
            },
            Scalar::Bool(b) => {
                self.problems
                    .push(format!("{field}: expected a duration like 2s, got {b}"));
                None
            }
        }
    }

    fn flag(&mut self, field: &str, value: &Option<Scalar>) -> bool {
        match value {
            None => false,
            Some(Scalar::Bool(b)) => *b,
            Some(Scalar::Num(n)) if *n <= 1 => *n == 1,
            Some(Scalar::Str(s)) if matches!(s.as_str(), "1" | "true" | "") => true,
            Some(Scalar::Str(s)) if matches!(s.as_str(), "0" | "false") => false,
            Some(other) => {
                self.problems.push(format!(
                    "{field}: expected 1, 0, true or false, got {other:?}"
                ));
                false
            }
        }
    }

    fn text(&mut self, field: &str, value: &Option<Scalar>) -> Option<String> {
        match value.as_ref()? {
            Scalar::Str(s) => Some(s.clone()),
            other => {
                self.problems
                    .push(format!("{field}: expected text, got {other:?}"));
                None
            }
        }
    }
}

/// Validated per-connection options of `GET /v1/stream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct StreamOptions {
    pub last_event_id: Option<String>,
    pub heartbeat: Option<Duration>,
    pub firehose: bool,
    pub close_after_events: Option<u64>,
    pub close_after: Option<Duration>,
    pub reset_after_events: Option<u64>,
    pub stall_after_events: Option<u64>,
    pub max_age: Option<Duration>,
    pub status: Option<StatusCode>,
    pub retry_after: Option<u64>,
    pub redirect: u32,
    pub content_type: Option<String>,
    pub malformed_after_events: Option<u64>,
    pub oversized_after_events: Option<u64>,
    pub oversized_bytes: usize,
}

/// What the stream does right after its `n`th event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterEvent {
    /// Emit the malformed event, then go on.
    Malformed,
    /// Emit the oversized event, then go on.
    Oversized(usize),
    /// End the response cleanly.
    Close,
    /// Abort the connection with an RST.
    Reset,
    /// Send nothing more.
    Stall,
}

impl StreamOptions {
    /// Actions due right after the `n`th event of this connection, side effects first.
    pub(crate) fn after_event(&self, n: u64, out: &mut Vec<AfterEvent>) {
        if self.malformed_after_events == Some(n) {
            out.push(AfterEvent::Malformed);
        }
        if self.oversized_after_events == Some(n) {
            out.push(AfterEvent::Oversized(self.oversized_bytes));
        }
        if self.reset_after_events == Some(n) {
            out.push(AfterEvent::Reset);
        } else if self.stall_after_events == Some(n) {
            out.push(AfterEvent::Stall);
        } else if self.close_after_events == Some(n) {
            out.push(AfterEvent::Close);
        }
    }

    /// Whether any fault needs checking after each event (the fast path skips it otherwise).
    pub(crate) fn has_event_faults(&self) -> bool {
        self.malformed_after_events.is_some()
            || self.oversized_after_events.is_some()
            || self.reset_after_events.is_some()
            || self.stall_after_events.is_some()
            || self.close_after_events.is_some()
    }
}

/// The body of `POST /admin/faults`: `faults` applied to each of the next `count` stream
/// connections (default 1), where the connection's own query parameters do not say otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuedFaults {
    /// How many connections this applies to; default 1.
    #[serde(default = "one")]
    pub count: u32,
    /// The faults, with the same names as the query parameters.
    pub faults: RawParams,
}

fn one() -> u32 {
    1
}

/// One-shot faults waiting for the next stream connections, first queued first used.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    entries: VecDeque<QueuedFaults>,
}

impl FaultQueue {
    pub fn push(&mut self, entry: QueuedFaults) {
        if entry.count > 0 {
            self.entries.push_back(entry);
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn pending(&self) -> Vec<QueuedFaults> {
        self.entries.iter().cloned().collect()
    }

    /// Takes the faults for one connection, if any are queued.
    pub fn take(&mut self) -> Option<RawParams> {
        let front = self.entries.front_mut()?;
        front.count -= 1;
        let faults = front.faults.clone();
        if front.count == 0 {
            self.entries.pop_front();
        }
        Some(faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_validate_into_options() {
        let raw = RawParams::from_query(
            "close_after_events=5&close_after=2s&max_age=3&status=503&retry_after=2&firehose=1&heartbeat=250ms&redirect=2",
        )
        .expect("parses");
        let o = raw.validate().expect("valid");
        assert_eq!(o.close_after_events, Some(5));
        assert_eq!(o.close_after, Some(Duration::from_secs(2)));
        assert_eq!(o.max_age, Some(Duration::from_secs(3)));
        assert_eq!(o.status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(o.retry_after, Some(2));
        assert!(o.firehose);
        assert_eq!(o.heartbeat, Some(Duration::from_millis(250)));
        assert_eq!(o.redirect, 2);
        assert_eq!(o.oversized_bytes, DEFAULT_OVERSIZED_BYTES);
    }

    #[test]
    fn unknown_parameters_are_rejected() {
        let err = RawParams::from_query("close_afterr=2").expect_err("unknown field");
        assert!(err.contains("close_afterr"), "{err}");
    }

    #[test]
    fn validation_lists_every_bad_parameter() {
        let raw = RawParams::from_query("close_after_events=x&max_age=soon&status=200&firehose=2")
            .expect("parses");
        let problems = raw.validate().expect_err("invalid");
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn json_faults_accept_numbers_and_strings() {
        let q: QueuedFaults = serde_json::from_str(
            r#"{"count":2,"faults":{"close_after_events":3,"close_after":"1s","firehose":true}}"#,
        )
        .expect("parses");
        let o = q.faults.validate().expect("valid");
        assert_eq!(o.close_after_events, Some(3));
        assert_eq!(o.close_after, Some(Duration::from_secs(1)));
        assert!(o.firehose);
    }

    #[test]
    fn queued_faults_apply_to_the_next_count_connections() {
        let mut q = FaultQueue::default();
        let faults = RawParams {
            status: Some(Scalar::Num(500)),
            ..RawParams::default()
        };
        q.push(QueuedFaults {
            count: 2,
            faults: faults.clone(),
        });
        assert_eq!(q.take(), Some(faults.clone()));
        assert_eq!(q.take(), Some(faults));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn query_wins_over_queued_faults_and_round_trips() {
        let query = RawParams::from_query("status=503").expect("parses");
        let queued = RawParams::from_query("status=500&retry_after=4").expect("parses");
        let merged = query.or(queued);
        let again = RawParams::from_query(&merged.to_query()).expect("parses");
        let o = again.validate().expect("valid");
        assert_eq!(o.status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(o.retry_after, Some(4));
    }
}
