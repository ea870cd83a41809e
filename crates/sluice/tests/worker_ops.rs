//! `sluice worker` operations surface, end to end through the real binary: `/metrics` (every
//! per-target family with `metrics.per_target: all`, process totals, and `promtool check metrics` clean), `/status` as JSON and
//! HTML, `/healthz`, `/readyz`, `--log-format json` on stderr, and a graceful exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use rig::{LIMIT, Rig, Worker, sim};
use serde_json::Value;
use sluice_testkit::prometheus::{Sample, parse_samples};
use sluice_testkit::skip::{current_test_name, find_program};
use sluice_testkit::{free_port, skip_or_fail};
use tokio::process::Command;
use tokio::time::Instant;

/// Events the simulator offers (far more than a test reads: the stream never ends on its own).
const EVENTS: u64 = 1_000_000;
/// Events per second: with `close_after_events=50` the worker reconnects about every 250 ms.
const RATE: f64 = 200.0;

/// The simulator URL of the tests: replay from the first event, end the response every 50 events
/// (clean EOF), so reconnect series exist as well as the streaming ones.
fn stream_url(base: &str) -> String {
    format!("{base}?last_event_id=0&close_after_events=50")
}

/// The samples of family member `name` carrying `target="<target>"`.
fn of_target<'a>(samples: &'a [Sample], name: &str, target: &str) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("target").is_some_and(|t| t == target))
        .collect()
}

/// The sum of `name`'s samples for `target` (0 when there are none).
fn total(samples: &[Sample], name: &str, target: &str) -> f64 {
    of_target(samples, name, target)
        .iter()
        .map(|s| s.value)
        .sum()
}

/// `promtool check metrics` on `text` (stdin): exit status, stdout and stderr.
fn promtool_check(promtool: &std::path::Path, text: &str) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write metrics to promtool");
    let output = child.wait_with_output().expect("wait for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, said)
}

