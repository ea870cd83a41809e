//! The aggregator's HTTP API: the merged state (whole target, one entity), an SSE stream of
//! merged changes, the target list, `/metrics`, `/healthz`, `/readyz` and a small HTML page.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::shared::{Shared, not_ready};
use crate::store::{Cell, Inner, Listener, RingEntry, StreamItem, state_json};

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/targets", get(targets))
        .route("/v1/targets/{target}/state", get(state))
        .route("/v1/targets/{target}/entities/{key}", get(entity))
        .route("/v1/targets/{target}/stream", get(stream))
        .with_state(shared)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    json_response(
        status,
        serde_json::to_vec(&json!({ "error": message })).unwrap_or_default(),
    )
}

fn not_owned(target: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "target {target:?} is not aggregated here (unknown, or its partition is assigned to another aggregator)"
        ),
    )
}

fn syncing(target: &str) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("target {target:?} is syncing: no complete state yet"),
    )
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match not_ready(&shared) {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        let m = &shared.metrics;
        let now = SystemTime::now();
        for cell in shared.store.all() {
            let id = cell.def.id();
            let inner = cell.lock();
            let age = now
                .duration_since(inner.changed_at)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            m.state_age.with_label_values(&[id]).set(age);
            m.entities
                .with_label_values(&[id])
                .set(i64::try_from(inner.merger.len()).unwrap_or(i64::MAX));
            m.synced
                .with_label_values(&[id])
                .set(i64::from(inner.merger.is_synced()));
            m.buffered
                .with_label_values(&[id])
                .set(i64::try_from(inner.merger.buffered()).unwrap_or(i64::MAX));
            if let Some(version) = inner.merger.version() {
                m.version
                    .with_label_values(&[id])
                    .set(i64::try_from(version).unwrap_or(i64::MAX));
            }
        }
        m.render()
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn summary(cell: &Cell) -> serde_json::Value {
    let inner = cell.lock();
    json!({
        "target": cell.def.id(),
        "synced": inner.merger.is_synced(),
        "has_state": inner.merger.has_state(),
        "version": inner.merger.version(),
        "entities": inner.merger.len(),
        "change_seq": inner.merger.change_seq(),
        "buffered": inner.merger.buffered(),
        "partition": inner.partition,
        "next_offset": inner.next_offset,
        "as_of": humantime::format_rfc3339_millis(inner.changed_at).to_string(),
    })
}

async fn targets(State(shared): State<Arc<Shared>>) -> Response {
    let list: Vec<_> = shared.store.all().iter().map(|c| summary(c)).collect();
    let partitions: Vec<_> = shared
        .assigned()
        .into_iter()
        .map(|(topic, partition)| json!({ "topic": topic, "partition": partition }))
        .collect();
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&json!({ "targets": list, "partitions": partitions }))
            .unwrap_or_default(),
    )
}

async fn state(State(shared): State<Arc<Shared>>, Path(target): Path<String>) -> Response {
    let Some(cell) = shared.store.get(&target) else {
        return not_owned(&target);
    };
    let body = {
        let inner = cell.lock();
        if !inner.merger.has_state() {
            return syncing(&target);
        }
        state_json(&target, &inner)
    };
    json_response(StatusCode::OK, body)
}

async fn entity(
    State(shared): State<Arc<Shared>>,
    Path((target, key)): Path<(String, String)>,
) -> Response {
    let Some(cell) = shared.store.get(&target) else {
        return not_owned(&target);
    };
    let inner = cell.lock();
    if !inner.merger.has_state() {
        return syncing(&target);
    }
    match inner.merger.get(&key) {
        Some(value) => json_response(
            StatusCode::OK,
            serde_json::to_vec(value).unwrap_or_default(),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            format!("target {target:?} has no entity {key:?}"),
        ),
    }
}

fn full_event(target: &str, inner: &Inner) -> Event {
    let data = String::from_utf8(state_json(target, inner)).unwrap_or_default();
    Event::default()
        .id(inner.merger.change_seq().to_string())
        .event("state")
        .data(data)
}

fn change_event(item: &StreamItem) -> Option<Event> {
    let StreamItem::Change(change) = item else {
        return None;
    };
    let (event, data) = match &change.value {
        Some(value) => ("upsert", json!({ "key": &*change.key, "value": value })),
        None => ("delete", json!({ "key": &*change.key })),
    };
    Some(
        Event::default()
            .id(change.seq.to_string())
            .event(event)
            .data(data.to_string()),
    )
}

