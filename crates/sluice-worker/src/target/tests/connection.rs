//! The connection under the paused clock: backoff, `retry:`, Retry-After, the idle watchdog,
//! rotation and its replay matching, the status following the phase, a missing secret.

use super::*;

#[tokio::test(start_paused = true)]
async fn failed_attempts_back_off_within_the_jittered_exponential_bounds() {
    let mut t = Target::start(config(), FakeKafka::acking(), None);
    let mut last = t.attempt().await;
    let mut total = Duration::ZERO;
    for k in 0..8u32 {
        let at = last.at;
        last.fail(transport("refused"));
        last = t.attempt().await;
        let waited = last.at - at;
        // initial 100 ms, doubling, capped at 2 s; the jitter is in [0, ceiling].
        let ceiling = (Duration::from_millis(100) * 2u32.pow(k)).min(Duration::from_secs(2));
        assert!(
            waited <= ceiling,
            "attempt {k}: waited {waited:?} > {ceiling:?}"
        );
        total += waited;
    }
    assert!(total > Duration::ZERO, "jitter is not always zero");
    assert_eq!(t.status.state(), State::Connecting);
    assert!(t.reconnects(DisconnectReason::Reset) >= 8);
}

#[tokio::test(start_paused = true)]
async fn a_retry_field_sets_the_floor_of_the_next_reconnect_and_is_capped() {
    let mut t = Target::start(config(), FakeKafka::acking(), None);
    let body = t.attempt().await.open();
    body.send("retry: 3000\ndata: a\n\n");
    t.kafka.until_events(1).await;
    drop(body);
    let closed = Instant::now();
    let next = t.attempt().await;
    assert!(next.at - closed >= Duration::from_secs(3));
    assert!(next.at - closed <= Duration::from_secs(3) + Duration::from_millis(10));

    // A server cannot park a target for years: `retry:` is capped at an hour.
    let body = next.open();
    body.send("retry: 99999999999999\ndata: b\n\n");
    t.kafka.until_events(2).await;
    drop(body);
    let closed = Instant::now();
    let next = t.attempt().await;
    assert_eq!(next.at - closed, sluice_client::MAX_SERVER_DELAY);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_a_503_delays_the_next_attempt() {
    let mut t = Target::start(config(), FakeKafka::acking(), None);
    let first = t.attempt().await;
    let at = first.at;
    first.fail(ConnectError::Status {
        status: 503,
        retry_after: Some(Duration::from_secs(7)),
    });
    let next = t.attempt().await;
    assert!(next.at - at >= Duration::from_secs(7));
    assert_eq!(t.reconnects(DisconnectReason::HttpStatus), 1);
}

#[tokio::test(start_paused = true)]
async fn the_idle_watchdog_reconnects_a_silent_stream_but_not_one_with_heartbeats() {
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_secs(5);
    let mut t = Target::start(cfg, FakeKafka::acking(), None);
    let body = t.attempt().await.open();
    // Heartbeats every 2 s for 20 s keep it open.
    for _ in 0..10 {
        body.send(":\n");
        sleep(Duration::from_secs(2)).await;
        assert!(
            t.attempts.try_recv().is_err(),
            "reconnected despite heartbeats"
        );
    }
    assert_eq!(t.status.state(), State::Streaming);
    // Then silence: the watchdog fires 5 s after the last byte, and the stream is reopened
    // (its body is still open: the watchdog, not the server, ended it).
    let silent_since = Instant::now() - Duration::from_secs(2);
    let next = t.attempt().await;
    assert!(next.at - silent_since >= Duration::from_secs(5));
    assert!(next.at - silent_since <= Duration::from_secs(5) + Duration::from_millis(150));
    assert_eq!(t.reconnects(DisconnectReason::SilentDrop), 1);
    drop(body);
}

/// Runs a rotation: the old stream sends `before`, the replacement is requested at the
/// connection's age minus the margin, the old stream sends `during` while it connects, then the
/// replacement sends `replacement`. Returns what reached Kafka and the replacement's attempt.
async fn rotate(
    before: &str,
    during: &str,
    replacement: &str,
    events: usize,
) -> (Vec<String>, Duration, String) {
    let mut cfg = config();
    cfg.max_connection_age = Some(Duration::from_secs(50));
    cfg.idle_timeout = Duration::from_secs(600);
    let mut t = Target::start(cfg, FakeKafka::acking(), None);
    let first = t.attempt().await;
    let opened = first.at;
    let old = first.open();
    old.send(before);
    let second = t.attempt().await;
    assert_eq!(second.slot, Slot::FreeNow);
    let due = second.at - opened;
    let resumed_from = second.last_event_id.clone();
    old.send(during);
    // Let the old stream's events be read before the replacement answers.
    tokio::task::yield_now().await;
    sleep(Duration::from_millis(1)).await;
    let new = second.open();
    new.send(replacement);
    t.kafka.until_events(events).await;
    assert_eq!(t.reconnects(DisconnectReason::Rotate), 1);
    drop((old, new));
    (t.kafka.events(), due, resumed_from)
}

#[tokio::test(start_paused = true)]
async fn rotation_opens_the_replacement_ahead_of_the_age_and_drops_provable_replays() {
    let (events, due, from) = rotate(
        "id: 1\ndata: a\n\nid: 2\ndata: b\n\n",
        "id: 3\ndata: c\n\nid: 4\ndata: d\n\n",
        "id: 3\ndata: c\n\nid: 4\ndata: d\n\nid: 5\ndata: e\n\n",
        5,
    )
    .await;
    // 50 s age, margin min(age / 5, 10 s) = 10 s.
    assert_eq!(due, Duration::from_secs(40));
    assert_eq!(from, "2");
    assert_eq!(events, ["a", "b", "c", "d", "e"]);
}

#[tokio::test(start_paused = true)]
async fn rotation_never_drops_new_events_of_an_upstream_without_ids() {
    // The replacement does not replay (no ids to resume from): its events are all new.
    let (events, _, _) = rotate(
        "data: a\n\n",
        "data: b\n\ndata: c\n\n",
        "data: d\n\ndata: e\n\n",
        5,
    )
    .await;
    assert_eq!(events, ["a", "b", "c", "d", "e"]);
}

#[tokio::test(start_paused = true)]
async fn rotation_never_drops_new_events_when_ids_are_on_some_events_only() {
    // "c" carries id 3 forward; so does the replacement's new "d".
    let (events, _, _) = rotate(
        "id: 1\ndata: a\n\n",
        "id: 3\ndata: b\n\ndata: c\n\n",
        "data: d\n\n",
        4,
    )
    .await;
    assert_eq!(events, ["a", "b", "c", "d"]);
}

#[tokio::test(start_paused = true)]
async fn rotation_never_drops_new_events_when_ids_repeat() {
    let (events, _, _) = rotate(
        "id: x\ndata: a\n\n",
        "id: y\ndata: b\n\nid: y\ndata: c\n\n",
        "id: y\ndata: d\n\nid: y\ndata: e\n\n",
        5,
    )
    .await;
    assert_eq!(events, ["a", "b", "c", "d", "e"]);
}

#[tokio::test(start_paused = true)]
async fn the_first_checkpoint_is_written_at_once_then_paced() {
    let mut t = Target::start(config(), FakeKafka::acking(), Some("0"));
    let started = Instant::now();
    let first = t.attempt().await;
    assert_eq!(first.last_event_id, "0");
    let body = first.open();
    for i in 1..=130 {
        body.send(&format!("id: {i}\ndata: {i}\n\n"));
        sleep(Duration::from_millis(100)).await;
    }
    let checkpoints = t.kafka.checkpoints();
    let (first_id, first_at) = checkpoints.first().cloned().unwrap();
    assert_eq!(first_id, "1");
    assert!(first_at - started < Duration::from_millis(50));
    for pair in checkpoints.windows(2) {
        assert!(
            pair[1].1 - pair[0].1 >= CHECKPOINT_INTERVAL,
            "{checkpoints:?}"
        );
    }
    // 13 s of events: the first at once, then one per interval.
    assert_eq!(checkpoints.len(), 3);
    drop(body);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_target_drains_then_writes_its_final_checkpoint() {
    let kafka = FakeKafka::holding();
    let mut t = Target::start(config(), kafka.clone(), None);
    let body = t.attempt().await.open();
    body.send("id: 1\ndata: a\n\nid: 2\ndata: b\n\n");
    kafka.until_events(2).await;
    t.stop.stop();
    // Kafka has not answered: the target cannot end (and writes no checkpoint past them).
    sleep(Duration::from_secs(30)).await;
    assert!(!t.task.is_finished());
    assert!(kafka.checkpoints().is_empty());
    assert_eq!(t.status.state(), State::Stopped);
    kafka.release();
    tokio::time::timeout(Duration::from_secs(1), &mut t.task)
        .await
        .unwrap()
        .unwrap();
    let checkpoints = kafka.checkpoints();
    assert_eq!(checkpoints.last().map(|c| c.0.as_str()), Some("2"));
    assert_eq!(t.status.checkpoint().as_deref(), Some("2"));
    // Nothing was read after the stop.
    body.send("id: 3\ndata: c\n\n");
    assert_eq!(kafka.events(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn the_status_state_follows_the_phase() {
    let mut t = Target::start(config(), FakeKafka::acking(), None);
    let first = t.attempt().await;
    assert_eq!(t.status.state(), State::Connecting);
    let body = first.open();
    body.send("data: a\n\n");
    t.kafka.until_events(1).await;
    assert_eq!(t.status.state(), State::Streaming);
    body.0
        .send(Err(StreamError::Broken {
            url: "http://upstream.test/stream".to_owned(),
            detail: "reset".to_owned(),
        }))
        .unwrap();
    let _next = t.attempt().await;
    assert_eq!(t.reconnects(DisconnectReason::Reset), 1);
    t.stop.stop();
    tokio::time::timeout(Duration::from_secs(1), &mut t.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.status.state(), State::Stopped);
}

#[test]
fn a_missing_secret_is_its_own_error_kind() {
    let mut cfg = config();
    cfg.auth.bearer = Some(SecretRef::Env(
        "SLUICE_TEST_UNSET_TOKEN_VARIABLE".to_owned(),
    ));
    let shared = Arc::new(crate::Shared {
        transports: crate::pool::Transports::default(),
        pools: Default::default(),
        hosts: crate::pool::HostLimits::new(4),
        tokens: Default::default(),
        lanes: crate::lanes::Lanes::new(100),
    });
    let mut upstream = crate::target::HttpUpstream::new(shared, Arc::new(cfg));
    let Err(error) = upstream.attempt("", Slot::Wait) else {
        panic!("an attempt without its secret started");
    };
    assert_eq!(error.kind(), "missing_secret");
    assert_eq!(
        error.to_string(),
        "cannot read a secret: secret env var SLUICE_TEST_UNSET_TOKEN_VARIABLE is not set"
    );
    assert!(error.needs_operator());
}
