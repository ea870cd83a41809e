//! The validated `targets/*.yaml`: one upstream SSE endpoint, defaults already applied.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice_sse::Limits;
use url::Url;

use crate::aggregate::AggregateConfig;
use crate::proxy::ProxyConfig;
use crate::secret::{Secret, SecretError, SecretRef};
use crate::worker::Backoff;

/// A target's id: `[a-z0-9][a-z0-9._-]{0,62}`. Used as Kafka key, checkpoint key and metric label,
/// so the charset is closed and the length bounded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId(String);

impl TargetId {
    /// Longest allowed id, in bytes.
    pub const MAX_LEN: usize = 63;

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a [`TargetId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad target id {id:?}: use 1 to 63 of a-z 0-9 . _ - starting with a letter or digit")]
pub struct TargetIdError {
    /// The rejected string.
    pub id: String,
}

impl TargetIdError {
    /// Bounded label of the failure.
    pub fn kind(&self) -> &'static str {
        "bad_target_id"
    }
}

impl FromStr for TargetId {
    type Err = TargetIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if first_ok && rest_ok && bytes.len() <= Self::MAX_LEN {
            Ok(TargetId(s.to_owned()))
        } else {
            Err(TargetIdError { id: s.to_owned() })
        }
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request header's value: plain text from the file, or a secret by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// Written in the config (`{value: "..."}`); not secret.
    Plain(String),
    /// Read from env or file on every connect.
    Secret(SecretRef),
}

/// A client certificate chain and its private key (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The PEM certificate chain's file (not secret; read like one, on every connect).
    pub cert: SecretRef,
    /// The PEM private key (a secret).
    pub key: SecretRef,
}

impl ClientIdentity {
    /// The certificate chain and the key as one PEM document, both read now.
    pub fn read(&self) -> Result<Vec<u8>, SecretError> {
        let mut pem = self.cert.resolve()?.expose().as_bytes().to_vec();
        pem.push(b'\n');
        pem.extend_from_slice(self.key.resolve()?.expose().as_bytes());
        pem.push(b'\n');
        Ok(pem)
    }
}

/// A stream request's body and its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    /// Where the bytes come from.
    pub source: BodySource,
    /// Its `Content-Type` (default `application/json` for `json:`, else `text/plain`).
    pub content_type: HeaderValue,
}

/// Where a [`RequestBody`]'s bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodySource {
    /// Written in the config (`value:` as is, `json:` serialised); not secret.
    Plain(String),
    /// Read from env or file on every connect; never logged or sent to another origin.
    Secret(SecretRef),
}

impl RequestBody {
    /// The bytes to send now (a secret is read now) and whether they are a secret.
    pub fn resolve(&self) -> Result<(Vec<u8>, bool), SecretError> {
        match &self.source {
            BodySource::Plain(text) => Ok((text.clone().into_bytes(), false)),
            BodySource::Secret(secret) => {
                Ok((secret.resolve()?.expose().as_bytes().to_vec(), true))
            }
        }
    }
}

/// Authentication sent with every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<SecretRef>,
    /// `Cookie: <value>`.
    pub cookie: Option<SecretRef>,
    /// `Authorization: Bearer` from an OAuth2 client-credentials grant (never with `bearer`).
    pub oauth2: Option<OAuth2Config>,
}

/// An OAuth2 client-credentials grant (`auth.oauth2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Config {
    /// The token endpoint, `http` or `https`.
    pub token_url: Url,
    /// The client id (not secret).
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretRef,
    /// The scopes asked for; empty = none sent.
    pub scopes: Vec<String>,
}

impl OAuth2Config {
    /// Reads the client secret afresh on each call; the error names where it lives, never
    /// its value.
    pub fn read_secret(&self) -> Result<String, String> {
        self.client_secret
            .resolve()
            .map(|secret| secret.expose().to_owned())
            .map_err(|error| error.to_string())
    }
}

/// How a target reaches its upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetProxy {
    /// One dedicated proxy (boxed: most targets have none, and a worker holds thousands).
    Direct(Box<ProxyConfig>),
    /// A named pool from `worker.yaml`'s `proxy_pools` (validated to exist).
    Pool(String),
}

/// The Kafka record key of each event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    /// The target id: all of a target's events in one partition, in order.
    Target,
    /// A value taken from the JSON `data` by JSON Pointer (RFC 6901; `""` = the whole document).
    Pointer(String),
}

