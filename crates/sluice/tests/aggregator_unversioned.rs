//! Unversioned targets and their base state: a `json_patch` delta the aggregator took before a
//! base fetch started is in that base, and is not applied again on top of it (an `add` to an
//! array would add the element twice). The real binary, real HTTP for the base state, Kafka
//! from the rig (the real broker in `SLUICE_TEST_KAFKA`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use rig::{Rig, Worker, produce_delta};
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
            a.get("/v1/targets")
                .await
                .is_some_and(|(code, body)| code == 200 && body.contains("\"lists\""))
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
