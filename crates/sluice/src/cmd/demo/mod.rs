//! `sluice demo`: the whole pipeline in one process, with nothing to install.
//!
//! What it is for: a newcomer's first command. It starts an in-memory Kafka (librdkafka's mock
//! cluster, with the topics the config names), the upstream simulator, a worker and an aggregator
//! wired together from `config/aggregator.yaml` (which names the worker file and its targets;
//! when there is none in the working directory, the same files built into the binary),
//! prints where the status page, metrics and state API are, and then a progress line every second
//! (events in, delivered, merged, reconnects) read from the two `/metrics` endpoints over loopback.
//! SIGINT or SIGTERM stops every part gracefully (worker drain, aggregator snapshot) and exits 0.
//!
//! What it must not do: hold product logic (it only wires the library crates' `run` functions
//! together and changes loaded config values: brokers, listen addresses and the simulator's
//! address in the targets' URLs); edit any config file (the built-in one is written to a temp
//! dir of its own); need anything but the binary
//! (no external broker, no download); or pass for a deployment: the mock cluster keeps
//! everything in memory and loses it at exit.

mod kafka;
mod progress;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sluice_config::AggregatorConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::{Host, Url};

use kafka::EmbeddedKafka;
use progress::{Urls, print_banner, progress, say};

