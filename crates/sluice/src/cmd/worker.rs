//! `sluice worker`: hold every enabled target's SSE connection and publish its events to Kafka.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

/// Arguments of `sluice worker`.
#[derive(Debug, Args)]
#[command(after_help = "\
Loads and validates worker.yaml and every target file (the same checks and messages as `sluice
validate`; invalid config exits 1 before anything connects), reads the checkpoint topic, then
connects every enabled target, resuming each with Last-Event-ID from its checkpoint.

Serves /metrics, /status (JSON; HTML at /status.html), /healthz and /readyz on http.listen.
SIGTERM or SIGINT: stop reading, wait for Kafka to acknowledge everything read, write final
checkpoints, exit 0 within shutdown.grace (exit 1 if the grace period passes first).")]
pub struct WorkerArgs {
    /// The worker configuration file; target files are read from its `targets_dir`.
    #[arg(long, default_value = "config/worker.yaml", env = "SLUICE_CONFIG")]
    pub config: PathBuf,
}

/// Runs the worker until a shutdown signal.
pub async fn run(args: WorkerArgs, shutdown: CancellationToken) -> ExitCode {
    let config = match sluice_config::load(&args.config) {
        Ok(config) => config,
        Err(errors) => return super::refuse_config("worker", &errors),
    };
    tracing::info!(
        config = %args.config.display(),
        targets = config.targets.iter().filter(|t| t.enabled).count(),
        brokers = %config.kafka.brokers.join(","),
        "starting worker"
    );
    match sluice_worker::run(config, None, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "worker failed");
            let _ = writeln!(std::io::stderr(), "sluice worker: {error}");
            ExitCode::FAILURE
        }
    }
}
