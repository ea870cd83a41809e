//! The console's three small charts of the last hour (events/s, delivery latency p50/p99,
//! reconnects), drawn as inline SVG from the history's samples: no script, no external file.
//!
//! What it must NOT do: read anything but the samples it is given.

use std::fmt::Write as _;

use super::history::{EVERY, KEEP, Sample};

const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 90.0;

/// Writes every chart into `html`.
pub fn all(html: &mut String, samples: &[Sample]) {
    let events: Vec<Option<f64>> = samples.iter().map(|s| Some(s.events_per_second)).collect();
    chart(html, "events", "events/s", &[("#06c", &events)], |v| {
        format!("{v:.0}/s")
    });
    let p50: Vec<Option<f64>> = samples.iter().map(|s| s.latency_p50).collect();
    let p99: Vec<Option<f64>> = samples.iter().map(|s| s.latency_p99).collect();
    chart(
        html,
        "latency",
        "delivery latency p50 / p99",
        &[("#070", &p50), ("#a60", &p99)],
        |v| format!("{:.1} ms", v * 1000.0),
    );
    let reconnects: Vec<Option<f64>> = samples.iter().map(|s| Some(s.reconnects as f64)).collect();
    chart(
        html,
        "reconnects",
        "reconnects per 10 s",
        &[("#a00", &reconnects)],
        |v| format!("{v:.0}"),
    );
}

/// One chart: a polyline per series over the hour (newest at the right), the largest value as
/// the scale, the last value in the caption.
fn chart(
    html: &mut String,
    id: &str,
    title: &str,
    series: &[(&str, &[Option<f64>])],
    label: impl Fn(f64) -> String,
) {
    let max = series
        .iter()
        .flat_map(|(_, values)| values.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b));
    let last: Vec<String> = series
        .iter()
        .map(|(_, values)| {
            values
                .last()
                .copied()
                .flatten()
                .map_or_else(|| "–".to_owned(), &label)
        })
        .collect();
    let _ = write!(
        html,
        "<figure id=\"chart-{id}\"><svg width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         role=\"img\" aria-label=\"{title}\">"
    );
    // The samples there are span the width (up to the hour kept), the newest at the right.
    let longest = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let step = WIDTH / (longest.clamp(2, KEEP) as f64 - 1.0);
    let scale = if max > 0.0 { (HEIGHT - 6.0) / max } else { 0.0 };
    for (colour, values) in series {
        let offset = longest.saturating_sub(values.len());
        let mut points = String::new();
        for (i, value) in values.iter().enumerate() {
            match value {
                Some(v) => {
                    let x = (offset + i) as f64 * step;
                    let y = HEIGHT - 3.0 - v * scale;
                    let _ = write!(points, "{x:.1},{y:.1} ");
                }
                None if !points.is_empty() => {
                    polyline(html, colour, &points);
                    points.clear();
                }
                None => {}
            }
        }
        if !points.is_empty() {
            polyline(html, colour, &points);
        }
    }
    if series.iter().all(|(_, values)| values.is_empty()) {
        let _ = write!(
            html,
            "<text x=\"8\" y=\"{}\" fill=\"#777\" font-size=\"12\">no sample yet (one every {} s)</text>",
            HEIGHT / 2.0,
            EVERY.as_secs()
        );
    }
    let _ = write!(
        html,
        "</svg><figcaption>{title}: now {} (max {}, last {} min)</figcaption></figure>",
        last.join(" / "),
        label(max),
        (longest as u64 * EVERY.as_secs()).div_ceil(60)
    );
}

fn polyline(html: &mut String, colour: &str, points: &str) {
    let _ = write!(
        html,
        "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
        points.trim_end()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_in_latency_breaks_the_line_and_the_caption_shows_the_last_value() {
        let sample = |p50| Sample {
            at_ms: 0,
            events_per_second: 5.0,
            latency_p50: p50,
            latency_p99: p50,
            reconnects: 1,
        };
        let samples = [sample(Some(0.002)), sample(None), sample(Some(0.004))];
        let mut html = String::new();
        all(&mut html, &samples);
        assert_eq!(html.matches("<figure").count(), 3, "{html}");
        // p50 and p99 each in two pieces around the gap, events and reconnects in one.
        assert_eq!(html.matches("<polyline").count(), 6, "{html}");
        assert!(html.contains("now 4.0 ms / 4.0 ms"), "{html}");
        // Three samples span the width: the last point at the right edge.
        assert!(html.contains("360.0,"), "{html}");

        let mut empty = String::new();
        all(&mut empty, &[]);
        assert!(empty.contains("no sample yet"), "{empty}");
    }
}