/// Partitions of each events topic on the embedded Kafka (aggregated targets are spread over
/// them by key, as in a real cluster).
const EVENT_PARTITIONS: i32 = 3;
/// Brokers of the embedded Kafka: one is enough in one process.
const MOCK_BROKERS: i32 = 1;
/// Time between two progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Limit on one `/metrics` or `/readyz` request of the progress line.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Arguments of `sluice demo`.
#[derive(Debug, Args)]
#[command(after_help = "\
Everything in one process, nothing to install: an in-memory Kafka (librdkafka's mock cluster),
the upstream simulator, a worker and an aggregator, wired together from the aggregator config
(which names the worker config and its targets). Kafka brokers are replaced by the embedded
cluster; the simulator listens where the aggregated targets expect it (127.0.0.1:8080 for the
shipped config) unless --sim-listen says otherwise, in which case those targets' URLs follow it.

Prints the URLs of the status page, metrics and state API, then one progress line per second:
events in (worker), delivered (acknowledged by Kafka), merged (applied by the aggregator),
reconnects. SIGINT (Ctrl-C) or SIGTERM: the worker drains and checkpoints, the aggregator
snapshots, everything stops, exit 0. Nothing is kept: the Kafka lives in memory.")]
pub struct DemoArgs {
    /// The aggregator configuration file (it names the worker file, which names the targets).
    /// Default: `config/aggregator.yaml` when it exists here, else the example configuration
    /// built into the binary (the repository's `config/`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the simulator listens [default: the loopback address of the aggregated targets'
    /// URLs]. Targets pointing at that address are pointed here instead.
    #[arg(long, value_name = "ADDR")]
    pub sim_listen: Option<SocketAddr>,
    /// Where the worker serves /status.html, /metrics and probes [default: its http.listen].
    #[arg(long, value_name = "ADDR")]
    pub worker_listen: Option<SocketAddr>,
    /// Where the aggregator serves its page, state API and /metrics [default: its http.listen].
    #[arg(long, value_name = "ADDR")]
    pub aggregator_listen: Option<SocketAddr>,
    /// Deltas per second produced by the simulator.
    #[arg(long, default_value_t = 20.0, value_name = "N")]
    pub rate: f64,
}

/// The config the demo uses when none is named and it exists in the working directory.
const DEFAULT_CONFIG: &str = "config/aggregator.yaml";

/// Runs the demo until a shutdown signal; 0 when every part stopped cleanly.
pub async fn run(mut args: DemoArgs, shutdown: CancellationToken) -> ExitCode {
    // Kept alive for the whole run: secrets are re-read from their files on reconnects.
    let mut builtin = None;
    let path = match args.config.clone() {
        Some(path) => path,
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => match super::builtin_config::BuiltinConfig::write() {
            Ok(written) => {
                tracing::info!(dir = %written.dir().display(), "no config/aggregator.yaml here: using the built-in example configuration");
                let path = written.aggregator_yaml();
                builtin = Some(written);
                path
            }
            Err(error) => {
                let _ = writeln!(std::io::stderr(), "sluice demo: {error:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    args.config = Some(path.clone());
    let config = match sluice_config::load_aggregator(&path) {
        Ok(config) => config,
        Err(errors) => return super::refuse_config("demo", &errors),
    };
    let code = demo(args, config, shutdown).await;
    drop(builtin);
    match code {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "demo failed");
            let _ = writeln!(std::io::stderr(), "sluice demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(
    args: DemoArgs,
    mut config: AggregatorConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let sim_config = sluice_sim::SimConfig {
        rate: args.rate,
        ..sluice_sim::SimConfig::default()
    };
    sim_config
        .validate()
        .context("invalid simulator arguments")?;

    // The simulator first: the targets' URLs follow wherever it really listens.
    let expected = simulator_address(&config);
    let sim_listen = args.sim_listen.or(expected).context(
        "no enabled aggregated target reads a simulator on a loopback address; pass --sim-listen",
    )?;
    let sim_listener = bind(sim_listen, "the simulator", "--sim-listen").await?;
    let sim_addr = reachable(sim_listener.local_addr()?);
    if let Some(expected) = expected {
        if expected != sim_addr {
            point_targets_at(&mut config, expected, sim_addr);
        }
    }

    let worker_listen = args.worker_listen.unwrap_or(config.worker.http.listen);
    let worker_listener = bind(worker_listen, "the worker", "--worker-listen").await?;
    let worker_addr = reachable(worker_listener.local_addr()?);
    let aggregator_listen = args.aggregator_listen.unwrap_or(config.http.listen);
    let aggregator_listener =
        bind(aggregator_listen, "the aggregator", "--aggregator-listen").await?;
    let aggregator_addr = reachable(aggregator_listener.local_addr()?);

    let kafka = EmbeddedKafka::start(topics(&config)).await?;
    config.kafka.brokers = vec![kafka.bootstrap.clone()];
    config.http.listen = aggregator_addr;
    config.worker.kafka.brokers = vec![kafka.bootstrap.clone()];
    config.worker.http.listen = worker_addr;
    // The targets' URLs may have been pointed at the simulator in memory: a look at the files
    // would take them back to the files' addresses, so the demo's worker does not watch them.
    config.worker.targets_watch = std::time::Duration::ZERO;
    let worker_config = config.worker.clone();

    let urls = Urls {
        sim: format!("http://{sim_addr}"),
        worker: format!("http://{worker_addr}"),
        aggregator: format!("http://{aggregator_addr}"),
    };
    print_banner(&urls, &kafka.bootstrap, &config);
    tracing::info!(
        config = %args.config.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG)).display(),
        kafka = %kafka.bootstrap,
        simulator = %sim_addr,
        worker = %worker_addr,
        aggregator = %aggregator_addr,
        "demo starting"
    );

    let parts = shutdown.child_token();
    let sim_stop = CancellationToken::new();
    let mut sim = tokio::spawn(sluice_sim::serve(
        sim_config,
        sim_listener,
        sim_stop.clone(),
    ));
    let mut worker = tokio::spawn(sluice_worker::run(
        worker_config,
        Some(worker_listener),
        parts.clone(),
    ));
    let mut aggregator = tokio::spawn(sluice_aggregator::run(
        config,
        Some(aggregator_listener),
        parts.clone(),
    ));
    let progress = tokio::spawn(progress(urls, parts.clone()));

    let mut worker_end = None;
    let mut aggregator_end = None;
    let mut sim_end = None;
    tokio::select! {
        () = parts.cancelled() => {}
        joined = &mut worker => worker_end = Some(outcome(joined)),
        joined = &mut aggregator => aggregator_end = Some(outcome(joined)),
        joined = &mut sim => sim_end = Some(outcome(joined)),
    }
    let interrupted = shutdown.is_cancelled();
    parts.cancel();
    let _ = progress.await;
    say("stopping: the worker drains and checkpoints, the aggregator writes its snapshots");

    let worker_end = finish(worker_end, worker).await;
    let aggregator_end = finish(aggregator_end, aggregator).await;
    sim_stop.cancel();
    let sim_end = finish(sim_end, sim).await;
    kafka.stop().await;

    let mut failed = false;
    for (part, end) in [
        ("worker", worker_end),
        ("aggregator", aggregator_end),
        ("simulator", sim_end),
    ] {
        let problem = match end {
            Err(error) => Some(error),
            Ok(()) if !interrupted => Some("stopped before it was asked to".to_owned()),
            Ok(()) => None,
        };
        if let Some(problem) = problem {
            failed = true;
            tracing::error!(part, problem, "demo part failed");
            let _ = writeln!(std::io::stderr(), "sluice demo: {part}: {problem}");
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    say("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The loopback address the enabled aggregated targets expect the simulator at: the first
/// `http://` stream or base-state URL on a loopback host.
fn simulator_address(config: &AggregatorConfig) -> Option<SocketAddr> {
    config
        .targets()
        .flat_map(|(target, aggregate)| [&target.url, &aggregate.base_url])
        .find_map(loopback_http)
}

/// `url`'s address when it is `http://` on a loopback host (`localhost` counts as 127.0.0.1).
fn loopback_http(url: &Url) -> Option<SocketAddr> {
    if url.scheme() != "http" {
        return None;
    }
    let ip = match url.host()? {
        Host::Ipv4(ip) => IpAddr::V4(ip),
        Host::Ipv6(ip) => IpAddr::V6(ip),
        Host::Domain(name) if name.eq_ignore_ascii_case("localhost") => {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
        Host::Domain(_) => return None,
    };
    let port = url.port_or_known_default()?;
    ip.is_loopback().then_some(SocketAddr::new(ip, port))
}

/// Points every target URL (stream and base state) that reads `from` at `to` instead.
fn point_targets_at(config: &mut AggregatorConfig, from: SocketAddr, to: SocketAddr) {
    for target in &mut config.worker.targets {
        let mut urls = vec![&mut target.url];
        if let Some(aggregate) = target.aggregate.as_mut() {
            urls.push(&mut aggregate.base_url);
        }
        for url in urls {
            if loopback_http(url) == Some(from) {
                // Cannot fail: an http URL with a host takes an IP host and a port.
                let _ = url.set_ip_host(to.ip());
                let _ = url.set_port(Some(to.port()));
            }
        }
    }
}

/// `addr` as a client reaches it: an unspecified IP (`0.0.0.0`, `::`) becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what} (choose another with {flag})"))
}

/// The topics to create on the embedded Kafka: (name, partitions).
fn topics(config: &AggregatorConfig) -> Vec<(String, i32)> {
    let events: BTreeSet<&str> = config
        .worker
        .targets
        .iter()
        .filter(|t| t.enabled)
        .map(|t| t.topic.as_str())
        .collect();
    let mut topics: Vec<(String, i32)> = events
        .into_iter()
        .map(|t| (t.to_owned(), EVENT_PARTITIONS))
        .collect();
    topics.push((config.worker.topics.checkpoints.clone(), 1));
    topics.push((config.topics.state.clone(), 1));
    if let Some(dead) = &config.topics.dead_letter {
        topics.push((dead.clone(), 1));
    }
    topics
}

/// A part's end: `Err` with the reason when it failed or panicked.
fn outcome<E: std::fmt::Display>(
    joined: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), String> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(format!("task failed: {error}")),
    }
}

async fn finish<E: std::fmt::Display>(
    ended: Option<Result<(), String>>,
    task: JoinHandle<Result<(), E>>,
) -> Result<(), String> {
    match ended {
        Some(end) => end,
        None => outcome(task.await),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::progress::{Progress, sum_series};
    use super::*;

    #[test]
    fn sums_samples_of_one_family_with_a_label() {
        let text = "\
# TYPE sluice_aggregator_deltas_total counter
sluice_aggregator_deltas_total{outcome=\"applied\",target=\"a\"} 12
sluice_aggregator_deltas_total{outcome=\"stale\",target=\"a\"} 3
sluice_aggregator_deltas_total{outcome=\"applied\",target=\"b\"} 5
sluice_events_received_total{target=\"a\"} 7
sluice_events_received_total_other 100
sluice_delivery_latency_seconds_count{target=\"a\"} 9
";
        assert_eq!(
            sum_series(
                text,
                "sluice_aggregator_deltas_total",
                Some("outcome=\"applied\"")
            ),
            17
        );
        assert_eq!(sum_series(text, "sluice_aggregator_deltas_total", None), 20);
        assert_eq!(sum_series(text, "sluice_events_received_total", None), 7);
        assert_eq!(sum_series(text, "sluice_delivery_latency_seconds", None), 0);
    }

    #[test]
    fn finds_loopback_http_addresses_only() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            loopback_http(&url("http://127.0.0.1:8080/v1/stream")),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            loopback_http(&url("http://localhost/v1/stream")),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(loopback_http(&url("http://example.com:8080/")), None);
        assert_eq!(loopback_http(&url("https://127.0.0.1:8443/")), None);
        assert_eq!(loopback_http(&url("http://10.0.0.1:8080/")), None);
    }

    #[test]
    fn the_shipped_config_runs_on_its_simulator_or_follows_sim_listen() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/aggregator.yaml");
        let mut config = sluice_config::load_aggregator(&path).unwrap();
        let from = simulator_address(&config).unwrap();
        assert_eq!(from, "127.0.0.1:8080".parse().unwrap());

        let to: SocketAddr = "127.0.0.1:18080".parse().unwrap();
        point_targets_at(&mut config, from, to);
        let (target, aggregate) = config.targets().next().unwrap();
        assert_eq!(target.url.as_str(), "http://127.0.0.1:18080/v1/stream");
        assert_eq!(
            aggregate.base_url.as_str(),
            "http://127.0.0.1:18080/v1/snapshot"
        );
        assert_eq!(simulator_address(&config), Some(to));

        let topics = topics(&config);
        assert!(topics.contains(&("sluice.events".to_owned(), EVENT_PARTITIONS)));
        assert!(topics.contains(&("sluice.checkpoints".to_owned(), 1)));
        assert!(topics.contains(&("sluice.state".to_owned(), 1)));
        assert!(topics.contains(&("sluice.dead-letter".to_owned(), 1)));
    }

    #[test]
    fn the_progress_line_names_every_count() {
        let line = Progress {
            events_in: Some(10),
            delivered: Some(9),
            reconnects: Some(0),
            merged: None,
            worker_ready: true,
            aggregator_ready: false,
        }
        .line(Duration::from_secs(3));
        assert_eq!(
            line,
            "[    3s] events in 10 | delivered 9 | merged - | reconnects 0 | aggregator syncing"
        );
    }
}
