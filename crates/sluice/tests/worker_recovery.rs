//! `sluice worker` recovery end to end: a SIGKILL mid-stream and restart, Kafka unavailable for
//! 30 s, upstream answers that stop or reject a target, and config the worker refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::time::Duration;

use rig::{Rig, assert_complete_in_order, first_occurrences, ids_of, rss_bytes, sim, sim_with};
use sluice_sim::SimConfig;
use sluice_testkit::{Outage, TestKafka, metric_value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_resumes_from_its_checkpoint_and_loses_nothing() {
    const EVENTS: u64 = 3000;
    // The rig first (topic creation on a real broker can take seconds), then a feed slow enough
    // (10 s) that the kill lands mid-stream even when Kafka is slow to hand back records.
    let rig = Rig::new("sigkill").await;
    let sim = sim(EVENTS, 300.0).await;
    rig.target(
        "killed",
        &format!("{}?last_event_id=0", sim.stream_url()),
        "",
    );
    let worker = rig.start("").await;
    rig.records_until(|records| records.len() >= 800).await;
    worker
        .wait_for("a checkpoint to be written", async |w: &rig::Worker| {
            !w.row("killed").await["checkpoint"]
                .as_str()
                .unwrap_or("")
                .is_empty()
        })
        .await;
    let log = worker.kill().await;
    let at_kill = rig.checkpoints().await;
    let checkpoint: u64 = at_kill
        .get("killed")
        .unwrap_or_else(|| panic!("a checkpoint exists after the kill: {at_kill:?}\n{log}"))
        .parse()
        .expect("numeric checkpoint");
    assert!(
        checkpoint < EVENTS,
        "killed mid-stream (checkpoint {checkpoint})"
    );

    let restarted = rig.start("").await;
    let row = restarted.row("killed").await;
    assert_eq!(
        row["checkpoint"],
        checkpoint.to_string(),
        "resumed from the checkpoint: {row}"
    );
    let records = rig.wait_all_ids(&[("killed", EVENTS)]).await;
    let ids = ids_of(&records, "killed");
    assert_complete_in_order("killed", &ids, EVENTS);
    // Duplicates come only from the window the checkpoint had not covered yet.
    let mut seen = std::collections::HashSet::new();
    let duplicates: Vec<u64> = ids.iter().copied().filter(|id| !seen.insert(*id)).collect();
    assert!(
        duplicates.iter().all(|id| *id > checkpoint),
        "an id at or below the checkpoint {checkpoint} was published twice: {duplicates:?}"
    );
    assert!(
        records
            .iter()
            .filter(|r| r.header("sse.id") == (checkpoint + 1).to_string())
            .count()
            <= 2
    );
    let (exit, log) = restarted.terminate().await;
    assert!(exit.success(), "{log}");
    assert!(
        log.contains(&format!("last_event_id={checkpoint}")),
        "the restarted worker sent Last-Event-ID {checkpoint}:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_for_30s_pauses_reading_loses_nothing_and_bounds_memory() {
    // The outage is a broker of the test's own: a private Apache Kafka killed with SIGKILL and
    // restarted on its log dirs under scripts/test, the mock's brokers down otherwise.
    let kafka = TestKafka::private().expect("a private broker");
    let rig = Rig::with_kafka("outage", kafka).await;
    let sim = sim_with(SimConfig {
        rate: 1000.0,
        history: 200_000,
        max_events: Some(120_000),
        heartbeat: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    rig.target(
        "outage",
        &format!("{}?last_event_id=0", sim.stream_url()),
        "",
    );
    let worker = rig.start("metrics:\n  per_target: all").await;
    rig.records_until(|records| records.len() >= 500).await;
    let pid = worker.pid();
    let rss_before = rss_bytes(pid);

    rig.kafka
        .broker_down(Outage::Kill)
        .await
        .expect("broker down");
    worker
        .wait_for("reading upstream to pause", async |w: &rig::Worker| {
            w.metric("sluice_upstream_paused{target=\"outage\"}").await == 1.0
        })
        .await;
    let mut rss_peak = rss_before;
    let outage_end = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < outage_end {
        rss_peak = rss_peak.max(rss_bytes(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let row = worker.row("outage").await;
    assert_eq!(row["delivery"], "paused", "{row}");
    rig.kafka
        .broker_up(Outage::Kill)
        .await
        .unwrap_or_else(|e| panic!("broker up: {e}\n{}", rig.kafka.broker_log_tail(40)));

    let head = sim.head();
    let records = rig.wait_all_ids(&[("outage", head)]).await;
    let ids = ids_of(&records, "outage");
    assert_eq!(
        first_occurrences(&ids)[..head as usize],
        (1..=head).collect::<Vec<u64>>()[..],
        "every event emitted up to the end of the outage is in kafka, in order"
    );
    let growth = rss_peak.saturating_sub(rss_before);
    assert!(
        growth < 64 * 1024 * 1024,
        "memory stayed bounded during the outage: grew {} KiB (before {} KiB, peak {} KiB)",
        growth / 1024,
        rss_before / 1024,
        rss_peak / 1024
    );
    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_stops_a_target_and_bad_responses_are_reported_not_fatal() {
    const EVENTS: u64 = 100;
    let sim = sim(EVENTS, 500.0).await;
    let rig = Rig::new("bad").await;
    let url = |q: &str| format!("{}?{q}", sim.stream_url());
    rig.target("t-204", &url("status=204"), "");
    rig.target("t-ctype", &url("content_type=text/plain"), "");
    rig.target(
        "t-oversized",
        &url("last_event_id=0&oversized_after_events=20&oversized_bytes=100000"),
        "limits:\n  max_event_bytes: 65536",
    );
    rig.target("t-healthy", &url("last_event_id=0"), "");
    let worker = rig.start("").await;

    let records = rig
        .wait_all_ids(&[("t-healthy", EVENTS), ("t-oversized", EVENTS)])
        .await;
    assert_complete_in_order("t-healthy", &ids_of(&records, "t-healthy"), EVENTS);
    // The oversized event is refused each time; resuming after the last good id loses nothing.
    assert_complete_in_order("t-oversized", &ids_of(&records, "t-oversized"), EVENTS);

    let stopped = worker.row("t-204").await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(
        stopped["last_error"].as_str().unwrap_or("").contains("204"),
        "{stopped}"
    );
    worker
        .wait_for(
            "the content-type error to be reported",
            async |w: &rig::Worker| {
                w.row("t-ctype").await["last_error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("wrong content type")
            },
        )
        .await;
    let metrics = worker.metrics().await;
    for (target, reason) in [("t-ctype", "protocol"), ("t-oversized", "protocol")] {
        let series = format!("sluice_reconnects_total{{reason=\"{reason}\",target=\"{target}\"}}");
        assert!(
            metric_value(&metrics, &series) >= 1.0,
            "{series}:\n{metrics}"
        );
    }
    assert_eq!(
        metric_value(
            &metrics,
            "sluice_target_state{state=\"stopped\",target=\"t-204\"}"
        ),
        1.0
    );
    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
    assert!(
        log.contains("sse event data larger than 65536 bytes"),
        "{log}"
    );
}

#[tokio::test]
async fn the_worker_refuses_invalid_config_with_the_validate_messages() {
    let dir = std::env::temp_dir().join(format!("sluice-worker-invalid-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("targets")).expect("dir");
    std::fs::write(
        dir.join("worker.yaml"),
        "kafka:\n  brokers: [127.0.0.1:1]\nhttp:\n  listen: 127.0.0.1:0\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("targets/a.yaml"),
        "id: a\nurl: ftp://example.com/\nproxy: {pool: nowhere}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("targets/b.yaml"),
        "id: b\nurl: http://example.com/\ncolour: blue\n",
    )
    .expect("write");
    let config = dir.join("worker.yaml");
    let run = |cmd: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([cmd, "--config"])
            .arg(&config)
            .output()
            .expect("run sluice")
    };
    let validate = run("validate");
    let worker = run("worker");
    assert_eq!(validate.status.code(), Some(1));
    assert_eq!(worker.status.code(), Some(1), "the worker refuses to start");
    let validate_err = String::from_utf8_lossy(&validate.stderr).into_owned();
    let worker_err = String::from_utf8_lossy(&worker.stderr).into_owned();
    assert!(validate_err.lines().count() >= 3, "{validate_err}");
    for line in validate_err.lines() {
        assert!(
            worker_err.contains(line),
            "worker output lacks {line:?}:\n{worker_err}"
        );
    }
    for field in ["url", "proxy", "colour"] {
        assert!(worker_err.contains(field), "{field} named:\n{worker_err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_while_kafka_is_down_and_the_producer_is_full_fails_cleanly_and_loses_nothing() {
    // A broker of the test's own, killed: the busy target fills the (small) producer queue, so
    // the quiet target's final checkpoint finds no room when SIGTERM comes.
    let kafka = TestKafka::private().expect("a private broker");
    let rig = Rig::with_kafka("full-stop", kafka).await;
    const QUIET: u64 = 9;
    const BUSY: u64 = 30_000;
    let quiet = sim_with(SimConfig {
        rate: 3.0,
        history: 100,
        max_events: Some(QUIET),
        heartbeat: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let busy = sim_with(SimConfig {
        rate: 2000.0,
        history: 100_000,
        max_events: Some(BUSY),
        heartbeat: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    rig.target(
        "quiet",
        &format!("{}?last_event_id=0", quiet.stream_url()),
        "",
    );
    rig.target(
        "busy",
        &format!("{}?last_event_id=0", busy.stream_url()),
        "",
    );
    let worker = rig
        .start_tuned(
            "metrics:\n  per_target: all",
            "    queue.buffering.max.messages: \"50\"\n",
            "3s",
            &[],
        )
        .await;
    // Every quiet event acknowledged (its checkpoint is paced, so the last one is not written
    // yet), then the broker dies and the busy target fills the queue.
    rig.records_until(|records| ids_of(records, "quiet").len() as u64 >= QUIET)
        .await;
    rig.kafka
        .broker_down(Outage::Kill)
        .await
        .expect("broker down");
    worker
        .wait_for(
            "the busy target to pause on a full queue",
            async |w: &rig::Worker| {
                w.metric("sluice_upstream_paused{target=\"busy\"}").await == 1.0
            },
        )
        .await;
    let (exit, log) = worker.terminate().await;
    assert!(!log.contains("panicked"), "no panic while stopping:\n{log}");
    assert!(
        !exit.success(),
        "a drain that could not finish is a failure: {exit:?}\n{log}"
    );
    assert!(
        !log.contains("checkpoints written"),
        "no claim of checkpoints that were not written:\n{log}"
    );
    assert!(
        log.contains("grace period"),
        "it says why it failed:\n{log}"
    );

    // Nothing is lost: back up, a new worker resumes both targets from their checkpoints.
    rig.kafka
        .broker_up(Outage::Kill)
        .await
        .unwrap_or_else(|e| panic!("broker up: {e}\n{}", rig.kafka.broker_log_tail(40)));
    let restarted = rig.start("").await;
    let records = rig.wait_all_ids(&[("quiet", QUIET), ("busy", BUSY)]).await;
    assert_complete_in_order(
        "quiet",
        &first_occurrences(&ids_of(&records, "quiet")),
        QUIET,
    );
    assert_complete_in_order("busy", &first_occurrences(&ids_of(&records, "busy")), BUSY);
    let (exit, log) = restarted.terminate().await;
    assert!(exit.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_topic_the_worker_may_not_read_is_retried_never_taken_for_missing() {
    // Only "unknown topic" means "no checkpoint was ever written". A broker that denies the
    // worker the topic (its SASL user has no ACLs yet) must not start the target fresh.
    let Some(rig) = acl_rig(
        "a_checkpoint_topic_the_worker_may_not_read_is_retried_never_taken_for_missing",
        "acl",
    )
    .await
    else {
        return;
    };
    let sim = sim_with(SimConfig {
        rate: 1000.0,
        history: 10_000,
        max_events: Some(100),
        heartbeat: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    sim.wait_for_head(100).await;
    // The checkpoint the worker must resume from, written by a client the broker trusts.
    let producer: rdkafka::producer::FutureProducer =
        rig.kafka.producer_config().create().expect("producer");
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&rig.checkpoints)
                .key("acl")
                .payload("40"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("checkpoint written");
    // The worker may write its events (so its idempotent producer gets a producer id) but may not
    // even describe the checkpoint topic.
    rig.kafka
        .grant_sasl_user(&[
            "--operation",
            "Write",
            "--operation",
            "Describe",
            "--topic",
            &rig.events,
        ])
        .await
        .expect("grant writes to the events topic");
    rig.target("acl", &sim.stream_url(), "");
    let worker = rig.spawn_worker("", "", "20s", &[]).await;
    worker
        .wait_for(
            "/readyz to say why it is not ready",
            async |w: &rig::Worker| {
                w.get("/readyz")
                    .await
                    .is_some_and(|(code, body)| code == 503 && body.contains("not readable"))
            },
        )
        .await;
    let (_, body) = worker.get("/readyz").await.expect("readyz");
    assert!(body.contains("authorization"), "{body}");
    assert!(
        worker
            .log()
            .contains("no target starts without its checkpoint"),
        "{}",
        worker.log()
    );

    rig.kafka
        .grant_sasl_user_everything()
        .await
        .expect("grant the worker's user");
    worker.wait_ready().await;
    let records = rig
        .records_until(|records| ids_of(records, "acl").contains(&100))
        .await;
    let ids = ids_of(&records, "acl");
    assert_eq!(
        ids.first(),
        Some(&41),
        "resumed after checkpoint 40, not from scratch: {ids:?}"
    );
    assert_eq!(
        first_occurrences(&ids),
        (41..=100).collect::<Vec<u64>>(),
        "every event after the checkpoint, in order"
    );
    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_makes_the_worker_exit_non_zero_instead_of_stopping_targets_for_good()
 {
    // The broker refuses the worker's idempotent producer its producer id (its SASL user has no
    // ACLs): librdkafka's producer is then dead for good. The worker must not sit "ready" with
    // every target stopped; it exits non-zero, so the orchestrator restarts it.
    let Some(rig) = acl_rig("a_fatal_producer_error_makes_the_worker_exit_non_zero_instead_of_stopping_targets_for_good", "fatal").await else {
        return;
    };
    let sim = sim(100, 500.0).await;
    rig.target("fatal", &sim.stream_url(), "");
    let worker = rig.spawn_worker("", "", "5s", &[]).await;
    let (exit, log) = worker.exited().await;
    assert!(!exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("failed fatally"), "it says why:\n{log}");
    assert!(
        !log.contains("checkpoints read; starting targets")
            || log.contains("the kafka producer failed fatally: stopping the worker"),
        "{log}"
    );
}

/// A rig on a private broker that enforces ACLs, its worker on the SASL_SSL listener with no
/// rights yet; `None` (skipped, or a failure under strict mode) without a real broker.
async fn acl_rig(test: &str, name: &str) -> Option<Rig> {
    let Some(kafka) = TestKafka::private_with_acls() else {
        sluice_testkit::skip_or_fail(test, "needs a real broker with ACLs (run scripts/test)");
        return None;
    };
    let kafka = kafka.expect("a private broker with ACLs");
    let sasl = kafka
        .sasl()
        .expect("a scripts/kafka broker")
        .expect("its SASL listener");
    Some(Rig::with_sasl(name, kafka, sasl).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_topic_that_is_not_compacted_is_refused_at_start() {
    // Retention on a `delete` topic would remove the checkpoints of quiet targets. The mock
    // cluster cannot describe topic configs, so this needs the real broker.
    if !sluice_testkit::is_real_broker_run() {
        sluice_testkit::skip_or_fail(
            "a_checkpoint_topic_that_is_not_compacted_is_refused_at_start",
            "needs a real broker (run scripts/test)",
        );
        return;
    }
    let mut rig = Rig::new("plain-ckpt").await;
    rig.checkpoints = sluice_testkit::unique_topic("plain-ckpt.checkpoints");
    rig.kafka
        .create_topic(&rig.checkpoints, 1, false)
        .await
        .expect("a checkpoint topic without compaction");
    let sim = sim(10, 100.0).await;
    rig.target("plain", &sim.stream_url(), "");
    let worker = rig.spawn_worker("", "", "5s", &[]).await;
    let (exit, log) = worker.exited().await;
    assert!(!exit.success(), "{log}");
    assert!(
        log.contains("cleanup.policy=delete; it must be compact"),
        "it names the topic's policy:\n{log}"
    );
}
