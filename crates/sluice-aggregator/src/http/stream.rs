//! `GET /v1/targets/{target}/stream`: the merged changes of one target as SSE. Where a client
//! starts: `Last-Event-ID` (a reconnect: resumes after that change while the target's ring still
//! covers it), else `?since=`: `-1` (the default: the whole state, then changes), `now`
//! (changes only) or a change sequence number (as `Last-Event-ID`). Then one event per change.
//! Once the opening is sent, an `up-to-date` event (id: the change sequence it reflects) says
//! the client holds the current state; a position that can no longer be served (older than the
//! ring, before a whole-state replacement, or ahead of this state's sequence) is answered with
//! a `refetch` event naming the reason, then the whole state.
//!
//! Bounded per client: a client that falls more than [`crate::store::STREAM_BUFFER`] changes behind (it reads
//! slower than the target changes) is sent a final comment saying so and disconnected, to
//! resume with `Last-Event-ID`; it is never sent the whole state again in its place, which would
//! let many slow clients cost a whole serialisation each per lag. The cell's lock is held only
//! to copy pointers out; events are written after it is released, off the async workers.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_merge::Entity;
use tokio::sync::broadcast::error::RecvError;

use super::not_owned;
use super::read::{bad_param, params};
use crate::shared::Shared;
use crate::store::{Cell, Inner, Listener, RingEntry, StreamItem};
use crate::versions::StateView;

/// The comment a lagging client is sent before it is disconnected.
const LAGGED: &str = "disconnected: this client fell more than 1024 changes behind; reconnect \
                      with Last-Event-ID to resume";

/// The `Last-Event-ID` a client sent, when it is a change sequence number; anything else
/// (absent, not UTF-8, negative, not a number, beyond `u64`) is `None`: the whole state.
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Where a client asked to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The whole state, then changes (`since=-1`, the default).
    Whole,
    /// Changes from now on (`since=now`).
    Now,
    /// The changes after this change sequence number (`Last-Event-ID`, or `since=N`).
    After(u64),
}

/// The start a request asks for: a usable `Last-Event-ID` wins (an `EventSource` reconnecting
/// sends it with the URL it first used), else `since`; a bad `since` is a 400 naming it.
fn start_of(headers: &HeaderMap, raw: Option<&str>) -> Result<Start, Box<Response>> {
    let query = params(raw, &["since"])?;
    if let Some(last) = last_event_id(headers) {
        return Ok(Start::After(last));
    }
    match query.get("since").map(String::as_str) {
        None | Some("-1") => Ok(Start::Whole),
        Some("now") => Ok(Start::Now),
        Some(seq) => seq.parse().map(Start::After).map_err(|_| {
            Box::new(bad_param(
                "since",
                "write now, -1 (the whole state) or a change sequence number",
            ))
        }),
    }
}

/// An entity changed since a client's id: the id of its latest change, its key and its
/// current value (`None`: deleted).
type Changed = (u64, Arc<str>, Option<Entity>);

/// Why a client's position cannot be served as changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refetch {
    /// Older than the oldest change the ring keeps.
    Expired,
    /// A whole-state replacement (a fresh base state) came after it.
    Replaced,
    /// Ahead of this state's change sequence (an id of another aggregator's state, or of an
    /// earlier run's).
    Unknown,
}

impl Refetch {
    fn reason(self) -> &'static str {
        match self {
            Refetch::Expired => "expired",
            Refetch::Replaced => "replaced",
            Refetch::Unknown => "unknown_position",
        }
    }
}

/// What a subscriber is sent first, copied out of the cell under its lock.
enum Body {
    /// Nothing to send: the client is current (or there is no state yet).
    Nothing,
    /// The current value of every entity changed since the client's id (`None`: deleted), at
    /// its latest change's id, in id order.
    Changes(Vec<Changed>),
    /// The whole state.
    Full(StateView),
}

/// The opening of a stream: why the client's position was not served (if so), what brings it
/// to the current state, and that state's change sequence (`None`: no state yet).
struct Opening {
    refetch: Option<(Refetch, u64)>,
    body: Body,
    current: Option<u64>,
}

