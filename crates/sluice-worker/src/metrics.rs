//! Prometheus metrics of the worker.
//!
//! Per-target values live in each target's [`TargetStatus`] as plain atomics and are written in
//! the text format at scrape time, straight from the atomics. A registry child per series would cost about a
//! kilobyte each (every child keeps its own copy of the descriptor), thirty series per target,
//! which at 10,000 targets is more than the connections themselves.
//!
//! Label values are bounded: target ids (validated, from config), the fixed reconnect reasons and
//! states. No URL, header, proxy or error text ever becomes a label.

use std::sync::Arc;

use prometheus::proto::MetricType;
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};

use crate::registry::Registry as Targets;
use crate::status::{LATENCY_BUCKETS, State, TargetStatus};

/// Every metric family of the worker.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    producer_in_flight: IntGauge,
    target_count: IntGauge,
    targets: Arc<Targets>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Why the registry could not be built (a programming error: duplicate or invalid names).
#[derive(Debug, thiserror::Error)]
#[error("building metrics registry failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// The registry: per-target families for the targets in `targets` at each scrape, process
    /// totals, the producer gauge.
    pub fn new(targets: Arc<Targets>) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let producer_in_flight = IntGauge::new(
            "sluice_producer_in_flight",
            "Records in the producer not yet acknowledged, process-wide.",
        )?;
        registry.register(Box::new(producer_in_flight.clone()))?;
        let count = IntGauge::new("sluice_targets", "Enabled targets held by this worker.")?;
        registry.register(Box::new(count.clone()))?;
        Ok(Metrics {
            registry,
            producer_in_flight,
            target_count: count,
            targets,
        })
    }

    /// Renders the text format.
    pub fn render(&self, producer_in_flight: i64) -> String {
        self.producer_in_flight.set(producer_in_flight);
        let targets = self.targets.snapshot();
        self.target_count
            .set(i64::try_from(targets.len()).unwrap_or(i64::MAX));
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "encoding metrics failed");
        }
        let mut out = String::from_utf8_lossy(&buffer).into_owned();
        // Dozens of series per target: reserve once instead of growing the exposition through
        // many reallocations (its size at 10,000 targets: docs/BENCHMARKS.md, "Density, 10,000
        // connections").
        out.reserve(targets.len() * 2048);
        write_targets(&mut out, &targets);
        out
    }
}

/// (name, help, type, extra label) of each per-target family, in output order.
const FAMILIES: [(&str, &str, MetricType, Option<&str>); 17] = [
    (
        "sluice_target_state",
        "1 for the target's current connection state, 0 for the others.",
        MetricType::GAUGE,
        Some("state"),
    ),
    (
        "sluice_events_received_total",
        "SSE events received and handed to Kafka (after the event-type filter).",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_bytes_received_total",
        "Response body bytes received.",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_events_delivered_total",
        "Events Kafka acknowledged.",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_events_filtered_total",
        "Events dropped by the target's event-type filter.",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_events_duplicate_total",
        "Replayed events dropped after a make-before-break switch.",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_reconnects_total",
        "Reconnects by reason.",
        MetricType::COUNTER,
        Some("reason"),
    ),
    (
        "sluice_delivery_errors_total",
        "Kafka delivery failures (each is retried, never dropped).",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_key_errors_total",
        "Events whose record key could not be read from the payload (published keyed by target id).",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_checkpoints_written_total",
        "Checkpoints Kafka acknowledged (counted when the target next wakes: its next chunk or delivery).",
        MetricType::COUNTER,
        None,
    ),
    (
        "sluice_upstream_paused",
        "1 while reading upstream is paused because Kafka is not keeping up.",
        MetricType::GAUGE,
        None,
    ),
    (
        "sluice_producer_queue_depth",
        "Events of the target sent to Kafka and not yet acknowledged.",
        MetricType::GAUGE,
        None,
    ),
    (
        "sluice_seconds_since_last_byte",
        "Seconds since the last byte from upstream (absent before the first).",
        MetricType::GAUGE,
        None,
    ),
    (
        "sluice_seconds_since_last_event",
        "Seconds since the last event from upstream (absent before the first).",
        MetricType::GAUGE,
        None,
    ),
    (
        "sluice_delivery_latency_seconds",
        "From receipt of an event to Kafka's acknowledgement.",
        MetricType::HISTOGRAM,
        None,
    ),
    (
        "sluice_connection_generation",
        "Successful connections of the target so far (the sluice.connection header).",
        MetricType::GAUGE,
        None,
    ),
    (
        "sluice_checkpoint_lag_events",
        "Events Kafka acknowledged that the last written checkpoint does not cover yet.",
        MetricType::GAUGE,
        None,
    ),
];

