//! Prometheus metrics of the worker.
//!
//! Per-target values live in each target's [`TargetStatus`] as plain atomics and are written in
//! the text format at scrape time, straight from the atomics. A registry child per series would
//! cost about a kilobyte each (every child keeps its own copy of the descriptor), thirty series
//! per target, which at 10,000 targets is more than the connections themselves.
//!
//! `metrics.per_target` decides which per-target families a scrape shows ([`per_target`]); the
//! process-wide aggregates ([`process`]) are written in every mode. [`catalog`] lists what a
//! mode exposes, from the same tables the scrape is written from (`sluice metrics` prints it,
//! `scripts/check-deploy` checks the shipped alerts and dashboard against it).
//!
//! Label values are bounded: target ids (validated, from config), the fixed reconnect reasons and
//! states. No URL, header, proxy or error text ever becomes a label.

mod fleet;
mod per_target;
mod process;
mod text;

use std::sync::Arc;

use prometheus::proto::MetricType;
use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};
use sluice_config::{FamilyInfo, PerTarget};

use crate::registry::Registry as Targets;
use crate::status::LATENCY_BUCKETS;

pub(crate) use fleet::FleetMetrics;
pub use text::Kind;

/// Every metric family of the worker.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    producer_in_flight: IntGauge,
    target_count: IntGauge,
    /// Checkpoints written again over an older owner's late record.
    pub(crate) checkpoint_rewrites: IntCounter,
    /// Targets stopped here because a newer owner's checkpoint landed.
    pub(crate) targets_superseded: IntCounter,
    /// The fleet's rebalances, handovers and ownership.
    pub(crate) fleet: FleetMetrics,
    targets: Arc<Targets>,
    per_target: PerTarget,
    bounds: Arc<[String]>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("per_target", &self.per_target)
            .finish_non_exhaustive()
    }
}

/// Why the registry could not be built (a programming error: duplicate or invalid names).
#[derive(Debug, thiserror::Error)]
#[error("building metrics registry failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl MetricsError {
    /// Stable error kind.
    pub fn kind(&self) -> &'static str {
        "metrics_registry"
    }
}

impl Metrics {
    /// The registry: per-target families for the targets in `targets` at each scrape (those
    /// `per_target` shows), process totals, the producer gauge.
    pub fn new(targets: Arc<Targets>, per_target: PerTarget) -> Result<Metrics, MetricsError> {
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
        registry.register(Box::new(count.clone()))?;
        let checkpoint_rewrites = IntCounter::new(
            "sluice_checkpoint_rewrites_total",
            "Checkpoints written again because an older owner's record (a zombie's) landed after the running owner's.",
        )?;
        registry.register(Box::new(checkpoint_rewrites.clone()))?;
        let targets_superseded = IntCounter::new(
            "sluice_targets_superseded_total",
            "Targets stopped here because a checkpoint of a newer owner (higher epoch) landed.",
        )?;
        registry.register(Box::new(targets_superseded.clone()))?;
        let fleet = FleetMetrics::register(&registry)?;
        Ok(Metrics {
            fleet,
            registry,
            producer_in_flight,
            target_count: count,
            checkpoint_rewrites,
            targets_superseded,
            targets,
            per_target,
            bounds: LATENCY_BUCKETS.iter().map(f64::to_string).collect(),
        })
    }

    /// The mode this renders in.
    pub fn per_target(&self) -> PerTarget {
        self.per_target
    }

