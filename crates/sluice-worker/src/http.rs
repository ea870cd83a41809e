//! The operations endpoints: `/metrics`, `/status` (JSON, or HTML for browsers and at
//! `/status.html`), `/healthz`, `/readyz`. Read-only views of the status table and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::status::Delivery;
use crate::status::fleet_view::FleetView;
use crate::status::history::History;
use crate::status::query::{Table, TableQuery};

/// What the handlers read.
pub struct Ops {
    /// The status rows of the targets running now.
    pub targets: Arc<Registry>,
    /// The metrics registry.
    pub metrics: Metrics,
    /// Set once checkpoints are read and targets started.
    pub ready: AtomicBool,
    /// Set when shutdown began.
    pub stopping: AtomicBool,
    /// Process-wide records in the producer, read at scrape time.
    pub producer_in_flight: Box<dyn Fn() -> i64 + Send + Sync>,
    /// Why the worker is not ready yet, when it knows (shown by `/readyz`).
    pub not_ready_reason: std::sync::Mutex<Option<String>>,
    /// The last hour's samples (`/status/history.json`, the console's charts).
    pub history: Arc<History>,
    /// The fleet as its group describes it (`None` with `fleet: none`, or before the first).
    pub fleet: Arc<std::sync::Mutex<Option<FleetView>>>,
    /// This worker's owner name in a fleet (each row's `owner`).
    pub owner: Option<Arc<str>>,
    /// In a fleet, the checkpoint partition of every defined target (the fleet view's counts).
    pub fleet_targets: crate::status::fleet_view::TargetPartitions,
    /// The target definitions and their problems (`/status/definitions.json`).
    pub definitions: crate::definitions::SharedView,
}

impl Ops {
    /// Records why the worker is not ready yet (a message without secrets).
    pub fn set_not_ready_reason(&self, reason: String) {
        *self
            .not_ready_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
    }
}

/// The router of the operations server. Every route comes from [`crate::openapi::ops`].
pub fn router(ops: Arc<Ops>) -> Router {
    let (router, _) = crate::openapi::ops().split_for_parts();
    router.with_state(ops)
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 500, description = "Rendering failed", content_type = "text/plain", body = String),
    ))]
pub(crate) async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    // Rendering 10,000 targets takes a while: keep it off the threads that move events.
    let in_flight = (ops.producer_in_flight)();
    let metrics = ops.metrics.clone();
    let body = match tokio::task::spawn_blocking(move || metrics.render(in_flight)).await {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "rendering metrics failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering metrics failed\n",
            )
                .into_response();
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves HTTP", content_type = "text/plain", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Checkpoints read and targets started, none stopped by a refused event", content_type = "text/plain", body = String),
        (status = 503, description = "Starting (says what it waits for), stopping, or a target stopped for good", content_type = "text/plain", body = String),
    ))]
pub(crate) async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    if ops.stopping.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response()
    } else if ops.ready.load(Ordering::Relaxed) {
        // A target Kafka refused an event of for good has stopped before it: the worker is not
        // doing its job for that target, so it says so (an operator must act).
        let targets = ops.targets.snapshot();
        match targets.iter().find(|t| t.delivery() == Delivery::Failed) {
            Some(failed) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "target {} stopped: kafka refused one of its events for good (see /status)\n",
                    failed.id
                ),
            )
                .into_response(),
            None => (StatusCode::OK, "ready\n").into_response(),
        }
    } else {
        let reason = ops
            .not_ready_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let body = match reason {
            Some(reason) => format!("starting: {reason}\n"),
            None => "starting: reading checkpoints\n".to_owned(),
        };
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

#[derive(Serialize)]
struct StatusBody {
    ready: bool,
    #[serde(flatten)]
    table: Table,
}

/// The table of `query` over the rows now (off the event threads: 10,000 rows take a while).
async fn answer(ops: &Arc<Ops>, query: TableQuery) -> Result<StatusBody, Refusal> {
    let rows = ops.targets.snapshot();
    let table = tokio::task::spawn_blocking(move || crate::status::query::table(&rows, &query))
        .await
        .map_err(|error| {
            tracing::error!(%error, "building the status table failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "building the status table failed\n".to_owned(),
            )
        })?;
    let mut table = table;
    if let Some(owner) = &ops.owner {
        for row in &mut table.targets {
            row.owner = Some(owner.to_string());
        }
    }
    Ok(StatusBody {
        ready: ops.ready.load(Ordering::Relaxed),
        table,
    })
}

fn fleet_now(ops: &Ops) -> Option<FleetView> {
    ops.fleet
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// The target definitions: which file defines each, which the targets topic defines, and every
/// problem with one.
#[utoipa::path(get, path = "/status/definitions.json", tag = "operations",
    responses((status = 200, description = "`files` (id → file), `topic` (ids the targets topic defines), `topic_loaded`, `problems`", body = Object)))]
pub(crate) async fn definitions_json(State(ops): State<Arc<Ops>>) -> Response {
    let view = crate::definitions::read_view(&ops.definitions);
    axum::Json(&*view).into_response()
}

#[utoipa::path(get, path = "/status/history.json", tag = "operations",
    responses((status = 200, description = "`every_seconds` and `samples` of the last hour (`at_ms`, `events_per_second`, `latency_p50`, `latency_p99`, `reconnects`), oldest first", body = Object)))]
