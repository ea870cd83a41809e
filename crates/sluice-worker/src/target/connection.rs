//! The connection state machine of one target: Starting → Connecting → Streaming → Backoff →
//! Connecting …, and Stopped; rotation (make-before-break) while Streaming.
//!
//! [`Phase`] is the state, and the status row's [`State`] is derived from it in one place
//! ([`Phase::state`]), so the two cannot drift. [`Machine`] reacts to what the phase yields
//! ([`Step`]): it tells the shared [`ReconnectPolicy`] how each connection ended and sleeps
//! as it decides (backoff, `retry:`, Retry-After, hard failures on a long backoff), and owns the
//! idle watchdog and rotation timing, all on tokio's clock, so they are tested under a paused one.
//!
//! What it must NOT do: touch Kafka (events go to the [`Pipe`]), or know how a request is made
//! (the [`Upstream`] does).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use sluice_client::{
    ConnectError, Decision, DisconnectReason, ExponentialBackoff, HardFailure, Outcome,
    ReconnectOptions, ReconnectPolicy, StreamError,
};
use sluice_config::TargetConfig;
use sluice_sse::Event;
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use super::in_flight::BoxFuture;
use super::kafka::Kafka;
use super::pipe::Pipe;
use super::stream::{Flow, Read, Reader};
use super::upstream::{Body, SetupError, Slot, Upstream};
use crate::status::{State, TargetStatus};

/// How soon a rotation that could not start, or failed, is tried again.
const ROTATION_RETRY: Duration = Duration::from_secs(1);

type Connecting<B> = BoxFuture<Result<B, ConnectError>>;

/// What happens in the current phase, from the phase's own future.
pub(crate) enum Step<B> {
    WaitOver,
    Connected(Result<B, ConnectError>),
    Chunk(Result<Option<bytes::Bytes>, StreamError>),
    Idle,
    RotateDue,
    Rotated(Result<B, ConnectError>),
}

/// One open stream.
pub(crate) struct Streaming<B> {
    body: B,
    reader: Reader,
    opened: Instant,
    /// When the last byte arrived (or reading resumed after a backpressure pause).
    last_byte: Instant,
    /// The watchdog: armed at `last_byte + idle_timeout`, re-armed lazily when it fires early,
    /// so a busy stream costs no timer operation per chunk.
    idle: std::pin::Pin<Box<Sleep>>,
    /// The watchdog was polled since it was last armed, so the timer holds this task's waker
    /// and will wake it: it need not be polled again until it has elapsed.
    idle_registered: bool,
    /// When the replacement stream is due (`max_connection_age`); `None` while one is
    /// connecting, or without a maximum age.
    rotate: Option<std::pin::Pin<Box<Sleep>>>,
    rotation: Option<Connecting<B>>,
    /// The `Last-Event-ID` the replacement in `rotation` was asked to resume after.
    rotation_from: Box<str>,
}

/// Where a target's connection stands.
pub(crate) enum Phase<B> {
    /// The jittered start.
    Starting(std::pin::Pin<Box<Sleep>>),
    /// Waiting before the next attempt.
    Backoff(std::pin::Pin<Box<Sleep>>),
    Connecting(Connecting<B>),
    Streaming(Box<Streaming<B>>),
    Stopped,
}

impl<B: Body> Phase<B> {
    /// The status row's state: the one place it is derived.
    pub(crate) fn state(&self) -> State {
        match self {
            Phase::Starting(_) => State::Starting,
            Phase::Backoff(_) => State::Backoff,
            Phase::Connecting(_) => State::Connecting,
            Phase::Streaming(_) => State::Streaming,
            Phase::Stopped => State::Stopped,
        }
    }

    /// A backpressure pause is not silence from upstream: restart the watchdog.
    pub(crate) fn reading_resumed(&mut self) {
        if let Phase::Streaming(s) = self {
            s.last_byte = Instant::now();
        }
    }

