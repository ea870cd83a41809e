//! The reconnect policy: after a stream ended or an attempt failed, whether to try again and
//! after how long. The one set of reconnect rules, shared by [`crate::EventSource`] (and so
//! `sluice tail`) and the worker's connection state machine.
//!
//! The rules, in one place:
//! - the delay is [`ExponentialBackoff`]'s full jitter, never below the stream's `retry:` (the
//!   reconnection time) nor a `Retry-After`, each counted as at most [`MAX_SERVER_DELAY`];
//! - a failed attempt (no stream, or a stream that ended before it dispatched an event) also waits
//!   at least the failed-attempt floor, so `retry: 0` never becomes a busy loop;
//! - a stream that stayed open for the backoff's `reset_after` starts the backoff over;
//! - 204 and unusable client options stop; what retrying may fix (transport failures, 408, 425,
//!   429, 5xx, the token endpoint: [`ConnectError::is_retryable`]) is retried; what it is unlikely
//!   to fix soon (other statuses, a wrong content type, a redirect that cannot be followed, a
//!   stream over the parser limits, a secret that cannot be read) stops or is retried slowly, as
//!   [`HardFailure`] says.
//!
//! Pure: it never sleeps, reads no clock and draws no global randomness; the caller passes the
//! time (tokio's, so paused-clock tests cover it) and the random source. What it must NOT do:
//! connect, log, or know about targets, checkpoints or Kafka.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::backoff::{BackoffError, ExponentialBackoff};
use crate::error::ConnectError;
use crate::server_delay::{MAX_SERVER_DELAY, reconnection_time};

/// The failed-attempt floor of an interactive client ([`ReconnectOptions::default`]): a server
/// answering `retry: 0` and closing, or `--retry 0ms` against a refusing server, must not be
/// reconnected to in a busy loop.
pub const FAILED_ATTEMPT_FLOOR: Duration = Duration::from_secs(1);

/// What a failure that retrying is unlikely to fix soon leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardFailure {
    /// Stop: an interactive client, whose user sees why.
    Stop,
    /// Try again after a long delay, half to all of the backoff's cap: a daemon, where an
    /// operator may fix the upstream or the secret meanwhile.
    RetrySlowly,
}

/// The parameters of a [`ReconnectPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectOptions {
    /// Delays between attempts: full jitter, doubling, reset after a healthy period.
    pub backoff: ExponentialBackoff,
    /// The reconnection time until the stream sends `retry:` (a browser uses about 3 s), at most
    /// [`MAX_SERVER_DELAY`].
    pub reconnection_time: Duration,
    /// The shortest wait after a failed attempt, whatever `retry:` or `Retry-After` say.
    pub failed_attempt_floor: Duration,
    /// What a failure retrying is unlikely to fix soon leads to.
    pub on_hard_failure: HardFailure,
}

/// The first delay's ceiling of an interactive client (or its cap, when that is lower).
pub const INTERACTIVE_INITIAL: Duration = Duration::from_millis(500);

impl ReconnectOptions {
    /// An interactive client (`sluice tail`): the backoff doubles from [`INTERACTIVE_INITIAL`] up
    /// to `max` and starts over after a stream open for `reset_after`; `reconnection_time` until
    /// the server sends `retry:`; failed attempts at least [`FAILED_ATTEMPT_FLOOR`] apart; a hard
    /// failure stops. Refused when `max` is zero.
    pub fn interactive(
        reconnection_time: Duration,
        max: Duration,
        reset_after: Duration,
    ) -> Result<ReconnectOptions, BackoffError> {
        let backoff = ExponentialBackoff::try_new(INTERACTIVE_INITIAL.min(max), max, reset_after)?;
        Ok(ReconnectOptions {
            backoff,
            reconnection_time,
            failed_attempt_floor: FAILED_ATTEMPT_FLOOR,
            on_hard_failure: HardFailure::Stop,
        })
    }
}

