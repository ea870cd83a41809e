//! The target task under tokio's paused clock, with fake upstream and Kafka edges: backoff
//! with jitter bounds, `retry:`, Retry-After, the idle watchdog, rotation timing and its replay
//! matching, checkpoint pacing, and stopping. No sockets: a paused clock over real sockets
//! gives spurious timeouts.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{ConnectError, DisconnectReason, StreamError};
use sluice_config::{Auth, Backoff, RecordKey, SecretRef, TargetConfig, TargetId};
use sluice_publish::{Delivered, PublishError, RecordMeta, TrySendError};
use sluice_sse::{Event, Limits};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use super::upstream::{Attempt, Body, SetupError, Slot, Upstream};
use super::{CHECKPOINT_INTERVAL, Kafka, Launch, run};
use crate::State;
use crate::status::TargetStatus;
use crate::stop::StopSignal;

// ---- the fake upstream -------------------------------------------------------------------

/// One connection attempt the target made, answered by the test.
struct Seen {
    last_event_id: String,
    slot: Slot,
    at: Instant,
    reply: oneshot::Sender<Result<FakeBody, ConnectError>>,
}

impl Seen {
    /// Answers with an open stream; returns the sender of its body.
    fn open(self) -> Chunks {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.reply.send(Ok(FakeBody { chunks: rx }));
        Chunks(tx)
    }

    fn fail(self, error: ConnectError) {
        let _ = self.reply.send(Err(error));
    }
}

/// The test's end of an open stream's body (dropped: the server closes it).
struct Chunks(mpsc::UnboundedSender<Result<Option<Bytes>, StreamError>>);

impl Chunks {
    fn send(&self, text: &str) {
        let _ = self
            .0
            .send(Ok(Some(Bytes::copy_from_slice(text.as_bytes()))));
    }
}

struct FakeUpstream {
    attempts: mpsc::UnboundedSender<Seen>,
}

impl Upstream for FakeUpstream {
    type Body = FakeBody;

    fn attempt(
        &mut self,
        last_event_id: &str,
        slot: Slot,
    ) -> Result<Attempt<FakeBody>, SetupError> {
        let (reply, answer) = oneshot::channel();
        let _ = self.attempts.send(Seen {
            last_event_id: last_event_id.to_owned(),
            slot,
            at: Instant::now(),
            reply,
        });
        Ok(Attempt {
            proxy_shown: None,
            future: Box::pin(async move {
                answer
                    .await
                    .unwrap_or_else(|_| Err(transport("the test dropped the attempt")))
            }),
        })
    }

    fn report(&mut self, _transport_ok: bool) {}
}

struct FakeBody {
    chunks: mpsc::UnboundedReceiver<Result<Option<Bytes>, StreamError>>,
}

impl Body for FakeBody {
    fn version(&self) -> http::Version {
        http::Version::HTTP_11
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(chunk),
            Poll::Ready(None) => Poll::Ready(Ok(None)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn transport(detail: &str) -> ConnectError {
    ConnectError::Transport {
        url: "http://upstream.test/stream".to_owned(),
        detail: detail.to_owned(),
    }
}

// ---- the fake Kafka ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Event { id: String, data: String },
    Checkpoint { id: String, at: Instant },
}

type Reply = oneshot::Sender<Result<Delivered, PublishError>>;

/// Records what the target sent; acknowledges at once, or holds the answers until released.
struct FakeKafka {
    sent: Mutex<Vec<Sent>>,
    held: Mutex<Option<Vec<Reply>>>,
    changed: watch::Sender<usize>,
    /// Event data -> how many more sends of it fail (with a retryable error).
    failing: Mutex<std::collections::HashMap<String, u32>>,
    /// While set, the producer queue is full; counts the sends it refused.
    full: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicU64,
}

impl FakeKafka {
    fn acking() -> Arc<FakeKafka> {
        Arc::new(FakeKafka {
            sent: Mutex::new(Vec::new()),
            held: Mutex::new(None),
            changed: watch::Sender::new(0),
            failing: Mutex::new(Default::default()),
            full: Default::default(),
            refused: Default::default(),
        })
    }

    /// Holds every answer until [`FakeKafka::release`].
    fn holding() -> Arc<FakeKafka> {
        let kafka = FakeKafka::acking();
        *kafka.held.lock().unwrap() = Some(Vec::new());
        kafka
    }

    /// Answers everything held, and from now on answers at once.
    fn release(&self) {
        for reply in self.held.lock().unwrap().take().unwrap_or_default() {
            let _ = reply.send(Ok(Delivered {
                partition: 0,
                offset: 0,
            }));
        }
    }

    fn record(&self, sent: Sent) -> FakeAck {
        self.sent.lock().unwrap().push(sent);
        self.changed.send_modify(|n| *n += 1);
        let (tx, rx) = oneshot::channel();
        match self.held.lock().unwrap().as_mut() {
            Some(held) => held.push(tx),
            None => {
                let _ = tx.send(Ok(Delivered {
                    partition: 0,
                    offset: 0,
                }));
            }
        }
        FakeAck(rx)
    }

    fn events(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Sent::Event { data, .. } => Some(data.clone()),
                Sent::Checkpoint { .. } => None,
            })
            .collect()
    }

