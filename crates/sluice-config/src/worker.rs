//! The validated `worker.yaml`: what one worker process connects to and how it treats targets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sluice_sse::Limits;

use crate::fleet::Fleet;
use crate::metrics::MetricsConfig;
use crate::proxy::ProxyConfig;
use crate::secret::SecretRef;
use crate::target::TargetConfig;

/// Fully validated worker configuration, targets included, defaults applied.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The `worker.yaml` this was loaded from.
    pub file: PathBuf,
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: Topics,
    /// The operations HTTP server (`/metrics`, `/status`, health).
    pub http: HttpConfig,
    /// Directory the target files were read from.
    pub targets_dir: PathBuf,
    /// How often the running worker looks at the targets directory again (`targets_watch`;
    /// zero: never, the files are read once at start).
    pub targets_watch: Duration,
    /// Connection settings every target starts from.
    pub defaults: Defaults,
    /// Named pools of static proxies that targets can refer to.
    pub proxy_pools: BTreeMap<String, Vec<ProxyConfig>>,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Whether targets are shared with a fleet of workers.
    pub fleet: Fleet,
    /// What `/metrics` exposes per target.
    pub metrics: MetricsConfig,
    /// The admin API on the operations server.
    pub admin: AdminConfig,
    /// At least once, or exactly once (`delivery:`).
    pub delivery: crate::DeliveryGuarantee,
    /// Every target, sorted by id, disabled ones included (see [`TargetConfig::enabled`]).
    pub targets: Vec<TargetConfig>,
}

impl WorkerConfig {
    /// Default `targets_watch`: how often the targets directory is read again.
    pub const DEFAULT_TARGETS_WATCH: Duration = Duration::from_secs(2);
}

/// The admin API (`/v1/admin/...` on the operations server): off unless a token is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// The bearer token every admin request must carry (`None`: the API is off).
    pub token: Option<SecretRef>,
}

/// Kafka producer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port`; never empty.
    pub brokers: Vec<String>,
    /// `client.id` sent to the brokers.
    pub client_id: String,
    /// Extra librdkafka properties, passed through verbatim. Secret-bearing keys (passwords) are
    /// refused by validation, so this map is safe to print.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are secrets (`sasl.password`, `ssl.key.password` …),
    /// read from their references when a client is built; never in `properties`.
    pub secret_properties: BTreeMap<String, SecretRef>,
}

impl KafkaConfig {
    /// Default `client.id`.
    pub const DEFAULT_CLIENT_ID: &'static str = "sluice";
}

/// Topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Raw events; the default topic of every target.
    pub events: String,
    /// Compacted checkpoint topic (target id → last acknowledged event id).
    pub checkpoints: String,
    /// Compacted topic of target definitions added at run time (target id → a target file's
    /// content; a tombstone removes it).
    pub targets: String,
}

impl Topics {
    /// Default events topic.
    pub const DEFAULT_EVENTS: &'static str = "sluice.events";
    /// Default checkpoints topic.
    pub const DEFAULT_CHECKPOINTS: &'static str = "sluice.checkpoints";
    /// Default run-time target definitions topic.
    pub const DEFAULT_TARGETS: &'static str = "sluice.targets";
}

/// The operations HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
}

impl HttpConfig {
    /// Default listen address.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:9090";
}

/// Graceful shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// Time from SIGTERM to exit: stop reading, flush, write checkpoints.
    pub grace: Duration,
}

impl ShutdownConfig {
    /// Default grace period (a container's default is 30 s; leave headroom).
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(25);
}

/// Reconnect backoff: exponential with full jitter from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay; never zero.
    pub initial: Duration,
    /// Cap on the delay; at least `initial`.
    pub max: Duration,
    /// A connection healthy this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// Connection settings from `worker.yaml`'s `defaults`, each overridable per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// No byte (comments included) for this long means the connection is dead (`silent_drop`).
    pub idle_timeout: Duration,
    /// Limit on TCP connect plus proxy handshake.
    pub connect_timeout: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Planned reconnect before a proxy or upstream kills a connection this old; `None` = never.
    pub max_connection_age: Option<Duration>,
    /// Redirects followed before giving up.
    pub max_redirects: u32,
    /// Parser caps on line and event size.
    pub limits: Limits,
    /// Most concurrent connections to one upstream host (not per target).
    pub per_host_connections: u32,
    /// Most targets streaming over one HTTP/2 connection: more open another connection to the
    /// host. Keep it at or below the upstream's `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub streams_per_connection: u32,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            idle_timeout: Duration::from_secs(45),
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            max_connection_age: None,
            max_redirects: 5,
            limits: Limits::default(),
            per_host_connections: 64,
            streams_per_connection: 100,
        }
    }
}
