//! `sluice-bench`: the benchmark harness for the worker's pipeline (SSE -> Kafka) and density
//! (many connections in one process) numbers, comparing `sluice worker` in the same run with
//! two straightforward implementations (reqwest-eventsource + rdkafka `FutureProducer`, awaiting
//! each send or keeping up to 10,000 in flight), and for the aggregator (`aggregate`: deltas
//! merged per second and per CPU-second, entity query latency while merging, memory per
//! entity), and the chaos run (`chaos`: kill -9 of the worker and the aggregator under upstream
//! faults, checked for loss, duplicates, availability, exact state and leaked secrets).
//! Commands and results: `docs/BENCHMARKS.md`.
//!
//! Every implementation runs as a child process, so its CPU (`/proc/<pid>/stat`) and memory
//! (`/proc/<pid>/status`) are read alone; the mock Kafka cluster and (for density) the simulator
//! run in processes of their own too.
//!
//! This is a measuring tool, not a test and not production code: it must not be run by
//! `cargo test` beyond its pure unit tests and the short chaos run of `tests/chaos.rs`, nothing
//! in the product may depend on it, and it
//! must not talk to anything but loopback addresses. Its numbers are only meaningful from a
//! `--release` build.

mod aggregate;
mod baseline;
mod chaos;
mod child;
mod density;
mod fleet_start;
mod impls;
mod kafka;
mod latency;
mod pipeline;
mod procfs;
mod python;
mod report;
mod scrape;
mod simproc;
mod status;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rdkafka::ClientConfig;

/// Benchmark harness: sluice worker vs reqwest-eventsource + rdkafka baselines, and the
/// aggregator.
#[derive(Debug, Parser)]
#[command(name = "sluice-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulator firehose (or paced feed) -> implementation -> Kafka: events/s, CPU, latency.
    Pipeline(pipeline::PipelineArgs),
    /// Many concurrent connections (1 event/s each) in one implementation process: RSS and CPU.
    Density(density::DensityArgs),
    /// `sluice aggregator` on a pre-loaded events topic: deltas merged per second and per
    /// CPU-second, entity query latency while merging, RSS per entity.
    Aggregate(aggregate::AggregateArgs),
    /// The worker and the aggregator killed with -9 at random under upstream faults on a real
    /// Kafka: 0 lost, records per event, longest unserved, state equal to the truth, no secret.
    Chaos(chaos::ChaosArgs),
    /// A second fleet worker joins, leaves (SIGTERM) and is killed (-9), in cycles, on a real
    /// Kafka: how long the moved targets are dark (p50/p99), records per event, lost.
    Handover(chaos::handover::HandoverArgs),
    /// A fleet of workers over many targets: time until every target streams after a cold
    /// start and after one worker leaves; CPU and memory per target beside `fleet: none`.
    FleetStart(fleet_start::FleetStartArgs),
    /// A baseline implementation (child process of `pipeline` and `density`).
    Baseline(BaselineArgs),
    /// librdkafka's mock cluster in its own process: prints its bootstrap servers, then serves
    /// `create TOPIC PARTITIONS` lines on stdin until stdin closes.
    MockKafka {
        /// Number of mock brokers.
        #[arg(long, default_value_t = kafka::MOCK_BROKERS)]
        brokers: i32,
    },
    /// The simulator in its own process: prints its stream URL, serves until stdin closes.
    Sim(simproc::SimArgs),
    /// One `/metrics` scrape of a worker and an aggregator at fleet size in each
    /// `metrics.per_target` mode: series, bytes, render time.
    Scrape(scrape::ScrapeArgs),
    /// One answer of the worker's console at fleet size: the server-side table, its JSON and
    /// the HTML page, per query.
    Status(status::StatusArgs),
}

/// How a baseline publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// (a) await every send before reading the next event.
    Await,
    /// (b) up to 10,000 sends in flight per stream.
    Inflight,
}

#[derive(Debug, clap::Args)]
struct BaselineArgs {
    /// Await each send, or keep up to 10,000 in flight.
    #[arg(long, value_enum)]
    mode: Mode,
    /// The SSE endpoint (repeatable: stream i reads URL number i modulo their count).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Topic for every event.
    #[arg(long)]
    topic: String,
    /// Stop reading after this many events in total.
    #[arg(long)]
    events: Option<u64>,
    /// Concurrent streams (all to --url) sharing one producer.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Extra producer property `key=value` (repeatable).
    #[arg(long = "producer-property")]
    producer_properties: Vec<String>,
}

/// An implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// `sluice worker`.
    Sluice,
    /// `sluice worker` with `delivery.mode: exactly_once`.
    SluiceExactlyOnce,
    /// Baseline (a).
    Await,
    /// Baseline (b).
    Inflight,
    /// The Python scraper (requests + sseclient-py + confluent-kafka).
    Python,
}

impl Impl {
    /// Whether it is `sluice worker` (in either delivery mode).
    pub fn is_sluice(self) -> bool {
        matches!(self, Impl::Sluice | Impl::SluiceExactlyOnce)
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Sluice => "sluice",
            Impl::SluiceExactlyOnce => "sluice-eos",
            Impl::Await => "await",
            Impl::Inflight => "inflight",
            Impl::Python => "python",
        }
    }
}

