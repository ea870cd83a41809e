//! One connection attempt: request, status and content-type checks, then body chunks.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use url::Url;

pub use crate::error::{ConnectError, StreamError};
use crate::first::FirstAttempts;
use crate::oauth::{self, AuthorizedError, TokenSource};
use crate::redact::redact_url;
use crate::redirect::{Outgoing, RedirectError, SendError};
use crate::request::RequestBody;
use crate::server_delay;

/// The header an `EventSource` resumes with.
const LAST_EVENT_ID: &str = "last-event-id";

/// HTTP/2 flow control: how much of one stream's body the server may send ahead of what its
/// reader took. A target that stops reading (paused by Kafka, or stopped for good) holds at
/// most this much on its connection.
const H2_STREAM_WINDOW: u32 = 256 * 1024;

/// HTTP/2 flow control for the whole connection: the largest window HTTP/2 allows, so the
/// per-stream windows alone bound what is buffered. With hyper's default (5 MiB against 2 MiB
/// per stream), three streams nobody reads take the whole connection's window, and every other
/// target sharing the connection starves.
const H2_CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// How to reach an endpoint. Everything here is fixed for the life of a [`Client`].
#[derive(Clone)]
pub struct ClientOptions {
    /// Extra request headers (auth, cookies). Values are marked sensitive so `Debug` hides them.
    pub headers: HeaderMap,
    /// Proxy for every request: `http://`, `https://`, `socks5://` or `socks5h://`, credentials in the URL.
    pub proxy: Option<Url>,
    /// Limit on establishing TCP (and the proxy handshake).
    pub connect_timeout: Duration,
    /// Redirects followed before giving up.
    pub max_redirects: usize,
    /// `User-Agent` sent with every request.
    pub user_agent: String,
    /// Extra trusted root certificates (PEM), for upstreams or proxies behind a private CA.
    pub root_certificates_pem: Vec<Vec<u8>>,
    /// Whether to ask for a compressed body (`Accept-Encoding: gzip, br, zstd`) and decompress
    /// it as it arrives. The decompressed bytes are what callers see (and what the parser's
    /// limits count), so a compression bomb ends at those limits with bounded memory.
    pub compression: bool,
    /// A client certificate chain and its private key, one PEM document (mTLS), presented to
    /// the upstream and to HTTPS proxies. Secret: never shown.
    pub identity_pem: Option<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            headers: HeaderMap::new(),
            proxy: None,
            connect_timeout: Duration::from_secs(10),
            max_redirects: 5,
            user_agent: concat!("sluice/", env!("CARGO_PKG_VERSION")).to_owned(),
            root_certificates_pem: Vec::new(),
            compression: true,
            identity_pem: None,
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("proxy", &self.proxy.as_ref().map(redact_url))
            .field("connect_timeout", &self.connect_timeout)
            .field("max_redirects", &self.max_redirects)
            .field("user_agent", &self.user_agent)
            .field("root_certificates", &self.root_certificates_pem.len())
            .field("compression", &self.compression)
            .field("identity", &self.identity_pem.is_some())
            .finish()
    }
}

