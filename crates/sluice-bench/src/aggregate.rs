//! `sluice-bench aggregate`: the real `sluice aggregator` process merging a pre-loaded events
//! topic onto a REST base state: deltas merged per second and per CPU-second (`replace` and
//! `merge_patch`), entity query latency while it merges, and resident memory per entity.
//!
//! The broker is a real Apache Kafka (`--kafka real`, the default: one KRaft node started here
//! by `scripts/kafka`, a process of its own) or one named with `--kafka`. Not librdkafka's mock
//! cluster: it keeps only the last 5 MiB of a partition (about 20,000 of these deltas), so a
//! pre-loaded topic loses its start. The aggregator's own cost is its CPU per delta; the
//! consumer thread's CPU gives the rate it would reach with a broker that never makes it wait
//! (see "ceiling" below).
//!
//! One case = one aggregator process for one strategy and one entity count:
//! 1. Fresh topics (events, state), a fresh consumer group, a generated `aggregator.yaml` +
//!    `worker.yaml` + target file (validated with `sluice validate`). The base state (`version`
//!    0, every entity `E…` present) is served by this process over HTTP.
//! 2. Start `sluice aggregator` on the empty events topic and wait for `/readyz` (group joined,
//!    base state loaded, synced) and `/v1/targets` showing every entity: start-up, the group
//!    join and the base fetch are outside every measurement.
//! 3. Each delta phase: SIGSTOP the aggregator, produce N deltas (versions continuing from the
//!    last phase) exactly as `sluice worker` builds its records (`sluice_publish::build_record`:
//!    key = target id, value = the JSON data, `sse.id`, `sse.event`, `sluice.target`,
//!    `sluice.received_at`, `sluice.connection`, `sluice.seq`, and `sluice.resume` on the very
//!    first record) and wait until Kafka acknowledged each one, then SIGCONT it: the clock and
//!    the CPU count start, and the aggregator has a topic holding N unread deltas. The clock
//!    stops when its `/metrics` shows `sluice_aggregator_deltas_total{outcome="applied"}` grown
//!    by N (polled every `--poll`, so up to that much is added). Freezing is what hands it a
//!    pre-loaded topic in steady state: producing while it runs would measure the producer, and
//!    starting it on a pre-loaded topic would buffer deltas while the base state is fetched.
//! 4. Phases: "merge" (nothing else runs); then, for the first strategy when `--query-clients` is
//!    not 0, "queries only" (keep-alive HTTP/1.1 clients GET `/v1/targets/{t}/entities/{random
//!    key}` for `--idle-queries`, no deltas) and "merge + queries" (the same clients while it
//!    merges another N deltas). Each query's response time is recorded.
//! 5. RSS (`VmRSS`) 1 s after ready (the base state, before the first snapshot round) and
//!    `--settle` after the "merge" phase (with snapshot rounds and Kafka buffers).
//!
//! 6. With `--pagers N`, the `--big-entities` case also pages through its whole state (`pages`:
//!    "pages only", "merge + pages", "merge after pages"); with `--delivery-format`, one more
//!    `replace` case on `--big-entities` delivers it back to back while it merges
//!    (`deliveries`: "merge + deliveries").
//!
//! Memory per entity = (RSS(big) - RSS(small)) / (big - small) entities, both `replace` cases
//! with the same number of deltas, so Kafka client buffers cancel out. Ceiling = applied / the
//! consumer thread's CPU-seconds: merging is that one thread, so it bounds the wall rate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use sluice_config::{RecordKey, TargetId};
use sluice_publish::{RecordMeta, build_record};
use sluice_sim::KeyFormat;
use sluice_sse::{Event, Text};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;
use tokio::time::Instant;

use crate::child::ChildProc;
use crate::impls::{validate, yaml_string};
use crate::kafka::{Kafka, Watermarks, base_config};
use crate::latency::Latencies;
use crate::procfs::{self, ProcSample};
use crate::report::{Table, count, load_average, machine_note, num};
use crate::{command_line, parse_duration};

mod deliveries;
mod http1;
mod pages;

/// The target id of every case.
const TARGET: &str = "bench";
/// The name of the aggregator's consumer thread as `/proc` shows it (15 bytes of
/// `sluice-aggregator`).
const CONSUMER_THREAD: &str = "sluice-aggregat";

/// Arguments of `sluice-bench aggregate`.
#[derive(Debug, clap::Args)]
pub struct AggregateArgs {
    /// Deltas per phase.
    #[arg(long, default_value_t = 2_000_000)]
    pub deltas: u64,
    /// Entities in the base state of the throughput and latency cases.
    #[arg(long, default_value_t = 10_000)]
    pub entities: usize,
    /// Entities of the extra `replace` case for memory per entity (0: skip it).
    #[arg(long, default_value_t = 100_000)]
    pub big_entities: usize,
    /// Strategies, in order: replace, merge_patch.
    #[arg(long, default_value = "replace,merge_patch")]
    pub strategies: String,
    /// Concurrent keep-alive query clients in the "merge + queries" phase (0: no such phase).
    #[arg(long, default_value_t = 2)]
    pub query_clients: usize,
    /// Queries per second of all clients together (0: each client back to back).
    #[arg(long, default_value_t = 2000.0)]
    pub query_rate: f64,
    /// Length of the "queries only" phase (the same clients, no deltas), before "merge +
    /// queries".
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub idle_queries: Duration,
    /// `real` (Apache Kafka, one KRaft node started here by `scripts/kafka`) or a bootstrap
    /// address. Not `mock`: librdkafka's mock cluster keeps only the last 5 MiB of each
    /// partition, about 20,000 deltas, so it cannot hold a pre-loaded topic.
    #[arg(long, default_value = "real")]
    pub kafka: String,
    /// Partitions of the events topic (the target's deltas are all in one of them).
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// `compression.type` of the pre-loading producer (the worker's default is none).
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// The aggregator's `snapshots.interval`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub snapshot_interval: Duration,
    /// Extra consumer property `key=value` for the aggregator's `kafka.properties` (repeatable).
    #[arg(long = "consumer-property")]
    pub consumer_properties: Vec<String>,
    /// Wait this long after the "merge" phase before reading RSS (past jemalloc's 10 s decay,
    /// so pages freed by then are returned). RSS at ready is read 1 s after ready.
    #[arg(long, default_value = "12s", value_parser = parse_duration)]
    pub settle: Duration,
    /// How often the harness reads the aggregator's /metrics during a phase. Each read costs the
    /// aggregator a scrape (about 0.25 ms of CPU): at 20 ms that was 4% of its CPU, a load no
    /// Prometheus puts on it, so the default is 100 ms (up to 100 ms added to a phase's wall time).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub poll: Duration,
    /// Give up on a phase after this long (it is reported as incomplete).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Criterion's output directory, for the pure merge numbers of `cargo bench -p sluice-merge
    /// --bench merge` shown beside (default: `criterion` next to the build directory).
    #[arg(long)]
    pub criterion_dir: Option<PathBuf>,
    /// Keep the work directory (configs and the aggregator's logs) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// The aggregator's `--log` filter.
    #[arg(long, default_value = "info")]
    pub aggregator_log: String,
    /// The `sluice` binary (default: next to this executable).
    #[arg(long)]
    pub sluice_bin: Option<PathBuf>,
    /// Paging clients of the `--big-entities` case (0: no paging phases): each walks the whole
    /// state a page at a time, over and over, in "pages only" and "merge + pages", followed by
    /// a second merge phase without them ("merge after pages").
    #[arg(long, default_value_t = 0)]
    pub pagers: usize,
    /// Entities per page of the paging clients (`limit=`).
    #[arg(long, default_value_t = 100)]
    pub page_limit: u64,
    /// Pages per second of all paging clients together (0: each back to back).
    #[arg(long, default_value_t = 0.0)]
    pub page_rate: f64,
    /// Length of the "pages only" phase (the paging clients, no deltas).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub idle_pages: Duration,
    /// `parquet`, `csv` or `jsonl`: one more `replace` case on `--big-entities` with a
    /// `deliveries:` entry of this format, delivering while it merges ("merge + deliveries");
    /// `none`: no such case.
    #[arg(long, default_value = "none")]
    pub delivery_format: String,
    /// `every` of that delivery entry (a round that overruns delays the next: a short one means
    /// back to back deliveries).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub delivery_every: Duration,
}

