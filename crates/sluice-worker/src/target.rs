//! One target's life: the connection state machine and its delivery pipeline.
//!
//! Connecting → Streaming → Backoff → Connecting …, and Stopped. One task per target owns
//! everything here; the only things it shares are the producer, the transports, the pools and
//! the status row it writes.
//!
//! Invariant: the checkpoint written for a target never passes an event Kafka has not
//! acknowledged together with every earlier event of that target ([`CheckpointTracker`]).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rand::Rng;
use sluice_client::{
    Client, ConnectError, Connection, DisconnectReason, ExponentialBackoff, redact::redact_url,
};
use sluice_config::{TargetConfig, TargetProxy};
use sluice_publish::{
    CheckpointTracker, Delivered, Pending, PublishError, RecordMeta, TrySendError, record_key,
};
use sluice_sse::{Event, Item, Parser};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::Shared;
use crate::status::{Delivery, State, TargetStatus};

/// Events of one target sent to Kafka and not yet acknowledged before reading pauses.
pub const WINDOW: usize = 4096;
/// Least time between two checkpoint writes of one target.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Longest replay overlap remembered for dropping duplicates after a switch.
const MAX_OVERLAP: usize = 65_536;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

struct Done {
    seq: u64,
    received: Instant,
    record: Outgoing,
    result: Result<Delivered, PublishError>,
}

/// What an event's record is made of, kept until Kafka took it (to send it again after a
/// failure). Not the built [`sluice_publish::Record`]: each send writes the headers straight
/// into the producer's, which saves an allocation per header on every event.
struct Outgoing {
    event: Event,
    /// The record key when it is not the target id (a JSON Pointer key).
    key: Option<Box<[u8]>>,
    received_wall: SystemTime,
    generation: u64,
    resume: Option<Box<str>>,
}

impl Outgoing {
    /// Hands the record with sequence number `seq` to the producer.
    fn try_send(
        &self,
        shared: &Shared,
        config: &TargetConfig,
        seq: u64,
    ) -> Result<Pending, TrySendError> {
        let meta = RecordMeta {
            target: &config.id,
            received_at: self.received_wall,
            connection: self.generation,
            seq,
            resume: self.resume.as_deref(),
            cloudevents: config.cloudevents,
        };
        let key = self
            .key
            .as_deref()
            .unwrap_or_else(|| config.id.as_str().as_bytes());
        shared
            .publisher
            .try_send_event(&config.topic, key, &self.event, &meta)
    }
}

/// One record on its way to Kafka. The common case, a record the producer took, is a plain
/// value in the in-flight set (no box per event); failures and retries are boxed futures.
enum InFlight {
    /// Handed to the producer: resolves on Kafka's answer. `None` once resolved.
    Sent(Pending, Option<(u64, Instant, Outgoing)>),
    /// A retry, or a failure known at once.
    Other(BoxFuture<Done>),
}

impl Future for InFlight {
    type Output = Done;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        match self.get_mut() {
            InFlight::Sent(pending, parts) => {
                let result = ready!(Pin::new(pending).poll(cx));
                match parts.take() {
                    Some((seq, received, record)) => Poll::Ready(Done {
                        seq,
                        received,
                        record,
                        result,
                    }),
                    // Polled again after it resolved: the in-flight set never does that.
                    None => Poll::Pending,
                }
            }
            InFlight::Other(future) => future.as_mut().poll(cx),
        }
    }
}

/// The in-flight deliveries of a target.
///
/// At one event a second a target has nothing in flight almost all the time, and one delivery
/// when it has any: that one is a single box, polled directly. A `FuturesUnordered` (two
/// allocations of its own, and one per delivery) exists only while two or more are in flight;
/// ten thousand idle sets would cost a few MiB, and making one per event most of the CPU of
/// the in-flight bookkeeping.
#[derive(Default)]
enum InFlightSet {
    #[default]
    Empty,
    One(Box<InFlight>),
    Many(FuturesUnordered<InFlight>),
}

