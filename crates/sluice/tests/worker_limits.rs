//! Record sizes against the events topic's `max.message.bytes`: a topic too small for an event
//! the parser accepts is refused at start, naming both numbers; a record Kafka refuses for good
//! anyway (the topic's limit lowered while the worker runs): the target stops before it,
//! visibly (`/readyz` 503 naming it, `/status` delivery `failed`, the error counted), and its
//! checkpoint never passes it. Needs the real broker (the mock cluster has no topic configs).

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
        .create_topic_with(&rig.events, 1, &[("max.message.bytes", "20000000")])
        .await
        .expect("a topic taking every accepted event");
    let sim = sim(1_000_000, 200.0).await;
    // Live events (5 ms apart, so each goes in a batch of its own), and after 2,000 of them one
    // whose data is 20 kB: within the parser's limits, over the topic's once it is lowered.
    rig.target(
        "limited",
        &format!(
            "{}?oversized_after_events=2000&oversized_bytes=20000",
            sim.stream_url()
        ),
        "",
    );
    let worker = rig.start("metrics:\n  per_target: all").await;
    // The start check passes; then the topic's limit drops below the oversized event (an
    // operator's change, or a broker that could not be checked), well before it comes.
    worker
        .wait_for("the start checks", async |w: &rig::Worker| {
            w.log().contains("topic configs checked")
        })
        .await;
    rig.kafka
        .alter_topic_config(&rig.events, &[("max.message.bytes", "4000")])
        .await
        .expect("the topic's limit lowered");
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
    assert!(ids.len() <= 2000, "{} ids", ids.len());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_topic_too_small_for_an_accepted_event_is_refused_at_start_naming_both_numbers() {
    if !sluice_testkit::is_real_broker_run() {
        sluice_testkit::skip_or_fail(
            "an_events_topic_too_small_for_an_accepted_event_is_refused_at_start_naming_both_numbers",
            "needs a real broker (run scripts/test)",
        );
        return;
    }
    let mut rig = Rig::new("limits-start").await;
    rig.events = sluice_testkit::unique_topic("limits.start-events");
    rig.kafka
        .create_topic_with(&rig.events, 1, &[("max.message.bytes", "100000")])
        .await
        .expect("a topic with a small record limit");
    let sim = sim(1_000_000, 200.0).await;
    // The default parser limits accept 4 MiB events: their records cannot fit in 100 kB.
    rig.target("roomy", &sim.stream_url(), "");
    let needed = sluice_publish::max_record_bytes(sluice_sse::Limits::default());
    let worker = rig.spawn_worker("", "", "5s", &[]).await;
    let (exit, log) = worker.exited().await;
    assert!(!exit.success(), "{exit:?}\n{log}");
    assert!(
        log.contains(&format!(
            "events topic {} takes records up to 100000 bytes",
            rig.events
        )) && log.contains(&format!("up to {needed} bytes"))
            && log.contains("target roomy"),
        "it names the topic, both numbers and the target:\n{log}"
    );
}
