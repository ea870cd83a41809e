//! Dataset deliveries during a merge phase for `sluice-bench aggregate` (issue 17,
//! "Performance"): with `--delivery-format` (`parquet`, `csv` or `jsonl`), one more `replace`
//! case on the `--big-entities` state whose `aggregator.yaml` has
//!
//! ```yaml
//! deliveries:
//!   - targets: [bench]
//!     every: 100ms            # --delivery-every
//!     format: parquet
//!     destination: { dir: deliveries }
//!     keep: 1000
//! ```
//!
//! A round that takes longer than `every` delays the next (the aggregator's schedule), so with
//! a short `every` the deliveries run back to back from the moment the state is synced: the
//! case's one phase, "merge + deliveries", merges N deltas while the target is delivered over
//! and over. Its merge rate is set beside the no-delivery merge phases of the `--big-entities`
//! case of the same run (same entities, strategy and N; another aggregator process).
//!
//! What is timed, per delivery: from the manifest's `delivered_at` (the aggregator reads the
//! wall clock as its blocking delivery task starts, before encoding) to the manifest file's
//! modification time (the last file written: encode, data file write + fsync + rename,
//! manifest write). Only deliveries that start and end inside the phase's window (SIGCONT to
//! the last applied delta) are counted; one frozen across the SIGSTOP before the phase is not.
//! Bytes and rows are the manifest's (the data file alone). It must not judge anything but
//! deliveries.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{Case, Phase};
use crate::report::{Table, count, num};

/// The delivery case's merge phase.
pub const MERGE_DELIVERIES: &str = "merge + deliveries";
/// The destination directory, relative to the generated `aggregator.yaml`.
pub const DIR: &str = "deliveries";
/// Deliveries kept per target: more than a phase writes, so none it wrote is deleted before the
/// harness reads its manifest.
const KEEP: u32 = 1000;

/// `--delivery-format`: `none`, or a format of `deliveries[].format`.
pub fn parse_format(word: &str) -> anyhow::Result<Option<String>> {
    match word.trim() {
        "none" | "" => Ok(None),
        f @ ("parquet" | "csv" | "jsonl") => Ok(Some(f.to_owned())),
        other => bail!("unknown --delivery-format {other:?} (none, parquet, csv, jsonl)"),
    }
}

/// The `deliveries:` section of `aggregator.yaml` for target `target`.
pub fn yaml(target: &str, format: &str, every: Duration) -> String {
    format!(
        "deliveries:\n  - targets: [{target}]\n    every: {}ms\n    format: {format}\n    \
         destination:\n      dir: {DIR}\n    keep: {KEEP}\n",
        every.as_millis().max(1)
    )
}

/// One delivery, as its manifest and the manifest file's time tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// When the delivery task started (the manifest's `delivered_at`, millisecond precision).
    pub start: SystemTime,
    /// When the manifest was written (its modification time).
    pub end: SystemTime,
    /// Rows of the data file.
    pub rows: u64,
    /// Bytes of the data file.
    pub bytes: u64,
}

impl Delivery {
    /// How long it took (0 when the clocks disagree).
    pub fn took(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }
}

