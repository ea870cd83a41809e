//! The live per-target table behind `/status` and the scrape-time gauges of `/metrics`.
//!
//! Every field is written by the target's own task and read by the HTTP handlers; counters are
//! atomics, the few strings sit behind short-held mutexes. Nothing here ever holds a secret: URLs
//! and proxies are stored redacted.

pub mod charts;
pub mod console;
pub mod fleet_view;
pub mod history;
pub mod query;

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use sluice_client::DisconnectReason;

use serde::Serialize;
use sluice_config::TargetId;
use tokio::time::Instant;

/// Where a target's connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its (jittered) start, or for a connection slot to its host.
    Starting,
    /// A request is on its way; no response yet.
    Connecting,
    /// A `text/event-stream` response is open and being read.
    Streaming,
    /// Waiting before the next attempt.
    Backoff,
    /// Done for good: 204, shutdown, or an error no retry can fix.
    Stopped,
}

impl State {
    /// Every state, in a fixed order (metric label values).
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Connecting,
        State::Streaming,
        State::Backoff,
        State::Stopped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Connecting => "connecting",
            State::Streaming => "streaming",
            State::Backoff => "backoff",
            State::Stopped => "stopped",
        }
    }

    fn from_u8(value: u8) -> State {
        State::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(State::Stopped)
    }

    fn to_u8(self) -> u8 {
        match self {
            State::Starting => 0,
            State::Connecting => 1,
            State::Streaming => 2,
            State::Backoff => 3,
            State::Stopped => 4,
        }
    }
}

/// How the target's events are getting into Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Acknowledgements flow; reading goes on.
    Ok,
    /// The in-flight window or the producer queue is full: reading upstream is paused.
    Paused,
    /// A delivery failed and is being sent again.
    Retrying,
    /// A record Kafka will never take (e.g. too large): the target stopped before it.
    Failed,
}

impl Delivery {
    /// The label shown in `/status` (same as its JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Ok => "ok",
            Delivery::Paused => "paused",
            Delivery::Retrying => "retrying",
            Delivery::Failed => "failed",
        }
    }

    fn from_u8(value: u8) -> Delivery {
        match value {
            1 => Delivery::Paused,
            2 => Delivery::Retrying,
            3 => Delivery::Failed,
            _ => Delivery::Ok,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Delivery::Ok => 0,
            Delivery::Paused => 1,
            Delivery::Retrying => 2,
            Delivery::Failed => 3,
        }
    }
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the delivery latency histogram, seconds (receipt to Kafka acknowledgement).
pub const LATENCY_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5, 10.0];

/// A fixed-bucket histogram in a few atomics (a target's worth of memory matters at 10k targets).
#[derive(Debug, Default)]
#[repr(C)]
pub struct Latency {
    count: AtomicU64,
    sum_nanos: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
}

impl Latency {
    /// Records one observation of `seconds`.
    pub fn observe(&self, seconds: f64) {
        if let Some(index) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b)
            && let Some(bucket) = self.buckets.get(index)
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (same order as [`LATENCY_BUCKETS`]), count and sum.
    pub fn snapshot(&self) -> ([u64; LATENCY_BUCKETS.len()], u64, f64) {
        let mut cumulative = [0u64; LATENCY_BUCKETS.len()];
        let mut running = 0;
        for (slot, bucket) in cumulative.iter_mut().zip(&self.buckets) {
            running += bucket.load(Ordering::Relaxed);
            *slot = running;
        }
        let count = self.count.load(Ordering::Relaxed).max(running);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (cumulative, count, sum)
    }
}