/// What one phase measured.
struct Phase {
    name: &'static str,
    applied: u64,
    /// Other outcomes counted during the phase (stale, duplicate, malformed, buffered, ...).
    others: BTreeMap<String, u64>,
    completed: bool,
    wall: Duration,
    cpu: Duration,
    /// CPU per thread name over the phase, busiest first.
    threads: Vec<(String, Duration)>,
    broker_cpu: Option<Duration>,
    harness_cpu: Option<Duration>,
    queries: Option<QueryStats>,
    pages: Option<pages::PageStats>,
    /// The wall clock at the start (SIGCONT) and end of the measured window.
    started_at: SystemTime,
    ended_at: SystemTime,
}

impl Phase {
    fn deltas_per_second(&self) -> f64 {
        self.applied as f64 / self.wall.as_secs_f64()
    }

    fn deltas_per_cpu_second(&self) -> Option<f64> {
        (!self.cpu.is_zero()).then(|| self.applied as f64 / self.cpu.as_secs_f64())
    }

    /// Deltas per second of the consumer thread's own CPU time: the rate if the broker always
    /// had the next deltas ready and that one thread had a core to itself.
    fn consumer_thread_ceiling(&self) -> Option<f64> {
        self.consumer_thread_cpu()
            .filter(|cpu| !cpu.is_zero())
            .map(|cpu| self.applied as f64 / cpu.as_secs_f64())
    }

    fn consumer_thread_cpu(&self) -> Option<Duration> {
        self.threads
            .iter()
            .find(|(name, _)| name == CONSUMER_THREAD)
            .map(|(_, cpu)| *cpu)
    }
}

/// Query clients' results.
#[derive(Default)]
struct QueryStats {
    latencies: Latencies,
    errors: u64,
}

/// One aggregator process.
struct Case {
    strategy: String,
    entities: usize,
    ready_after: Duration,
    at_ready: ProcSample,
    settled: Option<ProcSample>,
    phases: Vec<Phase>,
    deliveries: Option<deliveries::DeliveryStats>,
}

/// What one case runs.
struct CasePlan {
    strategy: String,
    entities: usize,
    /// The "queries only" and "merge + queries" phases.
    queries: bool,
    /// The paging phases.
    pagers: Option<pages::PagePlan>,
    /// A `deliveries:` entry of this format (the case's only phase is "merge + deliveries").
    delivery: Option<String>,
}

