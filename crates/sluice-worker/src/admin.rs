//! The worker's admin API under `/v1/admin/`, on the operations server: list targets, read one
//! (its `/status` row and checkpoint), pause, resume and restart one; define (`PUT`) and remove
//! (`DELETE`) a target in the targets topic, validated as `sluice validate` does. Off unless `admin.token`
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
use serde_json::json;
use sluice_config::{SecretRef, TargetId, WorkerConfig};
use sluice_publish::Publisher;

use crate::catalogue::topic;
use crate::control::Control;
use crate::definitions::{SharedView, read_view};
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
    /// The target definitions this worker knows.
    pub(crate) definitions: SharedView,
    /// The worker's config (without targets): what a definition is validated against.
    pub(crate) worker: Arc<WorkerConfig>,
    /// Writes definitions to the targets topic.
    pub(crate) publisher: Publisher,
}

/// The admin routes, to merge into the operations router. Every route comes from
/// [`crate::openapi::admin`].
pub(crate) fn router(admin: Admin) -> Router {
    let admin = Arc::new(admin);
    let (routes, _) = crate::openapi::admin().split_for_parts();
    routes
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

/// `Ok` when the request carries the configured bearer token.
fn authorize(admin: &Admin, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match admin.token.authorizes(authorization) {
        Ok(true) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "the admin token cannot be read: refusing admin requests");
            Err(Box::new(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unreadable",
                "the admin token cannot be read".to_owned(),
            )))
        }
        Ok(false) => Err(Box::new(
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

#[utoipa::path(get, path = "/v1/admin/targets", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "`running` and `paused` target ids here, `defined` (`files`: id → file, `topic`: ids the targets topic defines), `problems`", body = Object),
        (status = 401, description = "No valid bearer token", body = crate::openapi::Error),
        (status = 503, description = "The admin token cannot be read, or the worker is stopping", body = crate::openapi::Error),
        (status = 500, description = "The command failed or timed out (the final checkpoint was not stored)", body = crate::openapi::Error),
    ))]
pub(crate) async fn list(State(admin): State<Arc<Admin>>) -> Response {
    let running = admin.control.targets().await;
    let paused = admin.control.paused().await;
    match (running, paused) {
        (Ok(running), Ok(paused)) => {
            let names = |ids: Vec<TargetId>| -> Vec<String> {
                ids.iter().map(ToString::to_string).collect()
            };
            let view = read_view(&admin.definitions);
            let files: serde_json::Map<String, serde_json::Value> = view
                .files
                .iter()
                .map(|(id, path)| (id.clone(), json!(path.display().to_string())))
                .collect();
            axum::Json(json!({
                "running": names(running),
                "paused": names(paused),
                "defined": {"files": files, "topic": view.topic},
                "problems": view.problems,
            }))
            .into_response()
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

#[utoipa::path(get, path = "/v1/admin/targets/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The target id: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses(
        (status = 200, description = "`paused`, and `status`: the target's `/status` row", body = Object),
        (status = 400, description = "Not a target id", body = crate::openapi::Error),
        (status = 401, description = "No valid bearer token", body = crate::openapi::Error),
        (status = 404, description = "The target does not run here", body = crate::openapi::Error),
        (status = 503, description = "The admin token cannot be read, or the worker is stopping", body = crate::openapi::Error),
        (status = 500, description = "The command failed or timed out (the final checkpoint was not stored)", body = crate::openapi::Error),
    ))]
pub(crate) async fn get_target(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Response {
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

#[utoipa::path(get, path = "/v1/admin/targets/{id}/checkpoint", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The target id: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses(
        (status = 200, description = "`target`, `checkpoint` (the last event id stored, or null), `owner_epoch`", body = Object),
        (status = 400, description = "Not a target id", body = crate::openapi::Error),
        (status = 401, description = "No valid bearer token", body = crate::openapi::Error),
        (status = 404, description = "The target does not run here", body = crate::openapi::Error),
        (status = 503, description = "The admin token cannot be read, or the worker is stopping", body = crate::openapi::Error),
    ))]
pub(crate) async fn get_checkpoint(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Response {
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
#[utoipa::path(put, path = "/v1/admin/targets/{id}/checkpoint", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The target id: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    request_body(content = crate::openapi::CheckpointBody, content_type = "application/json", description = "The event id to resume after"),
    responses(
        (status = 200, description = "`target` and the `checkpoint` written: the target resumes after it", body = Object),
        crate::openapi::CommandRefusals,
    ))]
pub(crate) async fn set_checkpoint(
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

/// `DELETE …/checkpoint`: the target's checkpoint is reset (a tombstone, written through the
/// target's owner as a move is); it starts over without `Last-Event-ID`.
#[utoipa::path(delete, path = "/v1/admin/targets/{id}/checkpoint", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The target id: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses(
        (status = 200, description = "`target`, `checkpoint: null`: it starts over without `Last-Event-ID`", body = Object),
        crate::openapi::CommandRefusals,
    ))]
pub(crate) async fn reset_checkpoint(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    match admin.control.reset_checkpoint(&id).await {
        Ok(()) => axum::Json(json!({"target": id.as_str(), "checkpoint": null})).into_response(),
        Err(error) => control_error(&error),
    }
}

#[utoipa::path(post, path = "/v1/admin/targets/{id}/pause", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The target id: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses(
        (status = 200, description = "`target`, `paused: true`, the final `checkpoint` stored", body = Object),
        crate::openapi::CommandRefusals,
    ))]
