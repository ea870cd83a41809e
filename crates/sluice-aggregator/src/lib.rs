//! The aggregator: consumes the worker's raw event topic in a consumer group and, per target,
//! merges a REST base state with the ordered deltas into the exact current state (the rules
//! live in `sluice-merge`), then serves it: JSON per target and per entity, an SSE stream of
//! merged changes, periodic snapshots to a compacted topic and files, dataset deliveries of the
//! states to a directory, `/metrics` and probes.
//!
//! Architecture invariants: a target is served only from a complete state (never half-built);
//! the committed offset of a partition never passes the last snapshot of any of its targets, so
//! a restart neither loses nor double-applies a delta; this crate never merges on its own, it
//! calls the pure merger. It must not write to the events topic.

mod batch;
mod delivery;
mod engine;
mod fetch;
mod http;
mod membership;
mod metrics;
mod out_of_range;
mod owners;
mod partition_check;
mod rebalance;
mod records;
mod shared;
mod snapshot;
mod store;
mod versions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;
use sluice_config::AggregatorConfig;
use sluice_publish::{KafkaSettings, SecretPropertyError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use metrics::{
    CounterPair, DeltaCounters, DeltaOutcome, Metrics, Scrape, TargetCounter, TargetGauges, catalog,
};
pub use partition_check::PartitionCountChanged;
pub use sluice_publish::partition_for;
pub use snapshot::SnapshotRecord;

use crate::engine::Engine;
use crate::rebalance::Ctx;
use crate::shared::Shared;
use crate::snapshot::Deliveries;
use crate::store::TargetDef;

/// Why the aggregator could not run.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// Metric registration failed (a bug: names are fixed).
    #[error("registering metrics failed: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A Kafka client could not be created from the configuration.
    #[error("creating the kafka {role} failed: {source}")]
    Kafka {
        /// `consumer` or `producer`.
        role: &'static str,
        /// The librdkafka error.
        source: KafkaError,
    },
    /// A secret Kafka property (`kafka.secret_properties`) could not be read.
    #[error("cannot build the kafka client settings: {0}")]
    KafkaSecret(#[from] SecretPropertyError),
    /// The HTTP listen address could not be bound.
    #[error("binding http listener {addr} failed: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// An events topic's partition count differs from the one its snapshots were built with.
    #[error(transparent)]
    PartitionCountChanged(#[from] PartitionCountChanged),
    /// The consumer thread could not be started.
    #[error("starting the consumer thread failed: {0}")]
    Spawn(std::io::Error),
    /// The HTTP client that forwards reads to their owners (`http.routing: proxy`) could not
    /// be built.
    #[error("{0}")]
    Proxy(String),
    /// The consumer thread panicked.
    #[error("the consumer thread panicked")]
    EnginePanicked,
}

impl AggregatorError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AggregatorError::Metrics(_) => "metrics",
            AggregatorError::Kafka { .. } => "kafka",
            AggregatorError::KafkaSecret(_) => "kafka_secret",
            AggregatorError::Bind { .. } => "bind",
            AggregatorError::PartitionCountChanged(error) => error.kind(),
            AggregatorError::Spawn(_) => "spawn",
            AggregatorError::Proxy(_) => "proxy",
            AggregatorError::EnginePanicked => "engine_panicked",
        }
    }
}

/// The OpenAPI 3.1 document of the aggregator's HTTP API, generated from its routes, as pretty
/// JSON (the form of `docs/openapi/aggregator.json`).
pub fn openapi_document() -> String {
    http::openapi::document()
}

/// Reads each of `topics`' partition count from the brokers into `shared` (bounded; a topic
/// that is missing or unreadable is left out).
fn read_partition_counts(shared: &Shared, topics: &[String]) {
    let consumer: Result<BaseConsumer, _> = shared.reader.create();
    let Ok(consumer) = consumer else {
        return;
    };
    for topic in topics {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(metadata) => {
                if let Some(t) = metadata.topics().iter().find(|t| {
                    t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                }) {
                    let count = i32::try_from(t.partitions().len()).unwrap_or(i32::MAX);
                    shared.set_partition_count(topic, count);
                }
            }
            Err(error) => tracing::debug!(%error, topic, "cannot read the partition count yet"),
        }
    }
}

