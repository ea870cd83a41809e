//! The aggregator's HTTP API: the merged state (whole target, a page of entities, one entity),
//! an SSE stream of merged changes (`stream`), the target list, `/metrics`, `/healthz`,
//! `/readyz` and a small HTML page; `read` holds what state reads share (waits, version headers,
//! `ETag`), `entities` the paged reads, `cap` bounds the connections served at once, `access`
//! the bearer token and CORS.
//!
//! Handlers read a target under its lock only to take an immutable version of it (O(1)):
//! serialising (a whole state can be large) happens after the lock is released, off the async
//! workers, so no reader, however slow or numerous, holds up the consumer thread merging under
//! that lock.

mod access;
mod cap;
mod entities;
pub mod openapi;
mod proxy;
mod read;
mod routing;
mod stream;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use html_escape::{encode_double_quoted_attribute, encode_text};
use serde_json::json;
use sluice_config::{AggregatorHttp, Routing};

pub use cap::CappedListener;

use crate::metrics::TargetGauges;
use crate::shared::{Shared, not_ready};
use crate::store::Cell;

/// The API's routes: the read API (`/v1/…`, behind the bearer token when one is configured;
/// a per-target read for a target held elsewhere is sent to its owner), the open page and
/// probes, and CORS headers for the configured origins. Every route comes from [`openapi`].
pub fn router(shared: Arc<Shared>, http: &AggregatorHttp) -> Result<Router, String> {
    let (per_target, _) = openapi::per_target().split_for_parts();
    let (listing, _) = openapi::listing().split_for_parts();
    let (open, _) = openapi::open().split_for_parts();
    let proxy = match http.routing {
        Routing::Redirect => None,
        Routing::Proxy => Some(proxy::Proxy::new(
            &shared.owners.my_url().unwrap_or_default(),
            http.bearer.clone(),
        )?),
    };
    let route = Arc::new(routing::Route {
        shared: shared.clone(),
        proxy,
    });
    let per_target = per_target.route_layer(axum::middleware::from_fn_with_state(
        route,
        routing::to_owner,
    ));
    // The token is checked before anything else (an outsider does not learn the owners).
    let api = access::require_bearer(listing.merge(per_target), http.bearer.clone());
    let app = open.merge(api).with_state(shared);
    Ok(access::with_cors(app, &http.cors))
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves HTTP", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
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

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Assigned partitions and every owned target synced", content_type = "text/plain", body = String),
        (status = 503, description = "Not ready: says why (no assignment yet, targets syncing)", content_type = "text/plain", body = String),
    ))]
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

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        let mut scrape = shared.metrics.scrape();
        let now = SystemTime::now();
        for cell in shared.store.all() {
            let inner = cell.lock();
            let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            scrape.target(&TargetGauges {
                id: cell.def.id(),
                state_age: now
                    .duration_since(inner.changed_at)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                entities: to_i64(inner.merger.len()),
                synced: inner.merger.is_synced(),
                buffered: to_i64(inner.merger.buffered()),
                version: inner
                    .merger
                    .version()
                    .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            });
        }
        scrape.render()
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

fn summary(shared: &Shared, cell: &Cell) -> serde_json::Value {
    let deliveries = shared.deliveries.of(cell.def.id());
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
        "deliveries": deliveries,
    })
}

#[utoipa::path(get, path = "/v1/targets", tag = "state", security((), ("bearer" = [])),
    responses(
        (status = 200, description = "`targets`: the targets held here (version, entities, change sequence, partition, offset); `partitions`: this aggregator's partitions; `group`: every target of the group with its partition and owner (`null` during a rebalance)", body = Object),
        (status = 401, description = "No valid bearer token (when `http.auth.bearer` is configured)", body = openapi::Error),
    ))]
