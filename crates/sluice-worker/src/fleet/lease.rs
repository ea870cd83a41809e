//! The fleet's local lease: a worker that has not heard from its group coordinator for most of
//! the session timeout stops its targets itself, before the group can have given them to
//! another worker (the group expires a session from the last heartbeat it received, which is
//! never later than the last answer this worker heard). So a worker cut off from the broker, or
//! one that wakes up from a pause, stops streaming in bounded time instead of running on as a
//! zombie. When the coordinator answers again for a while and no revocation came, the group
//! still counts it as the owner, and its targets start again from their checkpoints.
//!
//! [`Heard`] is written by the consumer's thread (from librdkafka's statistics: how long the
//! coordinator connection has received nothing); [`Lease::step`] is the pure decision.
//!
//! What it must NOT do: start or stop targets (the ownership does, on the step's answer), or
//! read a clock of its own in [`Lease::step`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When the group coordinator was last heard from, as the consumer's thread saw it.
#[derive(Debug)]
pub(crate) struct Heard {
    origin: Instant,
    /// Milliseconds after `origin` (0: never).
    at_ms: AtomicU64,
}

impl Heard {
    pub(crate) fn new() -> Heard {
        Heard {
            origin: Instant::now(),
            at_ms: AtomicU64::new(0),
        }
    }

    /// The coordinator was heard from `idle` ago.
    pub(crate) fn heard(&self, idle: Duration) {
        let at = self.origin.elapsed().saturating_sub(idle);
        let ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX).max(1);
        self.at_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long ago it was last heard from (`None`: never).
    pub(crate) fn silent_for(&self) -> Option<Duration> {
        let ms = self.at_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| {
            self.origin
                .elapsed()
                .saturating_sub(Duration::from_millis(ms))
        })
    }
}

/// What the lease asks of the ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing changes.
    Keep,
    /// Silent too long: stop the owned partitions' targets (the partitions stay owned).
    Expire,
    /// Heard again for long enough after an expiry: start them again.
    Renew,
}

/// The lease over a session timeout.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// Silence longer than this expires it: three quarters of the session timeout.
    length: Duration,
    /// Silence shorter than this counts as hearing the coordinator (two heartbeats).
    fresh: Duration,
    /// How long the coordinator must stay heard before an expired lease renews (two heartbeats:
    /// long enough for a rejection of the session to have arrived as a revocation).
    confirm: Duration,
    expired: bool,
    /// Since when it has been heard again after an expiry.
    heard_since: Option<Duration>,
}

impl Lease {
    /// The lease of a session of `session` with heartbeats every `heartbeat`.
    pub(crate) fn new(session: Duration, heartbeat: Duration) -> Lease {
        Lease {
            length: session.mul_f64(0.75),
            fresh: heartbeat * 2,
            confirm: heartbeat * 2,
            expired: false,
            heard_since: None,
        }
    }

    /// How long a silence expires the lease.
    pub(crate) fn length(&self) -> Duration {
        self.length
    }

    /// Whether the lease is expired now.
    pub(crate) fn is_expired(&self) -> bool {
        self.expired
    }

    /// The group gave (or took) partitions: the coordinator answered, so the lease holds.
    pub(crate) fn granted(&mut self) {
        self.expired = false;
        self.heard_since = None;
    }

    /// One check at `now` (any monotonic origin): `silent_for` is how long the coordinator has
    /// been silent (`None`: never heard), `owns` whether any partition is owned.
    pub(crate) fn step(&mut self, now: Duration, silent_for: Option<Duration>, owns: bool) -> Step {
        let Some(silent) = silent_for else {
            return Step::Keep;
        };
        if !self.expired {
            if owns && silent > self.length {
                self.expired = true;
                self.heard_since = None;
                return Step::Expire;
            }
            return Step::Keep;
        }
        if silent >= self.fresh {
            self.heard_since = None;
            return Step::Keep;
        }
        let since = *self.heard_since.get_or_insert(now);
        if now.saturating_sub(since) >= self.confirm {
            self.expired = false;
            self.heard_since = None;
            return if owns { Step::Renew } else { Step::Keep };
        }
        Step::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn lease() -> Lease {
        // A 10 s session with heartbeats every 2.5 s: expires after 7.5 s of silence.
        Lease::new(10 * S, S * 5 / 2)
    }

    #[test]
    fn silence_past_three_quarters_of_the_session_expires_it_once() {
        let mut lease = lease();
        assert_eq!(lease.step(S, Some(S * 2), true), Step::Keep);
        assert_eq!(
            lease.step(8 * S, Some(S * 7), true),
            Step::Keep,
            "7 s < 7.5 s"
        );
        assert_eq!(lease.step(9 * S, Some(S * 8), true), Step::Expire);
        assert_eq!(lease.step(10 * S, Some(S * 9), true), Step::Keep, "once");
        assert!(lease.is_expired());
    }

    #[test]
    fn nothing_owned_or_never_heard_never_expires() {
        let mut lease = lease();
        assert_eq!(lease.step(20 * S, Some(S * 20), false), Step::Keep);
        assert_eq!(lease.step(20 * S, None, true), Step::Keep);
        assert!(!lease.is_expired());
    }

    #[test]
    fn it_renews_only_after_the_coordinator_stayed_heard_for_two_heartbeats() {
        let mut lease = lease();
        assert_eq!(lease.step(9 * S, Some(S * 8), true), Step::Expire);
        assert_eq!(lease.step(10 * S, Some(S), true), Step::Keep, "heard once");
        assert_eq!(
            lease.step(12 * S, Some(S * 6), true),
            Step::Keep,
            "silent again"
        );
        assert_eq!(
            lease.step(13 * S, Some(S), true),
            Step::Keep,
            "heard, start over"
        );
        assert_eq!(lease.step(17 * S, Some(S), true), Step::Keep, "4 s < 5 s");
        assert_eq!(lease.step(18 * S, Some(S), true), Step::Renew);
        assert!(!lease.is_expired());
    }

    #[test]
    fn an_assignment_grants_it_again_at_once() {
        let mut lease = lease();
        assert_eq!(lease.step(9 * S, Some(S * 8), true), Step::Expire);
        lease.granted();
        assert!(!lease.is_expired());
        assert_eq!(lease.step(10 * S, Some(S), true), Step::Keep);
    }

    #[test]
    fn heard_keeps_the_latest_time() {
        let heard = Heard::new();
        assert_eq!(heard.silent_for(), None);
        heard.heard(Duration::ZERO);
        heard.heard(Duration::from_secs(3600));
        assert!(
            heard
                .silent_for()
                .is_some_and(|s| s < Duration::from_secs(60))
        );
    }
}