impl Opening {
    /// The opening for `start`. Any id, `u64::MAX` included, is compared without arithmetic
    /// that can overflow.
    fn read(target: &str, inner: &Inner, start: Start) -> Opening {
        if !inner.merger.has_state() {
            return Opening {
                refetch: None,
                body: Body::Nothing,
                current: None,
            };
        }
        let current = inner.merger.change_seq();
        let (refetch, body) = match start {
            Start::Now => (None, Body::Nothing),
            Start::Whole => (None, Body::Full(StateView::capture(target, inner))),
            Start::After(last) if last == current => (None, Body::Nothing),
            Start::After(last) => {
                let covered = last < current
                    && inner
                        .ring
                        .front()
                        .is_some_and(|first| first.seq() <= last.saturating_add(1));
                let why = if last > current {
                    Refetch::Unknown
                } else if !covered {
                    Refetch::Expired
                } else {
                    match changes_since(inner, last) {
                        Some(changes) => {
                            return Opening {
                                refetch: None,
                                body: Body::Changes(changes),
                                current: Some(current),
                            };
                        }
                        None => Refetch::Replaced,
                    }
                };
                (
                    Some((why, last)),
                    Body::Full(StateView::capture(target, inner)),
                )
            }
        };
        Opening {
            refetch,
            body,
            current: Some(current),
        }
    }

    /// The change sequence the client holds once the opening is sent.
    fn sent(&self) -> u64 {
        self.current.unwrap_or(0)
    }

    /// The events (CPU-bound in their size: run off the async workers).
    fn into_events(self) -> VecDeque<Event> {
        let mut events = VecDeque::new();
        if let (Some((why, since)), Some(current)) = (self.refetch, self.current) {
            let data = json!({ "reason": why.reason(), "since": since, "change_seq": current });
            events.push_back(Event::default().event("refetch").data(data.to_string()));
        }
        match self.body {
            Body::Nothing => {}
            Body::Changes(changes) => events.extend(
                changes
                    .iter()
                    .map(|(seq, key, value)| change_event(*seq, key, value.as_ref())),
            ),
            Body::Full(view) => events.push_back(full_event(view)),
        }
        if let Some(current) = self.current {
            events.push_back(
                Event::default()
                    .id(current.to_string())
                    .event("up-to-date")
                    .data(json!({ "change_seq": current }).to_string()),
            );
        }
        events
    }
}

/// The entities changed after `last`, each once at its latest change, with its current value;
/// `None` when a whole-state replacement came since (the client needs the whole state).
fn changes_since(inner: &Inner, last: u64) -> Option<Vec<Changed>> {
    let mut latest: HashMap<&Arc<str>, u64> = HashMap::new();
    for entry in inner.ring.iter().filter(|e| e.seq() > last) {
        match entry {
            RingEntry::Change(seq, key) => {
                latest.insert(key, *seq);
            }
            RingEntry::Full(_) => return None,
        }
    }
    let mut changed: Vec<Changed> = latest
        .into_iter()
        .map(|(key, seq)| (seq, Arc::clone(key), inner.merger.get(key).cloned()))
        .collect();
    changed.sort_unstable_by_key(|(seq, _, _)| *seq);
    Some(changed)
}

/// The whole state as a `state` event with the id of its change sequence.
fn full_event(view: StateView) -> Event {
    let id = view.change_seq().to_string();
    let data = String::from_utf8(view.into_json()).unwrap_or_default();
    Event::default().id(id).event("state").data(data)
}

/// One entity's change as an `upsert` (with the value) or a `delete` event with id `seq`.
fn change_event(seq: u64, key: &str, value: Option<&Entity>) -> Event {
    let (event, data) = match value {
        Some(value) => ("upsert", json!({ "key": key, "value": value })),
        None => ("delete", json!({ "key": key })),
    };
    Event::default()
        .id(seq.to_string())
        .event(event)
        .data(data.to_string())
}

/// Runs `f` off the async workers; `None` if it panicked.
async fn off_workers<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

struct Subscription {
    shared: Arc<Shared>,
    target: String,
    cell: Arc<Cell>,
    listener: Listener,
    sent: u64,
    pending: VecDeque<Event>,
    /// The last event is queued: end the stream once `pending` is sent.
    closing: bool,
}

