//! The HTTP edge of a target, as a small trait: open a stream (secrets and proxy chosen for that
//! attempt), then read its body chunk by chunk. Its one production implementation is
//! [`HttpUpstream`] (reqwest through sluice-client, with the proxy pools and per-host connection
//! slots); the target's tests use a fake fed by channels.
//!
//! What it must NOT do: parse SSE, decide when to reconnect, or time anything but the attempt
//! itself (the connection state machine owns backoff, the watchdog and rotation).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use sluice_client::oauth::Grant;
use sluice_client::{ConnectError, Connection, RequestBody, StreamError, redact::redact_url};
use sluice_config::{HeaderError, SecretError, TargetConfig, TargetProxy};
use tokio::sync::OwnedSemaphorePermit;

use super::in_flight::BoxFuture;
use crate::Shared;
use crate::lanes::Lane;

/// One open `text/event-stream` response.
pub(crate) trait Body: Send + 'static {
    /// The HTTP version it came over (shown on `/status`).
    fn version(&self) -> http::Version;
    /// The next chunk of the body; `Ok(None)` at its end.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>>;
}

/// Whether an attempt waits for a connection slot to the host or needs one free now (the
/// replacement stream of a rotation, which must not wait behind its own old connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Wait,
    FreeNow,
}

/// An attempt on its way, and the proxy it goes through (redacted, for `/status`).
pub(crate) struct Attempt<B> {
    pub(crate) proxy_shown: Option<String>,
    pub(crate) future: BoxFuture<Result<B, ConnectError>>,
}

/// Why an attempt could not even start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// A secret the request needs (a header, a bearer token, a proxy password, a client
    /// certificate or key) cannot be read.
    #[error("cannot read a secret: {0}")]
    MissingSecret(#[source] SecretError),
    /// A header value is not a valid header (a secret's value holds a newline, say).
    #[error("cannot build request headers: {0}")]
    Headers(#[source] HeaderError),
    /// The target names a proxy pool the worker does not have, or an empty one.
    #[error("proxy pool {0:?} is unknown or empty")]
    Pool(String),
    /// The replacement stream needs a connection slot to the host and none is free.
    #[error("no free connection slot for the host")]
    NoSlot,
    /// The HTTP client cannot be built for these options.
    #[error(transparent)]
    Client(ConnectError),
}

impl SetupError {
    /// A bounded label for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            SetupError::MissingSecret(_) => "missing_secret",
            SetupError::Headers(_) => "headers",
            SetupError::Pool(_) => "pool",
            SetupError::NoSlot => "no_slot",
            SetupError::Client(_) => "client",
        }
    }

    /// Whether an operator must act (a secret, a pool): retried slowly, not at once.
    pub(crate) fn needs_operator(&self) -> bool {
        !matches!(self, SetupError::NoSlot)
    }
}

/// Opens streams for one target.
pub(crate) trait Upstream: Send + 'static {
    type Body: Body;

    /// Starts one attempt resuming after `last_event_id`: secrets (headers, proxy password)
    /// are read now, the proxy is chosen now.
    fn attempt(
        &mut self,
        last_event_id: &str,
        slot: Slot,
    ) -> Result<Attempt<Self::Body>, SetupError>;

    /// How the last attempt's transport went (a pool rests a failing proxy and the next
    /// attempt tries another).
    fn report(&mut self, transport_ok: bool);
}

/// The production upstream: sluice-client over the worker's shared transports, proxy pools
/// and per-host connection slots.
pub(crate) struct HttpUpstream {
    shared: Arc<Shared>,
    config: Arc<TargetConfig>,
    /// Where in its pool the target tries next (its home member at first).
    pool_cursor: usize,
    /// The pool member of the attempt in progress / the open connection.
    pool_member: Option<usize>,
    /// The target's lane on its host, taken at the first attempt, kept for its life.
    lane: Option<Lane>,
}

impl HttpUpstream {
    pub(crate) fn new(shared: Arc<Shared>, config: Arc<TargetConfig>) -> HttpUpstream {
        let pool_cursor = match &config.proxy {
            Some(TargetProxy::Pool(name)) => shared
                .pools
                .get(name)
                .map(|p| p.home(config.id.as_str()))
                .unwrap_or(0),
            _ => 0,
        };
        HttpUpstream {
            shared,
            config,
            pool_cursor,
            pool_member: None,
            lane: None,
        }
    }

