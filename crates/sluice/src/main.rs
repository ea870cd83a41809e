//! `sluice`: one binary, one subcommand per job.
//!
//! This file only parses the command line, installs logging and the shutdown signal, and hands
//! over to `cmd::*`. It must not hold product logic: that lives in the library crates.

mod cmd;
mod shutdown;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// jemalloc instead of the system allocator: the worker allocates on its runtime threads and frees
/// on librdkafka's delivery thread, which glibc's arenas handle poorly. With jemalloc the pipeline
/// is faster and a held connection costs less memory; mimalloc was as fast but used more memory
/// (docs/BENCHMARKS.md, "What changed, and what each change was worth").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc options, read once at its initialisation (before `main`); `_RJEM_MALLOC_CONF` in the
/// environment still overrides them.
///
/// `slab_sizes`: every held connection keeps two 8 KiB buffers (hyper's read and write buffers)
/// and one 10 KiB block (hyper's dispatch channel). By default jemalloc gives each 8 KiB
/// allocation a slab (an extent with its own metadata) of its own; 16-page slabs hold eight of
/// them (six of the 10 KiB blocks), which saves allocator metadata and resident memory per held
/// connection (the measurement: docs/BENCHMARKS.md, "Density after the per-connection work").
// SAFETY: an exported, immutable, NUL-terminated string; jemalloc declares the symbol
// `const char *_rjem_malloc_conf` (weak, overridden here) and only reads it.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"slab_sizes:8192-10240:16\0"[0];
use tracing::Instrument as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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
    /// OpenTelemetry collector (OTLP over HTTP) base URL, e.g. `http://127.0.0.1:4318`: spans go to
    /// `URL/v1/traces`, logs to `URL/v1/logs`. Unset: nothing is exported.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    otlp_endpoint: Option<String>,
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
    /// Merge each target's REST base state and Kafka deltas into exact state, and serve it.
    Aggregator(cmd::aggregator::AggregatorArgs),
    /// Check the worker config and every target file, offline; report every problem with file and field.
    Validate(cmd::validate::ValidateArgs),
    /// Everything in one process, nothing to install: embedded Kafka, simulator, worker, aggregator.
    Demo(cmd::demo::DemoArgs),
    /// Inspect the aggregator's dead letters, and send one back through the normal path.
    DeadLetters(cmd::dead_letters::DeadLettersArgs),
    /// List the metric families a worker and an aggregator expose in a `metrics.per_target` mode.
    Metrics(cmd::metrics::MetricsArgs),
    /// A worker's targets through its admin API: list, get, pause, resume, restart.
    Targets(cmd::admin::TargetsArgs),
    /// A target's checkpoint through a worker's admin API.
    Checkpoints(cmd::admin::CheckpointsArgs),
    /// Print the OpenAPI document of an HTTP API, generated from its routes.
    Openapi(cmd::openapi::OpenApiArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = init_logging(cli.log_format, &cli.log, cli.otlp_endpoint.as_deref());
    let command = match &cli.command {
        Command::Tail(_) => "tail",
        Command::Sim(_) => "sim",
        Command::Worker(_) => "worker",
        Command::Aggregator(_) => "aggregator",
        Command::Validate(_) => "validate",
        Command::Demo(_) => "demo",
        Command::DeadLetters(_) => "dead-letters",
        Command::Metrics(_) => "metrics",
        Command::Targets(_) => "targets",
        Command::Checkpoints(_) => "checkpoints",
        Command::Openapi(_) => "openapi",
    };
    // The root span of the run: there is always at least one span to export.
    let span = tracing::info_span!(telemetry::ROOT_SPAN, command);
    let code = run(cli.command, span);
    // Flush buffered spans and logs (bounded in time), after the runtime and its tasks are gone.
    telemetry.shutdown();
    code
}

fn run(command: Command, span: tracing::Span) -> ExitCode {
    if let Command::Validate(args) = command {
        return span.in_scope(|| cmd::validate::run(args));
    }
    if let Command::Metrics(args) = &command {
        return span.in_scope(|| cmd::metrics::run(args));
    }
    if let Command::Openapi(args) = &command {
        return span.in_scope(|| cmd::openapi::run(args));
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
    let code = runtime.block_on(
        async move {
            let shutdown = shutdown::on_signal();
            match command {
                Command::Tail(args) => cmd::tail::run(args, shutdown).await,
                Command::Validate(args) => cmd::validate::run(args),
                Command::Worker(args) => cmd::worker::run(args, shutdown).await,
                Command::Aggregator(args) => cmd::aggregator::run(args, shutdown).await,
                Command::Demo(args) => cmd::demo::run(args, shutdown).await,
                Command::DeadLetters(args) => cmd::dead_letters::run(args).await,
                Command::Metrics(args) => cmd::metrics::run(&args),
                Command::Openapi(args) => cmd::openapi::run(&args),
                Command::Targets(args) => cmd::admin::targets(args).await,
                Command::Checkpoints(args) => cmd::admin::checkpoints(args).await,
                Command::Sim(args) => match cmd::sim::run(args, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("sluice sim: {error:#}");
                        ExitCode::FAILURE
                    }
                },
            }
        }
        .instrument(span),
    );
    drop(runtime);
    code
}

/// Installs the stderr log (text or JSON) and, when an OTLP endpoint is configured, the
/// OpenTelemetry export of spans and events; the returned handle must be shut down at exit.
fn init_logging(
    format: LogFormat,
    filter: &str,
    otlp_endpoint: Option<&str>,
) -> telemetry::Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let telemetry = telemetry::Telemetry::start(&telemetry::Config::from_env(otlp_endpoint));
    // Colours only for a person at a terminal; files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // The root span is for export only: stderr lines stay as they were, without its context.
    let on_stderr = tracing_subscriber::filter::filter_fn(telemetry::not_root_span);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(stderr.with_filter(on_stderr))
            .with(telemetry.layer())
            .init(),
        LogFormat::Json => registry
            .with(stderr.json().with_filter(on_stderr))
            .with(telemetry.layer())
            .init(),
    }
    telemetry.report();
    telemetry
}