/// The live status of one target: what `/status` shows and every per-target metric.
///
/// `repr(C)`: the field order is the memory layout. What every chunk, send and acknowledgement
/// touches comes first, so an event costs a few cache lines of a row that is cold by the time
/// the next event arrives (a worker holds thousands of rows).
#[derive(Debug)]
#[repr(C)]
pub struct TargetStatus {
    origin: Instant,
    /// Body bytes received.
    pub bytes: Counter,
    /// Milliseconds since `origin` of the last byte / event, `u64::MAX` for never.
    last_byte_ms: AtomicU64,
    last_event_ms: AtomicU64,
    /// Events received (after the event-type filter: events handed to Kafka).
    pub events: Counter,
    /// Events Kafka acknowledged.
    pub acked: Counter,
    /// Events sent and not yet acknowledged.
    pub queue_depth: Gauge,
    /// Events Kafka acknowledged (in an unbroken prefix) that the last written checkpoint does
    /// not cover yet: what a restart now would publish again.
    pub checkpoint_lag: Gauge,
    state: AtomicU8,
    delivery: AtomicU8,
    /// Receipt → acknowledgement.
    pub latency: Latency,
    text: Mutex<Text>,
    /// The target.
    pub id: TargetId,
    /// The endpoint, redacted.
    pub url: Box<str>,
    /// The Kafka topic of its events.
    pub topic: Box<str>,
    /// Milliseconds since `origin` when the state last changed.
    state_since_ms: AtomicU64,
    /// Events dropped by the event-type filter.
    pub filtered: Counter,
    /// Replayed events dropped after a make-before-break switch.
    pub duplicates: Counter,
    /// Kafka delivery failures (each retried).
    pub delivery_errors: Counter,
    /// Events whose record key could not be read from the payload.
    pub key_errors: Counter,
    /// Checkpoints Kafka acknowledged.
    pub checkpoints: Counter,
    /// 1 while reading upstream is paused by backpressure.
    pub paused: Gauge,
    /// Reconnects by reason, in [`DisconnectReason::ALL`] order.
    reconnects: [Counter; DisconnectReason::ALL.len()],
    /// Successful connections so far (the `sluice.connection` of the current one).
    pub generation: AtomicU64,
    /// The owner epoch of this run (its checkpoint records carry it).
    pub owner_epoch: AtomicU64,
    /// Its fleet partition was revoked in a planned handover: it streams on until a new owner
    /// claims it, and its checkpoints are offers (its last one, the release).
    pub handing_over: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default, Clone)]
struct Text {
    proxy: Option<String>,
    last_event_id: String,
    last_acked_id: String,
    checkpoint: String,
    last_error: Option<String>,
    http_version: Option<&'static str>,
}

/// A copy of one target's status, as served by `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// Target id.
    pub target: String,
    /// Endpoint (redacted).
    pub url: String,
    /// Connection state.
    pub state: State,
    /// Seconds in the current state (for `streaming`: the connection's uptime).
    pub state_seconds: f64,
    /// Events received and handed to Kafka.
    pub events: u64,
    /// Events acknowledged by Kafka.
    pub acked: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Events in flight to Kafka.
    pub in_flight: u64,
    /// Connection generation.
    pub connection: u64,
    /// Reconnects so far.
    pub reconnects: u64,
    /// Proxy in use (redacted), if any.
    pub proxy: Option<String>,
    /// HTTP version of the current connection.
    pub http_version: Option<String>,
    /// Last event id received.
    pub last_event_id: String,
    /// Id of the last event acknowledged with every earlier one.
    pub last_acked_id: String,
    /// Last checkpoint written to Kafka.
    pub checkpoint: String,
    /// The owner epoch of this run of the target (its checkpoint records carry it).
    pub owner_epoch: u64,
    /// Streaming on while a new fleet owner takes it over (a planned handover).
    pub handing_over: bool,
    /// Kafka delivery state.
    pub delivery: Delivery,
    /// Kafka topic.
    pub topic: String,
    /// Seconds since the last byte, `None` before the first.
    pub seconds_since_last_byte: Option<f64>,
    /// Seconds since the last event, `None` before the first.
    pub seconds_since_last_event: Option<f64>,
    /// The last error (secrets removed), if any.
    pub last_error: Option<String>,
    /// The worker running it (its owner name, `instance#pid`), in a fleet.
    pub owner: Option<String>,
}