impl InFlightSet {
    fn len(&self) -> usize {
        match self {
            InFlightSet::Empty => 0,
            InFlightSet::One(_) => 1,
            InFlightSet::Many(set) => set.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, delivery: InFlight) {
        match std::mem::take(self) {
            InFlightSet::Empty => *self = InFlightSet::One(Box::new(delivery)),
            InFlightSet::One(first) => {
                let set = FuturesUnordered::new();
                set.push(*first);
                set.push(delivery);
                *self = InFlightSet::Many(set);
            }
            InFlightSet::Many(set) => {
                set.push(delivery);
                *self = InFlightSet::Many(set);
            }
        }
    }

    /// The next finished delivery (`None` when empty).
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Done>> {
        let next = match self {
            InFlightSet::Empty => return Poll::Ready(None),
            InFlightSet::One(delivery) => Pin::new(delivery.as_mut()).poll(cx).map(Some),
            InFlightSet::Many(set) => set.poll_next_unpin(cx),
        };
        if next.is_ready() {
            *self = match std::mem::take(self) {
                InFlightSet::Many(set) if set.len() > 1 => InFlightSet::Many(set),
                // The last one left goes back to a plain box, polled next with this task's waker.
                InFlightSet::Many(set) => match set.into_iter().next() {
                    Some(last) => InFlightSet::One(Box::new(last)),
                    None => InFlightSet::Empty,
                },
                InFlightSet::One(_) | InFlightSet::Empty => InFlightSet::Empty,
            };
        }
        next
    }
}

/// What happens in the current phase, from the phase's own future.
enum Step {
    WaitOver,
    Connected(
        Result<Connection, ConnectError>,
        Option<OwnedSemaphorePermit>,
    ),
    Chunk(Result<Option<bytes::Bytes>, sluice_client::StreamError>),
    Idle,
    RotateDue,
    Rotated(
        Result<Connection, ConnectError>,
        Option<OwnedSemaphorePermit>,
    ),
}

type ConnectFuture = BoxFuture<(
    Result<Connection, ConnectError>,
    Option<OwnedSemaphorePermit>,
)>;

struct Streaming {
    connection: Connection,
    parser: Parser,
    _permit: Option<OwnedSemaphorePermit>,
    opened: Instant,
    /// When the last byte arrived (or reading resumed after a backpressure pause).
    last_byte: Instant,
    /// The watchdog: armed at `last_byte + idle_timeout`, re-armed lazily when it fires early,
    /// so a busy stream costs no timer operation per chunk.
    idle: Pin<Box<Sleep>>,
    /// The watchdog was polled since it was last armed, so the timer holds this task's waker
    /// and will wake it: it need not be polled again until it has elapsed.
    idle_registered: bool,
    /// When the replacement stream is due (`max_connection_age`); `None` while one is
    /// connecting, or without a maximum age.
    rotate: Option<Pin<Box<Sleep>>>,
    rotation: Option<ConnectFuture>,
    /// Ids read on this connection after the replacement's `Last-Event-ID` was sent.
    overlap: VecDeque<String>,
}

enum Phase {
    Waiting(Pin<Box<Sleep>>),
    Connecting(ConnectFuture),
    Streaming(Box<Streaming>),
    Stopped,
}

/// The publishing side of a target: in-flight deliveries, the checkpoint and its writes.
struct Pipe {
    shared: Arc<Shared>,
    config: Arc<TargetConfig>,
    /// The status row, which holds the target's metrics too.
    status: Arc<TargetStatus>,
    tracker: CheckpointTracker,
    deliveries: InFlightSet,
    /// Records the producer had no room for, in order, with their sequence number.
    blocked: VecDeque<(u64, Instant, Outgoing)>,
    /// While records are blocked and nothing is in flight, or a final checkpoint waits for room
    /// in the producer while stopping: when to try the producer again.
    blocked_retry: Option<Pin<Box<Sleep>>>,
    /// The `paused` value last published to the status row and metrics.
    paused: bool,
    /// The checkpoint write in flight: the id written and Kafka's answer to come.
    checkpoint_write: Option<(String, Pending)>,
    checkpoint_written: Box<str>,
    /// `tracker.acked_prefix()` covered by `checkpoint_written` / by the write in flight.
    checkpointed_prefix: u64,
    checkpoint_pending_prefix: u64,
    next_checkpoint_at: Instant,
    /// When the last chunk or acknowledgement was handled (read then anyway).
    now: Instant,
    failed: bool,
}

impl Pipe {
    fn can_read(&self) -> bool {
        !self.failed && self.blocked.is_empty() && self.deliveries.len() < WINDOW
    }

    fn drained(&self) -> bool {
        self.deliveries.is_empty() && self.blocked.is_empty()
    }

    /// Publishes whether reading is paused (metric and delivery state), writing only changes.
    fn update_paused(&mut self) {
        let paused = !self.can_read();
        if paused != self.paused {
            self.paused = paused;
            self.status.paused.set(i64::from(paused));
        }
        let delivery = self.status.delivery();
        if self.failed || delivery == Delivery::Retrying {
            return;
        }
        let wanted = if paused {
            Delivery::Paused
        } else {
            Delivery::Ok
        };
        if delivery != wanted {
            self.status.set_delivery(wanted);
        }
    }