impl Default for ReconnectOptions {
    /// A browser-like interactive client: 3 s reconnection time, the backoff up to 60 s, reset
    /// after 60 s open (see [`ReconnectOptions::interactive`]).
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        ReconnectOptions::interactive(Duration::from_secs(3), minute, minute)
            .expect("constant backoff parameters are valid")
    }
}

/// How the last connection or attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The open stream ended: the server closed it, it broke, or it went silent past the idle
    /// timeout.
    Ended,
    /// The open stream broke the protocol (an event or line over the parser limits).
    Rejected,
    /// A connection attempt failed.
    Failed(&'a ConnectError),
    /// No attempt could be made (the request could not be built); `hard` when an operator must
    /// act, as for a secret that cannot be read.
    NotMade {
        /// Whether retrying is unlikely to help soon.
        hard: bool,
    },
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this delay.
    Retry(Duration),
    /// Do not reconnect.
    Stop,
}

/// The open stream, as far as the policy cares.
#[derive(Debug, Clone, Copy)]
struct Open {
    at: Instant,
    dispatched: bool,
}

/// The reconnect state of one endpoint: the backoff's attempt count, the reconnection time in
/// force, and the open stream (when it opened, whether it dispatched an event).
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    backoff: ExponentialBackoff,
    reconnection_time: Duration,
    failed_attempt_floor: Duration,
    on_hard_failure: HardFailure,
    open: Option<Open>,
}

impl ReconnectPolicy {
    /// A policy with no stream open and no attempt counted.
    pub fn new(options: ReconnectOptions) -> ReconnectPolicy {
        ReconnectPolicy {
            backoff: options.backoff,
            reconnection_time: options.reconnection_time.min(MAX_SERVER_DELAY),
            failed_attempt_floor: options.failed_attempt_floor,
            on_hard_failure: options.on_hard_failure,
            open: None,
        }
    }

    /// A stream opened at `now`.
    pub fn opened(&mut self, now: Instant) {
        self.open = Some(Open {
            at: now,
            dispatched: false,
        });
    }

    /// The open stream dispatched an event: its end is not a failed attempt.
    pub fn dispatched(&mut self) {
        if let Some(open) = &mut self.open {
            open.dispatched = true;
        }
    }

    /// The stream sent `retry: ms`: the new reconnection time (at most [`MAX_SERVER_DELAY`]).
    pub fn retry_field(&mut self, ms: u64) {
        self.reconnection_time = reconnection_time(ms);
    }

    /// The reconnection time in force.
    pub fn reconnection_time(&self) -> Duration {
        self.reconnection_time
    }

    /// The connection or attempt ended at `now` with `outcome`: whether to try again, and when.
    pub fn decide<R: Rng + ?Sized>(
        &mut self,
        outcome: Outcome<'_>,
        now: Instant,
        rng: &mut R,
    ) -> Decision {
        let open = self.open.take();
        if let Some(open) = open {
            self.backoff
                .connection_ended(now.saturating_duration_since(open.at));
        }
        let (server_delay, hard) = match outcome {
            Outcome::Ended => (None, false),
            Outcome::Rejected => (None, true),
            Outcome::NotMade { hard } => (None, hard),
            Outcome::Failed(ConnectError::NoContent | ConnectError::Options(_)) => {
                return Decision::Stop;
            }
            Outcome::Failed(error) => (error.retry_after(), !error.is_retryable()),
        };
        if hard && self.on_hard_failure == HardFailure::Stop {
            return Decision::Stop;
        }
        let mut floor = server_delay
            .unwrap_or_default()
            .min(MAX_SERVER_DELAY)
            .max(self.reconnection_time);
        if !open.is_some_and(|open| open.dispatched) {
            floor = floor.max(self.failed_attempt_floor);
        }
        let mut delay = self.backoff.next_delay(rng, floor);
        if hard {
            let max = self.backoff.max();
            delay = delay.max(rng.random_range(max / 2..=max));
        }
        Decision::Retry(delay)
    }
}

#[cfg(test)]
mod tests;
