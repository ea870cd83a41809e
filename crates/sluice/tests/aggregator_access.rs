//! Who may read the aggregator's API: `http.auth.bearer` guards every `/v1/…` route (the
//! change stream included) while the page, `/metrics` and the probes stay open; the token is
//! read afresh per request and never shown; `http.cors.allowed_origins` answers browser
//! preflights and marks answers for the listed origins only. The real binary on the rig's
//! Kafka, real HTTP on loopback, deltas written to the events topic as a worker writes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use reqwest::StatusCode;
use rig::{Rig, Worker};
use serde_json::Value;

const TARGET: &str = "t";
const APPLIED: &str = "sluice_aggregator_deltas_total{outcome=\"applied\",target=\"t\"}";
const TOKEN: &str = "read-token-4b1d";
const ROTATED: &str = "read-token-rotated-77c2";

/// The rig: one `replace` target with an empty base state, no upstream.
async fn rig(name: &str) -> Rig {
    Rig::with_empty_base_target(name, TARGET).await
}

/// Writes 20 deltas as the worker writes them (after the aggregator started: a target without
/// a snapshot starts at the end of its partition, after its base state) and waits for them.
async fn produce_and_wait(rig: &Rig, aggregator: &Worker) {
    let records = (1..=20u64).map(|v| {
        (
            rig::delta_headers(TARGET, &v.to_string()),
            format!(r#"{{"key":"k{}","version":{v}}}"#, v % 5),
        )
    });
    rig::produce_all(&rig.kafka, &rig.events, 0, TARGET, records).await;
    wait_applied(aggregator).await;
}

/// `GET url` with an optional bearer token and `Origin`.
async fn get_with(
    url: &str,
    token: Option<&str>,
    origin: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.expect("the aggregator answers");
    let (status, headers) = (response.status(), response.headers().clone());
    let body = if headers
        .get("content-type")
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
    {
        String::new() // a stream does not end; its status and type are what is checked
    } else {
        response.text().await.expect("a body")
    };
    (status, headers, body)
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map_or("", |v| v.to_str().expect("an ASCII header"))
}

async fn wait_applied(aggregator: &Worker) {
    aggregator
        .wait_for("the deltas applied", async |a: &Worker| {
            a.metric(APPLIED).await >= 20.0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_api_requires_the_bearer_token_and_the_probes_stay_open() {
    let rig = rig("agg-auth").await;
    let token_file = rig.dir.join("read-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_path = token_file.display().to_string();
    let aggregator = rig
        .start_aggregator_with_env(
            "",
            true,
            &[("SLUICE__HTTP__AUTH__BEARER__FILE", token_path.as_str())],
        )
        .await;
    produce_and_wait(&rig, &aggregator).await;
    let base = aggregator.base().to_owned();
    let reads = [
        "/v1/targets".to_owned(),
        format!("/v1/targets/{TARGET}/state"),
        format!("/v1/targets/{TARGET}/entities"),
        format!("/v1/targets/{TARGET}/entities/k1"),
        format!("/v1/targets/{TARGET}/stream"),
    ];

    for path in &reads {
        let url = format!("{base}{path}");
        let (status, headers, body) = get_with(&url, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token");
        assert_eq!(header(&headers, "www-authenticate"), "Bearer", "{path}");
        let body: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(body["kind"], "unauthorized", "{path}");
        let (status, _, _) = get_with(&url, Some("not-the-token"), None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
        let (status, headers, _) = get_with(&url, Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::OK, "{path} with the token");
        if path.ends_with("/stream") {
            assert!(header(&headers, "content-type").starts_with("text/event-stream"));
        }
    }
    let (_, _, body) = get_with(
        &format!("{base}/v1/targets/{TARGET}/state"),
        Some(TOKEN),
        None,
    )
    .await;
    let state: Value = serde_json::from_str(&body).expect("state JSON");
    assert_eq!(
        state["version"], 20,
        "the token's answer is the state: {state}"
    );

    for path in ["/", "/metrics", "/healthz", "/readyz"] {
        let (status, _, _) = get_with(&format!("{base}{path}"), None, None).await;
        assert_eq!(status, StatusCode::OK, "{path} stays open");
    }

    // A rotated token takes effect on the next request; the old one is refused.
    std::fs::write(&token_file, ROTATED).unwrap();
    let url = format!("{base}/v1/targets/{TARGET}/state");
    assert_eq!(
        get_with(&url, Some(TOKEN), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get_with(&url, Some(ROTATED), None).await.0, StatusCode::OK);

    // A token that cannot be read refuses every read (503), it never opens the API.
    std::fs::remove_file(&token_file).unwrap();
    let (status, _, body) = get_with(&url, Some(ROTATED), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("token_unreadable"), "{body}");
    assert_eq!(
        get_with(&url, None, None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let log = aggregator.log();
    for secret in [TOKEN, ROTATED, "not-the-token"] {
        assert!(!log.contains(secret), "a token in the log:\n{log}");
    }
    let (_, _, metrics) = get_with(&format!("{base}/metrics"), None, None).await;
    assert!(!metrics.contains(TOKEN) && !metrics.contains(ROTATED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_of_the_allowed_origins_get_cors_answers_and_others_do_not() {
    let rig = rig("agg-cors").await;
    let token_file = rig.dir.join("read-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let token_path = token_file.display().to_string();
    // Written as a user might (upper case, the default port); a browser sends the origin
    // normalised.
    let aggregator = rig
        .start_aggregator_with_env(
            "",
            true,
            &[
                ("SLUICE__HTTP__AUTH__BEARER__FILE", token_path.as_str()),
                (
                    "SLUICE__HTTP__CORS__ALLOWED_ORIGINS",
                    "HTTPS://App.Example.com:443,http://localhost:8080",
                ),
            ],
        )
        .await;
    produce_and_wait(&rig, &aggregator).await;
    let url = format!("{}/v1/targets/{TARGET}/state", aggregator.base());
    let client = reqwest::Client::new();

    // The preflight a browser sends before a GET with an Authorization header: answered
    // without the token (browsers never send it on a preflight).
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization,if-none-match",
        )
        .send()
        .await
        .expect("a preflight answer");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(
        header(headers, "access-control-allow-origin"),
        "https://app.example.com"
    );
    let allowed = header(headers, "access-control-allow-headers").to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("if-none-match"),
        "{allowed}"
    );
    assert!(header(headers, "access-control-allow-methods").contains("GET"));

    // The read itself: marked for the origin, its position headers readable by the script.
    let (status, headers, _) = get_with(&url, Some(TOKEN), Some("http://localhost:8080")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        "http://localhost:8080"
    );
    let exposed = header(&headers, "access-control-expose-headers").to_ascii_lowercase();
    for name in ["etag", "sluice-version", "sluice-change-seq"] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }

    // Another origin gets no CORS headers (its browser refuses the answer to the script),
    // whether preflighted or not.
    let (status, headers, _) = get_with(&url, Some(TOKEN), Some("https://evil.example")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "CORS is the browser's check, not auth"
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), "");
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("a preflight answer");
    assert_eq!(
        header(preflight.headers(), "access-control-allow-origin"),
        ""
    );
}
