//! Prometheus metrics of the worker.
//!
//! Per-target values live in each target's [`TargetStatus`] as plain atomics; a collector turns
//! them into metric families at scrape time. A registry child per series would cost about a
//! kilobyte each (every child keeps its own copy of the descriptor), thirty series per target,
//! which at 10,000 targets is more than the connections themselves.
//!
//! Label values are bounded: target ids (validated, from config), the fixed reconnect reasons and
//! states. No URL, header, proxy or error text ever becomes a label.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};

use crate::status::{LATENCY_BUCKETS, State, TargetStatus};

/// Every metric family of the worker.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    producer_in_flight: IntGauge,
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

impl Metrics {
    /// The registry: per-target families for `targets`, process totals, the producer gauge.
    pub fn new(targets: Vec<Arc<TargetStatus>>) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let producer_in_flight = IntGauge::new(
            "sluice_producer_in_flight",
            "Records in the producer not yet acknowledged, process-wide.",
        )?;
        registry.register(Box::new(producer_in_flight.clone()))?;
        let count = IntGauge::new("sluice_targets", "Enabled targets held by this worker.")?;
        count.set(i64::try_from(targets.len()).unwrap_or(i64::MAX));
        registry.register(Box::new(count))?;
        registry.register(Box::new(TargetsCollector::new(targets)?))?;
        Ok(Metrics {
            registry,
            producer_in_flight,
        })
    }

    /// Renders the text format.
    pub fn render(&self, producer_in_flight: i64) -> String {
        self.producer_in_flight.set(producer_in_flight);
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// (name, help, type, extra label) of each per-target family, in output order.
const FAMILIES: [(&str, &str, MetricType, Option<&str>); 16] = [
    (
        "sluice_target_state",
        "1 for the target's current connection state, 0 for the others.",
        MetricType::GAUGE,
        Some("state"),
    ),
    (
        "sluice_events_received_total",
        "SSE events received and handed to Kafka (after the event-type filter).",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_bytes_received_total",
        "Response body bytes received.",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_events_delivered_total",
        "Events Kafka acknowledged.",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_events_filtered_total",
        "Events dropped by the target's event-type filter.",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_events_duplicate_total",
        "Replayed events dropped after a make-before-break switch.",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_reconnects_total",
        "Reconnects by reason.",
        MetricType::COUNTER,
        Some("reason"),
    ),
    (
        "sluice_delivery_errors_total",
        "Kafka delivery failures (each is retried, never dropped).",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_key_errors_total",
        "Events whose record key could not be read from the payload (published keyed by target id).",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_checkpoints_written_total",
        "Checkpoints Kafka acknowledged.",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_upstream_paused",
        "1 while reading upstream is paused because Kafka is not keeping up.",
        MetricType::GAUGE,
        None,
    ),
    (
        "sluice_producer_queue_depth",
        "Events of the target sent to Kafka and not yet acknowledged.",
        MetricType::GAUGE,
        None,
    ),
    (
        "sluice_seconds_since_last_byte",
        "Seconds since the last byte from upstream (absent before the first).",
        MetricType::GAUGE,
        None,
    ),
    (
        "sluice_seconds_since_last_event",
        "Seconds since the last event from upstream (absent before the first).",
        MetricType::GAUGE,
        None,
    ),
    (
        "sluice_delivery_latency_seconds",
        "From receipt of an event to Kafka's acknowledgement.",
        MetricType::HISTOGRAM,
        None,
    ),
    (
        "sluice_connection_generation",
        "Successful connections of the target so far (the sluice.connection header).",
        MetricType::GAUGE,
        None,
    ),
];

/// Renders every target's metrics from its status at scrape time.
struct TargetsCollector {
    targets: Vec<Arc<TargetStatus>>,
    descs: Vec<Desc>,
}

impl TargetsCollector {
    fn new(targets: Vec<Arc<TargetStatus>>) -> Result<TargetsCollector, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _, extra)| {
                let mut labels = vec!["target".to_owned()];
                labels.extend(extra.map(str::to_owned));
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    labels,
                    Default::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TargetsCollector { targets, descs })
    }
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn with_labels(target: &str, extra: Option<(&str, &str)>) -> proto::Metric {
    // Label pairs sorted by name, as the registry's own metrics render them.
    let mut labels = vec![label("target", target)];
    if let Some((name, value)) = extra {
        labels.push(label(name, value));
    }
    labels.sort_by(|a, b| a.name().cmp(b.name()));
    proto::Metric::from_label(labels)
}

