//! `sluice-bench pipeline`: one simulator stream -> implementation -> Kafka, per implementation
//! in the same run, each with a fresh simulator and fresh topics.
//!
//! Definitions (printed with the results):
//! - The clock starts (`t0`) when the simulator starts serving. The implementation has already
//!   started, created its producer and opened its TCP connection to the simulator's bound (not
//!   yet accepting) socket, so start-up costs are outside the window. Every implementation reads
//!   the stream with `?last_event_id=0`, so it gets exactly events 1..=N.
//! - It stops (`t1`) when the harness sees the topic's high watermarks sum to N (polled every
//!   `--poll`, 20 ms by default: up to that much is added to the wall time): every event is then
//!   acknowledged by Kafka with acks=all.
//! - events/s = N / (t1 - t0). CPU = utime + stime of the implementation's process between t0
//!   and t1 (all threads, librdkafka's included).
//! - Latency (with `--rate`): the harness consumes the topic (`fetch.wait.max.ms=1`) and for
//!   each record takes wall clock now minus the event's scheduled emit time (see `latency.rs`).
//!   It includes the consumer's fetch latency, so it is an upper bound, the same for every
//!   implementation.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use sluice_sim::{RunningSim, SimConfig};
use tokio::time::Instant;

use crate::impls::{Job, Running};
use crate::kafka::{Kafka, LatencyConsumer, Watermarks};
use crate::latency::Latencies;
use crate::procfs::{self, ProcSample};
use crate::report::{Table, count, load_average, machine_note, num};
use crate::{Impl, command_line, parse_duration, parse_impls};

/// Arguments of `sluice-bench pipeline`.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// Events per implementation.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Paced feed at this many events/s (measures latency); firehose when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// `mock` (librdkafka mock cluster in a child process), `real` (Apache Kafka, one KRaft node
    /// started here by `scripts/kafka`) or a bootstrap address.
    #[arg(long, default_value = "mock")]
    pub kafka: String,
    /// Implementations, in order: sluice, await, inflight, python (the Python scraper, run in a
    /// virtualenv the bench creates and fills from PyPI when missing).
    #[arg(long, default_value = "sluice,await,inflight,python")]
    pub impls: String,
    /// Partitions of the events topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Give up on an implementation after this long (it is reported as incomplete).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How often the harness reads the high watermarks.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub poll: Duration,
    /// Extra producer property `key=value` for every implementation (repeatable).
    #[arg(long = "producer-property")]
    pub producer_properties: Vec<String>,
    /// The `sluice` binary (default: next to this executable).
    #[arg(long)]
    pub sluice_bin: Option<PathBuf>,
}

/// What one implementation did.
struct Outcome {
    which: Impl,
    delivered: u64,
    completed: bool,
    wall: Duration,
    cpu: Duration,
    end: ProcSample,
    broker_cpu: Option<Duration>,
    harness_cpu: Option<Duration>,
    latency: Option<Latencies>,
}

impl Outcome {
    fn events_per_second(&self) -> f64 {
        self.delivered as f64 / self.wall.as_secs_f64()
    }

    fn cpu_per_million(&self) -> Option<f64> {
        (self.delivered > 0).then(|| self.cpu.as_secs_f64() * 1e6 / self.delivered as f64)
    }

    fn events_per_cpu_second(&self) -> Option<f64> {
        (!self.cpu.is_zero()).then(|| self.delivered as f64 / self.cpu.as_secs_f64())
    }
}

/// Runs the pipeline benchmark and prints the report.
pub async fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let impls = parse_impls(&args.impls)?;
    if args.events == 0 {
        bail!("--events must be at least 1");
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number (omit it for the firehose)");
        }
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
        .prefix("sluice-bench-pipeline")
        .tempdir()
        .context("cannot create a temp dir")?;
    let mut outcomes = Vec::new();
    for (n, which) in impls.iter().copied().enumerate() {
        eprintln!("[pipeline] {} ...", which.name());
        let outcome = run_one(
            which,
            &args,
            &mut kafka,
            sluice_bin.clone(),
            &work.path().join(format!("{n}-{}", which.name())),
            ticks,
        )
        .await
        .with_context(|| format!("pipeline run of {}", which.name()))?;
        eprintln!(
            "[pipeline] {}: {} of {} events in {:.2} s, {} events/s, CPU {:.2} s",
            which.name(),
            outcome.delivered,
            args.events,
            outcome.wall.as_secs_f64(),
            count(outcome.events_per_second()),
            outcome.cpu.as_secs_f64()
        );
        outcomes.push(outcome);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    print_report(&args, &kafka, &outcomes, &command, &machine_before);
    Ok(())
}

