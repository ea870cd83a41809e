//! `sluice-bench chaos`: the worker and the aggregator as real child processes on a real Kafka,
//! one simulator per target behind password-protected proxies, a seeded schedule of upstream
//! faults (5xx and 429 bursts, stalls, resets, proxy-TTL closes, clean closes) and of kill -9s
//! (each worker every 3-7 s, the aggregator every 8-15 s, each restarted at once). With
//! `--workers N` > 1 the workers are a fleet: every worker file has a `fleet:` section (one
//! group, `--fleet-partitions` partitions, its own static `instance_id`, a 3 s session) and lists
//! every target, the checkpoint topic has that many partitions, and the schedule adds pauses
//! (SIGSTOP, SIGCONT 0.5-6 s later, so about half outlast the session and the group moves the
//! frozen worker's targets) and rolling restarts (SIGTERM each worker in turn, restart it once it
//! has exited, wait for its `/readyz`, then the next). Then the faults stop, everything catches
//! up (bounded), and the run checks: every simulator id in Kafka for every target, records per
//! distinct event, the longest time a target went unserved by the aggregator, the longest gap
//! between new events of a target in Kafka (by their records' create time), the aggregator's
//! state equal to each simulator's snapshot, and no secret in any log, metric, status page or
//! Kafka record. It prints its seed first and one summary line last, and fails (exit 1) when a
//! check fails.
//!
//! Files: `schedule` (the seeded plan), `phase` (carrying it out), `upstream` (simulators,
//! proxies), `config` (the YAML), `member` (a restartable process), `pages` (HTTP pages
//! searched for secrets), `probe` (availability), `tally` (Kafka), `state` (the comparison),
//! `secrets`, `summary` (the verdict).
//!
//! Like the rest of the harness it is not a test of its own: the short runs in
//! `tests/chaos.rs` are. It talks to loopback addresses only.

mod config;
pub mod handover;
mod member;
mod pages;
mod phase;
mod probe;
mod rng;
mod schedule;
mod secrets;
mod state;
mod summary;
mod tally;
mod upstream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

use crate::kafka::Kafka;
use crate::parse_duration;
use member::Member;
use pages::Pages;
use schedule::Intervals;
use secrets::{Findings, Secrets};
use state::Comparison;
use summary::{Limits, Summary};
use upstream::{Feed, World};

/// Arguments of `sluice-bench chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Length of the chaos phase (faults and kills), in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seed of the fault and kill schedule, the feeds and the secrets (default: from the clock;
    /// printed first, so a run can be replayed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// `real` (Apache Kafka started here by `scripts/kafka`) or a bootstrap address.
    #[arg(long, default_value = "real")]
    pub kafka: String,
    /// Targets (one simulator each; even ones through tinyproxy, odd ones through microsocks).
    #[arg(long, default_value_t = 4)]
    pub targets: usize,
    /// Worker processes. With more than 1 they are a fleet (`fleet:` in every worker file, one
    /// group, every worker listing every target) and the schedule adds pauses (SIGSTOP and
    /// SIGCONT) and rolling restarts.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// With several workers: `fleet.partitions`, the checkpoint topic's partition count.
    #[arg(long, default_value_t = 12)]
    pub fleet_partitions: i32,
    /// With several workers: `fleet.session_timeout` (a pause longer than it loses the
    /// worker's targets to the others).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub fleet_session_timeout: Duration,
    /// Deltas per second per target.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Entities per target.
    #[arg(long, default_value_t = 200)]
    pub entities: usize,
    /// Partitions of the events topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// The aggregator's `session.timeout.ms` (default: the client's).
    #[arg(long, value_parser = parse_duration)]
    pub session_timeout: Option<Duration>,
    /// The aggregator's snapshot interval.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub snapshot_interval: Duration,
    /// After the chaos phase, how long everything may take to catch up.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Fail when the worst target has more records per distinct event (reported otherwise).
    #[arg(long)]
    pub max_dup: Option<f64>,
    /// Fail when a target went unserved longer (reported otherwise).
    #[arg(long, value_parser = parse_duration)]
    pub max_unserved: Option<Duration>,
    /// Keep the configs and logs here (default: a temp dir, kept when the run fails).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `sluice` binary (default: next to this executable).
    #[arg(long)]
    pub sluice_bin: Option<PathBuf>,
    /// Run the worker with `delivery.mode: exactly_once` (one worker only): the events topic is
    /// read `read_committed`, so every target should show 1.00 records per event.
    #[arg(long)]
    pub exactly_once: bool,
}

