//! End to end: simulator → `sluice worker` → Kafka → `sluice aggregator`, every process real,
//! every hop over TCP. The aggregator's state must equal the simulator's `GET /v1/snapshot`
//! exactly (same entities, same values, same version) under faults, base-state races,
//! restarts and a split across two aggregators.
//!
//! Kafka is the mock cluster, or the shared Apache Kafka in `SLUICE_TEST_KAFKA` under
//! `scripts/test`; the lost-session test freezes a broker of its own (`TestKafka::private`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use rig::{Rig, Worker, aggregate_yaml, assert_converges, produce_delta, state_of, truth};
use serde_json::Value;
use sluice_sim::{QueuedFaults, RawParams, RunningSim, Scalar, SimConfig};
use sluice_testkit::free_port;
use sluice_testkit::{Outage, TestKafka};
use tokio::net::TcpListener;

fn sim_config(entities: usize, rate: f64, events: u64) -> SimConfig {
    SimConfig {
        entities,
        rate,
        max_events: Some(events),
        heartbeat: Duration::from_millis(100),
        ..SimConfig::default()
    }
}

/// The test Kafka, as for the worker tests: the broker named by `SLUICE_TEST_KAFKA` (Apache
/// Kafka in `scripts/test` and CI), else librdkafka's mock cluster.
fn kafka() -> TestKafka {
    TestKafka::start().expect("test kafka")
}

async fn rig(name: &str) -> Rig {
    Rig::with_kafka(name, kafka()).await
}

