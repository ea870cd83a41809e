//! `metrics.per_target` end to end: a worker (and an aggregator) started by the real binary in
//! each mode, scraped over HTTP on loopback, exposes exactly the families `sluice metrics` lists
//! for that mode (the list the shipped alerts and dashboard are checked against), with the
//! documented per-target set, and process-wide totals that equal the sums of the per-target
//! series in `all` mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::collections::{BTreeMap, BTreeSet};

use rig::{Rig, Worker, aggregate_yaml, sim};
use serde_json::Value;
use sluice_sim::RunningSim;
use sluice_testkit::prometheus::{Sample, parse_samples};

/// Events the simulator offers (more than a test reads).
const EVENTS: u64 = 1_000_000;
/// Events per second; with `close_after_events=40` the worker reconnects every 200 ms.
const RATE: f64 = 200.0;

/// The per-target families of `essential` in the worker, as the README documents them.
const WORKER_ESSENTIAL: [&str; 5] = [
    "sluice_events_delivered_total",
    "sluice_events_received_total",
    "sluice_reconnects_total",
    "sluice_seconds_since_last_byte",
    "sluice_target_state",
];

/// The per-target families of `essential` in the aggregator, as the README documents them.
const AGGREGATOR_ESSENTIAL: [&str; 5] = [
    "sluice_aggregator_base_fetches_total",
    "sluice_aggregator_deltas_total",
    "sluice_aggregator_resnapshots_total",
    "sluice_aggregator_state_age_seconds",
    "sluice_aggregator_synced",
];

/// One family of `sluice metrics --format json`.
struct Listed {
    per_target: bool,
}

/// `sluice metrics --per-target MODE --format json` of `component`: family name → entry.
fn listed(mode: &str, component: &str) -> BTreeMap<String, Listed> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["metrics", "--per-target", mode, "--format", "json"])
        .output()
        .expect("sluice metrics runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|v| v["component"] == component)
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_owned();
            let per_target = v["per_target"].as_bool().unwrap();
            (name, Listed { per_target })
        })
        .collect()
}

