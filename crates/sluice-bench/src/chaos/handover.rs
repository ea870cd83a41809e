//! `sluice-bench handover`: how long a fleet's targets are dark when they move between workers,
//! on a real Kafka, through the real proxies. Each cycle: a second worker joins (planned: the
//! group moves a share of the partitions to it), leaves again with SIGTERM (planned; a dynamic
//! member leaves the group), joins once more, and is killed with -9 (unplanned: its targets move
//! after the session timeout). For every target that moved, the gap is the longest time between
//! two consecutive new events reaching Kafka around the move (the simulators emit at a steady
//! rate, so the gap is the dark time plus one event's spacing). Prints p50/p99/max per kind,
//! records per event and lost events.
//!
//! What it must NOT do: judge a run by a timing (it reports; the lost and duplicate counts are
//! the checks), or touch anything but its own topics and processes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

use super::member::Member;
use super::secrets::Secrets;
use super::tally::{Collector, TargetTally};
use super::upstream::{Feed, World};
use super::{config, tally};
use crate::kafka::Kafka;
use crate::parse_duration;

/// `sluice-bench handover`.
#[derive(Debug, clap::Args)]
pub struct HandoverArgs {
    /// `real` (Apache Kafka started here by `scripts/kafka`) or a bootstrap address.
    #[arg(long, default_value = "real")]
    pub kafka: String,
    /// Targets (one simulator each, through tinyproxy or microsocks).
    #[arg(long, default_value_t = 24)]
    pub targets: usize,
    /// Join / leave / join / kill cycles.
    #[arg(long, default_value_t = 3)]
    pub cycles: usize,
    /// Events per second per target.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// `fleet.partitions`.
    #[arg(long, default_value_t = 12)]
    pub fleet_partitions: i32,
    /// `fleet.session_timeout` (the unplanned handover waits for it).
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    pub fleet_session_timeout: Duration,
    /// `fleet.handover_timeout` (`0s`: stop before the new owner starts, to compare).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub handover_timeout: Duration,
    /// The `sluice` binary (default: next to this executable).
    #[arg(long)]
    pub sluice_bin: Option<std::path::PathBuf>,
    /// Keep the configs and logs (they are kept anyway when the run fails).
    #[arg(long)]
    pub keep: bool,
}

/// One move of targets, measured.
struct Move {
    kind: &'static str,
    /// When it began (before the signal or the start), ms since the epoch.
    from_ms: i64,
    targets: BTreeSet<String>,
    /// Until the targets ran on their new owner (wall time).
    settled_in: Duration,
}

/// Runs the handover benchmark and prints its report.
pub async fn run(args: HandoverArgs) -> anyhow::Result<()> {
    if args.targets == 0 || args.cycles == 0 || !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--targets and --cycles must be at least 1 and --rate a positive number");
    }
    let bin = crate::sluice_bin(args.sluice_bin.as_ref())?;
    let temp = tempfile::Builder::new()
        .prefix("sluice-bench-handover")
        .tempdir()?;
    let dir = temp.path().to_owned();
    std::fs::create_dir_all(dir.join("logs")).context("cannot create the run dir")?;
    let result = run_in(&args, &bin, &dir).await;
    if result.is_err() || args.keep {
        let kept = temp.keep();
        eprintln!("handover: configs and logs kept in {}", kept.display());
    }
    result
}

