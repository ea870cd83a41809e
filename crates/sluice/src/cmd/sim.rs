//! `sluice sim`: run the upstream simulator (REST snapshot, SSE deltas, faults) until stopped.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sluice_sim::SimConfig;
use tokio_util::sync::CancellationToken;

/// Arguments of `sluice sim`.
#[derive(Debug, Args)]
#[command(after_help = "\
Endpoints: GET /v1/snapshot, GET /v1/stream (SSE; Last-Event-ID replay), GET /healthz,
GET|POST|DELETE /admin/faults. Per-connection faults by query parameter, e.g.
/v1/stream?close_after_events=10, ?reset_after_events=5, ?stall_after_events=5, ?max_age=5s,
?status=503&retry_after=2, ?status=204, ?redirect=2, ?content_type=text/plain,
?malformed_after_events=3, ?oversized_after_events=3&oversized_bytes=2000000, ?firehose=1.")]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SLUICE_SIM_LISTEN")]
    pub listen: SocketAddr,
    /// Seed of the deterministic feed: same seed, same deltas.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of entities (keys E0001…).
    #[arg(long, default_value_t = 100)]
    pub entities: usize,
    /// Deltas per second; 0 means firehose (streams push as fast as clients read).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Heartbeat comment interval on idle streams (0s disables).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// How many of the latest deltas can be replayed after Last-Event-ID.
    #[arg(long, default_value_t = 10_000)]
    pub history: usize,
    /// Send `retry: <ms>` at the start of each stream.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retry: Option<Duration>,
    /// Stop advancing the feed after this many deltas.
    #[arg(long)]
    pub max_events: Option<u64>,
}

/// Runs the simulator until `shutdown` is cancelled.
pub async fn run(args: SimArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = SimConfig {
        seed: args.seed,
        entities: args.entities,
        rate: args.rate,
        heartbeat: args.heartbeat,
        history: args.history,
        retry: args.retry,
        max_events: args.max_events,
    };
    config.validate().context("invalid simulator arguments")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the listen address")?;
    let base = format!("http://{addr}");
    tracing::info!(
        listen = %addr,
        stream_url = %format!("{base}/v1/stream"),
        snapshot_url = %format!("{base}/v1/snapshot"),
        admin_url = %format!("{base}/admin/faults"),
        seed = config.seed,
        entities = config.entities,
        rate = config.rate,
        "simulator listening"
    );
    sluice_sim::serve(config, listener, shutdown)
        .await
        .context("simulator failed")?;
    tracing::info!("simulator stopped");
    Ok(())
}
