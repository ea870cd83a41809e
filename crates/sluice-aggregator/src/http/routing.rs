//! Any aggregator answers for any target: a request under `/v1/targets/{target}/` for a
//! target this aggregator does not hold goes to its owner: a 307 with `Location` on the owner's
//! base URL (the path and query kept), or, with `http.routing: proxy`, the request forwarded to
//! the owner and its answer streamed back (`proxy`). While no one owns the target's partition
//! (a rebalance, or an owner that died and was not replaced yet) the answer is 503 with
//! `Retry-After`; a target the group does not aggregate is 404. The owner is read from
//! [`crate::owners`]; this must not serve a state itself, so a stale view costs a client a
//! redirect or a 503, never a wrong state.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_publish::partition_for;

use super::json_response;
use super::proxy::Proxy;
use crate::owners::Owner;
use crate::shared::Shared;

/// How long a client waits before asking again during a rebalance.
pub const RETRY_AFTER: &str = "1";

/// The routing middleware's state: the shared state, and the proxy when requests are
/// forwarded rather than redirected.
pub struct Route {
    pub shared: Arc<Shared>,
    pub proxy: Option<Proxy>,
}

/// The target a path names, if it is under `/v1/targets/{target}/`.
fn target_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/targets/")?;
    let (target, _) = rest.split_once('/')?;
    (!target.is_empty()).then_some(target)
}

/// Where a target is answered, as this aggregator sees it.
enum Located {
    /// Here.
    Here,
    /// By the aggregator at this base URL.
    Owner(String),
    /// Nowhere right now, or never: the answer.
    Answer(Response),
}

fn locate(shared: &Shared, target: &str) -> Located {
    if shared.store.get(target).is_some() {
        return Located::Here;
    }
    let Some(def) = shared.defs.get(target) else {
        return Located::Answer(super::error(
            StatusCode::NOT_FOUND,
            format!("target {target:?} is not aggregated by this group"),
        ));
    };
    let topic = &def.target.topic;
    let (partition, owner) = match shared.partition_count(topic) {
        Some(count) => {
            let partition = partition_for(target, count);
            (partition, shared.owners.owner_of(topic, partition))
        }
        None => (-1, Owner::Nobody),
    };
    match owner {
        Owner::Other(url) => Located::Owner(url),
        Owner::Me => Located::Answer(unavailable(format!(
            "target {target:?} is being restored here (partition {partition} was just assigned)"
        ))),
        Owner::Nobody => Located::Answer(unavailable(format!(
            "no aggregator owns target {target:?} right now (partition {partition} of {topic:?} is being reassigned)"
        ))),
    }
}

fn redirect(base: &str, path_and_query: &str, target: &str) -> Response {
    let location = format!("{}{path_and_query}", base.trim_end_matches('/'));
    let Ok(value) = HeaderValue::from_str(&location) else {
        return unavailable(format!("target {target:?}: its owner's URL is unusable"));
    };
    let body = serde_json::to_vec(&json!({
        "error": format!("target {target:?} is aggregated by {base}"),
        "owner": base,
    }))
    .unwrap_or_default();
    let mut response = json_response(StatusCode::TEMPORARY_REDIRECT, body);
    response.headers_mut().insert(header::LOCATION, value);
    response
}

/// 503 with `Retry-After`: ask again in a moment.
pub fn unavailable(message: String) -> Response {
    let mut response = super::error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    response
}

/// The middleware on the per-target routes: passes a request on when the target is here.
pub async fn to_owner(
    State(route): State<Arc<Route>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    let Some(target) = target_of(uri.path()) else {
        return next.run(request).await;
    };
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    match locate(&route.shared, target) {
        Located::Here => next.run(request).await,
        Located::Answer(answer) => answer.into_response(),
        Located::Owner(base) => match &route.proxy {
            None => redirect(&base, &path_and_query, target),
            Some(proxy) => {
                let target = target.to_owned();
                proxy
                    .forward(&base, &path_and_query, &target, request)
                    .await
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_per_target_paths_name_a_target() {
        assert_eq!(target_of("/v1/targets/t/state"), Some("t"));
        assert_eq!(target_of("/v1/targets/t/entities/k"), Some("t"));
        assert_eq!(target_of("/v1/targets"), None);
        assert_eq!(target_of("/v1/targets/"), None);
        assert_eq!(target_of("/v1/targets//state"), None);
        assert_eq!(target_of("/metrics"), None);
    }
}
