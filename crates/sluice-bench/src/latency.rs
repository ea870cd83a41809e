//! Added latency: from the moment the simulator was scheduled to emit an event to the moment the
//! harness's consumer reads it back from Kafka.
//!
//! The simulator's feed paces from its start time (`sluice-sim` `feed.rs`): the head is
//! `floor(elapsed * rate)`, checked every millisecond, so delta `seq` (ids are the sequence
//! numbers, starting at 1) is emitted at `start + seq / rate`, at most one tick later. The
//! harness reads the wall clock just before it starts the simulator, so the scheduled time it
//! computes is never later than the real one: the latency is an upper bound.

use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

/// The largest latency recorded; longer ones are clamped to it.
const MAX_MICROS: u64 = 600_000_000;

/// The scheduled emit time of delta `seq` of a feed started at `start` with `rate` deltas/s.
pub fn scheduled_emit(start: SystemTime, seq: u64, rate: f64) -> SystemTime {
    start + Duration::from_secs_f64(seq as f64 / rate)
}

/// Microseconds from `scheduled` to `seen` (0 when `seen` is earlier, e.g. clock granularity).
pub fn latency_micros(scheduled: SystemTime, seen: SystemTime) -> u64 {
    seen.duration_since(scheduled)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("constant histogram bounds are valid"),
        }
    }
}

impl Latencies {
    /// Records one latency (clamped to the histogram's range).
    pub fn record(&mut self, micros: u64) {
        self.hist.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every latency recorded in `other`.
    pub fn add(&mut self, other: &Latencies) {
        // Same bounds on both sides, so this cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// The `q` quantile (0.0..=1.0) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    /// The largest latency in milliseconds; `None` when empty.
    pub fn max_ms(&self) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.max() as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_time_paces_from_the_start() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            scheduled_emit(start, 10_000, 10_000.0),
            start + Duration::from_secs(1)
        );
        assert_eq!(
            scheduled_emit(start, 1, 10_000.0),
            start + Duration::from_micros(100)
        );
    }

    #[test]
    fn latency_is_never_negative() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        assert_eq!(latency_micros(t, t + Duration::from_millis(3)), 3000);
        assert_eq!(latency_micros(t + Duration::from_millis(3), t), 0);
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut l = Latencies::default();
        assert_eq!(l.quantile_ms(0.5), None);
        for ms in 1..=100u64 {
            l.record(ms * 1000);
        }
        assert_eq!(l.len(), 100);
        let p50 = l.quantile_ms(0.5).unwrap_or_default();
        let p99 = l.quantile_ms(0.99).unwrap_or_default();
        assert!((49.9..=50.1).contains(&p50), "{p50}");
        assert!((98.9..=99.1).contains(&p99), "{p99}");
        assert!(l.max_ms().unwrap_or_default() >= 99.9);
    }
}