/// Runs the aggregator benchmark and prints the report.
pub async fn run(args: AggregateArgs) -> anyhow::Result<()> {
    if args.deltas == 0 {
        bail!("--deltas must be at least 1");
    }
    if args.entities == 0 || (args.big_entities != 0 && args.big_entities <= args.entities) {
        bail!("--entities must be at least 1 and --big-entities 0 or above it");
    }
    if !(args.query_rate.is_finite() && args.query_rate >= 0.0) {
        bail!("--query-rate must be 0 or a positive number");
    }
    if !(args.page_rate.is_finite() && args.page_rate >= 0.0) {
        bail!("--page-rate must be 0 or a positive number");
    }
    if args.page_limit == 0 || args.page_limit > 1000 {
        bail!("--page-limit must be between 1 and 1000 (the aggregator's bounds)");
    }
    let delivery_format = deliveries::parse_format(&args.delivery_format)?;
    if (args.pagers > 0 || delivery_format.is_some()) && args.big_entities == 0 {
        bail!("--pagers and --delivery-format run on the --big-entities case: give it a size");
    }
    if args.kafka == "mock" {
        bail!(
            "--kafka mock cannot hold a pre-loaded topic: librdkafka's mock cluster keeps only the \
             last 5 MiB of each partition (about 20,000 deltas) and the aggregator would find its \
             start offset gone; use real (the default) or a broker's address"
        );
    }
    let strategies = parse_strategies(&args.strategies)?;
    let sluice_bin = crate::sluice_bin(args.sluice_bin.as_ref())?;
    let command = command_line();
    let machine_before = machine_note();
    let ticks = procfs::clock_ticks_per_second();
    let mut kafka = Kafka::start(&args.kafka).await?;
    kafka.warm_up().await?;
    let base = BaseServer::start().await?;
    let work = tempfile::Builder::new()
        .prefix("sluice-bench-aggregate")
        .tempdir()
        .context("cannot create a temp dir")?;

    let page_plan = pages::PagePlan {
        clients: args.pagers,
        limit: args.page_limit,
        rate: args.page_rate,
    };
    let mut plan: Vec<CasePlan> = strategies
        .iter()
        .enumerate()
        .map(|(i, s)| CasePlan {
            strategy: s.clone(),
            entities: args.entities,
            queries: i == 0 && args.query_clients > 0,
            pagers: None,
            delivery: None,
        })
        .collect();
    if args.big_entities > 0 {
        plan.push(CasePlan {
            strategy: "replace".to_owned(),
            entities: args.big_entities,
            queries: false,
            pagers: (args.pagers > 0).then_some(page_plan),
            delivery: None,
        });
    }
    if let Some(format) = &delivery_format {
        plan.push(CasePlan {
            strategy: "replace".to_owned(),
            entities: args.big_entities,
            queries: false,
            pagers: None,
            delivery: Some(format.clone()),
        });
    }
    let mut cases = Vec::new();
    for (n, case_plan) in plan.iter().enumerate() {
        let (strategy, entities) = (&case_plan.strategy, case_plan.entities);
        eprintln!("[aggregate] {strategy}, {entities} entities ...");
        let dir = work.path().join(format!("{n}-{strategy}-{entities}"));
        let case = run_case(
            case_plan,
            &args,
            &mut kafka,
            &base,
            &sluice_bin,
            &dir,
            ticks,
        )
        .await
        .with_context(|| format!("aggregate case {strategy} with {entities} entities"))?;
        cases.push(case);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    base.stop();
    if args.keep {
        let kept = work.keep();
        eprintln!("[aggregate] work directory kept: {}", kept.display());
    }
    let criterion = criterion_dir(args.criterion_dir.as_ref())
        .map(|dir| read_criterion(&dir, &strategies))
        .unwrap_or_default();
    print_report(&args, &kafka, &cases, &criterion, &command, &machine_before);
    let extra = [
        pages::report(&cases, &page_plan),
        delivery_format
            .as_deref()
            .and_then(|f| deliveries::report(&cases, f, args.delivery_every)),
    ];
    for (text, markdown) in extra.into_iter().flatten() {
        println!();
        print!("{text}");
        println!();
        println!("markdown:");
        println!();
        print!("{markdown}");
    }
    Ok(())
}

fn parse_strategies(list: &str) -> anyhow::Result<Vec<String>> {
    let mut strategies = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "replace" | "merge_patch" => {
                if !strategies.iter().any(|s| s == name) {
                    strategies.push(name.to_owned());
                }
            }
            other => bail!("unknown strategy {other:?} (replace, merge_patch)"),
        }
    }
    if strategies.is_empty() {
        bail!("no strategy named");
    }
    Ok(strategies)
}

#[allow(clippy::too_many_arguments)]
async fn run_case(
    plan: &CasePlan,
    args: &AggregateArgs,
    kafka: &mut Kafka,
    base: &BaseServer,
    sluice_bin: &Path,
    dir: &Path,
    ticks: u64,
) -> anyhow::Result<Case> {
    let (strategy, entities, queries) = (plan.strategy.as_str(), plan.entities, plan.queries);
    let delivery_yaml = plan
        .delivery
        .as_deref()
        .map(|format| deliveries::yaml(TARGET, format, args.delivery_every))
        .unwrap_or_default();
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let topic = format!("bench-aggregate-{strategy}-{entities}-{stamp}");
    let state = format!("{topic}-state");
    kafka.create_topic(&topic, args.partitions, false).await?;
    kafka.create_topic(&state, 1, true).await?;
    let watermarks = Watermarks::new(kafka.bootstrap(), &topic, args.partitions)?;
    let listen = format!("127.0.0.1:{}", crate::free_port()?);
    let config = write_config(
        &dir.join("config"),
        &ConfigSpec {
            brokers: kafka.bootstrap(),
            topic: &topic,
            state: &state,
            group: &format!("{topic}-group"),
            listen: &listen,
            base_url: &base.url(entities),
            strategy,
            snapshot_interval: args.snapshot_interval,
            properties: &args.consumer_properties,
            deliveries: &delivery_yaml,
        },
    )?;
    validate(sluice_bin, &config).await?;
    let mut command = Command::new(sluice_bin);
    command
        .arg("--log")
        .arg(&args.aggregator_log)
        .arg("aggregator")
        .arg("--config")
        .arg(&config);
    let mut aggregator = ChildProc::spawn("sluice aggregator", command, &dir.join("output.log"))?;
    let http = reqwest012::Client::builder()
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    let api = format!("http://{listen}");

    let started = Instant::now();
    loop {
        aggregator.check_alive()?;
        let ready = http
            .get(format!("{api}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!(
                "the aggregator was not ready within 180 s:\n{}",
                aggregator.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_after = started.elapsed();
    let listing: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("{api}/v1/targets"))
            .send()
            .await?
            .text()
            .await?,
    )
    .context("cannot read /v1/targets")?;
    let loaded = listing
        .pointer("/targets/0/entities")
        .and_then(serde_json::Value::as_u64);
    if loaded != Some(entities as u64) {
        bail!("the aggregator is ready with {loaded:?} entities, not {entities}: {listing}");
    }
    // Before the first snapshot round (`--snapshot-interval` after the assignment), whose
    // copy of the state the allocator would still hold.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_ready = procfs::sample(aggregator.pid)?;
    eprintln!(
        "[aggregate] ready after {:.1} s (group join + base fetch of {entities} entities), RSS {:.1} MiB",
        ready_after.as_secs_f64(),
        at_ready.rss_kib as f64 / 1024.0
    );

    let ctx = PhaseCtx {
        args,
        kafka,
        watermarks: &watermarks,
        topic: &topic,
        http: &http,
        api: &api,
        listen: &listen,
        entities,
        ticks,
    };
    let mut phases = Vec::new();
    let first = if plan.delivery.is_some() {
        deliveries::MERGE_DELIVERIES
    } else {
        "merge"
    };
    let merge = run_phase(&ctx, &mut aggregator, first, Feed::Deltas(1), None, None).await?;
    let merged = merge.completed;
    phases.push(merge);
    let mut next_seq = args.deltas + 1;
    let mut delivered = None;
    if plan.delivery.is_some() {
        let metrics = http
            .get(format!("{api}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        delivered = Some(deliveries::collect(
            &dir.join("config"),
            &phases[0],
            &metrics,
        )?);
    }
    let mut settled = None;
    if merged && plan.delivery.is_none() {
        tokio::time::sleep(args.settle).await;
        aggregator.check_alive()?;
        settled = Some(procfs::sample(aggregator.pid)?);
    }
    if queries && merged {
        let clients = QueryPlan {
            clients: args.query_clients,
            rate: args.query_rate,
        };
        let idle = Feed::Idle(args.idle_queries);
        phases.push(
            run_phase(
                &ctx,
                &mut aggregator,
                "queries only",
                idle,
                Some(clients),
                None,
            )
            .await?,
        );
        let more = Feed::Deltas(next_seq);
        next_seq += args.deltas;
        phases.push(
            run_phase(
                &ctx,
                &mut aggregator,
                "merge + queries",
                more,
                Some(clients),
                None,
            )
            .await?,
        );
    }
    if let Some(pagers) = plan.pagers.filter(|_| merged) {
        let idle = Feed::Idle(args.idle_pages);
        let load = Some(pagers);
        phases.push(run_phase(&ctx, &mut aggregator, pages::PAGES_ONLY, idle, None, load).await?);
        let more = Feed::Deltas(next_seq);
        next_seq += args.deltas;
        phases.push(run_phase(&ctx, &mut aggregator, pages::MERGE_PAGES, more, None, load).await?);
        let after = Feed::Deltas(next_seq);
        phases.push(run_phase(&ctx, &mut aggregator, pages::MERGE_AFTER, after, None, None).await?);
    }
    aggregator.check_alive()?;
    aggregator.stop(Duration::from_secs(60)).await;
    Ok(Case {
        strategy: strategy.to_owned(),
        entities,
        ready_after,
        at_ready,
        settled,
        phases,
        deliveries: delivered,
    })
}

/// What every phase of a case shares.
struct PhaseCtx<'a> {
    args: &'a AggregateArgs,
    kafka: &'a Kafka,
    watermarks: &'a Watermarks,
    topic: &'a str,
    http: &'a reqwest012::Client,
    api: &'a str,
    listen: &'a str,
    entities: usize,
    ticks: u64,
}

