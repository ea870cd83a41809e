//! The aggregator's metrics (the telemetry contract; tests scrape these names). Per-target
//! gauges that are cheap to compute (entities, synced, state age, buffered) are set at scrape
//! time from the live targets ([`Scrape`]), with their process-wide sums.
//!
//! `metrics.per_target` decides which per-target families exist at all ([`families`] says which
//! mode shows which); the process-wide totals are registered in every mode.
//!
//! What it must NOT do: put anything but target ids and fixed words in a label.

mod counters;
mod families;

use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use sluice_config::PerTarget;
use sluice_merge::{MalformedError, Outcome, ResnapshotReason};

pub use counters::{CounterPair, DeltaCounters, TargetCounter};
use families::Def;
pub use families::catalog;

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

/// Every aggregator metric.
pub struct Metrics {
    registry: Registry,
    per_target: PerTarget,
    /// `sluice_aggregator_deltas_total{target,outcome}` and its total.
    deltas: TargetCounter,
    /// `sluice_aggregator_resnapshots_total{target,reason}` and its total.
    pub resnapshots: TargetCounter,
    /// `sluice_aggregator_base_fetches_total{target,result}` and its total.
    pub base_fetches: TargetCounter,
    /// `sluice_aggregator_malformed_deltas_total{target,kind}` (by `MalformedError::kind`;
    /// `too_large` and `too_deep` are the hostile `json_patch` deltas the limits refuse) and its
    /// total.
    pub malformed: TargetCounter,
    /// `sluice_aggregator_state_age_seconds{target}`: since the last change (or base state).
    state_age: Option<GaugeVec>,
    /// `sluice_aggregator_entities{target}`.
    entities: Option<IntGaugeVec>,
    /// `sluice_aggregator_synced{target}`: 1 when the state is complete and current.
    synced: Option<IntGaugeVec>,
    /// `sluice_aggregator_buffered{target}`: deltas held waiting for a base state.
    buffered: Option<IntGaugeVec>,
    /// `sluice_aggregator_version{target}`: the state's version (targets with versions).
    version: Option<IntGaugeVec>,
    /// `sluice_aggregator_targets`, `…_targets_synced`, `…_all_entities`, `…_all_buffered`.
    totals: [IntGauge; 4],
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
    /// `sluice_aggregator_stream_lagged_total`: `/stream` clients disconnected because they fell
    /// more than [`crate::store::STREAM_BUFFER`] changes behind.
    pub stream_lagged: IntCounter,
    /// `sluice_aggregator_http_connections`: HTTP connections open now.
    pub http_connections: IntGauge,
    /// `sluice_aggregator_http_connections_rejected_total`: connections refused at the cap.
    pub http_rejected: IntCounter,
    /// `sluice_aggregator_deliveries_total{target,result}` (by [`DeliveryResult`]) and its total.
    pub deliveries: TargetCounter,
    /// `sluice_aggregator_delivery_last_success_timestamp_seconds{target}`.
    delivery_last_success: Option<GaugeVec>,
    /// `sluice_aggregator_delivery_bytes_total`.
    pub delivery_bytes: IntCounter,
}

/// What one scheduled delivery of one target came to (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// Written, with its manifest.
    Ok,
    /// Not written after its retries.
    Failed,
    /// Not attempted: the state was not synced (or not loaded yet).
    SkippedNotSynced,
}

impl DeliveryResult {
    /// Every result, in label order.
    pub const ALL: [DeliveryResult; 3] = [
        DeliveryResult::Ok,
        DeliveryResult::Failed,
        DeliveryResult::SkippedNotSynced,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Ok => "ok",
            DeliveryResult::Failed => "failed",
            DeliveryResult::SkippedNotSynced => "skipped_not_synced",
        }
    }
}

/// Registers `def` as a `V` when `mode` shows it.
fn register<V: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    mode: PerTarget,
    def: &Def,
    make: impl FnOnce(Opts, &[&str]) -> Result<V, prometheus::Error>,
) -> Result<Option<V>, prometheus::Error> {
    if !def.shown(mode) {
        return Ok(None);
    }
    let collector = make(Opts::new(def.name, def.help), def.labels)?;
    registry.register(Box::new(collector.clone()))?;
    Ok(Some(collector))
}

