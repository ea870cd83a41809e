//! Why a connection attempt or an open stream failed: bounded kinds, whether retrying helps,
//! the reconnect reason and the server's requested delay.
//!
//! What it must NOT do: hold a secret (messages carry redacted URLs and scrubbed details only).

use std::time::Duration;

use crate::oauth::TokenError;
use crate::reason::DisconnectReason;

/// Why a connection attempt did not produce a stream.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The options cannot make a client (for example an unsupported proxy scheme).
    #[error("invalid client options: {0}")]
    Options(String),
    /// TCP, TLS or proxy handshake failed, or the request could not be sent.
    #[error("connection to {url} failed: {detail}")]
    Transport {
        /// The endpoint, redacted.
        url: String,
        /// What failed, with secrets removed.
        detail: String,
    },
    /// Redirects went on past the configured limit.
    #[error("too many redirects from {url} (limit {limit})")]
    TooManyRedirects {
        /// The endpoint, redacted.
        url: String,
        /// The configured limit.
        limit: usize,
    },
    /// A redirect that cannot be followed: no usable `Location` (an empty one would loop to the
    /// same URL), or from `https` to plain `http`. Retrying cannot help.
    #[error("redirect from {url} not followed: {detail}")]
    Redirect {
        /// The endpoint, redacted.
        url: String,
        /// What is wrong with the redirect (secrets removed).
        detail: String,
    },
    /// The server answered 204: the event stream spec's "do not reconnect".
    #[error("server answered 204 no content: the endpoint asks clients not to reconnect")]
    NoContent,
    /// The server answered a status other than 200 (and 204).
    #[error("server answered http status {status}{}", retry_after_note(*.retry_after))]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// No OAuth2 access token could be had (the token endpoint failed or refused).
    #[error(transparent)]
    Token(TokenError),
    /// A 200 response whose content type is not `text/event-stream`.
    #[error("wrong content type {found:?}: expected text/event-stream")]
    ContentType {
        /// The `Content-Type` the server sent (empty when none).
        found: String,
    },
}

fn retry_after_note(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (retry after {})", humantime_secs(d)),
        None => String::new(),
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

impl ConnectError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Options(_) => "options",
            ConnectError::Transport { .. } => "transport",
            ConnectError::TooManyRedirects { .. } => "too_many_redirects",
            ConnectError::Redirect { .. } => "redirect",
            ConnectError::NoContent => "no_content",
            ConnectError::Status { .. } => "http_status",
            ConnectError::ContentType { .. } => "content_type",
            ConnectError::Token(error) => error.kind(),
        }
    }

    /// Whether trying again later can help. 204 and most 4xx say no; overload and outages say yes.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectError::Options(_) | ConnectError::NoContent | ConnectError::Redirect { .. } => {
                false
            }
            ConnectError::Transport { .. } | ConnectError::TooManyRedirects { .. } => true,
            // The token endpoint may come back, or the secret be fixed: retried with backoff.
            ConnectError::Token(_) => true,
            ConnectError::Status { status, .. } => {
                matches!(status, 408 | 425 | 429) || (500..=599).contains(status)
            }
            ConnectError::ContentType { .. } => false,
        }
    }

    /// The reconnect reason this failure is counted under.
    pub fn disconnect_reason(&self) -> DisconnectReason {
        match self {
            ConnectError::Options(_) | ConnectError::Transport { .. } | ConnectError::Token(_) => {
                DisconnectReason::Reset
            }
            ConnectError::TooManyRedirects { .. }
            | ConnectError::Redirect { .. }
            | ConnectError::NoContent
            | ConnectError::Status { .. } => DisconnectReason::HttpStatus,
            ConnectError::ContentType { .. } => DisconnectReason::Protocol,
        }
    }

    /// The server's requested delay before the next attempt, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Why an open stream stopped delivering bytes (other than a clean end).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The transport failed mid-stream: reset by peer, broken pipe, truncated chunked body.
    #[error("stream from {url} broke: {detail}")]
    Broken {
        /// The endpoint, redacted.
        url: String,
        /// What failed, with secrets removed.
        detail: String,
    },
}

impl StreamError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamError::Broken { .. } => "broken",
        }
    }
}
