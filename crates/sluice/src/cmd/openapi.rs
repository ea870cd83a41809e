//! `sluice openapi aggregator|worker`: print the OpenAPI 3.1 document of the aggregator's or the
//! worker's HTTP API, generated from its routes (the committed copies are
//! `docs/openapi/{aggregator,worker}.json`). Offline: starts nothing, reads no config.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

/// Arguments of `sluice openapi`.
#[derive(Debug, Args)]
pub struct OpenApiArgs {
    /// Whose API.
    #[arg(value_enum)]
    pub api: Api,
}

/// The documented APIs.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Api {
    /// The aggregator's state API, probes and metrics.
    Aggregator,
    /// The worker's operations server (status, metrics, probes) and admin API.
    Worker,
}

/// Prints the document.
pub fn run(args: &OpenApiArgs) -> ExitCode {
    let document = match args.api {
        Api::Aggregator => sluice_aggregator::openapi_document(),
        Api::Worker => sluice_worker::openapi_document(),
    };
    match std::io::stdout().lock().write_all(document.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice openapi: cannot write: {error}");
            ExitCode::FAILURE
        }
    }
}
