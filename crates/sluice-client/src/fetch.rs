//! One-shot document fetches over the same transport as the stream: the REST base state a
//! consumer needs before it can apply a stream's deltas (same proxy, TLS roots and secrets).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue};

use crate::connect::{Client, describe_error};
use crate::oauth::{AuthorizedError, TokenError};
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
        let url = self.shown_url().to_owned();
        match tokio::time::timeout(timeout, self.fetch_inner(max_bytes)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout { url, timeout }),
        }
    }

    async fn fetch_inner(&self, max_bytes: usize) -> Result<Bytes, FetchError> {
        let secrets = self.secrets();
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: self.shown_url().to_owned(),
            detail: describe_error(&e.without_url(), secrets),
        };
        let mut common = HeaderMap::new();
        common.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut response = self
            .send(&common, Outgoing::get())
            .await
            .map_err(|e| match e {
                AuthorizedError::Token(error) => FetchError::Token(error),
                AuthorizedError::Send(SendError::Transport(e)) => transport(e),
                AuthorizedError::Send(SendError::Redirect(e)) => FetchError::Redirect {
                    url: self.shown_url().to_owned(),
                    detail: describe_error(&e, secrets),
                },
            })?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status {
                url: self.shown_url().to_owned(),
                status,
            });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge {
                    url: self.shown_url().to_owned(),
                    limit: max_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}