/// The query load of a phase.
#[derive(Debug, Clone, Copy)]
struct QueryPlan {
    clients: usize,
    rate: f64,
}

/// Freezes the aggregator (SIGSTOP), produces deltas `first_seq..first_seq + n` and waits for
/// Kafka's acknowledgements. The aggregator stays frozen (the caller resumes it) unless this
/// fails.
async fn preload_frozen(
    ctx: &PhaseCtx<'_>,
    aggregator: &mut ChildProc,
    name: &str,
    first_seq: u64,
    n: u64,
) -> anyhow::Result<()> {
    // The topic holds this target's deltas only.
    let expected_watermark = first_seq - 1 + n;
    aggregator.signal("STOP").await?;
    let preload_start = Instant::now();
    let produce = {
        let bootstrap = ctx.kafka.bootstrap().to_owned();
        let topic = ctx.topic.to_owned();
        let compression = ctx.args.compression.clone();
        let entities = ctx.entities;
        tokio::task::spawn_blocking(move || {
            preload(&bootstrap, &topic, &compression, entities, first_seq, n)
        })
    };
    let produced = produce.await?;
    if let Err(error) = produced {
        let _ = aggregator.signal("CONT").await;
        return Err(error.context("pre-loading the events topic failed"));
    }
    // A shortfall here is only shown (a broker given with --kafka may count differently); the
    // delivery reports (checked by `preload`) and the applied count are what count.
    let in_topic = ctx.watermarks.sum_async().await?;
    if in_topic != expected_watermark {
        tracing::info!(
            in_topic,
            expected_watermark,
            "the broker's high watermark differs from the records acknowledged"
        );
    }
    eprintln!(
        "[aggregate] {name}: {} deltas pre-loaded in {:.1} s; resuming the aggregator",
        count(n as f64),
        preload_start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What a phase feeds the aggregator.
#[derive(Debug, Clone, Copy)]
enum Feed {
    /// `--deltas` deltas from this version on, pre-loaded while it is frozen.
    Deltas(u64),
    /// No deltas: the queries alone, for this long.
    Idle(Duration),
}

async fn run_phase(
    ctx: &PhaseCtx<'_>,
    aggregator: &mut ChildProc,
    name: &'static str,
    feed: Feed,
    queries: Option<QueryPlan>,
    pagers: Option<pages::PagePlan>,
) -> anyhow::Result<Phase> {
    let n = match feed {
        Feed::Deltas(_) => ctx.args.deltas,
        Feed::Idle(_) => 0,
    };
    let before_counts = delta_counts(ctx.http, ctx.api).await?;
    if let Feed::Deltas(first_seq) = feed {
        preload_frozen(ctx, aggregator, name, first_seq, n).await?;
    }

    let broker_before = ctx.kafka.pid().and_then(|pid| procfs::sample(pid).ok());
    let harness_before = procfs::sample(std::process::id()).ok();
    let threads_before = procfs::thread_cpu_ticks(aggregator.pid);
    let before = procfs::sample(aggregator.pid)?;
    if n > 0 {
        aggregator.signal("CONT").await?;
    }
    let t0 = Instant::now();
    let started_at = SystemTime::now();

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    if let Some(plan) = queries {
        let per_client = (plan.rate > 0.0).then(|| plan.rate / plan.clients as f64);
        for c in 0..plan.clients {
            let client = QueryClient {
                addr: ctx.listen.to_owned(),
                entities: ctx.entities,
                rate: per_client,
                seed: 0x5EED + c as u64,
            };
            clients.push(tokio::spawn(client.run(stop.clone())));
        }
    }
    let pagers = pagers.map(|plan| pages::spawn(&plan, ctx.listen, ctx.entities, &stop));

    let applied_before = before_counts.get("applied").copied().unwrap_or(0);
    let total_before: u64 = before_counts.values().sum();
    let mut counts;
    let completed = loop {
        if let Feed::Idle(length) = feed {
            tokio::time::sleep(length).await;
            counts = delta_counts(ctx.http, ctx.api).await?;
            break true;
        }
        tokio::time::sleep(ctx.args.poll).await;
        counts = delta_counts(ctx.http, ctx.api).await?;
        let applied = counts.get("applied").copied().unwrap_or(0) - applied_before;
        let total = counts.values().sum::<u64>() - total_before;
        if applied >= n {
            break true;
        }
        if total >= n {
            eprintln!(
                "[aggregate] {name}: every delta consumed but only {applied} applied: {counts:?}"
            );
            break false;
        }
        if t0.elapsed() > ctx.args.timeout {
            eprintln!(
                "[aggregate] {name}: timed out after {:?} at {applied} applied; the aggregator's \
                 log ends with:\n{}",
                ctx.args.timeout,
                aggregator.log_tail(30)
            );
            break false;
        }
        aggregator.check_alive()?;
    };
    let wall = t0.elapsed();
    let ended_at = SystemTime::now();
    let after = procfs::sample(aggregator.pid)?;
    let threads_after = procfs::thread_cpu_ticks(aggregator.pid);
    let broker_after = ctx.kafka.pid().and_then(|pid| procfs::sample(pid).ok());
    let harness_after = procfs::sample(std::process::id()).ok();
    stop.store(true, Ordering::Relaxed);
    let mut stats = queries.map(|_| QueryStats::default());
    for client in clients {
        let result = client.await?.context("query client failed")?;
        if let Some(stats) = stats.as_mut() {
            stats.latencies.add(&result.latencies);
            stats.errors += result.errors;
        }
    }
    let pages = match pagers {
        Some(clients) => Some(pages::collect(clients).await?),
        None => None,
    };

    let cpu = |a: u64, b: u64| procfs::ticks_to_duration(a.saturating_sub(b), ctx.ticks);
    let mut threads: Vec<(String, Duration)> = threads_after
        .iter()
        .map(|(name, a)| {
            let b = threads_before.get(name).copied().unwrap_or(0);
            (name.clone(), cpu(*a, b))
        })
        .filter(|(_, d)| !d.is_zero())
        .collect();
    threads.sort_by_key(|t| std::cmp::Reverse(t.1));
    let mut others = BTreeMap::new();
    for (outcome, value) in &counts {
        let grew = value - before_counts.get(outcome).copied().unwrap_or(0);
        if outcome != "applied" && grew > 0 {
            others.insert(outcome.clone(), grew);
        }
    }
    let phase = Phase {
        name,
        applied: counts.get("applied").copied().unwrap_or(0) - applied_before,
        others,
        completed,
        wall,
        cpu: cpu(after.cpu_ticks, before.cpu_ticks),
        threads,
        broker_cpu: broker_before
            .zip(broker_after)
            .map(|(b, a)| cpu(a.cpu_ticks, b.cpu_ticks)),
        harness_cpu: harness_before
            .zip(harness_after)
            .map(|(b, a)| cpu(a.cpu_ticks, b.cpu_ticks)),
        queries: stats,
        pages,
        started_at,
        ended_at,
    };
    eprintln!(
        "[aggregate] {name}: {} applied in {:.2} s, {} deltas/s, CPU {:.2} s ({} deltas per CPU-s)",
        count(phase.applied as f64),
        phase.wall.as_secs_f64(),
        count(phase.deltas_per_second()),
        phase.cpu.as_secs_f64(),
        phase.deltas_per_cpu_second().map_or("-".to_owned(), count)
    );
    Ok(phase)
}

/// `sluice_aggregator_deltas_total{target="bench"}` by outcome.
async fn delta_counts(
    http: &reqwest012::Client,
    api: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = http
        .get(format!("{api}/metrics"))
        .send()
        .await
        .and_then(reqwest012::Response::error_for_status)
        .context("cannot scrape the aggregator's /metrics")?
        .text()
        .await
        .context("cannot read the aggregator's /metrics")?;
    Ok(parse_delta_counts(&text, TARGET))
}

/// The `sluice_aggregator_deltas_total` samples of `target`, by `outcome` label.
fn parse_delta_counts(text: &str, target: &str) -> BTreeMap<String, u64> {
    let target_label = format!("target=\"{target}\"");
    text.lines()
        .filter_map(|line| {
            let labels = line.strip_prefix("sluice_aggregator_deltas_total{")?;
            let (labels, value) = labels.rsplit_once('}')?;
            if !labels.split(',').any(|l| l == target_label) {
                return None;
            }
            let outcome = labels
                .split(',')
                .find_map(|l| l.strip_prefix("outcome=\""))?
                .strip_suffix('"')?;
            let value: f64 = value.trim().parse().ok()?;
            Some((outcome.to_owned(), value as u64))
        })
        .collect()
}

/// Produces deltas `first..first + n` of target [`TARGET`] as the worker writes them, and waits
/// for every acknowledgement (blocking).
fn preload(
    bootstrap: &str,
    topic: &str,
    compression: &str,
    entities: usize,
    first: u64,
    n: u64,
) -> anyhow::Result<()> {
    // Large batches, under the broker's default 1 MB record batch limit. The records themselves
    // are the worker's.
    let producer: BaseProducer<Deliveries> = base_config(bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "200")
        .set("batch.size", "900000")
        .set("batch.num.messages", "100000")
        .set("message.max.bytes", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", compression)
        .create_with_context(Deliveries::default())
        .context("cannot create the pre-loading producer")?;
    let target: TargetId = TARGET
        .parse()
        .map_err(|e| anyhow::anyhow!("target id: {e}"))?;
    let keys = KeyFormat::new(entities);
    let mut data = String::new();
    for seq in first..first + n {
        data.clear();
        delta_json(&mut data, &keys, entities, seq);
        let event = Event {
            id: Text::copy_from_str(&seq.to_string()),
            event: Text::copy_from_str("price_update"),
            data: Text::copy_from_str(&data),
        };
        let meta = RecordMeta {
            target: &target,
            received_at: SystemTime::now(),
            connection: 1,
            seq: seq - 1,
            // The worker's first record of a connection: it resumed (non-empty id), so the
            // aggregator keeps its base state.
            resume: (seq == 1).then_some("0"),
            cloudevents: false,
        };
        let record = build_record(&event, &RecordKey::Target, &meta)?;
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_slice()),
            });
        }
        let mut kafka_record = BaseRecord::to(topic)
            .key(record.key.as_slice())
            .payload(&record.value[..])
            .headers(headers);
        loop {
            match producer.send(kafka_record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    kafka_record = back;
                    producer.poll(Duration::from_millis(5));
                }
                Err((error, _)) => bail!("producing delta {seq} failed: {error}"),
            }
        }
        if seq % 4096 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(600))
        .context("the pre-loaded deltas were not all acknowledged")?;
    let context = producer.context();
    let (acked, failed) = (
        context.acked.load(Ordering::Relaxed),
        context.failed.load(Ordering::Relaxed),
    );
    if failed > 0 || acked != n {
        bail!("{acked} of {n} deltas acknowledged, {failed} failed");
    }
    Ok(())
}

