//! `EventSource` over real HTTP on loopback: the delays between its connections come from the
//! shared reconnect policy, so a stream's `retry:` and a 503's `Retry-After` are waited out, with
//! `Last-Event-ID` on every reconnect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sluice_client::{
    Client, ClientOptions, DisconnectReason, EventSource, EventSourceOptions, ExponentialBackoff,
    ReconnectOptions, SourceItem,
};
use sluice_sse::Item;
use sluice_testkit::read_head;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Serves `responses[i]` to the i-th connection after reading its request head, then closes;
/// reports when each connection was accepted and its request head.
async fn serve(listener: TcpListener, responses: Vec<&'static [u8]>) -> Vec<(Instant, String)> {
    let mut seen = Vec::new();
    for response in responses {
        let (mut socket, _) = listener.accept().await.unwrap();
        let at = Instant::now();
        let head = read_head(&mut socket).await;
        seen.push((at, String::from_utf8_lossy(&head).to_lowercase()));
        socket.write_all(response).await.unwrap();
        let _ = socket.shutdown().await;
    }
    seen
}

/// An `EventSource` of `url` reconnecting under `policy`.
fn source(url: &str, policy: ReconnectOptions) -> EventSource {
    let client = Client::new(url.parse().unwrap(), ClientOptions::default()).unwrap();
    EventSource::new(
        client,
        EventSourceOptions {
            policy,
            ..EventSourceOptions::default()
        },
    )
}

#[tokio::test]
async fn retry_and_retry_after_set_the_waits_between_real_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let server = tokio::spawn(serve(
        listener,
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nretry: 1500\nid: 1\ndata: a\n\n",
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nid: 2\ndata: b\n\n",
        ],
    ));
    // A jitter ceiling (50 ms) well under both server delays: each wait is exactly the larger
    // of them and the failed-attempt floor.
    let policy =
        ReconnectOptions::interactive(Duration::ZERO, Duration::from_millis(50), Duration::MAX)
            .unwrap();
    let mut source = source(&url, policy);
    let mut items = Vec::new();
    loop {
        let item = source.next().await.unwrap().unwrap();
        let done = matches!(&item, SourceItem::Item(Item::Event(e)) if e.data.as_str() == "b");
        items.push(item);
        if done {
            break;
        }
    }
    let seen = server.await.unwrap();

    let retries: Vec<(DisconnectReason, Duration, &str)> = items
        .iter()
        .filter_map(|item| match item {
            SourceItem::Reconnecting {
                reason,
                retry_in,
                detail,
            } => Some((*reason, *retry_in, detail.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 2, "{items:?}");
    assert_eq!(retries[0].0, DisconnectReason::Eof);
    assert_eq!(retries[0].1, Duration::from_millis(1500), "retry: 1500");
    assert_eq!(retries[1].0, DisconnectReason::HttpStatus);
    assert_eq!(retries[1].1, Duration::from_secs(2), "Retry-After: 2");
    assert!(retries[1].2.contains("503"), "{}", retries[1].2);
    assert_eq!(source.reconnection_time(), Duration::from_millis(1500));

    // The waits really happened between the connections the server saw (lower bounds: a sleep
    // never ends early, so a slow machine cannot make this fail).
    assert_eq!(seen.len(), 3);
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps[0] >= Duration::from_millis(1490), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(1990), "{gaps:?}");
    assert!(!seen[0].1.contains("last-event-id"), "{}", seen[0].1);
    for (_, head) in &seen[1..] {
        assert!(head.contains("last-event-id: 1\r\n"), "{head}");
    }
}

/// Failed attempts wait a jittered delay under the doubling ceiling, as the worker's do: not the
/// same delay for every client in step.
#[tokio::test]
async fn a_refusing_endpoint_is_retried_after_jittered_delays_under_the_doubling_ceiling() {
    // A port that was just free: connecting is refused at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    drop(listener);
    let initial = Duration::from_millis(10);
    let max = Duration::from_millis(160);
    let policy = ReconnectOptions {
        backoff: ExponentialBackoff::try_new(initial, max, Duration::MAX).unwrap(),
        reconnection_time: Duration::ZERO,
        failed_attempt_floor: Duration::ZERO,
        ..ReconnectOptions::default()
    };
    let mut source = source(&url, policy);
    let mut delays = Vec::new();
    for n in 0..12u32 {
        match source.next().await.unwrap().unwrap() {
            SourceItem::Reconnecting {
                reason, retry_in, ..
            } => {
                assert_eq!(reason, DisconnectReason::Reset);
                let ceiling = (initial * 2u32.pow(n)).min(max);
                assert!(
                    retry_in <= ceiling,
                    "attempt {n}: {retry_in:?} > {ceiling:?}"
                );
                delays.push(retry_in);
            }
            other => panic!("expected a reconnect, got {other:?}"),
        }
    }
    let at_ceiling = delays
        .iter()
        .enumerate()
        .filter(|(n, d)| **d == (initial * 2u32.pow(*n as u32)).min(max))
        .count();
    assert!(at_ceiling < delays.len() / 2, "not jittered: {delays:?}");
}