/// A reusable client for one endpoint. Cheap to clone; connections share a pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: Url,
    shown_url: String,
    max_redirects: usize,
    secrets: Vec<String>,
    headers: HeaderMap,
    /// The stream request's method (`GET` unless [`Client::with_request`] says otherwise).
    method: http::Method,
    /// Its body, sent on every attempt.
    body: Option<RequestBody>,
    /// Where `Authorization: Bearer` comes from (OAuth2), when it does.
    tokens: Option<std::sync::Arc<TokenSource>>,
    connect_timeout: Duration,
    /// Shared with every client of this transport: see [`crate::first`].
    first_attempts: std::sync::Arc<FirstAttempts>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets, never header values.
        f.debug_struct("Client")
            .field("url", &self.shown_url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("max_redirects", &self.max_redirects)
            .field("method", &self.method)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client for `url`. Fails only on options that can never work.
    pub fn new(url: Url, options: ClientOptions) -> Result<Client, ConnectError> {
        check_scheme(&url)?;
        let mut defaults = HeaderMap::new();
        defaults.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        defaults.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));

        let mut secrets: Vec<String> = Vec::new();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .default_headers(defaults)
            .user_agent(options.user_agent)
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            // Streaming decompression (reqwest's decoders hand on what each flushed block
            // holds); off, no `Accept-Encoding` is sent and the body is read as it comes.
            .gzip(options.compression)
            .brotli(options.compression)
            .zstd(options.compression)
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            // The pool's copy of a shared HTTP/2 connection counts as idle from its last checkout
            // even while it carries streams; with a timeout, a target reconnecting after a quiet
            // spell would find it gone and open a second connection. Closed connections still
            // leave the pool when they are next looked at.
            .pool_idle_timeout(None)
            // Redirects are followed by `redirect::send`, which keeps the target's headers to its
            // own origin and refuses https -> http; no `Referer` either way.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false);
        for (index, pem) in options.root_certificates_pem.iter().enumerate() {
            let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ConnectError::Options(format!(
                    "root certificate bundle {index} is not valid pem: {}",
                    describe(&e, &secrets)
                ))
            })?;
            if certificates.is_empty() {
                return Err(ConnectError::Options(format!(
                    "root certificate bundle {index} holds no certificate"
                )));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(pem) = &options.identity_pem {
            // The error would describe the key's parsing: say only what is wrong.
            let identity = reqwest::Identity::from_pem(pem).map_err(|_| {
                ConnectError::Options(
                    "the client certificate and key are not a pem certificate chain and private key"
                        .to_owned(),
                )
            })?;
            builder = builder.identity(identity);
        }
        if let Some(proxy) = &options.proxy {
            match proxy.scheme() {
                "http" | "https" | "socks5" | "socks5h" => {}
                other => {
                    return Err(ConnectError::Options(format!(
                        "unsupported proxy scheme {other:?}: expected http, https, socks5 or socks5h"
                    )));
                }
            }
            if let Some(password) = proxy.password() {
                secrets.push(password.to_owned());
            }
            let p = reqwest::Proxy::all(proxy.as_str()).map_err(|e| {
                ConnectError::Options(format!(
                    "invalid proxy {}: {}",
                    redact_url(proxy),
                    describe(&e.without_url(), &secrets)
                ))
            })?;
            builder = builder.proxy(p);
        }
        let http = builder.build().map_err(|e| {
            ConnectError::Options(format!(
                "cannot build http client: {}",
                describe(&e, &secrets)
            ))
        })?;
        Ok(Client {
            shown_url: redact_url(&url),
            http,
            url,
            max_redirects: options.max_redirects,
            secrets,
            headers: sensitive_headers(options.headers),
            method: http::Method::GET,
            body: None,
            tokens: None,
            connect_timeout: options.connect_timeout,
            first_attempts: std::sync::Arc::default(),
        })
    }

    /// A client for another endpoint and request headers that shares this client's transport
    /// (proxy, timeouts, TLS roots, connection pool). Building transports is the expensive part;
    /// a worker holding thousands of targets behind the same proxy shares one.
    pub fn retarget(&self, url: Url, headers: HeaderMap) -> Result<Client, ConnectError> {
        check_scheme(&url)?;
        Ok(Client {
            shown_url: redact_url(&url),
            http: self.http.clone(),
            url,
            max_redirects: self.max_redirects,
            secrets: self.secrets.clone(),
            headers: sensitive_headers(headers),
            method: http::Method::GET,
            body: None,
            tokens: None,
            connect_timeout: self.connect_timeout,
            first_attempts: self.first_attempts.clone(),
        })
    }

    /// This client with the stream request's `method` and `body` (sent on every attempt,
    /// reconnects included, with `Last-Event-ID`; a `307`/`308` repeats both, a `303` (and a
    /// `301`/`302` of a `POST`) follows as a `GET` without the body).
    /// Base-state fetches stay `GET`s.
    pub fn with_request(mut self, method: http::Method, body: Option<RequestBody>) -> Client {
        self.method = method;
        self.body = body;
        self
    }

    /// This client with `Authorization: Bearer` from `tokens` on every request (stream and
    /// document), to the endpoint's own origin only; a `401` gets one refreshed token and one
    /// retry.
    pub fn with_token_source(mut self, tokens: std::sync::Arc<TokenSource>) -> Client {
        self.tokens = Some(tokens);
        self
    }

    /// [`oauth::send_with_token`] with this client's transport, endpoint, headers and tokens.
    pub(crate) async fn send(
        &self,
        common: &HeaderMap,
        outgoing: Outgoing<'_>,
    ) -> Result<reqwest::Response, AuthorizedError> {
        self.send_to(&self.url, common, outgoing).await
    }

    /// [`Client::send`] to `url`. The one rule of where credentials go: this client's own
    /// headers and token only to the origin of its endpoint, here as across redirects
    /// ([`crate::redirect::send`] drops them from the first hop elsewhere on).
    pub(crate) async fn send_to(
        &self,
        url: &Url,
        common: &HeaderMap,
        outgoing: Outgoing<'_>,
    ) -> Result<reqwest::Response, AuthorizedError> {
        let own_origin = url.origin() == self.url.origin();
        let none = HeaderMap::new();
        oauth::send_with_token(
            &self.http,
            url,
            if own_origin { &self.headers } else { &none },
            common,
            outgoing,
            self.max_redirects,
            if own_origin {
                self.tokens.as_deref()
            } else {
                None
            },
        )
        .await
    }

    /// The endpoint (not for showing: see [`Client::shown_url`]).
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// A failed [`redirect::send`] as a [`ConnectError`], secrets removed.
    pub(crate) fn send_error(&self, error: SendError) -> ConnectError {
        match error {
            SendError::Transport(e) => ConnectError::Transport {
                url: self.shown_url.clone(),
                detail: describe(&e.without_url(), &self.secrets),
            },
            SendError::Redirect(RedirectError::TooMany { limit }) => {
                ConnectError::TooManyRedirects {
                    url: self.shown_url.clone(),
                    limit,
                }
            }
            SendError::Redirect(other) => ConnectError::Redirect {
                url: self.shown_url.clone(),
                detail: describe(&other, &self.secrets),
            },
        }
    }

    /// The secrets to keep out of errors.
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// The endpoint as it may be shown to people (secrets removed).
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// Opens the stream, sending `Last-Event-ID` when `last_event_id` is not empty.
    ///
    /// The first attempt to an HTTPS origin through this transport runs alone: attempts made
    /// meanwhile wait for it (at most the connect timeout), so that when the origin offers
    /// HTTP/2 they share its connection instead of each opening one.
    pub async fn connect(&self, last_event_id: &str) -> Result<Connection, ConnectError> {
        let _first = self
            .first_attempts
            .enter(&self.url, self.connect_timeout)
            .await;
        let mut common = HeaderMap::new();
        if !last_event_id.is_empty() {
            let value =
                HeaderValue::from_str(last_event_id).map_err(|_| ConnectError::Transport {
                    url: self.shown_url.clone(),
                    detail: "the last event id cannot be sent as a header value".to_owned(),
                })?;
            common.insert(LAST_EVENT_ID, value);
        }
        let outgoing = Outgoing {
            method: &self.method,
            body: self.body.as_ref(),
        };
        let response = self.send(&common, outgoing).await.map_err(|e| match e {
            AuthorizedError::Token(error) => ConnectError::Token(error),
            AuthorizedError::Send(error) => self.send_error(error),
        })?;
        let status = response.status().as_u16();
        if status == 204 {
            return Err(ConnectError::NoContent);
        }
        if status != 200 {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| server_delay::retry_after(v, std::time::SystemTime::now()));
            return Err(ConnectError::Status {
                status,
                retry_after,
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if !is_event_stream(&content_type) {
            return Err(ConnectError::ContentType {
                found: content_type,
            });
        }
        // Keep only the body: the response head (headers, extensions) would pin the read buffer
        // it was parsed from for the whole life of the stream, 8 KiB per connection.
        Ok(Connection {
            version: response.version(),
            body: Box::pin(response.bytes_stream()),
            shown_url: self.shown_url.clone(),
            secrets: self.secrets.clone(),
        })
    }
}

/// An open `text/event-stream` response.
pub struct Connection {
    version: http::Version,
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    shown_url: String,
    secrets: Vec<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.shown_url)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The HTTP version the server chose (useful to see HTTP/2 multiplexing in action).
    pub fn version(&self) -> http::Version {
        self.version
    }

    /// The next body chunk, `Ok(None)` at a clean end of the response.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StreamError> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// [`Connection::next_chunk`] as a poll function, for callers that drive several sources
    /// from one hand-written future.
    pub fn poll_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Option<Bytes>, StreamError>> {
        futures::Stream::poll_next(self.body.as_mut(), cx).map(|item| {
            item.transpose().map_err(|e| StreamError::Broken {
                url: self.shown_url.clone(),
                detail: describe(&e.without_url(), &self.secrets),
            })
        })
    }
}