/// Counts the pre-loading producer's delivery reports.
#[derive(Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.acked
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// SplitMix64: a stateless, well-mixed hash of one word.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Entity index (1-based) `h` maps to among `entities`.
fn entity_of(h: u64, entities: usize) -> u32 {
    u32::try_from(h % entities as u64 + 1).unwrap_or(u32::MAX)
}

/// Delta `seq`: `{"key":"E00042","price":101.25,"qty":7,"version":seq}` for a pseudo-random
/// entity (the simulator's shape).
fn delta_json(out: &mut String, keys: &KeyFormat, entities: usize, seq: u64) {
    let h = mix(seq);
    let cents = 5_000 + (h >> 32) % 10_000;
    let qty = (h >> 16) % 50 + 1;
    let _ = write!(
        out,
        r#"{{"key":"{}","price":{}.{:02},"qty":{qty},"version":{seq}}}"#,
        keys.key(entity_of(h, entities)),
        cents / 100,
        cents % 100
    );
}

/// The base state: version 0, entities `E…1..=entities`, each `{"key","price","qty","version"}`.
fn base_json(entities: usize) -> String {
    let keys = KeyFormat::new(entities);
    let mut out = String::with_capacity(entities * 64 + 32);
    out.push_str(r#"{"version":0,"items":["#);
    for index in 1..=entities {
        if index > 1 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"key":"{}","price":100.0,"qty":1,"version":0}}"#,
            keys.key(u32::try_from(index).unwrap_or(u32::MAX))
        );
    }
    out.push_str("]}");
    out
}

