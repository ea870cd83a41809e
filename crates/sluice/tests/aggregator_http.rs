//! The aggregator's HTTP API under clients that misbehave: a `/stream` client that stops
//! reading while the target keeps changing, a `/state` reader that never reads its body,
//! `Last-Event-ID` values the ring cannot answer, and more connections than
//! `http.max_connections`. The real binary (a debug build: arithmetic overflow panics) on the
//! rig's Kafka (the mock cluster, or the broker in `SLUICE_TEST_KAFKA`), real HTTP on loopback,
//! deltas written to the events topic as a worker writes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rig::{Rig, Worker};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const TARGET: &str = "t";
const APPLIED: &str = "sluice_aggregator_deltas_total{outcome=\"applied\",target=\"t\"}";

/// The rig: one `replace` target with an empty base state, no upstream.
async fn rig(name: &str) -> Rig {
    Rig::with_empty_base_target(name, TARGET).await
}

/// Writes the target's deltas `versions` (entity `k{v % 500}`, `pad` bytes of padding each) as
/// the worker would, and waits until Kafka acknowledged every one.
async fn produce(rig: &Rig, versions: RangeInclusive<u64>, pad: usize) {
    let padding = "x".repeat(pad);
    let records = versions.map(|v| {
        let data = format!(
            r#"{{"key":"k{}","version":{v},"pad":"{padding}"}}"#,
            v % 500
        );
        (rig::delta_headers(TARGET, &v.to_string()), data)
    });
    rig::produce_all(&rig.kafka, &rig.events, 0, TARGET, records).await;
}

async fn wait_applied(aggregator: &Worker, n: u64) {
    aggregator
        .wait_for(&format!("{n} deltas applied"), async |a: &Worker| {
            a.metric(APPLIED).await >= n as f64
        })
        .await;
}

/// A response read over a connection of its own whose receive buffer is small, so that a
/// client that stops reading its body soon stops the server writing it.
struct SlowClient {
    _sender: SendRequest<Empty<Bytes>>,
    body: Incoming,
    status: u16,
}

impl SlowClient {
    async fn get(aggregator: &Worker, path: &str, headers: &[(&str, &str)]) -> SlowClient {
        let addr: SocketAddr = aggregator
            .base()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::get(path).header("host", "aggregator");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        SlowClient {
            _sender: sender,
            body: response.into_body(),
            status,
        }
    }

    /// The next part of the body; `None` at its end.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let frame = self.body.frame().await?.expect("body readable");
            if let Ok(data) = frame.into_data() {
                return Some(data);
            }
        }
    }
}

/// SSE read from a [`SlowClient`]: events and comments, in order.
struct SseReader {
    client: SlowClient,
    parser: sluice_sse::Parser,
    ended: bool,
}

impl SseReader {
    fn new(client: SlowClient) -> SseReader {
        SseReader {
            client,
            // A whole state of this test's size is one long data line.
            parser: sluice_sse::Parser::new(sluice_sse::Limits {
                max_line_bytes: 64 << 20,
                max_event_bytes: 64 << 20,
            }),
            ended: false,
        }
    }

    /// The next event or comment; `None` once the server ended the stream.
    async fn next(&mut self) -> Option<sluice_sse::Item> {
        loop {
            if let Some(item) = self.parser.next_item().unwrap() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            match self.client.next().await {
                Some(data) => self.parser.push(&data),
                None => self.ended = true,
            }
        }
    }

    /// The next event, comments skipped; `None` at the end.
    async fn next_event(&mut self) -> Option<sluice_sse::Event> {
        loop {
            match self.next().await? {
                sluice_sse::Item::Event(event) => return Some(event),
                _ => continue,
            }
        }
    }
}

