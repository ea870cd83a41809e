//! Each fault over real HTTP, by query parameter and by the admin endpoint.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use sluice_sim::QueuedFaults;
use sluice_sse::Limits;
use support::{End, Sse, assert_deltas_from, client, fast, id, open, start};

fn url(sim: &sluice_sim::RunningSim, query: &str) -> String {
    format!("{}?{query}", sim.stream_url())
}

#[tokio::test]
async fn close_after_events_ends_the_response_cleanly() {
    let config = fast(10_000);
    let sim = start(config.clone()).await;
    let mut sse = open(&url(&sim, "close_after_events=5")).await;
    let (events, end) = sse.rest().await;
    assert_eq!(events.len(), 5);
    assert_deltas_from(id(&events[0]), &events, &config);
    assert!(matches!(end, End::Eof), "{end:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn close_after_a_duration_ends_the_response_cleanly() {
    let sim = start(fast(10_000)).await;
    let mut sse = open(&url(&sim, "close_after=200ms")).await;
    let (_, end) = sse.rest().await;
    assert!(matches!(end, End::Eof), "{end:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_after_events_is_a_connection_reset_not_an_eof() {
    let config = fast(10_000);
    let sim = start(config.clone()).await;
    let mut sse = open(&url(&sim, "reset_after_events=5")).await;
    let (events, end) = sse.rest().await;
    assert!(end.is_connection_reset(), "{end:?}");
    assert_eq!(events.len(), 5);
    assert_deltas_from(id(&events[0]), &events, &config);
    sim.shutdown().await;
}

#[tokio::test]
async fn stall_after_events_keeps_the_socket_open_and_silent() {
    let sim = start(fast(10_000)).await;
    // A short heartbeat shows that even heartbeats stop.
    let mut sse = open(&url(&sim, "stall_after_events=3&heartbeat=50ms")).await;
    sse.events(3).await;
    let more = tokio::time::timeout(Duration::from_millis(500), sse.response.chunk()).await;
    assert!(more.is_err(), "expected silence, got {more:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn max_age_cuts_the_connection_mid_response() {
    let sim = start(fast(100_000)).await;
    let mut sse = open(&url(&sim, "max_age=300ms")).await;
    let (events, end) = sse.rest().await;
    assert!(!events.is_empty());
    assert!(matches!(end, End::Transport(_)), "{end:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn status_faults_answer_the_status_with_retry_after() {
    let sim = start(fast(10)).await;
    for (query, status, retry_after) in [
        ("status=503&retry_after=2", 503, Some("2")),
        ("status=429&retry_after=7", 429, Some("7")),
        ("status=500", 500, None),
        ("status=204", 204, None),
    ] {
        let response = client().get(url(&sim, query)).send().await.unwrap();
        assert_eq!(response.status(), status, "{query}");
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            retry_after,
            "{query}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn redirect_chains_the_given_number_of_hops() {
    let sim = start(fast(10_000)).await;
    let response = client()
        .get(url(&sim, "redirect=2&close_after_events=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/v1/stream?"), "{location}");
    assert!(location.contains("redirect=1"), "{location}");
    assert!(location.contains("close_after_events=1"), "{location}");

    let response = client()
        .get(format!("{}{location}", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/v1/stream?close_after_events=1");

    let following = reqwest::Client::new();
    let response = following
        .get(url(&sim, "redirect=3&close_after_events=1"))
        .send()
        .await
        .unwrap();
    let mut sse = Sse::new(response);
    let (events, end) = sse.rest().await;
    assert_eq!(events.len(), 1);
    assert!(matches!(end, End::Eof));
    sim.shutdown().await;
}

#[tokio::test]
async fn content_type_fault_serves_the_stream_with_that_type() {
    let sim = start(fast(10_000)).await;
    let response = client()
        .get(url(&sim, "content_type=text/plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain");
    let mut sse = Sse::new(response);
    sse.events(2).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_event_is_sent_once_and_the_stream_goes_on() {
    let config = fast(10_000);
    let sim = start(config.clone()).await;
    let mut sse = open(&url(&sim, "malformed_after_events=2")).await;
    let events = sse.events(5).await;
    assert_deltas_from(id(&events[0]), &events[..2], &config);
    let garbage = &events[2];
    assert_eq!(garbage.event.as_str(), "price_update");
    assert!(serde_json::from_str::<serde_json::Value>(garbage.data.as_str()).is_err());
    // The garbage event has no id of its own: the last id stays in force.
    assert_eq!(garbage.id, events[1].id);
    assert_deltas_from(id(&events[1]) + 1, &events[3..], &config);
    sim.shutdown().await;
}

#[tokio::test]
async fn oversized_event_has_the_requested_data_size_and_the_stream_goes_on() {
    let config = fast(10_000);
    let sim = start(config.clone()).await;
    let response = client()
        .get(url(
            &sim,
            "oversized_after_events=2&oversized_bytes=2000000",
        ))
        .send()
        .await
        .unwrap();
    let limits = Limits {
        max_line_bytes: 4 << 20,
        max_event_bytes: 4 << 20,
    };
    let mut sse = Sse::with_limits(response, limits);
    let events = sse.events(5).await;
    assert_eq!(events[2].event.as_str(), "oversized");
    assert_eq!(events[2].data.len(), 2_000_000);
    assert_deltas_from(id(&events[1]) + 1, &events[3..], &config);

    // A client with default limits sees the oversized line as a parse error.
    let mut strict = open(&url(
        &sim,
        "oversized_after_events=1&oversized_bytes=2000000",
    ))
    .await;
    let (events, end) = strict.rest().await;
    assert_eq!(events.len(), 1);
    assert!(matches!(end, End::Parse(_)), "{end:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_or_invalid_parameters_are_a_bad_request() {
    let sim = start(fast(10)).await;
    for query in [
        "nope=1",
        "close_after_events=x",
        "status=200",
        "max_age=soon",
    ] {
        let response = client().get(url(&sim, query)).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn admin_faults_apply_to_the_next_connections_only() {
    let sim = start(fast(10_000)).await;
    let admin = format!("{}/admin/faults", sim.base_url());
    let response = client()
        .post(&admin)
        .body(r#"{"count":2,"faults":{"status":503,"retry_after":"3"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for _ in 0..2 {
        let response = client().get(sim.stream_url()).send().await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "3");
    }
    let response = client().get(sim.stream_url()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    // The connection's own query parameters win over queued faults.
    sim.queue_faults(QueuedFaults {
        count: 1,
        faults: sluice_sim::RawParams::from_query("status=500").unwrap(),
    })
    .unwrap();
    let response = client().get(url(&sim, "status=429")).send().await.unwrap();
    assert_eq!(response.status(), 429);

    // DELETE clears what is still queued.
    client()
        .post(&admin)
        .body(r#"{"faults":{"status":500}}"#)
        .send()
        .await
        .unwrap();
    let cleared = client().delete(&admin).send().await.unwrap();
    assert_eq!(cleared.status(), 204);
    let response = client().get(sim.stream_url()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    // So does clear_faults, the same from the handle.
    sim.queue_faults(QueuedFaults {
        count: 3,
        faults: sluice_sim::RawParams::from_query("status=503").unwrap(),
    })
    .unwrap();
    sim.clear_faults();
    let response = client().get(sim.stream_url()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    let bad = client()
        .post(&admin)
        .body(r#"{"faults":{"status":"soon"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn admin_reset_fault_applies_to_the_next_stream() {
    let sim = start(fast(10_000)).await;
    sim.queue_faults(QueuedFaults {
        count: 1,
        faults: sluice_sim::RawParams::from_query("reset_after_events=2").unwrap(),
    })
    .unwrap();
    let mut sse = open(&sim.stream_url()).await;
    let (events, end) = sse.rest().await;
    assert_eq!(events.len(), 2);
    assert!(end.is_connection_reset(), "{end:?}");
    sim.shutdown().await;
}
