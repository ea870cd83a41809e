//! Raw serde shapes of the YAML files: every key known (`deny_unknown_fields`), every value still
//! unvalidated (durations, URLs and ids are plain strings here so that one pass can report them all).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `worker.yaml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorker {
    #[serde(default)]
    pub kafka: RawKafka,
    #[serde(default)]
    pub topics: RawTopics,
    #[serde(default)]
    pub http: RawHttp,
    pub targets_dir: Option<String>,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub proxy_pools: BTreeMap<String, Vec<RawProxy>>,
    #[serde(default)]
    pub shutdown: RawShutdown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafka {
    #[serde(default)]
    pub brokers: Vec<String>,
    pub client_id: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTopics {
    pub events: Option<String>,
    pub checkpoints: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShutdown {
    pub grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    pub idle_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub backoff: RawBackoff,
    pub max_connection_age: Option<String>,
    pub max_redirects: Option<u32>,
    #[serde(default)]
    pub limits: RawLimits,
    pub per_host_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackoff {
    pub initial: Option<String>,
    pub max: Option<String>,
    pub reset_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_line_bytes: Option<u64>,
    pub max_event_bytes: Option<u64>,
}

/// A proxy: `{url, password}`; in a target also `{pool}`. Which combination is allowed is decided
/// by validation, so the message can say what to write instead.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    pub url: Option<String>,
    pub password: Option<RawValueRef>,
    pub pool: Option<String>,
}

/// `{env: VAR}`, `{file: /path}` or (for plain header values only) `{value: "..."}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawValueRef {
    pub env: Option<String>,
    pub file: Option<String>,
    pub value: Option<String>,
}

/// One `targets/*.yaml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub id: Option<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, RawValueRef>,
    #[serde(default)]
    pub auth: RawAuth,
    pub proxy: Option<RawProxy>,
    #[serde(default)]
    pub tls: RawTls,
    pub idle_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub backoff: RawBackoff,
    pub max_connection_age: Option<String>,
    pub max_redirects: Option<u32>,
    #[serde(default)]
    pub limits: RawLimits,
    pub topic: Option<String>,
    pub key: Option<RawKey>,
    #[serde(default)]
    pub event_types: Vec<String>,
    pub enabled: Option<bool>,
    pub cloudevents: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub bearer: Option<RawValueRef>,
    pub cookie: Option<RawValueRef>,
}

/// A target's `tls` section: extra trust for HTTPS upstreams (and HTTPS proxies) behind private CAs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    /// PEM bundle of extra root certificates, relative to the target file.
    pub ca_file: Option<String>,
}

/// `key: target` or `key: {pointer: "/path"}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawKey {
    Named(String),
    Pointer(RawPointerKey),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPointerKey {
    pub pointer: String,
}
