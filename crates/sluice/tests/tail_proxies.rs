//! `sluice tail` through real proxies on loopback: tinyproxy (HTTP CONNECT to an HTTPS upstream,
//! forward proxying of plain HTTP, basic auth) and microsocks (SOCKS5 with credentials).
//! A missing proxy program skips the test loudly, or fails it under `SLUICE_TEST_STRICT=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use sluice_sim::RunningSim;
use sluice_testkit::proxies::{
    Microsocks, MicrosocksOptions, ProxyAuth, Tinyproxy, TinyproxyOptions,
};
use support::{assert_contiguous, fast, lines, stderr, tail, tls_front};

fn ids(output: &std::process::Output) -> Vec<u64> {
    support::ids(&lines(output))
}

async fn sim() -> RunningSim {
    support::sim(fast()).await
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn streams_https_through_tinyproxy_with_http_connect_and_reconnects_at_max_age() {
    let Some(proxy) = Tinyproxy::start_or_skip(TinyproxyOptions::default()) else {
        return;
    };
    let sim = sim().await;
    let dir = temp_dir("connect");
    let (base, ca) = tls_front(&sim, &dir).await;
    // The simulator closes each connection at 300 ms, as a proxy with a connection TTL would.
    let url = format!("{base}/v1/stream?max_age=300ms");
    let output = tail(&[
        &url,
        "--proxy",
        &proxy.url(),
        "--cacert",
        ca.to_str().unwrap(),
        "--max-events",
        "1500",
        "--retry",
        "10ms",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let ids = ids(&output);
    assert_eq!(ids.len(), 1500);
    assert_contiguous(&ids);
    assert!(
        stderr(&output).contains("reconnecting"),
        "max_age forced a reconnect: {}",
        stderr(&output)
    );
    let log = proxy.log();
    assert!(
        log.contains("CONNECT"),
        "tinyproxy carried a CONNECT tunnel: {log}"
    );
}

#[tokio::test]
async fn streams_plain_http_through_tinyproxy_with_basic_auth() {
    let auth = ProxyAuth::new("scraper", "tp-pass-4417");
    let Some(proxy) = Tinyproxy::start_or_skip(TinyproxyOptions {
        auth: Some(auth),
        ..TinyproxyOptions::default()
    }) else {
        return;
    };
    let sim = sim().await;
    let output = tail(&[
        &sim.stream_url(),
        "--proxy",
        &proxy.url(),
        "--max-events",
        "5",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(ids(&output).len(), 5);
    assert!(proxy.log().contains("/v1/stream"), "{}", proxy.log());
}

#[tokio::test]
async fn a_rejected_proxy_password_is_reported_without_revealing_it() {
    let Some(proxy) = Tinyproxy::start_or_skip(TinyproxyOptions {
        auth: Some(ProxyAuth::new("scraper", "right-password")),
        ..TinyproxyOptions::default()
    }) else {
        return;
    };
    let sim = sim().await;
    let wrong = format!("http://scraper:wr0ng-s3cret-77@127.0.0.1:{}", proxy.port());
    let output = tail(&[&sim.stream_url(), "--proxy", &wrong, "--no-reconnect"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let log = stderr(&output);
    // tinyproxy answers a failed proxy login with 401 (others use 407): either way an http status.
    assert!(
        log.contains("http status 401") || log.contains("http status 407"),
        "{log}"
    );
    assert!(
        !log.contains("wr0ng-s3cret-77"),
        "the password leaked: {log}"
    );
}

#[tokio::test]
async fn streams_through_microsocks_with_credentials_across_reconnects() {
    let Some(proxy) = Microsocks::start_or_skip(MicrosocksOptions {
        auth: Some(ProxyAuth::new("scraper", "socks-pass-9")),
    }) else {
        return;
    };
    let sim = sim().await;
    let url = format!("{}?close_after_events=4", sim.stream_url());
    for proxy_url in [proxy.url(), proxy.url_socks5()] {
        let output = tail(&[
            &url,
            "--proxy",
            &proxy_url,
            "--max-events",
            "10",
            "--retry",
            "10ms",
        ])
        .await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let ids = ids(&output);
        assert_eq!(ids.len(), 10);
        assert_contiguous(&ids);
    }
}

#[tokio::test]
async fn a_wrong_socks_password_fails_the_connection_without_revealing_it() {
    let Some(proxy) = Microsocks::start_or_skip(MicrosocksOptions {
        auth: Some(ProxyAuth::new("scraper", "socks-pass-9")),
    }) else {
        return;
    };
    let sim = sim().await;
    let wrong = format!(
        "socks5h://scraper:n0t-the-pass-31@127.0.0.1:{}",
        proxy.port()
    );
    let output = tail(&[&sim.stream_url(), "--proxy", &wrong, "--no-reconnect"]).await;
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        !log.contains("n0t-the-pass-31"),
        "the password leaked: {log}"
    );
}
