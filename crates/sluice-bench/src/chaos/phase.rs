//! The chaos phase of a run: carries out the schedule's actions at their times (faults on the
//! simulators, kill -9s, pauses with their SIGCONT owed, rolling restarts), watching every
//! process between them. A kill -9 drawn for a paused worker is skipped (and counted), so a
//! long pause really ends in a SIGCONT after the group has moved its targets. A rolling restart runs beside the other acts: one worker at a time is
//! sent SIGTERM, restarted once it has exited and given until it answers `/readyz` (at most
//! [`READY_WAIT`]) before the next. It must not judge the run; it only counts what it did.

use std::time::Duration;

use tokio::time::Instant;

use super::member::Member;
use super::pages::Pages;
use super::schedule::{Act, Action};
use super::tally::Collector;
use super::upstream::World;

/// How long a rolling restart waits for a restarted worker to be ready before the next.
const READY_WAIT: Duration = Duration::from_secs(30);
/// How often a rolling restart in progress is looked at.
const ROLLING_TICK: Duration = Duration::from_millis(100);

/// What the phase did, beyond the members' own counts.
#[derive(Debug, Clone, Default)]
pub struct Done {
    /// Pauses started that were drawn longer than the fleet's session timeout (a rolling
    /// restart reaching a paused worker ends its pause early: SIGCONT before SIGTERM).
    pub long_pauses: u32,
    /// kill -9s drawn for a worker while it was paused, and skipped: the pause is that
    /// worker's fault then (a kill would turn it into a restart that takes its partitions back,
    /// and the SIGCONT after a lost session, what pauses are for, would never happen).
    pub paused_kills: u32,
    /// Rolling restarts that reached the last worker.
    pub rolling_restarts: u32,
    /// Rolling restarts drawn while one was still in progress (not started).
    pub rolling_skipped: u32,
    /// Workers not ready [`READY_WAIT`] after a rolling restart restarted them.
    pub not_ready: Vec<String>,
}

/// The processes and the world the phase acts on.
pub struct Cast<'a> {
    /// The workers.
    pub workers: &'a mut [Member],
    /// The aggregator.
    pub aggregator: &'a mut Member,
    /// The simulators.
    pub world: &'a mut World,
    /// The page searcher (a process's pages are searched before it is killed).
    pub pages: &'a mut Pages,
    /// The Kafka reader (the phase ends early when it fails).
    pub collector: &'a Collector,
    /// For `/readyz`.
    pub http: &'a reqwest012::Client,
}

/// Where a rolling restart is.
enum Rolling {
    /// SIGTERM sent to `worker`; waiting for its exit and restart.
    Stopping { worker: usize },
    /// `worker` restarted at `since`; waiting for its `/readyz`.
    Starting { worker: usize, since: Instant },
}

/// Runs `plan` from `t0` until `t0 + length`; pauses still open then are resumed. A rolling
/// restart still in progress is left to [`Member::watch`] (it restarts the worker it stopped).
pub async fn run(
    cast: Cast<'_>,
    plan: Vec<Action>,
    t0: Instant,
    length: Duration,
    session_timeout: Duration,
) -> anyhow::Result<Done> {
    let Cast {
        workers,
        aggregator,
        world,
        pages,
        collector,
        http,
    } = cast;
    let end = t0 + length;
    let mut done = Done::default();
    let mut plan = plan.into_iter().peekable();
    let mut resumes: Vec<(Instant, usize)> = Vec::new();
    let mut rolling: Option<Rolling> = None;
    loop {
        let mut wake = end;
        if let Some(next) = plan.peek() {
            wake = wake.min(t0 + next.at);
        }
        if let Some(first) = resumes.iter().map(|(at, _)| *at).min() {
            wake = wake.min(first);
        }
        if rolling.is_some() {
            wake = wake.min(Instant::now() + ROLLING_TICK);
        }
        tokio::time::sleep_until(wake).await;
        for member in workers.iter_mut().chain(std::iter::once(&mut *aggregator)) {
            member.watch();
        }
        if collector.failed() {
            break;
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = resumes.into_iter().partition(|(at, _)| *at <= now);
        resumes = later;
        for (_, worker) in due {
            if let Some(member) = workers.get_mut(worker) {
                member.resume().await?;
            }
        }
        rolling = advance(rolling, workers, http, &mut done).await?;
        if now >= end {
            break;
        }
        while let Some(action) = plan.next_if(|a| t0 + a.at <= now) {
            match action.act {
                Act::Fault { target, fault } => world.inject(target, &fault)?,
                Act::KillWorker { worker } => {
                    let Some(member) = workers.get_mut(worker) else {
                        continue;
                    };
                    // A frozen worker is not killed (see `Done::paused_kills`).
                    if member.is_paused() {
                        done.paused_kills += 1;
                        continue;
                    }
                    pages.worker(&member.base).await;
                    member.kill_and_restart().await?;
                }
                Act::KillAggregator => {
                    pages.aggregator(&aggregator.base, &[]).await;
                    aggregator.kill_and_restart().await?;
                }
                Act::PauseWorker { worker, r#for } => {
                    let Some(member) = workers.get_mut(worker) else {
                        continue;
                    };
                    if member.is_paused() || member.terminating() {
                        continue;
                    }
                    member.pause().await?;
                    if member.is_paused() {
                        if r#for > session_timeout {
                            done.long_pauses += 1;
                        }
                        resumes.push((Instant::now() + r#for, worker));
                    }
                }
                Act::RollingRestart => {
                    if rolling.is_some() {
                        done.rolling_skipped += 1;
                    } else if let Some(first) = workers.first_mut() {
                        first.terminate().await?;
                        rolling = Some(Rolling::Stopping { worker: 0 });
                    }
                }
            }
        }
    }
    for (_, worker) in resumes {
        if let Some(member) = workers.get_mut(worker) {
            member.resume().await?;
        }
    }
    Ok(done)
}

/// One look at a rolling restart in progress; the next state.
async fn advance(
    rolling: Option<Rolling>,
    workers: &mut [Member],
    http: &reqwest012::Client,
    done: &mut Done,
) -> anyhow::Result<Option<Rolling>> {
    let Some(state) = rolling else {
        return Ok(None);
    };
    let next = match state {
        Rolling::Stopping { worker } => {
            let stopped = workers.get(worker).is_none_or(|m| !m.terminating());
            if stopped {
                Rolling::Starting {
                    worker,
                    since: Instant::now(),
                }
            } else {
                Rolling::Stopping { worker }
            }
        }
        Rolling::Starting { worker, since } => {
            let Some(member) = workers.get(worker) else {
                return Ok(None);
            };
            // A frozen worker would only time the request out.
            let ready = !member.is_paused() && ready(http, &member.base).await;
            if !ready && since.elapsed() < READY_WAIT {
                return Ok(Some(Rolling::Starting { worker, since }));
            }
            if !ready {
                done.not_ready.push(format!(
                    "{} not ready {READY_WAIT:?} after its rolling restart",
                    member.name
                ));
            }
            let following = worker + 1;
            match workers.get_mut(following) {
                Some(member) => {
                    member.terminate().await?;
                    Rolling::Stopping { worker: following }
                }
                None => {
                    done.rolling_restarts += 1;
                    return Ok(None);
                }
            }
        }
    };
    Ok(Some(next))
}

/// Whether `GET /readyz` answers 200 (within half a second: the loop must not stall).
async fn ready(http: &reqwest012::Client, base: &str) -> bool {
    http.get(format!("{base}/readyz"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