    /// Renders the text format.
    pub fn render(&self, producer_in_flight: i64) -> String {
        self.producer_in_flight.set(producer_in_flight);
        let (targets, mut sums) = self.targets.snapshot_with_retired();
        self.target_count
            .set(i64::try_from(targets.len()).unwrap_or(i64::MAX));
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "encoding metrics failed");
        }
        let mut out = String::from_utf8_lossy(&buffer).into_owned();
        // Dozens of series per target in `all` mode: reserve once instead of growing the
        // exposition through many reallocations (its size at 10,000 targets: docs/BENCHMARKS.md,
        // "Metrics at 10,000 targets").
        out.reserve(targets.len() * per_target_bytes(self.per_target) + 4096);
        per_target::write_targets(&mut out, &targets, self.per_target, &mut sums, &self.bounds);
        process::write_aggregates(&mut out, &sums, &self.bounds);
        out
    }

    /// The families of the registry (process collector, producer and target gauges).
    fn registered(&self) -> Vec<FamilyInfo> {
        self.registry
            .gather()
            .iter()
            .map(|family| FamilyInfo {
                name: family.name().to_owned(),
                kind: match family.get_field_type() {
                    MetricType::COUNTER => "counter",
                    MetricType::HISTOGRAM => "histogram",
                    MetricType::SUMMARY => "summary",
                    MetricType::UNTYPED => "untyped",
                    MetricType::GAUGE => "gauge",
                },
                labels: family
                    .get_metric()
                    .first()
                    .map(|m| m.get_label().iter().map(|l| l.name().to_owned()).collect())
                    .unwrap_or_default(),
                per_target: false,
            })
            .collect()
    }
}

/// About how many bytes one target's series take in `mode` (measured; only a reservation).
fn per_target_bytes(mode: PerTarget) -> usize {
    match mode {
        PerTarget::All => 2048,
        PerTarget::Essential => 512,
        PerTarget::None => 0,
    }
}

