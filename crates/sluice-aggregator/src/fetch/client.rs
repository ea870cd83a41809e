//! The HTTP client of one base-state fetch: the target's headers and auth plus the
//! `aggregate.base` headers, its proxy (for a pooled target the same member its stream uses,
//! `sluice_publish::pool_home`), TLS roots and client certificate; secrets are read now, at
//! each fetch. It must not fetch, retry or log.

use std::collections::BTreeMap;

use std::sync::Arc;

use sluice_client::oauth::{Grant, TokenSources};
use sluice_client::{Client, ClientOptions, ConnectError};
use sluice_config::{HeaderError, ProxyConfig, SecretError, TargetProxy};
use sluice_publish::pool_home;

use crate::store::TargetDef;

/// Why the client for a base fetch could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BaseClientError {
    /// A header (the target's or `aggregate.base`'s) could not be resolved.
    #[error("cannot resolve the base-state request headers: {0}")]
    Headers(#[from] HeaderError),
    /// The proxy's secret could not be read.
    #[error("cannot resolve the proxy: {0}")]
    Proxy(#[from] SecretError),
    /// The client certificate or its key (`tls.client_cert` / `tls.client_key`) cannot be read.
    #[error("cannot read the client certificate: {0}")]
    Identity(#[source] SecretError),
    /// The target names a proxy pool with no member.
    #[error("proxy pool {pool:?} has no member")]
    EmptyPool {
        /// The pool's name.
        pool: String,
    },
    /// The HTTP client refused its options.
    #[error(transparent)]
    Client(#[from] ConnectError),
}

impl BaseClientError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BaseClientError::Headers(error) => error.kind(),
            BaseClientError::Proxy(error) => error.kind(),
            BaseClientError::Identity(error) => error.kind(),
            BaseClientError::EmptyPool { .. } => "empty_pool",
            BaseClientError::Client(error) => error.kind(),
        }
    }
}

/// The client for one base-state fetch of `def`.
pub fn base_client(
    def: &TargetDef,
    pools: &BTreeMap<String, Vec<ProxyConfig>>,
    tokens: &TokenSources,
) -> Result<Client, BaseClientError> {
    let target = &def.target;
    let mut headers = target.resolve_headers()?;
    for (name, value) in def.aggregate.resolve_base_headers()?.iter() {
        headers.insert(name.clone(), value.clone());
    }
    let proxy = match &target.proxy {
        None => None,
        Some(TargetProxy::Direct(proxy)) => Some(proxy.resolve_url()?),
        Some(TargetProxy::Pool(name)) => {
            let members = pools.get(name).map(Vec::as_slice).unwrap_or_default();
            match members.get(pool_home(target.id.as_str(), members.len())) {
                Some(proxy) => Some(proxy.resolve_url()?),
                None => return Err(BaseClientError::EmptyPool { pool: name.clone() }),
            }
        }
    };
    let options = ClientOptions {
        headers,
        proxy,
        connect_timeout: target.connect_timeout,
        max_redirects: usize::try_from(target.max_redirects).unwrap_or(usize::MAX),
        root_certificates_pem: target.root_certificates_pem.clone(),
        identity_pem: match &target.client_identity {
            None => None,
            Some(identity) => Some(identity.read().map_err(BaseClientError::Identity)?),
        },
        compression: target.compression,
        ..ClientOptions::default()
    };
    let client = Client::new(def.aggregate.base_url.clone(), options)?;
    let Some(oauth2) = &target.auth.oauth2 else {
        return Ok(client);
    };
    // The target's grant: its token goes to the base-state server too (its own origin only).
    let config = oauth2.clone();
    let grant = Grant {
        token_url: oauth2.token_url.clone(),
        client_id: oauth2.client_id.clone(),
        scopes: oauth2.scopes.clone(),
    };
    let source = tokens
        .get(
            &grant,
            Arc::new(move || config.read_secret()),
            &target.root_certificates_pem,
        )
        .map_err(|error| BaseClientError::Client(ConnectError::Token(error)))?;
    Ok(client.with_token_source(source))
}