    fn checkpoints(&self) -> Vec<(String, Instant)> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Sent::Checkpoint { id, at } => Some((id.clone(), *at)),
                Sent::Event { .. } => None,
            })
            .collect()
    }

    /// Waits until `events` event records were sent (a minute of the paused clock at most:
    /// a test whose events never come fails, it does not hang).
    async fn until_events(&self, events: usize) {
        let mut changed = self.changed.subscribe();
        let waited = tokio::time::timeout(
            Duration::from_secs(60),
            changed.wait_for(|_| self.events().len() >= events),
        )
        .await;
        assert!(
            waited.is_ok(),
            "{events} events never reached kafka; got {:?}",
            self.events()
        );
    }
}

struct FakeAck(oneshot::Receiver<Result<Delivered, PublishError>>);

impl std::future::Future for FakeAck {
    type Output = Result<Delivered, PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The fake was dropped: never answered.
            Poll::Ready(Err(_)) => Poll::Pending,
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Kafka for FakeKafka {
    type Ack = FakeAck;

    fn send_event(
        &self,
        _topic: &str,
        _key: &[u8],
        event: &Event,
        _meta: &RecordMeta<'_>,
    ) -> Result<FakeAck, TrySendError> {
        if self.full.load(std::sync::atomic::Ordering::Relaxed) {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(TrySendError::QueueFull);
        }
        if let Some(left) = self.failing.lock().unwrap().get_mut(event.data.as_str())
            && *left > 0
        {
            *left -= 1;
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Err(PublishError::Delivery(
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
                ),
            )));
            return Ok(FakeAck(rx));
        }
        Ok(self.record(Sent::Event {
            id: event.id.as_str().to_owned(),
            data: event.data.as_str().to_owned(),
        }))
    }

    fn write_checkpoint(
        &self,
        _target: &TargetId,
        event_id: &str,
    ) -> Result<FakeAck, TrySendError> {
        Ok(self.record(Sent::Checkpoint {
            id: event_id.to_owned(),
            at: Instant::now(),
        }))
    }

    fn answered(&self) {}

    fn room(&self) -> super::in_flight::BoxFuture<()> {
        Box::pin(std::future::pending())
    }
}

// ---- the harness -------------------------------------------------------------------------

fn config() -> TargetConfig {
    TargetConfig {
        id: "t".parse().unwrap(),
        file: PathBuf::new(),
        url: "http://upstream.test/stream".parse().unwrap(),
        headers: Vec::new(),
        auth: Auth::default(),
        proxy: None,
        root_certificates_pem: Vec::new(),
        client_identity: None,
        idle_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            reset_after: Duration::from_secs(30),
        },
        max_connection_age: None,
        max_redirects: 5,
        limits: Limits::default(),
        topic: "events".to_owned(),
        key: RecordKey::Target,
        event_types: Vec::new(),
        enabled: true,
        cloudevents: false,
        compression: true,
        method: http::Method::GET,
        body: None,
        aggregate: None,
    }
}

struct Target {
    attempts: mpsc::UnboundedReceiver<Seen>,
    kafka: Arc<FakeKafka>,
    status: Arc<TargetStatus>,
    stop: Arc<StopSignal>,
    task: JoinHandle<()>,
}

impl Target {
    fn start(config: TargetConfig, kafka: Arc<FakeKafka>, resume_from: Option<&str>) -> Target {
        let (tx, attempts) = mpsc::unbounded_channel();
        let config = Arc::new(config);
        let status = Arc::new(TargetStatus::new(
            config.id.clone(),
            config.url.to_string(),
            config.topic.clone(),
            Instant::now(),
        ));
        let stop = Arc::new(StopSignal::new());
        let task = tokio::spawn(run(Launch {
            upstream: FakeUpstream { attempts: tx },
            kafka: kafka.clone(),
            config,
            status: status.clone(),
            resume_from: resume_from.map(str::to_owned),
            start_delay: Duration::ZERO,
            stop: stop.clone(),
        }));
        Target {
            attempts,
            kafka,
            status,
            stop,
            task,
        }
    }

    async fn attempt(&mut self) -> Seen {
        self.attempts.recv().await.unwrap()
    }

