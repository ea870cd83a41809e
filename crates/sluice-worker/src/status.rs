//! The live per-target table behind `/status` and the scrape-time gauges of `/metrics`.
//!
//! Every field is written by the target's own task and read by the HTTP handlers; counters are
//! atomics, the few strings sit behind short-held mutexes. Nothing here ever holds a secret: URLs
//! and proxies are stored redacted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

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

/// The live status of one target.
#[derive(Debug)]
pub struct TargetStatus {
    /// The target.
    pub id: TargetId,
    /// The endpoint, redacted.
    pub url: String,
    /// The Kafka topic of its events.
    pub topic: String,
    origin: Instant,
    state: AtomicU8,
    delivery: AtomicU8,
    /// Milliseconds since `origin` when the state last changed.
    state_since_ms: AtomicU64,
    /// Milliseconds since `origin` of the last byte / event, `u64::MAX` for never.
    last_byte_ms: AtomicU64,
    last_event_ms: AtomicU64,
    /// Events received (after the event-type filter: events handed to Kafka).
    pub events: AtomicU64,
    /// Events Kafka acknowledged.
    pub acked: AtomicU64,
    /// Body bytes received.
    pub bytes: AtomicU64,
    /// Events sent and not yet acknowledged.
    pub in_flight: AtomicU64,
    /// Successful connections so far (the `sluice.connection` of the current one).
    pub generation: AtomicU64,
    /// Reconnects of every reason.
    pub reconnects: AtomicU64,
    text: Mutex<Text>,
}

#[derive(Debug, Default, Clone)]
struct Text {
    proxy: Option<String>,
    last_event_id: String,
    last_acked_id: String,
    checkpoint: String,
    last_error: Option<String>,
    http_version: Option<String>,
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
}

const NEVER: u64 = u64::MAX;

impl TargetStatus {
    /// A fresh status in [`State::Starting`].
    pub fn new(id: TargetId, url: String, topic: String, origin: Instant) -> TargetStatus {
        TargetStatus {
            id,
            url,
            topic,
            origin,
            state: AtomicU8::new(State::Starting.to_u8()),
            delivery: AtomicU8::new(Delivery::Ok.to_u8()),
            state_since_ms: AtomicU64::new(ms_since(origin)),
            last_byte_ms: AtomicU64::new(NEVER),
            last_event_ms: AtomicU64::new(NEVER),
            events: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            text: Mutex::new(Text::default()),
        }
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
    pub fn set_http_version(&self, version: Option<String>) {
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
            url: self.url.clone(),
            state: self.state(),
            state_seconds: now.saturating_sub(self.state_since_ms.load(Ordering::Relaxed)) as f64
                / 1000.0,
            events: self.events.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            connection: self.generation.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            proxy: text.proxy,
            http_version: text.http_version,
            last_event_id: text.last_event_id,
            last_acked_id: text.last_acked_id,
            checkpoint: text.checkpoint,
            delivery: self.delivery(),
            topic: self.topic.clone(),
            seconds_since_last_byte: self.seconds_since_last_byte(),
            seconds_since_last_event: self.seconds_since_last_event(),
            last_error: text.last_error,
        }
    }
}

fn ms_since(origin: Instant) -> u64 {
    ms_between(origin, Instant::now())
}

fn ms_between(origin: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX - 1)
}