fn check_scheme(url: &Url) -> Result<(), ConnectError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(ConnectError::Options(format!(
            "unsupported url scheme {other:?}: expected http or https"
        ))),
    }
}

/// Marks every value sensitive, so `Debug` output and HTTP/2 header indexing leave it out.
fn sensitive_headers(mut headers: HeaderMap) -> HeaderMap {
    for value in headers.values_mut() {
        value.set_sensitive(true);
    }
    headers
}

/// Whether a `Content-Type` value names `text/event-stream` (parameters and case ignored).
fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/event-stream")
}

/// Renders an error and its sources as one line, with every known secret removed.
pub(crate) fn describe_error(
    error: &(dyn std::error::Error + 'static),
    secrets: &[String],
) -> String {
    describe(error, secrets)
}

fn describe(error: &(dyn std::error::Error + 'static), secrets: &[String]) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), "***");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_accepts_parameters_and_any_case() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("Text/Event-Stream; charset=utf-8"));
        assert!(!is_event_stream("text/plain"));
        assert!(!is_event_stream(""));
    }

    #[test]
    fn status_retryability_follows_the_status_class() {
        let status = |s| ConnectError::Status {
            status: s,
            retry_after: None,
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!ConnectError::NoContent.is_retryable());
    }

    #[test]
    fn unsupported_schemes_are_refused_with_the_scheme_named() {
        let url = Url::parse("ftp://127.0.0.1/x").expect("valid url");
        let err = Client::new(url, ClientOptions::default()).expect_err("ftp is not http");
        assert!(err.to_string().contains("\"ftp\""), "{err}");
    }

    #[test]
    fn debug_of_options_hides_header_values_and_proxy_passwords() {
        let mut options = ClientOptions::default();
        options
            .headers
            .insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        options.proxy = Some(Url::parse("http://u:pw1234@127.0.0.1:3128").expect("valid url"));
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("pw1234"), "{shown}");
    }
}
