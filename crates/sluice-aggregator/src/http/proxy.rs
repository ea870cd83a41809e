//! `http.routing: proxy`: a read of a target another aggregator owns is forwarded to the owner
//! and its answer (status, headers, body; a change stream as it flows) streamed back, with
//! `Sluice-Served-By` naming the owner. One hop only: a forwarded request carries
//! `Sluice-Forwarded-By`, and an aggregator that gets one for a target it does not hold answers
//! 503 with `Retry-After` (the two disagree on the owner during a rebalance) instead of
//! forwarding it again.
//!
//! What is forwarded: the method, path and query, and the headers that shape the answer
//! (`Accept`, `If-None-Match`, `Last-Event-ID`); not the client's credentials: when the API
//! has a bearer token, this aggregator sends its own (the group shares it). What must not
//! happen: a wrong state (an owner that cannot be reached is a 503), a secret in an answer or
//! a log, or a request to anything but the owner's advertised base URL.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use sluice_config::SecretRef;

use super::routing::unavailable;

/// The header a forwarded request carries: the forwarding aggregator's base URL.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("sluice-forwarded-by");
/// The header of a forwarded answer: the owner that served it.
pub const SERVED_BY: HeaderName = HeaderName::from_static("sluice-served-by");

/// Request headers passed on to the owner.
const FORWARDED_HEADERS: [HeaderName; 3] = [
    header::ACCEPT,
    header::IF_NONE_MATCH,
    HeaderName::from_static("last-event-id"),
];

/// Connection-level headers of the owner's answer, which are this connection's own.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The owner must accept the connection this fast; an answer (or, on a stream, the next
/// bytes: the owner sends a keep-alive comment every 15 s) must come within [`READ_TIMEOUT`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Forwards requests to owners.
pub struct Proxy {
    client: reqwest::Client,
    /// This aggregator's base URL, sent in [`FORWARDED_BY`].
    me: HeaderValue,
    /// The API's token, sent to the owner (which requires the same one).
    bearer: Option<SecretRef>,
}

impl Proxy {
    /// A proxy for the aggregator at `me` whose API requires `bearer`.
    pub fn new(me: &str, bearer: Option<SecretRef>) -> Result<Proxy, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            // The owner's answer goes back as it came: no decompression, no redirect followed,
            // no proxy from the environment between two aggregators.
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the proxy's HTTP client: {e}"))?;
        let me = HeaderValue::from_str(me).map_err(|_| format!("unusable base URL {me:?}"))?;
        Ok(Proxy { client, me, bearer })
    }

    /// `request` (for `target`) sent to the owner at `base`, and the owner's answer.
    pub async fn forward(
        &self,
        base: &str,
        path_and_query: &str,
        target: &str,
        request: axum::extract::Request,
    ) -> Response {
        if let Some(from) = request.headers().get(&FORWARDED_BY) {
            let from = String::from_utf8_lossy(from.as_bytes()).into_owned();
            return unavailable(format!(
                "target {target:?} was forwarded here by {from}, but its owner is {base} as this \
                 aggregator sees it (a rebalance): ask again"
            ));
        }
        let url = format!("{}{path_and_query}", base.trim_end_matches('/'));
        let mut outgoing = self
            .client
            .request(request.method().clone(), &url)
            .header(FORWARDED_BY, self.me.clone());
        for name in &FORWARDED_HEADERS {
            for value in request.headers().get_all(name) {
                outgoing = outgoing.header(name, value);
            }
        }
        if let Some(token) = &self.bearer {
            match token.resolve() {
                Ok(token) => outgoing = outgoing.bearer_auth(token.expose()),
                Err(error) => {
                    tracing::error!(kind = error.kind(), %error, "cannot read the API token to forward a request");
                    return unavailable(
                        "the API token cannot be read to forward this request".to_owned(),
                    );
                }
            }
        }
        let answer = match outgoing.send().await {
            Ok(answer) => answer,
            Err(error) => {
                let why = if error.is_connect() {
                    "refused or unreachable"
                } else if error.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                tracing::warn!(target_id = target, owner = base, error = %error, "forwarding a read to the owner {why}");
                return unavailable(format!(
                    "target {target:?}: its owner {base} did not answer ({why})"
                ));
            }
        };
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut response = Response::builder().status(status);
        if let Some(headers) = response.headers_mut() {
            for (name, value) in answer.headers() {
                if !HOP_BY_HOP.contains(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
            if let Ok(owner) = HeaderValue::from_str(base) {
                headers.insert(SERVED_BY, owner);
            }
        }
        let body = Body::from_stream(answer.bytes_stream().map(|chunk| {
            chunk.map_err(|e| std::io::Error::other(format!("the owner's answer broke off: {e}")))
        }));
        response
            .body(body)
            .unwrap_or_else(|_| unavailable(format!("target {target:?}: unusable answer")))
    }
}
