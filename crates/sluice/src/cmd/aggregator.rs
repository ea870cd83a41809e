//! `sluice aggregator`: merge each target's REST base state and Kafka deltas into its exact
//! current state, and serve it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

/// Arguments of `sluice aggregator`.
#[derive(Debug, Args)]
#[command(after_help = "\
Loads and validates aggregator.yaml, the worker.yaml it names and every target file (the same
checks and messages as `sluice validate`), then joins the consumer group on the events topics of
the targets that have an `aggregate:` section. For each assigned target it restores the last
snapshot from the state topic, or fetches the REST base state, and applies the deltas in order.

Serves on http.listen: /v1/targets, /v1/targets/{t}/state, /v1/targets/{t}/entities/{key},
/v1/targets/{t}/stream (SSE of merged changes, resumable with Last-Event-ID), /metrics,
/healthz, /readyz (ready once every assigned target has a complete state) and an HTML page at /.
SIGTERM or SIGINT: write final snapshots, commit offsets, leave the group, exit 0.")]
pub struct AggregatorArgs {
    /// The aggregator configuration file.
    #[arg(long, default_value = "config/aggregator.yaml", env = "SLUICE_CONFIG")]
    pub config: PathBuf,
}

/// Runs the aggregator until a shutdown signal.
pub async fn run(args: AggregatorArgs, shutdown: CancellationToken) -> ExitCode {
    let config = match sluice_config::load_aggregator(&args.config) {
        Ok(config) => config,
        Err(errors) => return super::refuse_config("aggregator", &errors),
    };
    tracing::info!(
        config = %args.config.display(),
        targets = config.targets().count(),
        brokers = %config.kafka.brokers.join(","),
        "starting aggregator"
    );
    match sluice_aggregator::run(config, None, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "aggregator failed");
            let _ = writeln!(std::io::stderr(), "sluice aggregator: {error}");
            ExitCode::FAILURE
        }
    }
}