fn queue(sim: &RunningSim, faults: RawParams) {
    sim.queue_faults(QueuedFaults { count: 1, faults })
        .expect("valid faults");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_equals_the_simulator_after_drops_stalls_replays_and_a_reset() {
    let rig = rig("agg-faults").await;
    let sim = rig::sim_with(SimConfig {
        history: 300,
        ..sim_config(40, 500.0, 8_000)
    })
    .await;
    // Successive connections: a clean close and a reset (replayed from Last-Event-ID), a
    // malformed event, then a stall long enough (idle timeout 1.5 s at 500 events/s) that the
    // Last-Event-ID falls out of the 300-event history: the upstream answers `event: reset`.
    queue(
        &sim,
        RawParams {
            close_after_events: Some(Scalar::Num(600)),
            ..RawParams::default()
        },
    );
    queue(
        &sim,
        RawParams {
            reset_after_events: Some(Scalar::Num(600)),
            ..RawParams::default()
        },
    );
    queue(
        &sim,
        RawParams {
            malformed_after_events: Some(Scalar::Num(100)),
            close_after_events: Some(Scalar::Num(400)),
            ..RawParams::default()
        },
    );
    queue(
        &sim,
        RawParams {
            stall_after_events: Some(Scalar::Num(400)),
            ..RawParams::default()
        },
    );
    rig.target(
        "prices",
        &sim.stream_url(),
        &format!(
            "idle_timeout: 1500ms\n{}",
            aggregate_yaml(&sim.snapshot_url())
        ),
    );
    // The aggregator first, so it sees every fault the worker goes through.
    let aggregator = rig.start_aggregator("", true).await;
    let worker = rig.start("").await;

    sim.wait_for_head(8_000).await;
    assert_converges(&aggregator, "prices", &sim).await;

    let metrics = aggregator.metrics().await;
    let value = |series: &str| sluice_testkit::metric_value(&metrics, series);
    assert!(
        value("sluice_aggregator_resnapshots_total{reason=\"reset_event\",target=\"prices\"}")
            >= 1.0,
        "the too-old Last-Event-ID forced a fresh base state:\n{metrics}"
    );
    assert!(
        value("sluice_aggregator_deltas_total{outcome=\"malformed\",target=\"prices\"}") >= 1.0,
        "the malformed event was counted:\n{metrics}"
    );
    assert!(
        value("sluice_aggregator_deltas_total{outcome=\"applied\",target=\"prices\"}") > 1000.0
    );
    assert_eq!(value("sluice_aggregator_synced{target=\"prices\"}"), 1.0);
    assert!(
        aggregator.log().contains("malformed delta skipped"),
        "malformed delta logged"
    );

    // The malformed record went to the dead-letter topic with the reason and its source.
    let dead = rig::read_topic_until(&rig.kafka, &rig.dead_letter, |r| !r.is_empty()).await;
    assert!(
        dead[0].header("sluice.error").contains("json"),
        "{:?}",
        dead[0].headers
    );
    assert!(dead[0].header("sluice.source").starts_with(&rig.events));
    assert_eq!(dead[0].key, "prices");

    let (exit, log) = aggregator.terminate().await;
    assert!(
        exit.success(),
        "aggregator exits 0 on SIGTERM: {exit:?}\n{log}"
    );
    drop(worker);
}

/// A REST front for the simulator's snapshot that makes the base-state race happen every time,
/// driven by signals: it waits until the aggregator has buffered deltas (they arrived before the
/// snapshot is taken), takes the snapshot, waits until more deltas newer than the snapshot were
/// buffered (they arrived while the fetch was in flight), then answers; later deltas arrive after
/// the fetch. Returns its URL, the versions it served and where to put the aggregator's address.
async fn racing_snapshot_front(
    sim: &RunningSim,
) -> (
    String,
    tokio::sync::watch::Receiver<Vec<u64>>,
    Arc<OnceLock<String>>,
) {
    #[derive(Clone)]
    struct Front {
        snapshot_url: String,
        aggregator: Arc<OnceLock<String>>,
        served: Arc<tokio::sync::watch::Sender<Vec<u64>>>,
    }
    async fn buffered(front: &Front) -> f64 {
        let Some(base) = front.aggregator.get() else {
            return 0.0;
        };
        let Ok(response) = reqwest::get(format!("{base}/metrics")).await else {
            return 0.0;
        };
        let text = response.text().await.unwrap_or_default();
        sluice_testkit::metric_value(
            &text,
            "sluice_aggregator_deltas_total{outcome=\"buffered\",target=\"race\"}",
        )
    }
    async fn wait_buffered_above(front: &Front, n: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + rig::LIMIT;
        loop {
            let b = buffered(front).await;
            if b > n {
                return b;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "aggregator never buffered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    async fn handler(State(front): State<Front>) -> String {
        let before = wait_buffered_above(&front, 0.0).await;
        let body = reqwest::get(&front.snapshot_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let version = serde_json::from_str::<Value>(&body).unwrap()["version"]
            .as_u64()
            .unwrap();
        front.served.send_modify(|v| v.push(version));
        wait_buffered_above(&front, before).await;
        body
    }
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    let aggregator = Arc::new(OnceLock::new());
    let front = Front {
        snapshot_url: sim.snapshot_url(),
        aggregator: aggregator.clone(),
        served: Arc::new(tx),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/snapshot", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/snapshot", get(handler))
        .with_state(front);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx, aggregator)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_before_during_and_after_the_base_fetch_apply_exactly_once() {
    let rig = rig("agg-race").await;
    let sim = rig::sim_with(sim_config(30, 400.0, 3_000)).await;
    let (base_url, served, aggregator_url) = racing_snapshot_front(&sim).await;
    rig.target("race", &sim.stream_url(), &aggregate_yaml(&base_url));
    let worker = rig.start("").await;
    // The worker's first record (its connection resumed from nothing) is in Kafka before the
    // aggregator pins its start offset, so it does not ask for a second base state.
    worker
        .wait_for("a delivered event", async |w: &Worker| {
            w.metric("sluice_events_delivered_total{target=\"race\"}")
                .await
                > 0.0
        })
        .await;
    let aggregator = rig.start_aggregator("", false).await;
    aggregator_url.set(aggregator.base().to_owned()).unwrap();

    sim.wait_for_head(3_000).await;
    assert_converges(&aggregator, "race", &sim).await;

    let versions = served.borrow().clone();
    assert_eq!(versions.len(), 1, "one base fetch: {versions:?}");
    let base = versions[0];
    let metrics = aggregator.metrics().await;
    let value = |outcome: &str| {
        sluice_testkit::metric_value(
            &metrics,
            &format!("sluice_aggregator_deltas_total{{outcome=\"{outcome}\",target=\"race\"}}"),
        ) as u64
    };
    // Every delta after the base version applied once; none at or below it.
    assert_eq!(
        value("applied"),
        3_000 - base,
        "applied = deltas after the base\n{metrics}"
    );
    assert!(
        value("buffered") > 0,
        "deltas arrived while the fetch was in flight"
    );
    assert!(
        value("stale") > 0,
        "buffered deltas at or below the base version were dropped"
    );
    assert_eq!(value("duplicate"), 0);
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_aggregator_resumes_from_its_snapshot_without_refetching() {
    let rig = rig("agg-restart").await;
    let sim = rig::sim_with(sim_config(30, 300.0, 4_000)).await;
    rig.target(
        "restart",
        &sim.stream_url(),
        &aggregate_yaml(&sim.snapshot_url()),
    );
    let worker = rig.start("").await;
    let first = rig.start_aggregator("", true).await;
    // Let it apply deltas and write a snapshot or two (every 1 s), then kill it outright.
    first
        .wait_for("a snapshot in kafka", async |a: &Worker| {
            a.metric("sluice_aggregator_snapshots_written_total{sink=\"kafka\"}")
                .await
                >= 2.0
        })
        .await;
    // (The first run may fetch twice: the worker's first connection resumes from nothing, which
    // the aggregator must treat as a possible gap.)
    let fetches_before = sim.snapshot_requests();
    assert!(fetches_before >= 1, "the first run fetched the base state");
    let (exit, log) = first.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");

    let second = rig.start_aggregator("", true).await;
    assert!(
        second.log().contains("target restored from its snapshot"),
        "restored:\n{}",
        second.log()
    );
    sim.wait_for_head(4_000).await;
    assert_converges(&second, "restart", &sim).await;
    assert_eq!(
        sim.snapshot_requests(),
        fetches_before,
        "the restart did not fetch the base state again"
    );
    assert_eq!(
        second
            .metric("sluice_aggregator_deltas_total{outcome=\"duplicate\",target=\"restart\"}")
            .await,
        0.0,
        "nothing applied twice: replay starts exactly at the snapshot"
    );
    let (exit, log) = second.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    // The final snapshot is also a file (written whole: temp file + rename), at the final state.
    let file = std::fs::read_to_string(rig.dir.join("snapshots").join("restart.json"))
        .expect("snapshot file");
    let snapshot: Value = serde_json::from_str(&file).expect("snapshot file is json");
    assert_eq!(snapshot["target"], "restart");
    assert_eq!(snapshot["state"]["version"], 4_000);
    assert_eq!(
        snapshot["state"]["entities"].as_object().map(|e| e.len()),
        Some(truth(&sim).1.len())
    );
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_aggregators_split_the_targets_and_together_hold_the_truth() {
    let rig = Rig::with_partitions("agg-split", kafka(), 4).await;
    // One target per partition, so each aggregator of two gets some.
    let ids = rig::one_target_per_partition(4);
    let mut sims = Vec::new();
    for id in &ids {
        let sim = rig::sim_with(sim_config(20, 150.0, 2_400)).await;
        rig.target(id, &sim.stream_url(), &aggregate_yaml(&sim.snapshot_url()));
        sims.push((id.clone(), sim));
    }
    let worker = rig.start("").await;
    let a = rig.start_aggregator("", true).await;
    let b = rig.start_aggregator("", false).await;
    let owned = async |agg: &Worker| -> Vec<String> {
        let (_, body) = agg.get("/v1/targets").await.expect("targets");
        let list: Value = serde_json::from_str(&body).expect("json");
        list["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["target"].as_str().unwrap().to_owned())
            .collect()
    };
    b.wait_for("the group to split the targets", async |b: &Worker| {
        !owned(b).await.is_empty() && b.get("/readyz").await.is_some_and(|(c, _)| c == 200)
    })
    .await;
    a.wait_ready().await;

    for (_, sim) in &sims {
        sim.wait_for_head(2_400).await;
    }
    let (in_a, in_b) = (owned(&a).await, owned(&b).await);
    assert!(
        !in_a.is_empty() && !in_b.is_empty(),
        "both own targets: {in_a:?} {in_b:?}"
    );
    assert!(
        in_a.iter().all(|t| !in_b.contains(t)),
        "each target has one owner: {in_a:?} {in_b:?}"
    );
    for (id, sim) in &sims {
        let owner = if in_a.contains(id) { &a } else { &b };
        assert!(in_a.contains(id) || in_b.contains(id), "{id} is owned");
        assert_converges(owner, id, sim).await;
        let other = if in_a.contains(id) { &b } else { &a };
        // The other one does not serve it: it sends the client to the owner.
        let (code, body) = other.get(&format!("/v1/targets/{id}/state")).await.unwrap();
        assert_eq!(
            code, 307,
            "{id} is not served by the aggregator that does not own it: {body}"
        );
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["owner"], owner.base(), "{id}");
    }
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_stream_starts_with_the_state_and_resumes_from_last_event_id() {
    let rig = rig("agg-stream").await;
    let sim = rig::sim_with(sim_config(10, 100.0, 1_500)).await;
    rig.target("s", &sim.stream_url(), &aggregate_yaml(&sim.snapshot_url()));
    let aggregator = rig.start_aggregator("", true).await;
    let worker = rig.start("").await;
    // Past the worker's first record (a generation that resumed from nothing: a fresh base).
    aggregator
        .wait_for("deltas applied", async |a: &Worker| {
            a.metric("sluice_aggregator_deltas_total{outcome=\"applied\",target=\"s\"}")
                .await
                > 50.0
        })
        .await;
    let url = format!("{}/v1/targets/s/stream", aggregator.base());

    // First event: the whole state; then one event per changed entity, ids increasing.
    let mut first = sluice_client::EventSource::new(
        sluice_client::Client::new(url.parse().unwrap(), Default::default()).unwrap(),
        Default::default(),
    );
    let mut events = Vec::new();
    while events.len() < 20 {
        if let Some(sluice_client::SourceItem::Item(sluice_sse::Item::Event(event))) =
            first.next().await.unwrap()
            && event.event.as_str() != "up-to-date"
        {
            events.push(event);
        }
    }
    assert_eq!(events[0].event.as_str(), "state");
    let state: Value = serde_json::from_str(events[0].data.as_str()).unwrap();
    assert!(state["entities"].as_object().is_some_and(|e| !e.is_empty()));
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e.id.as_str().parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive ids: {ids:?}"
    );
    for event in &events[1..] {
        assert!(
            matches!(event.event.as_str(), "upsert" | "delete"),
            "{}",
            event.event.as_str()
        );
        let change: Value = serde_json::from_str(event.data.as_str()).unwrap();
        assert!(change["key"].is_string());
    }

    // What the first client knows after its 10th event: the state plus nine changes.
    let apply = rig::apply_change;
    let mut known: BTreeMap<String, Value> = state["entities"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for event in &events[1..10] {
        apply(&mut known, event);
    }
    let resume_from = ids[9];

    // Once the feed has ended and the aggregator holds the truth, a client resuming from that
    // id gets, not the whole state again, the current value of every entity changed since:
    // applied to what it knew, that is the truth.
    sim.wait_for_head(1_500).await;
    assert_converges(&aggregator, "s", &sim).await;
    let (_, body) = aggregator.get("/v1/targets/s/state").await.unwrap();
    let final_seq = serde_json::from_str::<Value>(&body).unwrap()["change_seq"]
        .as_u64()
        .unwrap();
    let client = sluice_client::Client::new(url.parse().unwrap(), Default::default()).unwrap();
    let mut connection = client.connect(&resume_from.to_string()).await.unwrap();
    let mut parser = sluice_sse::Parser::new(sluice_sse::Limits::default());
    let mut resumed = Vec::new();
    while resumed
        .last()
        .is_none_or(|e: &sluice_sse::Event| e.id.as_str() != final_seq.to_string())
    {
        let chunk = connection.next_chunk().await.unwrap().expect("stream open");
        parser.push(&chunk);
        while let Some(item) = parser.next_item().unwrap() {
            if let sluice_sse::Item::Event(event) = item
                && event.event.as_str() != "up-to-date"
            {
                resumed.push(event);
            }
        }
    }
    let resumed_ids: Vec<u64> = resumed
        .iter()
        .map(|e| e.id.as_str().parse().unwrap())
        .collect();
    assert!(
        resumed_ids.windows(2).all(|w| w[0] < w[1]) && resumed_ids[0] > resume_from,
        "ids after {resume_from}, increasing: {resumed_ids:?}"
    );
    for event in &resumed {
        apply(&mut known, event);
    }
    assert_eq!(known, truth(&sim).1, "resumed client holds the truth");
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregator_refuses_invalid_config_with_the_validate_messages() {
    let rig = rig("agg-invalid").await;
    let port = free_port().expect("a free loopback port");
    rig.target(
        "bad",
        "http://127.0.0.1:1/v1/stream",
        "aggregate:\n  strategy: sideways\n",
    );
    rig.worker_yaml(port, "");
    let config = rig.aggregator_yaml(port, "");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["aggregator", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid configuration, not starting"),
        "{stderr}"
    );
    assert!(stderr.contains("aggregate.strategy"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_that_loses_its_group_session_rejoins_and_converges() {
    // A broker of the test's own (a private Apache Kafka under scripts/test, the mock
    // otherwise): the test freezes it past the session timeout and thaws it, which must not
    // touch the broker the tests beside it share.
    let rig = Rig::with_kafka("agg-lost", TestKafka::private().expect("a private broker")).await;
    let sim = rig::sim_with(sim_config(20, 200.0, 5_000)).await;
    rig.target(
        "lost",
        &sim.stream_url(),
        &aggregate_yaml(&sim.snapshot_url()),
    );
    let aggregator = rig.start_aggregator("", true).await;
    let worker = rig.start("").await;
    aggregator
        .wait_for(
            "deltas applied and a snapshot written",
            async |a: &Worker| {
                a.metric("sluice_aggregator_deltas_total{outcome=\"applied\",target=\"lost\"}")
                    .await
                    > 100.0
                    && a.metric("sluice_aggregator_snapshots_written_total{sink=\"kafka\"}")
                        .await
                        >= 1.0
            },
        )
        .await;

    // The broker hangs (SIGSTOP; every mock broker down) past the session timeout: the
    // aggregator gives its assignment up.
    rig.kafka
        .broker_down(Outage::Pause)
        .await
        .expect("broker down");
    let paused = tokio::time::Instant::now();
    aggregator
        .wait_for("the assignment to be lost", async |a: &Worker| {
            a.log().contains("partitions lost")
        })
        .await;
    // It gives the partitions up within about the session timeout (6 s): a snapshot round
    // waiting for acknowledgements that cannot come must not hold the loop (it held it for
    // 30 s, serving partitions the group had already given away, before the fix).
    let lost_after = paused.elapsed();
    assert!(
        lost_after < Duration::from_secs(20),
        "the lost assignment was handled {lost_after:?} after the broker hung:\n{}",
        aggregator.log()
    );
    let (code, _) = aggregator.get("/readyz").await.expect("readyz answers");
    assert_eq!(code, 503, "not ready without an assignment");
    rig.kafka.broker_up(Outage::Pause).await.expect("broker up");

    // It rejoins, takes the partition back from its last snapshot, and catches up exactly.
    sim.wait_for_head(5_000).await;
    assert_converges(&aggregator, "lost", &sim).await;
    let log = aggregator.log();
    let lost_at = log.find("partitions lost").expect("lost");
    assert!(
        log[lost_at..].contains("target restored from its snapshot"),
        "restored after rejoining:\n{log}"
    );
    aggregator.wait_ready().await;
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_aggregator_authenticate_with_sasl_from_properties_and_a_secret_file() {
    // A user's security settings, as for a managed Kafka: SASL_SSL with SCRAM-SHA-256 and the
    // broker's CA in kafka.properties, the password in kafka.secret_properties. Every client of both processes must carry them: the worker's
    // producer and checkpoint reader, the aggregator's consumer, producer, admin client and the
    // state reader a restarted aggregator restores from.
    let kafka = kafka();
    let Some(sasl) = kafka.sasl() else {
        sluice_testkit::skip_or_fail(
            "worker_and_aggregator_authenticate_with_sasl_from_properties_and_a_secret_file",
            "needs the SASL listener of a broker scripts/kafka started (run scripts/test)",
        );
        return;
    };
    let sasl = sasl.expect("the SASL listener files are readable");
    let password = sasl.password.clone();
    let rig = Rig::with_sasl("agg-sasl", kafka, sasl).await;
    let sim = rig::sim_with(sim_config(25, 300.0, 3_000)).await;
    rig.target(
        "sasl",
        &sim.stream_url(),
        &aggregate_yaml(&sim.snapshot_url()),
    );
    let worker = rig.start("").await;
    let first = rig.start_aggregator("", true).await;
    first
        .wait_for("a snapshot in kafka", async |a: &Worker| {
            a.metric("sluice_aggregator_snapshots_written_total{sink=\"kafka\"}")
                .await
                >= 1.0
        })
        .await;
    let (exit, first_log) = first.terminate().await;
    assert!(exit.success(), "{exit:?}\n{first_log}");

    let second = rig.start_aggregator("", true).await;
    assert!(
        second.log().contains("target restored from its snapshot"),
        "the state reader authenticated and restored:\n{}",
        second.log()
    );
    sim.wait_for_head(3_000).await;
    assert_converges(&second, "sasl", &sim).await;

    // The password is in no log, metric or status page.
    let mut seen = vec![
        first_log,
        second.log(),
        worker.log(),
        second.metrics().await,
    ];
    seen.push(worker.metrics().await);
    seen.push(worker.get("/status").await.expect("status").1);
    for text in &seen {
        assert!(!text.contains(&password), "the SASL password leaked");
    }
    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_that_asks_for_a_fresh_base_state_is_counted_as_resnapshot_not_buffered() {
    let rig = rig("agg-resnap").await;
    let sim = rig::sim_with(sim_config(10, 200.0, 3_000)).await;
    rig.target(
        "resnap",
        &sim.stream_url(),
        &aggregate_yaml(&sim.snapshot_url()),
    );
    // The aggregator first: it loads its initial base state, then sees the worker's first
    // record, whose connection resumed from nothing (a possible gap): one re-snapshot.
    let aggregator = rig.start_aggregator("", true).await;
    let worker = rig.start("").await;
    aggregator
        .wait_for("the worker's first record", async |a: &Worker| {
            a.metric("sluice_aggregator_resnapshots_total{reason=\"generation\",target=\"resnap\"}")
                .await
                >= 1.0
        })
        .await;
    sim.wait_for_head(3_000).await;
    assert_converges(&aggregator, "resnap", &sim).await;
    let metrics = aggregator.metrics().await;
    let value = |series: &str| sluice_testkit::metric_value(&metrics, series);
    assert_eq!(
        value("sluice_aggregator_resnapshots_total{reason=\"generation\",target=\"resnap\"}"),
        1.0,
        "the first connection did not resume:\n{metrics}"
    );
    assert_eq!(
        value("sluice_aggregator_deltas_total{outcome=\"resnapshot\",target=\"resnap\"}"),
        1.0,
        "the delta that asked for the fresh base state is counted as such:\n{metrics}"
    );
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_targets_stream_and_base_fetch_go_through_the_same_proxy_member() {
    use sluice_testkit::proxies::{Tinyproxy, TinyproxyOptions};
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let Some(proxy) = Tinyproxy::start_or_skip(TinyproxyOptions::default()) else {
            return;
        };
        proxies.push(proxy);
    }
    let rig = rig("agg-pool").await;
    let pools = format!(
        "proxy_pools:\n  shared:\n{}",
        proxies
            .iter()
            .map(|p| format!("    - url: {}\n", p.url()))
            .collect::<String>()
    );
    // Targets whose home members cover the pool, so a stream and a fetch that chose members
    // differently would show.
    let mut ids: BTreeMap<usize, String> = BTreeMap::new();
    for n in 0..1_000 {
        let id = format!("pooled{n}");
        ids.entry(sluice_publish::pool_home(&id, proxies.len()))
            .or_insert(id);
        if ids.len() == proxies.len() {
            break;
        }
    }
    assert!(ids.len() >= 2, "ids with different home members: {ids:?}");
    let mut sims = Vec::new();
    for id in ids.values() {
        let sim = rig::sim_with(sim_config(5, 100.0, 200)).await;
        rig.target(
            id,
            &sim.stream_url(),
            &format!(
                "proxy: {{pool: shared}}\n{}",
                aggregate_yaml(&sim.snapshot_url())
            ),
        );
        sims.push((id.clone(), sim));
    }
    let worker = rig.start(&pools).await;
    let aggregator = rig.start_aggregator("", true).await;
    for (id, sim) in &sims {
        sim.wait_for_head(200).await;
        assert_converges(&aggregator, id, sim).await;
    }
    let logs: Vec<String> = proxies.iter().map(Tinyproxy::log).collect();
    for (id, sim) in &sims {
        let streamed: Vec<usize> = (0..logs.len())
            .filter(|&n| logs[n].contains(&sim.stream_url()))
            .collect();
        let fetched: Vec<usize> = (0..logs.len())
            .filter(|&n| logs[n].contains(&sim.snapshot_url()))
            .collect();
        assert_eq!(
            streamed.len(),
            1,
            "{id}: the stream went through one member: {streamed:?}\n{logs:#?}"
        );
        assert_eq!(
            fetched, streamed,
            "{id}: the base fetch went through the stream's member\n{logs:#?}"
        );
    }
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregator_refuses_to_start_when_the_events_topic_was_repartitioned() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let rig = rig("agg-repartition").await;
    let sim = rig::sim_with(sim_config(5, 200.0, 300)).await;
    rig.target(
        "moved",
        &sim.stream_url(),
        &aggregate_yaml(&sim.snapshot_url()),
    );
    let worker = rig.start("").await;
    let first = rig.start_aggregator("", true).await;
    sim.wait_for_head(300).await;
    assert_converges(&first, "moved", &sim).await;
    let (exit, log) = first.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    drop(worker);

    // The snapshots say what they were built for.
    let records = rig::read_topic_until(&rig.kafka, &rig.state, |r| !r.is_empty()).await;
    let last = records.last().expect("a snapshot record");
    let mut snapshot: Value = serde_json::from_str(&last.value).expect("snapshot is json");
    assert_eq!(snapshot["partitions"], 1, "{snapshot}");

    // The events topic now has 3 partitions: on a real broker it gets them (CreatePartitions);
    // the mock cluster cannot repartition a topic, so there the newest snapshot is written
    // again as built for 3 partitions of a topic that has 1.
    let (recorded, current) = if rig.kafka.is_mock() {
        snapshot["partitions"] = 3.into();
        let producer: FutureProducer = rig.kafka.producer_config().create().unwrap();
        let payload = snapshot.to_string();
        producer
            .send(
                FutureRecord::to(&rig.state).key("moved").payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        (3, 1)
    } else {
        use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> =
            rig.kafka.producer_config().create().unwrap();
        let results = admin
            .create_partitions(&[NewPartitions::new(&rig.events, 3)], &AdminOptions::new())
            .await
            .unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        (1, 3)
    };

    let port = free_port().expect("a free port");
    let config = rig.aggregator_yaml(port, "");
    let output = tokio::time::timeout(
        rig::LIMIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["aggregator", "--config"])
            .arg(&config)
            .output(),
    )
    .await
    .expect("the aggregator exits")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let expected = format!(
        "events topic {} has {current} partitions, but the snapshots in state topic {} were built for {recorded}",
        rig.events, rig.state
    );
    assert!(stderr.contains(&expected), "{expected}\n{stderr}");
}

/// Deletes every record of `topic`'s partitions up to their high watermarks (what retention
/// does to records nobody read in time).
async fn delete_all_records(kafka: &TestKafka, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = kafka.producer_config().create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        tpl.add_partition_offset(topic, partition, rdkafka::Offset::End)
            .unwrap();
    }
    let deleted = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .expect("delete records");
    for element in deleted.elements() {
        assert!(element.error().is_ok(), "delete records: {element:?}");
    }
}

/// Whether the test runs on a real broker (the mock cluster has no `DeleteRecords`).
fn real_broker_or_skip(test: &str) -> bool {
    rig::real_broker_or_skip(
        test,
        "needs a real broker for DeleteRecords (run scripts/test)",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_that_retention_removed_means_a_fresh_base_state_not_a_stale_snapshot() {
    if !real_broker_or_skip(
        "a_committed_offset_that_retention_removed_means_a_fresh_base_state_not_a_stale_snapshot",
    ) {
        return;
    }
    let rig = rig("agg-gone").await;
    let sim = rig::sim_with(sim_config(10, 200.0, 2_000)).await;
    rig.target(
        "gone",
        &sim.stream_url(),
        &aggregate_yaml(&sim.snapshot_url()),
    );
    let first = rig.start_aggregator("", true).await;
    let worker = rig.start("").await;
    first
        .wait_for("a snapshot in kafka", async |a: &Worker| {
            a.metric("sluice_aggregator_snapshots_written_total{sink=\"kafka\"}")
                .await
                >= 1.0
                && state_of(a, "gone").await.is_some_and(|(v, _)| v > 0)
        })
        .await;
    // Stopped cleanly: its last snapshot and committed offset are behind what follows.
    let (exit, log) = first.terminate().await;
    assert!(exit.success(), "{log}");
    sim.wait_for_head(2_000).await;
    rig.records_until(|records| rig::ids_of(records, "gone").contains(&2_000))
        .await;
    // Retention runs ahead of the group: every record after the committed offset is gone.
    delete_all_records(&rig.kafka, &rig.events, 1).await;

    let second = rig.start_aggregator("", true).await;
    let (version, _) = truth(&sim);
    let (got, _) = state_of(&second, "gone").await.expect("state");
    assert_eq!(
        got,
        version,
        "the restarted aggregator serves its stale snapshot as if nothing were lost:\n{}",
        second.log()
    );
    let (_, body) = second.get("/v1/targets/gone/state").await.unwrap();
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["synced"], true, "{state}");
    assert_converges(&second, "gone", &sim).await;
    assert_eq!(
        second
            .metric("sluice_aggregator_resnapshots_total{reason=\"offset_out_of_range\",target=\"gone\"}")
            .await,
        1.0,
        "{}",
        second.metrics().await
    );
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_removed_before_a_running_aggregator_read_them_mean_fresh_base_states() {
    if !real_broker_or_skip(
        "records_removed_before_a_running_aggregator_read_them_mean_fresh_base_states",
    ) {
        return;
    }
    let rig = rig("agg-behind").await;
    let sim = rig::sim_with(sim_config(10, 200.0, 3_000)).await;
    rig.target(
        "behind",
        &sim.stream_url(),
        &aggregate_yaml(&sim.snapshot_url()),
    );
    let aggregator = rig.start_aggregator("", true).await;
    let worker = rig.start("").await;
    sim.wait_for_head(2_600).await;
    // Frozen (shorter than its session timeout, so it keeps its partitions) while the last
    // records are written and removed: its next offset is gone when it wakes.
    let pid = aggregator.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    sim.wait_for_head(3_000).await;
    rig.records_until(|records| rig::ids_of(records, "behind").contains(&3_000))
        .await;
    delete_all_records(&rig.kafka, &rig.events, 1).await;
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_converges(&aggregator, "behind", &sim).await;
    assert_eq!(
        aggregator
            .metric("sluice_aggregator_resnapshots_total{reason=\"offset_out_of_range\",target=\"behind\"}")
            .await,
        1.0,
        "{}",
        aggregator.log()
    );
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_compared_only_within_the_targets_own_partition() {
    let rig = Rig::with_partitions("agg-parts", kafka(), 2).await;
    let base = Router::new().route("/base", get(|| async { r#"{"version":1,"items":[]}"# }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/base", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, base).await });
    rig.target(
        "moved",
        "http://127.0.0.1:9/stream",
        &aggregate_yaml(&base_url),
    );
    let predicted = sluice_publish::partition_for("moved", 2);
    let actual = 1 - predicted;
    // The predicted partition is ahead of the one the target's records are really in (a worker
    // with another partitioner): its offsets must not decide which of them were applied.
    for n in 0..20 {
        produce_delta(&rig.kafka, &rig.events, predicted, "other", n, "{}").await;
    }
    let aggregator = rig.start_aggregator("", true).await;
    for v in 2..=4 {
        let data = format!(r#"{{"key":"k{v}","version":{v},"price":{v}}}"#);
        produce_delta(&rig.kafka, &rig.events, actual, "moved", v, &data).await;
    }
    let applied = "sluice_aggregator_deltas_total{outcome=\"applied\",target=\"moved\"}";
    let skipped = "sluice_aggregator_records_skipped_total{reason=\"already_applied\"}";
    aggregator
        .wait_for("the three deltas to be handled", async |a: &Worker| {
            a.metric(applied).await + a.metric(skipped).await >= 3.0
        })
        .await;
    assert_eq!(
        aggregator.metric(applied).await,
        3.0,
        "{}",
        aggregator.metrics().await
    );
    let (version, entities) = state_of(&aggregator, "moved").await.unwrap();
    assert_eq!((version, entities.len()), (4, 3));

    // Now the target's partition is known: a record of it elsewhere is not compared with it.
    produce_delta(
        &rig.kafka,
        &rig.events,
        predicted,
        "moved",
        5,
        r#"{"key":"k5","version":5}"#,
    )
    .await;
    let other = "sluice_aggregator_records_skipped_total{reason=\"other_partition\"}";
    aggregator
        .wait_for("the stray record to be skipped", async |a: &Worker| {
            a.metric(other).await >= 1.0
        })
        .await;
    let (version, entities) = state_of(&aggregator, "moved").await.unwrap();
    assert_eq!((version, entities.len()), (4, 3));
}