/// Runs the chaos test and prints its summary.
pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(clock_seed);
    println!("chaos: seed {seed}");
    println!(
        "chaos: replay with: {} --seed {seed}",
        without_seed(&crate::command_line())
    );
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if args.exactly_once && args.workers > 1 {
        bail!("--exactly-once runs one worker (exactly-once delivery needs fleet: none for now)");
    }
    if args.workers > 1 && !(1..=10_000).contains(&args.fleet_partitions) {
        bail!("--fleet-partitions must be in 1..=10000");
    }
    if args.targets == 0 || !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--targets must be at least 1 and --rate a positive number");
    }
    let bin = crate::sluice_bin(args.sluice_bin.as_ref())?;
    let (dir, temp) = match &args.dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("sluice-bench-chaos")
                .tempdir()?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    std::fs::create_dir_all(dir.join("logs")).context("cannot create the run dir")?;
    let result = run_in(&args, seed, &bin, &dir).await;
    let keep = !matches!(result, Ok(true));
    if let Some(temp) = temp {
        if keep {
            let kept = temp.keep();
            eprintln!("chaos: configs and logs kept in {}", kept.display());
        }
    } else {
        eprintln!("chaos: configs and logs in {}", dir.display());
    }
    match result {
        Ok(true) => Ok(()),
        Ok(false) => bail!("chaos checks failed (seed {seed})"),
        Err(error) => Err(error.context(format!("chaos run with seed {seed}"))),
    }
}