    /// Hands one event to Kafka (or to the blocked queue when the producer is full).
    fn send(
        &mut self,
        event: &Event,
        generation: u64,
        resume: Option<Box<str>>,
        received: Instant,
        received_wall: SystemTime,
    ) {
        let seq = self.tracker.sent(event.id.as_str());
        let meta = RecordMeta {
            target: &self.config.id,
            received_at: received_wall,
            connection: generation,
            seq,
            resume: resume.as_deref(),
            cloudevents: self.config.cloudevents,
        };
        let key = match record_key(event, &self.config.key, &meta) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(key)) => Some(key.into_boxed_slice()),
            Err(error) => {
                self.status.key_errors.inc();
                let count = self.status.key_errors.get();
                if count.is_power_of_two() {
                    tracing::warn!(
                        target_id = %self.config.id,
                        event_id = event.id.as_str(),
                        %error,
                        errors_so_far = count,
                        "cannot take the record key from the event; publishing it keyed by target id"
                    );
                }
                None
            }
        };
        let record = Outgoing {
            event: event.clone(),
            key,
            received_wall,
            generation,
            resume,
        };
        self.status.events.inc();
        self.status.queue_depth.inc();
        if self.blocked.is_empty() {
            self.enqueue(seq, received, record);
        } else {
            self.blocked.push_back((seq, received, record));
        }
    }

    fn enqueue(&mut self, seq: u64, received: Instant, record: Outgoing) {
        match record.try_send(&self.shared, &self.config, seq) {
            Ok(pending) => self
                .deliveries
                .push(InFlight::Sent(pending, Some((seq, received, record)))),
            Err(TrySendError::QueueFull) => self.blocked.push_front((seq, received, record)),
            Err(TrySendError::Failed(error)) => {
                self.deliveries
                    .push(InFlight::Other(Box::pin(std::future::ready(Done {
                        seq,
                        received,
                        record,
                        result: Err(error),
                    }))))
            }
        }
    }

    /// Retries the blocked records in order until the producer is full again.
    fn flush_blocked(&mut self) {
        while let Some((seq, received, record)) = self.blocked.pop_front() {
            self.enqueue(seq, received, record);
            if self.blocked.front().is_some_and(|(s, _, _)| *s == seq) {
                break; // still full
            }
        }
    }

    fn on_delivered(&mut self, done: Done) {
        match done.result {
            Ok(_) => {
                self.now = Instant::now();
                self.tracker.acked(done.seq);
                self.status.acked.inc();
                self.update_checkpoint_lag();
                self.status.queue_depth.dec();
                self.status.latency.observe(
                    self.now
                        .saturating_duration_since(done.received)
                        .as_secs_f64(),
                );
                if self.status.delivery() == Delivery::Retrying {
                    self.status.set_delivery(Delivery::Ok);
                }
                if let Some(id) = self.tracker.checkpoint() {
                    self.status.set_last_acked_id(id);
                }
            }
            Err(error) => {
                self.status.delivery_errors.inc();
                if error.is_retryable() {
                    tracing::warn!(target_id = %self.config.id, seq = done.seq, %error, "kafka delivery failed; sending again");
                    self.status.set_delivery(Delivery::Retrying);
                    self.status.set_error(Some(error.to_string()));
                    let shared = self.shared.clone();
                    let config = self.config.clone();
                    let (seq, received, record) = (done.seq, done.received, done.record);
                    self.deliveries.push(InFlight::Other(Box::pin(async move {
                        sleep(Duration::from_millis(200)).await;
                        let result = loop {
                            match record.try_send(&shared, &config, seq) {
                                Ok(pending) => break pending.await,
                                Err(TrySendError::QueueFull) => {
                                    sleep(Duration::from_millis(50)).await;
                                }
                                Err(TrySendError::Failed(error)) => break Err(error),
                            }
                        };
                        Done {
                            seq,
                            received,
                            record,
                            result,
                        }
                    })));
                } else {
                    tracing::error!(target_id = %self.config.id, seq = done.seq, %error, "kafka refused an event for good; the target stops before it (its checkpoint stays behind it)");
                    self.failed = true;
                    self.status.set_delivery(Delivery::Failed);
                    self.status
                        .set_error(Some(format!("kafka refused an event: {error}")));
                }
            }
        }
    }

    /// Starts a checkpoint write when the checkpoint moved and none is in flight.
    ///
    /// Paced by `self.now`, the time of the last chunk or acknowledgement (the checkpoint can
    /// only move on an acknowledgement), so the common "nothing new" case reads no clock.
    fn maybe_checkpoint(&mut self, force: bool) {
        if self.checkpoint_write.is_some()
            || self.tracker.acked_prefix() == self.checkpointed_prefix
        {
            return;
        }
        let now = if force { Instant::now() } else { self.now };
        if !force && now < self.next_checkpoint_at {
            return;
        }
        let Some(id) = self.tracker.checkpoint() else {
            return;
        };
        if *id == *self.checkpoint_written {
            return;
        }
        let id = id.to_owned();
        match self.shared.publisher.try_write_checkpoint(
            &self.shared.checkpoint_topic,
            &self.config.id,
            &id,
        ) {
            Ok(pending) => {
                self.checkpoint_pending_prefix = self.tracker.acked_prefix();
                self.next_checkpoint_at = now + CHECKPOINT_INTERVAL;
                self.checkpoint_write = Some((id, pending));
            }
            Err(error) => {
                tracing::debug!(target_id = %self.config.id, %error, "checkpoint write deferred");
                self.next_checkpoint_at = now + Duration::from_millis(50);
            }
        }
    }

    /// Takes Kafka's answer to the checkpoint write if it came, without asking to be woken for
    /// it: the answer is taken on the target's next wake-up (its next chunk or acknowledgement)
    /// instead of costing a wake-up of its own, one per checkpoint (2,000 a second at 10,000
    /// targets). Nothing waits on it but the next write, at least `CHECKPOINT_INTERVAL` later,
    /// and shutdown, which does wait for it.
    fn take_checkpoint_answer(&mut self) {
        let mut quiet = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready((id, result)) = poll_answer(&mut self.checkpoint_write, &mut quiet) {
            self.on_checkpoint(id, result);
        }
    }

    fn on_checkpoint(&mut self, id: String, result: Result<Delivered, PublishError>) {
        match result {
            Ok(_) => {
                self.status.checkpoints.inc();
                self.status.set_checkpoint(&id);
                self.checkpoint_written = id.into_boxed_str();
                self.checkpointed_prefix = self.checkpoint_pending_prefix;
                self.update_checkpoint_lag();
            }
            Err(error) => {
                tracing::warn!(target_id = %self.config.id, %error, "checkpoint write failed; will write again");
            }
        }
    }

    fn update_checkpoint_lag(&self) {
        let lag = self
            .tracker
            .acked_prefix()
            .saturating_sub(self.checkpointed_prefix);
        self.status
            .checkpoint_lag
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    fn checkpoint_settled(&self) -> bool {
        self.checkpoint_write.is_none()
            && self
                .tracker
                .checkpoint()
                .is_none_or(|id| *id == *self.checkpoint_written)
    }
}

