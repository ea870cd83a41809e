//! Exponential backoff with full jitter, reset after a healthy connection.
//!
//! Pure: no clock and no global randomness. The caller passes the random source and says how long
//! the last connection was healthy, so every path is testable and deterministic under a seed.

use std::time::Duration;

use rand::Rng;

/// Why backoff parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// `initial` must be above zero.
    #[error("backoff initial delay must be above zero")]
    ZeroInitial,
    /// `max` must be at least `initial`.
    #[error("backoff max {max:?} is below initial {initial:?}")]
    MaxBelowInitial {
        /// The configured initial delay.
        initial: Duration,
        /// The configured cap.
        max: Duration,
    },
}

impl BackoffError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BackoffError::ZeroInitial => "zero_initial",
            BackoffError::MaxBelowInitial { .. } => "max_below_initial",
        }
    }
}

/// "Full jitter" exponential backoff: attempt `n` waits a uniform random time in
/// `[0, min(max, initial * 2^n)]`, so a fleet that lost one upstream does not reconnect in step.
/// A connection that stayed healthy for `reset_after` resets the attempt count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExponentialBackoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    attempt: u32,
}

impl Default for ExponentialBackoff {
    /// 500 ms doubling up to 30 s, reset after 60 s of health.
    fn default() -> Self {
        ExponentialBackoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            attempt: 0,
        }
    }
}

impl ExponentialBackoff {
    /// Validates the parameters.
    pub fn try_new(
        initial: Duration,
        max: Duration,
        reset_after: Duration,
    ) -> Result<ExponentialBackoff, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if max < initial {
            return Err(BackoffError::MaxBelowInitial { initial, max });
        }
        Ok(ExponentialBackoff {
            initial,
            max,
            reset_after,
            attempt: 0,
        })
    }

    /// The ceiling of the next delay (before jitter): `min(max, initial * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(30);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt, and one more attempt counted.
    ///
    /// `at_least` is a floor the server asked for (`Retry-After`, or `retry:`); the jittered delay
    /// never goes below it.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R, at_least: Duration) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.random_range(0..=nanos));
        jittered.max(at_least)
    }

    /// Tells the backoff how long the connection that just ended was healthy (streaming).
    /// At least `reset_after` starts the next failure sequence from `initial` again.
    pub fn connection_ended(&mut self, healthy_for: Duration) {
        if healthy_for >= self.reset_after {
            self.attempt = 0;
        }
    }

    /// The cap of every delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Attempts counted since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn backoff() -> ExponentialBackoff {
        ExponentialBackoff::try_new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .expect("valid parameters")
    }

    #[test]
    fn invalid_parameters_are_refused_with_a_reason() {
        let zero =
            ExponentialBackoff::try_new(Duration::ZERO, Duration::from_secs(1), Duration::ZERO);
        assert_eq!(zero, Err(BackoffError::ZeroInitial));
        let inverted = ExponentialBackoff::try_new(
            Duration::from_secs(2),
            Duration::from_secs(1),
            Duration::ZERO,
        );
        assert_eq!(inverted.map_err(|e| e.kind()), Err("max_below_initial"));
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let mut b = backoff();
        let mut rng = StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay(&mut rng, Duration::ZERO);
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
    }

    #[test]
    fn every_delay_is_within_zero_and_the_ceiling_and_they_are_spread() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut delays = Vec::new();
        for _ in 0..200 {
            let mut b = backoff();
            for _ in 0..3 {
                b.next_delay(&mut rng, Duration::ZERO);
            }
            let ceiling = b.ceiling();
            let delay = b.next_delay(&mut rng, Duration::ZERO);
            assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
            delays.push(delay);
        }
        delays.sort();
        delays.dedup();
        assert!(
            delays.len() > 150,
            "full jitter spreads delays: {} distinct",
            delays.len()
        );
    }

    #[test]
    fn a_server_floor_is_never_undercut() {
        let mut b = backoff();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            assert!(b.next_delay(&mut rng, Duration::from_secs(7)) >= Duration::from_secs(7));
        }
    }

    #[test]
    fn a_healthy_period_resets_the_sequence_and_a_short_one_does_not() {
        let mut b = backoff();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..4 {
            b.next_delay(&mut rng, Duration::ZERO);
        }
        b.connection_ended(Duration::from_secs(2));
        assert_eq!(b.attempt(), 4);
        b.connection_ended(Duration::from_secs(30));
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }
}