const NEVER: u64 = u64::MAX;

impl TargetStatus {
    /// A fresh status in [`State::Starting`].
    pub fn new(id: TargetId, url: String, topic: String, origin: Instant) -> TargetStatus {
        TargetStatus {
            id,
            url: url.into_boxed_str(),
            topic: topic.into_boxed_str(),
            origin,
            state: AtomicU8::new(State::Starting.to_u8()),
            delivery: AtomicU8::new(Delivery::Ok.to_u8()),
            state_since_ms: AtomicU64::new(ms_since(origin)),
            last_byte_ms: AtomicU64::new(NEVER),
            last_event_ms: AtomicU64::new(NEVER),
            events: Counter::default(),
            acked: Counter::default(),
            bytes: Counter::default(),
            queue_depth: Gauge::default(),
            checkpoint_lag: Gauge::default(),
            filtered: Counter::default(),
            duplicates: Counter::default(),
            delivery_errors: Counter::default(),
            key_errors: Counter::default(),
            checkpoints: Counter::default(),
            paused: Gauge::default(),
            latency: Latency::default(),
            reconnects: Default::default(),
            generation: AtomicU64::new(0),
            owner_epoch: AtomicU64::new(0),
            handing_over: std::sync::atomic::AtomicBool::new(false),
            text: Mutex::new(Text::default()),
        }
    }

    /// Counts one reconnect.
    pub fn reconnect(&self, reason: DisconnectReason) {
        if let Some(index) = DisconnectReason::ALL.iter().position(|r| *r == reason)
            && let Some(counter) = self.reconnects.get(index)
        {
            counter.inc();
        }
    }

    /// Reconnects by reason, in [`DisconnectReason::ALL`] order, zeros included.
    pub fn reconnect_counts(&self) -> [u64; DisconnectReason::ALL.len()] {
        std::array::from_fn(|i| self.reconnects[i].get())
    }