    /// What the phase yields next, polled by hand so that a wake-up touches only what can be
    /// ready: the body first, then the idle watchdog only when its timer does not already hold
    /// this task's waker (or has fired).
    pub(crate) fn poll_step(&mut self, can_read: bool, cx: &mut Context<'_>) -> Poll<Step<B>> {
        match self {
            Phase::Starting(until) | Phase::Backoff(until) => {
                until.as_mut().poll(cx).map(|()| Step::WaitOver)
            }
            Phase::Connecting(future) => future.as_mut().poll(cx).map(Step::Connected),
            Phase::Streaming(s) => {
                if can_read {
                    if let Poll::Ready(chunk) = s.body.poll_chunk(cx) {
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
                    if let Poll::Ready(result) = rotation.as_mut().poll(cx) {
                        return Poll::Ready(Step::Rotated(result));
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
}

/// The connection side of a target.
pub(crate) struct Machine<U> {
    upstream: U,
    config: Arc<TargetConfig>,
    status: Arc<TargetStatus>,
    /// The `Last-Event-ID` in force: the checkpoint at start, then the last id received.
    pub(crate) last_event_id: String,
    /// When and whether to reconnect: the rules `sluice tail` follows too.
    policy: ReconnectPolicy,
    generation: u64,
    /// The `Last-Event-ID` the current connection opened with, until its first record is sent
    /// (it travels as the `sluice.resume` header on that record).
    resume: Option<Box<str>>,
    /// Events whose id cannot be sent as `Last-Event-ID` (logged at powers of two).
    unsendable_ids: u64,
}

impl<U: Upstream> Machine<U> {
    pub(crate) fn new(
        upstream: U,
        config: Arc<TargetConfig>,
        status: Arc<TargetStatus>,
        resume_from: Option<String>,
    ) -> Machine<U> {
        let backoff = ExponentialBackoff::try_new(
            config.backoff.initial,
            config.backoff.max,
            config.backoff.reset_after,
        )
        // Validation already refused bad values; fall back to the defaults rather than panic.
        .unwrap_or_default();
        let last_event_id = match resume_from {
            Some(id) if !can_resume_after(&id) => {
                // Only an older Sluice wrote such a checkpoint; sending it would fail every
                // attempt, so the target starts without it.
                tracing::error!(target_id = %config.id, "the checkpoint holds control characters and cannot be sent as Last-Event-ID; starting without it");
                String::new()
            }
            id => id.unwrap_or_default(),
        };
        status.set_last_event_id(&last_event_id);
        Machine {
            upstream,
            config,
            status,
            last_event_id,
            policy: ReconnectPolicy::new(ReconnectOptions {
                backoff,
                reconnection_time: Duration::ZERO,
                failed_attempt_floor: Duration::ZERO,
                // An operator may fix the upstream or the secret: never give up.
                on_hard_failure: HardFailure::RetrySlowly,
            }),
            generation: 0,
            resume: None,
            unsendable_ids: 0,
        }
    }

    /// Reacts to what the phase yielded.
    pub(crate) fn handle<K: Kafka>(
        &mut self,
        step: Step<U::Body>,
        phase: &mut Phase<U::Body>,
        pipe: &mut Pipe<K>,
    ) {
        match step {
            Step::WaitOver => self.begin_connect(phase),
            Step::Connected(result) => self.on_connected(result, phase),
            Step::Chunk(chunk) => self.on_chunk(chunk, phase, pipe),
            Step::Idle => self.on_idle(phase),
            Step::RotateDue => self.on_rotate_due(phase),
            Step::Rotated(result) => self.on_rotated(result, phase),
        }
    }

    fn begin_connect(&mut self, phase: &mut Phase<U::Body>) {
        match self.upstream.attempt(&self.last_event_id, Slot::Wait) {
            Ok(attempt) => {
                self.status.set_proxy(attempt.proxy_shown);
                *phase = Phase::Connecting(attempt.future);
            }
            Err(error) => {
                // A missing secret or similar: an operator must act; keep retrying slowly.
                let outcome = Outcome::NotMade {
                    hard: error.needs_operator(),
                };
                self.reconnect_later(phase, setup_reason(&error), error.to_string(), outcome);
            }
        }
    }

    fn on_connected(&mut self, result: Result<U::Body, ConnectError>, phase: &mut Phase<U::Body>) {
        let error = match result {
            Ok(body) => {
                let from = self.last_event_id.clone();
                *phase = Phase::Streaming(self.opened(body, &from));
                return;
            }
            Err(error) => error,
        };
        if matches!(error, ConnectError::Transport { .. }) {
            self.upstream.report(false);
        }
        let reason = error.disconnect_reason();
        if !self.reconnect_later(phase, reason, error.to_string(), Outcome::Failed(&error)) {
            if matches!(error, ConnectError::NoContent) {
                self.status.reconnect(DisconnectReason::HttpStatus);
            }
            // 204 or unusable client options: the error says which.
            self.stop(phase, error.to_string());
        }
    }

    fn on_chunk<K: Kafka>(
        &mut self,
        chunk: Result<Option<bytes::Bytes>, StreamError>,
        phase: &mut Phase<U::Body>,
        pipe: &mut Pipe<K>,
    ) {
        let Phase::Streaming(s) = phase else { return };
        let bytes = match chunk {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                let reason = self.end_reason(s, DisconnectReason::Eof);
                let detail = "server closed the stream".to_owned();
                self.reconnect_later(phase, reason, detail, Outcome::Ended);
                return;
            }
            Err(error) => {
                let reason = self.end_reason(s, DisconnectReason::Reset);
                self.reconnect_later(phase, reason, error.to_string(), Outcome::Ended);
                return;
            }
        };
        let now = Instant::now();
        pipe.now = now;
        s.last_byte = now;
        self.status.bytes.inc_by(bytes.len() as u64);
        self.status.touch_byte(now);
        let wall = SystemTime::now();
        let flow = s.reader.read(&bytes, |read| match read {
            Read::Event(event) => self.accept(event, pipe, now, wall),
            Read::Replayed => self.status.duplicates.inc(),
            Read::Retry(ms) => self.policy.retry_field(ms),
        });
        match flow {
            Flow::Open { events } => {
                if events {
                    self.policy.dispatched();
                    self.status.touch_event(now);
                    self.status.set_last_event_id(&self.last_event_id);
                }
            }
            Flow::Rejected(error) => {
                let detail = format!("stream rejected: {error}");
                self.reconnect_later(phase, DisconnectReason::Protocol, detail, Outcome::Rejected);
            }
        }
    }

    fn on_idle(&mut self, phase: &mut Phase<U::Body>) {
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
        self.reconnect_later(phase, DisconnectReason::SilentDrop, detail, Outcome::Ended);
    }

    fn on_rotate_due(&mut self, phase: &mut Phase<U::Body>) {
        let Phase::Streaming(s) = phase else { return };
        match self.upstream.attempt(&self.last_event_id, Slot::FreeNow) {
            Ok(attempt) => {
                tracing::info!(target_id = %self.config.id, last_event_id = %self.last_event_id, "max connection age near: opening the replacement stream");
                s.reader.record_overlap(&self.last_event_id);
                s.rotation_from = self.last_event_id.as_str().into();
                s.rotate = None;
                s.rotation = Some(attempt.future);
            }
            Err(error) => {
                tracing::warn!(target_id = %self.config.id, %error, kind = error.kind(), "cannot open the replacement stream yet");
                s.rotate = Some(Box::pin(sleep(ROTATION_RETRY)));
            }
        }
    }

    fn on_rotated(&mut self, result: Result<U::Body, ConnectError>, phase: &mut Phase<U::Body>) {
        let Phase::Streaming(s) = phase else { return };
        s.rotation = None;
        let overlap = s.reader.take_overlap();
        match result {
            Ok(body) => {
                // The replacement resumes after the id in force when it was requested; what the
                // old stream delivered since is replayed, and dropped where ids prove it.
                let from = std::mem::take(&mut s.rotation_from);
                let mut replacement = self.opened(body, &from);
                replacement.reader.match_replays(overlap);
                self.status.reconnect(DisconnectReason::Rotate);
                tracing::info!(target_id = %self.config.id, connection = self.generation, "switched to the replacement stream; old one closed");
                *phase = Phase::Streaming(replacement);
            }
            Err(error) => {
                tracing::warn!(target_id = %self.config.id, %error, "replacement stream failed; keeping the current one");
                s.rotate = Some(Box::pin(sleep(ROTATION_RETRY)));
            }
        }
    }

    /// Ends the connection (if any) and schedules the next attempt as the policy decides;
    /// `false` (and nothing done) when it says stop.
    fn reconnect_later(
        &mut self,
        phase: &mut Phase<U::Body>,
        reason: DisconnectReason,
        detail: String,
        outcome: Outcome<'_>,
    ) -> bool {
        let delay = match self
            .policy
            .decide(outcome, Instant::now(), &mut rand::rng())
        {
            Decision::Retry(delay) => delay,
            Decision::Stop => return false,
        };
        self.status.reconnect(reason);
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
        *phase = Phase::Backoff(Box::pin(sleep(delay)));
        true
    }

    /// Stops the target for good (shutdown aside): an error no retry can fix.
    fn stop(&mut self, phase: &mut Phase<U::Body>, why: String) {
        tracing::warn!(target_id = %self.config.id, reason = %why, "target stopped");
        self.status.set_error(Some(why));
        *phase = Phase::Stopped;
    }

    /// A stream opened, asked to resume after `resumed_from`.
    fn opened(&mut self, body: U::Body, resumed_from: &str) -> Box<Streaming<U::Body>> {
        let now = Instant::now();
        self.generation += 1;
        self.resume = Some(resumed_from.into());
        self.status
            .generation
            .store(self.generation, Ordering::Relaxed);
        self.status
            .set_http_version(Some(version_name(body.version())));
        self.status.set_error(None);
        self.policy.opened(now);
        self.upstream.report(true);
        let rotate = self.config.max_connection_age.map(|age| {
            let margin = (age / 5).min(Duration::from_secs(10));
            Box::pin(sleep_until(now + age.saturating_sub(margin)))
        });
        tracing::info!(
            target_id = %self.config.id,
            connection = self.generation,
            last_event_id = %self.last_event_id,
            version = ?body.version(),
            "stream open"
        );
        Box::new(Streaming {
            body,
            reader: Reader::new(self.config.limits, &self.last_event_id),
            opened: now,
            last_byte: now,
            idle: Box::pin(sleep_until(now + self.config.idle_timeout)),
            idle_registered: false,
            rotate,
            rotation: None,
            rotation_from: Box::default(),
        })
    }

    /// Why a stream ended: an end at (or past) the configured connection age is the proxy's TTL.
    fn end_reason(&self, s: &Streaming<U::Body>, otherwise: DisconnectReason) -> DisconnectReason {
        match self.config.max_connection_age {
            Some(age) if s.opened.elapsed() + Duration::from_millis(50) >= age.mul_f64(0.9) => {
                DisconnectReason::ProxyTtl
            }
            _ => otherwise,
        }
    }

    /// One event from the stream: filter, then Kafka.
    fn accept<K: Kafka>(
        &mut self,
        event: Event,
        pipe: &mut Pipe<K>,
        now: Instant,
        wall: SystemTime,
    ) {
        let id = event.id.as_str();
        if can_resume_after(id) {
            if *id != *self.last_event_id {
                self.last_event_id.clear();
                self.last_event_id.push_str(id);
            }
        } else {
            // Published as is (Kafka headers are bytes); the resume point stays at the last id
            // that can be sent, so a reconnect or restart replays this event: a duplicate,
            // never a target that cannot reconnect.
            self.unsendable_ids += 1;
            if self.unsendable_ids.is_power_of_two() {
                tracing::warn!(
                    target_id = %self.config.id,
                    resume_after = %self.last_event_id,
                    so_far = self.unsendable_ids,
                    "an event id holds control characters and cannot be sent as Last-Event-ID; \
                     the event is published, and the target resumes after the last id that can be sent"
                );
            }
        }
        if !self.config.event_types.is_empty()
            && !self
                .config
                .event_types
                .iter()
                .any(|t| t == event.event.as_str())
        {
            self.status.filtered.inc();
            return;
        }
        let resume = self.resume.take();
        pipe.send(
            event,
            &self.last_event_id,
            self.generation,
            resume,
            now,
            wall,
        );
    }
}

/// Whether `id` can be sent back as a `Last-Event-ID` header value (no control characters
/// other than tab: what an HTTP header value may hold).
pub(crate) fn can_resume_after(id: &str) -> bool {
    http::HeaderValue::from_str(id).is_ok()
}

/// The reconnect reason of an attempt that could not start.
fn setup_reason(error: &SetupError) -> DisconnectReason {
    match error {
        SetupError::MissingSecret(_) => DisconnectReason::MissingSecret,
        _ => DisconnectReason::Protocol,
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
