//! `sluice validate`: load and check the worker config and every target file, offline.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `sluice validate`.
#[derive(Debug, Args)]
#[command(after_help = "\
Checks worker.yaml (with SLUICE__SECTION__KEY environment overrides applied) and every
targets/*.yaml: unknown keys, URLs, durations, target ids, duplicate ids, proxy pools, JSON
pointers, and that every referenced secret env var is set and secret file readable. Makes no
network connection. Prints `ok: N targets`, or every problem as `file: field: message` on stderr
and exits 1.")]
pub struct ValidateArgs {
    /// The worker configuration file; target files are read from its `targets_dir`.
    #[arg(long, default_value = "config/worker.yaml", env = "SLUICE_CONFIG")]
    pub config: PathBuf,
}

/// Validates the configuration: exit 0 with `ok: N targets`, or 1 with one problem per line.
pub fn run(args: ValidateArgs) -> ExitCode {
    match sluice_config::load(&args.config) {
        Ok(config) => {
            let enabled = config.targets.iter().filter(|t| t.enabled).count();
            let total = config.targets.len();
            let line = if enabled == total {
                format!("ok: {total} targets")
            } else {
                format!("ok: {total} targets ({enabled} enabled)")
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
