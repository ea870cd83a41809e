//! The running aggregator and worker answer as their committed OpenAPI documents
//! (`docs/openapi/aggregator.json`, `worker.json`) say: schemathesis (from PyPI, in a
//! virtualenv the test fills) sends generated requests to every documented operation but the
//! aggregator's SSE stream (which has its own tests), the worker's admin API with its token,
//! and checks status codes, content types, headers and bodies against the document.
//! The real binary on the rig's Kafka, real HTTP on loopback. Skipped without `python3` (a
//! failure under `SLUICE_TEST_STRICT=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::path::Path;

use rig::{Rig, Worker};

const TARGET: &str = "t";
/// The schemathesis release the document was checked with.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_aggregator_answers_as_its_openapi_document_says() {
    let test = "the_running_aggregator_answers_as_its_openapi_document_says";
    if sluice_testkit::skip::find_program("python3").is_none() {
        sluice_testkit::skip_or_fail(
            test,
            "python3 is not installed (Debian packages python3, python3-venv)",
        );
        return;
    }
    let rig = Rig::with_empty_base_target("agg-openapi", TARGET).await;
    let aggregator = rig.start_aggregator("", true).await;
    let records = (1..=10u64).map(|v| {
        (
            rig::delta_headers(TARGET, &v.to_string()),
            format!(r#"{{"key":"k{v}","version":{v}}}"#),
        )
    });
    rig::produce_all(&rig.kafka, &rig.events, 0, TARGET, records).await;
    aggregator
        .wait_for("the deltas applied", async |a: &Worker| {
            a.metric("sluice_aggregator_deltas_total{outcome=\"applied\",target=\"t\"}")
                .await
                >= 10.0
        })
        .await;

    // Every per-target request names the target that exists (the others only ever get 404).
    // A short `timeout` everywhere: a wait for a version that never comes ends in its 504 at
    // once instead of after the default 10 s.
    let config =
        format!("[parameters]\n\"path.target\" = \"{TARGET}\"\n\"query.timeout\" = \"0.2\"\n");
    schemathesis(
        &rig.dir,
        "aggregator.json",
        aggregator.base(),
        &config,
        &["--exclude-path", "/v1/targets/{target}/stream"],
    )
    .await;
    assert!(
        !aggregator.log().contains("panicked"),
        "{}",
        aggregator.log()
    );
}

/// Runs schemathesis (installed into its virtualenv when missing) against the server at
/// `base` with the committed document `docs/openapi/<document>` and `config` (TOML); fails the
/// test on any answer that differs from the document.
async fn schemathesis(dir: &Path, document: &str, base: &str, config: &str, extra: &[&str]) {
    let python = tokio::task::spawn_blocking(|| {
        sluice_testkit::python::venv("schemathesis", &[SCHEMATHESIS])
    })
    .await
    .unwrap()
    .unwrap_or_else(|error| panic!("cannot install schemathesis: {error}"));
    let document = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/openapi")
        .join(document);
    let config_file = dir.join(format!("schemathesis-{}.toml", std::process::id()));
    std::fs::write(&config_file, config).unwrap();
    let output = tokio::process::Command::new(python.with_file_name("schemathesis"))
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(&document)
        .args(["--url", base])
        // 503 and 504 are documented answers (a wait for a version that does not come ends
        // in 504 by design, a worker not yet ready is 503), so a 5xx alone is no failure:
        // status_code_conformance still fails any status the document does not list. A page
        // cursor is opaque and excludes `prefix` and `after`, which a schema cannot say, so
        // generated requests with one are rightly refused: positive_data_acceptance cannot
        // hold for them. A wait that is not reached takes its timeout, by design: no
        // response time limit. The checks are every response check but not_a_server_error,
        // positive_data_acceptance and max_response_time, for those reasons.
        .args([
            "--checks",
            "status_code_conformance,content_type_conformance,response_headers_conformance,\
             response_schema_conformance,negative_data_rejection,missing_required_header,\
             unsupported_method,allow_header_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(extra)
        .args(["--max-examples", "25", "--seed", "1"])
        .args(["--request-timeout", "35"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found answers that differ from the document:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_worker_answers_as_its_openapi_document_says() {
    let test = "the_running_worker_answers_as_its_openapi_document_says";
    if sluice_testkit::skip::find_program("python3").is_none() {
        sluice_testkit::skip_or_fail(
            test,
            "python3 is not installed (Debian packages python3, python3-venv)",
        );
        return;
    }
    const TOKEN: &str = "openapi-admin-token";
    let rig = Rig::new("worker-openapi").await;
    let sim = rig::sim(1_000_000, 50.0).await;
    rig.target(TARGET, &sim.stream_url(), "");
    std::fs::write(rig.dir.join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let worker = rig.start("admin:\n  token: {file: admin-token}\n").await;
    // Every admin request names the target that runs, with the token.
    let config = format!(
        "headers = {{ Authorization = \"Bearer {TOKEN}\" }}\n[parameters]\n\"path.id\" = \"{TARGET}\"\n"
    );
    schemathesis(&rig.dir, "worker.json", worker.base(), &config, &[]).await;
    let (status, log) = worker.terminate().await;
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains(TOKEN), "the token in the log");
}
