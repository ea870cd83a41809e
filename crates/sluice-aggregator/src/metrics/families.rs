//! The aggregator's metric families: names, help, labels, and which `metrics.per_target` mode
//! shows each. Registration ([`super::Metrics::new`]) and the catalog ([`catalog`]) both read
//! this table, so the list `sluice metrics` prints is what a scrape can show.
//!
//! Naming: the process-wide aggregate of per-target family `sluice_aggregator_X` is
//! `sluice_aggregator_all_X`; counts of targets are `sluice_aggregator_targets…`.
//!
//! What it must NOT do: register or count anything itself.

use sluice_config::{FamilyInfo, PerTarget};

/// When a family is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Process-wide (no `target` label): always.
    Process,
    /// Per target, in `essential` and `all`.
    Essential,
    /// Per target, in `all` only.
    All,
}

/// One family.
#[derive(Debug)]
pub(crate) struct Def {
    pub name: &'static str,
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    pub labels: &'static [&'static str],
    pub level: Level,
}

impl Def {
    /// Whether `mode` shows this family.
    pub fn shown(&self, mode: PerTarget) -> bool {
        match self.level {
            Level::Process => true,
            Level::Essential => mode != PerTarget::None,
            Level::All => mode == PerTarget::All,
        }
    }
}

const fn def(
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    level: Level,
) -> Def {
    Def {
        name,
        help,
        kind,
        labels,
        level,
    }
}

const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

pub(crate) const DELTAS: Def = def(
    "sluice_aggregator_deltas_total",
    "Deltas consumed, by what happened to them.",
    COUNTER,
    &["target", "outcome"],
    Level::Essential,
);
pub(crate) const ALL_DELTAS: Def = def(
    "sluice_aggregator_all_deltas_total",
    "Deltas consumed, by what happened to them, all targets.",
    COUNTER,
    &["outcome"],
    Level::Process,
);
pub(crate) const RESNAPSHOTS: Def = def(
    "sluice_aggregator_resnapshots_total",
    "Base-state fetches requested, by reason.",
    COUNTER,
    &["target", "reason"],
    Level::Essential,
);
pub(crate) const ALL_RESNAPSHOTS: Def = def(
    "sluice_aggregator_all_resnapshots_total",
    "Base-state fetches requested, by reason, all targets.",
    COUNTER,
    &["reason"],
    Level::Process,
);
pub(crate) const BASE_FETCHES: Def = def(
    "sluice_aggregator_base_fetches_total",
    "REST base-state fetches, by result.",
    COUNTER,
    &["target", "result"],
    Level::Essential,
);
pub(crate) const ALL_BASE_FETCHES: Def = def(
    "sluice_aggregator_all_base_fetches_total",
    "REST base-state fetches, by result, all targets.",
    COUNTER,
    &["result"],
    Level::Process,
);
pub(crate) const MALFORMED: Def = def(
    "sluice_aggregator_malformed_deltas_total",
    "Deltas consumed that could not be applied, by why (the kind of error).",
    COUNTER,
    &["target", "kind"],
    Level::All,
);
pub(crate) const ALL_MALFORMED: Def = def(
    "sluice_aggregator_all_malformed_deltas_total",
    "Deltas consumed that could not be applied, by why (the kind of error), all targets.",
    COUNTER,
    &["kind"],
    Level::Process,
);
pub(crate) const STATE_AGE: Def = def(
    "sluice_aggregator_state_age_seconds",
    "Seconds since the target's state last changed.",
    GAUGE,
    &["target"],
    Level::Essential,
);
pub(crate) const SYNCED: Def = def(
    "sluice_aggregator_synced",
    "1 when the target's state is complete and current, 0 while (re)syncing.",
    GAUGE,
    &["target"],
    Level::Essential,
);
pub(crate) const ENTITIES: Def = def(
    "sluice_aggregator_entities",
    "Entities in the target's state.",
    GAUGE,
    &["target"],
    Level::All,
);
pub(crate) const BUFFERED: Def = def(
    "sluice_aggregator_buffered",
    "Deltas held while waiting for a base state.",
    GAUGE,
    &["target"],
    Level::All,
);
pub(crate) const VERSION: Def = def(
    "sluice_aggregator_version",
    "The version of the target's state (targets with versions).",
    GAUGE,
    &["target"],
    Level::All,
);
pub(crate) const TARGETS: Def = def(
    "sluice_aggregator_targets",
    "Targets this aggregator holds now (its partitions' targets).",
    GAUGE,
    &[],
    Level::Process,
);
pub(crate) const TARGETS_SYNCED: Def = def(
    "sluice_aggregator_targets_synced",
    "Targets held whose state is complete and current.",
    GAUGE,
    &[],
    Level::Process,
);
pub(crate) const ALL_ENTITIES: Def = def(
    "sluice_aggregator_all_entities",
    "Entities in the states of every target held.",
    GAUGE,
    &[],
    Level::Process,
);
pub(crate) const ALL_BUFFERED: Def = def(
    "sluice_aggregator_all_buffered",
    "Deltas held while waiting for base states, every target held.",
    GAUGE,
    &[],
    Level::Process,
);
pub(crate) const CONSUMER_LAG: Def = def(
    "sluice_aggregator_consumer_lag",
    "Records in the partition not consumed yet (high watermark minus next offset).",
    GAUGE,
    &["topic", "partition"],
    Level::Process,
);
pub(crate) const SNAPSHOTS_WRITTEN: Def = def(
    "sluice_aggregator_snapshots_written_total",
    "Target snapshots written, by sink.",
    COUNTER,
    &["sink"],
    Level::Process,
);
pub(crate) const SNAPSHOT_ERRORS: Def = def(
    "sluice_aggregator_snapshot_errors_total",
    "Target snapshots that could not be written, by sink.",
    COUNTER,
    &["sink"],
    Level::Process,
);
pub(crate) const SKIPPED: Def = def(
    "sluice_aggregator_records_skipped_total",
    "Records not offered to any target, by reason.",
    COUNTER,
    &["reason"],
    Level::Process,
);
pub(crate) const DEAD_LETTERS: Def = def(
    "sluice_aggregator_dead_letters_total",
    "Malformed deltas written to the dead-letter topic.",
    COUNTER,
    &[],
    Level::Process,
);
pub(crate) const STREAM_LAGGED: Def = def(
    "sluice_aggregator_stream_lagged_total",
    "Stream clients disconnected because they fell too many changes behind.",
    COUNTER,
    &[],
    Level::Process,
);
pub(crate) const HTTP_CONNECTIONS: Def = def(
    "sluice_aggregator_http_connections",
    "HTTP connections open now.",
    GAUGE,
    &[],
    Level::Process,
);
pub(crate) const HTTP_REJECTED: Def = def(
    "sluice_aggregator_http_connections_rejected_total",
    "HTTP connections refused because http.max_connections were open.",
    COUNTER,
    &[],
    Level::Process,
);

