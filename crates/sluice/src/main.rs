//! `sluice`: one binary, one subcommand per job.
//!
//! This file only parses the command line, installs logging and the shutdown signal, and hands
//! over to `cmd::*`. It must not hold product logic: that lives in the library crates.

mod cmd;
mod shutdown;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Sluice turns Server-Sent Events endpoints into Kafka topics, and deltas back into state.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SLUICE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `sluice_client=debug`.
    #[arg(long, global = true, default_value = "info", env = "SLUICE_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once at start-up; the size difference between argument structs does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Print the events of one SSE endpoint as JSON lines (reconnecting as an EventSource does).
    Tail(cmd::tail::TailArgs),
    /// Run the upstream simulator: a market feed with a REST snapshot, an SSE delta stream and faults.
    Sim(cmd::sim::SimArgs),
    /// Hold every configured target's SSE connection and publish its events to Kafka, loss-free.
    Worker(cmd::worker::WorkerArgs),
    /// Check the worker config and every target file, offline; report every problem with file and field.
    Validate(cmd::validate::ValidateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    if let Command::Validate(args) = cli.command {
        return cmd::validate::run(args);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = shutdown::on_signal();
        match cli.command {
            Command::Tail(args) => cmd::tail::run(args, shutdown).await,
            Command::Validate(args) => cmd::validate::run(args),
            Command::Worker(args) => cmd::worker::run(args, shutdown).await,
            Command::Sim(args) => match cmd::sim::run(args, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("sluice sim: {error:#}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
