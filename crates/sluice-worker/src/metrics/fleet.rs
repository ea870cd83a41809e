//! The fleet's metrics: rebalances, handovers and how long a handover takes on the new owner
//! (assignment received → the target's first event acknowledged by Kafka), the partitions and
//! targets this worker owns, and the targets in partitions no member owns (from the group's
//! description). Registered in every mode (zeros with `fleet: none`), so `sluice metrics`
//! lists them and the alert rules can rely on them.
//!
//! What it must NOT do: take a target id as a label (a handover's duration is one histogram for
//! the process), or hold up the fleet loop (a handover is timed by a task of its own).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use sluice_config::TargetId;
use tokio::time::Instant;

use crate::registry::Registry as Targets;

/// Upper bounds of the handover histogram, seconds.
pub const HANDOVER_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0];
/// How long a handover is waited for before it is given up (not observed).
const HANDOVER_LIMIT: Duration = Duration::from_secs(600);
/// How often a handover's targets are looked at.
const HANDOVER_POLL: Duration = Duration::from_millis(50);

/// The fleet's families.
#[derive(Clone)]
pub struct FleetMetrics {
    rebalances: IntCounter,
    handovers: IntCounter,
    handover_seconds: Histogram,
    assignment_read_seconds: Histogram,
    owned_partitions: IntGauge,
    owned_targets: IntGauge,
    /// Targets of the worker's files (what the fleet shares).
    pub(crate) targets: IntGauge,
    /// Targets in partitions no member owns, by the group's description.
    pub(crate) unowned_targets: IntGauge,
}

impl FleetMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &Registry) -> Result<FleetMetrics, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let metric = IntCounter::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let metric = IntGauge::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let handover_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_fleet_handover_seconds",
                "Handover on the new owner: from the assignment of a target's partition to its first event acknowledged by Kafka.",
            )
            .buckets(HANDOVER_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(handover_seconds.clone()))?;
        let assignment_read_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_fleet_assignment_read_seconds",
                "Reading the assigned checkpoint partitions to their ends at an assignment (the resume points of the targets taken over).",
            )
            .buckets(HANDOVER_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(assignment_read_seconds.clone()))?;
        Ok(FleetMetrics {
            rebalances: counter(
                "sluice_fleet_rebalances_total",
                "Rebalances of the fleet's group that assigned or revoked partitions of this worker.",
            )?,
            handovers: counter(
                "sluice_fleet_handovers_total",
                "Targets this worker took over from an assignment.",
            )?,
            handover_seconds,
            assignment_read_seconds,
            owned_partitions: gauge(
                "sluice_fleet_owned_partitions",
                "Checkpoint partitions the fleet's group assigns this worker.",
            )?,
            owned_targets: gauge(
                "sluice_fleet_owned_targets",
                "Targets in the partitions this worker owns.",
            )?,
            targets: gauge(
                "sluice_fleet_targets",
                "Targets the fleet shares (the enabled targets of this worker's files; 0 with fleet: none).",
            )?,
            unowned_targets: gauge(
                "sluice_fleet_unowned_targets",
                "Targets in partitions no member of the fleet's group owns, by the group's description as this worker reads it.",
            )?,
        })
    }

    /// One rebalance that assigned or revoked partitions here.
    pub(crate) fn rebalanced(&self) {
        self.rebalances.inc();
    }

    /// An assignment's checkpoint read took `took`.
    pub(crate) fn assignment_read(&self, took: Duration) {
        self.assignment_read_seconds.observe(took.as_secs_f64());
    }

    /// What this worker owns now.
    pub(crate) fn owned(&self, partitions: usize, targets: usize) {
        self.owned_partitions
            .set(i64::try_from(partitions).unwrap_or(i64::MAX));
        self.owned_targets
            .set(i64::try_from(targets).unwrap_or(i64::MAX));
    }

    /// `ids` were started from an assignment received at `since`: counts them and times each
    /// until its first event is acknowledged (a task that looks at their rows).
    pub(crate) fn handing_over(&self, ids: Vec<TargetId>, since: Instant, targets: Arc<Targets>) {
        if ids.is_empty() {
            return;
        }
        self.handovers
            .inc_by(u64::try_from(ids.len()).unwrap_or(u64::MAX));
        let histogram = self.handover_seconds.clone();
        tokio::spawn(async move {
            let mut waiting: BTreeSet<TargetId> = ids.into_iter().collect();
            let deadline = since + HANDOVER_LIMIT;
            while !waiting.is_empty() && Instant::now() < deadline {
                let rows = targets.snapshot();
                for row in rows.iter() {
                    if row.acked.get() > 0 && waiting.remove(&row.id) {
                        histogram.observe(since.elapsed().as_secs_f64());
                    }
                }
                tokio::time::sleep(HANDOVER_POLL).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::status::TargetStatus;

    #[tokio::test(start_paused = true)]
    async fn a_handover_is_timed_to_the_first_acknowledged_event() {
        let registry = Registry::new();
        let metrics = FleetMetrics::register(&registry).unwrap();
        let targets = Arc::new(Targets::default());
        let row = Arc::new(TargetStatus::new(
            "t-1".parse().unwrap(),
            "http://127.0.0.1/x".to_owned(),
            "events".to_owned(),
            Instant::now(),
        ));
        targets.add([row.clone()]);
        metrics.handing_over(vec![row.id.clone()], Instant::now(), targets);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(metrics.handover_seconds.get_sample_count(), 0);
        row.acked.inc();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(metrics.handovers.get(), 1);
        assert_eq!(metrics.handover_seconds.get_sample_count(), 1);
        let seconds = metrics.handover_seconds.get_sample_sum();
        assert!((0.7..=0.8).contains(&seconds), "{seconds}");
    }
}
