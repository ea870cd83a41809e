//! Snapshots larger than one record of the state topic may be (issue 13 item 17): a target of
//! over 100,000 entities (a base state of the simulator's plus filler), whose snapshot is
//! several MiB, on a state topic with the broker's default
//! `max.message.bytes` (about 1 MiB). The aggregator writes it in chunks the broker accepts, is
//! killed, and its successor restores it from those chunks without fetching the base state
//! again, ending at the simulator's truth.
//!
//! Runs on the broker in `SLUICE_TEST_KAFKA` (Apache Kafka under `scripts/test`), else on the
//! mock cluster (whose record limit is assumed, not read).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use rig::{Rig, Worker};
use serde_json::Value;
use sluice_sim::{RunningSim, SimConfig};
use sluice_testkit::TestKafka;
use tokio::net::TcpListener;

/// Entities the base state holds besides the simulator's: its snapshot is several MiB, and
/// stays above 1 MiB compressed (each has 16 pseudo-random hex digits, which lz4 cannot shrink).
const FILLER: usize = 100_000;
/// Deltas the simulator produces before it stops.
const EVENTS: u64 = 2_000;
/// Kafka's default `max.message.bytes` (the state topic is created without overriding it).
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// Filler entity `i`, as the base state serves it. Deltas never touch it (the simulator's
/// keys start with `E`).
fn filler(i: usize) -> Value {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    serde_json::json!({
        "key": format!("F{i:06}"),
        "price": (i % 10_000) as f64 / 100.0,
        "qty": i % 1000,
        "version": 0,
        "tag": format!("{x:016x}"),
    })
}

