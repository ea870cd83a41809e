//! The aggregator's metric names, labels and types (the telemetry contract; tests scrape these
//! names). Per-target gauges that are cheap to compute (entities, synced, state age, buffered)
//! are set at scrape time from the live targets.

use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use sluice_merge::{Counts, MalformedError, Outcome};

/// What happened to one delta (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// Merged into the state.
    Applied,
    /// Held until a base state arrives.
    Buffered,
    /// At or below the base state's version.
    Stale,
    /// Already applied (at-least-once delivery).
    Duplicate,
    /// An event type configured as carrying no delta.
    Ignored,
    /// Could not be read or applied; counted, logged with its offset, dead-lettered if set up.
    Malformed,
    /// Asked for a fresh base state (a gap, a reset event, a connection that did not resume).
    Resnapshot,
}

impl DeltaOutcome {
    /// Every outcome, in label order.
    pub const ALL: [DeltaOutcome; 7] = [
        DeltaOutcome::Applied,
        DeltaOutcome::Buffered,
        DeltaOutcome::Stale,
        DeltaOutcome::Duplicate,
        DeltaOutcome::Ignored,
        DeltaOutcome::Malformed,
        DeltaOutcome::Resnapshot,
    ];

    /// What the merger's outcome of one delta counts as.
    pub fn of(outcome: &Outcome) -> DeltaOutcome {
        match outcome {
            Outcome::Applied(_) => DeltaOutcome::Applied,
            Outcome::Buffered => DeltaOutcome::Buffered,
            Outcome::Stale => DeltaOutcome::Stale,
            Outcome::Duplicate => DeltaOutcome::Duplicate,
            Outcome::Ignored => DeltaOutcome::Ignored,
            Outcome::Malformed(_) => DeltaOutcome::Malformed,
            Outcome::Resnapshot(_) => DeltaOutcome::Resnapshot,
        }
    }

    /// The position of the outcome in [`DeltaOutcome::ALL`] (and in [`DeltaCounters`]).
    fn index(self) -> usize {
        self as usize
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeltaOutcome::Applied => "applied",
            DeltaOutcome::Buffered => "buffered",
            DeltaOutcome::Stale => "stale",
            DeltaOutcome::Duplicate => "duplicate",
            DeltaOutcome::Ignored => "ignored",
            DeltaOutcome::Malformed => "malformed",
            DeltaOutcome::Resnapshot => "resnapshot",
        }
    }
}

/// One target's `sluice_aggregator_deltas_total` series, one per [`DeltaOutcome`], resolved once
/// (no label lookup per delta) and indexed by the outcome, never by a literal position.
pub struct DeltaCounters([IntCounter; DeltaOutcome::ALL.len()]);

impl DeltaCounters {
    /// The counter of `outcome`.
    pub fn get(&self, outcome: DeltaOutcome) -> &IntCounter {
        &self.0[outcome.index()]
    }

    /// Counts one delta.
    pub fn inc(&self, outcome: DeltaOutcome) {
        self.get(outcome).inc();
    }

    /// Counts the deltas a base state's replay of the buffer took (each was counted as
    /// `buffered` when it arrived).
    pub fn replayed(&self, counts: &Counts) {
        self.get(DeltaOutcome::Applied).inc_by(counts.applied);
        self.get(DeltaOutcome::Stale).inc_by(counts.stale);
        self.get(DeltaOutcome::Duplicate).inc_by(counts.duplicate);
        self.get(DeltaOutcome::Ignored).inc_by(counts.ignored);
        self.get(DeltaOutcome::Malformed).inc_by(counts.malformed);
    }
}

