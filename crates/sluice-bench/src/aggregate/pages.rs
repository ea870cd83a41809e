//! Paged entity reads for `sluice-bench aggregate` (issue 17, "Performance"): keep-alive
//! HTTP/1.1 clients that walk a target's whole state over and over, a page at a time:
//! `GET /v1/targets/bench/entities?limit=L`, then `?limit=L&cursor=<next>` with the `next` of
//! each answer until it is `null` (the last page), then again from the start. The cursor pins
//! the version of the walk's first page; a `410` (`version_expired`) means that version is no
//! longer kept: counted, and the walk starts again.
//!
//! Each page's response time is recorded (request written to body read, as the query clients
//! do). Each walk is checked: every page of it reads the same change sequence, keys only go up,
//! and a finished walk saw exactly the target's entities (the base state's keys; the harness's
//! deltas never add or delete one). A walk that breaks one of these is counted `inconsistent`.
//!
//! Phases (the `--big-entities` case, when `--pagers` is not 0): "pages only" (`--idle-pages`,
//! no deltas), "merge + pages" (N deltas merged while the pagers page) and "merge after pages"
//! (N more deltas, no pagers), beside the case's first "merge" phase: the merge rate with
//! pagers against the mean of the two phases without. It must not judge anything but pages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::http1::read_response;
use super::{Case, Phase, TARGET};
use crate::latency::Latencies;
use crate::report::{Table, count, num};

/// The phase with pagers and no deltas.
pub const PAGES_ONLY: &str = "pages only";
/// The phase with pagers while deltas are merged.
pub const MERGE_PAGES: &str = "merge + pages";
/// The merge phase after the pagers stopped (a second one without them).
pub const MERGE_AFTER: &str = "merge after pages";
/// The case's first merge phase (no pagers).
const MERGE: &str = "merge";

/// The issue's bound on the merge rate's drop while clients page.
const TARGET_DROP_PERCENT: f64 = 10.0;

/// The paging load of a phase.
#[derive(Debug, Clone, Copy)]
pub struct PagePlan {
    /// Concurrent paging clients.
    pub clients: usize,
    /// Entities per page.
    pub limit: u64,
    /// Pages per second of all clients together (0: each back to back).
    pub rate: f64,
}

/// What paging clients counted.
#[derive(Debug, Default)]
pub struct PageStats {
    /// Response time of each page answered 200.
    pub latencies: Latencies,
    /// Pages answered 200.
    pub pages: u64,
    /// Walks that reached the last page.
    pub walks: u64,
    /// `410` answers (the walk's version no longer kept): the walk started again.
    pub expired: u64,
    /// Other answers (neither 200 nor 410), or a page that is not a page: the walk started
    /// again.
    pub errors: u64,
    /// Walks whose pages changed version, went back in key order, or that did not see every
    /// entity exactly once.
    pub inconsistent: u64,
}

impl PageStats {
    fn add(&mut self, other: &PageStats) {
        self.latencies.add(&other.latencies);
        self.pages += other.pages;
        self.walks += other.walks;
        self.expired += other.expired;
        self.errors += other.errors;
        self.inconsistent += other.inconsistent;
    }
}

/// The parts of a page answer a walk follows and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageAnswer {
    /// The state's change sequence (the pinned version's, on a page read with a cursor).
    pub change_seq: u64,
    /// Entities on the page.
    pub entities: usize,
    /// The page's first and last keys.
    pub first_key: Option<String>,
    pub last_key: Option<String>,
    /// The cursor of the following page; `None` on the last page.
    pub next: Option<String>,
}

