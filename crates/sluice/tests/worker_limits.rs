//! A record Kafka refuses for good (bigger than its topic's `max.message.bytes`): the target
//! stops before it, visibly (`/readyz` 503 naming it, `/status` delivery `failed`, the error
//! counted), and its checkpoint never passes it. Needs the real broker (the mock cluster has no
//! topic configs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use rig::{Rig, ids_of, sim};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_kafka_refuses_stops_its_target_visibly_and_the_checkpoint_stays_behind_it() {
    if !sluice_testkit::is_real_broker_run() {
        sluice_testkit::skip_or_fail(
            "a_record_kafka_refuses_stops_its_target_visibly_and_the_checkpoint_stays_behind_it",
            "needs a real broker (run scripts/test)",
        );
        return;
    }
    let mut rig = Rig::new("limits").await;
    rig.events = sluice_testkit::unique_topic("limits.small-events");
    rig.kafka
        .create_topic_with(&rig.events, 1, &[("max.message.bytes", "4000")])
        .await
        .expect("a topic with a small record limit");
    let sim = sim(1_000_000, 200.0).await;
    // Live events (5 ms apart, so each goes in a batch of its own), and after 20 of them one
    // whose data is 20 kB: within the parser's limits, over the topic's.
    rig.target(
        "limited",
        &format!(
            "{}?oversized_after_events=20&oversized_bytes=20000",
            sim.stream_url()
        ),
        "",
    );
    let worker = rig.start("").await;
    worker
        .wait_for(
            "/readyz to name the stopped target",
            async |w: &rig::Worker| {
                w.get("/readyz").await.is_some_and(|(code, body)| {
                    code == 503 && body.contains("target limited stopped: kafka refused")
                })
            },
        )
        .await;
    let row = worker.row("limited").await;
    assert_eq!(row["delivery"], "failed", "{row}");
    assert!(
        row["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("kafka refused an event"),
        "{row}"
    );
    assert!(
        worker
            .metric("sluice_delivery_errors_total{target=\"limited\"}")
            .await
            >= 1.0
    );

    // Records batched with the refused one are refused with it (the broker refuses the batch);
    // none after it is in Kafka, and the checkpoint stays behind it, so a restart (with a bigger
    // topic limit) reads them again.
    let records = rig
        .records_until(|r| ids_of(r, "limited").len() >= 10)
        .await;
    let ids = ids_of(&records, "limited");
    assert!(ids.len() <= 20, "{ids:?}");
    let last = *ids.iter().max().unwrap();
    let checkpoint: u64 = rig
        .checkpoints()
        .await
        .get("limited")
        .map(|c| c.parse().unwrap())
        .unwrap_or(0);
    assert!(
        checkpoint <= last,
        "checkpoint {checkpoint} passed the refused event (after {last})"
    );
    drop(worker);
}
