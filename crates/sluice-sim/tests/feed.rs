//! The feed over real HTTP: snapshot, stream ids, replay after `Last-Event-ID`, reset, truth.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_sim::{SimConfig, Snapshot};
use sluice_sse::Item;
use support::{assert_deltas_from, fast, id, open, open_after, start};

#[tokio::test]
async fn snapshot_is_sorted_versioned_and_deterministic_by_seed() {
    let a = start(fast(300)).await;
    let b = start(fast(300)).await;
    let c = start(SimConfig {
        seed: 2,
        ..fast(300)
    })
    .await;
    for sim in [&a, &b, &c] {
        sim.wait_for_head(300).await;
    }
    let body: Snapshot = support::get_json(&a.snapshot_url()).await;
    assert_eq!(body.version, 300);
    assert!(!body.items.is_empty());
    assert!(body.items.windows(2).all(|w| w[0].key < w[1].key));
    assert!(
        body.items
            .iter()
            .all(|i| i.version <= 300 && i.key.len() == 5)
    );
    assert_eq!(body, a.snapshot());
    assert_eq!(a.snapshot(), b.snapshot());
    assert_ne!(a.snapshot(), c.snapshot());

    let raw: serde_json::Value = support::get_json(&a.snapshot_url()).await;
    let item = &raw["items"][0];
    assert!(item["key"].is_string() && item["price"].is_f64() && item["qty"].is_u64());
    for sim in [a, b, c] {
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn applying_every_streamed_delta_to_an_empty_map_equals_the_snapshot() {
    let config = fast(400);
    let sim = start(config.clone()).await;
    let mut sse = open_after(&sim.stream_url(), 0).await;
    let events = sse.events(400).await;
    assert_deltas_from(1, &events, &config);

    let mut state: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for event in &events {
        let data: serde_json::Value = serde_json::from_str(event.data.as_str()).unwrap();
        let key = data["key"].as_str().unwrap().to_owned();
        match event.event.as_str() {
            "price_update" => {
                state.insert(key, data);
            }
            "delete" => {
                state.remove(&key);
            }
            other => panic!("unexpected event type {other}"),
        }
    }
    sim.wait_for_head(400).await;
    let truth = sim.snapshot();
    assert_eq!(truth.version, 400);
    let truth: BTreeMap<String, serde_json::Value> = truth
        .items
        .into_iter()
        .map(|i| (i.key.clone(), serde_json::to_value(i).unwrap()))
        .collect();
    assert_eq!(state, truth);
    assert_eq!(
        sim.snapshot(),
        sluice_sim::state_at(config.seed, config.entities, 400)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_stream_starts_at_the_head_with_contiguous_ids() {
    let config = fast(10_000);
    let sim = start(config.clone()).await;
    sim.wait_for_head(50).await;
    let mut sse = open(&sim.stream_url()).await;
    assert_eq!(sse.response.headers()["content-type"], "text/event-stream");
    assert_eq!(sse.response.headers()["cache-control"], "no-cache");
    let events = sse.events(100).await;
    let first = id(&events[0]);
    assert!(
        first > 50,
        "starts after the head at connect time, got {first}"
    );
    assert_deltas_from(first, &events, &config);
    sim.shutdown().await;
}

#[tokio::test]
async fn replay_after_last_event_id_continues_without_gap_or_duplicate() {
    let config = fast(10_000);
    let sim = start(config.clone()).await;
    let mut sse = open(&sim.stream_url()).await;
    let first = sse.events(30).await;
    let last = id(first.last().unwrap());
    drop(sse);
    sim.wait_for_head(last + 100).await;

    let mut resumed = open_after(&sim.stream_url(), last).await;
    let events = resumed.events(150).await;
    assert_deltas_from(last + 1, &events, &config);

    let by_query = format!("{}?last_event_id={last}", sim.stream_url());
    let mut resumed = open(&by_query).await;
    assert_deltas_from(last + 1, &resumed.events(10).await, &config);
    sim.shutdown().await;
}

async fn first_reset(url: &str, last_event_id: &str) -> (serde_json::Value, u64, u64) {
    let response = support::client()
        .get(url)
        .header("Last-Event-ID", last_event_id)
        .send()
        .await
        .unwrap();
    let mut sse = support::Sse::new(response);
    let reset = sse.event().await.unwrap();
    assert_eq!(reset.event.as_str(), "reset");
    let next = sse.event().await.unwrap();
    let data = serde_json::from_str(reset.data.as_str()).unwrap();
    (data, id(&reset), id(&next))
}

#[tokio::test]
async fn an_id_older_than_the_history_gets_a_reset_then_live_deltas() {
    let sim = start(SimConfig {
        history: 10,
        ..fast(10_000)
    })
    .await;
    sim.wait_for_head(100).await;
    let (data, reset_id, next) = first_reset(&sim.stream_url(), "5").await;
    assert_eq!(data["reason"], "history_exhausted");
    assert_eq!(data["snapshot_version"], reset_id);
    assert!(reset_id >= 100);
    assert_eq!(next, reset_id + 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_future_or_garbage_id_gets_a_reset_with_its_own_reason() {
    let sim = start(fast(10_000)).await;
    sim.wait_for_head(10).await;
    let (data, _, _) = first_reset(&sim.stream_url(), "999999999").await;
    assert_eq!(data["reason"], "id_in_future");
    let (data, _, _) = first_reset(&sim.stream_url(), "not-a-number").await;
    assert_eq!(data["reason"], "invalid_id");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_idle_stream_sends_heartbeats_and_the_configured_retry() {
    let sim = start(SimConfig {
        retry: Some(Duration::from_millis(1_500)),
        ..fast(5)
    })
    .await;
    sim.wait_for_head(5).await;
    let url = format!("{}?heartbeat=50ms", sim.stream_url());
    let mut sse = open(&url).await;
    assert_eq!(sse.item().await.unwrap(), Item::Retry(1_500));
    for _ in 0..3 {
        match sse.item().await.unwrap() {
            Item::Comment(text) => assert_eq!(text.as_str(), " hb"),
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn firehose_streams_from_the_start_up_to_max_events() {
    let config = SimConfig {
        rate: 0.0,
        max_events: Some(5_000),
        ..SimConfig::default()
    };
    let sim = start(config.clone()).await;
    let mut sse = open(&sim.stream_url()).await;
    let events = sse.events(5_000).await;
    assert_deltas_from(1, &events, &config);
    assert_eq!(
        sim.head(),
        0,
        "the shared feed does not advance in firehose mode"
    );

    let url = format!("{}?last_event_id=4990", sim.stream_url());
    let mut sse = open(&url).await;
    assert_deltas_from(4_991, &sse.events(10).await, &config);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let sim = start(fast(10)).await;
    let mut sse = open(&sim.stream_url()).await;
    sim.shutdown().await;
    let (_, end) = sse.rest().await;
    assert!(!matches!(end, support::End::Parse(_)), "{end:?}");
}

#[tokio::test]
async fn healthz_answers_ok() {
    let sim = start(fast(1)).await;
    let response = reqwest::get(format!("{}/healthz", sim.base_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    sim.shutdown().await;
}