/// Reads a `200` answer of `GET /v1/targets/{t}/entities`:
/// `{"version", "change_seq", "entities": [{"key", "value"}…], "next": cursor | null, …}`.
pub fn parse_page(body: &[u8]) -> anyhow::Result<PageAnswer> {
    let page: Value = serde_json::from_slice(body).context("a page that is not JSON")?;
    let change_seq = page
        .get("change_seq")
        .and_then(Value::as_u64)
        .context("a page without change_seq")?;
    let entities = page
        .get("entities")
        .and_then(Value::as_array)
        .context("a page without an entities array")?;
    let key = |entry: Option<&Value>| -> anyhow::Result<Option<String>> {
        entry
            .map(|e| {
                e.get("key")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .context("a page entry without a key")
            })
            .transpose()
    };
    let next = match page.get("next") {
        None => bail!("a page without next"),
        Some(Value::Null) => None,
        Some(Value::String(cursor)) if !cursor.is_empty() => Some(cursor.clone()),
        Some(other) => bail!("a page whose next is {other}"),
    };
    Ok(PageAnswer {
        change_seq,
        entities: entities.len(),
        first_key: key(entities.first())?,
        last_key: key(entities.last())?,
        next,
    })
}

/// What one answer meant for the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More pages follow.
    More,
    /// The last page: the walk is over (consistent or not) and the next starts from the top.
    Done { consistent: bool },
}

/// Where a client is in its walk through the state: what to ask next, and what it saw so far.
#[derive(Debug)]
pub struct Walk {
    limit: u64,
    /// Entities a whole walk must see.
    expected: u64,
    cursor: Option<String>,
    change_seq: Option<u64>,
    last_key: Option<String>,
    seen: u64,
    consistent: bool,
}

impl Walk {
    /// A walk of `limit`-entity pages over a state of `expected` entities.
    pub fn new(limit: u64, expected: u64) -> Walk {
        Walk {
            limit,
            expected,
            cursor: None,
            change_seq: None,
            last_key: None,
            seen: 0,
            consistent: true,
        }
    }

    /// The request target of the next page.
    pub fn path(&self) -> String {
        match &self.cursor {
            None => format!("/v1/targets/{TARGET}/entities?limit={}", self.limit),
            Some(cursor) => format!(
                "/v1/targets/{TARGET}/entities?limit={}&cursor={cursor}",
                self.limit
            ),
        }
    }

    /// Follows a page: checks it against the walk so far and moves to its `next`.
    pub fn on_page(&mut self, page: PageAnswer) -> Step {
        if *self.change_seq.get_or_insert(page.change_seq) != page.change_seq {
            self.consistent = false;
        }
        if let (Some(last), Some(first)) = (&self.last_key, &page.first_key)
            && first <= last
        {
            self.consistent = false;
        }
        if page.first_key > page.last_key {
            self.consistent = false;
        }
        if page.last_key.is_some() {
            self.last_key = page.last_key;
        }
        self.seen += page.entities as u64;
        match page.next {
            Some(next) => {
                self.cursor = Some(next);
                Step::More
            }
            None => {
                let consistent = self.consistent && self.seen == self.expected;
                self.restart();
                Step::Done { consistent }
            }
        }
    }

    /// Starts again from the first page (after the last page, a 410 or an error).
    pub fn restart(&mut self) {
        *self = Walk::new(self.limit, self.expected);
    }
}

/// One keep-alive paging client.
struct PageClient {
    addr: String,
    limit: u64,
    entities: u64,
    /// Pages per second (paced from its start); `None`: back to back.
    rate: Option<f64>,
}