    fn reconnects(&self, reason: DisconnectReason) -> u64 {
        self.status
            .reconnects_by_reason()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| n)
    }
}

// ---- the tests ---------------------------------------------------------------------------

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
    let mut upstream = super::HttpUpstream::new(shared, Arc::new(cfg));
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

#[tokio::test(start_paused = true)]
async fn an_id_with_control_characters_is_published_and_never_becomes_the_resume_point() {
    let mut t = Target::start(config(), FakeKafka::acking(), None);
    let body = t.attempt().await.open();
    body.send("id: 1\ndata: a\n\nid: 2\u{1}x\ndata: b\n\n");
    t.kafka.until_events(2).await;
    drop(body);
    // The event is in Kafka with its id as sent; the reconnect resumes after the last id that
    // can be a header value, so "b" is replayed (a duplicate), never lost.
    let next = t.attempt().await;
    assert_eq!(next.last_event_id, "1");
    assert_eq!(t.kafka.events(), ["a", "b"]);
    let ids: Vec<String> = t
        .kafka
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Sent::Event { id, .. } => Some(id.clone()),
            Sent::Checkpoint { .. } => None,
        })
        .collect();
    assert_eq!(ids, ["1", "2\u{1}x"]);
    assert!(
        t.kafka.checkpoints().iter().all(|(id, _)| id == "1"),
        "{:?}",
        t.kafka.checkpoints()
    );
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_that_cannot_be_sent_starts_the_target_without_it() {
    let mut t = Target::start(config(), FakeKafka::acking(), Some("bad\u{7f}"));
    assert_eq!(t.attempt().await.last_event_id, "");
}

#[tokio::test(start_paused = true)]
async fn a_busy_target_checkpoints_every_second_so_a_crash_replays_little() {
    let mut t = Target::start(config(), FakeKafka::acking(), None);
    let started = Instant::now();
    let body = t.attempt().await.open();
    // 200 events a second for 10 s.
    for i in 1..=2000 {
        body.send(&format!("id: {i}\ndata: {i}\n\n"));
        if i % 20 == 0 {
            sleep(Duration::from_millis(100)).await;
        }
    }
    let checkpoints = t.kafka.checkpoints();
    for pair in checkpoints.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= super::checkpoint::CHECKPOINT_MIN_INTERVAL,
            "{checkpoints:?}"
        );
        assert!(gap <= Duration::from_millis(1100), "{checkpoints:?}");
    }
    assert!(checkpoints[0].1 - started < Duration::from_millis(50));
    assert!((9..=11).contains(&checkpoints.len()), "{checkpoints:?}");
    drop(body);
}

#[tokio::test(start_paused = true)]
async fn failed_deliveries_are_sent_again_in_order() {
    let kafka = FakeKafka::acking();
    // "b" fails twice, "c" to "e" once: sent again each on its own timer, "c".."e" would
    // overtake "b".
    kafka.failing.lock().unwrap().extend([
        ("b".to_owned(), 2),
        ("c".to_owned(), 1),
        ("d".to_owned(), 1),
        ("e".to_owned(), 1),
    ]);
    let mut t = Target::start(config(), kafka.clone(), None);
    let body = t.attempt().await.open();
    body.send("id: 1\ndata: a\n\n");
    kafka.until_events(1).await;
    body.send("id: 2\ndata: b\n\nid: 3\ndata: c\n\nid: 4\ndata: d\n\nid: 5\ndata: e\n\n");
    kafka.until_events(5).await;
    assert_eq!(kafka.events(), ["a", "b", "c", "d", "e"]);
    assert_eq!(t.status.delivery_errors.get(), 5);
    body.send("id: 6\ndata: f\n\n");
    kafka.until_events(6).await;
    assert_eq!(t.status.delivery(), crate::Delivery::Ok);
    drop(body);
}

#[tokio::test(start_paused = true)]
async fn a_target_blocked_on_a_full_producer_waits_instead_of_polling() {
    let kafka = FakeKafka::acking();
    kafka.full.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut t = Target::start(config(), kafka.clone(), None);
    let body = t.attempt().await.open();
    body.send("id: 1\ndata: a\n\n");
    sleep(Duration::from_secs(10)).await;
    // Nothing of its own in flight: it waits for another answer (none comes here), trying
    // again every 2 s at most; a 10 ms poll would have tried a thousand times.
    let refused = kafka.refused.load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=7).contains(&refused), "{refused} sends refused");
    assert_eq!(t.status.delivery(), crate::Delivery::Paused);
    kafka
        .full
        .store(false, std::sync::atomic::Ordering::Relaxed);
    kafka.until_events(1).await;
    drop(body);
}
