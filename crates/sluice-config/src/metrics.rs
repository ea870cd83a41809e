//! `metrics:` of `worker.yaml` and `aggregator.yaml`: how many per-target series `/metrics`
//! exposes (`per_target: all | essential | none`).
//!
//! Also [`FamilyInfo`], the shape in which the worker and the aggregator list the families a mode
//! exposes (`sluice metrics`).
//!
//! What it must NOT do: decide which family belongs to which mode (the worker's and the
//! aggregator's metrics modules do, and list it); this is only the validated setting.

use std::fmt;
use std::str::FromStr;

/// How many series labelled with a target `/metrics` exposes. Process-wide aggregates (totals
/// without the `target` label) are exposed in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PerTarget {
    /// Every per-target family (about 30 series per target in the worker).
    All,
    /// The families an operator needs per target: state, events, deliveries, reconnects by
    /// reason, liveness (the default; the shipped alerts and dashboard use only these).
    #[default]
    Essential,
    /// No series labelled with a target: the aggregates only.
    None,
}

impl PerTarget {
    /// Every mode, widest first.
    pub const ALL: [PerTarget; 3] = [PerTarget::All, PerTarget::Essential, PerTarget::None];

    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            PerTarget::All => "all",
            PerTarget::Essential => "essential",
            PerTarget::None => "none",
        }
    }
}

impl fmt::Display for PerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not `all`, `essential` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad metrics mode {0:?}: use all, essential or none")]
pub struct PerTargetError(pub String);

impl PerTargetError {
    /// Stable error kind.
    pub fn kind(&self) -> &'static str {
        "bad_per_target"
    }
}

impl FromStr for PerTarget {
    type Err = PerTargetError;

    fn from_str(s: &str) -> Result<PerTarget, PerTargetError> {
        PerTarget::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s.trim())
            .ok_or_else(|| PerTargetError(s.to_owned()))
    }
}

/// The validated `metrics:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// Which per-target series `/metrics` exposes.
    pub per_target: PerTarget,
}

/// One metric family a worker or an aggregator exposes, as their catalogs list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FamilyInfo {
    /// The family name (a histogram's series add `_bucket`, `_sum`, `_count`).
    pub name: String,
    /// `counter`, `gauge`, `histogram` (or what a registry collector says).
    pub kind: &'static str,
    /// Label names, `target` first when it has one.
    pub labels: Vec<String>,
    /// Whether its series carry the `target` label (one or more series per target).
    pub per_target: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_mode_reads_back_and_others_are_refused() {
        for mode in PerTarget::ALL {
            assert_eq!(mode.as_str().parse::<PerTarget>().unwrap(), mode);
        }
        assert_eq!(PerTarget::default(), PerTarget::Essential);
        let error = "some".parse::<PerTarget>().unwrap_err();
        assert_eq!(error.kind(), "bad_per_target");
        assert!(
            error.to_string().contains("all, essential or none"),
            "{error}"
        );
    }
}