impl PageClient {
    /// Pages until `stop`.
    async fn run(self, stop: Arc<AtomicBool>) -> anyhow::Result<PageStats> {
        let (mut read, mut write) = super::http1::connect(&self.addr, 64 * 1024).await?;
        let mut stats = PageStats::default();
        let mut walk = Walk::new(self.limit, self.entities);
        let mut line = String::new();
        let mut body = Vec::new();
        let mut pacer = super::http1::Pacer::new(self.rate);
        while !stop.load(Ordering::Relaxed) {
            pacer.next().await;
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
                walk.path(),
                self.addr
            );
            let at = Instant::now();
            write.write_all(request.as_bytes()).await?;
            let status = read_response(&mut read, &mut line, &mut body).await?;
            let micros = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            match status {
                200 => match parse_page(&body) {
                    Ok(page) => {
                        stats.latencies.record(micros);
                        stats.pages += 1;
                        if let Step::Done { consistent } = walk.on_page(page) {
                            stats.walks += 1;
                            if !consistent {
                                stats.inconsistent += 1;
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "a page answer the harness cannot read");
                        stats.errors += 1;
                        walk.restart();
                    }
                },
                410 => {
                    stats.expired += 1;
                    walk.restart();
                }
                _ => {
                    stats.errors += 1;
                    walk.restart();
                }
            }
        }
        Ok(stats)
    }
}

