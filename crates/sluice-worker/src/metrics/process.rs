//! The worker's process-wide aggregates: totals over every target, without a `target` label,
//! exposed in every `metrics.per_target` mode (a `none` deployment still sees events,
//! deliveries, reconnects and errors).
//!
//! Naming: the aggregate of per-target family `sluice_X` is `sluice_all_X`; counts of targets
//! are `sluice_targets_…`. Every series is always present (zeros included), so an alert on a
//! rate never sees an absent series.
//!
//! What it must NOT do: carry a `target` label, or let a counter go down when a target stops
//! (the sums include the counters of stopped targets, see [`crate::totals`]).

use sluice_client::DisconnectReason;

use super::text::{Kind, header, histogram, push_u64, series};
use crate::status::State;
use crate::totals::Sums;

/// One process-wide family: name, help, type, its label (if any).
pub(crate) struct Aggregate {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub label: Option<&'static str>,
}

const fn aggregate(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    label: Option<&'static str>,
) -> Aggregate {
    Aggregate {
        name,
        help,
        kind,
        label,
    }
}

/// Every aggregate, in output order (the writer below matches on the position).
pub(crate) const AGGREGATES: [Aggregate; 14] = [
    aggregate(
        "sluice_targets_in_state",
        "Running targets in each connection state.",
        Kind::Gauge,
        Some("state"),
    ),
    aggregate(
        "sluice_all_events_received_total",
        "SSE events received and handed to Kafka, all targets (stopped ones included).",
        Kind::Counter,
        None,
    ),
    aggregate(
        "sluice_all_bytes_received_total",
        "Response body bytes received, all targets.",
        Kind::Counter,
        None,
    ),
    aggregate(
        "sluice_all_events_delivered_total",
        "Events Kafka acknowledged, all targets.",
        Kind::Counter,
        None,
    ),
    aggregate(
        "sluice_all_events_filtered_total",
        "Events dropped by the event-type filters, all targets.",
        Kind::Counter,
        None,
    ),
    aggregate(
        "sluice_all_events_duplicate_total",
        "Replayed events dropped after make-before-break switches, all targets.",
        Kind::Counter,
        None,
    ),
    aggregate(
        "sluice_all_reconnects_total",
        "Reconnects by reason, all targets.",
        Kind::Counter,
        Some("reason"),
    ),
    aggregate(
        "sluice_all_delivery_errors_total",
        "Kafka delivery failures (each is retried, never dropped), all targets.",
        Kind::Counter,
        None,
    ),
    aggregate(
        "sluice_all_key_errors_total",
        "Events whose record key could not be read from the payload, all targets.",
        Kind::Counter,
        None,
    ),
    aggregate(
        "sluice_all_checkpoints_written_total",
        "Checkpoints Kafka acknowledged, all targets.",
        Kind::Counter,
        None,
    ),
    aggregate(
        "sluice_targets_paused",
        "Running targets whose upstream reading is paused because Kafka is not keeping up.",
        Kind::Gauge,
        None,
    ),
    aggregate(
        "sluice_all_delivery_latency_seconds",
        "From receipt of an event to Kafka's acknowledgement, all targets.",
        Kind::Histogram,
        None,
    ),
    aggregate(
        "sluice_all_connections_total",
        "Successful connections, all targets (the sum of their connection generations).",
        Kind::Counter,
        None,
    ),
    aggregate(
        "sluice_all_checkpoint_lag_events",
        "Acknowledged events the running targets' last checkpoints do not cover yet: what a \
         restart now would publish again.",
        Kind::Gauge,
        None,
    ),
];

/// Writes every aggregate from `sums`.
pub(crate) fn write_aggregates(out: &mut String, sums: &Sums, bounds: &[String]) {
    for (index, family) in AGGREGATES.iter().enumerate() {
        let name = family.name;
        header(out, name, family.help, family.kind);
        let scalar = |out: &mut String, value: u64| {
            series(out, name, "", &[]);
            push_u64(out, value);
            out.push('\n');
        };
        // One series per value of the family's label.
        let labelled = |out: &mut String, values: &mut dyn Iterator<Item = (&str, u64)>| {
            let label = family.label.unwrap_or_default();
            for (value, n) in values {
                series(out, name, "", &[(label, value)]);
                push_u64(out, n);
                out.push('\n');
            }
        };
        match index {
            0 => labelled(
                out,
                &mut State::ALL.iter().map(|s| s.as_str()).zip(sums.states),
            ),
            1 => scalar(out, sums.events),
            2 => scalar(out, sums.bytes),
            3 => scalar(out, sums.delivered),
            4 => scalar(out, sums.filtered),
            5 => scalar(out, sums.duplicates),
            6 => labelled(
                out,
                &mut DisconnectReason::ALL
                    .iter()
                    .map(|r| r.as_str())
                    .zip(sums.reconnects),
            ),
            7 => scalar(out, sums.delivery_errors),
            8 => scalar(out, sums.key_errors),
            9 => scalar(out, sums.checkpoints),
            10 => scalar(out, sums.paused),
            11 => histogram(
                out,
                name,
                &[],
                bounds,
                (&sums.latency_buckets, sums.latency_count, sums.latency_sum),
            ),
            12 => scalar(out, sums.connections),
            _ => {
                series(out, name, "", &[]);
                out.push_str(itoa::Buffer::new().format(sums.checkpoint_lag));
                out.push('\n');
            }
        }
    }
}
