//! The worker's admin API under `/v1/admin/`, on the operations server: list targets, read one
//! (its `/status` row and checkpoint), pause, resume and restart one. Off unless `admin.token`
//! is configured; every request carries `Authorization: Bearer <token>` (compared in constant
//! time; the token is read afresh per request, so a rotated file takes effect at once).
//!
//! What it must NOT do: touch a target itself (it sends [`Control`] commands the worker's loop
//! carries out in order), or show the token anywhere (logs, answers, errors).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use sluice_config::{SecretRef, TargetId};

use crate::control::Control;
use crate::registry::Registry;
use crate::supervisor::ControlError;

/// What the admin handlers work with.
pub(crate) struct Admin {
    /// The bearer token's reference.
    pub(crate) token: SecretRef,
    /// Commands to the worker's loop.
    pub(crate) control: Control,
    /// The rows `/status` shows (running and paused targets).
    pub(crate) registry: Arc<Registry>,
}

/// The admin routes, to merge into the operations router.
pub(crate) fn router(admin: Admin) -> Router {
    let admin = Arc::new(admin);
    Router::new()
        .route("/v1/admin/targets", get(list))
        .route("/v1/admin/targets/{id}", get(get_target))
        .route(
            "/v1/admin/targets/{id}/checkpoint",
            get(get_checkpoint).put(set_checkpoint),
        )
        .route("/v1/admin/targets/{id}/pause", post(pause))
        .route("/v1/admin/targets/{id}/resume", post(resume))
        .route("/v1/admin/targets/{id}/restart", post(restart))
        // Every route, before its handler: no handler runs for a request without the token.
        .route_layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            require_token,
        ))
        .with_state(admin)
}

/// Answers a request without the configured bearer token (401, or 503 when the token cannot be
/// read) instead of passing it on.
async fn require_token(
    State(admin): State<Arc<Admin>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Err(refused) = authorize(&admin, request.headers()) {
        return *refused;
    }
    next.run(request).await
}

/// An error answer: `{"error": message, "kind": kind}`.
fn refuse(status: StatusCode, kind: &str, message: String) -> Response {
    (status, axum::Json(json!({"error": message, "kind": kind}))).into_response()
}

/// Equal bytes, in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Ok` when the request carries the configured bearer token.
fn authorize(admin: &Admin, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let expected = match admin.token.resolve() {
        Ok(token) => token,
        Err(error) => {
            tracing::warn!(%error, "the admin token cannot be read: refusing admin requests");
            return Err(Box::new(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unreadable",
                "the admin token cannot be read".to_owned(),
            )));
        }
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(given) if same(given, expected.expose().as_bytes()) => Ok(()),
        _ => Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(
                    json!({"error": "a valid bearer token is required", "kind": "unauthorized"}),
                ),
            )
                .into_response(),
        )),
    }
}

fn parse_id(id: &str) -> Result<TargetId, Box<Response>> {
    id.parse().map_err(|_| {
        Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "bad_id",
            format!("{id:?} is not a target id"),
        ))
    })
}

fn control_error(error: &ControlError) -> Response {
    let status = match error {
        ControlError::NotRunning(_) => StatusCode::NOT_FOUND,
        ControlError::NotPaused(_) | ControlError::AlreadyRunning(_) => StatusCode::CONFLICT,
        ControlError::WorkerGone => StatusCode::SERVICE_UNAVAILABLE,
        ControlError::Failed(_)
        | ControlError::Timeout { .. }
        | ControlError::CheckpointNotWritten { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refuse(status, error.kind(), error.to_string())
}

async fn list(State(admin): State<Arc<Admin>>) -> Response {
    let running = admin.control.targets().await;
    let paused = admin.control.paused().await;
    match (running, paused) {
        (Ok(running), Ok(paused)) => {
            let names = |ids: Vec<TargetId>| -> Vec<String> {
                ids.iter().map(ToString::to_string).collect()
            };
            axum::Json(json!({"running": names(running), "paused": names(paused)})).into_response()
        }
        (Err(error), _) | (_, Err(error)) => control_error(&error),
    }
}

/// The `/status` row of `id`, if it runs or is paused here.
fn row_of(admin: &Admin, id: &TargetId) -> Option<crate::status::StatusRow> {
    admin
        .registry
        .snapshot()
        .iter()
        .find(|row| row.id == *id)
        .map(|row| row.row())
}

async fn get_target(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let paused = match admin.control.paused().await {
        Ok(paused) => paused.contains(&id),
        Err(error) => return control_error(&error),
    };
    match row_of(&admin, &id) {
        Some(row) => axum::Json(json!({"paused": paused, "status": row})).into_response(),
        None => control_error(&ControlError::NotRunning(id)),
    }
}

async fn get_checkpoint(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    match row_of(&admin, &id) {
        Some(row) => {
            let checkpoint = Some(row.checkpoint).filter(|c| !c.is_empty());
            axum::Json(json!({"target": id.as_str(), "checkpoint": checkpoint, "owner_epoch": row.owner_epoch}))
                .into_response()
        }
        None => control_error(&ControlError::NotRunning(id)),
    }
}

/// `PUT …/checkpoint` with `{"checkpoint": "EVENT_ID"}`: the target resumes after that id.
async fn set_checkpoint(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let event_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("checkpoint")
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        })
        .filter(|c| !c.is_empty() && !c.contains(['\n', '\r', '\0']));
    let Some(event_id) = event_id else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_checkpoint",
            "send {\"checkpoint\": \"EVENT_ID\"}: a non-empty event id without line breaks or NUL"
                .to_owned(),
        );
    };
    match admin.control.set_checkpoint(&id, event_id.clone()).await {
        Ok(()) => {
            axum::Json(json!({"target": id.as_str(), "checkpoint": event_id})).into_response()
        }
        Err(error) => control_error(&error),
    }
}

async fn pause(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    match admin.control.pause(&id).await {
        Ok(stopped) => axum::Json(
            json!({"target": id.as_str(), "paused": true, "checkpoint": stopped.checkpoint}),
        )
        .into_response(),
        Err(error) => control_error(&error),
    }
}

async fn resume(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    match admin.control.resume(&id).await {
        Ok(()) => axum::Json(json!({"target": id.as_str(), "paused": false})).into_response(),
        Err(error) => control_error(&error),
    }
}

/// Stops a running target (final checkpoint stored) and starts it again from that checkpoint.
async fn restart(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let stopped = match admin.control.pause(&id).await {
        Ok(stopped) => stopped,
        Err(error) => return control_error(&error),
    };
    match admin.control.resume(&id).await {
        Ok(()) => axum::Json(json!({"target": id.as_str(), "restarted_from": stopped.checkpoint}))
            .into_response(),
        Err(error) => control_error(&error),
    }
}
