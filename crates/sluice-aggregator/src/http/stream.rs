//! `GET /v1/targets/{target}/stream`: the merged changes of one target as SSE. A client starts
//! from the whole state, or resumes from `Last-Event-ID` while the target's ring still covers
//! it, then gets one event per change.
//!
//! Bounded per client: a client that falls more than [`crate::store::STREAM_BUFFER`] changes behind (it reads
//! slower than the target changes) is sent a final comment saying so and disconnected, to
//! resume with `Last-Event-ID`; it is never sent the whole state again in its place, which would
//! let many slow clients cost a whole serialisation each per lag. The cell's lock is held only
//! to copy pointers out; events are written after it is released, off the async workers.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_merge::Entity;
use tokio::sync::broadcast::error::RecvError;

use super::not_owned;
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

/// An entity changed since a client's id: the id of its latest change, its key and its
/// current value (`None`: deleted).
type Changed = (u64, Arc<str>, Option<Entity>);

/// What a subscriber is sent first, copied out of the cell under its lock.
enum Opening {
    /// Nothing to send: the client is current (or there is no state yet).
    Nothing,
    /// The current value of every entity changed since the client's id (`None`: deleted), at
    /// its latest change's id, in id order.
    Changes(Vec<Changed>),
    /// The whole state.
    Full(StateView),
}

impl Opening {
    /// With a `Last-Event-ID` the ring still covers (and no whole-state replacement since):
    /// the entities changed since, which bring the client to the current state; else the whole
    /// state. Any id, `u64::MAX` included, is compared without arithmetic that can overflow.
    fn read(target: &str, inner: &Inner, last: Option<u64>) -> (Opening, u64) {
        let current = inner.merger.change_seq();
        if !inner.merger.has_state() {
            return (Opening::Nothing, 0);
        }
        if let Some(last) = last {
            if last == current {
                return (Opening::Nothing, current);
            }
            let covered = last < current
                && inner
                    .ring
                    .front()
                    .is_some_and(|first| first.seq() <= last.saturating_add(1));
            if covered && let Some(changes) = changes_since(inner, last) {
                return (Opening::Changes(changes), current);
            }
        }
        (Opening::Full(StateView::capture(target, inner)), current)
    }

    /// The events (CPU-bound in their size: run off the async workers).
    fn into_events(self) -> VecDeque<Event> {
        match self {
            Opening::Nothing => VecDeque::new(),
            Opening::Changes(changes) => changes
                .iter()
                .map(|(seq, key, value)| change_event(*seq, key, value.as_ref()))
                .collect(),
            Opening::Full(view) => VecDeque::from([full_event(view)]),
        }
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

pub(super) async fn stream(
    State(shared): State<Arc<Shared>>,
    Path(target): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(cell) = shared.store.get(&target) else {
        return not_owned(&target);
    };
    let last = last_event_id(&headers);
    // Listening before the state is read: a change applied after the read is received.
    let listener = cell.listen();
    let (opening, sent) = Opening::read(&target, &cell.lock(), last);
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
    fn the_lagged_comment_names_the_buffer() {
        assert!(LAGGED.contains(&STREAM_BUFFER.to_string()));
    }
}
