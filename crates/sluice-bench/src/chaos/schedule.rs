//! The chaos schedule: every fault, kill, pause and rolling restart of a run, drawn from the
//! seed before the run starts (so a seed replays it), as a list of actions sorted by time.
//! Pauses and rolling restarts are drawn only for a fleet (several workers), from streams of
//! their own, so a single-worker seed replays the plan it always had. Pure: it must not touch
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
    /// SIGSTOP worker number `worker`, SIGCONT it `for` later (some pauses are longer than the
    /// fleet's session timeout, so the group moves its targets while it is frozen).
    PauseWorker { worker: usize, r#for: Duration },
    /// SIGTERM each worker in turn: wait for its exit, restart it, wait until it is ready,
    /// then the next.
    RollingRestart,
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
    /// Between two pauses of one worker (fleet only).
    pub pause: (Duration, Duration),
    /// How long a pause lasts.
    pub pause_length: (Duration, Duration),
    /// Between two rolling restarts (fleet only).
    pub rolling_restart: (Duration, Duration),
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            worker_kill: (Duration::from_secs(3), Duration::from_secs(7)),
            aggregator_kill: (Duration::from_secs(8), Duration::from_secs(15)),
            fault: (Duration::from_millis(500), Duration::from_millis(2_500)),
            pause: (Duration::from_secs(6), Duration::from_secs(14)),
            // The chaos fleet's session timeout is 3 s: about half the pauses outlast it.
            pause_length: (Duration::from_millis(500), Duration::from_secs(6)),
            rolling_restart: (Duration::from_secs(10), Duration::from_secs(40)),
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
    if workers > 1 {
        for worker in 0..workers {
            let (low, high) = i.pause_length;
            times(200 + worker as u64, i.pause, &mut |rng| Act::PauseWorker {
                worker,
                r#for: rng.millis(millis(low), millis(high)),
            });
        }
        times(3, i.rolling_restart, &mut |_| Act::RollingRestart);
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

    #[test]
    fn a_single_worker_gets_no_pauses_or_rolling_restarts_and_keeps_its_plan() {
        let length = Duration::from_secs(600);
        let single = plan(42, length, 4, 1, Intervals::default());
        assert!(
            !single
                .iter()
                .any(|x| matches!(x.act, Act::PauseWorker { .. } | Act::RollingRestart))
        );
        // The fleet's extra acts come from streams of their own: removing them gives back
        // the plan of the same seed's worker 0, aggregator and faults.
        let fleet = plan(42, length, 4, 3, Intervals::default());
        let common: Vec<Action> = fleet
            .iter()
            .filter(|x| match x.act {
                Act::KillWorker { worker } => worker == 0,
                Act::PauseWorker { .. } | Act::RollingRestart => false,
                _ => true,
            })
            .cloned()
            .collect();
        assert_eq!(common, single);
    }

    #[test]
    fn a_fleet_pauses_every_worker_some_beyond_the_session_and_restarts_in_rolls() {
        let length = Duration::from_secs(600);
        let session = Duration::from_secs(3);
        let a = plan(7, length, 4, 3, Intervals::default());
        assert_eq!(a, plan(7, length, 4, 3, Intervals::default()));
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        for worker in 0..3 {
            let pauses: Vec<Duration> = a
                .iter()
                .filter_map(|x| match x.act {
                    Act::PauseWorker { worker: w, r#for } if w == worker => Some(r#for),
                    _ => None,
                })
                .collect();
            assert!(pauses.len() > 600 / 14, "worker {worker}: {}", pauses.len());
            assert!(
                pauses
                    .iter()
                    .all(|p| *p >= Duration::from_millis(500) && *p < Duration::from_secs(6))
            );
            assert!(pauses.iter().any(|p| *p > session), "worker {worker}");
            assert!(pauses.iter().any(|p| *p < session), "worker {worker}");
        }
        assert!(
            !a.iter()
                .any(|x| matches!(x.act, Act::PauseWorker { worker: 3, .. }))
        );
        let rolls: Vec<Duration> = a
            .iter()
            .filter(|x| x.act == Act::RollingRestart)
            .map(|x| x.at)
            .collect();
        assert!(rolls.len() >= 600 / 40, "{}", rolls.len());
        let mut previous = Duration::ZERO;
        for at in rolls {
            assert!(
                at - previous >= Duration::from_secs(10) && at - previous < Duration::from_secs(40)
            );
            previous = at;
        }
    }
}
