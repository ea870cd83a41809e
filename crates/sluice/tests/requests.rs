//! Stream requests with a method and a body (a `POST` or `REPORT` subscription), over real HTTP
//! against a loopback server that records every request: the same body on every reconnect, with
//! `Last-Event-ID`; `307`/`308` repeat method and body, `303` (and `302` of a `POST`) follow as a
//! `GET` without it; a secret body never goes to another origin. Through `sluice tail`, the
//! worker (Kafka is the rig's: the mock cluster, or the real broker under `scripts/test`) and the
//! client library.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;
mod support;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use sluice_client::{Client, ClientOptions, RequestBody};
use tokio::net::TcpListener;

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    path: String,
    method: String,
    content_type: String,
    last_event_id: String,
    body: String,
}

/// A server whose `/stream` answers two events after the request's `Last-Event-ID` and ends,
/// and whose `/redirect/<status>` redirects there with that status.
struct Recorder {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/stream", any(stream))
            .route("/redirect/{status}", any(redirect))
            .with_state(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Recorder { base, seen }
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }
}

fn record(seen: &Mutex<Vec<Seen>>, path: &str, method: &Method, headers: &HeaderMap, body: &[u8]) {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    seen.lock().unwrap().push(Seen {
        path: path.to_owned(),
        method: method.to_string(),
        content_type: header("content-type"),
        last_event_id: header("last-event-id"),
        body: String::from_utf8_lossy(body).into_owned(),
    });
}

async fn stream(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&seen, "/stream", &method, &headers, &body);
    let after: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let events: String = (after + 1..=after + 2)
        .map(|id| format!("id: {id}\nevent: tick\ndata: {{\"n\":{id}}}\n\n"))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(format!("retry: 10\n\n{events}")))
        .unwrap()
}

async fn redirect(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
    Path(status): Path<u16>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&seen, "/redirect", &method, &headers, &body);
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("location", "/stream")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn tail_posts_its_body_on_every_reconnect_and_a_307_repeats_it() {
    let server = Recorder::start().await;
    let url = format!("{}/redirect/307", server.base);
    let output = support::tail(&[
        &url,
        "-d",
        r#"{"subscribe":"prices"}"#,
        "-H",
        "Content-Type: application/json",
        "--max-events",
        "4",
    ])
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::stderr(&output)
    );
    assert_eq!(support::ids(&support::lines(&output)), vec![1, 2, 3, 4]);
    let streams = server.seen("/stream");
    assert_eq!(streams.len(), 2, "{streams:?}");
    for (seen, last_event_id) in streams.iter().zip(["", "2"]) {
        assert_eq!(seen.method, "POST", "{seen:?}");
        assert_eq!(seen.body, r#"{"subscribe":"prices"}"#, "{seen:?}");
        assert_eq!(seen.content_type, "application/json", "{seen:?}");
        assert_eq!(seen.last_event_id, last_event_id, "{seen:?}");
    }
}

#[tokio::test]
async fn a_303_and_a_302_of_a_post_follow_as_a_get_without_the_body() {
    for status in ["303", "302"] {
        let server = Recorder::start().await;
        let url = format!("{}/redirect/{status}", server.base);
        let output =
            support::tail(&[&url, "-d", "q=1", "--max-events", "2", "--no-reconnect"]).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            support::stderr(&output)
        );
        let first = &server.seen("/redirect")[0];
        assert_eq!(
            (first.method.as_str(), first.body.as_str()),
            ("POST", "q=1")
        );
        assert_eq!(
            first.content_type, "application/x-www-form-urlencoded",
            "curl's default"
        );
        let stream = &server.seen("/stream")[0];
        assert_eq!(stream.method, "GET", "{status}: {stream:?}");
        assert_eq!(stream.body, "", "{status}: {stream:?}");
        assert_eq!(stream.content_type, "", "{status}: {stream:?}");
    }
}

#[tokio::test]
async fn a_report_keeps_its_method_and_body_across_a_302() {
    let server = Recorder::start().await;
    let url = format!("{}/redirect/302", server.base);
    let output = support::tail(&[
        &url,
        "-X",
        "REPORT",
        "-d",
        "<sync/>",
        "--max-events",
        "2",
        "--no-reconnect",
    ])
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::stderr(&output)
    );
    let stream = &server.seen("/stream")[0];
    assert_eq!(
        (stream.method.as_str(), stream.body.as_str()),
        ("REPORT", "<sync/>")
    );
}

#[tokio::test]
async fn a_secret_body_is_not_sent_to_another_origin() {
    let other = Recorder::start().await;
    let server = Recorder::start().await;
    // The first origin's redirect points at the other server's stream.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first = format!("http://{}/go", listener.local_addr().unwrap());
    let location = format!("{}/stream", other.base);
    let app = Router::new().route(
        "/go",
        any(move || async move {
            Response::builder()
                .status(307)
                .header("location", location)
                .body(Body::empty())
                .unwrap()
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new(first.parse().unwrap(), ClientOptions::default())
        .unwrap()
        .with_request(
            http::Method::POST,
            Some(RequestBody {
                bytes: Bytes::from_static(b"api-key=s3cret"),
                content_type: http::HeaderValue::from_static("application/x-www-form-urlencoded"),
                secret: true,
            }),
        );
    let error = client.connect("").await.unwrap_err();
    assert_eq!(error.kind(), "redirect", "{error}");
    assert!(
        error.to_string().contains("the request body is a secret"),
        "{error}"
    );
    assert!(!error.to_string().contains("s3cret"), "{error}");
    assert!(
        other.seen("/stream").is_empty(),
        "nothing reached the other origin"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_sends_its_targets_method_and_json_body_on_every_reconnect() {
    let server = Recorder::start().await;
    let rig = rig::Rig::new("requests").await;
    rig.target(
        "report",
        &format!("{}/stream", server.base),
        "method: REPORT\nbody:\n  json: {subscribe: [a, b]}\n",
    );
    let worker = rig.start("").await;
    rig.wait_all_ids(&[("report", 6)]).await;
    let streams = server.seen("/stream");
    assert!(streams.len() >= 3, "{streams:?}");
    for (i, seen) in streams.iter().take(3).enumerate() {
        assert_eq!(seen.method, "REPORT", "{seen:?}");
        assert_eq!(seen.body, r#"{"subscribe":["a","b"]}"#, "{seen:?}");
        assert_eq!(seen.content_type, "application/json", "{seen:?}");
        assert_eq!(seen.last_event_id, ["", "2", "4"][i], "{seen:?}");
    }
    drop(worker);
}
