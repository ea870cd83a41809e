//! Any aggregator answers for any target: a request under `/v1/targets/{target}/` for a
//! target this aggregator does not hold is sent to its owner (307, `Location` on the owner's
//! base URL, the path and query kept), or answered 503 with `Retry-After` while no one owns its
//! partition (a rebalance, or an owner that died and was not replaced yet), or 404 for a target
//! the group does not aggregate. The owner is read from [`crate::owners`]; this must not serve a
//! state itself, so a stale view costs a client a redirect, never a wrong state.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_publish::partition_for;

use super::json_response;
use crate::owners::Owner;
use crate::shared::Shared;

/// How long a client waits before asking again during a rebalance.
const RETRY_AFTER: &str = "1";

/// The target a path names, if it is under `/v1/targets/{target}/`.
fn target_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/targets/")?;
    let (target, _) = rest.split_once('/')?;
    (!target.is_empty()).then_some(target)
}

/// Where `target` is answered, as this aggregator sees it: here (`None`), or the answer.
pub fn elsewhere(shared: &Shared, target: &str, path_and_query: &str) -> Option<Response> {
    if shared.store.get(target).is_some() {
        return None;
    }
    let Some(def) = shared.defs.get(target) else {
        return Some(super::error(
            StatusCode::NOT_FOUND,
            format!("target {target:?} is not aggregated by this group"),
        ));
    };
    let topic = &def.target.topic;
    let owner = shared
        .partition_count(topic)
        .map(|count| (partition_for(target, count), count));
    let (partition, owner) = match owner {
        Some((partition, _)) => (partition, shared.owners.owner_of(topic, partition)),
        None => (-1, Owner::Nobody),
    };
    Some(match owner {
        Owner::Other(url) => redirect(&url, path_and_query, target),
        Owner::Me => unavailable(format!(
            "target {target:?} is being restored here (partition {partition} was just assigned)"
        )),
        Owner::Nobody => unavailable(format!(
            "no aggregator owns target {target:?} right now (partition {partition} of {topic:?} is being reassigned)"
        )),
    })
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

fn unavailable(message: String) -> Response {
    let mut response = super::error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    response
}

/// The middleware on the per-target routes: passes a request on when the target is here.
pub async fn to_owner(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    if let Some(target) = target_of(uri.path())
        && let Some(answer) = elsewhere(&shared, target, &path_and_query)
    {
        return answer.into_response();
    }
    next.run(request).await
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