/// Every aggregator metric.
pub struct Metrics {
    registry: Registry,
    /// `sluice_aggregator_deltas_total{target,outcome}`.
    pub deltas: IntCounterVec,
    /// `sluice_aggregator_resnapshots_total{target,reason}`.
    pub resnapshots: IntCounterVec,
    /// `sluice_aggregator_base_fetches_total{target,result}`.
    pub base_fetches: IntCounterVec,
    /// `sluice_aggregator_state_age_seconds{target}`: since the last change (or base state).
    pub state_age: GaugeVec,
    /// `sluice_aggregator_entities{target}`.
    pub entities: IntGaugeVec,
    /// `sluice_aggregator_synced{target}`: 1 when the state is complete and current.
    pub synced: IntGaugeVec,
    /// `sluice_aggregator_buffered{target}`: deltas held waiting for a base state.
    pub buffered: IntGaugeVec,
    /// `sluice_aggregator_version{target}`: the state's version (targets with versions).
    pub version: IntGaugeVec,
    /// `sluice_aggregator_consumer_lag{topic,partition}`: high watermark minus next offset.
    pub consumer_lag: IntGaugeVec,
    /// `sluice_aggregator_snapshots_written_total{sink}`: `kafka` or `file`.
    pub snapshots_written: IntCounterVec,
    /// `sluice_aggregator_snapshot_errors_total{sink}`.
    pub snapshot_errors: IntCounterVec,
    /// `sluice_aggregator_records_skipped_total{reason}`: `unknown_target`, `already_applied`,
    /// `other_partition`.
    pub skipped: IntCounterVec,
    /// `sluice_aggregator_dead_letters_total`.
    pub dead_letters: IntCounter,
    /// `sluice_aggregator_malformed_deltas_total{target,kind}`: by `MalformedError::kind`
    /// (`too_large` and `too_deep` are the hostile `json_patch` deltas the limits refuse).
    pub malformed: IntCounterVec,
    /// `sluice_aggregator_stream_lagged_total`: `/stream` clients disconnected because they fell
    /// more than [`crate::store::STREAM_BUFFER`] changes behind.
    pub stream_lagged: IntCounter,
    /// `sluice_aggregator_http_connections`: HTTP connections open now.
    pub http_connections: IntGauge,
    /// `sluice_aggregator_http_connections_rejected_total`: connections refused at the cap.
    pub http_rejected: IntCounter,
}

