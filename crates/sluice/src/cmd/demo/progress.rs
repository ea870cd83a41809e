//! The demo's console: the banner of where everything is, and the progress line every second,
//! read from the worker's and the aggregator's `/metrics` over loopback.
//!
//! What it must NOT do: read any state but those two endpoints, or fail the demo when a scrape
//! fails (the line keeps its last values).

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use sluice_config::AggregatorConfig;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{PROGRESS_EVERY, SCRAPE_TIMEOUT};

/// Where each part serves, as base URLs (`http://IP:PORT`).
#[derive(Debug, Clone)]
pub(super) struct Urls {
    pub(super) sim: String,
    pub(super) worker: String,
    pub(super) aggregator: String,
}

pub(super) fn print_banner(urls: &Urls, bootstrap: &str, config: &AggregatorConfig) {
    let Urls {
        sim,
        worker,
        aggregator,
    } = urls;
    let enabled = config.worker.targets.iter().filter(|t| t.enabled).count();
    let mut text = format!(
        "sluice demo: Kafka, simulator, worker and aggregator in this process ({enabled} target{s})\n\
         \n\
         \x20 status page         {worker}/status.html\n\
         \x20 worker metrics      {worker}/metrics\n\
         \x20 aggregator page     {aggregator}/\n\
         \x20 aggregator metrics  {aggregator}/metrics\n\
         \x20 state API           {aggregator}/v1/targets\n",
        s = if enabled == 1 { "" } else { "s" },
    );
    for (target, _) in config.targets() {
        let id = target.id.as_str();
        text.push_str(&format!(
            "                      {aggregator}/v1/targets/{id}/state\n\
             \x20                     {aggregator}/v1/targets/{id}/stream   (SSE of merged changes)\n"
        ));
    }
    text.push_str(&format!(
        "  simulator           {sim}/v1/stream   {sim}/v1/snapshot\n\
         \x20 kafka (in memory)   {bootstrap}\n\
         \n\
         Ctrl-C stops everything.\n"
    ));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// One line on stdout (after ending a progress line rewritten in place).
pub(super) fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Every second until `stop`: events in, delivered, merged, reconnects. Rewritten in place
/// (`\r`) on a terminal, one line each time otherwise.
pub(super) async fn progress(urls: Urls, stop: CancellationToken) {
    let tty = std::io::stdout().is_terminal();
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(SCRAPE_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(%error, "no progress line: cannot build an http client");
            return;
        }
    };
    let started = Instant::now();
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut width: usize = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let scrape = tokio::select! {
            () = stop.cancelled() => break,
            scrape = Progress::scrape(&client, &urls) => scrape,
        };
        let line = scrape.line(started.elapsed());
        let mut stdout = std::io::stdout().lock();
        let written = if tty {
            // Pad over the previous line's tail when this one is shorter.
            let pad = width.saturating_sub(line.len());
            width = line.len();
            write!(stdout, "\r{line}{}", " ".repeat(pad))
        } else {
            writeln!(stdout, "{line}")
        };
        if written.and_then(|()| stdout.flush()).is_err() {
            // Nobody reads stdout any more: the demo goes on without a progress line.
            return;
        }
    }
    if tty && width > 0 {
        say("");
    }
}

/// One progress sample; `None` where an endpoint did not answer.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) events_in: Option<u64>,
    pub(super) delivered: Option<u64>,
    pub(super) reconnects: Option<u64>,
    pub(super) merged: Option<u64>,
    pub(super) worker_ready: bool,
    pub(super) aggregator_ready: bool,
}

impl Progress {
    pub(super) async fn scrape(client: &reqwest::Client, urls: &Urls) -> Progress {
        let (worker, aggregator, worker_ready, aggregator_ready) = tokio::join!(
            get(client, format!("{}/metrics", urls.worker)),
            get(client, format!("{}/metrics", urls.aggregator)),
            get(client, format!("{}/readyz", urls.worker)),
            get(client, format!("{}/readyz", urls.aggregator)),
        );
        Progress {
            events_in: worker
                .as_deref()
                .map(|m| sum_series(m, "sluice_all_events_received_total", None)),
            delivered: worker
                .as_deref()
                .map(|m| sum_series(m, "sluice_all_events_delivered_total", None)),
            reconnects: worker
                .as_deref()
                .map(|m| sum_series(m, "sluice_all_reconnects_total", None)),
            merged: aggregator.as_deref().map(|m| {
                sum_series(
                    m,
                    "sluice_aggregator_all_deltas_total",
                    Some("outcome=\"applied\""),
                )
            }),
            worker_ready: worker_ready.is_some(),
            aggregator_ready: aggregator_ready.is_some(),
        }
    }

    pub(super) fn line(&self, elapsed: Duration) -> String {
        let n = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let state = match (self.worker_ready, self.aggregator_ready) {
            (true, true) => "ready",
            (false, _) => "worker starting",
            (true, false) => "aggregator syncing",
        };
        format!(
            "[{:>5}s] events in {} | delivered {} | merged {} | reconnects {} | {state}",
            elapsed.as_secs(),
            n(self.events_in),
            n(self.delivered),
            n(self.merged),
            n(self.reconnects),
        )
    }
}

/// The body of a 2xx answer to GET `url`, `None` otherwise.
pub(super) async fn get(client: &reqwest::Client, url: String) -> Option<String> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// The sum of every sample of `name` in Prometheus text (only those with label `label`, written
/// `key="value"`, when given). Histogram sub-series (`name_bucket`, …) are not samples of `name`.
pub(super) fn sum_series(text: &str, name: &str, label: Option<&str>) -> u64 {
    let total: f64 = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            if label.is_some_and(|label| !labels.split(',').any(|l| l == label)) {
                return None;
            }
            value.trim().parse::<f64>().ok()
        })
        .filter(|v| v.is_finite() && *v >= 0.0)
        .sum();
    // Counters are whole numbers far below 2^53: the conversion is exact.
    total.round() as u64
}