/// Registers a process-wide `def` (shown in every mode).
fn always<V: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    def: &Def,
    make: impl FnOnce(Opts, &[&str]) -> Result<V, prometheus::Error>,
) -> Result<V, prometheus::Error> {
    let collector = make(Opts::new(def.name, def.help), def.labels)?;
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

fn int_gauge(opts: Opts, _: &[&str]) -> Result<IntGauge, prometheus::Error> {
    IntGauge::with_opts(opts)
}

fn int_counter(opts: Opts, _: &[&str]) -> Result<IntCounter, prometheus::Error> {
    IntCounter::with_opts(opts)
}

impl Metrics {
    /// Registers every family `per_target` shows, every total (and the process collector where
    /// the platform has one).
    pub fn new(per_target: PerTarget) -> Result<Metrics, prometheus::Error> {
        use families as f;
        let registry = Registry::new();
        let mode = per_target;
        let outcomes = DeltaOutcome::ALL.map(DeltaOutcome::as_str);
        let reasons = ResnapshotReason::ALL.map(ResnapshotReason::as_str);
        let deltas = TargetCounter::new(&registry, mode, &f::DELTAS, &f::ALL_DELTAS, &outcomes)?;
        let resnapshots = TargetCounter::new(
            &registry,
            mode,
            &f::RESNAPSHOTS,
            &f::ALL_RESNAPSHOTS,
            &reasons,
        )?;
        let base_fetches = TargetCounter::new(
            &registry,
            mode,
            &f::BASE_FETCHES,
            &f::ALL_BASE_FETCHES,
            &["ok", "error"],
        )?;
        let malformed = TargetCounter::new(
            &registry,
            mode,
            &f::MALFORMED,
            &f::ALL_MALFORMED,
            &MalformedError::KINDS,
        )?;
        let state_age = register(&registry, mode, &f::STATE_AGE, GaugeVec::new)?;
        let entities = register(&registry, mode, &f::ENTITIES, IntGaugeVec::new)?;
        let synced = register(&registry, mode, &f::SYNCED, IntGaugeVec::new)?;
        let buffered = register(&registry, mode, &f::BUFFERED, IntGaugeVec::new)?;
        let version = register(&registry, mode, &f::VERSION, IntGaugeVec::new)?;
        let totals = [
            always(&registry, &f::TARGETS, int_gauge)?,
            always(&registry, &f::TARGETS_SYNCED, int_gauge)?,
            always(&registry, &f::ALL_ENTITIES, int_gauge)?,
            always(&registry, &f::ALL_BUFFERED, int_gauge)?,
        ];
        let consumer_lag = always(&registry, &f::CONSUMER_LAG, IntGaugeVec::new)?;
        let snapshots_written = always(&registry, &f::SNAPSHOTS_WRITTEN, IntCounterVec::new)?;
        let snapshot_errors = always(&registry, &f::SNAPSHOT_ERRORS, IntCounterVec::new)?;
        let skipped = always(&registry, &f::SKIPPED, IntCounterVec::new)?;
        let dead_letters = always(&registry, &f::DEAD_LETTERS, int_counter)?;
        let stream_lagged = always(&registry, &f::STREAM_LAGGED, int_counter)?;
        let http_connections = always(&registry, &f::HTTP_CONNECTIONS, int_gauge)?;
        let http_rejected = always(&registry, &f::HTTP_REJECTED, int_counter)?;
        let deliveries = TargetCounter::new(
            &registry,
            mode,
            &f::DELIVERIES,
            &f::ALL_DELIVERIES,
            &DeliveryResult::ALL.map(DeliveryResult::as_str),
        )?;
        let delivery_last_success =
            register(&registry, mode, &f::DELIVERY_LAST_SUCCESS, GaugeVec::new)?;
        let delivery_bytes = always(&registry, &f::DELIVERY_BYTES, int_counter)?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            per_target,
            deltas,
            resnapshots,
            base_fetches,
            malformed,
            state_age,
            entities,
            synced,
            buffered,
            version,
            totals,
            consumer_lag,
            snapshots_written,
            snapshot_errors,
            skipped,
            dead_letters,
            stream_lagged,
            http_connections,
            http_rejected,
            deliveries,
            delivery_last_success,
            delivery_bytes,
        })
    }

    /// The mode this was built for.
    pub fn per_target(&self) -> PerTarget {
        self.per_target
    }

    /// Per-outcome counters of one target, resolved once (no label lookup per delta).
    pub fn delta_counters(&self, target: &str) -> DeltaCounters {
        DeltaCounters(DeltaOutcome::ALL.map(|o| self.deltas.get(target, o.as_str())))
    }

    /// Counts one delivery of `target`; an `Ok` one also sets its last-success time.
    pub fn delivered(&self, target: &str, result: DeliveryResult, at: std::time::SystemTime) {
        self.deliveries.inc(target, result.as_str());
        if result == DeliveryResult::Ok
            && let Some(gauge) = &self.delivery_last_success
        {
            let secs = at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            gauge.with_label_values(&[target]).set(secs);
        }
    }

    /// Removes every per-target gauge and delta series of `target` (its partition moved to
    /// another aggregator); the totals keep their counts.
    pub fn forget_target(&self, target: &str) {
        for outcome in DeltaOutcome::ALL {
            self.deltas.forget(target, outcome.as_str());
        }
        for g in [&self.entities, &self.synced, &self.buffered, &self.version]
            .into_iter()
            .flatten()
        {
            let _ = g.remove_label_values(&[target]);
        }
        if let Some(g) = &self.state_age {
            let _ = g.remove_label_values(&[target]);
        }
        for kind in MalformedError::KINDS {
            self.malformed.forget(target, kind);
        }
        for result in DeliveryResult::ALL {
            self.deliveries.forget(target, result.as_str());
        }
        if let Some(g) = &self.delivery_last_success {
            let _ = g.remove_label_values(&[target]);
        }
    }

    /// A scrape: set each target's gauges ([`Scrape::target`]), then [`Scrape::render`].
    pub fn scrape(&self) -> Scrape<'_> {
        Scrape {
            metrics: self,
            sums: [0; 4],
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

/// One target's scrape-time values.
#[derive(Debug, Clone, Copy)]
pub struct TargetGauges<'a> {
    /// The target id.
    pub id: &'a str,
    /// Seconds since its state last changed.
    pub state_age: f64,
    /// Entities in its state.
    pub entities: i64,
    /// Complete and current.
    pub synced: bool,
    /// Deltas held waiting for a base state.
    pub buffered: i64,
    /// Its state's version, if it has versions.
    pub version: Option<i64>,
}