/// The base URL for `addr` when `http.advertise` is not set: the address itself, or the host
/// name with its port when it listens on every interface.
fn advertised(addr: std::net::SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return format!("http://{addr}");
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("http://{host}:{}", addr.port())
}

/// The aggregator's Kafka settings, for every client it makes (the one policy: the state reader
/// and admin client get the connection and security properties too).
fn kafka_settings(config: &AggregatorConfig) -> KafkaSettings<'_> {
    KafkaSettings::from(&config.kafka)
}

/// The largest record the state topic takes (its `max.message.bytes`, the broker's default
/// unless the topic overrides it); [`snapshot::ASSUMED_RECORD_LIMIT`] when the broker cannot
/// say (librdkafka's mock cluster has no DescribeConfigs).
async fn state_record_limit(admin: &rdkafka::config::ClientConfig, topic: &str) -> u64 {
    // A broker answers in milliseconds; the mock cluster never does, and a start (the one-command
    // demo runs on it) must not wait the admin timeout for that.
    let described = tokio::time::timeout(
        Duration::from_secs(2),
        sluice_publish::topics::topic_config(admin, topic, "max.message.bytes"),
    )
    .await
    .ok()
    .flatten();
    match described.as_deref().map(str::parse::<u64>) {
        Some(Ok(limit)) if limit > 0 => limit,
        _ => {
            tracing::info!(
                topic,
                assumed = snapshot::ASSUMED_RECORD_LIMIT,
                "the state topic's max.message.bytes is unknown: assuming the default"
            );
            snapshot::ASSUMED_RECORD_LIMIT
        }
    }
}