/// Every family a worker exposes in `mode`, sorted by name: the per-target families the mode
/// shows, the process-wide aggregates, and the registry's families (read from a registry built
/// as the worker builds it).
pub fn catalog(mode: PerTarget) -> Result<Vec<FamilyInfo>, MetricsError> {
    let mut families = Metrics::new(Arc::new(Targets::default()), mode)?.registered();
    for family in per_target::FAMILIES.iter().filter(|f| f.shown(mode)) {
        families.push(FamilyInfo {
            name: family.name.to_owned(),
            kind: family.kind.as_str(),
            labels: std::iter::once("target")
                .chain(family.label)
                .map(str::to_owned)
                .collect(),
            per_target: true,
        });
    }
    for family in &process::AGGREGATES {
        families.push(FamilyInfo {
            name: family.name.to_owned(),
            kind: family.kind.as_str(),
            labels: family.label.into_iter().map(str::to_owned).collect(),
            per_target: false,
        });
    }
    families.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(families)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use super::*;
    use crate::status::{State, TargetStatus};
    use sluice_client::DisconnectReason;
    use tokio::time::Instant;

    /// A row with every family's series present and distinct values.
    fn busy_row(i: u64, origin: Instant) -> Arc<TargetStatus> {
        let row = TargetStatus::new(
            format!("t-{i}").parse().unwrap(),
            "http://127.0.0.1/x".to_owned(),
            "events".to_owned(),
            origin,
        );
        row.events.inc_by(10 + i);
        row.bytes.inc_by(1000 * (i + 1));
        row.acked.inc_by(7 + i);
        row.filtered.inc_by(i);
        row.duplicates.inc_by(2 * i);
        row.delivery_errors.inc_by(i + 1);
        row.key_errors.inc_by(3);
        row.checkpoints.inc_by(4 + i);
        row.checkpoint_lag.set(5);
        row.paused.set(i64::from(i == 0));
        row.reconnect(DisconnectReason::Eof);
        row.reconnect(DisconnectReason::SilentDrop);
        row.touch_byte(origin);
        row.touch_event(origin);
        row.latency.observe(0.003);
        row.set_state(if i == 0 {
            State::Backoff
        } else {
            State::Streaming
        });
        Arc::new(row)
    }

    fn metrics_of(mode: PerTarget, rows: usize) -> (Metrics, Arc<Targets>) {
        let origin = Instant::now();
        let targets = Arc::new(Targets::default());
        targets.add((0..rows as u64).map(|i| busy_row(i, origin)));
        (Metrics::new(targets.clone(), mode).unwrap(), targets)
    }

    /// Family names of the `# TYPE` lines.
    fn families(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    /// `name{labels} value` lines of `name` exactly (not its `_bucket` etc.).
    fn values<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let base = series.split('{').next()?;
                (base == name).then(|| (series, value.parse().unwrap()))
            })
            .collect()
    }

    #[test]
    fn each_mode_exposes_exactly_its_catalog() {
        for mode in PerTarget::ALL {
            let (metrics, _) = metrics_of(mode, 3);
            let text = metrics.render(0);
            let listed: BTreeSet<String> =
                catalog(mode).unwrap().into_iter().map(|f| f.name).collect();
            assert_eq!(families(&text), listed, "{mode}:\n{text}");
            let targeted = text.lines().any(|l| l.contains("target=\""));
            assert_eq!(targeted, mode != PerTarget::None, "{mode}:\n{text}");
        }
    }

    #[test]
    fn essential_is_state_events_delivered_reconnects_and_last_byte() {
        let per_target: BTreeSet<String> = catalog(PerTarget::Essential)
            .unwrap()
            .into_iter()
            .filter(|f| f.per_target)
            .map(|f| f.name)
            .collect();
        let expected: BTreeSet<String> = [
            "sluice_target_state",
            "sluice_events_received_total",
            "sluice_events_delivered_total",
            "sluice_reconnects_total",
            "sluice_seconds_since_last_byte",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(per_target, expected);
        let all = catalog(PerTarget::All).unwrap();
        assert_eq!(all.iter().filter(|f| f.per_target).count(), 17);
        assert!(
            catalog(PerTarget::None)
                .unwrap()
                .iter()
                .all(|f| !f.per_target && !f.labels.iter().any(|l| l == "target"))
        );
    }

    #[test]
    fn the_totals_are_the_sums_of_the_per_target_series() {
        let (metrics, _) = metrics_of(PerTarget::All, 4);
        let text = metrics.render(0);
        let sum = |name: &str| values(&text, name).iter().map(|(_, v)| v).sum::<f64>();
        for (per_target, total) in [
            (
                "sluice_events_received_total",
                "sluice_all_events_received_total",
            ),
            (
                "sluice_bytes_received_total",
                "sluice_all_bytes_received_total",
            ),
            (
                "sluice_events_delivered_total",
                "sluice_all_events_delivered_total",
            ),
            (
                "sluice_events_filtered_total",
                "sluice_all_events_filtered_total",
            ),
            (
                "sluice_events_duplicate_total",
                "sluice_all_events_duplicate_total",
            ),
            ("sluice_reconnects_total", "sluice_all_reconnects_total"),
            (
                "sluice_delivery_errors_total",
                "sluice_all_delivery_errors_total",
            ),
            ("sluice_key_errors_total", "sluice_all_key_errors_total"),
            (
                "sluice_checkpoints_written_total",
                "sluice_all_checkpoints_written_total",
            ),
            ("sluice_upstream_paused", "sluice_targets_paused"),
            (
                "sluice_checkpoint_lag_events",
                "sluice_all_checkpoint_lag_events",
            ),
            (
                "sluice_connection_generation",
                "sluice_all_connections_total",
            ),
            ("sluice_target_state", "sluice_targets_in_state"),
            (
                "sluice_delivery_latency_seconds_count",
                "sluice_all_delivery_latency_seconds_count",
            ),
        ] {
            assert_eq!(
                sum(per_target),
                sum(total),
                "{per_target} vs {total}:\n{text}"
            );
        }
        assert_eq!(sum("sluice_all_events_received_total"), 46.0);
        let streaming = values(&text, "sluice_targets_in_state");
        assert!(streaming.contains(&("sluice_targets_in_state{state=\"streaming\"}", 3.0)));
        assert!(streaming.contains(&("sluice_targets_in_state{state=\"backoff\"}", 1.0)));
    }

    #[test]
    fn a_stopped_target_leaves_its_counts_in_the_totals_and_not_its_gauges() {
        let (metrics, targets) = metrics_of(PerTarget::Essential, 2);
        let before = metrics.render(0);
        targets.remove(&"t-0".parse().unwrap());
        let after = metrics.render(0);
        for name in [
            "sluice_all_events_received_total",
            "sluice_all_reconnects_total",
            "sluice_all_delivery_errors_total",
            "sluice_all_delivery_latency_seconds_count",
        ] {
            assert_eq!(values(&before, name), values(&after, name), "{name}");
        }
        assert_eq!(
            values(&after, "sluice_targets_paused"),
            [("sluice_targets_paused", 0.0)]
        );
        assert!(!after.contains("target=\"t-0\""), "{after}");
    }
}