impl Metrics {
    /// Registers every family (and the process collector where the platform has one).
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let deltas = counter(
            "sluice_aggregator_deltas_total",
            "Deltas consumed, by what happened to them.",
            &["target", "outcome"],
        )?;
        let resnapshots = counter(
            "sluice_aggregator_resnapshots_total",
            "Base-state fetches requested, by reason.",
            &["target", "reason"],
        )?;
        let base_fetches = counter(
            "sluice_aggregator_base_fetches_total",
            "REST base-state fetches, by result.",
            &["target", "result"],
        )?;
        let state_age = GaugeVec::new(
            Opts::new(
                "sluice_aggregator_state_age_seconds",
                "Seconds since the target's state last changed.",
            ),
            &["target"],
        )?;
        registry.register(Box::new(state_age.clone()))?;
        let entities = gauge(
            "sluice_aggregator_entities",
            "Entities in the target's state.",
            &["target"],
        )?;
        let synced = gauge(
            "sluice_aggregator_synced",
            "1 when the target's state is complete and current, 0 while (re)syncing.",
            &["target"],
        )?;
        let buffered = gauge(
            "sluice_aggregator_buffered",
            "Deltas held while waiting for a base state.",
            &["target"],
        )?;
        let version = gauge(
            "sluice_aggregator_version",
            "The version of the target's state (targets with versions).",
            &["target"],
        )?;
        let consumer_lag = gauge(
            "sluice_aggregator_consumer_lag",
            "Records in the partition not consumed yet (high watermark minus next offset).",
            &["topic", "partition"],
        )?;
        let snapshots_written = counter(
            "sluice_aggregator_snapshots_written_total",
            "Target snapshots written, by sink.",
            &["sink"],
        )?;
        let snapshot_errors = counter(
            "sluice_aggregator_snapshot_errors_total",
            "Target snapshots that could not be written, by sink.",
            &["sink"],
        )?;
        let skipped = counter(
            "sluice_aggregator_records_skipped_total",
            "Records not offered to any target, by reason.",
            &["reason"],
        )?;
        let malformed = counter(
            "sluice_aggregator_malformed_deltas_total",
            "Deltas consumed that could not be applied, by why (the kind of error).",
            &["target", "kind"],
        )?;
        let dead_letters = IntCounter::new(
            "sluice_aggregator_dead_letters_total",
            "Malformed deltas written to the dead-letter topic.",
        )?;
        registry.register(Box::new(dead_letters.clone()))?;
        let stream_lagged = IntCounter::new(
            "sluice_aggregator_stream_lagged_total",
            "Stream clients disconnected because they fell too many changes behind.",
        )?;
        registry.register(Box::new(stream_lagged.clone()))?;
        let http_connections = IntGauge::new(
            "sluice_aggregator_http_connections",
            "HTTP connections open now.",
        )?;
        registry.register(Box::new(http_connections.clone()))?;
        let http_rejected = IntCounter::new(
            "sluice_aggregator_http_connections_rejected_total",
            "HTTP connections refused because http.max_connections were open.",
        )?;
        registry.register(Box::new(http_rejected.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            deltas,
            resnapshots,
            base_fetches,
            state_age,
            entities,
            synced,
            buffered,
            version,
            consumer_lag,
            snapshots_written,
            snapshot_errors,
            skipped,
            dead_letters,
            malformed,
            stream_lagged,
            http_connections,
            http_rejected,
        })
    }

    /// Per-outcome counters of one target, resolved once (no label lookup per delta).
    pub fn delta_counters(&self, target: &str) -> DeltaCounters {
        DeltaCounters(
            DeltaOutcome::ALL.map(|o| self.deltas.with_label_values(&[target, o.as_str()])),
        )
    }

    /// Removes every series labelled with `target` (its partition moved to another aggregator).
    pub fn forget_target(&self, target: &str) {
        for outcome in DeltaOutcome::ALL {
            let _ = self.deltas.remove_label_values(&[target, outcome.as_str()]);
        }
        for g in [&self.entities, &self.synced, &self.buffered, &self.version] {
            let _ = g.remove_label_values(&[target]);
        }
        let _ = self.state_age.remove_label_values(&[target]);
        for kind in MalformedError::KINDS {
            let _ = self.malformed.remove_label_values(&[target, kind]);
        }
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sluice_merge::ResnapshotReason;

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|line| line.strip_prefix(series))
            .map(|rest| rest.trim().to_owned())
    }

    #[test]
    fn every_outcome_has_its_own_counter_in_label_order() {
        for (position, outcome) in DeltaOutcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), position, "{outcome:?}");
        }
    }

    #[test]
    fn a_resnapshot_delta_is_counted_as_resnapshot_not_as_buffered() {
        let metrics = Metrics::new().unwrap();
        let counters = metrics.delta_counters("t1");
        for reason in ResnapshotReason::ALL {
            counters.inc(DeltaOutcome::of(&Outcome::Resnapshot(reason)));
        }
        counters.inc(DeltaOutcome::of(&Outcome::Buffered));
        let text = metrics.render();
        let series = |outcome: &str| {
            sample(
                &text,
                &format!("sluice_aggregator_deltas_total{{outcome=\"{outcome}\",target=\"t1\"}}"),
            )
        };
        assert_eq!(
            series("resnapshot").as_deref(),
            Some(ResnapshotReason::ALL.len().to_string().as_str()),
            "{text}"
        );
        assert_eq!(series("buffered").as_deref(), Some("1"), "{text}");
        assert_eq!(series("applied").as_deref(), Some("0"), "{text}");
    }

    #[test]
    fn a_forgotten_target_leaves_no_delta_series() {
        let metrics = Metrics::new().unwrap();
        metrics.delta_counters("t1").inc(DeltaOutcome::Resnapshot);
        metrics.forget_target("t1");
        assert!(!metrics.render().contains("target=\"t1\""));
    }
}
