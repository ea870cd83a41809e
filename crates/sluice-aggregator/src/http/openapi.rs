//! The aggregator's OpenAPI 3.1 document, generated from the routes themselves: every route is
//! registered through [`documented`], which takes each handler's `#[utoipa::path]`, so a route
//! cannot exist without its entry. `sluice openapi aggregator` prints it; `docs/openapi/`
//! holds the committed copy, which a test keeps equal to this. It must not describe anything
//! the handlers do not do: what a handler answers is written on the handler.

use std::sync::Arc;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::shared::Shared;

/// An error answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Error {
    /// What is wrong, for a person.
    error: String,
    /// What kind of error, for a program (`unauthorized`, `token_unreadable`, …), when given.
    kind: Option<String>,
    /// The query parameter at fault (400).
    parameter: Option<String>,
    /// The base URL of the aggregator that owns the target (307).
    owner: Option<String>,
}

/// The wait parameters every state read takes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct Wait {
    /// Wait (up to `timeout`) for at least this state version; 504 when it does not come.
    min_version: Option<u64>,
    /// Wait (up to `timeout`) for at least this change sequence.
    min_seq: Option<u64>,
    /// How long `min_version` / `min_seq` wait: seconds (`2`, `0.5`, `2s`) or milliseconds
    /// (`500ms`); default 10s, at most 30s.
    #[param(
        pattern = "^0*(([0-9]|[12][0-9])(\\.[0-9]+)?|30(\\.0+)?)s?$|^0*([0-9]{1,4}|[12][0-9]{4}|30000)ms$"
    )]
    timeout: Option<String>,
}

/// What a state read may answer besides its 200.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ReadAnswers {
    /// `If-None-Match` names the version served.
    #[response(status = 304)]
    NotModified,
    /// Another aggregator of the group owns the target: `Location` is the same read there.
    #[response(status = 307)]
    Elsewhere(Error),
    /// A bad query parameter (named in `parameter`).
    #[response(status = 400)]
    BadParameter(Error),
    /// No valid bearer token (when `http.auth.bearer` is configured).
    #[response(status = 401)]
    Unauthorized(Error),
    /// The group does not aggregate this target (or, for one entity, the state has no such key).
    #[response(status = 404)]
    NotFound(Error),
    /// Syncing (no complete state yet), or no aggregator owns the target right now (a
    /// rebalance): ask again after `Retry-After`.
    #[response(status = 503)]
    Unavailable(Error),
    /// `min_version` / `min_seq` not reached within `timeout`.
    #[response(status = 504)]
    NotReached(Error),
}

/// The bearer token, when `http.auth.bearer` is configured.
struct BearerToken;

impl Modify for BearerToken {
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
        title = "Sluice aggregator",
        description = "The merged state of each target: whole, paged, one entity, and as a stream of changes. Any aggregator of a group answers for any target (307 to its owner). With `http.auth.bearer` configured every `/v1/` route needs `Authorization: Bearer <token>`; `/`, `/metrics`, `/healthz` and `/readyz` stay open.",
        license(name = "Apache-2.0")
    ),
    components(schemas(Error)),
    modifiers(&BearerToken),
    tags(
        (name = "state", description = "The merged state of the targets"),
        (name = "operations", description = "Probes, metrics and the page")
    )
)]
struct ApiDoc;

/// The per-target reads (routed to the owner, behind the token).
pub fn per_target() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .routes(routes!(super::state))
        .routes(routes!(super::entities::list))
        .routes(routes!(super::entity))
        .routes(routes!(super::stream::stream))
}

/// The group's target list (behind the token).
pub fn listing() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new().routes(routes!(super::targets))
}

/// The page, the probes and the metrics (always open).
pub fn open() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .routes(routes!(super::index))
        .routes(routes!(super::healthz))
        .routes(routes!(super::readyz))
        .routes(routes!(super::metrics))
}

/// Every route of the API with its documentation (no state, no layers).
pub fn documented() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(listing())
        .merge(per_target())
        .merge(open())
}

/// The document, as pretty JSON with a trailing newline (the committed file's form).
pub fn document() -> String {
    let mut text = documented()
        .into_openapi()
        .to_pretty_json()
        .unwrap_or_default();
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
            "/../../docs/openapi/aggregator.json"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == document(),
            "docs/openapi/aggregator.json is not what the code generates: run\n  cargo run -p sluice -- openapi aggregator > docs/openapi/aggregator.json"
        );
    }

    #[test]
    fn every_route_is_documented_with_its_answers() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v1/targets",
            "/v1/targets/{target}/state",
            "/v1/targets/{target}/entities",
            "/v1/targets/{target}/entities/{key}",
            "/v1/targets/{target}/stream",
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(paths[path]["get"]["responses"]["200"].is_object(), "{path}");
        }
        let state = &paths["/v1/targets/{target}/state"]["get"];
        for status in ["304", "307", "400", "401", "404", "503", "504"] {
            assert!(state["responses"][status].is_object(), "state {status}");
        }
    }
}