/// One validated target with the worker's defaults applied.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Unique id.
    pub id: TargetId,
    /// The file the target was read from.
    pub file: PathBuf,
    /// The SSE endpoint, `http` or `https`.
    pub url: Url,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderSource)>,
    /// Bearer token and cookie.
    pub auth: Auth,
    /// Proxy or pool; `None` = direct.
    pub proxy: Option<TargetProxy>,
    /// Extra trusted root certificates, each entry the bytes of one PEM bundle (`tls.ca_file`,
    /// read once at load and checked to hold at least one `-----BEGIN CERTIFICATE-----` block;
    /// the certificates themselves are not parsed here). Add them to the system roots for the
    /// upstream and for HTTPS proxies. Empty when the target file has no `tls` section.
    pub root_certificates_pem: Vec<Vec<u8>>,
    /// The client certificate and key presented to the upstream and HTTPS proxies (mTLS,
    /// `tls.client_cert` / `tls.client_key`); read at every connect, so a rotated certificate is
    /// used from the next connection on.
    pub client_identity: Option<ClientIdentity>,
    /// Heartbeat watchdog.
    pub idle_timeout: Duration,
    /// TCP connect plus proxy handshake limit.
    pub connect_timeout: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Planned reconnect age; `None` = never.
    pub max_connection_age: Option<Duration>,
    /// Redirects followed before giving up.
    pub max_redirects: u32,
    /// Parser caps.
    pub limits: Limits,
    /// Kafka topic for this target's events.
    pub topic: String,
    /// Record key.
    pub key: RecordKey,
    /// Event types to publish; empty = all.
    pub event_types: Vec<String>,
    /// `false` keeps the target in config but not connected.
    pub enabled: bool,
    /// `true` adds CloudEvents Kafka binary-mode headers (`ce_specversion`, `ce_id`, `ce_source`,
    /// `ce_type`, `ce_time`) to this target's records, beside the `sse.*`/`sluice.*` headers.
    /// Default `false`.
    pub cloudevents: bool,
    /// `true` (the default) asks the upstream for a compressed body (`Accept-Encoding: gzip,
    /// br, zstd`), for the stream and the base-state fetch, and decompresses it as it arrives.
    /// Turn it off for a server that compresses in large blocks and so holds heartbeats back.
    pub compression: bool,
    /// The stream request's method (`method:`, default `GET`), e.g. `POST` or `REPORT` for an
    /// endpoint that takes a subscription in the request body.
    pub method: http::Method,
    /// The stream request's body (`body:`), sent on every (re)connect with `Last-Event-ID`;
    /// never with `GET` or `HEAD` (validation refuses it).
    pub body: Option<RequestBody>,
    /// How the aggregator rebuilds this target's state from its base state and deltas; `None` =
    /// the target is not aggregated. Validation guarantees `key` is [`RecordKey::Target`] when
    /// this is set. Boxed: most targets have none, and a worker holds thousands of targets.
    pub aggregate: Option<Box<AggregateConfig>>,
}

impl TargetConfig {
    /// The request headers to send now: `headers`, then `Authorization: Bearer` and `Cookie` from
    /// `auth`, every secret read afresh (call on each reconnect). Secret values are marked
    /// sensitive, so `HeaderMap`'s `Debug` and HTTP/2 indexing leave them out.
    pub fn resolve_headers(&self) -> Result<HeaderMap, HeaderError> {
        let mut map = resolve_header_list(&self.headers)?;
        if let Some(bearer) = &self.auth.bearer {
            let value = sensitive("authorization", &bearer.resolve()?, "Bearer ")?;
            map.insert(http::header::AUTHORIZATION, value);
        }
        if let Some(cookie) = &self.auth.cookie {
            let value = sensitive("cookie", &cookie.resolve()?, "")?;
            map.insert(http::header::COOKIE, value);
        }
        Ok(map)
    }
}

