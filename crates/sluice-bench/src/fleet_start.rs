//! `sluice-bench fleet-start`: how long a fleet of N workers over T targets takes until every
//! target streams, after a cold start (a new group, the checkpoint topic created by the
//! workers) and after one worker leaves (SIGTERM: a dynamic member leaves the group, which
//! moves its partitions to the others); then the CPU and memory per target of a fleet worker,
//! beside one `fleet: none` worker running a worker's share of the targets, measured the same
//! way. Upstreams are simulator processes (1 event/s per connection); Kafka is the real broker
//! (or a bootstrap address).
//!
//! What it must NOT do: count a target twice (a target streaming on two workers would make the
//! sum pass early: the sums of `/status` totals must equal T too), or time anything but the
//! wall clock from the action to the state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::process::Command;
use tokio::time::Instant;

use crate::child::ChildProc;
use crate::impls::{Job, write_sluice_config};
use crate::kafka::Kafka;
use crate::procfs;
use crate::simproc::SimProcess;

/// Arguments of `sluice-bench fleet-start`.
#[derive(Debug, Args)]
pub struct FleetStartArgs {
    /// `real` (Apache Kafka started here by `scripts/kafka`) or a bootstrap address.
    #[arg(long, default_value = "real")]
    pub kafka: String,
    /// Targets in all.
    #[arg(long, default_value_t = 3000)]
    pub targets: usize,
    /// Fleet workers.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// `fleet.partitions`.
    #[arg(long, default_value_t = 12)]
    pub fleet_partitions: i32,
    /// Connections per simulator process.
    #[arg(long, default_value_t = 1000)]
    pub per_sim: usize,
    /// How long CPU and memory are measured, at steady state.
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    pub measure: Duration,
    /// Give up on a state after this long.
    #[arg(long, default_value = "300s", value_parser = crate::parse_duration)]
    pub limit: Duration,
    /// The `sluice` binary (default: next to this executable).
    #[arg(long)]
    pub sluice_bin: Option<PathBuf>,
    /// Keep the configs and logs (they are kept anyway when the run fails).
    #[arg(long)]
    pub keep: bool,
}

/// One worker process and where its operations server listens.
struct Worker {
    process: ChildProc,
    base: String,
}

/// Runs the benchmark and prints its report.
pub async fn run(args: FleetStartArgs) -> anyhow::Result<()> {
    if args.targets == 0 || args.workers < 2 {
        bail!("--targets must be at least 1 and --workers at least 2");
    }
    let bin = crate::sluice_bin(args.sluice_bin.as_ref())?;
    let temp = tempfile::Builder::new()
        .prefix("sluice-bench-fleet-start")
        .tempdir()?;
    let result = run_in(&args, &bin, temp.path()).await;
    if result.is_err() || args.keep {
        let kept = temp.keep();
        eprintln!("fleet-start: configs and logs kept in {}", kept.display());
    }
    result
}

