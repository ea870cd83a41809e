//! The validated `aggregator.yaml`: which worker config's targets to aggregate, and how the
//! aggregator process reaches Kafka, writes snapshots and serves state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::aggregate::AggregateConfig;
use crate::delivery::DeliveryConfig;
use crate::metrics::MetricsConfig;
use crate::secret::SecretRef;
use crate::target::TargetConfig;
use crate::worker::{ShutdownConfig, WorkerConfig};

/// Fully validated aggregator configuration, its worker config included.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// The `aggregator.yaml` this was loaded from.
    pub file: PathBuf,
    /// The worker config named by `worker` (targets, their `aggregate` sections, proxy pools),
    /// loaded from its file without environment overrides.
    pub worker: WorkerConfig,
    /// Kafka consumer and producer settings.
    pub kafka: AggregatorKafka,
    /// Topic names.
    pub topics: AggregatorTopics,
    /// The HTTP server (state, `/metrics`, health).
    pub http: AggregatorHttp,
    /// Periodic snapshots of the state.
    pub snapshots: SnapshotConfig,
    /// Dataset deliveries of the states, in the order written.
    pub deliveries: Vec<DeliveryConfig>,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// What `/metrics` exposes per target.
    pub metrics: MetricsConfig,
}

impl AggregatorConfig {
    /// Default [`AggregatorHttp::listen`] of the aggregator (the worker's is next to it).
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:9091";

    /// The enabled targets with an `aggregate` section, sorted by id.
    pub fn targets(&self) -> impl Iterator<Item = (&TargetConfig, &AggregateConfig)> {
        self.worker
            .targets
            .iter()
            .filter(|target| target.enabled)
            .filter_map(|target| target.aggregate.as_deref().map(|agg| (target, agg)))
    }

    /// The distinct event topics of [`AggregatorConfig::targets`], sorted.
    pub fn event_topics(&self) -> Vec<String> {
        let topics: BTreeSet<&str> = self
            .targets()
            .map(|(target, _)| target.topic.as_str())
            .collect();
        topics.into_iter().map(str::to_owned).collect()
    }
}

/// The aggregator's HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatorHttp {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Connections served at once; one more is answered 503 and closed. Never 0.
    pub max_connections: usize,
    /// The base URL other aggregators send clients to for the targets this one owns
    /// (`scheme://host[:port]`, no trailing slash); `None` = `http://` and the listening
    /// address (the host name when it listens on every interface).
    pub advertise: Option<String>,
    /// The bearer token every read of the API (`/v1/…`, `/stream` included) must carry; `None`
    /// = the API is open. `/`, `/metrics`, `/healthz` and `/readyz` stay open either way.
    pub bearer: Option<SecretRef>,
    /// Browser origins allowed to read the API (CORS).
    pub cors: CorsOrigins,
    /// How a request for a target another aggregator owns is answered.
    pub routing: Routing,
}

/// `http.routing`: what an aggregator does with a request for a target another one owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// `307` to the owner (the client follows it).
    #[default]
    Redirect,
    /// Forward it to the owner and stream its answer back (clients that cannot reach the
    /// owners, or do not follow redirects).
    Proxy,
}

impl Routing {
    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Redirect => "redirect",
            Routing::Proxy => "proxy",
        }
    }
}

/// The origins a browser may read the aggregator's API from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CorsOrigins {
    /// No CORS headers: browsers read the API from its own origin only.
    #[default]
    None,
    /// Any origin (`["*"]`).
    Any,
    /// These origins, each `scheme://host[:port]` as a browser sends it.
    List(Vec<String>),
}

impl AggregatorHttp {
    /// Default [`AggregatorHttp::max_connections`].
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
}

/// The aggregator's Kafka settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatorKafka {
    /// Bootstrap servers, `host:port`; never empty.
    pub brokers: Vec<String>,
    /// `client.id` sent to the brokers.
    pub client_id: String,
    /// The consumer group (`group.id`): aggregators in one group split the partitions.
    pub group_id: String,
    /// This aggregator's stable identity in the group (`group.instance.id`, static membership):
    /// a restart with the same id takes its partitions back at once instead of waiting for the
    /// session of its previous run to time out. `None` = a dynamic member. One id per running
    /// aggregator (a StatefulSet's pod name); two live members with one id fence each other.
    pub group_instance_id: Option<String>,
    /// Extra librdkafka consumer and producer properties, passed through verbatim. Secret-bearing
    /// keys (passwords) are refused by validation, so this map is safe to print.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are secrets, as in the worker's `kafka`.
    pub secret_properties: BTreeMap<String, SecretRef>,
}

impl AggregatorKafka {
    /// Default `client.id`.
    pub const DEFAULT_CLIENT_ID: &'static str = "sluice-aggregator";
    /// Default `group.id`.
    pub const DEFAULT_GROUP_ID: &'static str = "sluice-aggregator";
}

/// The aggregator's topic names (the event topics come from the targets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatorTopics {
    /// Compacted snapshot topic: target id → latest state.
    pub state: String,
    /// Where deltas that cannot be merged go; `None` = they are only counted and logged.
    pub dead_letter: Option<String>,
    /// Compacted topic where each aggregator of the group says where it answers and which
    /// partitions it owns, so any of them can send a client to a target's owner.
    pub members: String,
}

impl AggregatorTopics {
    /// Default state topic.
    pub const DEFAULT_STATE: &'static str = "sluice.state";
    /// Default members topic.
    pub const DEFAULT_MEMBERS: &'static str = "sluice.aggregators";
}

/// Periodic snapshots of each target's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Time between snapshots of each target's state; never zero.
    pub interval: Duration,
    /// Directory for `<target>.json` files besides the state topic (resolved against the
    /// aggregator file's directory); `None` = the topic only.
    pub dir: Option<PathBuf>,
}

impl SnapshotConfig {
    /// Default [`SnapshotConfig::interval`].
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
}

/// A loaded config file of either kind (see [`load_any`](crate::load_any)).
// Loaded once per process and matched at once, so the size difference between the variants
// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Loaded {
    /// A `worker.yaml` with its targets.
    Worker(WorkerConfig),
    /// An `aggregator.yaml` with the worker config it names.
    Aggregator(AggregatorConfig),
}
