//! Process-wide sums of the per-target values: what `/metrics` exposes without a `target` label,
//! in every `metrics.per_target` mode.
//!
//! The counters of targets that stopped are kept ([`Sums::retire`]), so a process-wide counter
//! never goes down when a target is removed (Prometheus would read that as a reset).
//!
//! What it must NOT do: render anything (the metrics module does), or keep a target's gauges
//! (state, pause, lag) once it stopped: those describe running targets only.

use sluice_client::DisconnectReason;

use crate::status::{LATENCY_BUCKETS, State, TargetStatus};

/// The sums of one scrape, or of the targets that stopped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sums {
    pub events: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub filtered: u64,
    pub duplicates: u64,
    pub delivery_errors: u64,
    pub key_errors: u64,
    pub checkpoints: u64,
    pub connections: u64,
    /// In [`DisconnectReason::ALL`] order.
    pub reconnects: [u64; DisconnectReason::ALL.len()],
    /// Cumulative, in [`LATENCY_BUCKETS`] order.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len()],
    pub latency_count: u64,
    pub latency_sum: f64,
    /// Running targets per state, in [`State::ALL`] order.
    pub states: [u64; State::ALL.len()],
    /// Running targets whose upstream reading is paused.
    pub paused: u64,
    /// Acknowledged events the running targets' checkpoints do not cover yet.
    pub checkpoint_lag: i64,
}

impl Sums {
    /// Adds a latency snapshot (cumulative buckets, count, sum) of one target.
    pub fn add_latency(
        &mut self,
        (cumulative, count, sum): ([u64; LATENCY_BUCKETS.len()], u64, f64),
    ) {
        for (total, n) in self.latency_buckets.iter_mut().zip(cumulative) {
            *total = total.saturating_add(n);
        }
        self.latency_count = self.latency_count.saturating_add(count);
        self.latency_sum += sum;
    }

    /// Adds reconnect counts of one target.
    pub fn add_reconnects(&mut self, counts: [u64; DisconnectReason::ALL.len()]) {
        for (total, n) in self.reconnects.iter_mut().zip(counts) {
            *total = total.saturating_add(n);
        }
    }

    /// Keeps the counters of a target that stopped (its gauges are dropped).
    pub fn retire(&mut self, row: &TargetStatus) {
        let add = |total: &mut u64, n: u64| *total = total.saturating_add(n);
        add(&mut self.events, row.events.get());
        add(&mut self.bytes, row.bytes.get());
        add(&mut self.delivered, row.acked.get());
        add(&mut self.filtered, row.filtered.get());
        add(&mut self.duplicates, row.duplicates.get());
        add(&mut self.delivery_errors, row.delivery_errors.get());
        add(&mut self.key_errors, row.key_errors.get());
        add(&mut self.checkpoints, row.checkpoints.get());
        add(
            &mut self.connections,
            row.generation.load(std::sync::atomic::Ordering::Relaxed),
        );
        self.add_reconnects(row.reconnect_counts());
        self.add_latency(row.latency.snapshot());
    }
}
