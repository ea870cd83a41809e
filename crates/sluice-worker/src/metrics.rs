//! Prometheus metrics of the worker: one registry, per-target handles resolved once.
//!
//! Label values are bounded: target ids (validated, from config), the fixed reconnect reasons and
//! states. No URL, header, proxy or error text ever becomes a label.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use sluice_client::DisconnectReason;

use crate::status::{State, TargetStatus};

/// Buckets of the delivery latency histogram, seconds (receipt to Kafka acknowledgement).
const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5, 10.0];

/// Every metric family of the worker.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    state: IntGaugeVec,
    events: IntCounterVec,
    bytes: IntCounterVec,
    acked: IntCounterVec,
    filtered: IntCounterVec,
    duplicates: IntCounterVec,
    reconnects: IntCounterVec,
    delivery_errors: IntCounterVec,
    key_errors: IntCounterVec,
    paused: IntGaugeVec,
    queue_depth: IntGaugeVec,
    since_byte: prometheus::GaugeVec,
    since_event: prometheus::GaugeVec,
    latency: HistogramVec,
    checkpoints: IntCounterVec,
    producer_in_flight: IntGauge,
    targets: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Why the registry could not be built (a programming error: duplicate or invalid names).
#[derive(Debug, thiserror::Error)]
#[error("building metrics registry failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn float_gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<prometheus::GaugeVec, MetricsError> {
    let vec = prometheus::GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

impl Metrics {
    /// Registers every family (and the process collector on Linux).
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let t = &["target"];
        let metrics = Metrics {
            state: gauge(
                &registry,
                "sluice_target_state",
                "1 for the target's current connection state, 0 for the others.",
                &["target", "state"],
            )?,
            events: counter(
                &registry,
                "sluice_events_received_total",
                "SSE events received and handed to Kafka (after the event-type filter).",
                t,
            )?,
            bytes: counter(
                &registry,
                "sluice_bytes_received_total",
                "Response body bytes received.",
                t,
            )?,
            acked: counter(
                &registry,
                "sluice_events_delivered_total",
                "Events Kafka acknowledged.",
                t,
            )?,
            filtered: counter(
                &registry,
                "sluice_events_filtered_total",
                "Events dropped by the target's event-type filter.",
                t,
            )?,
            duplicates: counter(
                &registry,
                "sluice_events_duplicate_total",
                "Replayed events dropped after a make-before-break switch.",
                t,
            )?,
            reconnects: counter(
                &registry,
                "sluice_reconnects_total",
                "Reconnects by reason.",
                &["target", "reason"],
            )?,
            delivery_errors: counter(
                &registry,
                "sluice_delivery_errors_total",
                "Kafka delivery failures (each is retried, never dropped).",
                t,
            )?,
            key_errors: counter(
                &registry,
                "sluice_key_errors_total",
                "Events whose record key could not be read from the payload (published with the target id as key).",
                t,
            )?,
            paused: gauge(
                &registry,
                "sluice_upstream_paused",
                "1 while reading upstream is paused because Kafka is not keeping up.",
                t,
            )?,
            queue_depth: gauge(
                &registry,
                "sluice_producer_queue_depth",
                "Events of the target sent to Kafka and not yet acknowledged.",
                t,
            )?,
            since_byte: float_gauge(
                &registry,
                "sluice_seconds_since_last_byte",
                "Seconds since the last byte from upstream (absent before the first).",
                t,
            )?,
            since_event: float_gauge(
                &registry,
                "sluice_seconds_since_last_event",
                "Seconds since the last event from upstream (absent before the first).",
                t,
            )?,
            latency: {
                let vec = HistogramVec::new(
                    HistogramOpts::new(
                        "sluice_delivery_latency_seconds",
                        "From receipt of an event to Kafka's acknowledgement.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    t,
                )?;
                registry.register(Box::new(vec.clone()))?;
                vec
            },
            checkpoints: counter(
                &registry,
                "sluice_checkpoints_written_total",
                "Checkpoints Kafka acknowledged.",
                t,
            )?,
            producer_in_flight: {
                let g = IntGauge::new(
                    "sluice_producer_in_flight",
                    "Records in the producer not yet acknowledged, process-wide.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            targets: {
                let g = IntGauge::new("sluice_targets", "Enabled targets held by this worker.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            registry,
        };
        Ok(metrics)
    }

    /// Handles for one target; creating them makes its series appear.
    pub fn target(&self, target: &str) -> TargetMetrics {
        let states = State::ALL.map(|s| self.state.with_label_values(&[target, s.as_str()]));
        self.targets.inc();
        TargetMetrics {
            target: target.to_owned(),
            states,
            events: self.events.with_label_values(&[target]),
            bytes: self.bytes.with_label_values(&[target]),
            acked: self.acked.with_label_values(&[target]),
            filtered: self.filtered.with_label_values(&[target]),
            duplicates: self.duplicates.with_label_values(&[target]),
            delivery_errors: self.delivery_errors.with_label_values(&[target]),
            key_errors: self.key_errors.with_label_values(&[target]),
            paused: self.paused.with_label_values(&[target]),
            queue_depth: self.queue_depth.with_label_values(&[target]),
            latency: self.latency.with_label_values(&[target]),
            checkpoints: self.checkpoints.with_label_values(&[target]),
            reconnects: self.reconnects.clone(),
        }
    }

    /// Refreshes the scrape-time gauges from the status table and renders the text format.
    pub fn render(
        &self,
        statuses: &[std::sync::Arc<TargetStatus>],
        producer_in_flight: i64,
    ) -> String {
        for status in statuses {
            let target = status.id.as_str();
            match status.seconds_since_last_byte() {
                Some(s) => self.since_byte.with_label_values(&[target]).set(s),
                None => {
                    let _ = self.since_byte.remove_label_values(&[target]);
                }
            }
            match status.seconds_since_last_event() {
                Some(s) => self.since_event.with_label_values(&[target]).set(s),
                None => {
                    let _ = self.since_event.remove_label_values(&[target]);
                }
            }
        }
        self.producer_in_flight.set(producer_in_flight);
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// The metric handles of one target.
#[derive(Clone)]
pub struct TargetMetrics {
    target: String,
    states: [IntGauge; 5],
    /// Events handed to Kafka.
    pub events: IntCounter,
    /// Body bytes.
    pub bytes: IntCounter,
    /// Events acknowledged.
    pub acked: IntCounter,
    /// Events filtered out by type.
    pub filtered: IntCounter,
    /// Replayed duplicates dropped.
    pub duplicates: IntCounter,
    /// Delivery failures.
    pub delivery_errors: IntCounter,
    /// Key extraction failures.
    pub key_errors: IntCounter,
    /// 1 while paused by backpressure.
    pub paused: IntGauge,
    /// Events in flight.
    pub queue_depth: IntGauge,
    /// Receipt → acknowledgement.
    pub latency: Histogram,
    /// Checkpoints written.
    pub checkpoints: IntCounter,
    reconnects: IntCounterVec,
}

impl TargetMetrics {
    /// Sets the one-hot state gauge.
    pub fn set_state(&self, state: State) {
        for (gauge, s) in self.states.iter().zip(State::ALL) {
            gauge.set(i64::from(s == state));
        }
    }

    /// Counts one reconnect.
    pub fn reconnect(&self, reason: DisconnectReason) {
        self.reconnects
            .with_label_values(&[self.target.as_str(), reason.as_str()])
            .inc();
    }
}