/// The base-state server: `GET /snapshot/{entities}` answers [`base_json`].
struct BaseServer {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BaseServer {
    async fn start() -> anyhow::Result<BaseServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the base-state server")?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().route(
            "/snapshot/{entities}",
            axum::routing::get(
                |axum::extract::Path(entities): axum::extract::Path<usize>| async move {
                    let body = tokio::task::spawn_blocking(move || base_json(entities))
                        .await
                        .unwrap_or_default();
                    ([("content-type", "application/json")], body)
                },
            ),
        );
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "base-state server failed");
            }
        });
        Ok(BaseServer { addr, task })
    }

    fn url(&self, entities: usize) -> String {
        format!("http://{}/snapshot/{entities}", self.addr)
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// The generated configuration of one case.
struct ConfigSpec<'a> {
    brokers: &'a str,
    topic: &'a str,
    state: &'a str,
    group: &'a str,
    listen: &'a str,
    base_url: &'a str,
    strategy: &'a str,
    snapshot_interval: Duration,
    properties: &'a [String],
    /// A `deliveries:` section (empty: none).
    deliveries: &'a str,
}

/// Writes `aggregator.yaml`, the `worker.yaml` it names and `targets/bench.yaml` under `dir`;
/// returns the aggregator file.
fn write_config(dir: &Path, spec: &ConfigSpec<'_>) -> anyhow::Result<PathBuf> {
    let targets = dir.join("targets");
    std::fs::create_dir_all(&targets).context("cannot create the config dir")?;
    let mut brokers = String::new();
    for broker in spec.brokers.split(',') {
        writeln!(brokers, "    - {}", yaml_string(broker.trim()))?;
    }
    // The worker file only names the targets and their topic: no worker runs.
    let worker = format!(
        "# Generated by sluice-bench aggregate.\nkafka:\n  brokers:\n{brokers}\
         topics:\n  events: {topic}\n  checkpoints: {checkpoints}\n\
         http:\n  listen: \"127.0.0.1:9\"\ntargets_dir: targets\n",
        topic = yaml_string(spec.topic),
        checkpoints = yaml_string(&format!("{}-checkpoints", spec.topic)),
    );
    std::fs::write(dir.join("worker.yaml"), worker).context("cannot write worker.yaml")?;
    let target = format!(
        "id: {TARGET}\n\
         url: \"http://127.0.0.1:9/v1/stream\"\n\
         topic: {topic}\n\
         key: target\n\
         aggregate:\n  base:\n    url: {base}\n    items: /items\n    key: /key\n    \
         version: /version\n    timeout: 120s\n  \
         delta:\n    key: /key\n    version: /version\n  \
         strategy: {strategy}\n  delete_events: [delete]\n  reset_events: [reset]\n",
        topic = yaml_string(spec.topic),
        base = yaml_string(spec.base_url),
        strategy = spec.strategy,
    );
    std::fs::write(targets.join(format!("{TARGET}.yaml")), target)
        .context("cannot write the target file")?;
    let mut properties = String::new();
    for kv in spec.properties {
        let (key, value) = kv
            .split_once('=')
            .with_context(|| format!("consumer property {kv:?} is not key=value"))?;
        writeln!(
            properties,
            "    {}: {}",
            yaml_string(key),
            yaml_string(value)
        )?;
    }
    if properties.is_empty() {
        properties.push_str("    {}\n");
    }
    let aggregator = format!(
        "# Generated by sluice-bench aggregate.\nworker: worker.yaml\n\
         kafka:\n  brokers:\n{brokers}  client_id: sluice-bench-aggregator\n  group_id: {group}\n  \
         properties:\n{properties}\
         topics:\n  state: {state}\n\
         http:\n  listen: {listen}\n\
         snapshots:\n  interval: {interval}ms\n\
         shutdown:\n  grace: 30s\n{deliveries}",
        group = yaml_string(spec.group),
        state = yaml_string(spec.state),
        listen = yaml_string(spec.listen),
        interval = spec.snapshot_interval.as_millis(),
        deliveries = spec.deliveries,
    );
    let file = dir.join("aggregator.yaml");
    std::fs::write(&file, aggregator).context("cannot write aggregator.yaml")?;
    Ok(file)
}

/// One keep-alive HTTP/1.1 client of `/v1/targets/bench/entities/{key}`.
struct QueryClient {
    addr: String,
    entities: usize,
    /// Queries per second (paced from its start); `None`: back to back.
    rate: Option<f64>,
    seed: u64,
}

