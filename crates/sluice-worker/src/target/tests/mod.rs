//! The target task under tokio's paused clock, with fake upstream and Kafka edges: backoff
//! with jitter bounds, `retry:`, Retry-After, the idle watchdog, rotation timing and its replay
//! matching, checkpoint pacing, and stopping. No sockets: a paused clock over real sockets
//! gives spurious timeouts.
//!
//! This file holds the fakes and the harness; `connection` tests the connection's timing and
//! rotation, `delivery` the pipe to Kafka and the checkpoints.

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
    Event {
        id: String,
        data: String,
    },
    Checkpoint {
        id: String,
        at: Instant,
        epoch: u64,
        mark: sluice_publish::Mark,
    },
}

type Reply = oneshot::Sender<Result<Delivered, PublishError>>;

/// Records what the target sent; acknowledges at once, or holds the answers until released.
struct FakeKafka {
    sent: Mutex<Vec<Sent>>,
    held: Mutex<Option<Vec<Reply>>>,
    changed: watch::Sender<usize>,
    /// Event data -> how many more sends of it fail (with a retryable error).
    failing: Mutex<std::collections::HashMap<String, u32>>,
    /// Event data -> how many more sends of it the producer refuses at once (retryable: no
    /// partition count yet).
    refusing: Mutex<std::collections::HashMap<String, u32>>,
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
            refusing: Mutex::new(Default::default()),
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
                Sent::Checkpoint { id, at, .. } => Some((id.clone(), *at)),
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
        if let Some(left) = self.refusing.lock().unwrap().get_mut(event.data.as_str())
            && *left > 0
        {
            *left -= 1;
            return Err(TrySendError::Failed(PublishError::Partitions(
                sluice_publish::PartitionsError::Reading {
                    topic: "events".to_owned(),
                },
            )));
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
        epoch: u64,
        mark: sluice_publish::Mark,
    ) -> Result<FakeAck, TrySendError> {
        Ok(self.record(Sent::Checkpoint {
            id: event_id.to_owned(),
            at: Instant::now(),
            epoch,
            mark,
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
    rewrite: Arc<crate::nudge::Nudge>,
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
        let rewrite = Arc::new(crate::nudge::Nudge::default());
        let task = tokio::spawn(run(Launch {
            upstream: FakeUpstream { attempts: tx },
            kafka: kafka.clone(),
            config,
            status: status.clone(),
            resume_from: resume_from.map(str::to_owned),
            start_delay: Duration::ZERO,
            stop: stop.clone(),
            epoch: 7,
            rewrite: rewrite.clone(),
        }));
        Target {
            attempts,
            kafka,
            status,
            stop,
            rewrite,
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

mod connection;
mod delivery;
