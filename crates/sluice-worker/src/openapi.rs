//! The worker's OpenAPI 3.1 document, generated from the routes themselves: the operations
//! server's routes ([`ops`]) and the admin API's ([`admin`]) are registered through
//! `utoipa-axum`, which takes each handler's `#[utoipa::path]`, so a route cannot exist without
//! its entry. `sluice openapi worker` prints it; `docs/openapi/worker.json` is the committed copy,
//! which a test keeps equal to this. It must not describe anything the handlers do not do: what
//! a handler answers is written on the handler.

use std::sync::Arc;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// An error answer of the admin API.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Error {
    /// What is wrong, for a person.
    error: String,
    /// What kind of error, for a program (`unauthorized`, `bad_id`, `not_running`,
    /// `defined_by_file`, …).
    kind: String,
}

/// What a command to a running target (pause, resume, restart, a checkpoint change) may answer
/// besides its 200.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum CommandRefusals {
    /// Not a target id (or, for a checkpoint, not a checkpoint body).
    #[response(status = 400)]
    BadRequest(Error),
    /// No valid bearer token.
    #[response(status = 401)]
    Unauthorized(Error),
    /// The target does not run here.
    #[response(status = 404)]
    NotRunning(Error),
    /// Not paused (resume), or already running.
    #[response(status = 409)]
    Conflict(Error),
    /// The command failed or timed out (the final checkpoint was not stored).
    #[response(status = 500)]
    Failed(Error),
    /// The admin token cannot be read, or the worker is stopping.
    #[response(status = 503)]
    Unavailable(Error),
}

/// `PUT /v1/admin/targets/{id}/checkpoint`'s body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CheckpointBody {
    /// The SSE event id the target resumes after: non-empty, no line break or NUL.
    #[schema(min_length = 1, pattern = "^[^\\r\\n\\x00]+$")]
    checkpoint: String,
}

/// The status table's query (`/status`, `/status.json`, `/status.html`). An empty value is the
/// same as none.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct StatusQuery {
    /// Only targets in this state.
    #[param(pattern = "^(starting|connecting|streaming|backoff|stopped)?$")]
    state: Option<String>,
    /// Only targets whose id, URL, owner or last error contains this text.
    q: Option<String>,
    /// The order: `id` (default), `state`, `events`, `last_event`, `reconnects`.
    #[param(pattern = "^(id|state|events|last_event|reconnects)?$")]
    sort: Option<String>,
    /// `asc` (default) or `desc`.
    #[param(pattern = "^(asc|desc)?$")]
    order: Option<String>,
    /// The page, from 1.
    #[param(pattern = "^([1-9][0-9]{0,18})?$")]
    page: Option<String>,
    /// Rows a page, 1 to 1000 (JSON: every row when absent; the console: 100).
    #[param(pattern = "^([1-9][0-9]{0,2}|1000)?$")]
    per_page: Option<String>,
}

/// The admin token.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice worker",
        description = "The worker's operations server: status (JSON and the console), metrics and probes, open; and the admin API under `/v1/admin/` (targets and their checkpoints), present only when `admin.token` is configured, every request with `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(Error, CheckpointBody)),
    modifiers(&AdminToken),
    tags(
        (name = "operations", description = "Status, metrics and probes"),
        (name = "admin", description = "Targets and checkpoints, behind the admin token")
    )
)]
struct ApiDoc;

/// The operations server's routes (always there, open).
pub(crate) fn ops() -> OpenApiRouter<Arc<crate::http::Ops>> {
    use crate::http;
    OpenApiRouter::new()
        .routes(routes!(http::index))
        .routes(routes!(http::status))
        .routes(routes!(http::status_json))
        .routes(routes!(http::status_html))
        .routes(routes!(http::history_json))
        .routes(routes!(http::fleet_json))
        .routes(routes!(http::definitions_json))
        .routes(routes!(http::metrics))
        .routes(routes!(http::healthz))
        .routes(routes!(http::readyz))
}

/// The admin API's routes (with `admin.token`).
pub(crate) fn admin() -> OpenApiRouter<Arc<crate::admin::Admin>> {
    use crate::admin;
    OpenApiRouter::new()
        .routes(routes!(admin::list))
        .routes(routes!(
            admin::get_target,
            admin::put_target,
            admin::delete_target
        ))
        .routes(routes!(
            admin::get_checkpoint,
            admin::set_checkpoint,
            admin::reset_checkpoint
        ))
        .routes(routes!(admin::pause))
        .routes(routes!(admin::resume))
        .routes(routes!(admin::restart))
}

/// The document, as pretty JSON with a trailing newline (the committed file's form).
pub(crate) fn document() -> String {
    let (_, ops) = ops().split_for_parts();
    let (_, admin) = admin().split_for_parts();
    let mut doc = ApiDoc::openapi();
    doc.merge(ops);
    doc.merge(admin);
    let mut text = doc.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi/worker.json"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == document(),
            "docs/openapi/worker.json is not what the code generates: run\n  cargo run -p sluice -- openapi worker > docs/openapi/worker.json"
        );
    }

    #[test]
    fn every_route_is_documented_with_its_answers() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/", "get"),
            ("/status", "get"),
            ("/status.json", "get"),
            ("/status.html", "get"),
            ("/status/history.json", "get"),
            ("/status/fleet.json", "get"),
            ("/status/definitions.json", "get"),
            ("/metrics", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/v1/admin/targets", "get"),
            ("/v1/admin/targets/{id}", "get"),
            ("/v1/admin/targets/{id}", "put"),
            ("/v1/admin/targets/{id}", "delete"),
            ("/v1/admin/targets/{id}/checkpoint", "get"),
            ("/v1/admin/targets/{id}/checkpoint", "put"),
            ("/v1/admin/targets/{id}/checkpoint", "delete"),
            ("/v1/admin/targets/{id}/pause", "post"),
            ("/v1/admin/targets/{id}/resume", "post"),
            ("/v1/admin/targets/{id}/restart", "post"),
        ] {
            assert!(
                paths[path][method]["responses"]["200"].is_object(),
                "{method} {path}"
            );
        }
        let pause = &paths["/v1/admin/targets/{id}/pause"]["post"];
        for status in ["400", "401", "404", "409", "503"] {
            assert!(pause["responses"][status].is_object(), "pause {status}");
        }
        assert!(
            pause["security"].is_array(),
            "the admin API needs the token"
        );
    }
}