fn entities(state: &Value) -> BTreeMap<String, Value> {
    state["entities"]
        .as_object()
        .expect("entities object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn state_of(aggregator: &Worker) -> Value {
    let (code, body) = aggregator
        .get(&format!("/v1/targets/{TARGET}/state"))
        .await
        .expect("state answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("state is json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_client_that_falls_too_far_behind_is_disconnected_and_resumes_from_last_event_id()
{
    const DELTAS: u64 = 3_000;
    let rig = rig("agg-http-lag").await;
    let aggregator = rig.start_aggregator("", true).await;
    produce(&rig, 1..=10, 10).await;
    wait_applied(&aggregator, 10).await;

    // A stream client reads the whole state, then stops reading.
    let path = format!("/v1/targets/{TARGET}/stream");
    let mut lagging = SseReader::new(SlowClient::get(&aggregator, &path, &[]).await);
    let first = lagging.next_event().await.expect("the state first");
    assert_eq!(first.event.as_str(), "state");
    let mut known = entities(&serde_json::from_str(first.data.as_str()).unwrap());

    // Far more than the client's buffer of changes and the sockets' buffers of bytes; half
    // way, a /state reader that never reads its body (a state of 500 entities of 3 kB): the
    // merging goes on.
    for start in [11, 511] {
        produce(&rig, start..=start + 499, 3_000).await;
        wait_applied(&aggregator, start + 499).await;
    }
    let stalled_state =
        SlowClient::get(&aggregator, &format!("/v1/targets/{TARGET}/state"), &[]).await;
    assert_eq!(stalled_state.status, 200);
    // In rounds the aggregator catches up with (librdkafka's mock cluster keeps only the last
    // 5 MiB of a partition: a consumer that falls further behind finds its records gone).
    for start in (1_011..=10 + DELTAS).step_by(500) {
        let end = (start + 499).min(10 + DELTAS);
        produce(&rig, start..=end, 3_000).await;
        wait_applied(&aggregator, end).await;
    }
    let state = state_of(&aggregator).await;
    let current = state["change_seq"].as_u64().unwrap();

    // The client reads again: what was buffered for it, then a comment saying why it was
    // dropped, then the end of the stream (not the whole state again in its place).
    let mut last_id = first.id.as_str().to_owned();
    let mut why = None;
    let read_out = async {
        while let Some(item) = lagging.next().await {
            match item {
                sluice_sse::Item::Event(event) => {
                    assert_ne!(
                        event.event.as_str(),
                        "state",
                        "a client that fell behind is disconnected, not sent the whole state again"
                    );
                    rig::apply_change(&mut known, &event);
                    last_id = event.id.as_str().to_owned();
                }
                sluice_sse::Item::Comment(text) if !text.as_str().is_empty() => {
                    why = Some(text.as_str().to_owned());
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(rig::LIMIT, read_out)
        .await
        .expect("a client that fell behind is disconnected, not fed forever");
    let why = why.expect("a final comment");
    assert!(why.contains("fell more than 1024 changes behind"), "{why}");
    assert!(
        last_id.parse::<u64>().unwrap() < current,
        "the client was dropped before it was sent every change (last id {last_id}, state at {current})"
    );
    assert!(
        aggregator
            .metric("sluice_aggregator_stream_lagged_total")
            .await
            >= 1.0,
        "{}",
        aggregator.metrics().await
    );

    // Resuming from the last id it got brings it to the current state.
    let current = current.to_string();
    let mut resumed = SseReader::new(
        SlowClient::get(&aggregator, &path, &[("last-event-id", last_id.as_str())]).await,
    );
    loop {
        let event = resumed.next_event().await.expect("stream open");
        assert_ne!(
            event.event.as_str(),
            "state",
            "the ring covers the resume point"
        );
        rig::apply_change(&mut known, &event);
        if event.id.as_str() == current {
            break;
        }
    }
    assert_eq!(
        known,
        entities(&state),
        "the resumed client holds the state"
    );
    drop(stalled_state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_event_id_that_is_no_id_in_the_ring_gets_the_whole_state() {
    let rig = rig("agg-http-last-id").await;
    let aggregator = rig.start_aggregator("", true).await;
    produce(&rig, 1..=20, 10).await;
    wait_applied(&aggregator, 20).await;
    let state = state_of(&aggregator).await;
    let path = format!("/v1/targets/{TARGET}/stream");
    for last in [
        "18446744073709551615",
        "18446744073709551614",
        "18446744073709551616",
        "99999999",
        "-1",
        "garbage",
        "1e3",
        "",
    ] {
        let client = SlowClient::get(&aggregator, &path, &[("last-event-id", last)]).await;
        assert_eq!(client.status, 200, "Last-Event-ID {last:?}");
        let mut reader = SseReader::new(client);
        let mut first = reader
            .next_event()
            .await
            .unwrap_or_else(|| panic!("Last-Event-ID {last:?}: stream ended"));
        // An id ahead of this state's sequence is a position it cannot serve: the client is
        // told so, then gets the whole state. Text that is no id is no position at all.
        if last.parse::<u64>().is_ok() {
            assert_eq!(first.event.as_str(), "refetch", "Last-Event-ID {last:?}");
            let why: Value = serde_json::from_str(first.data.as_str()).unwrap();
            assert_eq!(why["reason"], "unknown_position", "{why}");
            first = reader.next_event().await.expect("the state after refetch");
        }
        assert_eq!(first.event.as_str(), "state", "Last-Event-ID {last:?}");
        let got: Value = serde_json::from_str(first.data.as_str()).unwrap();
        assert_eq!(entities(&got), entities(&state), "Last-Event-ID {last:?}");
    }
    let (code, _) = aggregator.get("/healthz").await.expect("still serving");
    assert_eq!(code, 200);
    assert!(
        !aggregator.log().contains("panicked"),
        "{}",
        aggregator.log()
    );
}

/// The events of a stream up to and including its first `up-to-date`.
async fn opening(
    aggregator: &Worker,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<sluice_sse::Event> {
    let client = SlowClient::get(aggregator, path, headers).await;
    assert_eq!(client.status, 200, "{path}");
    let mut reader = SseReader::new(client);
    let mut events = Vec::new();
    loop {
        let event = reader.next_event().await.expect("the stream stays open");
        let done = event.event.as_str() == "up-to-date";
        events.push(event);
        if done {
            return events;
        }
    }
}

fn kinds(events: &[sluice_sse::Event]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_starts_where_since_says_and_says_when_the_client_is_up_to_date() {
    let rig = rig("agg-http-since").await;
    let aggregator = rig.start_aggregator("", true).await;
    produce(&rig, 1..=20, 10).await;
    wait_applied(&aggregator, 20).await;
    let state = state_of(&aggregator).await;
    let seq = state["change_seq"].as_u64().expect("change_seq");
    let path = format!("/v1/targets/{TARGET}/stream");

    // The whole state (the default, or since=-1), then up-to-date at its sequence.
    for query in ["", "?since=-1"] {
        let events = opening(&aggregator, &format!("{path}{query}"), &[]).await;
        assert_eq!(kinds(&events), ["state", "up-to-date"], "{query:?}");
        let got: Value = serde_json::from_str(events[0].data.as_str()).unwrap();
        assert_eq!(entities(&got), entities(&state), "{query:?}");
        assert_eq!(events[1].id.as_str(), seq.to_string(), "{query:?}");
    }

    // After a sequence number: the entities changed since, at their ids, then up-to-date. A
    // Last-Event-ID (a reconnect) wins over the URL's since.
    let after = (seq - 5).to_string();
    for (query, headers) in [
        (format!("?since={after}"), vec![]),
        (
            "?since=now".to_owned(),
            vec![("last-event-id", after.as_str())],
        ),
    ] {
        let events = opening(&aggregator, &format!("{path}{query}"), &headers).await;
        assert_eq!(
            kinds(&events),
            [
                "upsert",
                "upsert",
                "upsert",
                "upsert",
                "upsert",
                "up-to-date"
            ],
            "{query:?} {headers:?}"
        );
        let ids: Vec<String> = events.iter().map(|e| e.id.as_str().to_owned()).collect();
        let expected: Vec<String> = (seq - 4..=seq)
            .chain([seq])
            .map(|n| n.to_string())
            .collect();
        assert_eq!(ids, expected);
    }

    // since=now: up-to-date at once, then only the changes that follow.
    let client = SlowClient::get(&aggregator, &format!("{path}?since=now"), &[]).await;
    let mut reader = SseReader::new(client);
    let first = reader.next_event().await.expect("up-to-date");
    assert_eq!(first.event.as_str(), "up-to-date");
    assert_eq!(first.id.as_str(), seq.to_string());
    produce(&rig, 21..=22, 10).await;
    for n in 1..=2 {
        let event = reader.next_event().await.expect("a change");
        assert_eq!(event.event.as_str(), "upsert");
        assert_eq!(event.id.as_str(), (seq + n).to_string());
    }

    // A position older than the ring keeps: refetch (expired), the whole state, up-to-date.
    produce(&rig, 23..=10_100, 10).await;
    wait_applied(&aggregator, 10_100).await;
    let events = opening(&aggregator, &format!("{path}?since=1"), &[]).await;
    assert_eq!(kinds(&events), ["refetch", "state", "up-to-date"]);
    let why: Value = serde_json::from_str(events[0].data.as_str()).unwrap();
    assert_eq!(why["reason"], "expired", "{why}");
    assert_eq!(why["since"], 1, "{why}");

    // A since that is no position, or another parameter, is refused naming it.
    for (query, parameter) in [("?since=yesterday", "since"), ("?from=1", "from")] {
        let (code, body) = aggregator
            .get(&format!("{path}{query}"))
            .await
            .expect("an answer");
        assert_eq!(code, 400, "{query}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["parameter"], parameter, "{query}");
    }
}

/// Sends `GET /healthz` on a new connection; the status line and the connection (kept open).
async fn healthz_on_new_connection(aggregator: &Worker) -> (String, TcpStream) {
    let addr = aggregator.base().trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: aggregator\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (String::from_utf8_lossy(&head).into_owned(), stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_answered_503_and_counted() {
    const CAP: usize = 4;
    let rig = rig("agg-http-cap").await;
    let aggregator = rig
        .start_aggregator_with_env("", true, &[("SLUICE__HTTP__MAX_CONNECTIONS", "4")])
        .await;
    // The rig's own client may keep one connection open: the cap is hit at the 3rd or 4th.
    let mut open = Vec::new();
    let refused = loop {
        let (status, stream) = healthz_on_new_connection(&aggregator).await;
        if status.starts_with("HTTP/1.1 200") {
            open.push(stream);
            assert!(open.len() <= CAP, "{} connections admitted", open.len());
        } else {
            break (status, stream);
        }
    };
    assert!(open.len() >= CAP - 1, "{} admitted", open.len());
    assert!(refused.0.starts_with("HTTP/1.1 503"), "{}", refused.0);
    let mut rest = String::new();
    let mut refused_stream = refused.1;
    refused_stream.read_to_string(&mut rest).await.unwrap();
    assert!(rest.contains("retry-after: 1"), "{rest}");

    // A connection that closes frees its place.
    drop(open.pop());
    aggregator
        .wait_for(
            "a closed connection's place to be free",
            async |a: &Worker| {
                let (status, stream) = healthz_on_new_connection(a).await;
                let admitted = status.starts_with("HTTP/1.1 200");
                if admitted {
                    drop(stream);
                }
                admitted
            },
        )
        .await;
    drop(open);
    aggregator
        .wait_for("the refusals to be counted", async |a: &Worker| {
            a.metric("sluice_aggregator_http_connections_rejected_total")
                .await
                >= 1.0
        })
        .await;
    assert!(
        aggregator
            .metric("sluice_aggregator_http_connections")
            .await
            >= 1.0,
        "the scrape's own connection is counted"
    );
}
