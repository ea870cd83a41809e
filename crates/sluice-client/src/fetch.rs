//! One-shot document fetches over the same transport as the stream: the REST base state a
//! consumer needs before it can apply a stream's deltas (same proxy, TLS roots and secrets), and
//! the pages of a paginated one, each with what it says about the next page (its `Link` header).
//! Which page comes next is the caller's to decide: this module fetches one URL at a time.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, LINK};
use http::{HeaderMap, HeaderValue};
use url::Url;

use crate::connect::{Client, describe_error};
use crate::link::next_in_link_header;
use crate::oauth::{AuthorizedError, TokenError};
use crate::redact::redact_url;
use crate::redirect::{Outgoing, SendError};

/// Why a document could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// TCP, TLS or proxy handshake failed, or the request could not be sent or read.
    #[error("fetching {url} failed: {detail}")]
    Transport {
        /// The endpoint, redacted.
        url: String,
        /// What failed, with secrets removed.
        detail: String,
    },
    /// A redirect was not followed: too many, no usable `Location`, or `https` to `http`.
    #[error("fetching {url}: {detail}")]
    Redirect {
        /// The endpoint, redacted.
        url: String,
        /// What is wrong with the redirect (secrets removed).
        detail: String,
    },
    /// The server answered a status other than 200.
    #[error("fetching {url}: server answered http status {status}")]
    Status {
        /// The endpoint, redacted.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The body grew past the limit.
    #[error("fetching {url}: document larger than {limit} bytes")]
    TooLarge {
        /// The endpoint, redacted.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// No OAuth2 access token could be had.
    #[error(transparent)]
    Token(TokenError),
    /// The whole fetch took longer than the timeout.
    #[error("fetching {url}: no complete answer within {}ms", .timeout.as_millis())]
    Timeout {
        /// The endpoint, redacted.
        url: String,
        /// The limit.
        timeout: Duration,
    },
}

impl FetchError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Transport { .. } => "transport",
            FetchError::Redirect { .. } => "redirect",
            FetchError::Status { .. } => "http_status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Token(error) => error.kind(),
        }
    }
}

/// One page of a paginated document, as [`Client::fetch_page`] got it.
#[derive(Debug)]
pub struct Page {
    /// The whole body.
    pub body: Bytes,
    /// The URL that answered (after redirects): what links in the page are relative to.
    pub url: Url,
    /// The target of the response's `Link` header with `rel="next"`, as written.
    pub link_next: Option<String>,
}

impl Client {
    /// `GET`s this client's URL as JSON (`Accept: application/json`) and returns the whole body,
    /// at most `max_bytes` of it, within `timeout`. Headers, proxy and TLS roots are the
    /// client's, redirects followed as the stream's are (the client's headers to its own origin
    /// only, no `https` to `http`, no `Referer`); no `Last-Event-ID`.
    pub async fn fetch_document(
        &self,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Bytes, FetchError> {
        let url = self.url().clone();
        Ok(self.fetch_page(&url, timeout, max_bytes).await?.body)
    }

    /// [`Client::fetch_document`] of `url`, one page of a paginated document. The client's
    /// own headers and token go to `url` only when it is on the origin of the client's URL, as
    /// across a redirect: a next-page link to another origin gets no credentials.
    pub async fn fetch_page(
        &self,
        url: &Url,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Page, FetchError> {
        let shown = redact_url(url);
        match tokio::time::timeout(timeout, self.fetch_inner(url, &shown, max_bytes)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout {
                url: shown,
                timeout,
            }),
        }
    }

    async fn fetch_inner(
        &self,
        url: &Url,
        shown: &str,
        max_bytes: usize,
    ) -> Result<Page, FetchError> {
        let secrets = self.secrets();
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: shown.to_owned(),
            detail: describe_error(&e.without_url(), secrets),
        };
        let mut common = HeaderMap::new();
        common.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut response =
            self.send_to(url, &common, Outgoing::get())
                .await
                .map_err(|e| match e {
                    AuthorizedError::Token(error) => FetchError::Token(error),
                    AuthorizedError::Send(SendError::Transport(e)) => transport(e),
                    AuthorizedError::Send(SendError::Redirect(e)) => FetchError::Redirect {
                        url: shown.to_owned(),
                        detail: describe_error(&e, secrets),
                    },
                })?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status {
                url: shown.to_owned(),
                status,
            });
        }
        let link_next = next_in_link_header(
            response
                .headers()
                .get_all(LINK)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
        .map(str::to_owned);
        let answered = response.url().clone();
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge {
                    url: shown.to_owned(),
                    limit: max_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Page {
            body: body.freeze(),
            url: answered,
            link_next,
        })
    }
}
