//! The operations endpoints: `/metrics`, `/status` (JSON, or HTML for browsers and at
//! `/status.html`), `/healthz`, `/readyz`. Read-only views of the status table and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use html_escape::encode_text;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::status::{Delivery, StatusRow};

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

/// The router of the operations server.
pub fn router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/status.json", get(status_json))
        .route("/status.html", get(status_html))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(status_html))
        .with_state(ops)
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
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

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
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
    targets: Vec<StatusRow>,
}

fn rows(ops: &Ops) -> StatusBody {
    StatusBody {
        ready: ops.ready.load(Ordering::Relaxed),
        targets: ops.targets.snapshot().iter().map(|s| s.row()).collect(),
    }
}

async fn status(State(ops): State<Arc<Ops>>, headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html {
        status_html(State(ops)).await.into_response()
    } else {
        status_json(State(ops)).await
    }
}

async fn status_json(State(ops): State<Arc<Ops>>) -> Response {
    axum::Json(rows(&ops)).into_response()
}

async fn status_html(State(ops): State<Arc<Ops>>) -> Html<String> {
    Html(render_html(&rows(&ops)))
}

fn render_html(body: &StatusBody) -> String {
    use std::fmt::Write as _;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>sluice worker</title><style>body{font:14px system-ui,sans-serif;margin:1.5em}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
         th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}\
         .streaming{color:#070}.backoff,.connecting{color:#a60}.stopped{color:#a00}</style></head><body>",
    );
    let _ = write!(
        html,
        "<h1>sluice worker</h1><p>{} targets, {}</p><table id=\"targets\"><thead><tr>\
         <th>target</th><th>state</th><th>uptime</th><th>events</th><th>acked</th><th>in flight</th>\
         <th>reconnects</th><th>proxy</th><th>last event id</th><th>last acked id</th><th>kafka</th><th>last error</th>\
         </tr></thead><tbody>",
        body.targets.len(),
        if body.ready { "ready" } else { "starting" }
    );
    for row in &body.targets {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"{state}\">{state}</td><td class=\"n\">{:.0}s</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            encode_text(&row.target),
            row.state_seconds,
            row.events,
            row.acked,
            row.in_flight,
            row.reconnects,
            encode_text(row.proxy.as_deref().unwrap_or("direct")),
            encode_text(&row.last_event_id),
            encode_text(&row.last_acked_id),
            row.delivery.as_str(),
            encode_text(row.last_error.as_deref().unwrap_or("")),
            state = row.state.as_str(),
        );
    }
    html.push_str("</tbody></table></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::status::TargetStatus;

    #[test]
    fn hostile_status_text_is_escaped_on_the_status_page() {
        let status = TargetStatus::new(
            "t-1".parse().unwrap(),
            "http://127.0.0.1/x".to_owned(),
            "events".to_owned(),
            tokio::time::Instant::now(),
        );
        status.set_last_event_id("<img src=x onerror=alert(1)>");
        status.set_error(Some(
            "upstream said <script>alert('x')</script> & left".to_owned(),
        ));
        let html = render_html(&StatusBody {
            ready: true,
            targets: vec![status.row()],
        });
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(
            html.contains("upstream said &lt;script&gt;alert('x')&lt;/script&gt; &amp; left"),
            "{html}"
        );
    }
}
