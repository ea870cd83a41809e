//! OpenTelemetry export: the real binary sends its spans and logs as OTLP/HTTP protobuf to a fake
//! collector on loopback, and a collector that is down neither fails nor holds the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use sluice_sim::{RunningSim, SimConfig};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::mpsc;

/// Upper bound for one run or one wait; hitting it fails the test, it is not a timing assertion.
const LIMIT: Duration = Duration::from_secs(60);

/// One request the fake collector received.
#[derive(Debug)]
struct Export {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// A fake OTLP/HTTP collector: answers every POST with 200 and an empty (valid) protobuf
/// response, and hands each request to the test.
async fn collector() -> (String, Exports) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let (sender, receiver) = mpsc::unbounded_channel();
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let sender = sender.clone();
        async move {
            let content_type = headers
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let _ = sender.send(Export {
                path: uri.path().to_owned(),
                content_type,
                body: body.to_vec(),
            });
            (
                [("content-type", "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (
        base,
        Exports {
            receiver,
            held: Vec::new(),
        },
    )
}

/// A fast simulator on a loopback port.
async fn sim() -> RunningSim {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let config = SimConfig {
        rate: 2000.0,
        heartbeat: Duration::from_millis(200),
        ..SimConfig::default()
    };
    RunningSim::start(config, listener)
        .await
        .expect("simulator starts")
}

/// `sluice tail URL --max-events 3` with a clean OTel environment plus `env`.
async fn tail(url: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["tail", url, "--max-events", "3"])
        .args(extra_args)
        .env("SLUICE_LOG", "info")
        .env_remove("SLUICE_TAIL_PROXY")
        .kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    tokio::time::timeout(LIMIT, command.output())
        .await
        .expect("sluice tail did not finish within the limit")
        .expect("sluice tail could not be started")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// What the collector received, in arrival order (spans and logs are exported concurrently).
struct Exports {
    receiver: mpsc::UnboundedReceiver<Export>,
    held: Vec<Export>,
}

impl Exports {
    /// The first export to `path`, waiting for it (signalled by the collector, bounded by LIMIT).
    async fn take(&mut self, path: &str) -> Export {
        if let Some(index) = self.held.iter().position(|export| export.path == path) {
            return self.held.remove(index);
        }
        tokio::time::timeout(LIMIT, async {
            loop {
                let export = self
                    .receiver
                    .recv()
                    .await
                    .expect("collector channel open while the test holds it");
                if export.path == path {
                    return export;
                }
                self.held.push(export);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no export to {path} within {LIMIT:?}"))
    }
}

#[tokio::test]
async fn exports_spans_and_logs_to_the_configured_collector() {
    let sim = sim().await;
    let (collector, mut exports) = collector().await;
    let output = tail(
        &sim.stream_url(),
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 3);

    let traces = exports.take("/v1/traces").await;
    assert_eq!(traces.content_type, "application/x-protobuf");
    assert!(contains(&traces.body, b"service.name"), "{traces:?}");
    assert!(contains(&traces.body, b"sluice"), "{traces:?}");
    // The root span's attribute.
    assert!(contains(&traces.body, b"command"), "{traces:?}");
    assert!(contains(&traces.body, b"tail"), "{traces:?}");

    let logs = exports.take("/v1/logs").await;
    assert_eq!(logs.content_type, "application/x-protobuf");
    assert!(contains(&logs.body, b"sluice"), "{logs:?}");
    assert!(contains(&logs.body, b"stream opened"), "{logs:?}");

    assert!(
        !stderr(&output).contains("OpenTelemetry export failed"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn service_name_and_per_signal_endpoint_come_from_the_standard_variables() {
    let sim = sim().await;
    let (collector, mut exports) = collector().await;
    let traces_url = format!("{collector}/custom/traces");
    let output = tail(
        &sim.stream_url(),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces_url),
            ("OTEL_SERVICE_NAME", "pricing-scraper"),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let traces = exports.take("/custom/traces").await;
    assert!(contains(&traces.body, b"pricing-scraper"), "{traces:?}");
}

#[tokio::test]
async fn a_collector_that_refuses_connections_costs_one_warning_and_no_failure() {
    let sim = sim().await;
    // A port that was just free: nothing listens there, connections are refused.
    let refused = {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        format!("http://{}", listener.local_addr().expect("local addr"))
    };
    let started = tokio::time::Instant::now();
    let output = tail(&sim.stream_url(), &["--otlp-endpoint", &refused], &[]).await;
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 3);
    let stderr = stderr(&output);
    assert_eq!(
        stderr.matches("OpenTelemetry export failed").count(),
        1,
        "exactly one warning per outage: {stderr}"
    );
    // Generous: the export retries briefly at exit, then gives up (well under the 5 s bound).
    assert!(took < Duration::from_secs(20), "took {took:?}: {stderr}");
}