pub(crate) async fn history_json(State(ops): State<Arc<Ops>>) -> Response {
    #[derive(Serialize)]
    struct Body {
        every_seconds: u64,
        samples: Vec<crate::status::history::Sample>,
    }
    axum::Json(Body {
        every_seconds: crate::status::history::EVERY.as_secs(),
        samples: ops.history.samples(),
    })
    .into_response()
}

#[utoipa::path(get, path = "/status/fleet.json", tag = "operations",
    params(("target" = Option<String>, Query, description = "Answer for this target id only: its partition and owner")),
    responses(
        (status = 200, description = "The fleet: group, members and what each owns, unowned partitions and targets; with `target`: that target's `partition`, `owner`, `member_id`", body = Object),
        (status = 404, description = "Not in a fleet (`fleet: none`)", content_type = "text/plain", body = String),
        (status = 503, description = "The fleet's group is not described yet", content_type = "text/plain", body = String),
    ))]
pub(crate) async fn fleet_json(
    State(ops): State<Arc<Ops>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match fleet_now(&ops) {
        // `?target=ID`: that target's partition and owner (any target id: the partitioner
        // decides, whichever worker's files list it).
        Some(fleet) if params.contains_key("target") => {
            let target = params.get("target").map(String::as_str).unwrap_or_default();
            let partition = sluice_publish::partition_for(target, fleet.partitions);
            let owner = fleet
                .members
                .iter()
                .find(|m| m.partitions.contains(&partition));
            axum::Json(serde_json::json!({
                "target": target,
                "partition": partition,
                "owner": owner.map(|m| m.client_id.as_str()),
                "member_id": owner.map(|m| m.member_id.as_str()),
            }))
            .into_response()
        }
        Some(fleet) => axum::Json(fleet).into_response(),
        None if ops.owner.is_none() => {
            (StatusCode::NOT_FOUND, "not in a fleet (fleet: none)\n").into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the fleet's group is not described yet\n",
        )
            .into_response(),
    }
}

/// A request the status handlers answer with an error status and a message.
type Refusal = (StatusCode, String);

fn parse_query(params: &HashMap<String, String>) -> Result<TableQuery, Refusal> {
    TableQuery::parse(params).map_err(|error| (StatusCode::BAD_REQUEST, format!("{error}\n")))
}

#[utoipa::path(get, path = "/status", tag = "operations",
    params(crate::openapi::StatusQuery),
    responses(
        (status = 200, description = "The status table: JSON (`ready`, `summary`, `matched`, `page`, `pages`, `targets`), or the console when `Accept` names text/html", content(
            (Object = "application/json"),
            (String = "text/html"),
        )),
        (status = 400, description = "A bad query parameter, named", content_type = "text/plain", body = String),
        (status = 500, description = "Building the table failed", content_type = "text/plain", body = String),
    ))]
pub(crate) async fn status(
    State(ops): State<Arc<Ops>>,
    params: Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html {
        status_html(State(ops), params).await
    } else {
        status_json(State(ops), params).await
    }
}

#[utoipa::path(get, path = "/status.json", tag = "operations",
    params(crate::openapi::StatusQuery),
    responses(
        (status = 200, description = "The status table: `ready`, `summary`, `matched`, `page`, `pages`, `targets`", body = Object),
        (status = 400, description = "A bad query parameter, named", content_type = "text/plain", body = String),
        (status = 500, description = "Building the table failed", content_type = "text/plain", body = String),
    ))]
pub(crate) async fn status_json(
    State(ops): State<Arc<Ops>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let query = match parse_query(&params) {
        Ok(query) => query,
        Err(refusal) => return refusal.into_response(),
    };
    match answer(&ops, query).await {
        Ok(body) => axum::Json(body).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

#[utoipa::path(get, path = "/status.html", tag = "operations",
    params(crate::openapi::StatusQuery),
    responses(
        (status = 200, description = "The operator's console (100 rows a page by default)", content_type = "text/html", body = String),
        (status = 400, description = "A bad query parameter, named", content_type = "text/plain", body = String),
        (status = 500, description = "Building the table failed", content_type = "text/plain", body = String),
    ))]
pub(crate) async fn status_html(
    State(ops): State<Arc<Ops>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mut query = match parse_query(&params) {
        Ok(query) => query,
        Err(refusal) => return refusal.into_response(),
    };
    query.per_page = query.per_page.or(Some(crate::status::console::PER_PAGE));
    let problems: Vec<String> = crate::definitions::read_view(&ops.definitions)
        .problems
        .iter()
        .map(crate::catalogue::Problem::line)
        .collect();
    match answer(&ops, query.clone()).await {
        Ok(body) => Html(crate::status::console::render(
            &crate::status::console::Page {
                ready: body.ready,
                table: &body.table,
                query: &query,
                history: &ops.history.samples(),
                fleet: fleet_now(&ops).as_ref(),
                definition_problems: &problems,
            },
        ))
        .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// `/`: the console.
#[utoipa::path(get, path = "/", tag = "operations",
    params(crate::openapi::StatusQuery),
    responses(
        (status = 200, description = "The operator's console, as `/status.html`", content_type = "text/html", body = String),
        (status = 400, description = "A bad query parameter, named", content_type = "text/plain", body = String),
        (status = 500, description = "Building the table failed", content_type = "text/plain", body = String),
    ))]
pub(crate) async fn index(
    State(ops): State<Arc<Ops>>,
    params: Query<HashMap<String, String>>,
) -> Response {
    status_html(State(ops), params).await
}
