//! The validated `deliveries:` of `aggregator.yaml`: which targets' states are written as
//! datasets, how often, in which format, where, and how many are kept.

use std::path::PathBuf;
use std::time::Duration;

/// One `deliveries:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Which targets it delivers.
    pub targets: DeliveryTargets,
    /// Time between deliveries of each target; never zero.
    pub every: Duration,
    /// The file format.
    pub format: DeliveryFormat,
    /// Where the files go.
    pub destination: Destination,
    /// Deliveries kept per target (older ones are deleted, data and manifest); at least 1.
    pub keep: usize,
}

impl DeliveryConfig {
    /// Default [`DeliveryConfig::keep`].
    pub const DEFAULT_KEEP: usize = 10;

    /// Whether this entry delivers `target`.
    pub fn covers(&self, target: &str) -> bool {
        match &self.targets {
            DeliveryTargets::All => true,
            DeliveryTargets::Ids(ids) => ids.iter().any(|id| id == target),
        }
    }
}

/// `targets`: every aggregated target, or the ones named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryTargets {
    /// `all`.
    All,
    /// Target ids (each an enabled target with an `aggregate` section).
    Ids(Vec<String>),
}

/// A delivery's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFormat {
    /// JSON Lines: one `{"key": …, "value": …}` object per entity, in key order.
    Jsonl,
    /// CSV: a `key` column, then the union of the entities' top-level fields (sorted); nested
    /// values as JSON text.
    Csv,
}

impl DeliveryFormat {
    /// Every format, as written in the config.
    pub const ALL: [DeliveryFormat; 2] = [DeliveryFormat::Jsonl, DeliveryFormat::Csv];

    /// The config word, which is also the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryFormat::Jsonl => "jsonl",
            DeliveryFormat::Csv => "csv",
        }
    }
}

/// Where deliveries are written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Destination {
    /// A directory (resolved against the aggregator file's directory): each target's deliveries
    /// in `<dir>/<target>/`.
    Dir(PathBuf),
}