async fn run_in(args: &HandoverArgs, bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let seed = 20_261_203;
    let mut kafka = Kafka::start(&args.kafka).await?;
    let names = config::Names::fresh(seed);
    kafka.create_topic(&names.events, 3, false).await?;
    kafka
        .create_topic(&names.checkpoints, args.fleet_partitions, true)
        .await?;
    let bootstrap = kafka.bootstrap().to_owned();
    let secrets = Secrets::new(seed);
    // Enough events for the whole run: the feeds must not end before the last move.
    let per_cycle = 3.0 * args.fleet_session_timeout.as_secs_f64() + 60.0;
    let events = (args.rate * per_cycle * args.cycles as f64).ceil() as u64;
    let feed = Feed {
        rate: args.rate,
        events,
        entities: 50,
    };
    let world = World::start(seed, args.targets, feed, &secrets).await?;
    let settings = config::Settings {
        bootstrap: bootstrap.clone(),
        names: names.clone(),
        session_timeout: None,
        snapshot_interval: Duration::from_secs(5),
        exactly_once: false,
        fleet: Some(config::FleetSettings {
            partitions: args.fleet_partitions,
            session_timeout: args.fleet_session_timeout,
            handover_timeout: Some(args.handover_timeout),
        }),
    };
    let files = config::write(dir, &world, &secrets, &settings, 2)?;
    let collector = Collector::start(&bootstrap, &names.events, 3, secrets.clone())?;
    let logs = dir.join("logs");
    let mut members: Vec<Member> = (0..2)
        .map(|n| {
            Member::new(
                format!("worker-{n}"),
                "worker",
                bin,
                &files.workers[n],
                &logs,
                &files.worker_listen[n],
            )
        })
        .collect();
    let http = reqwest012::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let all: BTreeSet<String> = world.upstreams.iter().map(|u| u.id.clone()).collect();

    members[0].start()?;
    wait_until(&http, "the first worker to run every target", async |h| {
        running(h, &members[0].base).await == all
    })
    .await?;
    // A target with no checkpoint yet has nothing to hand over (it stops first): measure the
    // steady state, where every target has one.
    wait_until(&http, "every target to have a checkpoint", async |h| {
        checkpointed(h, &members[0].base).await
    })
    .await?;
    let mut moves = Vec::new();
    for cycle in 0..args.cycles {
        println!("handover: cycle {} of {}", cycle + 1, args.cycles);
        // Planned: a worker joins and takes a share.
        let a = members[0].base.clone();
        let moved = join(&mut members[1], &http, &a, &all, &mut moves).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Planned: it leaves (SIGTERM, a dynamic member).
        let from_ms = now_ms();
        let started = Instant::now();
        members[1].stop(Duration::from_secs(20)).await;
        wait_until(&http, "the first to run every target again", async |h| {
            running(h, &a).await == all
        })
        .await?;
        moves.push(Move {
            kind: "planned: a worker leaves (SIGTERM)",
            from_ms,
            targets: moved,
            settled_in: started.elapsed(),
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Unplanned: it joins again (another planned move) and dies.
        let moved = join(&mut members[1], &http, &a, &all, &mut moves).await?;
        // Some events on the new owner before the kill, so the join's gap has ended.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let from_ms = now_ms();
        let started = Instant::now();
        members[1].kill().await;
        wait_until(&http, "the survivor to run every target", async |h| {
            running(h, &a).await == all
        })
        .await?;
        moves.push(Move {
            kind: "unplanned: kill -9",
            from_ms,
            targets: moved,
            settled_in: started.elapsed(),
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Let the feeds flow on a little so every move's gap has ended.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = collector.snapshot();
    report(args, &moves, &tally);
    // The first worker's assignment reads (its start and every take-back), from its metrics.
    let metrics = match http
        .get(format!("{}/metrics", members[0].base))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let series = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        series("sluice_fleet_assignment_read_seconds_sum "),
        series("sluice_fleet_assignment_read_seconds_count "),
    );
    println!(
        "handover: assignment reads on the first worker: {count} reads, mean {:.3}s",
        sum / count.max(1.0)
    );
    members[0].stop(Duration::from_secs(20)).await;
    collector.finish().await?;
    drop(world);
    Ok(())
}

fn report(args: &HandoverArgs, moves: &[Move], tally: &tally::Tally) {
    println!(
        "handover: {} targets at {}/s each, fleet.partitions {}, session_timeout {:?}, handover_timeout {:?}, {} cycles",
        args.targets,
        args.rate,
        args.fleet_partitions,
        args.fleet_session_timeout,
        args.handover_timeout,
        args.cycles
    );
    println!(
        "kind                                  moves  targets  gap p50  gap p99  gap max  settled p50"
    );
    for kind in [
        "planned: a worker joins",
        "planned: a worker leaves (SIGTERM)",
        "unplanned: kill -9",
    ] {
        let mut gaps: Vec<Duration> = Vec::new();
        let mut of_kind: Vec<&Move> = Vec::new();
        for (i, m) in moves.iter().enumerate() {
            if m.kind != kind {
                continue;
            }
            of_kind.push(m);
            // Up to the next move (or the end), so one move's gap is not counted for another.
            let until_ms = moves.get(i + 1).map_or(i64::MAX, |next| next.from_ms);
            for target in &m.targets {
                if let Some(t) = tally.targets.get(target) {
                    gaps.push(gap_between(t, m.from_ms, until_ms));
                }
            }
        }
        gaps.sort_unstable();
        let mut settled: Vec<Duration> = of_kind.iter().map(|m| m.settled_in).collect();
        settled.sort_unstable();
        println!(
            "{kind:<38}{:>5}  {:>7}  {:>6.3}s  {:>6.3}s  {:>6.3}s  {:>10.3}s",
            of_kind.len(),
            gaps.len(),
            quantile(&gaps, 0.50).as_secs_f64(),
            quantile(&gaps, 0.99).as_secs_f64(),
            gaps.last().copied().unwrap_or_default().as_secs_f64(),
            quantile(&settled, 0.50).as_secs_f64(),
        );
    }
    let (mut records, mut distinct, mut lost) = (0u64, 0u64, 0usize);
    for t in tally.targets.values() {
        records += t.records;
        distinct += t.ids.len() as u64;
        let last = t.ids.keys().copied().max().unwrap_or(0);
        lost += t.missing(last).len();
    }
    println!(
        "handover: {records} records, {distinct} distinct events, {:.4} records/event, {lost} lost (ids missing below each target's highest)",
        records as f64 / distinct.max(1) as f64
    );
}

/// The longest time between consecutive new events of `t` from the last one before `from_ms`
/// to the last one before `until_ms`.
fn gap_between(t: &TargetTally, from_ms: i64, until_ms: i64) -> Duration {
    let mut firsts: Vec<i64> = t.first_at.values().copied().collect();
    firsts.sort_unstable();
    let start = firsts.partition_point(|at| *at < from_ms).saturating_sub(1);
    let end = firsts.partition_point(|at| *at < until_ms);
    firsts[start..end]
        .windows(2)
        .map(|w| Duration::from_millis(u64::try_from(w[1] - w[0]).unwrap_or(0)))
        .max()
        .unwrap_or_default()
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The targets a worker runs by its `/status` (none when it does not answer).
async fn running(http: &reqwest012::Client, base: &str) -> BTreeSet<String> {
    rows(http, base)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["target"].as_str().map(str::to_owned))
        .collect()
}

/// Starts `joiner` and waits until it took its share from the worker at `first`; records the
/// move and returns the targets it took.
async fn join(
    joiner: &mut Member,
    http: &reqwest012::Client,
    first: &str,
    all: &BTreeSet<String>,
    moves: &mut Vec<Move>,
) -> anyhow::Result<BTreeSet<String>> {
    let from_ms = now_ms();
    let started = Instant::now();
    joiner.start()?;
    let joined = joiner.base.clone();
    wait_until(http, "the joiner to take its share", async |h| {
        split(h, first, &joined, all).await
    })
    .await?;
    let moved = running(http, &joined).await;
    moves.push(Move {
        kind: "planned: a worker joins",
        from_ms,
        targets: moved.clone(),
        settled_in: started.elapsed(),
    });
    Ok(moved)
}

/// The target rows of a worker's `/status` (none when it does not answer).
async fn rows(http: &reqwest012::Client, base: &str) -> Option<Vec<serde_json::Value>> {
    let response = http.get(format!("{base}/status.json")).send().await.ok()?;
    let body = response.bytes().await.ok()?;
    let mut status = serde_json::from_slice::<serde_json::Value>(&body).ok()?;
    match status["targets"].take() {
        serde_json::Value::Array(rows) => Some(rows),
        _ => None,
    }
}

/// Whether every target a worker runs has a checkpoint.
async fn checkpointed(http: &reqwest012::Client, base: &str) -> bool {
    rows(http, base).await.is_some_and(|rows| {
        rows.iter()
            .all(|r| r["checkpoint"].as_str().is_some_and(|c| !c.is_empty()))
    })
}

/// Every target runs on exactly one of the two, and each runs some.
async fn split(http: &reqwest012::Client, a: &str, b: &str, all: &BTreeSet<String>) -> bool {
    let (on_a, on_b) = (running(http, a).await, running(http, b).await);
    !on_a.is_empty()
        && !on_b.is_empty()
        && on_a.is_disjoint(&on_b)
        && on_a.union(&on_b).cloned().collect::<BTreeSet<_>>() == *all
}

async fn wait_until(
    http: &reqwest012::Client,
    what: &str,
    check: impl AsyncFn(&reqwest012::Client) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if check(http).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting for {what}")
}