pub(crate) async fn pause(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
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

#[utoipa::path(post, path = "/v1/admin/targets/{id}/resume", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The target id: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses(
        (status = 200, description = "`target`, `paused: false`", body = Object),
        crate::openapi::CommandRefusals,
    ))]
pub(crate) async fn resume(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
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
#[utoipa::path(post, path = "/v1/admin/targets/{id}/restart", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The target id: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses(
        (status = 200, description = "`target`, `restarted_from`: the checkpoint it started again from", body = Object),
        crate::openapi::CommandRefusals,
    ))]
pub(crate) async fn restart(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
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

/// `PUT /v1/admin/targets/{id}` with a target file's YAML: validated with the same rules and
/// messages as `sluice validate` (400 with every problem), refused for an id a target file
/// defines (409: files are read-only here), then written to the targets topic; answers once
/// Kafka stored it. Every worker reads it; the owner of the target's partition runs it.
#[utoipa::path(put, path = "/v1/admin/targets/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The target id: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    request_body(content = String, content_type = "application/yaml", description = "A target file's YAML, as in targets/*.yaml"),
    responses(
        (status = 200, description = "`target`, `defined: true`, the targets topic's `partition` and `offset` it was stored at", body = Object),
        (status = 400, description = "Not a target id, not UTF-8, an invalid definition (`problems`: field, message, kind, as `sluice validate` says), or another id in the body", body = crate::openapi::Error),
        (status = 401, description = "No valid bearer token", body = crate::openapi::Error),
        (status = 409, description = "A target file defines this id (files are read-only here)", body = crate::openapi::Error),
        (status = 503, description = "The admin token cannot be read, or the targets topic was not written", body = crate::openapi::Error),
    ))]
pub(crate) async fn put_target(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "not_text",
            "the body must be a target file's YAML, in UTF-8".to_owned(),
        );
    };
    let label = std::path::PathBuf::from(format!("{}/{}", admin.worker.topics.targets, id));
    let target = match sluice_config::target_from_text(&label, text, &admin.worker) {
        Ok(target) => target,
        Err(errors) => {
            let problems: Vec<serde_json::Value> = errors
                .problems
                .iter()
                .map(|p| json!({"field": p.field, "message": p.message, "kind": p.kind.as_str()}))
                .collect();
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "error": format!("invalid target definition: {}", crate::definitions::problems_text(&errors)),
                    "kind": "invalid_definition",
                    "problems": problems,
                })),
            )
                .into_response();
        }
    };
    if target.id != id {
        return refuse(
            StatusCode::BAD_REQUEST,
            "id_mismatch",
            format!(
                "the definition's id {:?} is not the path's {:?}",
                target.id.as_str(),
                id.as_str()
            ),
        );
    }
    if let Some(refused) = defined_by_file(&admin, &id) {
        return refused;
    }
    match topic::put(
        &admin.publisher,
        &admin.worker.topics.targets,
        id.as_str(),
        Some(text),
    )
    .await
    {
        Ok(delivered) => {
            tracing::info!(target_id = %id, "target definition written to the targets topic");
            axum::Json(json!({"target": id.as_str(), "defined": true, "partition": delivered.partition, "offset": delivered.offset}))
                .into_response()
        }
        Err(error) => write_failed(&error),
    }
}

/// `DELETE /v1/admin/targets/{id}`: a tombstone in the targets topic (its owner stops it);
/// 409 for a file's target, 404 for one the topic does not define.
#[utoipa::path(delete, path = "/v1/admin/targets/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The target id: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses(
        (status = 200, description = "`target`, `defined: false`, the tombstone's `partition` and `offset`", body = Object),
        (status = 400, description = "Not a target id", body = crate::openapi::Error),
        (status = 401, description = "No valid bearer token", body = crate::openapi::Error),
        (status = 404, description = "The targets topic does not define it", body = crate::openapi::Error),
        (status = 409, description = "A target file defines this id", body = crate::openapi::Error),
        (status = 503, description = "The admin token cannot be read, or the targets topic was not written", body = crate::openapi::Error),
    ))]
pub(crate) async fn delete_target(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    if let Some(refused) = defined_by_file(&admin, &id) {
        return refused;
    }
    let view = read_view(&admin.definitions);
    if !view.topic.contains(id.as_str()) {
        let message = if view.topic_loaded {
            format!("the targets topic does not define {:?}", id.as_str())
        } else {
            format!(
                "the targets topic does not define {:?} (it is still being read: try again)",
                id.as_str()
            )
        };
        return refuse(StatusCode::NOT_FOUND, "not_defined", message);
    }
    match topic::put(
        &admin.publisher,
        &admin.worker.topics.targets,
        id.as_str(),
        None,
    )
    .await
    {
        Ok(delivered) => {
            tracing::info!(target_id = %id, "target definition removed from the targets topic");
            axum::Json(json!({"target": id.as_str(), "defined": false, "partition": delivered.partition, "offset": delivered.offset}))
                .into_response()
        }
        Err(error) => write_failed(&error),
    }
}

/// 409 when a target file defines `id`: files are changed by editing them, not here.
fn defined_by_file(admin: &Admin, id: &TargetId) -> Option<Response> {
    let view = read_view(&admin.definitions);
    view.files.get(id.as_str()).map(|path| {
        refuse(
            StatusCode::CONFLICT,
            "defined_by_file",
            format!(
                "target {:?} is defined by the file {}: edit or remove the file instead",
                id.as_str(),
                path.display()
            ),
        )
    })
}

fn write_failed(error: &sluice_publish::PublishError) -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        error.kind(),
        format!("the targets topic was not written: {error}"),
    )
}