async fn run_in(args: &FleetStartArgs, bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut kafka = Kafka::start(&args.kafka).await?;
    kafka.warm_up().await?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let topic = format!("bench-fleet-{stamp}");
    kafka.create_topic(&topic, 12, false).await?;
    let mut sims = Vec::new();
    for n in 0..args.targets.div_ceil(args.per_sim.max(1)) {
        let log = dir.join(format!("sim-{n}.log"));
        sims.push(SimProcess::start(1.0, Duration::from_secs(5), &log).await?);
    }
    let job = |checkpoints: String, connections: usize| Job {
        urls: sims.iter().map(|sim| sim.url.clone()).collect(),
        connections,
        brokers: kafka.bootstrap().to_owned(),
        topic: topic.clone(),
        checkpoints,
        events: None,
        producer_properties: Vec::new(),
        sluice_bin: None,
    };
    let http = reqwest012::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // The fleet: every worker lists every target; the group shares them.
    let fleet_job = job(format!("{topic}-checkpoints"), args.targets);
    let fleet = format!(
        "fleet:\n  group_id: {topic}-group\n  partitions: {}\n  session_timeout: 10s\n",
        args.fleet_partitions
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for n in 0..args.workers {
        workers.push(start_worker(
            bin,
            dir,
            &format!("fleet-{n}"),
            &fleet_job,
            &fleet,
        )?);
    }
    let cold = wait_streaming(&http, &mut workers, args.targets, started, args.limit).await?;
    println!(
        "fleet-start: {} targets streaming on {} workers {:.2} s after a cold start",
        args.targets,
        args.workers,
        cold.as_secs_f64()
    );
    let reads = assignment_reads(&http, &workers).await;

    // Steady state: CPU and memory per target of each fleet worker.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fleet_costs = measure(&http, &workers, args.measure).await?;

    // One leaves (SIGTERM, dynamic member): the others take its targets.
    let leaving = workers.pop().context("no worker")?;
    let started = Instant::now();
    let stopped = tokio::spawn(leaving.process.stop(Duration::from_secs(30)));
    let after_leave =
        wait_streaming(&http, &mut workers, args.targets, started, args.limit).await?;
    let _ = stopped.await;
    println!(
        "fleet-start: every target streaming on the other {} workers {:.2} s after one left",
        workers.len(),
        after_leave.as_secs_f64()
    );
    for worker in workers.drain(..) {
        worker.process.stop(Duration::from_secs(30)).await;
    }

    // `fleet: none`, one worker's share of the targets, measured the same way.
    let share = args.targets.div_ceil(args.workers);
    let none_job = job(format!("{topic}-none-checkpoints"), share);
    let started = Instant::now();
    let mut alone = vec![start_worker(bin, dir, "none", &none_job, "")?];
    wait_streaming(&http, &mut alone, share, started, args.limit).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let none_costs = measure(&http, &alone, args.measure).await?;
    for worker in alone.drain(..) {
        worker.process.stop(Duration::from_secs(30)).await;
    }
    for sim in sims {
        sim.stop().await;
    }
    report(args, cold, after_leave, &reads, &fleet_costs, &none_costs);
    Ok(())
}

/// Writes the worker's config under `dir/name` (`extra` appended to `worker.yaml`) and starts it.
fn start_worker(
    bin: &Path,
    dir: &Path,
    name: &str,
    job: &Job,
    extra: &str,
) -> anyhow::Result<Worker> {
    let own = dir.join(name);
    let port = crate::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let config = write_sluice_config(&own, job, &listen, false)?;
    let mut yaml = std::fs::read_to_string(&config).context("cannot read worker.yaml back")?;
    yaml.push_str(extra);
    std::fs::write(&config, yaml).context("cannot write worker.yaml")?;
    let mut command = Command::new(bin);
    command
        .arg("worker")
        .arg("--config")
        .arg(&config)
        .env("SLUICE_LOG", "warn")
        .env("HOSTNAME", name);
    let process = ChildProc::spawn(name, command, &own.join("worker.log"))?;
    Ok(Worker {
        process,
        base: format!("http://{listen}"),
    })
}

/// The worker's `/status.json` summary: (streaming, total), `None` while it does not answer.
async fn summary(http: &reqwest012::Client, base: &str) -> Option<(u64, u64)> {
    let text = http
        .get(format!("{base}/status.json?per_page=1"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    let summary = &body["summary"];
    Some((
        summary["by_state"]["streaming"].as_u64()?,
        summary["total"].as_u64()?,
    ))
}

/// Waits until the workers together stream `targets` targets, each once; the time since `from`.
async fn wait_streaming(
    http: &reqwest012::Client,
    workers: &mut [Worker],
    targets: usize,
    from: Instant,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let want = targets as u64;
    loop {
        let (mut streaming, mut total) = (0, 0);
        for worker in workers.iter_mut() {
            worker.process.check_alive()?;
            if let Some((s, t)) = summary(http, &worker.base).await {
                streaming += s;
                total += t;
            }
        }
        if streaming == want && total == want {
            return Ok(from.elapsed());
        }
        if from.elapsed() > limit {
            bail!("only {streaming} of {targets} targets streaming ({total} rows) after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each worker's `sluice_fleet_assignment_read_seconds` sum and count.
async fn assignment_reads(http: &reqwest012::Client, workers: &[Worker]) -> Vec<(f64, f64)> {
    let mut reads = Vec::new();
    for worker in workers {
        let text = match http.get(format!("{}/metrics", worker.base)).send().await {
            Ok(answer) => answer.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let value = |name: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|v| v.trim().parse::<f64>().ok())
                })
                .unwrap_or(0.0)
        };
        reads.push((
            value("sluice_fleet_assignment_read_seconds_sum"),
            value("sluice_fleet_assignment_read_seconds_count"),
        ));
    }
    reads
}

/// Per worker: targets it runs, CPU % over `window`, RSS KiB at its end.
struct Cost {
    targets: u64,
    cpu_percent: f64,
    rss_kib: u64,
}

async fn measure(
    http: &reqwest012::Client,
    workers: &[Worker],
    window: Duration,
) -> anyhow::Result<Vec<Cost>> {
    let ticks = procfs::clock_ticks_per_second() as f64;
    let before: Vec<procfs::ProcSample> = workers
        .iter()
        .map(|w| procfs::sample(w.process.pid))
        .collect::<anyhow::Result<_>>()?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let mut costs = Vec::new();
    for (worker, before) in workers.iter().zip(before) {
        let after = procfs::sample(worker.process.pid)?;
        let targets = summary(http, &worker.base).await.map_or(0, |(_, t)| t);
        costs.push(Cost {
            targets,
            cpu_percent: (after.cpu_ticks - before.cpu_ticks) as f64 / ticks / elapsed * 100.0,
            rss_kib: after.rss_kib,
        });
    }
    Ok(costs)
}

fn report(
    args: &FleetStartArgs,
    cold: Duration,
    after_leave: Duration,
    reads: &[(f64, f64)],
    fleet: &[Cost],
    none: &[Cost],
) {
    println!();
    println!(
        "| {} workers × {} targets, {} partitions | seconds |",
        args.workers, args.targets, args.fleet_partitions
    );
    println!("|---|---|");
    println!(
        "| cold start → every target streaming | {:.2} |",
        cold.as_secs_f64()
    );
    println!(
        "| one worker leaves (SIGTERM) → every target streaming on the others | {:.2} |",
        after_leave.as_secs_f64()
    );
    for (n, (sum, count)) in reads.iter().enumerate() {
        println!(
            "| worker {n}: assignment reads (checkpoint partitions to their ends) | {count:.0} reads, {sum:.3} s in all |"
        );
    }
    println!();
    println!(
        "| worker | targets | CPU % | RSS MiB | KiB per target | CPU ‰ of a core per target |"
    );
    println!("|---|---|---|---|---|---|");
    let rows = fleet
        .iter()
        .enumerate()
        .map(|(n, c)| (format!("fleet {n}"), c))
        .chain(none.iter().map(|c| ("fleet: none".to_owned(), c)));
    for (name, cost) in rows {
        let per = cost.targets.max(1) as f64;
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.3} |",
            cost.targets,
            cost.cpu_percent,
            cost.rss_kib as f64 / 1024.0,
            cost.rss_kib as f64 / per,
            cost.cpu_percent * 10.0 / per,
        );
    }
}