/// Runs one target until shutdown (or forever, for a stopped target, until shutdown).
///
/// Not an `async fn`: one keeps its arguments in its state for its whole life, after they moved
/// into the machine and the pipe (70 bytes of every target's task). Call it in the runtime.
pub fn run(
    shared: Arc<Shared>,
    config: Arc<TargetConfig>,
    status: Arc<TargetStatus>,
    resume_from: Option<String>,
    start_delay: Duration,
) -> impl Future<Output = ()> + Send {
    let mut machine = Machine::new(shared.clone(), config.clone(), status.clone(), resume_from);
    let mut pipe = Pipe {
        shared,
        config,
        status,
        tracker: CheckpointTracker::new(),
        deliveries: InFlightSet::default(),
        blocked: VecDeque::new(),
        blocked_retry: None,
        paused: false,
        checkpoint_write: None,
        checkpoint_written: machine.last_event_id.as_str().into(),
        checkpointed_prefix: 0,
        checkpoint_pending_prefix: 0,
        next_checkpoint_at: Instant::now(),
        now: Instant::now(),
        failed: false,
    };
    let mut phase = Phase::Waiting(Box::pin(sleep(start_delay)));
    // The state lives in the block's captures, used in place (an `async fn` would copy its
    // arguments into locals and keep both).
    async move {
        let shared = Arc::clone(&pipe.shared);
        let stop = &shared.stop;
        let stop_notified = stop.notified();
        tokio::pin!(stop_notified);
        let mut stop_registered = false;
        let mut stopping = false;
        let mut was_reading = true;
        loop {
            let can_read = pipe.can_read();
            if can_read && !was_reading {
                // A backpressure pause is not silence from upstream: restart the watchdog.
                if let Phase::Streaming(s) = &mut phase {
                    s.last_byte = Instant::now();
                }
            }
            was_reading = can_read;
            // No signal exists for "the producer queue has room" when this target has nothing in
            // flight (other targets filled it): poll for it. The same holds for a final
            // checkpoint the full queue did not take while stopping: without this timer every
            // branch below would be disabled (a panic in `select!`).
            let checkpoint_deferred = stopping
                && pipe.checkpoint_write.is_none()
                && pipe.drained()
                && !pipe.checkpoint_settled();
            let blocked_idle =
                (!pipe.blocked.is_empty() && pipe.deliveries.is_empty()) || checkpoint_deferred;
            if !blocked_idle {
                pipe.blocked_retry = None;
            } else if pipe.blocked_retry.is_none() {
                pipe.blocked_retry = Some(Box::pin(sleep(Duration::from_millis(10))));
            }
            let waiting_for_checkpoint = stopping && pipe.checkpoint_write.is_some();
            let deliveries = &mut pipe.deliveries;
            let checkpoint = &mut pipe.checkpoint_write;
            let blocked_retry = &mut pipe.blocked_retry;
            tokio::select! {
                biased;
                () = poll_fn(|cx| stop.poll_stopped(cx, stop_notified.as_mut(), &mut stop_registered)), if !stopping => {
                    stopping = true;
                    phase = Phase::Stopped;
                    machine.set_state(State::Stopped);
                }
                Some(done) = poll_fn(|cx| deliveries.poll_next(cx)), if !deliveries.is_empty() => {
                    pipe.on_delivered(done);
                    if !pipe.blocked.is_empty() {
                        pipe.flush_blocked();
                    }
                }
                (id, result) = poll_fn(|cx| poll_answer(checkpoint, cx)), if waiting_for_checkpoint => {
                    pipe.on_checkpoint(id, result);
                }
                () = poll_fn(|cx| poll_some(blocked_retry, cx)), if blocked_idle => {
                    pipe.blocked_retry = None;
                    pipe.flush_blocked();
                }
                step = poll_fn(|cx| poll_phase(&mut phase, can_read, cx)), if !stopping => {
                    machine.handle(step, &mut phase, &mut pipe);
                }
            }
            if !stopping {
                pipe.take_checkpoint_answer();
            }
            pipe.update_paused();
            pipe.maybe_checkpoint(stopping);
            if stopping && pipe.drained() && pipe.checkpoint_settled() {
                break;
            }
        }
        tracing::debug!(target_id = %pipe.config.id, checkpoint = %pipe.checkpoint_written, "target stopped");
    }
}

