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
    pub targets_watch: Option<String>,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub proxy_pools: BTreeMap<String, Vec<RawProxy>>,
    #[serde(default)]
    pub shutdown: RawShutdown,
    pub fleet: Option<RawFleet>,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub delivery: RawGuarantee,
}

/// `delivery`: the worker's delivery guarantee.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuarantee {
    pub mode: Option<String>,
    pub commit_interval: Option<String>,
    pub max_records: Option<u64>,
    pub transaction_timeout: Option<String>,
}

/// `admin`: the worker's admin API (off without a token).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub token: Option<RawValueRef>,
}

/// `fleet`: `none`, or the group's settings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawFleet {
    Mode(String),
    Group(RawFleetGroup),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleetGroup {
    pub group_id: Option<String>,
    pub partitions: Option<u64>,
    pub instance_id: Option<String>,
    pub session_timeout: Option<String>,
    pub handover_timeout: Option<String>,
    pub group_protocol: Option<String>,
}

/// `metrics:` of either file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub per_target: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafka {
    #[serde(default)]
    pub brokers: Vec<String>,
    pub client_id: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub secret_properties: BTreeMap<String, RawValueRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTopics {
    pub events: Option<String>,
    pub checkpoints: Option<String>,
    pub targets: Option<String>,
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
    pub streams_per_connection: Option<u32>,
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
    pub compression: Option<bool>,
    pub method: Option<String>,
    pub body: Option<RawBody>,
    pub aggregate: Option<RawAggregate>,
}

/// A target's `body:`: exactly one of `value` (text), `json` (any YAML value, sent as JSON),
/// `env` or `file` (a secret), and an optional `content_type`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBody {
    pub value: Option<String>,
    pub json: Option<serde_json::Value>,
    pub env: Option<String>,
    pub file: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub bearer: Option<RawValueRef>,
    pub cookie: Option<RawValueRef>,
    pub oauth2: Option<RawOAuth2>,
}

/// `auth.oauth2`: the client-credentials grant whose token is sent as the bearer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOAuth2 {
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<RawValueRef>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A target's `tls` section: extra trust for HTTPS upstreams (and HTTPS proxies) behind private CAs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    /// PEM bundle of extra root certificates, relative to the target file.
    pub ca_file: Option<String>,
    /// PEM client certificate chain (mTLS), relative to the target file.
    pub client_cert: Option<String>,
    /// Its private key (PEM), a secret: `{file: path}` or `{env: VAR}`.
    pub client_key: Option<RawValueRef>,
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

/// A target's `aggregate` section: how the aggregator rebuilds its state.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAggregate {
    pub base: Option<RawBase>,
    pub delta: Option<RawDelta>,
    pub strategy: Option<String>,
    #[serde(default)]
    pub delete_events: Vec<String>,
    #[serde(default)]
    pub ignore_events: Vec<String>,
    #[serde(default)]
    pub reset_events: Vec<String>,
    pub max_buffered: Option<u64>,
    pub max_buffered_bytes: Option<u64>,
    pub max_entities: Option<u64>,
    pub dedupe_window: Option<u64>,
    pub limits: Option<RawEntityLimits>,
}

/// `aggregate.limits`: how large and deep a patched entity may become.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEntityLimits {
    pub max_entity_bytes: Option<u64>,
    pub max_depth: Option<u64>,
}

/// `aggregate.base`: the REST base state.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBase {
    pub url: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, RawValueRef>,
    pub items: Option<String>,
    pub key: Option<String>,
    pub version: Option<String>,
    pub timeout: Option<String>,
    pub pagination: Option<RawPagination>,
}

/// `aggregate.base.pagination`: how the pages of a paginated base state are found.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPagination {
    pub mode: Option<String>,
    pub next: Option<String>,
    pub cursor: Option<String>,
    pub param: Option<String>,
    pub size_param: Option<String>,
    pub size: Option<u64>,
    pub first_page: Option<u64>,
    pub max_pages: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// `aggregate.delta`: where key, value and version are in each event's data.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelta {
    pub key: Option<String>,
    pub value: Option<String>,
    pub version: Option<String>,
    pub first_version: Option<String>,
    pub last_version: Option<String>,
    pub contiguous: Option<bool>,
}

/// `aggregator.yaml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAggregator {
    pub worker: Option<String>,
    #[serde(default)]
    pub kafka: RawAggregatorKafka,
    #[serde(default)]
    pub topics: RawAggregatorTopics,
    #[serde(default)]
    pub http: RawAggregatorHttp,
    #[serde(default)]
    pub snapshots: RawSnapshots,
    #[serde(default)]
    pub deliveries: Vec<RawDelivery>,
    #[serde(default)]
    pub shutdown: RawShutdown,
    #[serde(default)]
    pub metrics: RawMetrics,
}

/// The aggregator's `http`: the worker's `listen` plus the connection cap.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAggregatorHttp {
    pub listen: Option<String>,
    pub max_connections: Option<u32>,
    pub advertise: Option<String>,
    pub routing: Option<String>,
    #[serde(default)]
    pub auth: RawHttpAuth,
    #[serde(default)]
    pub cors: RawCors,
}

/// The aggregator's `http.auth`: the bearer token its read API requires.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpAuth {
    pub bearer: Option<RawValueRef>,
}

/// The aggregator's `http.cors`: the browser origins allowed to read its API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// The aggregator's `kafka`: the worker's keys plus the consumer group.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAggregatorKafka {
    #[serde(default)]
    pub brokers: Vec<String>,
    pub client_id: Option<String>,
    pub group_id: Option<String>,
    pub group_instance_id: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub secret_properties: BTreeMap<String, RawValueRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAggregatorTopics {
    pub state: Option<String>,
    pub dead_letter: Option<String>,
    pub members: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSnapshots {
    pub interval: Option<String>,
    pub dir: Option<String>,
}

/// One entry of `deliveries`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelivery {
    pub targets: Option<RawDeliveryTargets>,
    pub every: Option<String>,
    pub cron: Option<String>,
    pub format: Option<String>,
    pub destination: Option<RawDestination>,
    pub keep: Option<u32>,
    pub columns: Option<Vec<RawColumn>>,
}

/// One `deliveries[].columns` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawColumn {
    pub name: Option<String>,
    pub pointer: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `deliveries[].targets`: `all`, or a list of target ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawDeliveryTargets {
    /// A word (only `all` is valid).
    Word(String),
    /// Target ids.
    List(Vec<String>),
}

/// `deliveries[].destination`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDestination {
    pub dir: Option<String>,
    pub s3: Option<RawS3>,
}

/// `deliveries[].destination.s3`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawS3 {
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<RawValueRef>,
    pub secret_access_key: Option<RawValueRef>,
    pub session_token: Option<RawValueRef>,
}
