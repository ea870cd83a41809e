//! The verdict of a chaos run: the measured numbers, the one summary line, and which checks
//! failed. Lost events, a state unequal to the truth and a secret found always fail; records per
//! event and the longest unserved time fail only against the thresholds given on the command
//! line; processes that exited on their own (restarted like an orchestrator would) are
//! reported. Pure: it must not measure anything itself.

use std::time::Duration;

/// The measured outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The run's seed.
    pub seed: u64,
    /// Length of the chaos phase.
    pub seconds: u64,
    /// Targets.
    pub targets: usize,
    /// Worker processes (more than 1: a fleet).
    pub workers: usize,
    /// Simulator events per target.
    pub events_per_target: u64,
    /// Simulator ids with no record in Kafka, over all targets.
    pub lost: u64,
    /// Records in the events topic over distinct events (all targets).
    pub records_per_event: f64,
    /// The worst target's records per event.
    pub worst_records_per_event: f64,
    /// The longest stretch a target went unserved by the aggregator.
    pub longest_unserved: Duration,
    /// The longest time between two new events of one target in Kafka, and that target.
    pub longest_gap: (Duration, String),
    /// Targets whose aggregated state equals the truth.
    pub states_equal: usize,
    /// Occurrences of a secret anywhere searched.
    pub secrets_found: u64,
    /// Texts searched for secrets.
    pub searched: u64,
    /// kill -9s of workers and of the aggregator.
    pub worker_kills: u32,
    /// kill -9s of the aggregator.
    pub aggregator_kills: u32,
    /// Faults queued on the simulators.
    pub faults: u64,
    /// Processes that exited without being killed.
    pub unexpected_exits: usize,
    /// SIGSTOPs of workers, and how many of them outlasted the fleet's session timeout.
    pub pauses: (u32, u32),
    /// Rolling restarts carried out to the last worker.
    pub rolling_restarts: u32,
}

/// Thresholds for the two numbers that are reported but only checked when asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Most records per distinct event (worst target).
    pub max_dup: Option<f64>,
    /// Longest unserved stretch.
    pub max_unserved: Option<Duration>,
}

impl Summary {
    /// The checks that failed (empty: the run passed).
    pub fn failures(&self, limits: Limits) -> Vec<String> {
        let mut failed = Vec::new();
        if self.lost > 0 {
            failed.push(format!("{} events lost", self.lost));
        }
        if self.states_equal < self.targets {
            failed.push(format!(
                "{} of {} states differ from the truth",
                self.targets - self.states_equal,
                self.targets
            ));
        }
        if self.secrets_found > 0 {
            failed.push(format!("{} secret occurrences found", self.secrets_found));
        }
        if let Some(max) = limits.max_dup {
            if self.worst_records_per_event > max {
                failed.push(format!(
                    "records/event {:.2} > {max}",
                    self.worst_records_per_event
                ));
            }
        }
        if let Some(max) = limits.max_unserved {
            if self.longest_unserved > max {
                failed.push(format!(
                    "unserved {:.1}s > {:.1}s",
                    self.longest_unserved.as_secs_f64(),
                    max.as_secs_f64()
                ));
            }
        }
        failed
    }

    /// The one summary line.
    pub fn line(&self, limits: Limits) -> String {
        let failures = self.failures(limits);
        let verdict = if failures.is_empty() {
            "PASS".to_owned()
        } else {
            format!("FAIL ({})", failures.join("; "))
        };
        format!(
            "chaos summary: seed={} seconds={} targets={} workers={} events/target={} lost={} \
             records/event={:.2} (worst target {:.2}) longest_unserved={:.1}s \
             longest_gap={:.1}s ({}) state_equal={} ({}/{}) \
             secrets_found={} (searched {}) worker_kills={} aggregator_kills={} \
             pauses={} ({} > session) rolling_restarts={} faults={} \
             unexpected_exits={} => {verdict}",
            self.seed,
            self.seconds,
            self.targets,
            self.workers,
            self.events_per_target,
            self.lost,
            self.records_per_event,
            self.worst_records_per_event,
            self.longest_unserved.as_secs_f64(),
            self.longest_gap.0.as_secs_f64(),
            if self.longest_gap.1.is_empty() {
                "-"
            } else {
                &self.longest_gap.1
            },
            if self.states_equal == self.targets {
                "yes"
            } else {
                "no"
            },
            self.states_equal,
            self.targets,
            self.secrets_found,
            self.searched,
            self.worker_kills,
            self.aggregator_kills,
            self.pauses.0,
            self.pauses.1,
            self.rolling_restarts,
            self.faults,
            self.unexpected_exits,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Summary {
        Summary {
            seed: 3,
            targets: 4,
            states_equal: 4,
            records_per_event: 2.0,
            worst_records_per_event: 2.5,
            longest_unserved: Duration::from_secs(40),
            ..Summary::default()
        }
    }

    #[test]
    fn loss_state_and_secrets_always_fail_the_thresholds_only_when_given() {
        let s = clean();
        assert!(s.failures(Limits::default()).is_empty());
        assert!(
            s.line(Limits::default()).ends_with("=> PASS"),
            "{}",
            s.line(Limits::default())
        );
        let limits = Limits {
            max_dup: Some(1.3),
            max_unserved: Some(Duration::from_secs(10)),
        };
        assert_eq!(s.failures(limits).len(), 2, "{:?}", s.failures(limits));
        for broken in [
            Summary { lost: 1, ..clean() },
            Summary {
                states_equal: 3,
                ..clean()
            },
            Summary {
                secrets_found: 2,
                ..clean()
            },
        ] {
            assert_eq!(broken.failures(Limits::default()).len(), 1);
            assert!(broken.line(Limits::default()).contains("=> FAIL ("));
        }
        assert!(
            Summary {
                unexpected_exits: 1,
                ..clean()
            }
            .failures(Limits::default())
            .is_empty()
        );
        let line = s.line(limits);
        assert!(line.starts_with("chaos summary: seed=3 "), "{line}");
        assert!(line.contains("lost=0 records/event=2.00 (worst target 2.50) longest_unserved=40.0s longest_gap=0.0s (-) state_equal=yes (4/4) secrets_found=0"), "{line}");
        let fleet = Summary {
            workers: 3,
            longest_gap: (Duration::from_millis(3_240), "c01".to_owned()),
            pauses: (9, 4),
            rolling_restarts: 2,
            ..clean()
        };
        let line = fleet.line(limits);
        assert!(line.contains(" targets=4 workers=3 "), "{line}");
        assert!(line.contains(" longest_gap=3.2s (c01) "), "{line}");
        assert!(
            line.contains(" pauses=9 (4 > session) rolling_restarts=2 "),
            "{line}"
        );
    }
}