/// A base-state server on loopback: the simulator's snapshot plus [`FILLER`] entities. Returns
/// its URL and how many times it was asked.
async fn big_base(sim: &RunningSim) -> (String, Arc<AtomicU64>) {
    #[derive(Clone)]
    struct Base {
        snapshot_url: String,
        hits: Arc<AtomicU64>,
    }
    async fn handler(State(base): State<Base>) -> String {
        base.hits.fetch_add(1, Ordering::SeqCst);
        let body = reqwest::get(&base.snapshot_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut snapshot: Value = serde_json::from_str(&body).unwrap();
        let items = snapshot["items"].as_array_mut().expect("items");
        items.extend((0..FILLER).map(filler));
        snapshot.to_string()
    }
    let hits = Arc::new(AtomicU64::new(0));
    let base = Base {
        snapshot_url: sim.snapshot_url(),
        hits: hits.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/snapshot", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/snapshot", get(handler))
        .with_state(base);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

/// The target file's `aggregate:` section, for a base state at `base`.
fn big_target_yaml(base: &str) -> String {
    [
        "aggregate:".to_owned(),
        format!("  base: {{url: \"{base}\", items: /items, key: /key, version: /version}}"),
        "  delta: {key: /key, version: /version}".to_owned(),
        "  strategy: replace".to_owned(),
        "  delete_events: [delete]".to_owned(),
        "  reset_events: [reset]".to_owned(),
    ]
    .join("\n")
}

/// The aggregator's `/state` of `target` equals the simulator's truth plus the filler.
async fn assert_state_is_the_truth(aggregator: &Worker, target: &str, sim: &RunningSim) {
    let truth = sim.snapshot();
    let (code, body) = aggregator
        .get(&format!("/v1/targets/{target}/state"))
        .await
        .expect("state answer");
    assert_eq!(code, 200, "{body:.300}");
    let state: Value = serde_json::from_str(&body).expect("state is json");
    assert_eq!(state["version"].as_u64(), Some(truth.version));
    assert_eq!(state["synced"], Value::Bool(true));
    let entities = state["entities"].as_object().expect("entities");
    assert_eq!(entities.len(), truth.items.len() + FILLER, "entity count");
    for item in &truth.items {
        let expected = serde_json::to_value(item).unwrap();
        assert_eq!(
            entities.get(&item.key),
            Some(&expected),
            "entity {}",
            item.key
        );
    }
    for i in 0..FILLER {
        let expected = filler(i);
        assert_eq!(
            entities.get(&format!("F{i:06}")),
            Some(&expected),
            "filler {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_a_record_is_chunked_and_restored_after_a_kill() {
    let rig = Rig::with_kafka("agg-big", TestKafka::start().expect("test kafka")).await;
    let sim = rig::sim_with(SimConfig {
        entities: 50,
        // 20 s of deltas: the 2 s snapshot rounds write several generations meanwhile.
        rate: 100.0,
        max_events: Some(EVENTS),
        heartbeat: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let (base_url, base_hits) = big_base(&sim).await;
    rig.target("big", &sim.stream_url(), &big_target_yaml(&base_url));
    let worker = rig.start("").await;
    let first = rig
        .start_aggregator("metrics:\n  per_target: all", true)
        .await;
    sim.wait_for_head(EVENTS).await;
    let version = sim.snapshot().version as f64;
    first
        .wait_for("the final version", async |a: &Worker| {
            a.metric("sluice_aggregator_version{target=\"big\"}").await >= version
        })
        .await;
    first
        .wait_for("a snapshot acknowledged by kafka", async |a: &Worker| {
            a.metric("sluice_aggregator_snapshots_written_total{sink=\"kafka\"}")
                .await
                >= 1.0
        })
        .await;
    assert_eq!(
        first
            .metric("sluice_aggregator_snapshot_errors_total{sink=\"kafka\"}")
            .await,
        0.0,
        "kafka refused no snapshot record:\n{}",
        first.log()
    );
    let fetches = base_hits.load(Ordering::SeqCst);
    assert!(fetches >= 1, "the first aggregator fetched the base state");
    let written = first
        .metric("sluice_aggregator_snapshots_written_total{sink=\"kafka\"}")
        .await as usize;
    let log = first.kill().await;
    assert!(
        !log.contains("snapshot not written"),
        "every snapshot record was accepted:\n{log}"
    );

    // What reached the state topic: chunks and manifests, each within the default limit,
    // together far above it; the chunks of older generations tombstoned.
    let is_manifest = |r: &rig::Rec| r.key == "big" && r.value.contains("\"chunks\"");
    let records = rig::read_topic_until(&rig.kafka, &rig.state, |records| {
        records.iter().filter(|r| is_manifest(r)).count() >= written
    })
    .await;
    for record in &records {
        assert!(
            record.value.len() + record.key.len() < DEFAULT_MAX_MESSAGE_BYTES,
            "record {} is {} bytes",
            record.key,
            record.value.len()
        );
    }
    let manifests: Vec<Value> = records
        .iter()
        .filter(|r| is_manifest(r))
        .map(|r| serde_json::from_str(&r.value).expect("manifest is json"))
        .collect();
    // A generation's chunks are tombstoned once the next manifest is acknowledged: every
    // generation but the last two (the kill may fall between a manifest and its tombstones).
    // How many generations there are depends on how many 2 s rounds ran while deltas came
    // (usually several; none are waited for).
    for old in &manifests[..manifests.len().saturating_sub(2)] {
        let generation = old["generation"].as_u64().expect("generation");
        for index in 0..old["chunks"].as_u64().expect("chunks") {
            let key = format!("big#{generation}#{index}");
            let written = records
                .iter()
                .position(|r| r.key == key && !r.value.is_empty());
            let deleted = records
                .iter()
                .rposition(|r| r.key == key && r.value.is_empty());
            assert!(
                written.is_some() && deleted > written,
                "chunk {key} written ({written:?}) then tombstoned ({deleted:?})"
            );
        }
    }
    let manifest = manifests.last().expect("a manifest");
    assert!(
        manifest["bytes"].as_u64() > Some(2 * DEFAULT_MAX_MESSAGE_BYTES as u64),
        "the snapshot is larger than a record: {manifest}"
    );
    let generation = manifest["generation"].as_u64().expect("generation");
    let chunks = records
        .iter()
        .filter(|r| r.key.starts_with(&format!("big#{generation}#")))
        .count();
    assert_eq!(
        Some(chunks as u64),
        manifest["chunks"].as_u64(),
        "every chunk is in the topic"
    );

    let second = rig
        .start_aggregator("metrics:\n  per_target: all", true)
        .await;
    assert!(
        second.log().contains("target restored from its snapshot"),
        "restored:\n{}",
        second.log()
    );
    second
        .wait_for("the final version after the restore", async |a: &Worker| {
            a.metric("sluice_aggregator_version{target=\"big\"}").await >= version
        })
        .await;
    assert_state_is_the_truth(&second, "big", &sim).await;
    assert_eq!(
        base_hits.load(Ordering::SeqCst),
        fetches,
        "the restart restored the chunks instead of fetching the base state"
    );
    assert_eq!(
        second
            .metric("sluice_aggregator_deltas_total{outcome=\"duplicate\",target=\"big\"}")
            .await,
        0.0,
        "replay starts exactly at the snapshot"
    );
    let (exit, log) = second.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    drop(worker);
}
