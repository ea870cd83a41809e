//! `sluice-bench status`: what one answer of the worker's console costs at fleet size: the
//! server-side table (`/status.json?…`: filter, sort, page, totals by state and reason) over
//! synthetic targets, its JSON, and the console's HTML page, rendered in this process by the
//! code the handlers call (no HTTP), beside the old answer (every row, as `/status.json` without
//! parameters still gives).
//!
//! What it must NOT do: stand in for a measurement through HTTP, or report a query it did not run.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use sluice_worker::query::{TableQuery, table};
use sluice_worker::{State, TargetStatus};
use tokio::time::Instant;

use crate::command_line;
use crate::report::{Table, count, machine_note, num};

/// Arguments of `sluice-bench status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Targets in the worker.
    #[arg(long, default_value_t = 10_000)]
    pub targets: usize,
    /// Answers per query (the first one is a warm-up, not counted).
    #[arg(long, default_value_t = 21)]
    pub rounds: usize,
}

/// Synthetic rows: one in 20 in backoff, one in 100 connecting, events and reconnects varied.
fn rows(n: usize) -> anyhow::Result<Vec<Arc<TargetStatus>>> {
    use sluice_client::DisconnectReason;
    let origin = Instant::now();
    let mut rows = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let row = TargetStatus::new(
            format!("target-{i:05}")
                .parse()
                .context("a synthetic target id")?,
            format!("http://upstream-{}.example:8080/v1/stream", i % 50),
            "sluice.events".to_owned(),
            origin,
        );
        row.events.inc_by((i * 7919) % 100_000);
        row.acked.inc_by((i * 7919) % 100_000);
        for _ in 0..(i % 4) {
            row.reconnect(DisconnectReason::ALL[(i % 3) as usize]);
        }
        row.touch_event(origin);
        row.set_last_event_id(&format!("{}", 86_400 + i));
        row.set_state(if i % 20 == 0 {
            State::Backoff
        } else if i % 100 == 1 {
            State::Connecting
        } else {
            State::Streaming
        });
        rows.push(Arc::new(row));
    }
    Ok(rows)
}

/// Runs each query `rounds` times and prints the table (text, then markdown).
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rounds >= 2,
        "--rounds must be at least 2 (one is a warm-up)"
    );
    let rows = rows(args.targets)?;
    let queries = [
        ("every row (no parameters, as before)", ""),
        ("console first page (100 by id)", "per_page=100"),
        ("state=backoff, 100 a page", "state=backoff&per_page=100"),
        ("q=0042, 100 a page", "q=0042&per_page=100"),
        (
            "sort=events desc, page 50 of 100",
            "sort=events&order=desc&page=50&per_page=100",
        ),
        (
            "sort=last_event, 1000 a page",
            "sort=last_event&per_page=1000",
        ),
    ];
    let mut out = Table::new(&[
        "query",
        "rows",
        "JSON bytes",
        "table median ms",
        "table + JSON median ms",
        "HTML median ms",
    ]);
    for (name, query) in queries {
        // The queries here need no percent-decoding.
        let params: HashMap<String, String> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let query = TableQuery::parse(&params).context("a benchmark query")?;
        let mut table_ms = Vec::new();
        let mut json_ms = Vec::new();
        let mut html_ms = Vec::new();
        let (mut page_rows, mut bytes) = (0, 0);
        for round in 0..args.rounds {
            let start = Instant::now();
            let answer = table(&rows, &query);
            let took = start.elapsed();
            let json = serde_json::to_vec(&answer).context("the table as JSON")?;
            let with_json = start.elapsed();
            let start = Instant::now();
            let mut html_query = query.clone();
            html_query.per_page = html_query.per_page.or(Some(100));
            let page = table(&rows, &html_query);
            let html = sluice_worker::console::render(&sluice_worker::console::Page {
                ready: true,
                table: &page,
                query: &html_query,
                history: &[],
                fleet: None,
                definition_problems: &[],
            });
            let html_took = start.elapsed();
            if round > 0 {
                table_ms.push(took.as_secs_f64() * 1e3);
                json_ms.push(with_json.as_secs_f64() * 1e3);
                html_ms.push(html_took.as_secs_f64() * 1e3);
            }
            page_rows = answer.targets.len();
            bytes = json.len();
            std::hint::black_box(html);
        }
        out.row(vec![
            name.to_owned(),
            count(page_rows as f64),
            count(bytes as f64),
            num(median(&mut table_ms), 2),
            num(median(&mut json_ms), 2),
            num(median(&mut html_ms), 2),
        ]);
    }
    println!("{}", out.text());
    println!(
        "`{}` ({} targets, {} rounds per query; {})\n",
        command_line(),
        args.targets,
        args.rounds - 1,
        machine_note()
    );
    println!("{}", out.markdown());
    Ok(())
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}
