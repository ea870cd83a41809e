//! The delay a server asks for, read where the client reads it: `Retry-After` on a real HTTP
//! answer over loopback is bounded by `MAX_SERVER_DELAY`, however large the server wrote it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sluice_client::{Client, ClientOptions, MAX_SERVER_DELAY};
use sluice_testkit::read_head;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Answers one request with a 503 carrying `retry_after`, and returns the client's view of it.
async fn retry_after_of(retry_after: &str) -> Option<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: {retry_after}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let head = read_head(&mut socket).await;
        assert!(
            head.ends_with(b"\r\n\r\n"),
            "the client closed before its request"
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
        let _ = socket.shutdown().await;
    });
    let client = Client::new(url.parse().unwrap(), ClientOptions::default()).unwrap();
    let error = client.connect("").await.unwrap_err();
    server.await.unwrap();
    assert_eq!(error.kind(), "http_status", "{error}");
    assert!(error.is_retryable());
    error.retry_after()
}

#[tokio::test]
async fn a_huge_retry_after_is_bounded_not_an_overflow_or_a_wait_of_years() {
    assert_eq!(
        retry_after_of("18446744073709551615").await,
        Some(MAX_SERVER_DELAY)
    );
    assert_eq!(
        retry_after_of("Fri, 31 Dec 9999 23:59:59 GMT").await,
        Some(MAX_SERVER_DELAY)
    );
    assert_eq!(retry_after_of("2").await, Some(Duration::from_secs(2)));
}