fn counter(target: &str, extra: Option<(&str, &str)>, value: u64) -> proto::Metric {
    let mut metric = with_labels(target, extra);
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    metric.set_counter(c);
    metric
}

fn gauge(target: &str, extra: Option<(&str, &str)>, value: f64) -> proto::Metric {
    let mut metric = with_labels(target, extra);
    let mut g = proto::Gauge::default();
    g.set_value(value);
    metric.set_gauge(g);
    metric
}

impl Collector for TargetsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        FAMILIES
            .iter()
            .enumerate()
            .map(|(index, (name, help, kind, _))| {
                let mut family = MetricFamily::default();
                family.set_name((*name).to_owned());
                family.set_help((*help).to_owned());
                family.set_field_type(*kind);
                let metrics = family.mut_metric();
                for status in &self.targets {
                    let t = status.id.as_str();
                    match index {
                        0 => {
                            let current = status.state();
                            for state in State::ALL {
                                let on = f64::from(u8::from(state == current));
                                metrics.push(gauge(t, Some(("state", state.as_str())), on));
                            }
                        }
                        1 => metrics.push(counter(t, None, status.events.get())),
                        2 => metrics.push(counter(t, None, status.bytes.get())),
                        3 => metrics.push(counter(t, None, status.acked.get())),
                        4 => metrics.push(counter(t, None, status.filtered.get())),
                        5 => metrics.push(counter(t, None, status.duplicates.get())),
                        6 => {
                            for (reason, n) in status.reconnects_by_reason() {
                                metrics.push(counter(t, Some(("reason", reason.as_str())), n));
                            }
                        }
                        7 => metrics.push(counter(t, None, status.delivery_errors.get())),
                        8 => metrics.push(counter(t, None, status.key_errors.get())),
                        9 => metrics.push(counter(t, None, status.checkpoints.get())),
                        10 => metrics.push(gauge(t, None, status.paused.get() as f64)),
                        11 => metrics.push(gauge(t, None, status.queue_depth.get() as f64)),
                        12 => {
                            if let Some(s) = status.seconds_since_last_byte() {
                                metrics.push(gauge(t, None, s));
                            }
                        }
                        13 => {
                            if let Some(s) = status.seconds_since_last_event() {
                                metrics.push(gauge(t, None, s));
                            }
                        }
                        14 => {
                            let (cumulative, count, sum) = status.latency.snapshot();
                            let mut h = proto::Histogram::default();
                            h.set_sample_count(count);
                            h.set_sample_sum(sum);
                            h.set_bucket(
                                LATENCY_BUCKETS
                                    .iter()
                                    .zip(cumulative)
                                    .map(|(bound, n)| {
                                        let mut b = proto::Bucket::default();
                                        b.set_upper_bound(*bound);
                                        b.set_cumulative_count(n);
                                        b
                                    })
                                    .collect(),
                            );
                            let mut metric = with_labels(t, None);
                            metric.set_histogram(h);
                            metrics.push(metric);
                        }
                        _ => metrics.push(gauge(
                            t,
                            None,
                            status.generation.load(std::sync::atomic::Ordering::Relaxed) as f64,
                        )),
                    }
                }
                family
            })
            // A family without samples (e.g. no reconnect yet) is left out, as registries do.
            .filter(|family| !family.get_metric().is_empty())
            .collect()
    }
}