async fn targets(State(shared): State<Arc<Shared>>) -> Response {
    let list: Vec<_> = shared
        .store
        .all()
        .iter()
        .map(|c| summary(&shared, c))
        .collect();
    let partitions: Vec<_> = shared
        .assigned()
        .into_iter()
        .map(|(topic, partition)| json!({ "topic": topic, "partition": partition }))
        .collect();
    // Every target of the group with its owner, as the members topic says.
    let me = shared.owners.my_url();
    let mut group: Vec<_> = shared
        .defs
        .values()
        .map(|def| {
            let (id, topic) = (def.id(), &def.target.topic);
            let partition = shared
                .partition_count(topic)
                .map(|count| sluice_publish::partition_for(id, count));
            let owner = match partition.map(|p| shared.owners.owner_of(topic, p)) {
                Some(crate::owners::Owner::Me) => me.clone(),
                Some(crate::owners::Owner::Other(url)) => Some(url),
                Some(crate::owners::Owner::Nobody) | None => None,
            };
            json!({
                "target": id,
                "topic": topic,
                "partition": partition,
                "owner": owner,
                "here": shared.store.get(id).is_some(),
            })
        })
        .collect();
    group.sort_by(|a, b| a["target"].as_str().cmp(&b["target"].as_str()));
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&json!({ "targets": list, "partitions": partitions, "group": group }))
            .unwrap_or_default(),
    )
}

#[utoipa::path(get, path = "/v1/targets/{target}/state", tag = "state", security((), ("bearer" = [])),
    params(
        ("target" = String, Path, description = "The target id"),
        openapi::Wait,
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer: 304 when the state is still that version"),
    ),
    responses(
        (status = 200, description = "The whole state: target, version, change_seq, synced, as_of, kafka, entities (by key, in key order); `ETag` and the `Sluice-Version`, `Sluice-Change-Seq`, `Sluice-Kafka-Partition`, `Sluice-Kafka-Next-Offset` headers name it", body = Object),
        openapi::ReadAnswers,
    ))]
async fn state(
    State(shared): State<Arc<Shared>>,
    Path(target): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let view = match versioned_read(&shared, &target, raw.as_deref()).await {
        Ok((_, view)) => view,
        Err(response) => return *response,
    };
    if let Some(response) = read::not_modified(&headers, &view) {
        return response;
    }
    let tagged = view.clone();
    match tokio::task::spawn_blocking(move || view.into_json()).await {
        Ok(body) => read::with_version(json_response(StatusCode::OK, body), &tagged),
        Err(_) => read::unwritable(&target),
    }
}

/// The current version of `target` for a read taking only the wait parameters.
async fn versioned_read(
    shared: &Shared,
    target: &str,
    raw: Option<&str>,
) -> Result<(Arc<Cell>, crate::versions::StateView), Box<Response>> {
    let params = read::params(raw, &read::WAIT_PARAMS)?;
    let wait = read::Wait::from_params(&params)?;
    read::current(shared, target, wait).await
}

#[utoipa::path(get, path = "/v1/targets/{target}/entities/{key}", tag = "state", security((), ("bearer" = [])),
    params(
        ("target" = String, Path, description = "The target id"),
        ("key" = String, Path, description = "The entity key"),
        openapi::Wait,
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The entity, with the version headers of the state it was read from", body = Object),
        openapi::ReadAnswers,
    ))]
async fn entity(
    State(shared): State<Arc<Shared>>,
    Path((target, key)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let view = match versioned_read(&shared, &target, raw.as_deref()).await {
        Ok((_, view)) => view,
        Err(response) => return *response,
    };
    if let Some(response) = read::not_modified(&headers, &view) {
        return response;
    }
    let response = match view.entities.get(&key) {
        Some(value) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&value).unwrap_or_default(),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            format!("target {target:?} has no entity {key:?}"),
        ),
    };
    read::with_version(response, &view)
}

