//! `sluice-bench density`: one implementation process holding many concurrent SSE connections
//! (the simulator's shared feed at 1 event/s, so each connection gets 1 event/s), publishing
//! every event to Kafka. Measures RSS and CPU over a window after a warm-up.
//!
//! The simulator runs in its own process (`sluice-bench sim`), fresh for every run. Each
//! implementation first runs with `--small` connections, then with `--connections`, so the
//! report can give both RSS / connections and the marginal cost
//! (RSS(C) - RSS(small)) / (C - small).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use tokio::time::Instant;

use crate::impls::{Job, Running};
use crate::kafka::{Kafka, Watermarks};
use crate::procfs::{self, ProcSample};
use crate::report::{Table, count, load_average, machine_note, num};
use crate::simproc::SimProcess;
use crate::{Impl, command_line, parse_duration, parse_impls};

/// Arguments of `sluice-bench density`.
#[derive(Debug, clap::Args)]
pub struct DensityArgs {
    /// Concurrent connections per implementation.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Length of the measured window.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub seconds: Duration,
    /// Wait this long after every connection is established before measuring.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Connections of the reference run for the marginal per-connection RSS (0: skip it).
    #[arg(long, default_value_t = 100)]
    pub small: usize,
    /// Implementations, in order: sluice, await, inflight.
    #[arg(long, default_value = "sluice,inflight")]
    pub impls: String,
    /// `mock`, `real` (Apache Kafka started here by `scripts/kafka`) or a bootstrap address.
    #[arg(long, default_value = "mock")]
    pub kafka: String,
    /// Partitions of the events topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// How long all connections may take to be established.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Most connections per simulator process (each costs the simulator two descriptors, and
    /// the hard open-files limit is per process), so 10,000 connections use 3 simulators.
    #[arg(long, default_value_t = 4_000)]
    pub per_sim: usize,
    /// The simulator's heartbeat interval on idle streams.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// How often the harness scrapes Sluice's /metrics during the window (as Prometheus would).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub scrape: Duration,
    /// Extra producer property `key=value` for every implementation (repeatable).
    #[arg(long = "producer-property")]
    pub producer_properties: Vec<String>,
    /// The `sluice` binary (default: next to this executable).
    #[arg(long)]
    pub sluice_bin: Option<PathBuf>,
}

/// What one implementation did with `connections` connections.
struct Outcome {
    which: Impl,
    connections: usize,
    established: usize,
    connect_time: Duration,
    window: Duration,
    events: u64,
    cpu: Duration,
    sim_cpu: Option<Duration>,
    sims: usize,
    end: ProcSample,
    metrics: Option<Scrape>,
}

/// The last /metrics scrape.
#[derive(Debug, Clone, Copy)]
struct Scrape {
    bytes: usize,
    series: usize,
    took: Duration,
    scrapes: usize,
}

impl Outcome {
    fn rss_per_connection_kib(&self) -> f64 {
        self.end.rss_kib as f64 / self.connections.max(1) as f64
    }

    fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu.as_secs_f64() / self.window.as_secs_f64()
    }
}

