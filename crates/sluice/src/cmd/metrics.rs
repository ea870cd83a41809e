//! `sluice metrics`: list the metric families a worker and an aggregator expose in a
//! `metrics.per_target` mode, from the tables their `/metrics` is written from. Offline: starts
//! nothing, reads no config. `scripts/check-deploy` checks the shipped alerts and dashboard
//! against this list.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use sluice_config::{FamilyInfo, PerTarget};

/// Arguments of `sluice metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The `metrics.per_target` mode to list.
    #[arg(long, value_enum, default_value_t = Mode::Essential)]
    pub per_target: Mode,
    /// `text`: one `component family type labels` line per family; `json`: one JSON object per
    /// line (`component`, `name`, `kind`, `labels`, `per_target`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `metrics.per_target` as a command-line value.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Every per-target family.
    All,
    /// The default.
    Essential,
    /// No per-target family.
    None,
}

impl From<Mode> for PerTarget {
    fn from(mode: Mode) -> PerTarget {
        match mode {
            Mode::All => PerTarget::All,
            Mode::Essential => PerTarget::Essential,
            Mode::None => PerTarget::None,
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Columns for people.
    Text,
    /// JSON lines for scripts.
    Json,
}

/// Prints the families of both components in the mode.
pub fn run(args: &MetricsArgs) -> ExitCode {
    let mode = PerTarget::from(args.per_target);
    let worker = match sluice_worker::catalog(mode) {
        Ok(families) => families,
        Err(error) => return fail(&error),
    };
    let aggregator = match sluice_aggregator::catalog(mode) {
        Ok(families) => families,
        Err(error) => return fail(&error),
    };
    let mut out = std::io::stdout().lock();
    for (component, families) in [("worker", worker), ("aggregator", aggregator)] {
        for family in families {
            let line = match args.format {
                Format::Json => json_line(component, &family),
                Format::Text => format!(
                    "{component:<10} {:<52} {:<9} {}",
                    family.name,
                    family.kind,
                    family.labels.join(",")
                )
                .trim_end()
                .to_owned(),
            };
            // A closed stdout (`| head`) ends the listing, it is not an error.
            if writeln!(out, "{line}").is_err() {
                return ExitCode::SUCCESS;
            }
        }
    }
    ExitCode::SUCCESS
}

fn json_line(component: &str, family: &FamilyInfo) -> String {
    serde_json::json!({
        "component": component,
        "name": family.name,
        "kind": family.kind,
        "labels": family.labels,
        "per_target": family.per_target,
    })
    .to_string()
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sluice metrics: {error}");
    ExitCode::FAILURE
}