#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 200, description = "A page listing the targets held here", content_type = "text/html", body = String)))]
async fn index(State(shared): State<Arc<Shared>>) -> Html<String> {
    let mut rows = String::new();
    for cell in shared.store.all() {
        rows.push_str(&target_row(cell.def.id(), &summary(&shared, &cell)));
    }
    let ready = match not_ready(&shared) {
        None => "ready".to_owned(),
        Some(why) => encode_text(&format!("not ready: {why}")).into_owned(),
    };
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sluice aggregator</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}td.deliveries{{max-width:60em;font-size:90%}}.ok{{color:#176f2c}}.failed{{color:#b3261e}}.skipped{{color:#8a6d00}}</style>\n\
         </head><body><h1>sluice aggregator</h1><p>{ready}</p>\n\
         <table id=\"targets\"><thead><tr><th>target</th><th>state</th><th>version</th><th>entities</th><th>changes</th><th>partition</th><th>as of</th><th>deliveries</th></tr></thead><tbody>\n{rows}</tbody></table>\n\
         <p><a href=\"/v1/targets\">/v1/targets</a> · <a href=\"/metrics\">/metrics</a></p></body></html>\n"
    ))
}

/// One target's row of the HTML page, from its [`summary`]; every text escaped for where it
/// goes (the id both in a quoted `href` and as text).
fn target_row(id: &str, s: &serde_json::Value) -> String {
    format!(
        "<tr><td><a href=\"/v1/targets/{href}/state\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"deliveries\">{}</td></tr>\n",
        if s["synced"] == true {
            "synced"
        } else {
            "syncing"
        },
        s["version"],
        s["entities"],
        s["change_seq"],
        s["partition"],
        encode_text(s["as_of"].as_str().unwrap_or_default()),
        delivery_cell(&s["deliveries"]),
        href = encode_double_quoted_attribute(id),
        id = encode_text(id),
    )
}

/// The page's deliveries cell: per destination, the last result, the last file written and
/// when, or the failures since and the last error; every text escaped.
fn delivery_cell(deliveries: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| encode_text(v.as_str().unwrap_or_default()).into_owned();
    let lines: Vec<String> = deliveries
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let last_ok = match d["last_ok_file"].as_str() {
                Some(_) => format!(
                    "last: <code>{}</code> at {}",
                    text(&d["last_ok_file"]),
                    text(&d["last_ok_at"])
                ),
                None => "nothing delivered yet".to_owned(),
            };
            let result = match d["result"].as_str() {
                Some("ok") => "<b class=\"ok\">ok</b>".to_owned(),
                Some("failed") => format!(
                    "<b class=\"failed\">failed</b> ({} round(s) since the last success: {})",
                    d["failures"],
                    text(&d["error"])
                ),
                _ => "<b class=\"skipped\">skipped</b> (not synced)".to_owned(),
            };
            format!("{}: {result}; {last_ok}", text(&d["destination"]))
        })
        .collect();
    if lines.is_empty() {
        "none".to_owned()
    } else {
        lines.join("<br>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_target_id_and_status_are_escaped_on_the_page() {
        let hostile = "\"><script>alert('x')</script>&";
        let row = target_row(
            hostile,
            &json!({ "synced": true, "version": 1, "as_of": "<b>now</b>", "deliveries": [
                {"destination": "<i>d</i>", "result": "failed", "failures": 2, "error": "<script>e",
                 "last_ok_file": "<u>f</u>", "last_ok_at": "t"}
            ] }),
        );
        for raw in ["<i>", "<u>"] {
            assert!(!row.contains(raw), "{row}");
        }
        assert!(
            row.contains("&lt;script&gt;e") && row.contains("2 round(s)"),
            "{row}"
        );
        assert!(!row.contains("<script>") && !row.contains("<b>"), "{row}");
        assert!(
            row.contains(
                "href=\"/v1/targets/&quot;&gt;&lt;script&gt;alert('x')&lt;/script&gt;&amp;/state\""
            ),
            "{row}"
        );
        assert!(
            row.contains(">\"&gt;&lt;script&gt;alert('x')&lt;/script&gt;&amp;</a>"),
            "{row}"
        );
        assert!(row.contains("&lt;b&gt;now&lt;/b&gt;"), "{row}");
    }
}