/// Runs the aggregator until `shutdown` is cancelled; then writes final snapshots, commits and
/// leaves the group. `listener` is the HTTP socket (bound by the caller, so tests can use port
/// 0); `None` binds `config.http.listen`.
pub async fn run(
    config: AggregatorConfig,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), AggregatorError> {
    let defs: HashMap<String, Arc<TargetDef>> = config
        .targets()
        .map(|(target, aggregate)| {
            let def = TargetDef {
                target: target.clone(),
                aggregate: aggregate.clone(),
                spec: Arc::new(aggregate.spec.clone()),
            };
            (target.id.as_str().to_owned(), Arc::new(def))
        })
        .collect();
    let topics = config.event_topics();
    tracing::info!(targets = defs.len(), topics = ?topics, group = %config.kafka.group_id, instance = config.kafka.group_instance_id.as_deref().unwrap_or(""), "aggregator starting");

    let settings = kafka_settings(&config);
    let reader = settings.connection()?;
    // Best effort and bounded: a broker without CreateTopics auto-creates on first write.
    let admin = settings.connection()?;
    let state_topic = config.topics.state.clone();
    let ensure = async {
        sluice_publish::topics::ensure_topics(&admin, &[state_topic.as_str()], true).await;
        sluice_publish::topics::ensure_topics(&admin, &[config.topics.members.as_str()], true)
            .await;
        if let Some(dead) = &config.topics.dead_letter {
            sluice_publish::topics::ensure_topics(&admin, &[dead.as_str()], false).await;
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = tokio::time::timeout(Duration::from_secs(15), ensure) => {}
    }
    let record_limit = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        limit = state_record_limit(&admin, &config.topics.state) => limit,
    };
    let chunk_bytes = snapshot::chunk_limit(record_limit);
    tracing::info!(topic = %config.topics.state, max_message_bytes = record_limit, chunk_bytes, "snapshots larger than one record are written in chunks");
    // No batch may pass the state topic's limit either (a batch of several chunks would).
    let batch_size = chunk_bytes.min(1_000_000).to_string();
    let producer: BaseProducer<Deliveries> = settings
        .full(&[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("compression.type", "lz4"),
            ("message.max.bytes", "67108864"),
            ("batch.size", batch_size.as_str()),
        ])?
        .create_with_context(Deliveries::default())
        .map_err(|source| AggregatorError::Kafka {
            role: "producer",
            source,
        })?;

    // Before joining the group: a repartitioned events topic would move targets silently.
    let check = {
        let reader = reader.clone();
        let state_topic = config.topics.state.clone();
        let defs = defs.clone();
        tokio::task::spawn_blocking(move || {
            partition_check::check_partition_counts(&reader, &state_topic, &defs)
        })
    };
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        checked = check => match checked {
            Ok(result) => result?,
            Err(error) => tracing::warn!(%error, "the partition count check did not finish: not checked"),
        },
    }

    let shared = Arc::new(Shared::new(
        defs,
        config.worker.proxy_pools.clone(),
        metrics::Metrics::new(config.metrics.per_target)?,
        config.topics.state.clone(),
        chunk_bytes,
        config.snapshots.dir.clone(),
        config.topics.dead_letter.clone(),
        producer,
        reader,
        tokio::runtime::Handle::current(),
        config.topics.members.clone(),
    ));

    // Routing needs the partition count of every events topic, not only of those assigned
    // here (an assignment refreshes them). Best effort: a topic not there yet is learnt later.
    {
        let shared = shared.clone();
        let topics = topics.clone();
        let _ = tokio::task::spawn_blocking(move || read_partition_counts(&shared, &topics)).await;
    }

    let mut consumer_properties = membership::group_properties(&config.kafka);
    consumer_properties.extend([
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        // A next offset retention removed is reported (`out_of_range`), never skipped.
        ("auto.offset.reset", "error"),
        ("enable.partition.eof", "false"),
        ("topic.metadata.refresh.interval.ms", "5000"),
    ]);
    let consumer: BaseConsumer<Ctx> = settings
        .full(&consumer_properties)?
        .create_with_context(Ctx::new(shared.clone()))
        .map_err(|source| AggregatorError::Kafka {
            role: "consumer",
            source,
        })?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|source| AggregatorError::Kafka {
            role: "consumer",
            source,
        })?;

    let listener = match listener {
        Some(listener) => listener,
        None => TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| AggregatorError::Bind {
                addr: config.http.listen,
                source,
            })?,
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "aggregator http listening");
        let url = config
            .http
            .advertise
            .clone()
            .unwrap_or_else(|| advertised(addr));
        let key = config
            .kafka
            .group_instance_id
            .clone()
            .unwrap_or_else(|| format!("{url} {}", std::process::id()));
        tracing::info!(%url, "clients of targets owned here are sent to this URL by the other aggregators");
        shared.owners.set_me(key, url);
    }
    let members_stop = CancellationToken::new();
    let members = {
        let (shared, stop) = (shared.clone(), members_stop.clone());
        std::thread::Builder::new()
            .name("sluice-members".to_owned())
            .spawn(move || {
                owners::follow(&shared.owners, &shared.reader, &shared.members_topic, &stop);
            })
            .map_err(AggregatorError::Spawn)?
    };
    let http_stop = CancellationToken::new();
    let server = {
        let stop = http_stop.clone();
        let app = http::router(shared.clone(), &config.http).map_err(AggregatorError::Proxy)?;
        let listener = http::CappedListener::new(
            listener,
            config.http.max_connections,
            shared.metrics.http_connections.clone(),
            shared.metrics.http_rejected.clone(),
        );
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "http server failed");
            }
        })
    };

    // Deliveries run beside the consumer thread and stop after it (the final state is not
    // delivered again at shutdown; the schedule's last round is the last delivery).
    let deliveries_stop = CancellationToken::new();
    let deliveries = tokio::spawn(delivery::run(
        shared.clone(),
        config.deliveries.clone(),
        deliveries_stop.clone(),
    ));

    let engine = Engine::new(
        shared.clone(),
        consumer,
        config.snapshots.interval,
        config.kafka.clone(),
    );
    let engine_stop = shutdown.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sluice-aggregator".to_owned())
        .spawn(move || {
            engine.run(engine_stop);
            let _ = done_tx.send(());
        })
        .map_err(AggregatorError::Spawn)?;
    let finished = done_rx.await;
    members_stop.cancel();
    let _ = tokio::task::spawn_blocking(move || members.join()).await;
    deliveries_stop.cancel();
    http_stop.cancel();
    let _ = deliveries.await;
    let _ = server.await;
    finished.map_err(|_| AggregatorError::EnginePanicked)?;
    tracing::info!("aggregator stopped");
    Ok(())
}
