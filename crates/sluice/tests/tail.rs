//! `sluice tail` through real HTTP: the binary against the simulator, a raw golden-bytes server and
//! real proxies (tinyproxy, microsocks) on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use sluice_sim::SimConfig;
use sluice_testkit::read_head;
use support::{assert_contiguous, fast, ids, lines, sim, stderr, tail};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

#[tokio::test]
async fn prints_each_event_as_a_json_line_and_stops_at_max_events() {
    let sim = sim(fast()).await;
    let output = tail(&[&sim.stream_url(), "--max-events", "25"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let values = lines(&output);
    assert_eq!(values.len(), 25);
    for value in &values {
        let event = value["event"].as_str().unwrap();
        assert!(event == "price_update" || event == "delete", "{value}");
        let data: Value = serde_json::from_str(value["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            data["version"].as_u64().unwrap().to_string(),
            value["id"].as_str().unwrap()
        );
    }
    assert_contiguous(&ids(&values));
}

#[tokio::test]
async fn tails_an_embedded_simulator_when_no_url_is_given() {
    let output = tail(&["--max-events", "3"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let ids = ids(&lines(&output));
    assert_eq!(ids.len(), 3);
    assert_contiguous(&ids);
    assert!(
        stderr(&output).contains("embedded simulator"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn reconnects_with_last_event_id_after_each_clean_close_without_gaps() {
    let sim = sim(fast()).await;
    let url = format!("{}?close_after_events=7", sim.stream_url());
    let output = tail(&[&url, "--max-events", "30", "--retry", "10ms"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let ids = ids(&lines(&output));
    assert_eq!(ids.len(), 30);
    assert_contiguous(&ids);
    assert!(
        stderr(&output).contains("eof"),
        "reconnect reason is logged: {}",
        stderr(&output)
    );
}

#[tokio::test]
async fn reconnects_after_a_tcp_reset_without_gaps() {
    let sim = sim(fast()).await;
    let url = format!("{}?reset_after_events=5", sim.stream_url());
    let output = tail(&[&url, "--max-events", "20", "--retry", "10ms"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let ids = ids(&lines(&output));
    assert_eq!(ids.len(), 20);
    assert_contiguous(&ids);
    assert!(stderr(&output).contains("reset"), "{}", stderr(&output));
}

#[tokio::test]
async fn resumes_after_the_given_last_event_id() {
    let sim = sim(fast()).await;
    sim.wait_for_head(50).await;
    let output = tail(&[
        &sim.stream_url(),
        "--last-event-id",
        "10",
        "--max-events",
        "5",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(ids(&lines(&output)), vec![11, 12, 13, 14, 15]);
}

#[tokio::test]
async fn ends_at_the_end_of_the_first_response_with_no_reconnect() {
    let sim = sim(fast()).await;
    let url = format!("{}?close_after_events=4", sim.stream_url());
    let output = tail(&[&url, "--no-reconnect"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(ids(&lines(&output)).len(), 4);
    assert!(
        stderr(&output).contains("end of stream"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn stops_on_204_with_its_own_exit_status() {
    let sim = sim(fast()).await;
    let url = format!("{}?status=204", sim.stream_url());
    let output = tail(&[&url]).await;
    assert_eq!(output.status.code(), Some(8), "{}", stderr(&output));
    assert!(stderr(&output).contains("204"), "{}", stderr(&output));
}

#[tokio::test]
async fn a_wrong_content_type_is_reported_and_not_retried() {
    let sim = sim(fast()).await;
    let url = format!("{}?content_type=text/plain", sim.stream_url());
    let output = tail(&[&url]).await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("text/plain"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn a_client_error_status_stops_with_the_status_named() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/missing", listener.local_addr().unwrap());
    let server = tokio::spawn(serve_raw(
        listener,
        1,
        vec![b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()],
    ));
    let output = tail(&[&url]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("404"), "{}", stderr(&output));
    server.abort();
}

#[tokio::test]
async fn an_overloaded_server_is_retried_after_retry_after_and_then_streams() {
    let sim = sim(fast()).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/admin/faults", sim.base_url()))
        .json(&serde_json::json!({"count": 2, "faults": {"status": 503, "retry_after": 1}}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let output = tail(&[&sim.stream_url(), "--max-events", "3", "--retry", "10ms"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(ids(&lines(&output)).len(), 3);
    let log = stderr(&output);
    assert_eq!(log.matches("http status 503").count(), 2, "{log}");
    assert!(log.contains("retry after 1s"), "{log}");
}

#[tokio::test]
async fn follows_redirects_to_the_stream() {
    let sim = sim(fast()).await;
    let url = format!("{}?redirect=2", sim.stream_url());
    let output = tail(&[&url, "--max-events", "3"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(ids(&lines(&output)).len(), 3);
}

#[tokio::test]
async fn too_many_redirects_stop_with_a_connection_error() {
    let sim = sim(fast()).await;
    let url = format!("{}?redirect=3", sim.stream_url());
    let output = tail(&[&url, "--max-redirects", "1", "--no-reconnect"]).await;
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("too many redirects"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn a_silent_stall_ends_at_the_idle_timeout_with_no_reconnect() {
    let sim = sim(fast()).await;
    let url = format!("{}?stall_after_events=3", sim.stream_url());
    let output = tail(&[&url, "--idle-timeout", "300ms", "--no-reconnect"]).await;
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert_eq!(ids(&lines(&output)).len(), 3);
    assert!(
        stderr(&output).contains("idle timeout"),
        "{}",
        stderr(&output)
    );
}

/// An idle timeout is a dead connection, as an `EventSource` read timeout is: tail reconnects
/// with `Last-Event-ID` and goes on without a gap.
#[tokio::test]
async fn a_silent_stall_reconnects_at_the_idle_timeout_without_gaps() {
    let sim = sim(fast()).await;
    let url = format!("{}?stall_after_events=3", sim.stream_url());
    let output = tail(&[
        &url,
        "--idle-timeout",
        "300ms",
        "--max-events",
        "7",
        "--retry",
        "10ms",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let ids = ids(&lines(&output));
    assert_eq!(ids.len(), 7);
    assert_contiguous(&ids);
    let log = stderr(&output);
    assert!(log.matches("silent_drop").count() >= 2, "{log}");
}

/// A server that answers `retry: 0` and closes before any event, then `503` with
/// `Retry-After: 0`, all to a client started with `--retry 0ms`: each is a failed attempt, and
/// failed attempts wait at least a second (the jitter's ceiling doubling above it) instead of
/// reconnecting in a busy loop.
#[tokio::test]
async fn a_zero_retry_never_reconnects_in_a_busy_loop() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let server = tokio::spawn(serve_counting(
        listener,
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nretry: 0\n\n".to_vec(),
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 0\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
            b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_vec(),
        ],
    ));
    let output = tail(&[&url, "--retry", "0ms"]).await;
    assert_eq!(output.status.code(), Some(8), "{}", stderr(&output));
    let accepted = server.await.unwrap();
    assert_eq!(accepted.len(), 3, "one connection per answer");
    // The waits are lower bounds (a sleep never ends early), so this cannot flake on a slow
    // machine; a busy loop reconnects within milliseconds.
    let gaps: Vec<Duration> = accepted.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|gap| *gap >= Duration::from_millis(990)),
        "{gaps:?}"
    );
}

/// With `--reset-after 0s` every opened stream starts the backoff over, so an upstream that closes
/// after each event is reconnected to within the first ceiling (500 ms) every time; with the
/// default (60 s) the nine reconnects below would wait about 90 s in all (the ceiling doubling).
#[tokio::test]
async fn reset_after_zero_starts_the_backoff_over_at_every_opened_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let mut responses = Vec::new();
    for id in 1..=9 {
        responses.push(format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nid: {id}\ndata: x\n\n").into_bytes());
    }
    responses.push(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_vec());
    let server = tokio::spawn(serve_counting(listener, responses));
    let output = tail(&[&url, "--retry", "0ms", "--reset-after", "0s"]).await;
    assert_eq!(output.status.code(), Some(8), "{}", stderr(&output));
    assert_eq!(ids(&lines(&output)), (1..=9).collect::<Vec<u64>>());
    let accepted = server.await.unwrap();
    let total = accepted[accepted.len() - 1] - accepted[0];
    // Nine waits of at most 500 ms each, with room for a slow machine.
    assert!(total < Duration::from_secs(9), "{total:?}");
}

#[tokio::test]
async fn a_zero_max_retry_is_a_usage_error_naming_the_flag() {
    let output = tail(&["http://127.0.0.1:9/stream", "--max-retry", "0s"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--max-retry"),
        "{}",
        stderr(&output)
    );
}

/// An empty `Location` resolves to the URL it came from: followed, it loops until the redirect
/// limit, and that was retried for ever. It is a redirect that cannot be followed: one request,
/// then a connection error naming the problem.
#[tokio::test]
async fn an_empty_location_is_an_error_not_a_redirect_loop_retried_for_ever() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let server = tokio::spawn(serve_counting(
        listener,
        vec![
            b"HTTP/1.1 302 Found\r\nlocation: \r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_vec(),
            b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_vec(),
        ],
    ));
    let output = tail(&[&url, "--retry", "10ms"]).await;
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(log.contains("the location is empty"), "{log}");
    server.abort();
    let _ = server.await;
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_alive() {
    let sim = sim(SimConfig {
        rate: 0.5,
        heartbeat: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await;
    // One event every 2 s but a heartbeat every 50 ms: a 500 ms idle timeout must not fire.
    let output = tail(&[
        &sim.stream_url(),
        "--idle-timeout",
        "500ms",
        "--max-events",
        "2",
        "--comments",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let values = lines(&output);
    assert!(
        values.iter().any(|v| v.get("comment").is_some()),
        "{values:?}"
    );
}

#[tokio::test]
async fn an_oversized_event_stops_with_the_parse_limit_named() {
    let sim = sim(fast()).await;
    let url = format!(
        "{}?oversized_after_events=2&oversized_bytes=300000",
        sim.stream_url()
    );
    let output = tail(&[&url, "--max-line-bytes", "65536"]).await;
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert_eq!(ids(&lines(&output)).len(), 2);
    assert!(stderr(&output).contains("65536"), "{}", stderr(&output));
}

#[tokio::test]
async fn comments_and_retry_are_printed_only_when_asked() {
    let config = SimConfig {
        retry: Some(Duration::from_millis(1500)),
        ..fast()
    };
    let sim = sim(config).await;
    let with = tail(&[&sim.stream_url(), "--comments", "--max-events", "3"]).await;
    let values = lines(&with);
    assert_eq!(
        values.first(),
        Some(&serde_json::json!({"retry": 1500})),
        "{values:?}"
    );
    let without = tail(&[&sim.stream_url(), "--max-events", "3"]).await;
    assert!(lines(&without).iter().all(|v| v.get("data").is_some()));
}

/// Serves `responses[i]` to the i-th connection, one connection each, and returns when each
/// connection was accepted.
async fn serve_counting(listener: TcpListener, responses: Vec<Vec<u8>>) -> Vec<Instant> {
    let mut accepted = Vec::new();
    for response in responses {
        let Ok((mut socket, _)) = listener.accept().await else {
            break;
        };
        accepted.push(Instant::now());
        read_head(&mut socket).await;
        let _ = socket.write_all(&response).await;
        let _ = socket.shutdown().await;
    }
    accepted
}

/// Serves `responses[i]` to the i-th connection (after reading its request head), writing each
/// response as separate writes split at `\u{1}` markers, then closes.
async fn serve_raw(listener: TcpListener, connections: usize, responses: Vec<Vec<u8>>) {
    for i in 0..connections {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        read_head(&mut socket).await;
        let response = &responses[i.min(responses.len() - 1)];
        for part in response.split(|b| *b == 1) {
            if socket.write_all(part).await.is_err() {
                break;
            }
            let _ = socket.flush().await;
            tokio::task::yield_now().await;
        }
        let _ = socket.shutdown().await;
    }
}

#[tokio::test]
async fn follows_the_event_stream_rules_over_real_http_with_awkward_chunking() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/golden", listener.local_addr().unwrap());
    let mut body = Vec::new();
    body.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\nconnection: close\r\n\r\n\x01");
    body.extend_from_slice(b"\xEF\xBB\xBFdata: a\r\ndata: b\r\x01\nid: 7\n\n");
    body.extend_from_slice(b":hb\nretry: 250\nretry: 1x\n");
    body.extend_from_slice(b"event: x\ndata:  two spaces\n\n");
    body.extend_from_slice(b"data: caf\xC3\x01\xA9\n\n");
    body.extend_from_slice(b"data: bad \xFF\n\n");
    body.extend_from_slice(b"id: 8\x00\ndata: nul ignored\n\n");
    body.extend_from_slice(b"data\n\n");
    body.extend_from_slice(b"event: empty-data-no-dispatch\n\n");
    body.extend_from_slice(b"id\ndata: reset\n\n");
    body.extend_from_slice(b"data: unfinished");
    let server = tokio::spawn(serve_raw(listener, 1, vec![body]));
    let output = tail(&[&url, "--comments", "--no-reconnect"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let expected = vec![
        serde_json::json!({"id": "7", "event": "message", "data": "a\nb"}),
        serde_json::json!({"comment": "hb"}),
        serde_json::json!({"retry": 250}),
        serde_json::json!({"id": "7", "event": "x", "data": " two spaces"}),
        serde_json::json!({"id": "7", "event": "message", "data": "café"}),
        serde_json::json!({"id": "7", "event": "message", "data": "bad \u{FFFD}"}),
        serde_json::json!({"id": "7", "event": "message", "data": "nul ignored"}),
        serde_json::json!({"id": "7", "event": "message", "data": ""}),
        serde_json::json!({"id": null, "event": "message", "data": "reset"}),
    ];
    assert_eq!(lines(&output), expected);
    server.abort();
}
