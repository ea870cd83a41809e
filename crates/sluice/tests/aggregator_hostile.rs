//! Hostile deltas do not bring the aggregator down: `json_patch` deltas that would grow an
//! entity without bound (`copy` of the root, repeated) or nest it past any stack (`add` under
//! `add`) are refused before they are applied, the entity stays as it was, the records go to
//! the dead-letter topic and are counted by kind, and the target keeps serving and merging.
//! The real binary, real HTTP for the base state, Kafka from the rig (the real broker in
//! `SLUICE_TEST_KAFKA`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use axum::Router;
use axum::routing::get;
use rig::{Rig, Worker, produce_delta, read_topic_until};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A base-state server: one entity `a` with an empty list.
async fn base_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/snapshot", listener.local_addr().unwrap());
    let app = Router::new().route(
        "/snapshot",
        get(|| async { r#"{"items": [{"key": "a", "list": []}]}"# }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A delta for entity `a` with these operations.
fn patch(ops: Value) -> String {
    json!({"key": "a", "ops": ops}).to_string()
}

async fn entity(aggregator: &Worker) -> Option<Value> {
    let (code, body) = aggregator.get("/v1/targets/hostile/entities/a").await?;
    (code == 200).then(|| serde_json::from_str(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_json_patch_deltas_are_dead_lettered_and_the_aggregator_keeps_serving() {
    let rig = Rig::new("agg-hostile").await;
    let base_url = base_server().await;
    rig.target(
        "hostile",
        // No worker runs: the test publishes the deltas itself.
        "http://127.0.0.1:9/unused",
        &format!(
            "aggregate:\n  base:\n    url: {base_url}\n    items: /items\n    key: /key\n\
             \x20 delta:\n    key: /key\n    value: /ops\n  strategy: json_patch\n"
        ),
    );
    let aggregator = rig
        .start_aggregator("metrics:\n  per_target: all", true)
        .await;
    aggregator
        .wait_for("the base state", async |a: &Worker| {
            entity(a).await == Some(json!({"key": "a", "list": []}))
        })
        .await;

    // 64 copies of the root into itself: 2^64 times the entity.
    let doubling: Vec<Value> = (0..64)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
        .collect();
    let data = patch(Value::Array(doubling));
    produce_delta(&rig.kafka, &rig.events, 0, "hostile", 1, &data).await;
    // 40 operations, each nesting 100 levels under the last: 4,000 levels.
    let mut nested = json!({});
    for _ in 0..99 {
        nested = json!({ "n": nested });
    }
    let mut path = String::new();
    let deep: Vec<Value> = (0..40)
        .map(|_| {
            let op = json!({"op": "add", "path": format!("{path}/d"), "value": nested.clone()});
            path.push_str("/d");
            path.push_str(&"/n".repeat(99));
            op
        })
        .collect();
    let data = patch(Value::Array(deep));
    produce_delta(&rig.kafka, &rig.events, 0, "hostile", 2, &data).await;
    // The target goes on: a good delta after them applies.
    let good = patch(json!([{"op": "add", "path": "/list/-", "value": 1}]));
    produce_delta(&rig.kafka, &rig.events, 0, "hostile", 3, &good).await;

    aggregator
        .wait_for("the good delta applied", async |a: &Worker| {
            entity(a).await == Some(json!({"key": "a", "list": [1]}))
        })
        .await;
    let dead = read_topic_until(&rig.kafka, &rig.dead_letter, |r| r.len() >= 2).await;
    assert_eq!(
        dead.len(),
        2,
        "{:?}",
        dead.iter().map(|r| &r.headers).collect::<Vec<_>>()
    );
    assert_eq!(dead[0].header("sse.id"), "1");
    assert!(
        dead[0]
            .header("sluice.error")
            .contains("would make the entity about"),
        "{:?}",
        dead[0].headers
    );
    assert_eq!(dead[1].header("sse.id"), "2");
    assert!(
        dead[1]
            .header("sluice.error")
            .contains("would nest the entity"),
        "{:?}",
        dead[1].headers
    );
    assert_eq!(dead[0].key, "hostile");
    assert!(dead[0].value.contains("\"copy\""));

    let metrics = aggregator.metrics().await;
    for kind in ["too_large", "too_deep"] {
        let series = format!(
            "sluice_aggregator_malformed_deltas_total{{kind=\"{kind}\",target=\"hostile\"}} 1"
        );
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    assert!(
        metrics
            .contains("sluice_aggregator_deltas_total{outcome=\"malformed\",target=\"hostile\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_aggregator_dead_letters_total 2"),
        "{metrics}"
    );
    let (code, state) = aggregator.get("/v1/targets/hostile/state").await.unwrap();
    assert_eq!(code, 200);
    assert!(state.contains("\"synced\":true"), "{state}");

    let (exit, log) = aggregator.terminate().await;
    assert!(
        exit.success(),
        "the aggregator ran to a clean stop: {exit:?}\n{log}"
    );
}