/// Parses `sluice,await,inflight`.
pub fn parse_impls(list: &str) -> anyhow::Result<Vec<Impl>> {
    let mut impls = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let i = match name {
            "sluice" => Impl::Sluice,
            "sluice-eos" | "eos" => Impl::SluiceExactlyOnce,
            "await" | "a" => Impl::Await,
            "inflight" | "b" => Impl::Inflight,
            "python" | "py" => Impl::Python,
            other => bail!(
                "unknown implementation {other:?} (sluice, sluice-eos, await, inflight, python)"
            ),
        };
        if !impls.contains(&i) {
            impls.push(i);
        }
    }
    if impls.is_empty() {
        bail!("no implementation named");
    }
    Ok(impls)
}

/// The producer settings every implementation gets: `acks=all`, idempotence, `linger.ms=5`, then
/// the extra `key=value` properties.
pub fn producer_config(brokers: &str, extra: &[String]) -> anyhow::Result<ClientConfig> {
    let mut config = kafka::base_config(brokers);
    for (key, value) in producer_properties(extra)? {
        config.set(key, value);
    }
    Ok(config)
}

/// The producer properties (besides `bootstrap.servers`) of every implementation.
pub fn producer_properties(extra: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut props = vec![
        ("acks".to_owned(), "all".to_owned()),
        ("enable.idempotence".to_owned(), "true".to_owned()),
        ("linger.ms".to_owned(), "5".to_owned()),
    ];
    for kv in extra {
        let (key, value) = kv
            .split_once('=')
            .with_context(|| format!("producer property {kv:?} is not key=value"))?;
        props.retain(|(k, _)| k != key);
        props.push((key.to_owned(), value.to_owned()));
    }
    Ok(props)
}

/// Raises the soft open-files limit to the hard limit (children inherit it).
pub fn raise_nofile_limit() {
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%error, "cannot raise RLIMIT_NOFILE");
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A free loopback port below the kernel's ephemeral range, for a listener that restarts on the
/// same port (a process killed and started again): a port from the ephemeral range can be taken
/// meanwhile as the local end of any outgoing connection, and the restart then cannot bind.
pub fn stable_port() -> anyhow::Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let floor: u16 = 10_000;
    anyhow::ensure!(
        low > floor + 100,
        "the ephemeral port range starts at {low}: no stable ports"
    );
    // Each call starts further on: two listeners of one run never get the same port.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = u32::from(low - floor);
    let mut candidate = floor
        + u16::try_from(
            (std::process::id()
                .wrapping_mul(7919)
                .wrapping_add(call * 97))
                % span,
        )
        .unwrap_or(0);
    for _ in 0..1000 {
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return Ok(candidate);
        }
        candidate = if candidate + 1 >= low {
            floor
        } else {
            candidate + 1
        };
    }
    anyhow::bail!("no free loopback port between {floor} and {low}")
}

/// The `sluice` binary: `--sluice-bin`, else next to this executable.
pub fn sluice_bin(explicit: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().context("cannot find the harness executable")?;
    let path = exe.with_file_name("sluice");
    if !path.exists() {
        bail!(
            "{} does not exist: build it with `cargo build -j2 --release -p sluice` or pass \
             --sluice-bin",
            path.display()
        );
    }
    Ok(path)
}

/// The command line as typed, for the report.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let mut line = String::from("sluice-bench");
    args.next();
    for arg in args {
        line.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || "'\"$&;|<>".contains(c)) {
            line.push('\'');
            line.push_str(&arg.replace('\'', r"'\''"));
            line.push('\'');
        } else {
            line.push_str(&arg);
        }
    }
    line
}

/// Parses `30s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Command::MockKafka { brokers } = cli.command {
        // librdkafka's mock cluster runs its own threads; no async runtime needed.
        return kafka::run_mock_kafka(brokers);
    }
    raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let work = async move {
            match cli.command {
                Command::Pipeline(args) => pipeline::run(args).await,
                Command::Density(args) => density::run(args).await,
                Command::FleetStart(args) => fleet_start::run(args).await,
                Command::Aggregate(args) => aggregate::run(args).await,
                Command::Sim(args) => simproc::run(args).await,
                Command::Chaos(args) => chaos::run(args).await,
                Command::Handover(args) => chaos::handover::run(args).await,
                Command::Scrape(args) => scrape::run(args),
                Command::Status(args) => status::run(args),
                Command::Baseline(args) => {
                    baseline::run(baseline::Baseline {
                        mode: args.mode,
                        urls: args.urls,
                        brokers: args.brokers,
                        topic: args.topic,
                        events: args.events,
                        connections: args.connections,
                        producer_properties: args.producer_properties,
                    })
                    .await
                }
                Command::MockKafka { .. } => Ok(()),
            }
        };
        // On SIGINT/SIGTERM the work is dropped, and with it every child (kill_on_drop) and
        // temp dir.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        tokio::select! {
            result = work => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn impl_lists_parse_in_order_without_duplicates() {
        let impls = parse_impls("sluice, await,inflight,await").unwrap();
        assert_eq!(impls, [Impl::Sluice, Impl::Await, Impl::Inflight]);
        assert!(parse_impls("kafka-connect").is_err());
        assert!(parse_impls("").is_err());
    }

    #[test]
    fn producer_properties_keep_the_common_settings_and_let_extras_override() {
        let props = producer_properties(&["linger.ms=0".to_owned(), "a=b".to_owned()]).unwrap();
        assert!(props.contains(&("acks".to_owned(), "all".to_owned())));
        assert!(props.contains(&("linger.ms".to_owned(), "0".to_owned())));
        assert!(!props.contains(&("linger.ms".to_owned(), "5".to_owned())));
        assert!(producer_properties(&["nokey".to_owned()]).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5h").is_err());
    }
}