/// `headers` as a map, every secret read now and marked sensitive.
pub(crate) fn resolve_header_list(
    headers: &[(HeaderName, HeaderSource)],
) -> Result<HeaderMap, HeaderError> {
    let mut map = HeaderMap::new();
    for (name, source) in headers {
        let value = match source {
            HeaderSource::Plain(plain) => {
                HeaderValue::from_str(plain).map_err(|_| HeaderError::Value {
                    name: name.to_string(),
                })?
            }
            HeaderSource::Secret(secret) => sensitive(name.as_str(), &secret.resolve()?, "")?,
        };
        map.append(name.clone(), value);
    }
    Ok(map)
}

fn sensitive(name: &str, secret: &Secret, prefix: &str) -> Result<HeaderValue, HeaderError> {
    let mut value =
        HeaderValue::from_str(&format!("{prefix}{}", secret.expose())).map_err(|_| {
            HeaderError::Value {
                name: name.to_owned(),
            }
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Why a target's headers could not be built. Never contains a value.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A (secret) value is not a valid header value, e.g. it contains a newline.
    #[error("value of header {name} is not a valid header value")]
    Value {
        /// Header name.
        name: String,
    },
}

impl HeaderError {
    /// Bounded label of the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            HeaderError::Secret(err) => err.kind(),
            HeaderError::Value { .. } => "bad_header_value",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_with(headers: Vec<(HeaderName, HeaderSource)>, auth: Auth) -> TargetConfig {
        let d = crate::worker::Defaults::default();
        TargetConfig {
            id: "t".parse().expect("valid id"),
            file: PathBuf::from("t.yaml"),
            url: Url::parse("http://127.0.0.1/").expect("valid url"),
            headers,
            auth,
            proxy: None,
            root_certificates_pem: Vec::new(),
            client_identity: None,
            idle_timeout: d.idle_timeout,
            connect_timeout: d.connect_timeout,
            backoff: d.backoff,
            max_connection_age: None,
            max_redirects: d.max_redirects,
            limits: d.limits,
            topic: "sluice.events".to_owned(),
            key: RecordKey::Target,
            event_types: Vec::new(),
            enabled: true,
            cloudevents: false,
            compression: true,
            method: http::Method::GET,
            body: None,
            aggregate: None,
        }
    }

    #[test]
    fn resolved_headers_carry_bearer_and_cookie_as_sensitive_values() {
        let dir = std::env::temp_dir().join(format!("sluice-headers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        std::fs::write(dir.join("token"), "tok-123\n").expect("writable");
        std::fs::write(dir.join("cookie"), "session=abc").expect("writable");
        let target = target_with(
            vec![(
                HeaderName::from_static("accept-language"),
                HeaderSource::Plain("en".to_owned()),
            )],
            Auth {
                bearer: Some(SecretRef::File(dir.join("token"))),
                cookie: Some(SecretRef::File(dir.join("cookie"))),
                oauth2: None,
            },
        );
        let headers = target.resolve_headers().expect("secrets exist");
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(headers["authorization"], "Bearer tok-123");
        assert!(headers["authorization"].is_sensitive());
        assert!(headers["cookie"].is_sensitive());
        assert_eq!(headers["accept-language"], "en");
        let debug = format!("{headers:?} {target:?}");
        assert!(
            !debug.contains("tok-123") && !debug.contains("abc"),
            "{debug}"
        );
    }

    #[test]
    fn target_id_accepts_lowercase_digits_dots_dashes_and_underscores() {
        for ok in ["a", "0", "sim-prices", "eu.prices_2", &"a".repeat(63)] {
            assert!(ok.parse::<TargetId>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn target_id_rejects_uppercase_leading_punctuation_empty_and_long_ids() {
        for bad in ["", "A", "-a", ".a", "a b", "a/b", "é", &"a".repeat(64)] {
            assert!(bad.parse::<TargetId>().is_err(), "{bad}");
        }
    }
}
