//! `sluice-bench scrape`: the cost of one `/metrics` scrape at fleet size in each
//! `metrics.per_target` mode: series, bytes and render time, for the worker and the aggregator,
//! rendered in this process by the same code their `/metrics` handlers call (no HTTP, no Kafka),
//! over synthetic targets with every family populated (the worst case of each mode).
//!
//! What it must NOT do: stand in for a density run (it measures only the rendering), or report
//! a mode it did not render.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_config::PerTarget;
use tokio::time::Instant;

use crate::command_line;
use crate::report::{Table, count, machine_note, num};

/// Arguments of `sluice-bench scrape`.
#[derive(Debug, clap::Args)]
pub struct ScrapeArgs {
    /// Targets in the worker and in the aggregator.
    #[arg(long, default_value_t = 10_000)]
    pub targets: usize,
    /// Scrapes rendered per mode and component (the first one is a warm-up, not counted).
    #[arg(long, default_value_t = 21)]
    pub rounds: usize,
}

/// One mode's measurement.
struct Measured {
    component: &'static str,
    mode: PerTarget,
    series: usize,
    bytes: usize,
    times: Vec<Duration>,
}

/// Renders each mode `rounds` times and prints the table (text, then markdown).
pub fn run(args: ScrapeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rounds >= 2,
        "--rounds must be at least 2 (one is a warm-up)"
    );
    let mut results = Vec::new();
    for mode in PerTarget::ALL {
        let worker = worker_metrics(args.targets, mode)?;
        results.push(measure("worker", mode, args.rounds, || worker.render(0)));
        let aggregator = aggregator_metrics(args.targets, mode)?;
        results.push(measure("aggregator", mode, args.rounds, || {
            let mut scrape = aggregator.scrape();
            for (i, id) in aggregator_ids(args.targets).iter().enumerate() {
                scrape.target(&sluice_aggregator::TargetGauges {
                    id,
                    state_age: 1.25 + i as f64,
                    entities: 200,
                    synced: i % 50 != 0,
                    buffered: 0,
                    version: Some(1_000_000 + i as i64),
                });
            }
            scrape.render()
        }));
    }
    let mut table = Table::new(&[
        "component",
        "metrics.per_target",
        "series",
        "series / target",
        "bytes",
        "render median ms",
        "render max ms",
    ]);
    for m in &results {
        let mut ms: Vec<f64> = m.times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let median = ms.get(ms.len() / 2).copied();
        table.row(vec![
            m.component.to_owned(),
            m.mode.as_str().to_owned(),
            count(m.series as f64),
            num(Some(m.series as f64 / args.targets.max(1) as f64), 1),
            count(m.bytes as f64),
            num(median, 1),
            num(ms.last().copied(), 1),
        ]);
    }
    println!("{}", table.text());
    println!(
        "`{}` ({} targets, {} rounds per mode; {})\n",
        command_line(),
        args.targets,
        args.rounds - 1,
        machine_note()
    );
    println!("{}", table.markdown());
    Ok(())
}

/// Renders `rounds` times: series (sample lines) and bytes of the last, times of all but the
/// first.
fn measure(
    component: &'static str,
    mode: PerTarget,
    rounds: usize,
    render: impl Fn() -> String,
) -> Measured {
    let mut times = Vec::with_capacity(rounds);
    let mut text = String::new();
    for round in 0..rounds {
        let start = Instant::now();
        text = render();
        let took = start.elapsed();
        if round > 0 {
            times.push(took);
        }
    }
    let series = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    Measured {
        component,
        mode,
        series,
        bytes: text.len(),
        times,
    }
}

/// A worker's metrics over `n` streaming targets, each with events, deliveries, reconnects of
/// three reasons, latency observations and a last byte and event.
fn worker_metrics(n: usize, mode: PerTarget) -> anyhow::Result<sluice_worker::Metrics> {
    use sluice_client::DisconnectReason;
    let origin = tokio::time::Instant::now();
    let registry = Arc::new(sluice_worker::Registry::default());
    let mut rows = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let id = format!("target-{i:05}")
            .parse()
            .context("a synthetic target id")?;
        let row = sluice_worker::TargetStatus::new(
            id,
            format!("http://upstream-{}.example:8080/v1/stream", i % 50),
            "sluice.events".to_owned(),
            origin,
        );
        row.events.inc_by(86_400 + i);
        row.bytes.inc_by(25_000_000 + i * 7);
        row.acked.inc_by(86_390 + i);
        row.checkpoints.inc_by(17_280);
        row.checkpoint_lag.set(3);
        row.generation
            .store(4 + i % 3, std::sync::atomic::Ordering::Relaxed);
        for reason in [
            DisconnectReason::Eof,
            DisconnectReason::SilentDrop,
            DisconnectReason::Reset,
        ] {
            row.reconnect(reason);
        }
        for k in 0..20 {
            row.latency.observe(0.0004 * f64::from(k + 1));
        }
        row.touch_byte(origin);
        row.touch_event(origin);
        row.set_state(sluice_worker::State::Streaming);
        rows.push(Arc::new(row));
    }
    registry.add(rows);
    sluice_worker::Metrics::new(registry, mode).context("the worker's metrics registry")
}

fn aggregator_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("target-{i:05}")).collect()
}

/// An aggregator's metrics over `n` targets, each with applied, stale and duplicate deltas, an
/// initial base fetch and one malformed delta.
fn aggregator_metrics(n: usize, mode: PerTarget) -> anyhow::Result<sluice_aggregator::Metrics> {
    use sluice_aggregator::DeltaOutcome;
    let metrics = sluice_aggregator::Metrics::new(mode).context("the aggregator's metrics")?;
    for id in aggregator_ids(n) {
        let counters = metrics.delta_counters(&id);
        for (outcome, times) in [
            (DeltaOutcome::Applied, 3),
            (DeltaOutcome::Stale, 2),
            (DeltaOutcome::Duplicate, 1),
        ] {
            for _ in 0..times {
                counters.inc(outcome);
            }
        }
        metrics.resnapshots.inc(&id, "initial");
        metrics.base_fetches.inc(&id, "ok");
        metrics.malformed.inc(&id, "not_json");
    }
    Ok(metrics)
}
