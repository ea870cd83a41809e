//! OAuth2 client credentials (RFC 6749 section 4.4): a [`TokenSource`] fetches an access token
//! from the token endpoint (client id and secret in HTTP Basic auth, `grant_type` and `scope` in
//! the form body), caches it until shortly before it expires, and refreshes it once for every
//! client that shares the source (single flight: concurrent callers wait for the one request). A
//! `401` from the upstream makes the client ask for [`TokenSource::refresh`] once and retry.
//! [`TokenSources`] hands out one source per distinct (token URL, client id, scopes).
//!
//! What it must NOT do: show a token or the client secret anywhere (errors name the token URL,
//! redacted, and what went wrong), or send them to another host than the token endpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use crate::redact::redact_url;
use crate::redirect::{self, Outgoing, SendError};

/// Reads the client secret afresh (a rotated secret is used at the next token request); its
/// error names where the secret lives, never its value.
pub type SecretReader = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Largest token response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How long a token request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A token counts as expired this long before the `expires_in` the server gave, at most a fifth
/// of its lifetime: a connection opened just before expiry still gets a token that works.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// What identifies a client-credentials grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    /// The token endpoint.
    pub token_url: Url,
    /// The client id.
    pub client_id: String,
    /// The scopes asked for (`scope`, space-separated); empty = none sent.
    pub scopes: Vec<String>,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The client secret could not be read.
    #[error("cannot read the oauth2 client secret: {0}")]
    Secret(String),
    /// The token request failed on the way (connect, TLS, timeout).
    #[error("oauth2 token request to {url} failed: {detail}")]
    Request {
        /// The token endpoint, redacted.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The token endpoint answered a status other than 200.
    #[error("oauth2 token endpoint {url} answered http status {status}")]
    Status {
        /// The token endpoint, redacted.
        url: String,
        /// The status.
        status: u16,
    },
    /// The answer is not a token response.
    #[error("oauth2 token endpoint {url} answered something that is not a token: {why}")]
    Response {
        /// The token endpoint, redacted.
        url: String,
        /// What is wrong (never the body).
        why: &'static str,
    },
}

impl TokenError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::Secret(_) => "oauth2_secret",
            TokenError::Request { .. } => "oauth2_request",
            TokenError::Status { .. } => "oauth2_status",
            TokenError::Response { .. } => "oauth2_response",
        }
    }
}

/// A token and until when it may be used.
#[derive(Clone)]
struct Cached {
    token: String,
    /// `None`: the server gave no lifetime; used until a `401`.
    usable_until: Option<Instant>,
}

impl Cached {
    fn new(token: String, expires_in: Option<u64>, now: Instant) -> Cached {
        let usable_until = expires_in.map(|secs| {
            let lifetime = Duration::from_secs(secs.min(365 * 24 * 3600));
            now + lifetime.saturating_sub(EXPIRY_MARGIN.min(lifetime / 5))
        });
        Cached {
            token,
            usable_until,
        }
    }

    fn fresh(&self, now: Instant) -> bool {
        self.usable_until.is_none_or(|until| now < until)
    }
}

/// One grant's token, shared by every client that uses the grant.
pub struct TokenSource {
    grant: Grant,
    secret: SecretReader,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Cached>>,
    requests: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &redact_url(&self.grant.token_url))
            .field("client_id", &self.grant.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenSource {
    /// A source for `grant`, reading the client secret with `secret`, trusting the system roots
    /// and `root_certificates_pem`.
    pub fn new(
        grant: Grant,
        secret: SecretReader,
        root_certificates_pem: &[Vec<u8>],
    ) -> Result<TokenSource, TokenError> {
        let url = redact_url(&grant.token_url);
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .referer(false);
        for pem in root_certificates_pem {
            for certificate in reqwest::Certificate::from_pem_bundle(pem).unwrap_or_default() {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|_| TokenError::Request {
            url,
            detail: "cannot build the http client".to_owned(),
        })?;
        Ok(TokenSource {
            grant,
            secret,
            http,
            cached: tokio::sync::Mutex::new(None),
            requests: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Token requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A usable token: the cached one, or a new one (one request for all concurrent callers).
    pub async fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref().filter(|c| c.fresh(Instant::now())) {
            return Ok(token.token.clone());
        }
        let fetched = self.fetch().await?;
        let token = fetched.token.clone();
        *cached = Some(fetched);
        Ok(token)
    }

    /// A token other than `refused` (the upstream answered `401` to it): a new one, unless
    /// another client already refreshed it meanwhile.
    pub async fn refresh(&self, refused: &str) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref().filter(|c| c.token != refused) {
            return Ok(current.token.clone());
        }
        let fetched = self.fetch().await?;
        let token = fetched.token.clone();
        *cached = Some(fetched);
        Ok(token)
    }

    async fn fetch(&self) -> Result<Cached, TokenError> {
        let url = redact_url(&self.grant.token_url);
        let secret = (self.secret)().map_err(TokenError::Secret)?;
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if !self.grant.scopes.is_empty() {
                form.append_pair("scope", &self.grant.scopes.join(" "));
            }
            form.finish()
        };
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let response = self
            .http
            .post(self.grant.token_url.clone())
            .basic_auth(
                form_encode(&self.grant.client_id),
                Some(form_encode(&secret)),
            )
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await
            .map_err(|e| TokenError::Request {
                url: url.clone(),
                detail: if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    "the request failed".to_owned()
                },
            })?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(TokenError::Status { url, status });
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(|_| TokenError::Request {
            url: url.clone(),
            detail: "the answer broke off".to_owned(),
        })? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(TokenError::Response {
                    url,
                    why: "larger than 64 KiB",
                });
            }
            body.extend_from_slice(&chunk);
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| TokenError::Response {
                url: url.clone(),
                why: "not json with an access_token",
            })?;
        if parsed
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(TokenError::Response {
                url,
                why: "token_type is not bearer",
            });
        }
        if parsed.access_token.is_empty()
            || http::HeaderValue::from_str(&format!("Bearer {}", parsed.access_token)).is_err()
        {
            return Err(TokenError::Response {
                url,
                why: "the access_token cannot be sent as a header",
            });
        }
        Ok(Cached::new(parsed.access_token, parsed.expires_in, now))
    }
}