/// Runs the density benchmark and prints the report.
pub async fn run(args: DensityArgs) -> anyhow::Result<()> {
    let impls = parse_impls(&args.impls)?;
    if args.connections == 0 || args.small >= args.connections {
        bail!("--connections must be at least 1 and above --small");
    }
    let sluice_bin = if impls.iter().any(|i| i.is_sluice()) {
        Some(crate::sluice_bin(args.sluice_bin.as_ref())?)
    } else {
        None
    };
    let command = command_line();
    let machine_before = machine_note();
    let ticks = procfs::clock_ticks_per_second();
    let mut kafka = Kafka::start(&args.kafka).await?;
    kafka.warm_up().await?;
    let work = tempfile::Builder::new()
        .prefix("sluice-bench-density")
        .tempdir()
        .context("cannot create a temp dir")?;
    let mut outcomes = Vec::new();
    for which in impls.iter().copied() {
        let sizes: Vec<usize> = [args.small, args.connections]
            .into_iter()
            .filter(|n| *n > 0)
            .collect();
        for connections in sizes {
            eprintln!(
                "[density] {} with {connections} connections ...",
                which.name()
            );
            let dir = work.path().join(format!("{}-{connections}", which.name()));
            let outcome = run_one(
                which,
                connections,
                &args,
                &mut kafka,
                sluice_bin.clone(),
                &dir,
                ticks,
            )
            .await
            .with_context(|| format!("density run of {} ({connections})", which.name()))?;
            eprintln!(
                "[density] {}: {} established, RSS {:.1} MiB, CPU {:.1}%, {} events/s",
                which.name(),
                outcome.established,
                outcome.end.rss_kib as f64 / 1024.0,
                outcome.cpu_percent(),
                count(outcome.events as f64 / outcome.window.as_secs_f64())
            );
            outcomes.push(outcome);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    print_report(&args, &kafka, &outcomes, &command, &machine_before);
    Ok(())
}

async fn run_one(
    which: Impl,
    connections: usize,
    args: &DensityArgs,
    kafka: &mut Kafka,
    sluice_bin: Option<PathBuf>,
    dir: &std::path::Path,
    ticks: u64,
) -> anyhow::Result<Outcome> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let topic = format!("bench-density-{}-{connections}-{stamp}", which.name());
    let checkpoints = format!("{topic}-checkpoints");
    kafka.create_topic(&topic, args.partitions, false).await?;
    if which.is_sluice() {
        kafka.create_topic(&checkpoints, 1, true).await?;
    }
    let watermarks = Watermarks::new(kafka.bootstrap(), &topic, args.partitions)?;
    std::fs::create_dir_all(dir)?;
    let mut sims = Vec::new();
    for n in 0..connections.div_ceil(args.per_sim.max(1)) {
        sims.push(SimProcess::start(1.0, args.heartbeat, &dir.join(format!("sim-{n}.log"))).await?);
    }
    let established_now = || -> usize {
        sims.iter()
            .map(|sim| procfs::established_to_port(sim.port))
            .sum()
    };
    let sims_cpu = || -> Option<u64> {
        sims.iter()
            .map(|sim| sim.pid().and_then(|pid| procfs::sample(pid).ok()))
            .map(|s| s.map(|s| s.cpu_ticks))
            .sum()
    };
    let job = Job {
        urls: sims.iter().map(|sim| sim.url.clone()).collect(),
        connections,
        brokers: kafka.bootstrap().to_owned(),
        topic,
        checkpoints,
        events: None,
        producer_properties: args.producer_properties.clone(),
        sluice_bin,
    };
    let mut running = Running::start(which, &job, dir).await?;
    let started = Instant::now();
    let mut established = 0;
    while established < connections {
        tokio::time::sleep(Duration::from_millis(250)).await;
        running.check_alive()?;
        established = established_now();
        if started.elapsed() > args.connect_timeout {
            bail!(
                "{}: only {established} of {connections} connections after {:?}",
                which.name(),
                args.connect_timeout
            );
        }
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(args.warmup).await;
    running.check_alive()?;

    let client = reqwest012::Client::new();
    let sim_before = sims_cpu();
    let wm_before = watermarks.sum_async().await?;
    let before = procfs::sample(running.pid)?;
    let t0 = Instant::now();
    let mut metrics = None;
    let mut scrapes = 0;
    loop {
        if let Some(ops) = &running.ops {
            let at = Instant::now();
            let body = client
                .get(format!("http://{ops}/metrics"))
                .send()
                .await
                .and_then(reqwest012::Response::error_for_status)
                .context("cannot scrape sluice's /metrics")?
                .text()
                .await
                .context("cannot read sluice's /metrics")?;
            scrapes += 1;
            metrics = Some(Scrape {
                bytes: body.len(),
                series: body
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .count(),
                took: at.elapsed(),
                scrapes,
            });
        }
        let left = args.seconds.saturating_sub(t0.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(args.scrape)).await;
    }
    let window = t0.elapsed();
    let end = procfs::sample(running.pid)?;
    let wm_after = watermarks.sum_async().await?;
    let sim_after = sims_cpu();
    let established_end = established_now();
    running.check_alive()?;
    running.stop(Duration::from_secs(30)).await;
    for sim in sims {
        sim.stop().await;
    }
    Ok(Outcome {
        which,
        connections,
        established: established_end,
        connect_time,
        window,
        events: wm_after.saturating_sub(wm_before),
        cpu: procfs::ticks_to_duration(end.cpu_ticks.saturating_sub(before.cpu_ticks), ticks),
        sim_cpu: sim_before
            .zip(sim_after)
            .map(|(b, a)| procfs::ticks_to_duration(a.saturating_sub(b), ticks)),
        sims: connections.div_ceil(args.per_sim.max(1)),
        end,
        metrics,
    })
}

fn print_report(
    args: &DensityArgs,
    kafka: &Kafka,
    outcomes: &[Outcome],
    command: &str,
    machine_before: &str,
) {
    let mut table = Table::new(&[
        "impl",
        "connections",
        "established at end",
        "connect s",
        "events/s",
        "CPU % of a core",
        "CPU-s / M events",
        "RSS MiB",
        "peak RSS MiB",
        "RSS KiB / conn",
        "marginal KiB / conn",
        "sims",
        "sim CPU %",
        "/metrics",
    ]);
    for o in outcomes {
        let small = outcomes.iter().find(|s| {
            s.which == o.which && s.connections < o.connections && s.connections == args.small
        });
        let marginal = small.map(|s| {
            (o.end.rss_kib as f64 - s.end.rss_kib as f64) / (o.connections - s.connections) as f64
        });
        let window = o.window.as_secs_f64();
        table.row(vec![
            o.which.name().to_owned(),
            count(o.connections as f64),
            count(o.established as f64),
            num(Some(o.connect_time.as_secs_f64()), 1),
            count(o.events as f64 / window),
            num(Some(o.cpu_percent()), 1),
            num(
                (o.events > 0).then(|| o.cpu.as_secs_f64() * 1e6 / o.events as f64),
                1,
            ),
            num(Some(o.end.rss_kib as f64 / 1024.0), 1),
            num(Some(o.end.hwm_kib as f64 / 1024.0), 1),
            num(Some(o.rss_per_connection_kib()), 1),
            num(marginal, 1),
            o.sims.to_string(),
            num(o.sim_cpu.map(|c| 100.0 * c.as_secs_f64() / window), 1),
            o.metrics.map_or("-".to_owned(), |m| {
                format!(
                    "{} series, {} KiB, {} ms ({} scrapes)",
                    count(m.series as f64),
                    m.bytes / 1024,
                    m.took.as_millis(),
                    m.scrapes
                )
            }),
        ]);
    }
    println!();
    println!(
        "== density: {} connections (reference {}), 1 event/s each, warm-up {:?}, window {:?}, \
         Kafka: {}, {} partitions ==",
        count(args.connections as f64),
        args.small,
        args.warmup,
        args.seconds,
        kafka.label(),
        args.partitions
    );
    println!("command: {command}");
    println!(
        "machine: {machine_before} (before); load average {} (after)",
        load_average()
    );
    println!();
    print!("{}", table.text());
    println!();
    println!("markdown:");
    println!();
    print!("{}", table.markdown());
    println!();
    println!(
        "RSS = the implementation process's VmRSS at the end of the window; RSS / conn = RSS / \
         connections; marginal = (RSS(C) - RSS(reference)) / (C - reference); CPU = its \
         utime+stime over the window; events/s = growth of the topic's high watermarks over \
         the window (it should equal the connections: each served stream gets 1 event/s); sim CPU = \
         the simulator processes together (not counted for the implementation)."
    );
}
