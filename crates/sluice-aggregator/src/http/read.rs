//! What every state read shares: its query parameters (checked, a bad one answered 400 naming
//! it), the wait for a state at least as new as the client asks (`min_version`, `min_seq`,
//! bounded by `timeout`), the headers naming the version served and its `ETag`, and the 304
//! answer to `If-None-Match`. A read takes one immutable version of the state and never holds the
//! target's lock past that O(1) copy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{error, json_response, not_owned, syncing};
use crate::shared::Shared;
use crate::store::Cell;
use crate::versions::StateView;

/// How long a read with `min_version` / `min_seq` waits when it gives no `timeout`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// The longest `timeout` a read may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// A `timeout` value: decimal seconds (`2`, `0.5`, `2s`) or whole milliseconds (`500ms`),
/// exactly what the OpenAPI document's pattern allows.
fn wait_duration(text: &str) -> Option<Duration> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(ms) = text.strip_suffix("ms") {
        return digits(ms).then(|| ms.parse().ok().map(Duration::from_millis))?;
    }
    let seconds = text.strip_suffix('s').unwrap_or(text);
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, "0"));
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    seconds
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// The parameters every state read accepts.
pub const WAIT_PARAMS: [&str; 3] = ["min_version", "min_seq", "timeout"];

/// A 400 answer naming the parameter at fault.
pub fn bad_param(name: &str, message: impl std::fmt::Display) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        serde_json::to_vec(&json!({
            "error": format!("parameter {name:?}: {message}"),
            "parameter": name,
        }))
        .unwrap_or_default(),
    )
}

/// The query's parameters by name: each at most once, each one of `allowed`.
pub fn params(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, Box<Response>> {
    let mut params = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !allowed.contains(&&*name) {
            return Err(Box::new(bad_param(
                &name,
                format!(
                    "unknown parameter (this endpoint takes {})",
                    allowed.join(", ")
                ),
            )));
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(Box::new(bad_param(&name, "given twice")));
        }
    }
    Ok(params)
}

/// A non-negative integer parameter.
pub fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, Box<Response>> {
    params
        .get(name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| Box::new(bad_param(name, format!("{v:?} is not a whole number"))))
        })
        .transpose()
}

/// How new a state the client waits for, and how long.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wait {
    min_version: Option<u64>,
    min_seq: Option<u64>,
    timeout: Duration,
}

impl Wait {
    /// From `min_version`, `min_seq` and `timeout` (seconds, `2.5`, or a duration, `500ms`;
    /// at most [`MAX_WAIT`]).
    pub fn from_params(params: &HashMap<String, String>) -> Result<Wait, Box<Response>> {
        let timeout = match params.get("timeout") {
            None => DEFAULT_WAIT,
            Some(v) => {
                let parsed = wait_duration(v).ok_or_else(|| {
                    Box::new(bad_param(
                        "timeout",
                        format!(
                            "{v:?} is not a duration (seconds such as 2 or 0.5, or 2s, or 500ms)"
                        ),
                    ))
                })?;
                if parsed > MAX_WAIT {
                    return Err(Box::new(bad_param(
                        "timeout",
                        format!("at most {}s", MAX_WAIT.as_secs()),
                    )));
                }
                parsed
            }
        };
        Ok(Wait {
            min_version: number(params, "min_version")?,
            min_seq: number(params, "min_seq")?,
            timeout,
        })
    }

    /// Whether the client waits for anything.
    pub fn waits(&self) -> bool {
        self.min_version.is_some() || self.min_seq.is_some()
    }

    fn reached(&self, view: &StateView) -> bool {
        self.min_version
            .is_none_or(|min| view.version.is_some_and(|v| v >= min))
            && self.min_seq.is_none_or(|min| view.change_seq >= min)
    }
}

/// The current version of `target`, once it is at least as new as `wait` asks (504 after its
/// timeout; 404 not owned here; 503 no state yet).
pub async fn current(
    shared: &Shared,
    target: &str,
    wait: Wait,
) -> Result<(Arc<Cell>, StateView), Box<Response>> {
    let Some(cell) = shared.store.get(target) else {
        return Err(Box::new(not_owned(target)));
    };
    if !wait.waits() {
        return match cell.capture() {
            Some(view) => Ok((cell, view)),
            None => Err(Box::new(syncing(target))),
        };
    }
    // Listening before each look: a change after it is seen by the receiver.
    let mut listener = cell.listen();
    let deadline = tokio::time::Instant::now() + wait.timeout;
    let mut last = None;
    loop {
        if let Some(view) = cell.capture() {
            if wait.reached(&view) {
                return Ok((cell, view));
            }
            last = Some(view);
        }
        tokio::select! {
            received = listener.rx.recv() => match received {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Err(Box::new(not_owned(target))),
            },
            () = cell.gone.cancelled() => return Err(Box::new(not_owned(target))),
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    let mut body = json!({
        "error": format!(
            "target {target:?} did not reach the state asked for within {:?}",
            wait.timeout
        ),
        "min_version": wait.min_version,
        "min_seq": wait.min_seq,
    });
    if let Some(view) = &last {
        body["version"] = json!(view.version);
        body["change_seq"] = json!(view.change_seq);
    }
    let response = json_response(
        StatusCode::GATEWAY_TIMEOUT,
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    Err(Box::new(match &last {
        Some(view) => with_version(response, view),
        None => response,
    }))
}

/// 304 when `If-None-Match` names `view`'s tag (or is `*`).
pub fn not_modified(headers: &HeaderMap, view: &StateView) -> Option<Response> {
    let tag = view.etag();
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag);
    matches.then(|| with_version(StatusCode::NOT_MODIFIED.into_response(), view))
}

/// Header: the state's version (absent when it has none).
pub const VERSION: HeaderName = HeaderName::from_static("sluice-version");
/// Header: the state's change sequence.
pub const CHANGE_SEQ: HeaderName = HeaderName::from_static("sluice-change-seq");
/// Header: the target's events partition.
pub const PARTITION: HeaderName = HeaderName::from_static("sluice-kafka-partition");
/// Header: every record of the partition below this offset is reflected.
pub const NEXT_OFFSET: HeaderName = HeaderName::from_static("sluice-kafka-next-offset");

/// `response` with the headers naming `view` and its `ETag`.
pub fn with_version(mut response: Response, view: &StateView) -> Response {
    let headers = response.headers_mut();
    let mut put = |name: HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    if let Some(version) = view.version {
        put(VERSION, version.to_string());
    }
    put(CHANGE_SEQ, view.change_seq.to_string());
    put(PARTITION, view.partition.to_string());
    put(NEXT_OFFSET, view.next_offset.to_string());
    put(header::ETAG, view.etag());
    response
}

/// A 500 for a body that could not be written.
pub fn unwritable(target: &str) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("target {target:?}: the state could not be written"),
    )
}
