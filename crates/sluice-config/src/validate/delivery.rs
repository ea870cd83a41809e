//! `deliveries:` of `aggregator.yaml` into [`DeliveryConfig`]s: the shape before the worker
//! config is loaded ([`deliveries`]), the target ids against its targets after ([`check_ids`]).

use std::collections::BTreeSet;

use super::Checker;
use crate::aggregator::AggregatorConfig;
use crate::delivery::{
    Column, ColumnType, CronSchedule, DeliveryConfig, DeliveryFormat, DeliverySchedule,
    DeliveryTargets,
};
use crate::problem::ProblemKind;
use crate::raw::{RawColumn, RawDelivery, RawDeliveryTargets};

/// Every entry of `deliveries` with its index, each problem reported as
/// `deliveries[i].field`. Entries with a problem are left out (the load fails anyway).
pub(crate) fn deliveries(
    c: &mut Checker<'_>,
    raw: Vec<RawDelivery>,
) -> Vec<(usize, DeliveryConfig)> {
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, raw)| Some((i, delivery(c, &format!("deliveries[{i}]"), raw)?)))
        .collect()
}

fn delivery(c: &mut Checker<'_>, at: &str, raw: RawDelivery) -> Option<DeliveryConfig> {
    let mut ok = true;
    let targets = match raw.targets {
        None => {
            c.report(
                &format!("{at}.targets"),
                ProblemKind::Missing,
                "missing targets: a list of target ids, or all".to_owned(),
            );
            ok = false;
            DeliveryTargets::All
        }
        Some(RawDeliveryTargets::Word(word)) if word == "all" => DeliveryTargets::All,
        Some(RawDeliveryTargets::Word(word)) => {
            c.report(
                &format!("{at}.targets"),
                ProblemKind::Invalid,
                format!("bad targets {word:?}: write all, or a list of target ids"),
            );
            ok = false;
            DeliveryTargets::All
        }
        Some(RawDeliveryTargets::List(ids)) if ids.is_empty() => {
            c.report(
                &format!("{at}.targets"),
                ProblemKind::Missing,
                "empty target list: name at least one target, or write all".to_owned(),
            );
            ok = false;
            DeliveryTargets::All
        }
        Some(RawDeliveryTargets::List(ids)) => DeliveryTargets::Ids(ids),
    };
    let schedule = match schedule(c, at, raw.every.as_deref(), raw.cron.as_deref()) {
        Some(schedule) => schedule,
        None => {
            ok = false;
            DeliverySchedule::Every(std::time::Duration::ZERO)
        }
    };
    let format = match raw.format.as_deref() {
        None => DeliveryFormat::Jsonl,
        Some(word) => match DeliveryFormat::ALL.iter().find(|f| f.as_str() == word) {
            Some(format) => *format,
            None => {
                let known: Vec<&str> = DeliveryFormat::ALL.map(DeliveryFormat::as_str).to_vec();
                c.report(
                    &format!("{at}.format"),
                    ProblemKind::Invalid,
                    format!(
                        "unknown format {word:?} (expected one of {})",
                        known.join(", ")
                    ),
                );
                ok = false;
                DeliveryFormat::Jsonl
            }
        },
    };
    let destination = super::destination::destination(c, at, raw.destination);
    ok &= destination.is_some();
    let keep = match raw.keep {
        None => DeliveryConfig::DEFAULT_KEEP,
        Some(0) => {
            c.report(
                &format!("{at}.keep"),
                ProblemKind::Invalid,
                "must be at least 1 (the deliveries kept per target)".to_owned(),
            );
            ok = false;
            0
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let columns = match raw.columns {
        None => None,
        Some(raw) => {
            let columns = columns(c, at, format, raw);
            ok &= columns.is_some();
            columns
        }
    };
    Some(DeliveryConfig {
        targets,
        schedule,
        format,
        destination: destination.filter(|_| ok)?,
        keep,
        columns,
    })
}

/// `columns`: a non-empty list of named, typed JSON Pointers, for CSV and Parquet only.
fn columns(
    c: &mut Checker<'_>,
    at: &str,
    format: DeliveryFormat,
    raw: Vec<RawColumn>,
) -> Option<Vec<Column>> {
    let field = format!("{at}.columns");
    if format == DeliveryFormat::Jsonl {
        c.report(
            &field,
            ProblemKind::Invalid,
            "columns apply to csv and parquet: JSON Lines writes whole entities".to_owned(),
        );
        return None;
    }
    if raw.is_empty() {
        c.report(
            &field,
            ProblemKind::Missing,
            "empty column list: name at least one column, or leave columns out to infer them"
                .to_owned(),
        );
        return None;
    }
    let mut ok = true;
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for (i, column) in raw.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        let name = column.name.unwrap_or_default();
        let problem = if name.is_empty() {
            Some((ProblemKind::Missing, "missing column name".to_owned()))
        } else if name == "key" {
            Some((
                ProblemKind::Invalid,
                "the column key is the entity's key, always first: name this one otherwise"
                    .to_owned(),
            ))
        } else if name.chars().any(char::is_control) || name.len() > 128 {
            Some((
                ProblemKind::Invalid,
                format!("bad column name {name:?}: 1 to 128 bytes, no control characters"),
            ))
        } else if !names.insert(name.clone()) {
            Some((
                ProblemKind::Invalid,
                format!("column {name:?} is named twice"),
            ))
        } else {
            None
        };
        if let Some((kind, message)) = problem {
            c.report(&format!("{at}.name"), kind, message);
            ok = false;
        }
        let pointer = match column.pointer {
            None => {
                c.report(
                    &format!("{at}.pointer"),
                    ProblemKind::Missing,
                    "missing pointer: the JSON Pointer of the column's value in each entity, \
                     e.g. /price"
                        .to_owned(),
                );
                ok = false;
                String::new()
            }
            Some(pointer) => c.pointer(&format!("{at}.pointer"), &pointer),
        };
        let kind = match column.kind.as_deref() {
            None => ColumnType::String,
            Some(word) => match ColumnType::ALL.iter().find(|t| t.as_str() == word) {
                Some(kind) => *kind,
                None => {
                    let known: Vec<&str> = ColumnType::ALL.map(ColumnType::as_str).to_vec();
                    c.report(
                        &format!("{at}.type"),
                        ProblemKind::Invalid,
                        format!(
                            "unknown type {word:?} (expected one of {})",
                            known.join(", ")
                        ),
                    );
                    ok = false;
                    ColumnType::String
                }
            },
        };
        out.push(Column {
            name,
            pointer,
            kind,
        });
    }
    ok.then_some(out)
}

/// `every` or `cron`, exactly one of them.
fn schedule(
    c: &mut Checker<'_>,
    at: &str,
    every: Option<&str>,
    cron: Option<&str>,
) -> Option<DeliverySchedule> {
    match (every, cron) {
        (Some(_), Some(_)) => {
            c.report(
                &format!("{at}.cron"),
                ProblemKind::Invalid,
                "give every or cron, not both".to_owned(),
            );
            None
        }
        (None, None) => {
            c.report(
                &format!("{at}.every"),
                ProblemKind::Missing,
                "missing schedule: every (an interval, e.g. 30s, 5m) or cron (an expression in \
                 UTC, e.g. \"0 * * * *\")"
                    .to_owned(),
            );
            None
        }
        (Some(every), None) => {
            let field = format!("{at}.every");
            let every = c.opt_duration(&field, Some(every))?;
            if every.is_zero() {
                c.positive(&field, every);
                return None;
            }
            Some(DeliverySchedule::Every(every))
        }
        (None, Some(cron)) => match CronSchedule::parse(cron) {
            Ok(cron) => Some(DeliverySchedule::Cron(cron)),
            Err(error) => {
                let error = crate::load::lowercase_first(error.trim_end_matches('.'));
                c.report(
                    &format!("{at}.cron"),
                    ProblemKind::Invalid,
                    format!(
                        "bad cron expression {cron:?}: {error} (5 fields, or 6 with seconds \
                         first; evaluated in UTC)"
                    ),
                );
                None
            }
        },
    }
}

/// Each named target is one the aggregator aggregates, and no target is delivered twice to one
/// directory (two schedules would delete each other's files at retention).
pub(crate) fn check_ids(
    c: &mut Checker<'_>,
    config: &AggregatorConfig,
    deliveries: &[(usize, DeliveryConfig)],
) {
    let aggregated: BTreeSet<&str> = config.targets().map(|(t, _)| t.id.as_str()).collect();
    let mut seen: BTreeSet<(String, &str)> = BTreeSet::new();
    for (i, delivery) in deliveries {
        let covered: Vec<&str> = match &delivery.targets {
            DeliveryTargets::All => aggregated.iter().copied().collect(),
            DeliveryTargets::Ids(ids) => ids.iter().map(String::as_str).collect(),
        };
        for id in covered {
            if !aggregated.contains(id) {
                c.report(
                    &format!("deliveries[{i}].targets"),
                    ProblemKind::Invalid,
                    format!(
                        "unknown target {id:?}: not an enabled target with an aggregate section"
                    ),
                );
            } else if !seen.insert((delivery.destination.describe(), id)) {
                c.report(
                    &format!("deliveries[{i}].targets"),
                    ProblemKind::Invalid,
                    format!(
                        "target {id:?} is delivered to this destination by an earlier entry \
                         too: use another directory or prefix"
                    ),
                );
            }
        }
    }
}