impl QueryClient {
    /// Queries until `stop`; the response time of each query (request written to body read).
    async fn run(self, stop: Arc<AtomicBool>) -> anyhow::Result<QueryStats> {
        let (mut read, mut write) = http1::connect(&self.addr, 8 * 1024).await?;
        let keys = KeyFormat::new(self.entities);
        let mut stats = QueryStats::default();
        let mut line = String::new();
        let mut body = Vec::new();
        let mut pacer = http1::Pacer::new(self.rate);
        while !stop.load(Ordering::Relaxed) {
            let sent = pacer.next().await;
            let key = keys.key(entity_of(mix(self.seed ^ (sent << 20)), self.entities));
            let request = format!(
                "GET /v1/targets/{TARGET}/entities/{key} HTTP/1.1\r\nHost: {}\r\n\r\n",
                self.addr
            );
            let at = Instant::now();
            write.write_all(request.as_bytes()).await?;
            let ok = http1::read_response(&mut read, &mut line, &mut body).await? == 200;
            stats
                .latencies
                .record(u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX));
            if !ok {
                stats.errors += 1;
            }
        }
        Ok(stats)
    }
}

/// Criterion's directory: `--criterion-dir`, else `criterion` beside the build profile
/// directory this executable is in (`target/release/..` = `target`).
fn criterion_dir(explicit: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.clone());
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("criterion"))
}

/// One criterion result of `sluice-merge`'s `merge` bench.
struct PureMerge {
    strategy: String,
    per_second: f64,
    elements: u64,
    age: Option<Duration>,
}

/// Reads `merge/<strategy>/new/{estimates,benchmark}.json` for each strategy.
fn read_criterion(dir: &Path, strategies: &[String]) -> Vec<PureMerge> {
    let read = |path: PathBuf| -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    };
    strategies
        .iter()
        .filter_map(|strategy| {
            let new = dir.join("merge").join(strategy).join("new");
            let estimates = read(new.join("estimates.json"))?;
            let benchmark = read(new.join("benchmark.json"))?;
            let mean_ns = estimates.pointer("/mean/point_estimate")?.as_f64()?;
            let elements = benchmark.pointer("/throughput/Elements")?.as_u64()?;
            let age = std::fs::metadata(new.join("estimates.json"))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            Some(PureMerge {
                strategy: strategy.clone(),
                per_second: elements as f64 / (mean_ns / 1e9),
                elements,
                age,
            })
        })
        .collect()
}