/// The gauges of one scrape being set (see [`Metrics::scrape`]).
pub struct Scrape<'m> {
    metrics: &'m Metrics,
    /// Targets, synced, entities, buffered.
    sums: [i64; 4],
}

impl Scrape<'_> {
    /// Sets `target`'s gauges (those the mode shows) and adds it to the totals.
    pub fn target(&mut self, target: &TargetGauges<'_>) {
        let m = self.metrics;
        let id = [target.id];
        if let Some(g) = &m.state_age {
            g.with_label_values(&id).set(target.state_age);
        }
        if let Some(g) = &m.entities {
            g.with_label_values(&id).set(target.entities);
        }
        if let Some(g) = &m.synced {
            g.with_label_values(&id).set(i64::from(target.synced));
        }
        if let Some(g) = &m.buffered {
            g.with_label_values(&id).set(target.buffered);
        }
        if let (Some(g), Some(version)) = (&m.version, target.version) {
            g.with_label_values(&id).set(version);
        }
        let add = [
            1,
            i64::from(target.synced),
            target.entities,
            target.buffered,
        ];
        for (sum, n) in self.sums.iter_mut().zip(add) {
            *sum = sum.saturating_add(n);
        }
    }

    /// Sets the totals and renders every family.
    pub fn render(self) -> String {
        for (gauge, sum) in self.metrics.totals.iter().zip(self.sums) {
            gauge.set(sum);
        }
        self.metrics.render()
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
        let metrics = Metrics::new(PerTarget::All).unwrap();
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
        let metrics = Metrics::new(PerTarget::All).unwrap();
        metrics.delta_counters("t1").inc(DeltaOutcome::Resnapshot);
        metrics.forget_target("t1");
        assert!(!metrics.render().contains("target=\"t1\""));
    }

    /// Every family with a series: two targets with deltas, fetches, malformed deltas, gauges.
    fn busy(mode: PerTarget) -> String {
        let metrics = Metrics::new(mode).unwrap();
        for (i, id) in ["t1", "t2"].into_iter().enumerate() {
            let counters = metrics.delta_counters(id);
            for _ in 0..=i {
                counters.inc(DeltaOutcome::Applied);
            }
            counters.inc(DeltaOutcome::Malformed);
            metrics.resnapshots.inc(id, "initial");
            metrics.base_fetches.inc(id, "ok");
            metrics.malformed.inc(id, "not_json");
        }
        metrics.consumer_lag.with_label_values(&["e", "0"]).set(1);
        metrics
            .snapshots_written
            .with_label_values(&["kafka"])
            .inc();
        metrics.snapshot_errors.with_label_values(&["kafka"]).inc();
        metrics.skipped.with_label_values(&["unknown_target"]).inc();
        metrics.delivered("t1", DeliveryResult::Ok, std::time::SystemTime::now());
        metrics.delivered(
            "t2",
            DeliveryResult::SkippedNotSynced,
            std::time::SystemTime::now(),
        );
        let mut scrape = metrics.scrape();
        for (id, synced) in [("t1", true), ("t2", false)] {
            scrape.target(&TargetGauges {
                id,
                state_age: 1.5,
                entities: 3,
                synced,
                buffered: 2,
                version: Some(9),
            });
        }
        scrape.render()
    }

    fn sum(text: &str, name: &str) -> f64 {
        text.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    #[test]
    fn each_mode_exposes_exactly_its_catalog() {
        for mode in PerTarget::ALL {
            let text = busy(mode);
            let shown: std::collections::BTreeSet<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
                .map(str::to_owned)
                .collect();
            let listed: std::collections::BTreeSet<String> =
                catalog(mode).unwrap().into_iter().map(|f| f.name).collect();
            assert_eq!(shown, listed, "{mode}:\n{text}");
            assert_eq!(
                text.contains("target=\""),
                mode != PerTarget::None,
                "{mode}:\n{text}"
            );
        }
        let essential: Vec<String> = catalog(PerTarget::Essential)
            .unwrap()
            .into_iter()
            .filter(|f| f.per_target)
            .map(|f| f.name)
            .collect();
        assert_eq!(
            essential,
            [
                "sluice_aggregator_base_fetches_total",
                "sluice_aggregator_deltas_total",
                "sluice_aggregator_resnapshots_total",
                "sluice_aggregator_state_age_seconds",
                "sluice_aggregator_synced",
            ]
        );
    }

    #[test]
    fn the_totals_are_the_sums_of_the_per_target_series_and_always_there() {
        let text = busy(PerTarget::All);
        for (per_target, total) in [
            ("deltas_total", "all_deltas_total"),
            ("resnapshots_total", "all_resnapshots_total"),
            ("base_fetches_total", "all_base_fetches_total"),
            ("malformed_deltas_total", "all_malformed_deltas_total"),
            ("synced", "targets_synced"),
            ("entities", "all_entities"),
            ("buffered", "all_buffered"),
        ] {
            let (a, b) = (
                format!("sluice_aggregator_{per_target}"),
                format!("sluice_aggregator_{total}"),
            );
            assert_eq!(sum(&text, &a), sum(&text, &b), "{a} vs {b}:\n{text}");
        }
        assert_eq!(sum(&text, "sluice_aggregator_all_deltas_total"), 5.0);
        assert_eq!(sum(&text, "sluice_aggregator_targets"), 2.0);
        // Before anything happened, every total is there (at 0), in the narrowest mode.
        let fresh = Metrics::new(PerTarget::None).unwrap().scrape().render();
        for outcome in DeltaOutcome::ALL {
            let series = format!(
                "sluice_aggregator_all_deltas_total{{outcome=\"{}\"}} 0",
                outcome.as_str()
            );
            assert!(fresh.contains(&series), "{series}:\n{fresh}");
        }
        assert!(fresh.contains("sluice_aggregator_all_base_fetches_total{result=\"error\"} 0"));
    }
}