/// Waits until `/status` shows `target` streaming with acknowledged events and ids.
async fn wait_streaming_with_acks(worker: &Worker, target: &str) {
    worker
        .wait_for("the target to stream with acknowledged events", async |w| {
            let row = w.row(target).await;
            row["state"] == "streaming"
                && row["acked"].as_u64().is_some_and(|n| n > 0)
                && row["last_acked_id"].as_str().is_some_and(|s| !s.is_empty())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_every_target_series_and_pass_promtool() {
    const TARGET: &str = "t-metrics";
    let promtool = find_program("promtool");
    let rig = Rig::new("ops-metrics").await;
    let upstream = sim(EVENTS, RATE).await;
    rig.target(TARGET, &stream_url(&upstream.stream_url()), "");
    let worker = rig.start("metrics:\n  per_target: all").await;

    // Delivered events, several reconnects, latency observations and last-byte/last-event ages:
    // every per-target family has its series by then.
    worker
        .wait_for(
            "deliveries, reconnects, latency observations and checkpoints in /metrics",
            async |w| {
                let samples = parse_samples(&w.metrics().await);
                total(&samples, "sluice_events_delivered_total", TARGET) >= 100.0
                    && total(&samples, "sluice_reconnects_total", TARGET) >= 2.0
                    && total(&samples, "sluice_delivery_latency_seconds_count", TARGET) >= 1.0
                    && total(&samples, "sluice_checkpoints_written_total", TARGET) >= 1.0
                    && !of_target(&samples, "sluice_seconds_since_last_event", TARGET).is_empty()
            },
        )
        .await;
    // The one-hot state gauge says streaming (waited for: a scrape may fall between reconnects).
    worker
        .wait_for("sluice_target_state to say streaming", async |w| {
            let samples = parse_samples(&w.metrics().await);
            let states = of_target(&samples, "sluice_target_state", TARGET);
            states.iter().map(|s| s.value).sum::<f64>() == 1.0
                && states
                    .iter()
                    .any(|s| s.labels["state"] == "streaming" && s.value == 1.0)
        })
        .await;

    let text = worker.metrics().await;
    let samples = parse_samples(&text);

    // State: one series per state, each 0 or 1.
    let states = of_target(&samples, "sluice_target_state", TARGET);
    let mut names: Vec<&str> = states.iter().map(|s| s.labels["state"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["backoff", "connecting", "starting", "stopped", "streaming"],
        "sluice_target_state series:\n{text}"
    );
    assert!(
        states.iter().all(|s| s.value == 0.0 || s.value == 1.0),
        "sluice_target_state is not 0/1:\n{text}"
    );

    // Counters that must have counted.
    for name in [
        "sluice_events_received_total",
        "sluice_bytes_received_total",
        "sluice_events_delivered_total",
        "sluice_reconnects_total",
        "sluice_checkpoints_written_total",
    ] {
        assert!(
            total(&samples, name, TARGET) > 0.0,
            "{name}{{target=\"{TARGET}\"}} missing or 0:\n{text}"
        );
    }
    // Reconnects carry a reason label.
    for sample in of_target(&samples, "sluice_reconnects_total", TARGET) {
        assert!(
            sample.labels.get("reason").is_some_and(|r| !r.is_empty()),
            "reconnect series without a reason: {sample:?}"
        );
    }
    // The simulator ends each response cleanly: at least one reconnect is an EOF.
    assert!(
        of_target(&samples, "sluice_reconnects_total", TARGET)
            .iter()
            .any(|s| s.labels["reason"] == "eof" && s.value > 0.0),
        "no sluice_reconnects_total{{reason=\"eof\"}} for {TARGET}:\n{text}"
    );

    // Families present per target (values may legitimately be 0).
    for name in [
        "sluice_seconds_since_last_byte",
        "sluice_seconds_since_last_event",
        "sluice_producer_queue_depth",
        "sluice_delivery_errors_total",
        "sluice_upstream_paused",
        "sluice_events_filtered_total",
        "sluice_events_duplicate_total",
        "sluice_key_errors_total",
        "sluice_checkpoint_lag_events",
        "sluice_delivery_latency_seconds_sum",
        "sluice_delivery_latency_seconds_count",
    ] {
        let found = of_target(&samples, name, TARGET);
        assert_eq!(
            found.len(),
            1,
            "expected one {name}{{target=\"{TARGET}\"}} series:\n{text}"
        );
        assert!(
            found[0].value >= 0.0 && found[0].value.is_finite(),
            "{name}{{target=\"{TARGET}\"}} = {}",
            found[0].value
        );
    }
    for name in [
        "sluice_seconds_since_last_byte",
        "sluice_seconds_since_last_event",
    ] {
        let age = total(&samples, name, TARGET);
        assert!(
            age < LIMIT.as_secs_f64(),
            "{name} = {age} while the target streams"
        );
    }

    // The latency histogram: cumulative buckets ending in +Inf, which equals _count.
    let buckets = of_target(&samples, "sluice_delivery_latency_seconds_bucket", TARGET);
    assert!(buckets.len() >= 2, "latency buckets missing:\n{text}");
    let mut last = 0.0;
    for bucket in &buckets {
        assert!(
            bucket.value >= last,
            "latency buckets not cumulative:\n{text}"
        );
        last = bucket.value;
    }
    let inf = buckets
        .iter()
        .find(|b| b.labels.get("le").is_some_and(|le| le == "+Inf"))
        .unwrap_or_else(|| panic!("no le=\"+Inf\" latency bucket:\n{text}"));
    let count = total(&samples, "sluice_delivery_latency_seconds_count", TARGET);
    assert!(count >= 1.0, "no latency observation:\n{text}");
    assert_eq!(inf.value, count, "+Inf bucket != _count:\n{text}");

    // Process-wide families.
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "sluice_producer_in_flight",
        "sluice_targets",
    ] {
        assert!(
            samples.iter().any(|s| s.name == name),
            "{name} missing:\n{text}"
        );
    }
    let rss = samples
        .iter()
        .find(|s| s.name == "process_resident_memory_bytes")
        .map(|s| s.value)
        .unwrap_or_default();
    assert!(rss > 0.0, "process_resident_memory_bytes = {rss}");
    assert_eq!(
        samples
            .iter()
            .find(|s| s.name == "sluice_targets")
            .map(|s| s.value),
        Some(1.0),
        "sluice_targets:\n{text}"
    );
    // Every HELP/TYPE is there for every family with samples.
    for name in ["sluice_target_state", "sluice_delivery_latency_seconds"] {
        assert!(
            text.contains(&format!("# HELP {name} ")) && text.contains(&format!("# TYPE {name} ")),
            "HELP/TYPE of {name} missing:\n{text}"
        );
    }
    assert!(
        text.contains("# TYPE sluice_delivery_latency_seconds histogram"),
        "latency is not a histogram:\n{text}"
    );

    // promtool: the exposition lints clean (exit 0, nothing said).
    let Some(promtool) = promtool else {
        skip_or_fail(
            &current_test_name(),
            "promtool is not installed (Debian package prometheus; scripts/test installs it)",
        );
        return;
    };
    let (status, said) = promtool_check(&promtool, &text);
    assert!(
        status.success() && said.trim().is_empty(),
        "promtool check metrics: {status}, said:\n{said}\non:\n{text}"
    );

    let (exit, log) = worker.terminate().await;
    assert!(
        exit.success(),
        "worker exit after SIGTERM: {exit}; log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_and_readiness_pages() {
    const TARGET: &str = "t-status";
    let rig = Rig::new("ops-status").await;
    let upstream = sim(EVENTS, RATE).await;
    rig.target(TARGET, &stream_url(&upstream.stream_url()), "");
    let worker = rig.start("").await;

    let (code, body) = worker.get("/healthz").await.expect("healthz answers");
    assert_eq!((code, body.trim()), (200, "ok"), "/healthz");

    wait_streaming_with_acks(&worker, TARGET).await;
    let (code, body) = worker.get("/readyz").await.expect("readyz answers");
    assert_eq!((code, body.trim()), (200, "ready"), "/readyz once running");

    for path in ["/status", "/status.json"] {
        let (code, body) = worker.get(path).await.expect("status answers");
        assert_eq!(code, 200, "{path}: {body}");
        let status: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"));
        assert_eq!(status["ready"], true, "{path}: {status}");
        let targets = status["targets"].as_array().expect("targets array");
        assert_eq!(targets.len(), 1, "{path}: {status}");
        let row = &targets[0];
        assert_eq!(row["target"], TARGET, "{path}: {row}");
        // The state may flip to backoff between two reconnects; the counters only grow.
        assert!(
            row["events"].as_u64().is_some_and(|n| n > 0),
            "{path} events: {row}"
        );
        assert!(
            row["acked"].as_u64().is_some_and(|n| n > 0),
            "{path} acked: {row}"
        );
        assert!(
            row["bytes"].as_u64().is_some_and(|n| n > 0),
            "{path} bytes: {row}"
        );
        for field in ["last_event_id", "last_acked_id"] {
            assert!(
                row[field].as_str().is_some_and(|s| !s.is_empty()),
                "{path} {field} empty: {row}"
            );
        }
        assert!(
            row["url"].as_str().is_some_and(|u| u.contains("127.0.0.1")),
            "{path} url: {row}"
        );
    }
    // A row while streaming (polled: reconnects happen every 250 ms).
    let row = worker.row(TARGET).await;
    assert!(
        ["streaming", "connecting", "backoff"].contains(&row["state"].as_str().unwrap_or("")),
        "state: {row}"
    );

    let (code, html) = worker
        .get("/status.html")
        .await
        .expect("status.html answers");
    assert_eq!(code, 200, "/status.html");
    assert_html_table(&html, TARGET);

    let (exit, log) = worker.terminate().await;
    assert!(
        exit.success(),
        "worker exit after SIGTERM: {exit}; log:\n{log}"
    );
}

fn assert_html_table(html: &str, target: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(
        lower.starts_with("<!doctype html>"),
        "not an HTML page:\n{html}"
    );
    assert!(lower.contains("<table"), "no table:\n{html}");
    assert!(
        html.contains(&format!("<td>{target}</td>")),
        "no cell with {target}:\n{html}"
    );
    assert!(lower.contains("</html>"), "page not complete:\n{html}");
}

/// `--log-format json`: every stderr line is a JSON object with `level` and `fields`; the
/// operations server answers (`/readyz`, `/status` as HTML for a browser's Accept header); SIGTERM
/// ends the process with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_html_for_browsers_and_graceful_sigterm() {
    const TARGET: &str = "t-json";
    let rig = Rig::new("ops-json").await;
    let upstream = sim(EVENTS, RATE).await;
    rig.target(TARGET, &stream_url(&upstream.stream_url()), "");
    let port = free_port().expect("a free loopback port");
    let config = rig.worker_yaml(port, "");
    let log_path = rig.dir.join("worker-json.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--log-format")
        .arg("json")
        .arg("--log")
        .arg("debug,rdkafka=info,librdkafka=info,h2=info,hyper_util=info,reqwest=info")
        .arg("worker")
        .arg("--config")
        .arg(&config)
        .env_remove("SLUICE_LOG_FORMAT")
        .env_remove("SLUICE_LOG")
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("start sluice worker");
    let pid = child.id().expect("worker pid");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // /readyz 200, then the target streams with acknowledged events.
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("poll worker") {
            panic!("worker exited early: {status}; log:\n{}", read_log());
        }
        let ready = match http.get(format!("{base}/readyz")).send().await {
            Ok(response) => response.status().as_u16() == 200,
            Err(_) => false,
        };
        let acked = ready
            && match http.get(format!("{base}/status.json")).send().await {
                Ok(response) => response.json::<Value>().await.is_ok_and(|status| {
                    status["targets"][0]["acked"]
                        .as_u64()
                        .is_some_and(|n| n > 0)
                }),
                Err(_) => false,
            };
        if acked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker not ready with acknowledged events within {LIMIT:?}; log:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A browser asking /status gets the HTML page.
    let response = http
        .get(format!("{base}/status"))
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .send()
        .await
        .expect("status answers");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/html"),
        "content type {content_type}"
    );
    assert_html_table(&response.text().await.expect("html body"), TARGET);
    // Without text/html in Accept: JSON.
    let response = http
        .get(format!("{base}/status"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("status answers");
    let body = response.text().await.expect("json body");
    let status: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status not JSON ({e}): {body}"));
    assert_eq!(status["targets"][0]["target"], TARGET, "{status}");

    // SIGTERM: graceful exit 0.
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM {pid} failed");
    let exit = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("worker exits after SIGTERM")
        .expect("wait for worker");
    let log = read_log();
    assert!(
        exit.success(),
        "worker exit after SIGTERM: {exit}; log:\n{log}"
    );

    // Every stderr line is one JSON object with a level and fields.
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "too few log lines:\n{log}");
    let mut levels = std::collections::BTreeSet::new();
    for line in &lines {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line:?}\nlog:\n{log}"));
        let level = entry["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level in {line}"));
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "level {level:?} in {line}"
        );
        levels.insert(level.to_owned());
        assert!(entry["fields"].is_object(), "no fields object in {line}");
        assert!(entry["timestamp"].is_string(), "no timestamp in {line}");
    }
    assert!(levels.contains("INFO"), "no INFO line:\n{log}");
    drop(upstream);
}