/// The whole run in `dir`; `Ok(passed)`.
async fn run_in(args: &ChaosArgs, seed: u64, bin: &Path, dir: &Path) -> anyhow::Result<bool> {
    let logs = dir.join("logs");
    let mut kafka = Kafka::start(&args.kafka).await?;
    let names = config::Names::fresh(seed);
    kafka
        .create_topic(&names.events, args.partitions, false)
        .await?;
    // A fleet's checkpoint topic has `fleet.partitions` partitions (a worker refuses another
    // count); a single worker's has one.
    let fleet = (args.workers > 1).then_some(config::FleetSettings {
        partitions: args.fleet_partitions,
        session_timeout: args.fleet_session_timeout,
        handover_timeout: None,
    });
    let checkpoint_partitions = fleet.map_or(1, |f| f.partitions);
    kafka
        .create_topic(&names.checkpoints, checkpoint_partitions, true)
        .await?;
    kafka.create_topic(&names.state, 1, true).await?;
    kafka.create_topic(&names.dead_letter, 1, false).await?;
    let bootstrap = kafka.bootstrap().to_owned();

    let secrets = Secrets::new(seed);
    let events = (args.rate * args.seconds as f64).ceil() as u64;
    let feed = Feed {
        rate: args.rate,
        events,
        entities: args.entities,
    };
    let mut world = World::start(seed, args.targets, feed, &secrets).await?;
    let settings = config::Settings {
        bootstrap: bootstrap.clone(),
        names: names.clone(),
        session_timeout: args.session_timeout,
        snapshot_interval: args.snapshot_interval,
        fleet,
        exactly_once: args.exactly_once,
    };
    let files = config::write(dir, &world, &secrets, &settings, args.workers)?;
    crate::impls::validate(bin, &files.aggregator).await?;
    let collector =
        tally::Collector::start(&bootstrap, &names.events, args.partitions, secrets.clone())?;

    let mut aggregator = Member::new(
        "aggregator".to_owned(),
        "aggregator",
        bin,
        &files.aggregator,
        &logs,
        &files.aggregator_listen,
    );
    let mut workers: Vec<Member> = files
        .workers
        .iter()
        .zip(&files.worker_listen)
        .enumerate()
        .map(|(n, (file, listen))| {
            Member::new(format!("worker-{n}"), "worker", bin, file, &logs, listen)
        })
        .collect();
    aggregator.start()?;
    for worker in &mut workers {
        worker.start()?;
    }
    let ids: Vec<String> = world.upstreams.iter().map(|u| u.id.clone()).collect();
    let probe = probe::Probe::start(
        aggregator.base.clone(),
        ids.clone(),
        Duration::from_millis(100),
    );
    let http = reqwest012::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .context("cannot build an HTTP client")?;
    let mut pages = Pages::new(http.clone(), secrets.clone());

    // The chaos phase.
    eprintln!(
        "[chaos] {} s of faults and kills: {} targets at {} events/s ({events} each), {} worker(s), Kafka {}",
        args.seconds,
        args.targets,
        args.rate,
        args.workers,
        kafka.label()
    );
    let length = Duration::from_secs(args.seconds);
    let plan = schedule::plan(
        seed,
        length,
        args.targets,
        args.workers,
        Intervals::default(),
    );
    let t0 = Instant::now();
    let t0_wall_ms = wall_ms();
    let done = phase::run(
        phase::Cast {
            workers: &mut workers,
            aggregator: &mut aggregator,
            world: &mut world,
            pages: &mut pages,
            collector: &collector,
            http: &http,
        },
        plan,
        t0,
        length,
        args.fleet_session_timeout,
    )
    .await?;

    // Catch up: no more faults or kills; the feeds end; wait (bounded) for Kafka and the state.
    world.clear_faults();
    eprintln!(
        "[chaos] faults and kills stopped; catching up (at most {:?})",
        args.settle
    );
    let deadline = Instant::now() + args.settle;
    world.wait_for_feeds(events, args.settle).await?;
    let mut comparisons;
    loop {
        for member in workers.iter_mut().chain(std::iter::once(&mut aggregator)) {
            member.watch();
        }
        let counted = collector.snapshot();
        let complete = ids.iter().all(|id| {
            counted
                .targets
                .get(id)
                .is_some_and(|t| t.missing(events).is_empty())
        });
        comparisons = compare_all(&http, &world, &aggregator.base).await?;
        let equal = comparisons.iter().all(|c| *c == Comparison::Equal);
        if (complete && equal) || Instant::now() > deadline || collector.failed() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let caught_up = t0.elapsed().saturating_sub(length);

    // The last look at every page, then a clean stop, then everything written.
    for worker in &workers {
        pages.worker(&worker.base).await;
    }
    pages.aggregator(&aggregator.base, &ids).await;
    let availability = probe.finish().await;
    for worker in &mut workers {
        worker.stop(Duration::from_secs(20)).await;
    }
    aggregator.stop(Duration::from_secs(20)).await;
    let tally = collector.finish().await?;
    let mut findings = pages.findings;
    findings.merge(tally.findings.clone());
    for (topic, partitions) in [
        (&names.checkpoints, checkpoint_partitions),
        (&names.state, 1),
        (&names.dead_letter, 1),
    ] {
        tally::read_all(&bootstrap, topic, partitions, &secrets, &mut findings).await?;
    }
    let secret_dir = dir.join("secrets");
    findings.scan_dir(&secrets, dir, &|path| path.starts_with(&secret_dir));
    // The search itself, on the one place the secrets are meant to be: each once.
    let mut own = Findings::default();
    own.scan_dir(&secrets, &secret_dir, &|_| false);
    if own.total() != 3 {
        bail!(
            "the secret search does not find the secret files' contents ({} of 3)",
            own.total()
        );
    }

    let mut summary = Summary {
        seed,
        seconds: args.seconds,
        targets: args.targets,
        workers: args.workers,
        events_per_target: events,
        longest_unserved: availability.worst(),
        states_equal: comparisons
            .iter()
            .filter(|c| **c == Comparison::Equal)
            .count(),
        secrets_found: findings.total(),
        searched: findings.searched,
        worker_kills: workers.iter().map(|w| w.kills).sum(),
        aggregator_kills: aggregator.kills,
        faults: world.fault_counts().values().sum(),
        unexpected_exits: workers
            .iter()
            .chain(std::iter::once(&aggregator))
            .map(|m| m.unexpected_exits.len())
            .sum(),
        pauses: (workers.iter().map(|w| w.pauses).sum(), done.long_pauses),
        rolling_restarts: done.rolling_restarts,
        ..Summary::default()
    };
    let (mut records, mut distinct) = (0u64, 0u64);
    println!();
    println!(
        "target  via    records  distinct  lost  records/event  longest unserved  longest gap (at, ended by id)  state"
    );
    for (id, comparison) in ids.iter().zip(&comparisons) {
        let t = tally.targets.get(id).cloned().unwrap_or_default();
        let missing = t.missing(events);
        records += t.records;
        distinct += t.ids.len() as u64;
        summary.lost += missing.len() as u64;
        summary.worst_records_per_event = summary.worst_records_per_event.max(t.per_event());
        let gap = t.longest_gap();
        if let Some(gap) = gap {
            if gap.length > summary.longest_gap.0 {
                summary.longest_gap = (gap.length, id.clone());
            }
        }
        let via = world.upstreams.iter().find(|u| &u.id == id).map(|u| u.via);
        println!(
            "{id:<7} {:<6} {:>8} {:>9} {:>5} {:>14.2} {:>16.1}s  {:>29}  {}",
            match via {
                Some(upstream::Via::HttpProxy) => "http",
                _ => "socks5",
            },
            t.records,
            t.ids.len(),
            missing.len(),
            t.per_event(),
            availability
                .longest
                .get(id)
                .copied()
                .unwrap_or_default()
                .as_secs_f64(),
            match gap {
                Some(gap) => format!(
                    "{:.1}s (+{:.1}s, {})",
                    gap.length.as_secs_f64(),
                    (gap.from_ms - t0_wall_ms) as f64 / 1000.0,
                    gap.ended_by
                ),
                None => "-".to_owned(),
            },
            match comparison {
                Comparison::Equal => "equal".to_owned(),
                Comparison::NoState(why) => format!("no state: {why}"),
                Comparison::Differs(why) => format!("differs: {why}"),
            }
        );
        if !missing.is_empty() {
            let shown: Vec<u64> = missing.iter().copied().take(20).collect();
            println!("        lost ids (first 20): {shown:?}");
        }
        if t.odd > 0 {
            println!("        {} records without a numeric sse.id", t.odd);
        }
    }
    summary.records_per_event = if distinct == 0 {
        0.0
    } else {
        records as f64 / distinct as f64
    };
    println!();
    println!("faults queued: {:?}", world.fault_counts());
    println!(
        "kills: worker {} (lives {}), aggregator {} (lives {}); caught up {:.1} s after the chaos phase; aggregator polls {} ({} answered)",
        summary.worker_kills,
        workers.iter().map(Member::lives).sum::<u32>(),
        summary.aggregator_kills,
        aggregator.lives(),
        caught_up.as_secs_f64(),
        availability.polls,
        availability.answered,
    );
    if args.workers > 1 {
        println!(
            "fleet: {} workers, {} partitions, session {:?}; pauses {} ({} > session; {} kill -9s skipped: paused), SIGTERMs {}, rolling restarts {} (skipped {})",
            args.workers,
            args.fleet_partitions,
            args.fleet_session_timeout,
            summary.pauses.0,
            summary.pauses.1,
            done.paused_kills,
            workers.iter().map(|w| w.terminations).sum::<u32>(),
            done.rolling_restarts,
            done.rolling_skipped,
        );
    }
    for member in workers.iter().chain(std::iter::once(&aggregator)) {
        for exit in &member.unexpected_exits {
            println!("unexpected exit: {exit}");
        }
        for stop in &member.unclean_stops {
            println!("unclean stop: {stop}");
        }
    }
    for line in &done.not_ready {
        println!("rolling restart: {line}");
    }
    for line in findings.lines() {
        println!("secret found: {line}");
    }
    world.shutdown().await;
    drop(kafka);
    let limits = Limits {
        max_dup: args.max_dup,
        max_unserved: args.max_unserved,
    };
    println!("{}", summary.line(limits));
    Ok(summary.failures(limits).is_empty())
}

/// Every target's state against its simulator, in target order.
async fn compare_all(
    http: &reqwest012::Client,
    world: &World,
    aggregator: &str,
) -> anyhow::Result<Vec<Comparison>> {
    let mut out = Vec::new();
    for upstream in &world.upstreams {
        let truth = state::truth(http, &upstream.sim.base_url()).await?;
        out.push(state::compare(http, aggregator, &upstream.id, &truth).await);
    }
    Ok(out)
}

/// Now, in ms since the epoch (the clock Kafka's record timestamps use).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
}

/// The command line without its `--seed` (and value), so the replay line adds the one used.
fn without_seed(line: &str) -> String {
    let mut out = Vec::new();
    let mut words = line.split(' ').peekable();
    while let Some(word) = words.next() {
        if word == "--seed" {
            words.next();
        } else if !word.starts_with("--seed=") {
            out.push(word);
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_line_carries_the_seed_once() {
        assert_eq!(
            without_seed("sluice-bench chaos --seconds 60 --seed 7 --targets 2"),
            "sluice-bench chaos --seconds 60 --targets 2"
        );
        assert_eq!(
            without_seed("sluice-bench chaos --seed=7"),
            "sluice-bench chaos"
        );
    }
}