/// Kafka's answer to the checkpoint write in `write`, once it came (the write is then taken).
fn poll_answer(
    write: &mut Option<(String, Pending)>,
    cx: &mut Context<'_>,
) -> Poll<(String, Result<Delivered, PublishError>)> {
    let Some((_, pending)) = write.as_mut() else {
        return Poll::Pending;
    };
    let result = ready!(Pin::new(pending).poll(cx));
    match write.take() {
        Some((id, _)) => Poll::Ready((id, result)),
        None => Poll::Pending,
    }
}

/// Polls the future in `slot`, if any (pending when empty).
fn poll_some<F: Future + ?Sized>(
    slot: &mut Option<Pin<Box<F>>>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    match slot.as_mut() {
        Some(future) => future.as_mut().poll(cx),
        None => Poll::Pending,
    }
}

/// What the current phase yields next, polled by hand so that a wake-up touches only what can
/// be ready: the body first, then the idle watchdog only when its timer does not already hold
/// this task's waker (or has fired).
fn poll_phase(phase: &mut Phase, can_read: bool, cx: &mut Context<'_>) -> Poll<Step> {
    match phase {
        Phase::Waiting(until) => until.as_mut().poll(cx).map(|()| Step::WaitOver),
        Phase::Connecting(future) => future
            .as_mut()
            .poll(cx)
            .map(|(result, permit)| Step::Connected(result, permit)),
        Phase::Streaming(s) => {
            if can_read {
                if let Poll::Ready(chunk) = s.connection.poll_chunk(cx) {
                    return Poll::Ready(Step::Chunk(chunk));
                }
                if !s.idle_registered || s.idle.is_elapsed() {
                    if s.idle.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Step::Idle);
                    }
                    s.idle_registered = true;
                }
            }
            if let Some(rotation) = s.rotation.as_mut() {
                if let Poll::Ready((result, permit)) = rotation.as_mut().poll(cx) {
                    return Poll::Ready(Step::Rotated(result, permit));
                }
            } else if s
                .rotate
                .as_mut()
                .is_some_and(|at| at.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Step::RotateDue);
            }
            Poll::Pending
        }
        Phase::Stopped => Poll::Pending,
    }
}

/// The connection side of a target.
struct Machine {
    shared: Arc<Shared>,
    config: Arc<TargetConfig>,
    status: Arc<TargetStatus>,
    /// The `Last-Event-ID` in force: the checkpoint at start, then the last id received.
    last_event_id: String,
    backoff: ExponentialBackoff,
    /// `retry:` from the stream, the reconnection time floor.
    retry: Duration,
    generation: u64,
    /// The `Last-Event-ID` the current connection opened with, until its first record is sent
    /// (it travels as the `sluice.resume` header on that record).
    resume: Option<Box<str>>,
    pool_cursor: usize,
    /// The pool member of the attempt in progress / the open connection.
    pool_member: Option<usize>,
    /// When the last connection opened (for healthy-period reset of the backoff).
    last_open: Option<Instant>,
}

impl Machine {
    fn new(
        shared: Arc<Shared>,
        config: Arc<TargetConfig>,
        status: Arc<TargetStatus>,
        resume_from: Option<String>,
    ) -> Machine {
        let backoff = ExponentialBackoff::try_new(
            config.backoff.initial,
            config.backoff.max,
            config.backoff.reset_after,
        )
        // Validation already refused bad values; fall back to the defaults rather than panic.
        .unwrap_or_default();
        let pool_cursor = match &config.proxy {
            Some(TargetProxy::Pool(name)) => shared
                .pools
                .get(name)
                .map(|p| p.home(config.id.as_str()))
                .unwrap_or(0),
            _ => 0,
        };
        let last_event_id = resume_from.unwrap_or_default();
        status.set_last_event_id(&last_event_id);
        Machine {
            shared,
            config,
            status,
            last_event_id,
            backoff,
            retry: Duration::ZERO,
            generation: 0,
            resume: None,
            pool_cursor,
            pool_member: None,
            last_open: None,
        }
    }

    fn set_state(&self, state: State) {
        self.status.set_state(state);
    }

