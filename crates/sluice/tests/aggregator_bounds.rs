//! The aggregator's memory has bounds whatever its targets do at once: base-state fetches in
//! flight are capped (many targets needing a base state together, as at a start or after a lost
//! partition, fetch a few at a time), and a target's state holds at most its
//! `aggregate.max_entities`. Real HTTP for the base states; Kafka is the rig's (mock
//! cluster, or the real broker named by `SLUICE_TEST_KAFKA`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use rig::{Rig, Worker};
use sluice_sim::{RunningSim, SimConfig};
use sluice_testkit::TestKafka;
use tokio::net::TcpListener;

/// The aggregator's cap on base fetches in flight, as the README states it.
const CAP: usize = 16;

/// Requests the front is answering now, and the most it ever answered at once.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
    served: AtomicUsize,
}

/// A base-state server that answers every request with the simulator's snapshot after holding
/// it for `hold` (a slow upstream), counting how many it holds at once.
async fn slow_base(sim: &RunningSim, hold: Duration) -> (String, Arc<Concurrency>) {
    #[derive(Clone)]
    struct Front {
        snapshot_url: String,
        hold: Duration,
        seen: Arc<Concurrency>,
    }
    async fn handler(State(front): State<Front>) -> String {
        let now = front.seen.now.fetch_add(1, Ordering::SeqCst) + 1;
        front.seen.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(front.hold).await;
        let body = reqwest::get(&front.snapshot_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        front.seen.now.fetch_sub(1, Ordering::SeqCst);
        front.seen.served.fetch_add(1, Ordering::SeqCst);
        body
    }
    let seen = Arc::new(Concurrency::default());
    let front = Front {
        snapshot_url: sim.snapshot_url(),
        hold,
        seen: seen.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/snapshot", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/snapshot", get(handler))
        .with_state(front);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_targets_needing_a_base_state_at_once_fetch_a_few_at_a_time() {
    const TARGETS: usize = 40;
    let rig = Rig::with_kafka("agg-fetch-cap", TestKafka::start().expect("test kafka")).await;
    let sim = rig::sim_with(SimConfig {
        entities: 5,
        rate: 10.0,
        max_events: Some(10),
        heartbeat: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let (base_url, seen) = slow_base(&sim, Duration::from_millis(200)).await;
    let aggregate = format!(
        "aggregate:\n  base:\n    url: {base_url}\n    items: /items\n    key: /key\n    version: /version\n\
         \x20 delta:\n    key: /key\n    version: /version\n  strategy: replace\n"
    );
    for i in 0..TARGETS {
        rig.target(&format!("t{i:02}"), &sim.stream_url(), &aggregate);
    }
    // No worker: every target starts fresh at the aggregator's start and needs its base state.
    let aggregator = rig.start_aggregator("", false).await;
    for i in 0..TARGETS {
        let target = format!("t{i:02}");
        aggregator
            .wait_for(&format!("{target} synced"), async |a: &Worker| {
                a.get(&format!("/v1/targets/{target}/state"))
                    .await
                    .is_some_and(|(code, body)| code == 200 && body.contains("\"synced\":true"))
            })
            .await;
    }
    let max = seen.max.load(Ordering::SeqCst);
    let served = seen.served.load(Ordering::SeqCst);
    assert!(served >= TARGETS, "every target fetched: {served}");
    assert!(
        max <= CAP,
        "at most {CAP} base fetches in flight at once, saw {max}"
    );
    assert!(
        max >= 2,
        "fetches do run side by side: at most {max} at once"
    );
    drop(aggregator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_state_past_max_entities_is_refused_visibly_and_retried() {
    let rig = Rig::with_kafka("agg-max-entities", TestKafka::start().expect("test kafka")).await;
    let sim = rig::sim_with(SimConfig {
        entities: 5,
        rate: 10.0,
        max_events: Some(10),
        heartbeat: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let aggregate = |max: usize| {
        format!(
            "aggregate:\n  base:\n    url: {}\n    items: /items\n    key: /key\n    version: /version\n\
             \x20 delta:\n    key: /key\n    version: /version\n  strategy: replace\n  max_entities: {max}\n",
            sim.snapshot_url()
        )
    };
    // The feed ends first, so every base state holds the same entities (the simulator's
    // state has as many as its deltas touched).
    sim.wait_for_head(10).await;
    let entities = sim.snapshot().items.len();
    assert!(entities >= 2, "the feed touched {entities} entities");
    rig.target("small", &sim.stream_url(), &aggregate(entities - 1));
    rig.target("room", &sim.stream_url(), &aggregate(entities));
    let aggregator = rig.start_aggregator("", false).await;
    aggregator
        .wait_for("room synced", async |a: &Worker| {
            a.get("/v1/targets/room/state")
                .await
                .is_some_and(|(code, body)| code == 200 && body.contains("\"synced\":true"))
        })
        .await;
    aggregator
        .wait_for(
            "the small target's base refused twice",
            async |a: &Worker| {
                a.metric("sluice_aggregator_base_fetches_total{result=\"error\",target=\"small\"}")
                    .await
                    >= 2.0
            },
        )
        .await;
    let log = aggregator.log();
    assert!(
        log.contains("too_many_entities") && log.contains("aggregate.max_entities"),
        "the refusal names its bound:\n{log}"
    );
    let synced = aggregator
        .get("/v1/targets/small/state")
        .await
        .is_some_and(|(code, body)| code == 200 && body.contains("\"synced\":true"));
    assert!(
        !synced,
        "a target over its bound never serves a partial state as synced"
    );
    assert_eq!(
        aggregator
            .metric("sluice_aggregator_synced{target=\"small\"}")
            .await,
        0.0
    );
    drop(aggregator);
}