/// Writes every per-target family in the Prometheus text format, straight from the status rows.
///
/// Target ids are `[a-z0-9._-]` (validated) and the other label values are fixed words, so no
/// label value needs escaping. Lines are appended piece by piece rather than through `write!`:
/// a scrape at 10,000 targets writes 320,000 of them, and the formatting machinery was most of
/// its cost. Only the few float values (seconds, latency sums) still go through `write!`.
fn write_targets(out: &mut String, targets: &[Arc<TargetStatus>]) {
    use std::fmt::Write as _;
    let bounds: Vec<String> = LATENCY_BUCKETS.iter().map(f64::to_string).collect();
    for (index, (name, help, kind, _)) in FAMILIES.iter().enumerate() {
        let kind = match kind {
            MetricType::COUNTER => "counter",
            MetricType::HISTOGRAM => "histogram",
            _ => "gauge",
        };
        let mark = out.len();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let samples = out.len();
        for status in targets {
            let t = status.id.as_str();
            match index {
                0 => {
                    let current = status.state();
                    for state in State::ALL {
                        series(out, name, "", &[("state", state.as_str()), ("target", t)]);
                        out.push(if state == current { '1' } else { '0' });
                        out.push('\n');
                    }
                }
                1 => sample(out, name, t, status.events.get()),
                2 => sample(out, name, t, status.bytes.get()),
                3 => sample(out, name, t, status.acked.get()),
                4 => sample(out, name, t, status.filtered.get()),
                5 => sample(out, name, t, status.duplicates.get()),
                6 => {
                    for (reason, n) in status.reconnects_by_reason() {
                        series(out, name, "", &[("reason", reason.as_str()), ("target", t)]);
                        push_u64(out, n);
                        out.push('\n');
                    }
                }
                7 => sample(out, name, t, status.delivery_errors.get()),
                8 => sample(out, name, t, status.key_errors.get()),
                9 => sample(out, name, t, status.checkpoints.get()),
                10 => sample_i64(out, name, t, status.paused.get()),
                11 => sample_i64(out, name, t, status.queue_depth.get()),
                12 => {
                    if let Some(s) = status.seconds_since_last_byte() {
                        series(out, name, "", &[("target", t)]);
                        let _ = writeln!(out, "{s}");
                    }
                }
                13 => {
                    if let Some(s) = status.seconds_since_last_event() {
                        series(out, name, "", &[("target", t)]);
                        let _ = writeln!(out, "{s}");
                    }
                }
                14 => {
                    let (cumulative, count, sum) = status.latency.snapshot();
                    for (bound, n) in bounds.iter().zip(cumulative) {
                        series(out, name, "_bucket", &[("target", t), ("le", bound)]);
                        push_u64(out, n);
                        out.push('\n');
                    }
                    series(out, name, "_bucket", &[("target", t), ("le", "+Inf")]);
                    push_u64(out, count);
                    out.push('\n');
                    series(out, name, "_sum", &[("target", t)]);
                    let _ = writeln!(out, "{sum}");
                    series(out, name, "_count", &[("target", t)]);
                    push_u64(out, count);
                    out.push('\n');
                }
                15 => sample(
                    out,
                    name,
                    t,
                    status.generation.load(std::sync::atomic::Ordering::Relaxed),
                ),
                _ => sample_i64(out, name, t, status.checkpoint_lag.get()),
            }
        }
        if out.len() == samples {
            // A family without samples (e.g. no reconnect yet) is left out, as registries do.
            out.truncate(mark);
        }
    }
}

/// `{name}{suffix}{k="v",...} ` (the value follows).
fn series(out: &mut String, name: &str, suffix: &str, labels: &[(&str, &str)]) {
    out.push_str(name);
    out.push_str(suffix);
    out.push('{');
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        out.push_str(value);
        out.push('"');
    }
    out.push_str("} ");
}

/// One `{name}{target="t"} n` line.
fn sample(out: &mut String, name: &str, target: &str, value: u64) {
    series(out, name, "", &[("target", target)]);
    push_u64(out, value);
    out.push('\n');
}

/// One `{name}{target="t"} n` line of a signed value.
fn sample_i64(out: &mut String, name: &str, target: &str, value: i64) {
    series(out, name, "", &[("target", target)]);
    out.push_str(itoa::Buffer::new().format(value));
    out.push('\n');
}

