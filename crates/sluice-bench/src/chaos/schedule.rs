//! The chaos schedule: every fault and every kill of a run, drawn from the seed before the run
//! starts (so a seed replays it), as a list of actions sorted by time. Pure: it must not touch
//! processes, sockets or the clock.

use std::time::Duration;

use sluice_sim::{RawParams, Scalar};

use super::rng::Rng;

/// One upstream fault, queued on a target's simulator for its next stream connection(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next `count` connections answer this 5xx status.
    ServerErrors { count: u32, status: u16 },
    /// The next `count` connections answer 429 with `Retry-After: retry_after` seconds.
    TooManyRequests { count: u32, retry_after: u64 },
    /// After `events` events the stream sends nothing more (the worker's idle timeout fires).
    Stall { events: u64 },
    /// After `events` events the TCP connection is aborted with an RST.
    Reset { events: u64 },
    /// The connection is cut (FIN mid-body) at this age, as a proxy's TTL does.
    ProxyTtl { age: Duration },
    /// After `events` events the response ends cleanly.
    Close { events: u64 },
}

impl Fault {
    /// A short name for counts in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::ServerErrors { .. } => "5xx",
            Fault::TooManyRequests { .. } => "429",
            Fault::Stall { .. } => "stall",
            Fault::Reset { .. } => "reset",
            Fault::ProxyTtl { .. } => "proxy_ttl",
            Fault::Close { .. } => "close",
        }
    }

    /// How many connections it applies to, and the simulator's parameters for each.
    pub fn to_params(&self) -> (u32, RawParams) {
        let mut p = RawParams::default();
        let count = match self {
            Fault::ServerErrors { count, status } => {
                p.status = Some(Scalar::Num(u64::from(*status)));
                *count
            }
            Fault::TooManyRequests { count, retry_after } => {
                p.status = Some(Scalar::Num(429));
                p.retry_after = Some(Scalar::Num(*retry_after));
                *count
            }
            Fault::Stall { events } => {
                p.stall_after_events = Some(Scalar::Num(*events));
                1
            }
            Fault::Reset { events } => {
                p.reset_after_events = Some(Scalar::Num(*events));
                1
            }
            Fault::ProxyTtl { age } => {
                p.max_age = Some(Scalar::Str(format!("{}ms", age.as_millis())));
                1
            }
            Fault::Close { events } => {
                p.close_after_events = Some(Scalar::Num(*events));
                1
            }
        };
        (count, p)
    }

    fn draw(rng: &mut Rng) -> Fault {
        match rng.range(0, 5) {
            0 => Fault::ServerErrors {
                count: u32::try_from(rng.range(1, 4)).unwrap_or(1),
                status: [500, 502, 503][rng.index(3)],
            },
            1 => Fault::TooManyRequests {
                count: u32::try_from(rng.range(1, 3)).unwrap_or(1),
                retry_after: rng.range(1, 2),
            },
            2 => Fault::Stall {
                events: rng.range(10, 200),
            },
            3 => Fault::Reset {
                events: rng.range(10, 300),
            },
            4 => Fault::ProxyTtl {
                age: rng.millis(1_000, 6_000),
            },
            _ => Fault::Close {
                events: rng.range(10, 300),
            },
        }
    }
}

/// What happens at one moment of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// Queue `fault` on target number `target`'s simulator.
    Fault { target: usize, fault: Fault },
    /// kill -9 worker number `worker`, restart it at once.
    KillWorker { worker: usize },
    /// kill -9 the aggregator, restart it at once.
    KillAggregator,
}

/// An act and when it happens (from the start of the chaos phase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Offset from the start of the chaos phase.
    pub at: Duration,
    /// What to do.
    pub act: Act,
}

/// The intervals the schedule draws from (inclusive low, exclusive high).
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// Between two kills of one worker.
    pub worker_kill: (Duration, Duration),
    /// Between two kills of the aggregator.
    pub aggregator_kill: (Duration, Duration),
    /// Between two faults (on any target).
    pub fault: (Duration, Duration),
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            worker_kill: (Duration::from_secs(3), Duration::from_secs(7)),
            aggregator_kill: (Duration::from_secs(8), Duration::from_secs(15)),
            fault: (Duration::from_millis(500), Duration::from_millis(2_500)),
        }
    }
}

/// Every action of a `length` chaos phase with `targets` targets and `workers` workers.
pub fn plan(
    seed: u64,
    length: Duration,
    targets: usize,
    workers: usize,
    i: Intervals,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut times =
        |stream: u64, (low, high): (Duration, Duration), make: &mut dyn FnMut(&mut Rng) -> Act| {
            let mut rng = Rng::new(seed, stream);
            let mut at = Duration::ZERO;
            loop {
                at += rng.millis(millis(low), millis(high));
                if at >= length {
                    break;
                }
                let act = make(&mut rng);
                actions.push(Action { at, act });
            }
        };
    for worker in 0..workers {
        times(100 + worker as u64, i.worker_kill, &mut |_| {
            Act::KillWorker { worker }
        });
    }
    times(1, i.aggregator_kill, &mut |_| Act::KillAggregator);
    if targets > 0 {
        times(2, i.fault, &mut |rng| Act::Fault {
            target: rng.index(targets),
            fault: Fault::draw(rng),
        });
    }
    actions.sort_by_key(|a| a.at);
    actions
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_seed_replays_its_schedule_and_kills_keep_their_intervals() {
        let length = Duration::from_secs(600);
        let a = plan(42, length, 4, 1, Intervals::default());
        assert_eq!(a, plan(42, length, 4, 1, Intervals::default()));
        assert_ne!(a, plan(43, length, 4, 1, Intervals::default()));
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(a.iter().all(|x| x.at < length));
        let gaps = |want: &Act| {
            let times: Vec<Duration> = a.iter().filter(|x| &x.act == want).map(|x| x.at).collect();
            let mut previous = Duration::ZERO;
            let mut gaps = Vec::new();
            for t in times {
                gaps.push(t - previous);
                previous = t;
            }
            gaps
        };
        let worker = gaps(&Act::KillWorker { worker: 0 });
        assert!(worker.len() > 600 / 7, "{}", worker.len());
        assert!(
            worker
                .iter()
                .all(|g| *g >= Duration::from_secs(3) && *g < Duration::from_secs(7))
        );
        let aggregator = gaps(&Act::KillAggregator);
        assert!(
            aggregator
                .iter()
                .all(|g| *g >= Duration::from_secs(8) && *g < Duration::from_secs(15))
        );
        let faults: Vec<&Fault> = a
            .iter()
            .filter_map(|x| match &x.act {
                Act::Fault { target, fault } => {
                    assert!(*target < 4);
                    Some(fault)
                }
                _ => None,
            })
            .collect();
        for name in ["5xx", "429", "stall", "reset", "proxy_ttl", "close"] {
            assert!(
                faults.iter().any(|f| f.name() == name),
                "no {name} fault in 10 minutes"
            );
        }
    }

    #[test]
    fn every_fault_is_valid_simulator_parameters() {
        let mut rng = Rng::new(9, 9);
        for _ in 0..1000 {
            let fault = Fault::draw(&mut rng);
            let (count, params) = fault.to_params();
            assert!(count >= 1);
            params.validate().unwrap();
        }
    }

    #[test]
    fn several_workers_each_get_their_own_kills() {
        let a = plan(1, Duration::from_secs(60), 2, 3, Intervals::default());
        for worker in 0..3 {
            assert!(a.iter().any(|x| x.act == Act::KillWorker { worker }));
        }
    }
}
