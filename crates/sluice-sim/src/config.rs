//! Configuration of one simulated upstream.

use std::time::Duration;

use crate::SimError;

/// What the simulator serves and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of the deterministic feed: same seed, same deltas.
    pub seed: u64,
    /// Number of entities (keys `E0001`…); at least 1.
    pub entities: usize,
    /// Deltas per second produced by the feed (tokio time). `0` is firehose mode: the shared
    /// feed does not advance and every stream pushes deltas as fast as its client reads.
    pub rate: f64,
    /// Heartbeat comment interval on an idle stream; zero disables heartbeats.
    pub heartbeat: Duration,
    /// How many of the latest deltas can be replayed after `Last-Event-ID`.
    pub history: usize,
    /// `retry:` sent at the start of each stream, when set.
    pub retry: Option<Duration>,
    /// The feed stops advancing once it has produced this many deltas.
    pub max_events: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            entities: 100,
            rate: 100.0,
            heartbeat: Duration::from_secs(15),
            history: 10_000,
            retry: None,
            max_events: None,
        }
    }
}

impl SimConfig {
    /// Whether streams are firehoses (rate 0).
    pub fn is_firehose(&self) -> bool {
        self.rate == 0.0
    }

    /// Checks the configuration, reporting every problem at once.
    pub fn validate(&self) -> Result<(), SimError> {
        let mut problems = Vec::new();
        if self.entities == 0 || self.entities > u32::MAX as usize {
            problems.push(format!(
                "entities: must be between 1 and {}, got {}",
                u32::MAX,
                self.entities
            ));
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            problems.push(format!(
                "rate: must be a finite number >= 0, got {}",
                self.rate
            ));
        }
        if let Some(retry) = self.retry {
            if u64::try_from(retry.as_millis()).is_err() {
                problems.push("retry: too large".to_owned());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SimError::InvalidConfig(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert!(SimConfig::default().validate().is_ok());
    }

    #[test]
    fn validation_reports_every_problem() {
        let config = SimConfig {
            entities: 0,
            rate: -1.0,
            ..SimConfig::default()
        };
        let message = config.validate().expect_err("invalid").to_string();
        assert!(message.contains("entities"), "{message}");
        assert!(message.contains("rate"), "{message}");
    }
}