    /// Builds the client for the next attempt: secrets (headers, proxy password) read now.
    fn client(&mut self) -> Result<Client, String> {
        let headers = self
            .config
            .resolve_headers()
            .map_err(|e| format!("cannot build request headers: {e}"))?;
        let proxy = match &self.config.proxy {
            None => {
                self.status.set_proxy(None);
                None
            }
            Some(TargetProxy::Direct(proxy)) => {
                self.status.set_proxy(Some(redact_url(&proxy.url)));
                Some(
                    proxy
                        .resolve_url()
                        .map_err(|e| format!("cannot read proxy password: {e}"))?,
                )
            }
            Some(TargetProxy::Pool(name)) => {
                let pool = self
                    .shared
                    .pools
                    .get(name)
                    .ok_or_else(|| format!("unknown proxy pool {name:?}"))?;
                let index = pool.pick(self.pool_cursor);
                self.pool_cursor = index;
                self.pool_member = Some(index);
                let (proxy, shown) = pool
                    .member(index)
                    .ok_or_else(|| format!("proxy pool {name:?} is empty"))?;
                self.status
                    .set_proxy(Some(format!("{shown} (pool {name})")));
                Some(
                    proxy
                        .resolve_url()
                        .map_err(|e| format!("cannot read proxy password: {e}"))?,
                )
            }
        };
        self.shared
            .transports
            .client(&self.config, proxy, headers)
            .map_err(|e| e.to_string())
    }

    /// The future of one connection attempt: host slot, request, response checks.
    fn connect(&mut self, second_slot: bool) -> Result<ConnectFuture, String> {
        let client = self.client()?;
        let last_event_id = self.last_event_id.clone();
        let shared = self.shared.clone();
        let url = self.config.url.clone();
        let limit = self.config.connect_timeout + self.config.idle_timeout;
        let permit = if second_slot {
            Some(
                shared
                    .hosts
                    .try_acquire(&url)
                    .ok_or_else(|| "no free connection slot for the host".to_owned())?,
            )
        } else {
            None
        };
        Ok(Box::pin(async move {
            let permit = match permit {
                Some(permit) => Some(permit),
                None => shared.hosts.acquire(&url).await,
            };
            let result = match tokio::time::timeout(limit, client.connect(&last_event_id)).await {
                Ok(result) => result,
                Err(_) => Err(ConnectError::Transport {
                    url: client.shown_url().to_owned(),
                    detail: format!("no response within {}s", limit.as_secs()),
                }),
            };
            (result, permit)
        }))
    }

    fn report_pool(&self, ok: bool) {
        if let (Some(TargetProxy::Pool(name)), Some(index)) = (&self.config.proxy, self.pool_member)
            && let Some(pool) = self.shared.pools.get(name)
        {
            pool.report(index, ok);
        }
    }

    /// Ends the connection (if any) and schedules the next attempt.
    fn reconnect_later(
        &mut self,
        phase: &mut Phase,
        pipe: &Pipe,
        reason: DisconnectReason,
        detail: String,
        at_least: Duration,
        hard_error: bool,
    ) {
        if let Some(opened) = self.last_open.take() {
            self.backoff.connection_ended(opened.elapsed());
        }
        let floor = at_least.max(self.retry);
        let delay = {
            let mut rng = rand::rng();
            let jittered = self.backoff.next_delay(&mut rng, floor);
            if hard_error {
                // Errors a retry is unlikely to fix soon get their own, long backoff: half to
                // all of the cap.
                let max = self.config.backoff.max;
                jittered.max(rng.random_range(max / 2..=max))
            } else {
                jittered
            }
        };
        pipe.status.reconnect(reason);
        self.status
            .set_error(Some(format!("{}: {detail}", reason.as_str())));
        self.status.set_http_version(None);
        tracing::warn!(
            target_id = %self.config.id,
            reason = reason.as_str(),
            %detail,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            last_event_id = %self.last_event_id,
            "reconnecting"
        );
        self.set_state(State::Backoff);
        *phase = Phase::Waiting(Box::pin(sleep(delay)));
    }

    fn stop(&mut self, phase: &mut Phase, why: String) {
        tracing::warn!(target_id = %self.config.id, reason = %why, "target stopped");
        self.status.set_error(Some(why));
        self.set_state(State::Stopped);
        *phase = Phase::Stopped;
    }