/// The family names of a scrape (its `# TYPE` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// The families with a `target` label in a scrape (a histogram's series by their family).
fn targeted(text: &str) -> BTreeSet<String> {
    let families = families(text);
    parse_samples(text)
        .iter()
        .filter(|s| s.labels.contains_key("target"))
        .map(|s| {
            let name = s.name.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| families.contains(*base))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// The sum of every sample of `name`.
fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// A worker in `mode` over one simulator target that reconnects often; waits until deliveries,
/// reconnects, checkpoints and a last-event age are there (every family has its series then).
async fn streaming_worker(mode: &str) -> (Rig, Worker, RunningSim) {
    let rig = Rig::new(&format!("metrics-{mode}")).await;
    let upstream = sim(EVENTS, RATE).await;
    let url = format!(
        "{}?last_event_id=0&close_after_events=40",
        upstream.stream_url()
    );
    rig.target("t-a", &url, "");
    rig.target("t-b", &url, "");
    let worker = rig.start(&format!("metrics:\n  per_target: {mode}")).await;
    worker
        .wait_for(
            "deliveries, reconnects and checkpoints in the totals",
            async |w| {
                let samples = parse_samples(&w.metrics().await);
                sum(&samples, "sluice_all_events_delivered_total") >= 100.0
                    && sum(&samples, "sluice_all_reconnects_total") >= 4.0
                    && sum(&samples, "sluice_all_checkpoints_written_total") >= 2.0
                    && sum(&samples, "sluice_all_delivery_latency_seconds_count") >= 2.0
            },
        )
        .await;
    (rig, worker, upstream)
}

/// The scrape's families are exactly the listed ones, and its per-target families exactly the
/// listed per-target ones.
fn assert_exposes_the_list(text: &str, list: &BTreeMap<String, Listed>, mode: &str) {
    let listed: BTreeSet<String> = list.keys().cloned().collect();
    assert_eq!(families(text), listed, "{mode}: families\n{text}");
    let per_target: BTreeSet<String> = list
        .iter()
        .filter(|(_, l)| l.per_target)
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(
        targeted(text),
        per_target,
        "{mode}: families with a target label\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_in_essential_mode_exposes_the_essential_set_and_the_totals() {
    let (_rig, worker, _sim) = streaming_worker("essential").await;
    let text = worker.metrics().await;
    let list = listed("essential", "worker");
    assert_exposes_the_list(&text, &list, "essential");
    assert_eq!(
        targeted(&text),
        WORKER_ESSENTIAL.map(str::to_owned).into(),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_a_metrics_section_is_in_essential_mode() {
    let rig = Rig::new("metrics-default").await;
    let upstream = sim(EVENTS, RATE).await;
    rig.target("t-a", &upstream.stream_url(), "");
    let worker = rig.start("").await;
    worker
        .wait_for("a last-byte age", async |w| {
            w.metrics()
                .await
                .contains("sluice_seconds_since_last_byte{")
        })
        .await;
    let text = worker.metrics().await;
    assert!(
        targeted(&text).is_subset(&WORKER_ESSENTIAL.map(str::to_owned).into()),
        "{text}"
    );
    assert!(targeted(&text).contains("sluice_target_state"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_in_none_mode_has_no_target_label_and_every_total() {
    let (_rig, worker, _sim) = streaming_worker("none").await;
    let text = worker.metrics().await;
    assert_exposes_the_list(&text, &listed("none", "worker"), "none");
    assert!(!text.contains("target=\""), "{text}");
    let samples = parse_samples(&text);
    for name in [
        "sluice_all_events_received_total",
        "sluice_all_events_delivered_total",
        "sluice_all_reconnects_total",
        "sluice_all_delivery_errors_total",
    ] {
        assert!(samples.iter().any(|s| s.name == name), "{name}:\n{text}");
    }
    assert_eq!(sum(&samples, "sluice_targets_in_state"), 2.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_in_all_mode_has_every_family_and_totals_equal_to_the_per_target_sums() {
    let (_rig, worker, _sim) = streaming_worker("all").await;
    // The last-event age appears with the first event of each target.
    worker
        .wait_for("a last-event age per target", async |w| {
            let samples = parse_samples(&w.metrics().await);
            samples
                .iter()
                .filter(|s| s.name == "sluice_seconds_since_last_event")
                .count()
                == 2
        })
        .await;
    let text = worker.metrics().await;
    let list = listed("all", "worker");
    assert_exposes_the_list(&text, &list, "all");
    assert_eq!(list.values().filter(|l| l.per_target).count(), 17);
    // One scrape reads each value once for its series and its total: they agree exactly.
    let samples = parse_samples(&text);
    for (per_target, total) in [
        (
            "sluice_events_received_total",
            "sluice_all_events_received_total",
        ),
        (
            "sluice_events_delivered_total",
            "sluice_all_events_delivered_total",
        ),
        ("sluice_reconnects_total", "sluice_all_reconnects_total"),
        (
            "sluice_delivery_errors_total",
            "sluice_all_delivery_errors_total",
        ),
        (
            "sluice_bytes_received_total",
            "sluice_all_bytes_received_total",
        ),
        (
            "sluice_checkpoints_written_total",
            "sluice_all_checkpoints_written_total",
        ),
        ("sluice_key_errors_total", "sluice_all_key_errors_total"),
        (
            "sluice_events_filtered_total",
            "sluice_all_events_filtered_total",
        ),
        (
            "sluice_events_duplicate_total",
            "sluice_all_events_duplicate_total",
        ),
        (
            "sluice_connection_generation",
            "sluice_all_connections_total",
        ),
        ("sluice_target_state", "sluice_targets_in_state"),
        (
            "sluice_delivery_latency_seconds_count",
            "sluice_all_delivery_latency_seconds_count",
        ),
    ] {
        assert_eq!(
            sum(&samples, per_target),
            sum(&samples, total),
            "{per_target} vs {total}:\n{text}"
        );
    }
    assert!(sum(&samples, "sluice_all_events_delivered_total") >= 100.0);
    // By reason, too.
    let reason = "eof";
    let of = |name: &str| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name && s.labels.get("reason").is_some_and(|r| r == reason))
            .map(|s| s.value)
            .sum()
    };
    assert!(of("sluice_all_reconnects_total") > 0.0, "{text}");
    assert_eq!(
        of("sluice_reconnects_total"),
        of("sluice_all_reconnects_total")
    );
}

/// A worker and an aggregator in `mode` over one aggregated simulator target, the aggregator
/// synced.
async fn synced_aggregator(mode: &str) -> (Rig, Worker, Worker, RunningSim) {
    let rig = Rig::new(&format!("metrics-agg-{mode}")).await;
    let upstream = sim(EVENTS, 50.0).await;
    rig.target(
        "t-agg",
        &upstream.stream_url(),
        &aggregate_yaml(&upstream.snapshot_url()),
    );
    let section = format!("metrics:\n  per_target: {mode}");
    let worker = rig.start(&section).await;
    // A delivery too, so that its per-target families have series.
    let aggregator_section = format!(
        "{section}\ndeliveries:\n  - targets: all\n    every: 200ms\n    destination: {{ dir: deliveries }}\n"
    );
    let aggregator = rig.start_aggregator(&aggregator_section, true).await;
    aggregator
        .wait_for("applied deltas and a delivery in the totals", async |a| {
            let samples = parse_samples(&a.metrics().await);
            samples.iter().any(|s| {
                s.name == "sluice_aggregator_all_deltas_total"
                    && s.labels.get("outcome").is_some_and(|o| o == "applied")
                    && s.value >= 10.0
            }) && samples.iter().any(|s| {
                s.name == "sluice_aggregator_all_deliveries_total"
                    && s.labels.get("result").is_some_and(|r| r == "ok")
                    && s.value >= 1.0
            }) && sum(&samples, "sluice_aggregator_targets_synced") == 1.0
        })
        .await;
    (rig, worker, aggregator, upstream)
}

/// The aggregator's scrape: only listed families (some process-wide ones appear only once they
/// count something), and exactly the listed per-target ones.
fn assert_aggregator_exposes_the_list(text: &str, mode: &str) -> BTreeSet<String> {
    let list = listed(mode, "aggregator");
    let listed_names: BTreeSet<String> = list.keys().cloned().collect();
    let shown = families(text);
    assert!(
        shown.is_subset(&listed_names),
        "{mode}: not listed: {:?}\n{text}",
        shown.difference(&listed_names).collect::<Vec<_>>()
    );
    for always in [
        "sluice_aggregator_all_deltas_total",
        "sluice_aggregator_all_resnapshots_total",
        "sluice_aggregator_all_base_fetches_total",
        "sluice_aggregator_all_malformed_deltas_total",
        "sluice_aggregator_targets",
        "sluice_aggregator_targets_synced",
    ] {
        assert!(shown.contains(always), "{mode}: {always} missing\n{text}");
    }
    let per_target: BTreeSet<String> = list
        .iter()
        .filter(|(_, l)| l.per_target)
        .map(|(n, _)| n.clone())
        .collect();
    let targeted = targeted(text);
    assert_eq!(targeted, per_target, "{mode}\n{text}");
    targeted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_in_essential_mode_exposes_the_essential_set_and_the_totals() {
    let (_rig, _worker, aggregator, _sim) = synced_aggregator("essential").await;
    let text = aggregator.metrics().await;
    let targeted = assert_aggregator_exposes_the_list(&text, "essential");
    assert_eq!(targeted, AGGREGATOR_ESSENTIAL.map(str::to_owned).into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_in_none_mode_has_no_target_label() {
    let (_rig, _worker, aggregator, _sim) = synced_aggregator("none").await;
    let text = aggregator.metrics().await;
    assert_aggregator_exposes_the_list(&text, "none");
    assert!(!text.contains("target=\""), "{text}");
}