impl Subscription {
    /// Waits for the next change and queues what it brings; `false` when the stream ends.
    async fn step(&mut self) -> bool {
        let received = tokio::select! {
            _ = self.cell.gone.cancelled() => return false,
            received = self.listener.rx.recv() => received,
        };
        match received {
            Ok(item) if item.seq() <= self.sent => {}
            Ok(StreamItem::Change(change)) => {
                self.sent = change.seq;
                self.pending.push_back(change_event(
                    change.seq,
                    &change.key,
                    change.value.as_ref(),
                ));
            }
            Ok(StreamItem::Full(_)) => {
                let view = {
                    let inner = self.cell.lock();
                    if !inner.merger.has_state() {
                        return true;
                    }
                    StateView::capture(&self.target, &inner)
                };
                self.sent = view.change_seq();
                match off_workers(move || full_event(view)).await {
                    Some(event) => self.pending.push_back(event),
                    None => return false,
                }
            }
            Err(RecvError::Lagged(missed)) => {
                self.shared.metrics.stream_lagged.inc();
                tracing::debug!(target_id = %self.target, missed, last_event_id = self.sent, "stream client fell behind: disconnected");
                self.pending.push_back(Event::default().comment(LAGGED));
                self.closing = true;
            }
            Err(RecvError::Closed) => return false,
        }
        true
    }
}

#[utoipa::path(get, path = "/v1/targets/{target}/stream", tag = "state", security((), ("bearer" = [])),
    params(
        ("target" = String, Path, description = "The target id"),
        ("since" = Option<String>, Query, description = "`-1` (the default): the whole state, then changes; `now`: changes only; a change sequence number: the changes after it"),
        ("Last-Event-ID" = Option<String>, Header, description = "A reconnect: resume after this change (wins over `since`)"),
    ),
    responses(
        (status = 200, description = "Server-sent events: `state` (the whole state), `upsert` and `delete` (one change each, id = its change sequence), `up-to-date` (the opening is sent), `refetch` (the position cannot be served: reason, then the whole state)", content_type = "text/event-stream", body = String),
        (status = 307, description = "Another aggregator owns the target: `Location` is the same stream there", body = super::openapi::Error),
        (status = 400, description = "A bad `since`, or another parameter", body = super::openapi::Error),
        (status = 401, description = "No valid bearer token (when `http.auth.bearer` is configured)", body = super::openapi::Error),
        (status = 404, description = "The group does not aggregate this target", body = super::openapi::Error),
        (status = 503, description = "No aggregator owns the target right now: ask again after `Retry-After`", body = super::openapi::Error),
    ))]
pub(super) async fn stream(
    State(shared): State<Arc<Shared>>,
    Path(target): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let start = match start_of(&headers, raw.as_deref()) {
        Ok(start) => start,
        Err(refused) => return *refused,
    };
    let Some(cell) = shared.store.get(&target) else {
        return not_owned(&target);
    };
    // Listening before the state is read: a change applied after the read is received.
    let listener = cell.listen();
    let opening = Opening::read(&target, &cell.lock(), start);
    let sent = opening.sent();
    let pending = off_workers(move || opening.into_events())
        .await
        .unwrap_or_default();
    let subscription = Subscription {
        shared,
        target,
        cell,
        listener,
        sent,
        pending,
        closing: false,
    };
    let events = futures::stream::unfold(subscription, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), s));
            }
            if s.closing || !s.step().await {
                return None;
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use axum::http::HeaderValue;

    use super::*;
    use crate::store::STREAM_BUFFER;

    #[test]
    fn only_a_plain_u64_is_a_last_event_id() {
        let id = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert("last-event-id", HeaderValue::from_bytes(value).unwrap());
            last_event_id(&headers)
        };
        assert_eq!(id(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(id(b" 42 "), Some(42));
        for bad in [
            &b"18446744073709551616"[..],
            b"-1",
            b"abc",
            b"",
            b"1e3",
            b"\xff",
        ] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
        assert_eq!(last_event_id(&HeaderMap::new()), None);
    }

    #[test]
    fn since_and_last_event_id_choose_the_start() {
        let none = HeaderMap::new();
        assert_eq!(start_of(&none, None).ok(), Some(Start::Whole));
        assert_eq!(start_of(&none, Some("since=-1")).ok(), Some(Start::Whole));
        assert_eq!(start_of(&none, Some("since=now")).ok(), Some(Start::Now));
        assert_eq!(
            start_of(&none, Some("since=42")).ok(),
            Some(Start::After(42))
        );
        let mut reconnect = HeaderMap::new();
        reconnect.insert("last-event-id", HeaderValue::from_static("7"));
        assert_eq!(
            start_of(&reconnect, Some("since=now")).ok(),
            Some(Start::After(7)),
            "a reconnect resumes where it was"
        );
        for bad in ["since=-2", "since=soon", "since=1&since=2", "from=3"] {
            let refused = start_of(&none, Some(bad)).expect_err(bad);
            assert_eq!(
                refused.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn the_lagged_comment_names_the_buffer() {
        assert!(LAGGED.contains(&STREAM_BUFFER.to_string()));
    }
}