/// One entity's current value as a change event with id `seq`: `upsert` with the value, or
/// `delete` when the entity is gone.
fn current_event(inner: &Inner, seq: u64, key: &str) -> Event {
    let (event, data) = match inner.merger.get(key) {
        Some(value) => ("upsert", json!({ "key": key, "value": value })),
        None => ("delete", json!({ "key": key })),
    };
    Event::default()
        .id(seq.to_string())
        .event(event)
        .data(data.to_string())
}

/// What a new subscriber gets first. With a `Last-Event-ID` the ring still covers: the current
/// value of every entity changed since (once each, at its latest change's id, in id order),
/// which brings the client to the current state; else (or after a whole-state replacement) the
/// whole state. Returns the events and the sequence they bring the client to.
fn opening(target: &str, inner: &Inner, last: Option<u64>) -> (Vec<Event>, u64) {
    let current = inner.merger.change_seq();
    if !inner.merger.has_state() {
        return (Vec::new(), 0);
    }
    if let Some(last) = last {
        if last == current {
            return (Vec::new(), current);
        }
        let covered = inner
            .ring
            .front()
            .is_some_and(|first| first.seq() <= last + 1)
            && last < current;
        if covered {
            let mut latest: std::collections::HashMap<&str, u64> = Default::default();
            let mut full = false;
            for entry in inner.ring.iter().filter(|e| e.seq() > last) {
                match entry {
                    RingEntry::Change(seq, key) => {
                        latest.insert(key, *seq);
                    }
                    RingEntry::Full(_) => full = true,
                }
            }
            if !full {
                let mut changed: Vec<(u64, &str)> =
                    latest.into_iter().map(|(key, seq)| (seq, key)).collect();
                changed.sort_unstable();
                let events = changed
                    .into_iter()
                    .map(|(seq, key)| current_event(inner, seq, key))
                    .collect();
                return (events, current);
            }
        }
    }
    (vec![full_event(target, inner)], current)
}

struct Subscription {
    target: String,
    cell: Arc<Cell>,
    listener: Listener,
    sent: u64,
    pending: VecDeque<Event>,
}

async fn stream(
    State(shared): State<Arc<Shared>>,
    Path(target): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(cell) = shared.store.get(&target) else {
        return not_owned(&target);
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let listener = cell.listen();
    let (events, sent) = opening(&target, &cell.lock(), last);
    let subscription = Subscription {
        target,
        cell,
        listener,
        sent,
        pending: events.into(),
    };
    let events = futures::stream::unfold(subscription, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), s));
            }
            let received = tokio::select! {
                _ = s.cell.gone.cancelled() => return None,
                received = s.listener.rx.recv() => received,
            };
            match received {
                Ok(item) if item.seq() <= s.sent => {}
                Ok(item @ StreamItem::Change(_)) => {
                    s.sent = item.seq();
                    if let Some(event) = change_event(&item) {
                        s.pending.push_back(event);
                    }
                }
                Ok(StreamItem::Full(_)) | Err(RecvError::Lagged(_)) => {
                    let inner = s.cell.lock();
                    if inner.merger.has_state() {
                        s.sent = inner.merger.change_seq();
                        s.pending.push_back(full_event(&s.target, &inner));
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn index(State(shared): State<Arc<Shared>>) -> Html<String> {
    let mut rows = String::new();
    for cell in shared.store.all() {
        let s = summary(&cell);
        let id = escape(cell.def.id());
        rows.push_str(&format!(
            "<tr><td><a href=\"/v1/targets/{id}/state\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            if s["synced"] == true { "synced" } else { "syncing" },
            s["version"],
            s["entities"],
            s["change_seq"],
            s["partition"],
            escape(s["as_of"].as_str().unwrap_or_default()),
        ));
    }
    let ready = match not_ready(&shared) {
        None => "ready".to_owned(),
        Some(why) => escape(&format!("not ready: {why}")),
    };
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sluice aggregator</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style>\n\
         </head><body><h1>sluice aggregator</h1><p>{ready}</p>\n\
         <table id=\"targets\"><thead><tr><th>target</th><th>state</th><th>version</th><th>entities</th><th>changes</th><th>partition</th><th>as of</th></tr></thead><tbody>\n{rows}</tbody></table>\n\
         <p><a href=\"/v1/targets\">/v1/targets</a> · <a href=\"/metrics\">/metrics</a></p></body></html>\n"
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
