//! The worker's per-target metric families: which exist, which `metrics.per_target` mode shows
//! them, and how they are written straight from the status rows at scrape time.
//!
//! What it must NOT do: leave a row out of the process-wide sums when its family is hidden (the
//! totals are exposed in every mode), or read a row's value twice in one scrape (a family's lines
//! and its total must agree).

use std::sync::Arc;

use sluice_client::DisconnectReason;
use sluice_config::PerTarget;

use super::text::{Kind, histogram, push_f64_line, push_u64, sample, sample_i64, series};
use crate::status::{State, TargetStatus};
use crate::totals::Sums;

/// One per-target family.
pub(crate) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// The label besides `target`, if any.
    pub label: Option<&'static str>,
    /// Shown in `essential` mode (every family is shown in `all`, none in `none`).
    pub essential: bool,
}

impl Family {
    /// Whether `mode` shows this family.
    pub fn shown(&self, mode: PerTarget) -> bool {
        match mode {
            PerTarget::All => true,
            PerTarget::Essential => self.essential,
            PerTarget::None => false,
        }
    }
}

const fn family(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    label: Option<&'static str>,
    essential: bool,
) -> Family {
    Family {
        name,
        help,
        kind,
        label,
        essential,
    }
}

/// Every per-target family, in output order (the writer below matches on the position).
pub(crate) const FAMILIES: [Family; 17] = [
    family(
        "sluice_target_state",
        "1 for the target's current connection state, 0 for the others.",
        Kind::Gauge,
        Some("state"),
        true,
    ),
    family(
        "sluice_events_received_total",
        "SSE events received and handed to Kafka (after the event-type filter).",
        Kind::Counter,
        None,
        true,
    ),
    family(
        "sluice_bytes_received_total",
        "Response body bytes received.",
        Kind::Counter,
        None,
        false,
    ),
    family(
        "sluice_events_delivered_total",
        "Events Kafka acknowledged.",
        Kind::Counter,
        None,
        true,
    ),
    family(
        "sluice_events_filtered_total",
        "Events dropped by the target's event-type filter.",
        Kind::Counter,
        None,
        false,
    ),
    family(
        "sluice_events_duplicate_total",
        "Replayed events dropped after a make-before-break switch.",
        Kind::Counter,
        None,
        false,
    ),
    family(
        "sluice_reconnects_total",
        "Reconnects by reason.",
        Kind::Counter,
        Some("reason"),
        true,
    ),
    family(
        "sluice_delivery_errors_total",
        "Kafka delivery failures (each is retried, never dropped).",
        Kind::Counter,
        None,
        false,
    ),
    family(
        "sluice_key_errors_total",
        "Events whose record key could not be read from the payload (published keyed by target id).",
        Kind::Counter,
        None,
        false,
    ),
    family(
        "sluice_checkpoints_written_total",
        "Checkpoints Kafka acknowledged (counted when the target next wakes: its next chunk or delivery).",
        Kind::Counter,
        None,
        false,
    ),
    family(
        "sluice_upstream_paused",
        "1 while reading upstream is paused because Kafka is not keeping up.",
        Kind::Gauge,
        None,
        false,
    ),
    family(
        "sluice_producer_queue_depth",
        "Events of the target sent to Kafka and not yet acknowledged.",
        Kind::Gauge,
        None,
        false,
    ),
    family(
        "sluice_seconds_since_last_byte",
        "Seconds since the last byte from upstream (absent before the first).",
        Kind::Gauge,
        None,
        true,
    ),
    family(
        "sluice_seconds_since_last_event",
        "Seconds since the last event from upstream (absent before the first).",
        Kind::Gauge,
        None,
        false,
    ),
    family(
        "sluice_delivery_latency_seconds",
        "From receipt of an event to Kafka's acknowledgement.",
        Kind::Histogram,
        None,
        false,
    ),
    family(
        "sluice_connection_generation",
        "Successful connections of the target so far (the sluice.connection header).",
        Kind::Gauge,
        None,
        false,
    ),
    family(
        "sluice_checkpoint_lag_events",
        "Events Kafka acknowledged that the last written checkpoint does not cover yet.",
        Kind::Gauge,
        None,
        false,
    ),
];

