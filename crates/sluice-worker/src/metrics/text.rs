//! Pieces of the Prometheus text format the worker's scrape writes by hand: series names with
//! labels, integer samples, `# HELP`/`# TYPE` headers.
//!
//! What it must NOT do: escape label values. Every label value the worker writes is a validated
//! target id (`[a-z0-9._-]`) or a fixed word, so none needs it; never pass other text.

use std::fmt::Write as _;

/// The type of a family, as the text format writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// `# HELP` and `# TYPE` of a family.
pub(super) fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
}

/// `{name}{suffix}{k="v",...} ` (the value follows); no braces without labels.
pub(super) fn series(out: &mut String, name: &str, suffix: &str, labels: &[(&str, &str)]) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            out.push_str(value);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
}

/// One `{name}{target="t"} n` line.
pub(super) fn sample(out: &mut String, name: &str, target: &str, value: u64) {
    series(out, name, "", &[("target", target)]);
    push_u64(out, value);
    out.push('\n');
}

/// One `{name}{target="t"} n` line of a signed value.
pub(super) fn sample_i64(out: &mut String, name: &str, target: &str, value: i64) {
    series(out, name, "", &[("target", target)]);
    out.push_str(itoa::Buffer::new().format(value));
    out.push('\n');
}

/// `n` in decimal.
pub(super) fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// A float value and the line's end.
pub(super) fn push_f64_line(out: &mut String, value: f64) {
    let _ = writeln!(out, "{value}");
}

/// The buckets, sum and count of a histogram series with `labels` (besides `le`).
pub(super) fn histogram(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    bounds: &[String],
    (cumulative, count, sum): (&[u64], u64, f64),
) {
    let mut with_le: Vec<(&str, &str)> = labels.to_vec();
    with_le.push(("le", ""));
    let last = with_le.len() - 1;
    for (bound, n) in bounds.iter().zip(cumulative) {
        with_le[last].1 = bound;
        series(out, name, "_bucket", &with_le);
        push_u64(out, *n);
        out.push('\n');
    }
    with_le[last].1 = "+Inf";
    series(out, name, "_bucket", &with_le);
    push_u64(out, count);
    out.push('\n');
    series(out, name, "_sum", labels);
    push_f64_line(out, sum);
    series(out, name, "_count", labels);
    push_u64(out, count);
    out.push('\n');
}