/// Starts `plan.clients` paging clients of the aggregator at `addr` over `entities` entities.
pub fn spawn(
    plan: &PagePlan,
    addr: &str,
    entities: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<anyhow::Result<PageStats>>> {
    let per_client = (plan.rate > 0.0).then(|| plan.rate / plan.clients as f64);
    (0..plan.clients)
        .map(|_| {
            let client = PageClient {
                addr: addr.to_owned(),
                limit: plan.limit,
                entities: entities as u64,
                rate: per_client,
            };
            tokio::spawn(client.run(stop.clone()))
        })
        .collect()
}

/// Waits for the clients (stopped by the caller) and adds up what they counted.
pub async fn collect(
    clients: Vec<JoinHandle<anyhow::Result<PageStats>>>,
) -> anyhow::Result<PageStats> {
    let mut all = PageStats::default();
    for client in clients {
        let stats = client.await?.context("paging client failed")?;
        all.add(&stats);
    }
    Ok(all)
}

/// The drop of `with` against `without`, in percent (positive: slower with).
pub fn drop_percent(without: f64, with: f64) -> Option<f64> {
    (without > 0.0 && with.is_finite()).then(|| 100.0 * (without - with) / without)
}

/// The paged-read tables and the merge-rate comparison of every case that paged, as
/// (text, markdown); `None` when no case paged.
pub fn report(cases: &[Case], plan: &PagePlan) -> Option<(String, String)> {
    let mut pages = Table::new(&[
        "entities",
        "phase",
        "pages",
        "pages/s",
        "entities/s",
        "page p50 ms",
        "page p99 ms",
        "page max ms",
        "walks",
        "expired (410)",
        "errors",
        "inconsistent walks",
        "aggregator CPU s",
        "harness CPU s",
    ]);
    let mut rates = Table::new(&[
        "entities",
        "phase",
        "deltas/s",
        "deltas / CPU-s",
        "consumer thread ceiling deltas/s",
        "drop of deltas/s vs no pagers",
        "drop of deltas / CPU-s vs no pagers",
        "drop of ceiling vs no pagers",
    ]);
    let mut verdicts = Vec::new();
    for case in cases {
        if !case.phases.iter().any(|p| p.pages.is_some()) {
            continue;
        }
        let entities = count(case.entities as f64);
        for p in &case.phases {
            let Some(s) = &p.pages else { continue };
            let wall = p.wall.as_secs_f64();
            pages.row(vec![
                entities.clone(),
                p.name.to_owned(),
                count(s.pages as f64),
                count(s.pages as f64 / wall),
                count(s.pages as f64 * plan.limit as f64 / wall),
                num(s.latencies.quantile_ms(0.5), 3),
                num(s.latencies.quantile_ms(0.99), 3),
                num(s.latencies.max_ms(), 3),
                count(s.walks as f64),
                count(s.expired as f64),
                count(s.errors as f64),
                count(s.inconsistent as f64),
                num(Some(p.cpu.as_secs_f64()), 2),
                num(p.harness_cpu.map(|d| d.as_secs_f64()), 2),
            ]);
        }
        let merging = |name: &str| {
            case.phases
                .iter()
                .find(|p| p.name == name && p.completed && p.applied > 0)
        };
        let without: Vec<&Phase> = [MERGE, MERGE_AFTER]
            .iter()
            .filter_map(|n| merging(n))
            .collect();
        let mean = |f: &dyn Fn(&Phase) -> Option<f64>| -> Option<f64> {
            let values: Vec<f64> = without.iter().filter_map(|p| f(p)).collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let base_wall = mean(&|p: &Phase| Some(p.deltas_per_second()));
        let base_cpu = mean(&|p: &Phase| p.deltas_per_cpu_second());
        let base_ceiling = mean(&|p: &Phase| p.consumer_thread_ceiling());
        for p in without.iter().copied().chain(merging(MERGE_PAGES)) {
            let with = p.name == MERGE_PAGES;
            let wall_drop = base_wall.and_then(|b| drop_percent(b, p.deltas_per_second()));
            let cpu_drop = base_cpu
                .zip(p.deltas_per_cpu_second())
                .and_then(|(b, w)| drop_percent(b, w));
            let ceiling_drop = base_ceiling
                .zip(p.consumer_thread_ceiling())
                .and_then(|(b, w)| drop_percent(b, w));
            let pct = |d: Option<f64>| {
                if with {
                    num(d, 1) + " %"
                } else {
                    "-".to_owned()
                }
            };
            rates.row(vec![
                entities.clone(),
                p.name.to_owned(),
                count(p.deltas_per_second()),
                p.deltas_per_cpu_second().map_or("-".to_owned(), count),
                p.consumer_thread_ceiling().map_or("-".to_owned(), count),
                pct(wall_drop),
                pct(cpu_drop),
                pct(ceiling_drop),
            ]);
            if with && let Some(drop) = wall_drop {
                let verdict = |d: f64| {
                    if d <= TARGET_DROP_PERCENT {
                        "met"
                    } else {
                        "NOT met"
                    }
                };
                verdicts.push(format!(
                    "{entities} entities, {} pager(s): merge rate {} deltas/s with pagers against \
                     {} without (mean of {} phase(s)), a drop of {drop:.1}%: {} (target: at most \
                     {TARGET_DROP_PERCENT}%); consumer thread ceiling {} against {}, a drop of {}%: {}",
                    plan.clients,
                    count(p.deltas_per_second()),
                    base_wall.map_or("-".to_owned(), count),
                    without.len(),
                    verdict(drop),
                    p.consumer_thread_ceiling().map_or("-".to_owned(), count),
                    base_ceiling.map_or("-".to_owned(), count),
                    num(ceiling_drop, 1),
                    ceiling_drop.map_or("-", verdict),
                ));
            }
        }
    }
    if verdicts.is_empty() && pages.text().lines().count() <= 1 {
        return None;
    }
    let how = format!(
        "paged reads: {} keep-alive HTTP/1.1 client(s), {} entities a page, {}; each walks \
         the whole state from `?limit=` by `&cursor=<next>` to the last page, then again; \
         latency = request written to body read of each 200 page; pages/s = pages / phase wall",
        plan.clients,
        plan.limit,
        if plan.rate > 0.0 {
            format!("{} pages/s together", count(plan.rate))
        } else {
            "back to back".to_owned()
        }
    );
    let mut text = format!("{how}\n\n{}\n{}", pages.text(), rates.text());
    let mut markdown = format!("{}\n{}", pages.markdown(), rates.markdown());
    for verdict in &verdicts {
        text.push_str(verdict);
        text.push('\n');
        markdown.push_str(&format!("\n{verdict}\n"));
    }
    Some((text, markdown))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn page(change_seq: u64, keys: &[&str], next: Option<&str>) -> Vec<u8> {
        let entities: Vec<Value> = keys
            .iter()
            .map(|k| serde_json::json!({"key": k, "value": {"key": k, "qty": 1}}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "target": "bench",
            "version": 7,
            "change_seq": change_seq,
            "synced": true,
            "as_of": "2026-12-03T14:15:30.123Z",
            "kafka": {"partition": 0, "next_offset": 9},
            "entities": entities,
            "next": next,
        }))
        .unwrap()
    }

    #[test]
    fn a_page_answer_is_read() {
        let answer = parse_page(&page(42, &["E00001", "E00002"], Some("7b22"))).unwrap();
        assert_eq!(
            answer,
            PageAnswer {
                change_seq: 42,
                entities: 2,
                first_key: Some("E00001".into()),
                last_key: Some("E00002".into()),
                next: Some("7b22".into()),
            }
        );
        let last = parse_page(&page(42, &[], None)).unwrap();
        assert_eq!((last.entities, last.first_key, last.next), (0, None, None));
        assert!(parse_page(b"{\"error\":\"x\"}").is_err());
        assert!(parse_page(b"not json").is_err());
        let no_next = br#"{"change_seq":1,"entities":[]}"#;
        assert!(
            parse_page(no_next).is_err(),
            "next must be there (null on the last page)"
        );
    }

    #[test]
    fn a_walk_follows_the_cursor_and_starts_again_after_the_last_page() {
        let mut walk = Walk::new(2, 5);
        assert_eq!(walk.path(), "/v1/targets/bench/entities?limit=2");
        let first = parse_page(&page(9, &["E1", "E2"], Some("c1"))).unwrap();
        assert_eq!(walk.on_page(first), Step::More);
        assert_eq!(walk.path(), "/v1/targets/bench/entities?limit=2&cursor=c1");
        let second = parse_page(&page(9, &["E3", "E4"], Some("c2"))).unwrap();
        assert_eq!(walk.on_page(second), Step::More);
        assert_eq!(walk.path(), "/v1/targets/bench/entities?limit=2&cursor=c2");
        let last = parse_page(&page(9, &["E5"], None)).unwrap();
        assert_eq!(walk.on_page(last), Step::Done { consistent: true });
        assert_eq!(
            walk.path(),
            "/v1/targets/bench/entities?limit=2",
            "from the top"
        );
    }

    #[test]
    fn a_walk_that_changes_version_goes_back_or_misses_entities_is_inconsistent() {
        let mut walk = Walk::new(2, 4);
        walk.on_page(parse_page(&page(9, &["E1", "E2"], Some("c"))).unwrap());
        let moved = parse_page(&page(10, &["E3", "E4"], None)).unwrap();
        assert_eq!(walk.on_page(moved), Step::Done { consistent: false });

        walk.on_page(parse_page(&page(9, &["E1", "E2"], Some("c"))).unwrap());
        let back = parse_page(&page(9, &["E2", "E3"], None)).unwrap();
        assert_eq!(walk.on_page(back), Step::Done { consistent: false });

        walk.on_page(parse_page(&page(9, &["E1", "E2"], Some("c"))).unwrap());
        let short = parse_page(&page(9, &["E3"], None)).unwrap();
        assert_eq!(walk.on_page(short), Step::Done { consistent: false });

        walk.on_page(parse_page(&page(9, &["E1", "E2"], Some("c"))).unwrap());
        walk.restart();
        assert_eq!(walk.path(), "/v1/targets/bench/entities?limit=2");
        let whole = parse_page(&page(11, &["E1", "E2"], Some("d"))).unwrap();
        assert_eq!(walk.on_page(whole), Step::More);
        let rest = parse_page(&page(11, &["E3", "E4"], None)).unwrap();
        assert_eq!(
            walk.on_page(rest),
            Step::Done { consistent: true },
            "a restart forgets the broken walk"
        );
    }

    #[test]
    fn drops_are_relative_to_the_rate_without() {
        assert_eq!(drop_percent(200.0, 180.0), Some(10.0));
        assert_eq!(drop_percent(200.0, 220.0), Some(-10.0));
        assert_eq!(drop_percent(0.0, 1.0), None);
    }
}
