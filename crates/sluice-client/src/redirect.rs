//! Redirects, followed by hand so that Sluice, not the HTTP library, decides what crosses them:
//! the target's own headers (tokens, cookies, API keys) go only to its own origin, an `https` to
//! `http` redirect is refused, no `Referer` is ever sent, and a redirect without a usable
//! `Location` is an error instead of a loop to the same URL. Used by the stream
//! ([`crate::Client::connect`]) and base-state fetches ([`crate::Client::fetch_document`]) alike.
//!
//! What it must NOT do: read a body, classify statuses other than redirects, or show a URL
//! without [`crate::redact::redact_url`].

use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, Method};
use url::Url;

use crate::link::{LinkError, resolve_link};
use crate::redact::redact_url;
use crate::request::{RequestBody, after_redirect};

/// Why a chain of redirects was not followed to its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedirectError {
    /// More redirects than the limit.
    #[error("too many redirects (limit {limit})")]
    TooMany {
        /// The configured limit.
        limit: usize,
    },
    /// A redirect status without a `Location` the client can follow (none, empty, not a URL,
    /// or not http/https).
    #[error("http status {status} redirect without a usable location: {why}")]
    BadLocation {
        /// The redirect status.
        status: u16,
        /// What is wrong with it (never the location's text: it may carry a secret).
        why: &'static str,
    },
    /// A redirect from `https` to `http`: the request (headers, `Last-Event-ID`) would cross the
    /// network in the clear.
    #[error("refused a redirect from https to plain http ({to})")]
    Downgrade {
        /// Where it pointed, redacted.
        to: String,
    },
    /// A `307`/`308` to another origin of a request whose body is a secret: repeating the
    /// request would send the secret there, and it cannot be repeated without it.
    #[error(
        "refused an http status {status} redirect to another origin ({to}): the request body is a secret"
    )]
    SecretBodyElsewhere {
        /// The redirect status.
        status: u16,
        /// Where it pointed, redacted.
        to: String,
    },
}

/// Why [`send`] got no final response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The HTTP stack failed (connect, TLS, proxy, request).
    Transport(reqwest::Error),
    /// A redirect could not be followed.
    Redirect(RedirectError),
}

/// The method and body of a request [`send`] makes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    /// The method of the first hop.
    pub method: &'a Method,
    /// The body of the first hop.
    pub body: Option<&'a RequestBody>,
}

impl Outgoing<'_> {
    /// A `GET` without a body.
    pub fn get() -> Outgoing<'static> {
        Outgoing {
            method: &Method::GET,
            body: None,
        }
    }
}

/// `outgoing` (method and body) to `url` with `own_headers` (the target's configured headers)
/// and `common` headers (sent on every hop: `Accept`, `Last-Event-ID`), following up to
/// `max_redirects` redirects. The own headers are dropped from the first hop to another origin
/// on, and not sent again; the method and body change as [`after_redirect`] says (each change
/// logged), and a secret body never goes to another origin.
pub(crate) async fn send(
    http: &reqwest::Client,
    url: &Url,
    own_headers: &HeaderMap,
    common: &HeaderMap,
    outgoing: Outgoing<'_>,
    max_redirects: usize,
) -> Result<reqwest::Response, SendError> {
    let mut current = url.clone();
    let mut same_origin = true;
    let mut hops = 0;
    let mut method = outgoing.method.clone();
    let mut body = outgoing.body;
    loop {
        let mut request = http.request(method.clone(), current.clone());
        if same_origin {
            request = request.headers(own_headers.clone());
        }
        request = request.headers(common.clone());
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, body.content_type.clone())
                .body(body.bytes.clone());
        }
        let response = request.send().await.map_err(SendError::Transport)?;
        let status = response.status().as_u16();
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Ok(response);
        }
        if hops == max_redirects {
            return Err(SendError::Redirect(RedirectError::TooMany {
                limit: max_redirects,
            }));
        }
        hops += 1;
        let next = next_url(&current, status, response.headers()).map_err(SendError::Redirect)?;
        if next.origin() != url.origin() {
            same_origin = false;
        }
        let (next_method, keep_body) = after_redirect(status, &method);
        if next_method != method {
            tracing::info!(
                status,
                from = %method,
                to = %next_method,
                location = %redact_url(&next),
                "redirect changes the request method; its body is not sent again"
            );
        }
        method = next_method;
        if !keep_body {
            body = None;
        }
        if body.is_some_and(|b| b.secret) && !same_origin {
            return Err(SendError::Redirect(RedirectError::SecretBodyElsewhere {
                status,
                to: redact_url(&next),
            }));
        }
        current = next;
    }
}

/// Where a redirect with `status` and `headers` from `current` points (the link rule of
/// [`resolve_link`]; the fragment of `current` is kept, as RFC 9110 says).
fn next_url(current: &Url, status: u16, headers: &HeaderMap) -> Result<Url, RedirectError> {
    let bad = |why| RedirectError::BadLocation { status, why };
    let location = headers
        .get(LOCATION)
        .ok_or_else(|| bad("no location header"))?;
    let location = location
        .to_str()
        .map_err(|_| bad("the location is not visible ascii"))?;
    let mut next = resolve_link(current, location).map_err(|error| match error {
        LinkError::Unusable(why) => bad(why),
        LinkError::Downgrade { to } => RedirectError::Downgrade { to },
    })?;
    next.set_fragment(current.fragment());
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn located(location: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(location) {
            headers.insert(LOCATION, value);
        }
        headers
    }

    fn why(current: &str, location: &str) -> String {
        let current = Url::parse(current).expect("test url");
        match next_url(&current, 302, &located(location)) {
            Ok(next) => next.to_string(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn relative_and_absolute_locations_resolve_against_the_current_url() {
        assert_eq!(why("http://a/x/y", "z"), "http://a/x/z");
        assert_eq!(why("http://a/x/y", "/s?q=1"), "http://a/s?q=1");
        assert_eq!(why("http://a/x", "https://b/y"), "https://b/y");
    }

    #[test]
    fn unusable_locations_are_errors_not_loops() {
        assert!(why("http://a/x", "").contains("empty"));
        assert!(why("http://a/x", "   ").contains("empty"));
        assert!(why("http://a/x", "ftp://b/y").contains("not an http or https url"));
        assert!(why("http://a/x", "http://[::1").contains("not a url"));
        let current = Url::parse("http://a/x").expect("test url");
        let none = next_url(&current, 301, &HeaderMap::new()).map_err(|e| e.to_string());
        assert_eq!(
            none,
            Err("http status 301 redirect without a usable location: no location header".into())
        );
    }

    #[test]
    fn https_to_http_is_refused_without_showing_secrets() {
        let shown = why("https://a/x", "http://user:pw@b/y?token=s3cret");
        assert!(
            shown.starts_with("refused a redirect from https"),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw"),
            "{shown}"
        );
    }
}