    /// Reconnects by reason (non-zero ones only).
    pub fn reconnects_by_reason(&self) -> impl Iterator<Item = (DisconnectReason, u64)> + '_ {
        DisconnectReason::ALL
            .iter()
            .zip(&self.reconnects)
            .map(|(r, c)| (*r, c.get()))
            .filter(|(_, n)| *n > 0)
    }

    /// The current state.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Moves to `state`; returns the previous one.
    pub fn set_state(&self, state: State) -> State {
        let previous = State::from_u8(self.state.swap(state.to_u8(), Ordering::Relaxed));
        if previous != state {
            self.state_since_ms
                .store(ms_since(self.origin), Ordering::Relaxed);
        }
        previous
    }

    /// The Kafka delivery state.
    pub fn delivery(&self) -> Delivery {
        Delivery::from_u8(self.delivery.load(Ordering::Relaxed))
    }

    /// Sets the Kafka delivery state.
    pub fn set_delivery(&self, delivery: Delivery) {
        self.delivery.store(delivery.to_u8(), Ordering::Relaxed);
    }

    /// Records that bytes arrived now.
    pub fn touch_byte(&self, now: Instant) {
        self.last_byte_ms
            .store(ms_between(self.origin, now), Ordering::Relaxed);
    }

    /// Records that an event arrived now.
    pub fn touch_event(&self, now: Instant) {
        self.last_event_ms
            .store(ms_between(self.origin, now), Ordering::Relaxed);
    }

    /// Seconds since the last byte, `None` before the first.
    pub fn seconds_since_last_byte(&self) -> Option<f64> {
        self.seconds_since(&self.last_byte_ms)
    }

    /// Seconds since the last event, `None` before the first.
    pub fn seconds_since_last_event(&self) -> Option<f64> {
        self.seconds_since(&self.last_event_ms)
    }

    /// Milliseconds since the last event, `None` before the first (a sort key: no float).
    pub fn last_event_age_ms(&self) -> Option<u64> {
        let at = self.last_event_ms.load(Ordering::Relaxed);
        (at != NEVER).then(|| ms_since(self.origin).saturating_sub(at))
    }

    fn seconds_since(&self, at: &AtomicU64) -> Option<f64> {
        let at = at.load(Ordering::Relaxed);
        (at != NEVER).then(|| ms_since(self.origin).saturating_sub(at) as f64 / 1000.0)
    }

    fn with_text<R>(&self, f: impl FnOnce(&mut Text) -> R) -> R {
        // A panic while holding this lock cannot leave the strings inconsistent; keep serving.
        let mut text = match self.text.lock() {
            Ok(text) => text,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut text)
    }

    /// Sets the proxy in use (already redacted).
    pub fn set_proxy(&self, proxy: Option<String>) {
        self.with_text(|t| t.proxy = proxy);
    }

    /// Sets the HTTP version of the open connection.
    pub fn set_http_version(&self, version: Option<&'static str>) {
        self.with_text(|t| t.http_version = version);
    }

    /// Sets the last event id received.
    pub fn set_last_event_id(&self, id: &str) {
        self.with_text(|t| {
            if t.last_event_id != id {
                t.last_event_id.clear();
                t.last_event_id.push_str(id);
            }
        });
    }

    /// Sets the id of the last event acknowledged together with every earlier one.
    pub fn set_last_acked_id(&self, id: &str) {
        self.with_text(|t| {
            t.last_acked_id.clear();
            t.last_acked_id.push_str(id);
        });
    }

    /// Sets the last checkpoint Kafka acknowledged.
    pub fn set_checkpoint(&self, id: &str) {
        self.with_text(|t| {
            t.checkpoint.clear();
            t.checkpoint.push_str(id);
        });
    }

    /// The last checkpoint Kafka acknowledged (`None` before the first).
    pub fn checkpoint(&self) -> Option<String> {
        self.with_text(|t| (!t.checkpoint.is_empty()).then(|| t.checkpoint.clone()))
    }

    /// Sets (or clears) the last error; the text must already be free of secrets.
    pub fn set_error(&self, error: Option<String>) {
        self.with_text(|t| t.last_error = error);
    }

    /// A consistent-enough copy for `/status`.
    pub fn row(&self) -> StatusRow {
        let text = self.with_text(|t| t.clone());
        let now = ms_since(self.origin);
        StatusRow {
            target: self.id.to_string(),
            url: self.url.to_string(),
            state: self.state(),
            state_seconds: now.saturating_sub(self.state_since_ms.load(Ordering::Relaxed)) as f64
                / 1000.0,
            events: self.events.get(),
            acked: self.acked.get(),
            bytes: self.bytes.get(),
            in_flight: u64::try_from(self.queue_depth.get()).unwrap_or(0),
            connection: self.generation.load(Ordering::Relaxed),
            reconnects: self.reconnects.iter().map(Counter::get).sum(),
            proxy: text.proxy,
            http_version: text.http_version.map(str::to_owned),
            last_event_id: text.last_event_id,
            last_acked_id: text.last_acked_id,
            checkpoint: text.checkpoint,
            owner_epoch: self.owner_epoch.load(Ordering::Relaxed),
            handing_over: self.handing_over.load(Ordering::Relaxed),
            delivery: self.delivery(),
            topic: self.topic.to_string(),
            seconds_since_last_byte: self.seconds_since_last_byte(),
            seconds_since_last_event: self.seconds_since_last_event(),
            last_error: text.last_error,
            owner: None,
        }
    }
}

fn ms_since(origin: Instant) -> u64 {
    ms_between(origin, Instant::now())
}

fn ms_between(origin: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX - 1)
}