/// Writes the per-target families `mode` shows, straight from the status rows, and adds every
/// row's values to `sums` whatever the mode.
///
/// Lines are appended piece by piece rather than through `write!`: a scrape at 10,000 targets in
/// `all` mode writes 320,000 of them, and the formatting machinery was most of its cost. Only the
/// few float values (seconds, latency sums) still go through `write!`.
pub(crate) fn write_targets(
    out: &mut String,
    targets: &[Arc<TargetStatus>],
    mode: PerTarget,
    sums: &mut Sums,
    bounds: &[String],
) {
    for (index, family) in FAMILIES.iter().enumerate() {
        let show = family.shown(mode);
        let name = family.name;
        let mark = out.len();
        if show {
            super::text::header(out, name, family.help, family.kind);
        }
        let samples = out.len();
        for status in targets {
            let t = status.id.as_str();
            let counter = |total: &mut u64, value: u64, out: &mut String| {
                *total = total.saturating_add(value);
                if show {
                    sample(out, name, t, value);
                }
            };
            match index {
                0 => {
                    let current = status.state();
                    if let Some(i) = State::ALL.iter().position(|s| *s == current) {
                        sums.states[i] += 1;
                    }
                    if show {
                        for state in State::ALL {
                            series(out, name, "", &[("state", state.as_str()), ("target", t)]);
                            out.push(if state == current { '1' } else { '0' });
                            out.push('\n');
                        }
                    }
                }
                1 => counter(&mut sums.events, status.events.get(), out),
                2 => counter(&mut sums.bytes, status.bytes.get(), out),
                3 => counter(&mut sums.delivered, status.acked.get(), out),
                4 => counter(&mut sums.filtered, status.filtered.get(), out),
                5 => counter(&mut sums.duplicates, status.duplicates.get(), out),
                6 => {
                    let counts = status.reconnect_counts();
                    sums.add_reconnects(counts);
                    if show {
                        for (reason, n) in DisconnectReason::ALL.iter().zip(counts) {
                            if n > 0 {
                                series(
                                    out,
                                    name,
                                    "",
                                    &[("reason", reason.as_str()), ("target", t)],
                                );
                                push_u64(out, n);
                                out.push('\n');
                            }
                        }
                    }
                }
                7 => counter(&mut sums.delivery_errors, status.delivery_errors.get(), out),
                8 => counter(&mut sums.key_errors, status.key_errors.get(), out),
                9 => counter(&mut sums.checkpoints, status.checkpoints.get(), out),
                10 => {
                    let paused = status.paused.get();
                    if paused > 0 {
                        sums.paused += 1;
                    }
                    if show {
                        sample_i64(out, name, t, paused);
                    }
                }
                11 => {
                    if show {
                        sample_i64(out, name, t, status.queue_depth.get());
                    }
                }
                12 => {
                    if show && let Some(s) = status.seconds_since_last_byte() {
                        series(out, name, "", &[("target", t)]);
                        push_f64_line(out, s);
                    }
                }
                13 => {
                    if show && let Some(s) = status.seconds_since_last_event() {
                        series(out, name, "", &[("target", t)]);
                        push_f64_line(out, s);
                    }
                }
                14 => {
                    let snapshot = status.latency.snapshot();
                    sums.add_latency(snapshot);
                    if show {
                        let (cumulative, count, sum) = snapshot;
                        histogram(
                            out,
                            name,
                            &[("target", t)],
                            bounds,
                            (&cumulative, count, sum),
                        );
                    }
                }
                15 => counter(
                    &mut sums.connections,
                    status.generation.load(std::sync::atomic::Ordering::Relaxed),
                    out,
                ),
                _ => {
                    let lag = status.checkpoint_lag.get();
                    sums.checkpoint_lag = sums.checkpoint_lag.saturating_add(lag);
                    if show {
                        sample_i64(out, name, t, lag);
                    }
                }
            }
        }
        if out.len() == samples {
            // A family without samples (e.g. no reconnect yet) is left out, as registries do.
            out.truncate(mark);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::status::LATENCY_BUCKETS;
    use tokio::time::Instant;

    /// The straightforward `write!` rendering the fast one must match byte for byte.
    fn write_targets_fmt(out: &mut String, targets: &[Arc<TargetStatus>]) {
        use std::fmt::Write as _;
        for (index, family) in FAMILIES.iter().enumerate() {
            let (name, help, kind) = (family.name, family.help, family.kind.as_str());
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
        let bounds: Vec<String> = LATENCY_BUCKETS.iter().map(f64::to_string).collect();
        let mut fast = String::new();
        write_targets(
            &mut fast,
            &targets,
            PerTarget::All,
            &mut Sums::default(),
            &bounds,
        );
        let mut formatted = String::new();
        write_targets_fmt(&mut formatted, &targets);
        assert_eq!(fast, formatted);
        assert!(fast.contains("sluice_reconnects_total{reason=\"eof\",target=\"t-1\"} 2\n"));
        assert!(fast.contains("sluice_producer_queue_depth{target=\"t-1\"} -3\n"));
    }
}
