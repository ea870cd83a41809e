//! What a stream request carries besides headers: its method and body (a `POST` or `REPORT`
//! subscription), and how a redirect changes them (RFC 9110 section 15.4): `307` and `308`
//! repeat the method and body; `303` turns any method but `HEAD` into a `GET` without a body;
//! `301` and `302` turn a `POST` into a `GET` without a body, as every user agent does.
//!
//! What it must NOT do: send anything, or show a body (it may be a secret).

use bytes::Bytes;
use http::{HeaderValue, Method};

/// The body sent with every attempt of a stream (the same on every reconnect).
#[derive(Clone)]
pub struct RequestBody {
    /// The bytes.
    pub bytes: Bytes,
    /// Its `Content-Type`.
    pub content_type: HeaderValue,
    /// Whether the body is a secret (read from a secret reference): it is then never sent to
    /// another origin, as the target's own headers are not.
    pub secret: bool,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes.
        f.debug_struct("RequestBody")
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .field("secret", &self.secret)
            .finish()
    }
}

/// The method and whether the body is sent again, after a redirect with `status` of a request
/// made with `method`.
pub(crate) fn after_redirect(status: u16, method: &Method) -> (Method, bool) {
    match status {
        303 if method != Method::HEAD => (Method::GET, false),
        301 | 302 if method == Method::POST => (Method::GET, false),
        _ => (method.clone(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_307_and_308_repeat_a_post_with_its_body() {
        let report = Method::from_bytes(b"REPORT").expect("a token");
        assert_eq!(after_redirect(307, &Method::POST), (Method::POST, true));
        assert_eq!(after_redirect(308, &Method::POST), (Method::POST, true));
        assert_eq!(after_redirect(301, &Method::POST), (Method::GET, false));
        assert_eq!(after_redirect(302, &Method::POST), (Method::GET, false));
        assert_eq!(after_redirect(303, &Method::POST), (Method::GET, false));
        assert_eq!(after_redirect(303, &report), (Method::GET, false));
        assert_eq!(after_redirect(302, &report), (report.clone(), true));
        assert_eq!(after_redirect(303, &Method::HEAD), (Method::HEAD, true));
        assert_eq!(after_redirect(302, &Method::GET), (Method::GET, true));
    }
}