fn print_report(
    args: &AggregateArgs,
    kafka: &Kafka,
    cases: &[Case],
    criterion: &[PureMerge],
    command: &str,
    machine_before: &str,
) {
    let mut table = Table::new(&[
        "strategy",
        "entities",
        "phase",
        "deltas applied",
        "wall s",
        "deltas/s",
        "CPU s",
        "deltas / CPU-s",
        "consumer thread CPU %",
        "consumer thread ceiling deltas/s",
        "queries",
        "query p50 ms",
        "query p99 ms",
        "query max ms",
        "broker CPU s",
        "harness CPU s",
    ]);
    for case in cases {
        for p in &case.phases {
            let q = p.queries.as_ref();
            let mut applied = count(p.applied as f64);
            if !p.completed {
                applied.push_str(" (incomplete)");
            }
            if !p.others.is_empty() {
                let others: Vec<String> =
                    p.others.iter().map(|(k, v)| format!("{k} {v}")).collect();
                applied.push_str(&format!(" [{}]", others.join(", ")));
            }
            let merging = p.applied > 0;
            let dash = || "-".to_owned();
            table.row(vec![
                case.strategy.clone(),
                count(case.entities as f64),
                p.name.to_owned(),
                applied,
                num(Some(p.wall.as_secs_f64()), 2),
                if merging {
                    count(p.deltas_per_second())
                } else {
                    dash()
                },
                num(Some(p.cpu.as_secs_f64()), 2),
                if merging {
                    p.deltas_per_cpu_second().map_or_else(dash, count)
                } else {
                    dash()
                },
                num(
                    p.consumer_thread_cpu()
                        .map(|c| 100.0 * c.as_secs_f64() / p.wall.as_secs_f64())
                        .or(Some(0.0)),
                    0,
                ),
                if merging {
                    p.consumer_thread_ceiling().map_or_else(dash, count)
                } else {
                    dash()
                },
                q.map_or_else(dash, |q| {
                    let mut s = count(q.latencies.len() as f64);
                    if q.errors > 0 {
                        s.push_str(&format!(" ({} errors)", q.errors));
                    }
                    if !merging && q.latencies.len() > 0 {
                        s.push_str(&format!(
                            " ({:.0} µs CPU each)",
                            p.cpu.as_secs_f64() * 1e6 / q.latencies.len() as f64
                        ));
                    }
                    s
                }),
                num(q.and_then(|q| q.latencies.quantile_ms(0.5)), 3),
                num(q.and_then(|q| q.latencies.quantile_ms(0.99)), 3),
                num(q.and_then(|q| q.latencies.max_ms()), 3),
                num(p.broker_cpu.map(|d| d.as_secs_f64()), 2),
                num(p.harness_cpu.map(|d| d.as_secs_f64()), 2),
            ]);
        }
    }
    for pure in criterion {
        table.row(vec![
            pure.strategy.clone(),
            count(10_000.0),
            "pure merge (criterion)".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            count(pure.per_second),
            "-".to_owned(),
            count(pure.per_second),
            "100".to_owned(),
            count(pure.per_second),
        ]);
    }

    let mut memory = Table::new(&[
        "strategy",
        "entities",
        "ready after s",
        "RSS at ready MiB",
        "RSS after merge MiB",
        "peak RSS MiB",
    ]);
    for case in cases {
        memory.row(vec![
            case.strategy.clone(),
            count(case.entities as f64),
            num(Some(case.ready_after.as_secs_f64()), 1),
            num(Some(case.at_ready.rss_kib as f64 / 1024.0), 1),
            num(case.settled.map(|s| s.rss_kib as f64 / 1024.0), 1),
            num(case.settled.map(|s| s.hwm_kib as f64 / 1024.0), 1),
        ]);
    }
    let small = cases
        .iter()
        .find(|c| c.strategy == "replace" && c.entities == args.entities);
    let big = cases
        .iter()
        .find(|c| c.strategy == "replace" && c.entities == args.big_entities);
    let per_entity = small.zip(big).map(|(s, b)| {
        let span = (b.entities - s.entities) as f64;
        let ready = (b.at_ready.rss_kib as f64 - s.at_ready.rss_kib as f64) * 1024.0 / span;
        let merged = s
            .settled
            .zip(b.settled)
            .map(|(s, b)| (b.rss_kib as f64 - s.rss_kib as f64) * 1024.0 / span);
        (ready, merged)
    });

    let mut threads = Table::new(&["strategy", "phase", "CPU by thread (s, % of wall)"]);
    for case in cases {
        for p in &case.phases {
            let wall = p.wall.as_secs_f64();
            let list: Vec<String> = p
                .threads
                .iter()
                .take(6)
                .map(|(name, cpu)| {
                    format!(
                        "{name} {:.2} ({:.0}%)",
                        cpu.as_secs_f64(),
                        100.0 * cpu.as_secs_f64() / wall
                    )
                })
                .collect();
            threads.row(vec![
                format!("{} / {}", case.strategy, count(case.entities as f64)),
                p.name.to_owned(),
                list.join(", "),
            ]);
        }
    }

    println!();
    println!(
        "== aggregate: {} deltas per phase, Kafka: {}, {} partition(s), compression {}, \
         snapshots every {:?} ==",
        count(args.deltas as f64),
        kafka.label(),
        args.partitions,
        args.compression,
        args.snapshot_interval
    );
    println!("command: {command}");
    println!(
        "machine: {machine_before} (before); load average {} (after)",
        load_average()
    );
    for pure in criterion {
        println!(
            "pure merge {}: criterion's mean over batches of {} deltas (one thread, no Kafka, no \
             HTTP), written {} before this report",
            pure.strategy,
            count(pure.elements as f64),
            pure.age
                .map_or("?".to_owned(), |a| format!("{} min", a.as_secs() / 60))
        );
    }
    if args.query_clients > 0 {
        println!(
            "queries: {} keep-alive HTTP/1.1 clients, {}",
            args.query_clients,
            if args.query_rate > 0.0 {
                format!("{} queries/s together", count(args.query_rate))
            } else {
                "back to back".to_owned()
            }
        );
    }
    println!();
    print!("{}", table.text());
    println!();
    print!("{}", memory.text());
    if let Some((ready, merged)) = per_entity {
        println!(
            "memory per entity (replace, {} vs {} entities): {} bytes at ready, {} bytes after merge",
            count(args.big_entities as f64),
            count(args.entities as f64),
            num(Some(ready), 0),
            num(merged, 0)
        );
    }
    println!();
    print!("{}", threads.text());
    println!();
    println!("markdown:");
    println!();
    print!("{}", table.markdown());
    println!();
    print!("{}", memory.markdown());
    println!();
    print!("{}", threads.markdown());
    println!();
    println!(
        "deltas/s = N / (applied count in /metrics grown by N - SIGCONT of the aggregator, \
         frozen while N deltas were pre-loaded); CPU = the aggregator process's utime+stime in \
         that window (all threads: librdkafka's fetch, the consumer thread, HTTP); deltas / CPU-s \
         = applied / CPU; consumer thread CPU % = the `sluice-aggregator` thread's CPU / wall \
         (100% = the single merge thread saturated); queries = response time per request \
         (request written to body read) of keep-alive clients running in the harness during the \
         phase; pure merge = `Merger::offer` alone in one thread (criterion's mean), from \
         target/criterion; RSS after merge = VmRSS --settle after the merge phase; memory per \
         entity = RSS difference of the two replace cases / their entity difference."
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn deltas_have_the_simulator_shape_and_keys_of_the_base_state() {
        let keys = KeyFormat::new(10_000);
        let mut data = String::new();
        delta_json(&mut data, &keys, 10_000, 42);
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["version"], 42);
        let key = v["key"].as_str().unwrap();
        assert!(key.starts_with('E') && key.len() == 6, "{key}");
        assert!(v["price"].as_f64().unwrap() >= 50.0);
        assert!((1..=50).contains(&v["qty"].as_u64().unwrap()));
        let base: serde_json::Value = serde_json::from_str(&base_json(10_000)).unwrap();
        let items = base["items"].as_array().unwrap();
        assert_eq!(items.len(), 10_000);
        assert_eq!(base["version"], 0);
        assert!(items.iter().any(|i| i["key"] == key));
        assert_eq!(items[0]["key"], "E00001");
    }

    #[test]
    fn delta_counts_are_read_per_target_and_outcome() {
        let text = "# HELP sluice_aggregator_deltas_total Deltas.\n\
            sluice_aggregator_deltas_total{outcome=\"applied\",target=\"bench\"} 2000000\n\
            sluice_aggregator_deltas_total{outcome=\"stale\",target=\"bench\"} 3\n\
            sluice_aggregator_deltas_total{outcome=\"applied\",target=\"other\"} 9\n\
            sluice_aggregator_resnapshots_total{reason=\"gap\",target=\"bench\"} 1\n";
        let counts = parse_delta_counts(text, "bench");
        assert_eq!(counts.get("applied"), Some(&2_000_000));
        assert_eq!(counts.get("stale"), Some(&3));
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn strategies_parse_in_order() {
        assert_eq!(
            parse_strategies("merge_patch, replace,merge_patch").unwrap(),
            ["merge_patch", "replace"]
        );
        assert!(parse_strategies("json_patch").is_err());
        assert!(parse_strategies("").is_err());
    }

    #[test]
    fn generated_config_names_the_topic_strategy_and_base() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(
            dir.path(),
            &ConfigSpec {
                brokers: "127.0.0.1:1,127.0.0.1:2",
                topic: "events",
                state: "state",
                group: "group",
                listen: "127.0.0.1:3",
                base_url: "http://127.0.0.1:4/snapshot/10",
                strategy: "merge_patch",
                snapshot_interval: Duration::from_secs(10),
                properties: &["fetch.wait.max.ms=10".to_owned()],
                deliveries: "",
            },
        )
        .unwrap();
        let aggregator = std::fs::read_to_string(file).unwrap();
        assert!(
            aggregator.contains("\"fetch.wait.max.ms\": \"10\""),
            "{aggregator}"
        );
        assert!(aggregator.contains("interval: 10000ms"), "{aggregator}");
        let target = std::fs::read_to_string(dir.path().join("targets/bench.yaml")).unwrap();
        assert!(target.contains("strategy: merge_patch"), "{target}");
        assert!(target.contains("snapshot/10"), "{target}");
    }
}