/// What the deliveries of the delivery case came to.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Deliveries that started and ended inside the phase.
    pub in_phase: Vec<Delivery>,
    /// Every manifest found after the phase (the process's whole life, up to `keep`).
    pub manifests: usize,
    /// `sluice_aggregator_all_deliveries_total` by `result` at the end of the phase (the
    /// process's whole life).
    pub results: BTreeMap<String, u64>,
    /// `sluice_aggregator_delivery_bytes_total` at the end of the phase (whole life).
    pub bytes_total: Option<u64>,
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` (what the aggregator writes) as a time.
pub fn parse_rfc3339_utc(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else if fraction.len() <= 9 && fraction.bytes().all(|b| b.is_ascii_digit()) {
        fraction.parse::<u32>().ok()? * 10u32.pow(9 - fraction.len() as u32)
    } else {
        return None;
    };
    // Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// A manifest's delivery (`end`: the manifest file's modification time).
pub fn parse_manifest(text: &str, end: SystemTime) -> anyhow::Result<Delivery> {
    let manifest: Value = serde_json::from_str(text).context("a manifest that is not JSON")?;
    let field = |name: &str| {
        manifest
            .get(name)
            .and_then(Value::as_u64)
            .with_context(|| format!("a manifest without {name}"))
    };
    let at = manifest
        .get("delivered_at")
        .and_then(Value::as_str)
        .context("a manifest without delivered_at")?;
    Ok(Delivery {
        start: parse_rfc3339_utc(at).with_context(|| format!("delivered_at {at:?}"))?,
        end,
        rows: field("rows")?,
        bytes: field("bytes")?,
    })
}

/// Every delivery in `dir` (the target's delivery directory), oldest first.
fn read_manifests(dir: &Path) -> anyhow::Result<Vec<Delivery>> {
    let mut all = Vec::new();
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(all),
        Err(error) => return Err(error).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name();
        if !name.to_string_lossy().ends_with(".manifest.json") {
            continue;
        }
        let end = entry.metadata()?.modified()?;
        let text = std::fs::read_to_string(entry.path())?;
        all.push(
            parse_manifest(&text, end).with_context(|| format!("{}", entry.path().display()))?,
        );
    }
    all.sort_by_key(|d| d.start);
    Ok(all)
}

/// The deliveries that started and ended within `[from, to]`.
pub fn within(all: &[Delivery], from: SystemTime, to: SystemTime) -> Vec<Delivery> {
    all.iter()
        .filter(|d| d.start >= from && d.end <= to)
        .cloned()
        .collect()
}

/// The samples of metric `family` (no other labels than `label`) by the value of `label`.
pub fn parse_counts(text: &str, family: &str, label: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{family}{{{label}=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (value_label, rest) = rest.split_once("\"}")?;
            let value: f64 = rest.trim().parse().ok()?;
            Some((value_label.to_owned(), value as u64))
        })
        .collect()
}

/// Reads what the delivery case's phase delivered: its manifests under `config_dir` and the
/// delivery metrics in `metrics` (the aggregator's /metrics after the phase).
pub fn collect(config_dir: &Path, phase: &Phase, metrics: &str) -> anyhow::Result<DeliveryStats> {
    let all = read_manifests(&config_dir.join(DIR).join(super::TARGET))?;
    let bytes_total = metrics.lines().find_map(|l| {
        let value = l.strip_prefix("sluice_aggregator_delivery_bytes_total ")?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    });
    Ok(DeliveryStats {
        in_phase: within(&all, phase.started_at, phase.ended_at),
        manifests: all.len(),
        results: parse_counts(metrics, "sluice_aggregator_all_deliveries_total", "result"),
        bytes_total,
    })
}

/// The `q` quantile of `values` (sorted here), nearest rank.
fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let last = values.len().checked_sub(1)?;
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, last + 1) - 1;
    values.get(rank).copied()
}

/// The delivery table and its comparison with the no-delivery merge phases of the same run, as
/// (text, markdown); `None` when no case delivered.
pub fn report(cases: &[Case], format: &str, every: Duration) -> Option<(String, String)> {
    let mut table = Table::new(&[
        "format",
        "entities",
        "deliveries in phase",
        "time p50 ms",
        "time min ms",
        "time max ms",
        "rows",
        "data bytes (p50)",
        "phase covered by deliveries %",
        "deltas/s",
        "deltas / CPU-s",
        "consumer thread ceiling deltas/s",
        "deltas/s without (same run)",
        "deltas / CPU-s without",
        "ceiling without",
        "drop deltas/s %",
        "drop deltas / CPU-s %",
        "drop ceiling %",
    ]);
    let mut notes = Vec::new();
    for case in cases {
        let Some(stats) = &case.deliveries else {
            continue;
        };
        let Some(phase) = case.phases.iter().find(|p| p.name == MERGE_DELIVERIES) else {
            continue;
        };
        let without: Vec<&Phase> = cases
            .iter()
            .filter(|c| {
                c.deliveries.is_none() && c.strategy == case.strategy && c.entities == case.entities
            })
            .flat_map(|c| c.phases.iter())
            .filter(|p| {
                (p.name == "merge" || p.name == super::pages::MERGE_AFTER)
                    && p.completed
                    && p.applied > 0
            })
            .collect();
        let mean = |values: Vec<f64>| {
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let base_wall = mean(without.iter().map(|p| p.deltas_per_second()).collect());
        let base_cpu = mean(
            without
                .iter()
                .filter_map(|p| p.deltas_per_cpu_second())
                .collect(),
        );
        let base_ceiling = mean(
            without
                .iter()
                .filter_map(|p| p.consumer_thread_ceiling())
                .collect(),
        );
        let mut times: Vec<f64> = stats
            .in_phase
            .iter()
            .map(|d| d.took().as_secs_f64() * 1e3)
            .collect();
        let mut bytes: Vec<f64> = stats.in_phase.iter().map(|d| d.bytes as f64).collect();
        let rows: Vec<u64> = stats.in_phase.iter().map(|d| d.rows).collect();
        let covered: f64 = times.iter().sum::<f64>() / 1e3 / phase.wall.as_secs_f64();
        let drop = |b: Option<f64>, w: Option<f64>| {
            num(
                b.zip(w).and_then(|(b, w)| super::pages::drop_percent(b, w)),
                1,
            )
        };
        table.row(vec![
            format.to_owned(),
            count(case.entities as f64),
            count(stats.in_phase.len() as f64),
            num(quantile(&mut times, 0.5), 0),
            num(times.first().copied(), 0),
            num(times.last().copied(), 0),
            match (rows.iter().min(), rows.iter().max()) {
                (Some(a), Some(b)) if a == b => count(*a as f64),
                (Some(a), Some(b)) => format!("{}–{}", count(*a as f64), count(*b as f64)),
                _ => "-".to_owned(),
            },
            quantile(&mut bytes, 0.5).map_or("-".to_owned(), count),
            num(Some(100.0 * covered), 0),
            count(phase.deltas_per_second()),
            phase.deltas_per_cpu_second().map_or("-".to_owned(), count),
            phase
                .consumer_thread_ceiling()
                .map_or("-".to_owned(), count),
            base_wall.map_or("-".to_owned(), count),
            base_cpu.map_or("-".to_owned(), count),
            base_ceiling.map_or("-".to_owned(), count),
            drop(base_wall, Some(phase.deltas_per_second())),
            drop(base_cpu, phase.deltas_per_cpu_second()),
            drop(base_ceiling, phase.consumer_thread_ceiling()),
        ]);
        let results: Vec<String> = stats
            .results
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        notes.push(format!(
            "{} entities: {} manifests on disk after the phase; over the process's life \
             sluice_aggregator_all_deliveries_total {{{}}}, delivery bytes {}; baseline = mean \
             of {} no-delivery merge phase(s) of the {} case",
            count(case.entities as f64),
            stats.manifests,
            results.join(", "),
            stats
                .bytes_total
                .map_or("-".to_owned(), |b| count(b as f64)),
            without.len(),
            count(case.entities as f64),
        ));
    }
    if notes.is_empty() {
        return None;
    }
    let how = format!(
        "deliveries: `every: {}ms`, format {format}, a dir destination; time = manifest \
         delivered_at (the delivery task's start) to the manifest file's mtime (encode + data \
         write, fsync, rename + manifest), only deliveries inside the phase (SIGCONT to the last \
         applied delta); covered = sum of those times / phase wall",
        every.as_millis()
    );
    let mut text = format!("{how}\n\n{}", table.text());
    let mut markdown = table.markdown();
    for note in &notes {
        text.push_str(note);
        text.push('\n');
        markdown.push_str(&format!("\n{note}\n"));
    }
    Some((text, markdown))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn utc_times_parse_as_the_aggregator_writes_them() {
        // 2026-12-03T14:07:30Z (the config crate's cron test uses the same instant).
        assert_eq!(
            parse_rfc3339_utc("2026-12-03T14:07:30.123Z"),
            Some(at(1_796_306_850, 123))
        );
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(at(0, 0)));
        assert_eq!(
            parse_rfc3339_utc("2024-02-29T23:59:59.5Z"),
            Some(at(1_709_251_199, 500))
        );
        for bad in [
            "2026-12-03T14:07:30",
            "2026-13-03T14:07:30Z",
            "x",
            "2026-12-03T14:07:30.12aZ",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_manifest_gives_start_rows_and_bytes() {
        let text = r#"{"target":"bench","file":"x.parquet","format":"parquet","version":5,
            "change_seq":6,"kafka":{},"rows":100000,"bytes":2345678,"sha256":"00",
            "as_of":"2026-12-03T14:07:29.000Z","delivered_at":"2026-12-03T14:07:30.123Z"}"#;
        let end = at(1_796_306_850, 600);
        let d = parse_manifest(text, end).unwrap();
        assert_eq!((d.rows, d.bytes), (100_000, 2_345_678));
        assert_eq!(d.took(), Duration::from_millis(477));
        assert!(parse_manifest("{}", end).is_err());
    }

    #[test]
    fn only_deliveries_inside_the_window_count() {
        let d = |s: u64, e: u64| Delivery {
            start: at(s, 0),
            end: at(e, 0),
            rows: 1,
            bytes: 1,
        };
        let all = [d(1, 3), d(4, 5), d(6, 9), d(9, 12)];
        assert_eq!(within(&all, at(2, 0), at(10, 0)), [d(4, 5), d(6, 9)]);
    }

    #[test]
    fn the_config_section_names_target_format_schedule_and_dir() {
        let y = yaml("bench", "parquet", Duration::from_millis(100));
        assert!(y.starts_with("deliveries:\n  - targets: [bench]\n"), "{y}");
        assert!(
            y.contains("every: 100ms") && y.contains("format: parquet"),
            "{y}"
        );
        assert!(
            y.contains("dir: deliveries") && y.contains("keep: 1000"),
            "{y}"
        );
        assert_eq!(parse_format("none").unwrap(), None);
        assert_eq!(parse_format("parquet").unwrap().as_deref(), Some("parquet"));
        assert!(parse_format("avro").is_err());
    }

    #[test]
    fn delivery_counts_are_read_by_result() {
        let text = "# HELP sluice_aggregator_all_deliveries_total x\n\
            sluice_aggregator_all_deliveries_total{result=\"ok\"} 12\n\
            sluice_aggregator_all_deliveries_total{result=\"skipped_not_synced\"} 3\n\
            sluice_aggregator_deliveries_total{result=\"ok\",target=\"bench\"} 12\n";
        let counts = parse_counts(text, "sluice_aggregator_all_deliveries_total", "result");
        assert_eq!(counts.get("ok"), Some(&12));
        assert_eq!(counts.get("skipped_not_synced"), Some(&3));
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&mut [1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
