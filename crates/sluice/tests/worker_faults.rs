//! `sluice worker` end to end: simulator over HTTP → worker binary → Kafka (mock cluster, or the
//! broker in `SLUICE_TEST_KAFKA`). Each test counts events by id and asserts that none is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use rig::{Rig, assert_complete_in_order, ids_of, sim};
use sluice_sim::QueuedFaults;

const EVENTS: u64 = 300;

fn queued(count: u32, json: serde_json::Value) -> QueuedFaults {
    serde_json::from_value(serde_json::json!({ "count": count, "faults": json }))
        .expect("valid fault body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_under_any_simulator_fault() {
    let rig = Rig::new("faults").await;
    let close = sim(EVENTS, 1000.0).await;
    let reset = sim(EVENTS, 1000.0).await;
    let stall = sim(EVENTS, 1000.0).await;
    let unavailable = sim(EVENTS, 1000.0).await;
    let throttled = sim(EVENTS, 1000.0).await;
    let redirect = sim(EVENTS, 1000.0).await;
    unavailable
        .queue_faults(queued(
            2,
            serde_json::json!({"status": 503, "retry_after": 1}),
        ))
        .expect("queue 503");
    throttled
        .queue_faults(queued(
            2,
            serde_json::json!({"status": 429, "retry_after": 1}),
        ))
        .expect("queue 429");
    // `last_event_id=0`: the first connection (which sends no header) replays from the first
    // event, so the test can expect ids 1..=EVENTS however late the worker connects.
    rig.target(
        "t-close",
        &format!(
            "{}?last_event_id=0&close_after_events=40",
            close.stream_url()
        ),
        "",
    );
    rig.target(
        "t-reset",
        &format!(
            "{}?last_event_id=0&reset_after_events=40",
            reset.stream_url()
        ),
        "",
    );
    rig.target(
        "t-stall",
        &format!(
            "{}?last_event_id=0&stall_after_events=40&heartbeat=0s",
            stall.stream_url()
        ),
        "idle_timeout: 500ms",
    );
    rig.target(
        "t-503",
        &format!("{}?last_event_id=0", unavailable.stream_url()),
        "",
    );
    rig.target(
        "t-429",
        &format!("{}?last_event_id=0", throttled.stream_url()),
        "",
    );
    rig.target(
        "t-redirect",
        &format!(
            "{}?last_event_id=0&redirect=2&close_after_events=100",
            redirect.stream_url()
        ),
        "max_redirects: 3",
    );
    let worker = rig.start("").await;

    let targets = [
        "t-close",
        "t-reset",
        "t-stall",
        "t-503",
        "t-429",
        "t-redirect",
    ];
    let expected: Vec<(&str, u64)> = targets.iter().map(|t| (*t, EVENTS)).collect();
    let records = rig.wait_all_ids(&expected).await;
    for target in targets {
        let ids = ids_of(&records, target);
        assert_complete_in_order(target, &ids, EVENTS);
        assert_eq!(
            ids.len() as u64,
            EVENTS,
            "{target}: no duplicates without a restart"
        );
    }

    // Every reconnect is labelled with its cause.
    let metrics = worker.metrics().await;
    for (target, reason) in [
        ("t-close", "eof"),
        ("t-reset", "reset"),
        ("t-stall", "silent_drop"),
        ("t-503", "http_status"),
        ("t-429", "http_status"),
        ("t-redirect", "eof"),
    ] {
        let series = format!("sluice_reconnects_total{{reason=\"{reason}\",target=\"{target}\"}}");
        assert!(
            sluice_testkit::metric_value(&metrics, &series) >= 1.0,
            "{series} missing in metrics:\n{metrics}"
        );
    }
    // Retry-After was honoured: two refused attempts, each at least 1 s apart.
    let row = worker.row("t-503").await;
    assert_eq!(row["connection"], 1, "one successful connection: {row}");

    // Records carry the value exactly as sent and every header.
    let first = records
        .iter()
        .find(|r| r.header("sluice.target") == "t-close")
        .expect("a record");
    assert_eq!(first.header("sse.id"), "1");
    assert_eq!(first.header("sse.event"), "price_update");
    assert_eq!(first.header("sluice.seq"), "0");
    assert_eq!(first.header("sluice.connection"), "1");
    assert!(first.header("sluice.received_at").parse::<u64>().is_ok());
    assert_eq!(first.key, "t-close", "keyed by target id by default");
    let truth: serde_json::Value = serde_json::from_str(&first.value).expect("data is json");
    assert_eq!(truth["version"], 1);

    // The first record of each connection says what the connection resumed from: nothing on the
    // fresh start, then the id of the last record before it.
    let closes: Vec<_> = records
        .iter()
        .filter(|r| r.header("sluice.target") == "t-close")
        .collect();
    let mut generations = 0;
    for (i, rec) in closes.iter().enumerate() {
        let new_generation =
            i == 0 || rec.header("sluice.connection") != closes[i - 1].header("sluice.connection");
        let resume = rec.headers.get("sluice.resume").map(String::as_str);
        if !new_generation {
            assert_eq!(
                resume, None,
                "only a generation's first record: {:?}",
                rec.headers
            );
        } else if i == 0 {
            assert_eq!(resume, Some(""), "fresh start resumes from nothing");
        } else {
            generations += 1;
            assert_eq!(
                resume,
                Some(closes[i - 1].header("sse.id")),
                "{:?}",
                rec.headers
            );
        }
    }
    assert!(generations >= 1, "t-close reconnected at least once");

    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "graceful exit: {exit:?}\n{log}");
    let checkpoints = rig.checkpoints().await;
    for target in targets {
        assert_eq!(
            checkpoints.get(target).map(String::as_str),
            Some("300"),
            "{target}: final checkpoint is the last event: {checkpoints:?}"
        );
    }
}