    fn opened(
        &mut self,
        connection: Connection,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Box<Streaming> {
        let now = Instant::now();
        self.generation += 1;
        self.resume = Some(self.last_event_id.as_str().into());
        self.status
            .generation
            .store(self.generation, Ordering::Relaxed);
        self.status
            .set_http_version(Some(version_name(connection.version())));
        self.status.set_error(None);
        self.last_open = Some(now);
        self.report_pool(true);
        let rotate = self.config.max_connection_age.map(|age| {
            let margin = (age / 5).min(Duration::from_secs(10));
            Box::pin(sleep_until(now + age.saturating_sub(margin)))
        });
        tracing::info!(
            target_id = %self.config.id,
            connection = self.generation,
            last_event_id = %self.last_event_id,
            version = ?connection.version(),
            "stream open"
        );
        Box::new(Streaming {
            connection,
            parser: Parser::new(self.config.limits).with_last_event_id(&self.last_event_id),
            _permit: permit,
            opened: now,
            last_byte: now,
            idle: Box::pin(sleep_until(now + self.config.idle_timeout)),
            idle_registered: false,
            rotate,
            rotation: None,
            overlap: VecDeque::new(),
        })
    }

    fn begin_connect(&mut self, phase: &mut Phase, pipe: &Pipe) {
        self.set_state(State::Connecting);
        match self.connect(false) {
            Ok(future) => *phase = Phase::Connecting(future),
            Err(detail) => {
                // Missing secret or similar: an operator must act; keep retrying slowly.
                self.reconnect_later(
                    phase,
                    pipe,
                    DisconnectReason::Protocol,
                    detail,
                    Duration::ZERO,
                    true,
                );
            }
        }
    }

    fn handle(&mut self, step: Step, phase: &mut Phase, pipe: &mut Pipe) {
        match step {
            Step::WaitOver => self.begin_connect(phase, pipe),
            Step::Connected(Ok(connection), permit) => {
                let streaming = self.opened(connection, permit);
                self.set_state(State::Streaming);
                *phase = Phase::Streaming(streaming);
            }
            Step::Connected(Err(error), _) => {
                if matches!(error, ConnectError::Transport { .. }) {
                    self.report_pool(false);
                    // Try the next proxy of a pool on the next attempt.
                    self.pool_cursor = self.pool_cursor.wrapping_add(1);
                }
                match error {
                    ConnectError::NoContent => {
                        pipe.status.reconnect(DisconnectReason::HttpStatus);
                        self.stop(phase, "server answered 204 no content: the endpoint asks clients not to reconnect".to_owned());
                    }
                    ConnectError::Options(detail) => {
                        self.stop(phase, format!("invalid client options: {detail}"));
                    }
                    error => {
                        let hard = !error.is_retryable();
                        let at_least = error.retry_after().unwrap_or_default();
                        self.reconnect_later(
                            phase,
                            pipe,
                            error.disconnect_reason(),
                            error.to_string(),
                            at_least,
                            hard,
                        );
                    }
                }
            }
            Step::Chunk(chunk) => {
                let Phase::Streaming(s) = phase else { return };
                match chunk {
                    Ok(Some(bytes)) => {
                        let now = Instant::now();
                        pipe.now = now;
                        s.last_byte = now;
                        pipe.status.bytes.inc_by(bytes.len() as u64);
                        pipe.status.touch_byte(now);
                        s.parser.push(&bytes);
                        let wall = SystemTime::now();
                        let mut got_event = false;
                        loop {
                            match s.parser.next_item() {
                                Ok(Some(Item::Event(event))) => {
                                    got_event = true;
                                    if s.rotation.is_some() {
                                        // The old stream, while its replacement is connecting.
                                        if s.overlap.len() < MAX_OVERLAP {
                                            s.overlap.push_back(event.id.as_str().to_owned());
                                        }
                                    } else if !s.overlap.is_empty() {
                                        // The replacement, replaying what the old one delivered.
                                        if s.overlap
                                            .front()
                                            .is_some_and(|id| id == event.id.as_str())
                                        {
                                            s.overlap.pop_front();
                                            pipe.status.duplicates.inc();
                                            continue;
                                        }
                                        s.overlap.clear();
                                    }
                                    self.accept(&event, pipe, now, wall);
                                }
                                Ok(Some(Item::Retry(ms))) => self.retry = Duration::from_millis(ms),
                                Ok(Some(Item::Comment(_))) => {}
                                Ok(None) => break,
                                Err(error) => {
                                    let detail = format!("stream rejected: {error}");
                                    self.reconnect_later(
                                        phase,
                                        pipe,
                                        DisconnectReason::Protocol,
                                        detail,
                                        Duration::ZERO,
                                        true,
                                    );
                                    return;
                                }
                            }
                        }
                        if got_event {
                            pipe.status.touch_event(now);
                            pipe.status.set_last_event_id(&self.last_event_id);
                        }
                    }
                    Ok(None) => {
                        let reason = self.end_reason(s, DisconnectReason::Eof);
                        self.reconnect_later(
                            phase,
                            pipe,
                            reason,
                            "server closed the stream".to_owned(),
                            Duration::ZERO,
                            false,
                        );
                    }
                    Err(error) => {
                        let reason = self.end_reason(s, DisconnectReason::Reset);
                        self.reconnect_later(
                            phase,
                            pipe,
                            reason,
                            error.to_string(),
                            Duration::ZERO,
                            false,
                        );
                    }
                }
            }
            Step::Idle => {
                if let Phase::Streaming(s) = phase {
                    let due = s.last_byte + self.config.idle_timeout;
                    if Instant::now() < due {
                        s.idle.as_mut().reset(due);
                        s.idle_registered = false;
                        return;
                    }
                }
                let detail = format!(
                    "no bytes for {}s (idle timeout): the connection is dead",
                    self.config.idle_timeout.as_secs_f64()
                );
                self.reconnect_later(
                    phase,
                    pipe,
                    DisconnectReason::SilentDrop,
                    detail,
                    Duration::ZERO,
                    false,
                );
            }
            Step::RotateDue => {
                let Phase::Streaming(s) = phase else { return };
                match self.connect(true) {
                    Ok(future) => {
                        tracing::info!(target_id = %self.config.id, last_event_id = %self.last_event_id, "max connection age near: opening the replacement stream");
                        s.overlap.clear();
                        s.rotate = None;
                        s.rotation = Some(future);
                    }
                    Err(detail) => {
                        tracing::warn!(target_id = %self.config.id, %detail, "cannot open the replacement stream yet");
                        s.rotate = Some(Box::pin(sleep(Duration::from_secs(1))));
                    }
                }
            }
            Step::Rotated(result, permit) => {
                let Phase::Streaming(s) = phase else { return };
                s.rotation = None;
                match result {
                    Ok(connection) => {
                        let overlap = std::mem::take(&mut s.overlap);
                        // The replacement was asked to resume after the id in force when it was
                        // requested; what the old stream delivered since will be replayed.
                        let mut replacement = self.opened(connection, permit);
                        replacement.overlap = overlap;
                        pipe.status.reconnect(DisconnectReason::Rotate);
                        tracing::info!(target_id = %self.config.id, connection = self.generation, "switched to the replacement stream; old one closed");
                        *phase = Phase::Streaming(replacement);
                    }
                    Err(error) => {
                        tracing::warn!(target_id = %self.config.id, %error, "replacement stream failed; keeping the current one");
                        s.overlap.clear();
                        s.rotate = Some(Box::pin(sleep(Duration::from_secs(1))));
                    }
                }
            }
        }
    }

    /// Why a stream ended: an end at (or past) the configured connection age is the proxy's TTL.
    fn end_reason(&self, s: &Streaming, otherwise: DisconnectReason) -> DisconnectReason {
        match self.config.max_connection_age {
            Some(age) if s.opened.elapsed() + Duration::from_millis(50) >= age.mul_f64(0.9) => {
                DisconnectReason::ProxyTtl
            }
            _ => otherwise,
        }
    }

    /// One event from the stream: duplicate check, filter, then Kafka.
    fn accept(&mut self, event: &Event, pipe: &mut Pipe, now: Instant, wall: SystemTime) {
        self.last_event_id.clear();
        self.last_event_id.push_str(event.id.as_str());
        if !self.config.event_types.is_empty()
            && !self
                .config
                .event_types
                .iter()
                .any(|t| t == event.event.as_str())
        {
            pipe.status.filtered.inc();
            return;
        }
        pipe.send(event, self.generation, self.resume.take(), now, wall);
    }
}

/// The name `/status` shows for an HTTP version (as `http::Version`'s `Debug` writes it).
fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sluice_sse::Text;
    use tokio::sync::oneshot;