    /// The proxy for this attempt (password resolved) and how `/status` shows it.
    fn proxy(&mut self) -> Result<(Option<url::Url>, Option<String>), SetupError> {
        match &self.config.proxy {
            None => Ok((None, None)),
            Some(TargetProxy::Direct(proxy)) => Ok((
                Some(proxy.resolve_url().map_err(SetupError::MissingSecret)?),
                Some(redact_url(&proxy.url)),
            )),
            Some(TargetProxy::Pool(name)) => {
                let pool = self
                    .shared
                    .pools
                    .get(name)
                    .ok_or_else(|| SetupError::Pool(name.clone()))?;
                let index = pool.pick(self.pool_cursor);
                self.pool_cursor = index;
                self.pool_member = Some(index);
                let (proxy, shown) = pool
                    .member(index)
                    .ok_or_else(|| SetupError::Pool(name.clone()))?;
                Ok((
                    Some(proxy.resolve_url().map_err(SetupError::MissingSecret)?),
                    Some(format!("{shown} (pool {name})")),
                ))
            }
        }
    }
}

impl Upstream for HttpUpstream {
    type Body = HttpBody;

    fn attempt(
        &mut self,
        last_event_id: &str,
        slot: Slot,
    ) -> Result<Attempt<HttpBody>, SetupError> {
        let headers = self.config.resolve_headers().map_err(|error| match error {
            HeaderError::Secret(secret) => SetupError::MissingSecret(secret),
            other => SetupError::Headers(other),
        })?;
        // The body is read now too (a secret one may have been rotated), as the headers are.
        let body = match &self.config.body {
            None => None,
            Some(body) => {
                let (bytes, secret) = body.resolve().map_err(SetupError::MissingSecret)?;
                Some(RequestBody {
                    bytes: bytes.into(),
                    content_type: body.content_type.clone(),
                    secret,
                })
            }
        };
        // Read at every attempt: a rotated certificate is presented from the next connection on.
        let identity = match &self.config.client_identity {
            None => None,
            Some(identity) => Some(identity.read().map_err(SetupError::MissingSecret)?),
        };
        let (proxy, proxy_shown) = self.proxy()?;
        let shared = &self.shared;
        let origin = self.config.url.origin().ascii_serialization();
        let lane = self
            .lane
            .get_or_insert_with(|| shared.lanes.take(&origin))
            .index();
        let client = self
            .shared
            .transports
            .client(&self.config, proxy, headers, identity, lane)
            .map_err(SetupError::Client)?
            .with_request(self.config.method.clone(), body);
        let client = match &self.config.auth.oauth2 {
            None => client,
            Some(oauth2) => {
                let config = oauth2.clone();
                let grant = Grant {
                    token_url: oauth2.token_url.clone(),
                    client_id: oauth2.client_id.clone(),
                    scopes: oauth2.scopes.clone(),
                };
                let source = self
                    .shared
                    .tokens
                    .get(
                        &grant,
                        Arc::new(move || config.read_secret()),
                        &self.config.root_certificates_pem,
                    )
                    .map_err(|error| SetupError::Client(ConnectError::Token(error)))?;
                client.with_token_source(source)
            }
        };
        let shared = self.shared.clone();
        let url = self.config.url.clone();
        let limit = self.config.connect_timeout + self.config.idle_timeout;
        let permit = match slot {
            Slot::FreeNow => Some(shared.hosts.try_acquire(&url).ok_or(SetupError::NoSlot)?),
            Slot::Wait => None,
        };
        let last_event_id = last_event_id.to_owned();
        let future = Box::pin(async move {
            let permit = match permit {
                Some(permit) => Some(permit),
                None => shared.hosts.acquire(&url).await,
            };
            match tokio::time::timeout(limit, client.connect(&last_event_id)).await {
                Ok(Ok(connection)) => Ok(HttpBody {
                    connection,
                    _permit: permit,
                }),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(ConnectError::Transport {
                    url: client.shown_url().to_owned(),
                    detail: format!("no response within {}s", limit.as_secs()),
                }),
            }
        });
        Ok(Attempt {
            proxy_shown,
            future,
        })
    }

    fn report(&mut self, transport_ok: bool) {
        if let (Some(TargetProxy::Pool(name)), Some(index)) = (&self.config.proxy, self.pool_member)
            && let Some(pool) = self.shared.pools.get(name)
        {
            pool.report(index, transport_ok);
        }
        if !transport_ok {
            // Try the next proxy of a pool on the next attempt.
            self.pool_cursor = self.pool_cursor.wrapping_add(1);
        }
    }
}

/// An open response, holding its connection slot to the host for as long as it lives.
pub(crate) struct HttpBody {
    connection: Connection,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Body for HttpBody {
    fn version(&self) -> http::Version {
        self.connection.version()
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>> {
        self.connection.poll_chunk(cx)
    }
}
