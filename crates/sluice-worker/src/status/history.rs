//! The last hour in memory: one sample every [`EVERY`] of events per second, delivery latency
//! (p50 and p99 of the interval, from the deltas of the process-wide latency histogram) and
//! reconnects, for the console's charts and `/status/history.json`. Enough to see a problem
//! without an external dashboard; not a replacement for Prometheus.
//!
//! What it must NOT do: grow past [`KEEP`] samples, or hold its lock while it reads the targets.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::registry::Registry;
use crate::status::LATENCY_BUCKETS;
use crate::totals::Sums;

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
pub const KEEP: usize = 360;

/// One interval of [`EVERY`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Sample {
    /// End of the interval, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Events received per second over the interval.
    pub events_per_second: f64,
    /// Median delivery latency of the interval, seconds (`None` without deliveries).
    pub latency_p50: Option<f64>,
    /// 99th percentile delivery latency of the interval, seconds.
    pub latency_p99: Option<f64>,
    /// Reconnects in the interval.
    pub reconnects: u64,
}

/// The counters a sample is the difference of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Events received so far.
    pub events: u64,
    /// Reconnects so far.
    pub reconnects: u64,
    /// Cumulative latency buckets, in [`LATENCY_BUCKETS`] order.
    pub latency: [u64; LATENCY_BUCKETS.len()],
    /// Latency observations so far.
    pub latency_count: u64,
}

impl Totals {
    /// The process-wide totals now (running targets and those that stopped).
    pub fn read(registry: &Registry) -> Totals {
        let (rows, retired): (_, Sums) = registry.snapshot_with_retired();
        let mut sums = retired;
        for row in rows.iter() {
            sums.events = sums.events.saturating_add(row.events.get());
            sums.add_reconnects(row.reconnect_counts());
            sums.add_latency(row.latency.snapshot());
        }
        Totals {
            events: sums.events,
            reconnects: sums.reconnects.iter().sum(),
            latency: sums.latency_buckets,
            latency_count: sums.latency_count,
        }
    }
}

/// The ring of samples.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    samples: VecDeque<Sample>,
    last: Option<(Totals, Duration)>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `totals` read at `elapsed` (a monotonic clock) and wall time `at_ms`: the first
    /// call only sets the baseline, each later one adds the interval's sample.
    pub fn record(&self, totals: Totals, elapsed: Duration, at_ms: u64) {
        let mut inner = self.lock();
        if let Some((previous, then)) = inner.last.take() {
            let seconds = elapsed.saturating_sub(then).as_secs_f64();
            let mut buckets = [0u64; LATENCY_BUCKETS.len()];
            for ((slot, now), before) in
                buckets.iter_mut().zip(totals.latency).zip(previous.latency)
            {
                *slot = now.saturating_sub(before);
            }
            let count = totals.latency_count.saturating_sub(previous.latency_count);
            let events = totals.events.saturating_sub(previous.events);
            let sample = Sample {
                at_ms,
                events_per_second: if seconds > 0.0 {
                    events as f64 / seconds
                } else {
                    0.0
                },
                latency_p50: quantile(0.5, &buckets, count),
                latency_p99: quantile(0.99, &buckets, count),
                reconnects: totals.reconnects.saturating_sub(previous.reconnects),
            };
            if inner.samples.len() == KEEP {
                inner.samples.pop_front();
            }
            inner.samples.push_back(sample);
        }
        inner.last = Some((totals, elapsed));
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().samples.iter().copied().collect()
    }
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `q` quantile of `count` observations in cumulative `buckets` (upper bounds
/// [`LATENCY_BUCKETS`], the rest above the last), interpolated inside its bucket as Prometheus'
/// `histogram_quantile` does; observations above the last bound count as the last bound.
fn quantile(q: f64, buckets: &[u64; LATENCY_BUCKETS.len()], count: u64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut lower = 0.0;
    let mut below = 0u64;
    for (bound, cumulative) in LATENCY_BUCKETS.iter().zip(buckets) {
        if *cumulative as f64 >= rank && *cumulative > below {
            let inside = (cumulative - below) as f64;
            return Some(
                lower + (bound - lower) * ((rank - below as f64) / inside).clamp(0.0, 1.0),
            );
        }
        lower = *bound;
        below = *cumulative;
    }
    LATENCY_BUCKETS.last().copied()
}

/// Takes a sample every [`EVERY`] until `stop`.
pub async fn sample(
    history: std::sync::Arc<History>,
    registry: std::sync::Arc<Registry>,
    stop: tokio_util::sync::CancellationToken,
) {
    let origin = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let registry = registry.clone();
        let Ok(totals) = tokio::task::spawn_blocking(move || Totals::read(&registry)).await else {
            continue;
        };
        history.record(totals, origin.elapsed(), now_ms());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn totals(events: u64, reconnects: u64, fast: u64, slow: u64) -> Totals {
        // `fast` observations in the 1 ms bucket, `slow` ones in the 100 ms bucket.
        let mut latency = [0u64; LATENCY_BUCKETS.len()];
        for (i, slot) in latency.iter_mut().enumerate() {
            *slot = fast + if LATENCY_BUCKETS[i] >= 0.1 { slow } else { 0 };
        }
        Totals {
            events,
            reconnects,
            latency,
            latency_count: fast + slow,
        }
    }

    #[test]
    fn samples_are_deltas_of_the_interval_and_the_ring_keeps_an_hour() {
        let history = History::default();
        history.record(totals(100, 1, 50, 0), Duration::ZERO, 0);
        assert!(history.samples().is_empty(), "the first read is a baseline");
        history.record(totals(600, 4, 148, 2), Duration::from_secs(10), 10_000);
        let sample = history.samples()[0];
        assert_eq!(sample.events_per_second, 50.0);
        assert_eq!(sample.reconnects, 3);
        // 98 of 100 at ≤ 1 ms, 2 in (50 ms, 100 ms]: p50 in the first bucket, p99 in the slow one.
        assert!(sample.latency_p50.unwrap() <= 0.001, "{sample:?}");
        let p99 = sample.latency_p99.unwrap();
        assert!((0.05..=0.1).contains(&p99), "{sample:?}");

        history.record(totals(600, 4, 148, 2), Duration::from_secs(20), 20_000);
        let idle = history.samples()[1];
        assert_eq!((idle.events_per_second, idle.latency_p50), (0.0, None));

        for i in 3..(KEEP as u64 + 10) {
            history.record(totals(600, 4, 148, 2), Duration::from_secs(10 * i), 0);
        }
        assert_eq!(history.samples().len(), KEEP);
    }
}
