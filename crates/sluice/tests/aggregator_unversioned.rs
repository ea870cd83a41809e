//! Unversioned targets and their base state: a `json_patch` delta the aggregator took before a
//! base fetch started is in that base, and is not applied again on top of it (an `add` to an
//! array would add the element twice); nor is one that was in Kafka then but that the
//! aggregator, lagging, consumed only later. The real binary, real HTTP for the base state, Kafka
//! from the rig (the real broker in `SLUICE_TEST_KAFKA`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use rig::{Rig, Worker, produce_delta, produce_event};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A base-state server that fails until `open` is set, then fails once more and serves the
/// entity `a` with the list `[1]`: the one fetch it serves started after `open` was set.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    after_open: AtomicUsize,
}

async fn gated_base(gate: Arc<Gate>) -> String {
    async fn handler(State(gate): State<Arc<Gate>>) -> (StatusCode, String) {
        if !gate.open.load(Ordering::SeqCst) || gate.after_open.fetch_add(1, Ordering::SeqCst) == 0
        {
            return (StatusCode::SERVICE_UNAVAILABLE, "not yet".to_owned());
        }
        (
            StatusCode::OK,
            r#"{"items": [{"key": "a", "l": [1]}]}"#.to_owned(),
        )
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/snapshot", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/snapshot", get(handler))
        .with_state(gate);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_patch_delta_taken_before_the_base_fetch_started_is_not_applied_twice() {
    let rig = Rig::new("agg-unversioned").await;
    let gate = Arc::new(Gate::default());
    let base_url = gated_base(gate.clone()).await;
    rig.target(
        "lists",
        // No worker runs: the test publishes the deltas itself.
        "http://127.0.0.1:9/unused",
        &format!(
            "aggregate:\n  base:\n    url: {base_url}\n    items: /items\n    key: /key\n\
             \x20 delta:\n    key: /key\n    value: /ops\n  strategy: json_patch\n"
        ),
    );
    let aggregator = rig.start_aggregator("", false).await;
    // Owned means assigned, and the partition pinned where it starts: a delta now is read.
    aggregator
        .wait_for("the target owned", async |a: &Worker| {
            // Held here: in `targets` (`group` lists every target of the group).
            a.get("/v1/targets").await.is_some_and(|(code, body)| {
                code == 200
                    && serde_json::from_str::<Value>(&body).is_ok_and(|list| {
                        list["targets"]
                            .as_array()
                            .is_some_and(|t| t.iter().any(|t| t["target"] == "lists"))
                    })
            })
        })
        .await;
    let append = json!({"key": "a", "ops": [{"op": "add", "path": "/l/-", "value": 1}]});
    produce_delta(&rig.kafka, &rig.events, 0, "lists", 1, &append.to_string()).await;
    aggregator
        .wait_for("the delta held for the base state", async |a: &Worker| {
            a.metrics()
                .await
                .contains("sluice_aggregator_deltas_total{outcome=\"buffered\",target=\"lists\"} 1")
        })
        .await;
    // The upstream applied the delta before the aggregator asks it again.
    gate.open.store(true, Ordering::SeqCst);
    aggregator
        .wait_for("the base state", async |a: &Worker| {
            a.get("/v1/targets/lists/state")
                .await
                .is_some_and(|(code, body)| code == 200 && body.contains("\"synced\":true"))
        })
        .await;
    let (code, body) = aggregator
        .get("/v1/targets/lists/entities/a")
        .await
        .unwrap();
    assert_eq!(code, 200);
    let entity: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(entity, json!({"key": "a", "l": [1]}), "applied twice?");
    let metrics = aggregator.metrics().await;
    assert!(
        metrics.contains("sluice_aggregator_deltas_total{outcome=\"stale\",target=\"lists\"} 1"),
        "{metrics}"
    );
    drop(aggregator);
}

/// A base-state server serving the entity `a` with the list the test sets.
async fn list_base(list: Arc<Mutex<Value>>) -> String {
    async fn handler(State(list): State<Arc<Mutex<Value>>>) -> String {
        let list = list.lock().unwrap().clone();
        json!({"items": [{"key": "a", "l": list}]}).to_string()
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/snapshot", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/snapshot", get(handler))
        .with_state(list);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Records of another target between the reset and the appends: many rounds of the
/// aggregator's loop (4,096 records each) to read before it reaches the appends.
const FILLER: usize = 40_000;

/// Writes `count` records of the target `filler` (unknown to the aggregator) to partition 0.
async fn produce_filler(rig: &Rig, count: usize) {
    use rdkafka::message::{Header, OwnedHeaders};
    let records = (0..count).map(|_| {
        let headers = OwnedHeaders::new().insert(Header {
            key: "sluice.target",
            value: Some("filler"),
        });
        (headers, "{}".to_owned())
    });
    rig::produce_all(&rig.kafka, &rig.events, 0, "filler", records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_deltas_in_kafka_when_the_fetch_started_but_consumed_later_are_not_applied_twice()
 {
    let rig = Rig::new("agg-lag").await;
    let list = Arc::new(Mutex::new(json!([])));
    let base_url = list_base(list.clone()).await;
    rig.target(
        "lists",
        // No worker runs: the test publishes the deltas itself.
        "http://127.0.0.1:9/unused",
        &format!(
            "aggregate:\n  base:\n    url: {base_url}\n    items: /items\n    key: /key\n\
             \x20 delta:\n    key: /key\n    value: /ops\n  strategy: json_patch\n\
             \x20 reset_events: [reset]\n"
        ),
    );
    let synced = async |a: &Worker| {
        a.get("/v1/targets/lists/state")
            .await
            .is_some_and(|(code, body)| code == 200 && body.contains("\"synced\":true"))
    };
    let first = rig.start_aggregator("", false).await;
    first.wait_for("the first base state", synced).await;
    // Stopped, it snapshots and commits where it is.
    let (status, log) = first.terminate().await;
    assert!(status.success(), "{log}");

    // While it is down the upstream breaks continuity; other targets' records fill the
    // partition; then the upstream sends 60 appends, each applied to its own state before it
    // is asked for a base state again.
    produce_event(&rig.kafka, &rig.events, 0, "lists", 1, "reset", "{}").await;
    produce_filler(&rig, FILLER).await;
    let n = 60;
    for i in 1..=n {
        let append = json!({"key": "a", "ops": [{"op": "add", "path": "/l/-", "value": i}]});
        produce_delta(
            &rig.kafka,
            &rig.events,
            0,
            "lists",
            1 + i,
            &append.to_string(),
        )
        .await;
    }
    *list.lock().unwrap() = json!((1..=n).collect::<Vec<u64>>());

    // The next aggregator resumes from its snapshot and asks for the base state at the reset,
    // a round of records later, with the filler and the appends still unread in Kafka.
    let second = rig.start_aggregator("", false).await;
    second
        .wait_for("synced, every append consumed", async |a: &Worker| {
            // The lag is measured every 5 s; 0 means the backlog is read.
            let events = &rig.events;
            let caught_up = a.metrics().await.lines().any(|line| {
                line.starts_with("sluice_aggregator_consumer_lag{")
                    && line.contains(&format!("topic=\"{events}\""))
                    && line.ends_with(" 0")
            });
            caught_up && synced(a).await
        })
        .await;
    let (code, body) = second.get("/v1/targets/lists/entities/a").await.unwrap();
    assert_eq!(code, 200);
    let entity: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        entity["l"],
        json!((1..=n).collect::<Vec<u64>>()),
        "appends applied twice?"
    );
    drop(second);
}