/// `n` in decimal.
fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sluice_client::DisconnectReason;
    use tokio::time::Instant;

    /// The straightforward `write!` rendering the fast one must match byte for byte.
    fn write_targets_fmt(out: &mut String, targets: &[Arc<TargetStatus>]) {
        use std::fmt::Write as _;
        for (index, (name, help, kind, _)) in FAMILIES.iter().enumerate() {
            let kind = match kind {
                MetricType::COUNTER => "counter",
                MetricType::HISTOGRAM => "histogram",
                _ => "gauge",
            };
            let mark = out.len();
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let samples = out.len();
            for status in targets {
                let t = status.id.as_str();
                let _ = match index {
                    0 => {
                        let current = status.state();
                        for state in State::ALL {
                            let on = u8::from(state == current);
                            let _ = writeln!(
                                out,
                                "{name}{{state=\"{}\",target=\"{t}\"}} {on}",
                                state.as_str()
                            );
                        }
                        Ok(())
                    }
                    1 => writeln!(out, "{name}{{target=\"{t}\"}} {}", status.events.get()),
                    2 => writeln!(out, "{name}{{target=\"{t}\"}} {}", status.bytes.get()),
                    3 => writeln!(out, "{name}{{target=\"{t}\"}} {}", status.acked.get()),
                    4 => writeln!(out, "{name}{{target=\"{t}\"}} {}", status.filtered.get()),
                    5 => writeln!(out, "{name}{{target=\"{t}\"}} {}", status.duplicates.get()),
                    6 => {
                        for (reason, n) in status.reconnects_by_reason() {
                            let _ = writeln!(
                                out,
                                "{name}{{reason=\"{}\",target=\"{t}\"}} {n}",
                                reason.as_str()
                            );
                        }
                        Ok(())
                    }
                    7 => writeln!(
                        out,
                        "{name}{{target=\"{t}\"}} {}",
                        status.delivery_errors.get()
                    ),
                    8 => writeln!(out, "{name}{{target=\"{t}\"}} {}", status.key_errors.get()),
                    9 => writeln!(out, "{name}{{target=\"{t}\"}} {}", status.checkpoints.get()),
                    10 => writeln!(out, "{name}{{target=\"{t}\"}} {}", status.paused.get()),
                    11 => writeln!(out, "{name}{{target=\"{t}\"}} {}", status.queue_depth.get()),
                    12 => match status.seconds_since_last_byte() {
                        Some(s) => writeln!(out, "{name}{{target=\"{t}\"}} {s}"),
                        None => Ok(()),
                    },
                    13 => match status.seconds_since_last_event() {
                        Some(s) => writeln!(out, "{name}{{target=\"{t}\"}} {s}"),
                        None => Ok(()),
                    },
                    14 => {
                        let (cumulative, count, sum) = status.latency.snapshot();
                        for (bound, n) in LATENCY_BUCKETS.iter().zip(cumulative) {
                            let _ =
                                writeln!(out, "{name}_bucket{{target=\"{t}\",le=\"{bound}\"}} {n}");
                        }
                        let _ =
                            writeln!(out, "{name}_bucket{{target=\"{t}\",le=\"+Inf\"}} {count}");
                        let _ = writeln!(out, "{name}_sum{{target=\"{t}\"}} {sum}");
                        writeln!(out, "{name}_count{{target=\"{t}\"}} {count}")
                    }
                    15 => writeln!(
                        out,
                        "{name}{{target=\"{t}\"}} {}",
                        status.generation.load(std::sync::atomic::Ordering::Relaxed)
                    ),
                    _ => writeln!(
                        out,
                        "{name}{{target=\"{t}\"}} {}",
                        status.checkpoint_lag.get()
                    ),
                };
            }
            if out.len() == samples {
                // A family without samples (e.g. no reconnect yet) is left out, as registries do.
                out.truncate(mark);
            }
        }
    }

    #[test]
    fn the_fast_rendering_matches_the_formatted_one() {
        let origin = Instant::now();
        let targets: Vec<Arc<TargetStatus>> = (0..4)
            .map(|i| {
                let status = TargetStatus::new(
                    format!("t-{i}").parse().unwrap(),
                    "http://127.0.0.1/x".to_owned(),
                    "events".to_owned(),
                    origin,
                );
                Arc::new(status)
            })
            .collect();
        let busy = &targets[1];
        busy.events.inc_by(u64::MAX - 1);
        busy.bytes.inc_by(1_234_567);
        busy.acked.inc_by(10);
        busy.queue_depth.set(-3);
        busy.checkpoint_lag.set(i64::MAX);
        busy.paused.set(1);
        busy.reconnect(DisconnectReason::Eof);
        busy.reconnect(DisconnectReason::Eof);
        busy.reconnect(DisconnectReason::SilentDrop);
        busy.touch_byte(origin);
        busy.touch_event(origin);
        for seconds in [0.0004, 0.003, 0.2, 99.0] {
            busy.latency.observe(seconds);
        }
        busy.set_state(State::Streaming);
        targets[2].set_state(State::Backoff);
        let mut fast = String::new();
        write_targets(&mut fast, &targets);
        let mut formatted = String::new();
        write_targets_fmt(&mut formatted, &targets);
        assert_eq!(fast, formatted);
        assert!(fast.contains("sluice_reconnects_total{reason=\"eof\",target=\"t-1\"} 2\n"));
        assert!(fast.contains("sluice_producer_queue_depth{target=\"t-1\"} -3\n"));
    }
}
