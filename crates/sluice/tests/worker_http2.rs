//! `sluice worker` over HTTP/2: targets on one HTTPS host that offers `h2` by ALPN share one
//! HTTP/2 connection (one stream each), and an HTTPS host that offers only HTTP/1.1 still works
//! (one connection per target), and targets that stop reading do not starve the others sharing
//! their connection. The upstream is the simulator behind the test HTTPS front of
//! `support::h2`, Kafka is the rig's (mock cluster, or `SLUICE_TEST_KAFKA`); events are counted by
//! id and none may be lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;
mod support;

use rig::{Rig, Worker, assert_complete_in_order, first_occurrences, ids_of, sim};
use sluice_testkit::TestKafka;
use support::h2::{H2Front, Offer};

/// Events per target. The simulator's stream never ends (heartbeats follow the last event), so
/// every event that reaches Kafka also proves the front streams bodies instead of buffering them.
const EVENTS: u64 = 400;

/// Starts a worker with one target per entry of `queries` (extra query text for the stream URL),
/// all on `front`, and waits until every id of every target is in Kafka, in order. Returns the
/// worker and the target ids.
async fn run_targets(rig: &Rig, front: &H2Front, queries: &[&str]) -> (Worker, Vec<String>) {
    let ids: Vec<String> = (0..queries.len()).map(|i| format!("t{i}")).collect();
    for (id, query) in ids.iter().zip(queries) {
        rig.target(
            id,
            // `last_event_id=0`: the first connection replays from event 1, however late it is.
            &format!("{}/v1/stream?last_event_id=0{query}", front.url()),
            &format!("tls:\n  ca_file: {}", front.ca().display()),
        );
    }
    let worker = rig.start("").await;
    let expected: Vec<(&str, u64)> = ids.iter().map(|id| (id.as_str(), EVENTS)).collect();
    let records = rig.wait_all_ids(&expected).await;
    for id in &ids {
        assert_complete_in_order(id, &ids_of(&records, id), EVENTS);
    }
    (worker, ids)
}