pub(crate) const DELIVERIES: Def = def(
    "sluice_aggregator_deliveries_total",
    "Dataset deliveries of the target, by result (ok, failed after its retries, \
     skipped_not_synced).",
    COUNTER,
    &["target", "result"],
    Level::All,
);
pub(crate) const ALL_DELIVERIES: Def = def(
    "sluice_aggregator_all_deliveries_total",
    "Dataset deliveries, by result, all targets.",
    COUNTER,
    &["result"],
    Level::Process,
);
pub(crate) const DELIVERY_LAST_SUCCESS: Def = def(
    "sluice_aggregator_delivery_last_success_timestamp_seconds",
    "When the target's last dataset delivery was written (Unix seconds).",
    GAUGE,
    &["target"],
    Level::All,
);
pub(crate) const DELIVERY_BYTES: Def = def(
    "sluice_aggregator_delivery_bytes_total",
    "Bytes of dataset delivery files written (data and manifests).",
    COUNTER,
    &[],
    Level::Process,
);

/// Every family of the table.
pub(crate) const FAMILIES: [&Def; 29] = [
    &DELTAS,
    &ALL_DELTAS,
    &RESNAPSHOTS,
    &ALL_RESNAPSHOTS,
    &BASE_FETCHES,
    &ALL_BASE_FETCHES,
    &MALFORMED,
    &ALL_MALFORMED,
    &STATE_AGE,
    &SYNCED,
    &ENTITIES,
    &BUFFERED,
    &VERSION,
    &TARGETS,
    &TARGETS_SYNCED,
    &ALL_ENTITIES,
    &ALL_BUFFERED,
    &CONSUMER_LAG,
    &SNAPSHOTS_WRITTEN,
    &SNAPSHOT_ERRORS,
    &SKIPPED,
    &DEAD_LETTERS,
    &STREAM_LAGGED,
    &HTTP_CONNECTIONS,
    &HTTP_REJECTED,
    &DELIVERIES,
    &ALL_DELIVERIES,
    &DELIVERY_LAST_SUCCESS,
    &DELIVERY_BYTES,
];

/// Every family an aggregator exposes in `mode`, sorted by name: the table's, and those of the
/// process collector (read from a registry built as the aggregator builds it).
pub fn catalog(mode: PerTarget) -> Result<Vec<FamilyInfo>, prometheus::Error> {
    let mut families: Vec<FamilyInfo> = FAMILIES
        .iter()
        .filter(|def| def.shown(mode))
        .map(|def| FamilyInfo {
            name: def.name.to_owned(),
            kind: def.kind,
            labels: def.labels.iter().map(|l| (*l).to_owned()).collect(),
            per_target: def.labels.first() == Some(&"target"),
        })
        .collect();
    for family in super::Metrics::new(mode)?.registry.gather() {
        if !families.iter().any(|f| f.name == family.name()) {
            families.push(FamilyInfo {
                name: family.name().to_owned(),
                kind: match family.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => COUNTER,
                    _ => GAUGE,
                },
                labels: Vec::new(),
                per_target: false,
            });
        }
    }
    families.sort_by(|a, b| a.name.cmp(&b.name));
    families.dedup_by(|a, b| a.name == b.name);
    Ok(families)
}
