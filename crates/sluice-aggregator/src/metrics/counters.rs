//! Counters with a per-target family and a process-wide total: every count goes to the total,
//! and to the target's series when the `metrics.per_target` mode shows the family.
//!
//! What it must NOT do: create per-target series for a family the mode hides (each costs memory
//! for as long as the process runs), or skip the total.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use sluice_config::PerTarget;
use sluice_merge::Counts;

use super::DeltaOutcome;
use super::families::Def;

/// A counter family `{target, L}` and its total `{L}`.
pub struct TargetCounter {
    per_target: Option<IntCounterVec>,
    total: IntCounterVec,
}

impl TargetCounter {
    /// Registers the total (with a series for each of `values`, so it is present from the
    /// start) and, when `mode` shows it, the per-target family.
    pub(crate) fn new(
        registry: &Registry,
        mode: PerTarget,
        per_target: &Def,
        total: &Def,
        values: &[&str],
    ) -> Result<TargetCounter, prometheus::Error> {
        let total_vec = IntCounterVec::new(Opts::new(total.name, total.help), total.labels)?;
        registry.register(Box::new(total_vec.clone()))?;
        for value in values {
            total_vec.with_label_values(&[value]);
        }
        let per_target = if per_target.shown(mode) {
            let vec = IntCounterVec::new(
                Opts::new(per_target.name, per_target.help),
                per_target.labels,
            )?;
            registry.register(Box::new(vec.clone()))?;
            Some(vec)
        } else {
            None
        };
        Ok(TargetCounter {
            per_target,
            total: total_vec,
        })
    }

    /// The counters of `target` and `value`, resolved once.
    pub fn get(&self, target: &str, value: &str) -> CounterPair {
        CounterPair {
            per_target: self
                .per_target
                .as_ref()
                .map(|vec| vec.with_label_values(&[target, value])),
            total: self.total.with_label_values(&[value]),
        }
    }

    /// Counts one for `target` and `value`.
    pub fn inc(&self, target: &str, value: &str) {
        self.get(target, value).inc_by(1);
    }

    /// Removes the series of `target` and `value` (the total keeps its count).
    pub fn forget(&self, target: &str, value: &str) {
        if let Some(vec) = &self.per_target {
            let _ = vec.remove_label_values(&[target, value]);
        }
    }
}

/// One per-target counter (absent when the mode hides its family) and its total.
#[derive(Clone)]
pub struct CounterPair {
    per_target: Option<IntCounter>,
    total: IntCounter,
}

impl CounterPair {
    /// Adds `n` to both.
    pub fn inc_by(&self, n: u64) {
        if let Some(counter) = &self.per_target {
            counter.inc_by(n);
        }
        self.total.inc_by(n);
    }
}

/// One target's `sluice_aggregator_deltas_total` series, one per [`DeltaOutcome`], resolved once
/// (no label lookup per delta) and indexed by the outcome, never by a literal position.
pub struct DeltaCounters(pub(super) [CounterPair; DeltaOutcome::ALL.len()]);

impl DeltaCounters {
    /// The counter of `outcome`.
    pub fn get(&self, outcome: DeltaOutcome) -> &CounterPair {
        &self.0[outcome.index()]
    }

    /// Counts one delta.
    pub fn inc(&self, outcome: DeltaOutcome) {
        self.get(outcome).inc_by(1);
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