    /// A delivery that finishes (with sequence number `seq`) when `tx` is sent to.
    fn delivery(seq: u64) -> (oneshot::Sender<()>, InFlight) {
        let (tx, rx) = oneshot::channel::<()>();
        let record = Outgoing {
            event: Event {
                id: Text::from_static("1"),
                event: Text::from_static("message"),
                data: Text::from_static("{}"),
            },
            key: None,
            received_wall: SystemTime::UNIX_EPOCH,
            generation: 1,
            resume: None,
        };
        let received = Instant::now();
        let future = InFlight::Other(Box::pin(async move {
            let _ = rx.await;
            Done {
                seq,
                received,
                record,
                result: Ok(Delivered {
                    partition: 0,
                    offset: i64::try_from(seq).unwrap(),
                }),
            }
        }));
        (tx, future)
    }

    fn next_ready(set: &mut InFlightSet) -> Option<Option<u64>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match set.poll_next(&mut cx) {
            Poll::Ready(done) => Some(done.map(|d| d.seq)),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn the_in_flight_set_yields_every_delivery_in_any_order_and_ends_empty() {
        let mut set = InFlightSet::default();
        assert_eq!(next_ready(&mut set), Some(None));
        let (a, first) = delivery(1);
        set.push(first);
        assert!(matches!(set, InFlightSet::One(_)));
        assert_eq!(next_ready(&mut set), None);
        let (b, second) = delivery(2);
        let (c, third) = delivery(3);
        set.push(second);
        set.push(third);
        assert_eq!(set.len(), 3);
        b.send(()).unwrap();
        assert_eq!(next_ready(&mut set), Some(Some(2)));
        a.send(()).unwrap();
        assert_eq!(next_ready(&mut set), Some(Some(1)));
        // One left: back to a plain box, which still finishes.
        assert!(matches!(set, InFlightSet::One(_)));
        assert_eq!(next_ready(&mut set), None);
        c.send(()).unwrap();
        assert_eq!(next_ready(&mut set), Some(Some(3)));
        assert!(set.is_empty());
        assert_eq!(next_ready(&mut set), Some(None));
    }
}
