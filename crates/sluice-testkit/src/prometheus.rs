//! The Prometheus text format as tests read it: every sample line parsed into name, labels and
//! value, and the value of one series by its exact text. For assertions only: a malformed line
//! panics with the line, which fails the test that scraped it.
//!
//! What it must NOT do: validate the exposition format in full (that is `promtool`'s job in the
//! tests that run it) or scrape anything itself.

use std::collections::BTreeMap;

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The metric (family member) name, e.g. `sluice_events_total`.
    pub name: String,
    /// The labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value (`+Inf` and `-Inf` included).
    pub value: f64,
}

/// Parses the sample lines (comments and blank lines skipped) of a Prometheus text exposition.
pub fn parse_samples(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line without a value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("sample value is not a number: {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unterminated label set: {line:?}"));
                (name, parse_labels(inner, line))
            }
            None => (series, BTreeMap::new()),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// Parses `a="x",b="y"` (with `\"`, `\\` and `\n` escapes in values).
fn parse_labels(inner: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = inner.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label value not quoted: {line:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("dangling escape: {line:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value: {line:?}"),
            }
        }
        labels.insert(key.trim().to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The value of `series` (exact `name{labels}` text as rendered) in Prometheus text, 0 if absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total A.\n# TYPE a_total counter\na_total{target=\"x\",why=\"say \\\"hi\\\"\\n\"} 3\nb 1.5\nc_bucket{le=\"+Inf\"} +Inf\n";

    #[test]
    fn samples_carry_names_unescaped_labels_and_values() {
        let samples = parse_samples(TEXT);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "a_total");
        assert_eq!(samples[0].labels["target"], "x");
        assert_eq!(samples[0].labels["why"], "say \"hi\"\n");
        assert_eq!(samples[0].value, 3.0);
        assert!(samples[1].labels.is_empty());
        assert_eq!(samples[2].value, f64::INFINITY);
    }

    #[test]
    fn a_series_value_is_found_by_its_exact_text_or_is_zero() {
        assert_eq!(metric_value(TEXT, "b"), 1.5);
        assert_eq!(metric_value(TEXT, "a_total{target=\"x\""), 0.0);
        assert_eq!(metric_value(TEXT, "missing"), 0.0);
    }
}
