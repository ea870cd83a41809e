//! Who may read the API: an optional bearer token (`http.auth.bearer`) on the read routes
//! (`/v1/…`, the change streams included), and CORS headers for the browser origins
//! `http.cors.allowed_origins` lists. `/`, `/metrics`, `/healthz` and `/readyz` stay open, as
//! probes and scrapers expect.
//!
//! The token is read afresh per request (a rotated file takes effect at once) and compared in
//! constant time. What this must NOT do: show the token anywhere (logs, answers, metrics), or
//! let a request through when the token cannot be read (that answers 503).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_config::{CorsOrigins, SecretRef};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::read;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// `api` behind the bearer token when one is configured.
pub fn require_bearer<S: Clone + Send + Sync + 'static>(
    api: Router<S>,
    bearer: Option<SecretRef>,
) -> Router<S> {
    match bearer {
        None => api,
        Some(token) => api.route_layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            check_bearer,
        )),
    }
}

/// `app` with CORS headers for `origins` (unchanged when none are configured).
pub fn with_cors(app: Router, origins: &CorsOrigins) -> Router {
    let allow = match origins {
        CorsOrigins::None => return app,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        ),
    };
    // What a browser script may read: the state's position and its cache validator.
    let exposed = [
        header::ETAG,
        header::RETRY_AFTER,
        read::VERSION,
        read::CHANGE_SEQ,
        read::PARTITION,
        read::NEXT_OFFSET,
    ];
    app.layer(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::HEAD])
            .allow_headers([
                header::AUTHORIZATION,
                header::IF_NONE_MATCH,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers(exposed)
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// Answers a request without the configured token (401, or 503 when the token cannot be read)
/// instead of passing it on.
async fn check_bearer(
    State(token): State<Arc<SecretRef>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match token.authorizes(authorization) {
        Ok(true) => next.run(request).await,
        Ok(false) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(
                json!({"error": "a valid bearer token is required", "kind": "unauthorized"}),
            ),
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "the read API's token cannot be read: refusing reads");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(
                    json!({"error": "the API's token cannot be read", "kind": "token_unreadable"}),
                ),
            )
                .into_response()
        }
    }
}