/// Every target's `/status` row names `version` as its connection's HTTP version.
async fn assert_versions(worker: &Worker, ids: &[String], version: &str) {
    for id in ids {
        let row = worker.row(id).await;
        assert_eq!(row["state"], "streaming", "{row}");
        assert_eq!(row["http_version"], version, "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_on_one_h2_host_share_one_connection() {
    const TARGETS: usize = 8;
    let sim = sim(EVENTS, 400.0).await;
    let rig = Rig::new("http2").await;
    let front = H2Front::start(&sim, &rig.dir, Offer::Http2).await;
    // One target's upstream ends its stream every 150 events: it reconnects (resuming with
    // `Last-Event-ID`) while the others stream, and must come back on the same connection.
    let mut queries = vec![""; TARGETS];
    queries[0] = "&close_after_events=150";
    let (worker, ids) = run_targets(&rig, &front, &queries).await;
    assert_versions(&worker, &ids, "HTTP/2.0").await;
    let reconnects = worker.row("t0").await["reconnects"]
        .as_u64()
        .expect("reconnect count");
    assert!(reconnects >= 2, "t0 reconnected after 150 and 300 events");

    let stats = front.stats();
    eprintln!("h2 front: {stats:?}");
    let targets = TARGETS as u64;
    assert_eq!(stats.http11_requests + stats.other_requests, 0, "{stats:?}");
    assert!(stats.http2_requests >= targets + reconnects, "{stats:?}");
    // The targets share a transport, and the first connection to the host is made alone, so the
    // others (and t0's reconnects) find its HTTP/2 connection in the pool: one TCP connection
    // carries every stream.
    assert_eq!(stats.tcp_accepted, 1, "one TCP connection: {stats:?}");
    assert_eq!(stats.alpn_h2, 1, "{stats:?}");
    assert_eq!(stats.connections_with_requests, 1, "{stats:?}");
    assert!(
        stats.max_open_streams_on_one_connection >= targets,
        "every target's stream open at once on the one connection: {stats:?}"
    );

    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_only_tls_host_gets_one_connection_per_target() {
    const TARGETS: usize = 3;
    let sim = sim(EVENTS, 400.0).await;
    let rig = Rig::new("http11").await;
    let front = H2Front::start(&sim, &rig.dir, Offer::Http11Only).await;
    let (worker, ids) = run_targets(&rig, &front, &[""; TARGETS]).await;
    assert_versions(&worker, &ids, "HTTP/1.1").await;

    let stats = front.stats();
    eprintln!("http/1.1 front: {stats:?}");
    let targets = TARGETS as u64;
    assert_eq!(stats.http2_requests + stats.other_requests, 0, "{stats:?}");
    assert_eq!(stats.alpn_h2, 0, "{stats:?}");
    assert!(stats.http11_requests >= targets, "{stats:?}");
    // An HTTP/1.1 response that never ends holds its connection: one per target.
    assert!(stats.connections_with_requests >= targets, "{stats:?}");
    assert_eq!(stats.max_open_streams_on_one_connection, 1, "{stats:?}");

    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_that_stop_reading_do_not_starve_the_others_on_their_h2_connection() {
    const TEST: &str = "targets_that_stop_reading_do_not_starve_the_others_on_their_h2_connection";
    // Three targets stop reading (Kafka refuses their topic: the broker denies the worker's
    // user writes to it) while their upstreams push as fast as they can; three others on the
    // same HTTP/2 connection must keep streaming. An unread stream holds its share of the
    // connection's flow-control window: with hyper's defaults (2 MiB per stream, 5 MiB per
    // connection) three of them take it all.
    let Some(kafka) = TestKafka::private_with_acls() else {
        sluice_testkit::skip_or_fail(TEST, "needs a real broker with ACLs (run scripts/test)");
        return;
    };
    let kafka = kafka.expect("a private broker with ACLs");
    let sasl = kafka
        .sasl()
        .expect("a scripts/kafka broker")
        .expect("its SASL listener");
    let rig = Rig::with_sasl("h2-stall", kafka, sasl).await;
    let denied = sluice_testkit::unique_topic("h2-stall.denied");
    rig.kafka
        .create_topic(&denied, 1, false)
        .await
        .expect("the topic the worker may not write");
    for acl in [
        &[
            "--operation",
            "Write",
            "--operation",
            "Describe",
            "--topic",
            &rig.events,
        ][..],
        &["--operation", "All", "--topic", &rig.checkpoints][..],
    ] {
        rig.kafka.grant_sasl_user(acl).await.expect("grant");
    }
    let sim = sim(100_000_000, 400.0).await;
    let front = H2Front::start(&sim, &rig.dir, Offer::Http2).await;
    let tls = format!("tls:\n  ca_file: {}", front.ca().display());
    let stalled = ["stalled0", "stalled1", "stalled2"];
    let live = ["live0", "live1", "live2"];
    for id in stalled {
        rig.target(
            id,
            &format!("{}/v1/stream?firehose=1", front.url()),
            &format!("{tls}\ntopic: {denied}"),
        );
    }
    for id in live {
        rig.target(id, &format!("{}/v1/stream", front.url()), &tls);
    }
    let worker = rig.spawn_worker("", "", "5s", &[]).await;
    for id in stalled {
        worker
            .wait_for(&format!("{id} to stop reading"), async |w: &Worker| {
                let status = w.status().await;
                status["targets"].as_array().is_some_and(|rows| {
                    rows.iter().any(|row| {
                        row["target"] == id
                            && (row["delivery"] == "failed" || row["delivery"] == "retrying")
                    })
                })
            })
            .await;
    }
    // From here on the stalled streams are not read; the live ones must keep going.
    let counts = |records: &[rig::Rec]| -> Vec<usize> {
        live.iter()
            .map(|id| first_occurrences(&ids_of(records, id)).len())
            .collect()
    };
    let before = counts(&rig.records_until(|_| true).await);
    let records = rig
        .records_until(|records| {
            counts(records)
                .iter()
                .zip(&before)
                .all(|(now, then)| *now >= then + 2000)
        })
        .await;
    for id in live {
        let ids = ids_of(&records, id);
        let first = first_occurrences(&ids);
        let start = *first.first().expect("live events");
        assert_eq!(
            first,
            (start..start + first.len() as u64).collect::<Vec<u64>>(),
            "{id}: no gap"
        );
    }
    let stats = front.stats();
    eprintln!("h2 front: {stats:?}");
    assert_eq!(
        stats.connections_with_requests, 1,
        "every target shares the one connection: {stats:?}"
    );
    assert!(stats.max_open_streams_on_one_connection >= 6, "{stats:?}");
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_beyond_a_hosts_stream_limit_stream_on_another_connection() {
    // The host allows 10 streams per connection; hyper would queue the 11th stream for ever on
    // the first connection. With `streams_per_connection: 10` 25 targets take three.
    const TARGETS: usize = 25;
    let sim = sim(EVENTS, 400.0).await;
    let rig = Rig::new("h2-lanes").await;
    let front = H2Front::start(&sim, &rig.dir, Offer::Http2Streams(10)).await;
    let ids: Vec<String> = (0..TARGETS).map(|i| format!("t{i:02}")).collect();
    for id in &ids {
        rig.target(
            id,
            &format!("{}/v1/stream?last_event_id=0", front.url()),
            &format!("tls:\n  ca_file: {}", front.ca().display()),
        );
    }
    let worker = rig
        .start_with_env("", &[("SLUICE__DEFAULTS__STREAMS_PER_CONNECTION", "10")])
        .await;
    let expected: Vec<(&str, u64)> = ids.iter().map(|id| (id.as_str(), EVENTS)).collect();
    let records = rig.wait_all_ids(&expected).await;
    for id in &ids {
        assert_complete_in_order(id, &ids_of(&records, id), EVENTS);
    }
    let stats = front.stats();
    eprintln!("h2 front: {stats:?}");
    assert_eq!(stats.connections_with_requests, 3, "{stats:?}");
    assert!(stats.max_open_streams_on_one_connection <= 10, "{stats:?}");
    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
}