async fn run_one(
    which: Impl,
    args: &PipelineArgs,
    kafka: &mut Kafka,
    sluice_bin: Option<PathBuf>,
    dir: &std::path::Path,
    ticks: u64,
) -> anyhow::Result<Outcome> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let topic = format!("bench-pipeline-{}-{stamp}", which.name());
    let checkpoints = format!("{topic}-checkpoints");
    kafka.create_topic(&topic, args.partitions, false).await?;
    if which.is_sluice() {
        kafka.create_topic(&checkpoints, 1, true).await?;
    }
    let watermarks = Watermarks::new(kafka.bootstrap(), &topic, args.partitions)?;

    // Bound but not yet serving: the implementation's connection waits in the accept queue.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the simulator")?;
    let port = listener.local_addr()?.port();
    let job = Job {
        urls: vec![format!("http://127.0.0.1:{port}/v1/stream?last_event_id=0")],
        connections: 1,
        brokers: kafka.bootstrap().to_owned(),
        topic: topic.clone(),
        checkpoints,
        events: Some(args.events),
        producer_properties: args.producer_properties.clone(),
        sluice_bin,
    };
    let mut running = Running::start(which, &job, dir).await?;
    let connect_deadline = Instant::now() + Duration::from_secs(60);
    while procfs::established_to_port(port) == 0 {
        running.check_alive()?;
        if Instant::now() > connect_deadline {
            bail!(
                "{} did not connect to the simulator within 60 s:\n{}",
                which.name(),
                running.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let sim_start = Arc::new(OnceLock::new());
    let consumer = match args.rate {
        Some(rate) => {
            let consumer = LatencyConsumer::start(
                kafka.bootstrap(),
                &topic,
                args.partitions,
                sim_start.clone(),
                rate,
                args.events,
            )?;
            // Let it connect and start fetching before the first record exists.
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(consumer)
        }
        None => None,
    };

    let broker_before = kafka.pid().and_then(|pid| procfs::sample(pid).ok());
    let harness_before = procfs::sample(std::process::id()).ok();
    let before = procfs::sample(running.pid)?;
    let _ = sim_start.set(SystemTime::now());
    let t0 = Instant::now();
    let sim = RunningSim::start(
        SimConfig {
            rate: args.rate.unwrap_or(0.0),
            max_events: Some(args.events),
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .context("cannot start the simulator")?;

    let mut delivered;
    let completed = loop {
        tokio::time::sleep(args.poll).await;
        delivered = watermarks.sum_async().await?;
        if delivered >= args.events {
            break true;
        }
        if t0.elapsed() > args.timeout {
            eprintln!(
                "[pipeline] {}: timed out after {:?} at {delivered} events",
                which.name(),
                args.timeout
            );
            break false;
        }
        running.check_alive()?;
    };
    let wall = t0.elapsed();
    let end = procfs::sample(running.pid)?;
    let broker_after = kafka.pid().and_then(|pid| procfs::sample(pid).ok());
    let harness_after = procfs::sample(std::process::id()).ok();

    let latency = match consumer {
        Some(consumer) => Some(
            consumer
                .finish_within(if completed {
                    Duration::from_secs(10)
                } else {
                    Duration::ZERO
                })
                .await?,
        ),
        None => None,
    };
    running.stop(Duration::from_secs(15)).await;
    sim.shutdown().await;
    Ok(Outcome {
        which,
        delivered,
        completed,
        wall,
        cpu: procfs::ticks_to_duration(end.cpu_ticks.saturating_sub(before.cpu_ticks), ticks),
        end,
        broker_cpu: broker_before.zip(broker_after).map(|(b, a)| {
            procfs::ticks_to_duration(a.cpu_ticks.saturating_sub(b.cpu_ticks), ticks)
        }),
        harness_cpu: harness_before.zip(harness_after).map(|(b, a)| {
            procfs::ticks_to_duration(a.cpu_ticks.saturating_sub(b.cpu_ticks), ticks)
        }),
        latency,
    })
}

fn print_report(
    args: &PipelineArgs,
    kafka: &Kafka,
    outcomes: &[Outcome],
    command: &str,
    machine_before: &str,
) {
    let per_cpu_of = |which: Impl| {
        outcomes
            .iter()
            .find(|o| o.which == which)
            .and_then(Outcome::events_per_cpu_second)
    };
    let (reference, python) = (per_cpu_of(Impl::Inflight), per_cpu_of(Impl::Python));
    let mut header = vec![
        "impl",
        "events",
        "wall s",
        "events/s",
        "CPU s",
        "CPU-s / M events",
        "events / CPU-s",
        "vs inflight",
        "vs python",
        "peak RSS MiB",
        "broker CPU s",
        "harness CPU s",
    ];
    if args.rate.is_some() {
        header.extend(["p50 ms", "p99 ms", "max ms"]);
    }
    let mut table = Table::new(&header);
    for o in outcomes {
        let mut row = vec![
            o.which.name().to_owned(),
            if o.completed {
                count(o.delivered as f64)
            } else {
                format!("{} (incomplete)", count(o.delivered as f64))
            },
            num(Some(o.wall.as_secs_f64()), 2),
            count(o.events_per_second()),
            num(Some(o.cpu.as_secs_f64()), 2),
            num(o.cpu_per_million(), 2),
            o.events_per_cpu_second().map_or("-".to_owned(), count),
            num(
                o.events_per_cpu_second()
                    .zip(reference)
                    .map(|(mine, theirs)| mine / theirs),
                2,
            ) + "x",
            num(
                o.events_per_cpu_second()
                    .zip(python)
                    .map(|(mine, theirs)| mine / theirs),
                2,
            ) + "x",
            num(Some(o.end.hwm_kib as f64 / 1024.0), 1),
            num(o.broker_cpu.map(|d| d.as_secs_f64()), 2),
            num(o.harness_cpu.map(|d| d.as_secs_f64()), 2),
        ];
        if args.rate.is_some() {
            let l = o.latency.as_ref();
            row.push(num(l.and_then(|l| l.quantile_ms(0.5)), 2));
            row.push(num(l.and_then(|l| l.quantile_ms(0.99)), 2));
            row.push(num(l.and_then(Latencies::max_ms), 2));
        }
        table.row(row);
    }
    let feed = match args.rate {
        Some(rate) => format!("paced at {} events/s", count(rate)),
        None => "firehose".to_owned(),
    };
    println!();
    println!(
        "== pipeline: {} events per implementation, {feed}, Kafka: {}, {} partitions ==",
        count(args.events as f64),
        kafka.label(),
        args.partitions
    );
    println!("command: {command}");
    println!(
        "machine: {machine_before} (before); load average {} (after)",
        load_average()
    );
    println!("producer: {}", producer_line(&args.producer_properties));
    println!();
    print!("{}", table.text());
    println!();
    println!("markdown:");
    println!();
    print!("{}", table.markdown());
    println!();
    println!(
        "events/s = N / (last ack seen in the high watermarks - simulator start; the \
         implementation is already connected); CPU = the implementation process's utime+stime \
         in that window; peak RSS = its VmHWM; broker CPU = the mock or Kafka process in that \
         window; harness CPU = this process (simulator, watermark polls, latency consumer) in \
         that window; 'vs inflight' = events per CPU-second relative to inflight."
    );
    if args.rate.is_some() {
        println!(
            "latency = harness consumer receive time - scheduled emit time (sim start + seq / \
             rate); includes the consumer's fetch (fetch.wait.max.ms=1): an upper bound, the \
             same for every implementation."
        );
    }
}

fn producer_line(extra: &[String]) -> String {
    crate::producer_properties(extra)
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
