//! The last outcome of each target's deliveries, per destination, for the aggregator's page and
//! `/v1/targets` (the counters and the last-success gauge are in `metrics`). Bounded by the
//! targets held times the `deliveries:` entries; a target that moves away is forgotten. It must
//! never hold a credential: errors come from `DeliveryError`, which names paths and objects only.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::metrics::DeliveryResult;
use crate::shared::lock;

/// One target's deliveries to one destination.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    result: DeliveryResult,
    at: SystemTime,
    /// The last delivery written: when, and its data file.
    last_ok: Option<(SystemTime, String)>,
    /// Failed rounds since the last success.
    failures: u64,
    /// The last failure's message.
    error: Option<String>,
}

/// What a finished delivery round came to for one target.
pub enum Outcome<'a> {
    /// Written: the data file.
    Delivered(&'a str),
    /// Not written after its retries: why.
    Failed(&'a str),
    /// The state was not synced.
    Skipped,
}

/// Every target's last deliveries.
#[derive(Debug, Default)]
pub struct DeliveryStatus {
    /// By target, then destination.
    entries: Mutex<BTreeMap<String, BTreeMap<String, Entry>>>,
}

impl DeliveryStatus {
    /// Records `outcome` of `target`'s delivery to `destination` at `at`.
    pub fn record(&self, target: &str, destination: &str, outcome: Outcome<'_>, at: SystemTime) {
        let mut entries = lock(&self.entries);
        let entry = entries
            .entry(target.to_owned())
            .or_default()
            .entry(destination.to_owned())
            .or_insert(Entry {
                result: DeliveryResult::SkippedNotSynced,
                at,
                last_ok: None,
                failures: 0,
                error: None,
            });
        entry.at = at;
        match outcome {
            Outcome::Delivered(file) => {
                entry.result = DeliveryResult::Ok;
                entry.last_ok = Some((at, file.to_owned()));
                entry.failures = 0;
                entry.error = None;
            }
            Outcome::Failed(error) => {
                entry.result = DeliveryResult::Failed;
                entry.failures += 1;
                entry.error = Some(error.to_owned());
            }
            Outcome::Skipped => entry.result = DeliveryResult::SkippedNotSynced,
        }
    }

    /// Forgets `target` (it moved to another aggregator).
    pub fn forget(&self, target: &str) {
        lock(&self.entries).remove(target);
    }

    /// `target`'s deliveries, one object per destination: `destination`, `result` (`ok`,
    /// `failed`, `skipped_not_synced`), `at`, `last_ok_at` and `last_ok_file` (null before the
    /// first success), `failures` (rounds failed since it), `error`.
    pub fn of(&self, target: &str) -> Value {
        let entries = lock(&self.entries);
        let Some(by_destination) = entries.get(target) else {
            return json!([]);
        };
        let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        by_destination
            .iter()
            .map(|(destination, e)| {
                json!({
                    "destination": destination,
                    "result": e.result.as_str(),
                    "at": time(e.at),
                    "last_ok_at": e.last_ok.as_ref().map(|(t, _)| time(*t)),
                    "last_ok_file": e.last_ok.as_ref().map(|(_, f)| f),
                    "failures": e.failures,
                    "error": e.error,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::Duration;

    #[test]
    fn a_failure_keeps_the_last_success_and_a_success_clears_the_failures() {
        let status = DeliveryStatus::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t = |s| t0 + Duration::from_secs(s);
        assert_eq!(status.of("a"), json!([]));
        status.record("a", "/d", Outcome::Delivered("/d/a/1.csv"), t(0));
        status.record("a", "/d", Outcome::Failed("disk full"), t(1));
        status.record("a", "/d", Outcome::Failed("disk still full"), t(2));
        let shown = status.of("a");
        assert_eq!(shown[0]["result"], "failed");
        assert_eq!(shown[0]["failures"], 2);
        assert_eq!(shown[0]["error"], "disk still full");
        assert_eq!(shown[0]["last_ok_file"], "/d/a/1.csv");
        assert_eq!(shown[0]["last_ok_at"], "2027-01-15T08:00:00.000Z");
        status.record("a", "/d", Outcome::Delivered("/d/a/2.csv"), t(3));
        let shown = status.of("a");
        assert_eq!(
            (shown[0]["failures"].clone(), shown[0]["error"].clone()),
            (json!(0), Value::Null)
        );
        status.record("a", "s3://b/", Outcome::Skipped, t(4));
        assert_eq!(status.of("a").as_array().map(Vec::len), Some(2));
        status.forget("a");
        assert_eq!(status.of("a"), json!([]));
    }
}