/// Why [`send_with_token`] got no response.
#[derive(Debug)]
pub(crate) enum AuthorizedError {
    /// No token.
    Token(TokenError),
    /// Sending failed.
    Send(SendError),
}

/// Sends `outgoing` as [`redirect::send`] does, with `Authorization: Bearer` from `tokens` among
/// the own headers (so it goes to the upstream's origin only); a `401` gets one refreshed token
/// and one retry, and a second `401` is the answer.
pub(crate) async fn send_with_token(
    http: &reqwest::Client,
    url: &Url,
    own_headers: &HeaderMap,
    common: &HeaderMap,
    outgoing: Outgoing<'_>,
    max_redirects: usize,
    tokens: Option<&TokenSource>,
) -> Result<reqwest::Response, AuthorizedError> {
    let Some(tokens) = tokens else {
        return redirect::send(http, url, own_headers, common, outgoing, max_redirects)
            .await
            .map_err(AuthorizedError::Send);
    };
    let url_shown = redact_url(&tokens.grant.token_url);
    let send = async |token: &str| {
        let mut headers = own_headers.clone();
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            AuthorizedError::Token(TokenError::Response {
                url: url_shown.clone(),
                why: "the access_token cannot be sent as a header",
            })
        })?;
        value.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, value);
        redirect::send(http, url, &headers, common, outgoing, max_redirects)
            .await
            .map_err(AuthorizedError::Send)
    };
    let token = tokens.token().await.map_err(AuthorizedError::Token)?;
    let response = send(&token).await?;
    if response.status() != http::StatusCode::UNAUTHORIZED {
        return Ok(response);
    }
    tracing::info!(
        token_url = %url_shown,
        "the upstream refused the oauth2 token (401): refreshing it and trying once more"
    );
    let token = tokens
        .refresh(&token)
        .await
        .map_err(AuthorizedError::Token)?;
    send(&token).await
}

/// RFC 6749 section 2.3.1: the client id and secret are form-encoded before Basic auth.
fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// One [`TokenSource`] per grant, so every target of a grant shares its token.
#[derive(Default)]
pub struct TokenSources {
    sources: Mutex<HashMap<Grant, Arc<TokenSource>>>,
}

impl TokenSources {
    /// The source for `grant`, made with `secret` and `root_certificates_pem` the first time.
    pub fn get(
        &self,
        grant: &Grant,
        secret: SecretReader,
        root_certificates_pem: &[Vec<u8>],
    ) -> Result<Arc<TokenSource>, TokenError> {
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(source) = sources.get(grant) {
            return Ok(source.clone());
        }
        let source = Arc::new(TokenSource::new(
            grant.clone(),
            secret,
            root_certificates_pem,
        )?);
        sources.insert(grant.clone(), source.clone());
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_used_until_shortly_before_it_expires() {
        let now = Instant::now();
        let long = Cached::new("a".into(), Some(3600), now);
        assert!(long.fresh(now + Duration::from_secs(3569)));
        assert!(!long.fresh(now + Duration::from_secs(3570)), "30 s early");
        // A short lifetime loses a fifth, not 30 s.
        let short = Cached::new("b".into(), Some(10), now);
        assert!(short.fresh(now + Duration::from_secs(7)));
        assert!(!short.fresh(now + Duration::from_secs(8)));
        // No lifetime: until the upstream refuses it.
        let forever = Cached::new("c".into(), None, now);
        assert!(forever.fresh(now + Duration::from_secs(10 * 365 * 24 * 3600)));
        // A huge lifetime neither overflows nor lasts for years.
        let huge = Cached::new("d".into(), Some(u64::MAX), now);
        assert!(!huge.fresh(now + Duration::from_secs(366 * 24 * 3600)));
    }

    #[test]
    fn client_credentials_are_form_encoded_for_basic_auth() {
        assert_eq!(form_encode("id:with space"), "id%3Awith+space");
    }
}
