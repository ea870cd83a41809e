//! `sluice validate`: load and check a worker or aggregator config and every target file, offline.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use sluice_config::{Loaded, WorkerConfig};

/// Arguments of `sluice validate`.
#[derive(Debug, Args)]
#[command(after_help = "\
Checks worker.yaml (with SLUICE__SECTION__KEY environment overrides applied) and every
targets/*.yaml: unknown keys, URLs, durations, target ids, duplicate ids, proxy pools, JSON
pointers, aggregate sections, and that every referenced secret env var is set and secret file
readable. Given an aggregator.yaml (a file with a top-level `worker` key), checks it (with the
overrides) and the worker config it names (without), which must have an enabled target with an
aggregate section. Makes no network connection. Prints `ok: N targets` (worker) or `ok:
aggregator, N of M targets aggregated`, or every problem as `file: field: message` on stderr and
exits 1.")]
pub struct ValidateArgs {
    /// The worker configuration file (target files are read from its `targets_dir`), or an
    /// aggregator configuration file.
    #[arg(long, default_value = "config/worker.yaml", env = "SLUICE_CONFIG")]
    pub config: PathBuf,
}

/// Validates the configuration: exit 0 with an `ok:` line, or 1 with one problem per line.
pub fn run(args: ValidateArgs) -> ExitCode {
    match sluice_config::load_any(&args.config) {
        Ok(loaded) => {
            let line = match &loaded {
                Loaded::Worker(config) => worker_summary(config),
                Loaded::Aggregator(config) => format!(
                    "ok: aggregator, {} of {} targets aggregated",
                    config.targets().count(),
                    config.worker.targets.len()
                ),
            };
            // A closed stdout (e.g. `| head -0`) is not a config problem.
            let _ = writeln!(std::io::stdout(), "{line}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            let mut stderr = std::io::stderr().lock();
            for problem in &errors.problems {
                let _ = writeln!(stderr, "{problem}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `ok: N targets`, with the enabled count when some are disabled.
fn worker_summary(config: &WorkerConfig) -> String {
    let enabled = config.targets.iter().filter(|t| t.enabled).count();
    let total = config.targets.len();
    if enabled == total {
        format!("ok: {total} targets")
    } else {
        format!("ok: {total} targets ({enabled} enabled)")
    }
}
