//! `sluice worker` through real proxies: a planned, gap-free reconnect before a proxied
//! connection's maximum age (HTTPS through tinyproxy's HTTP CONNECT), and a SOCKS5 proxy pool
//! with credentials (microsocks) — with a search of every output for the secrets involved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;
mod support;

use rig::{Rig, assert_complete_in_order, ids_of, sim, write_file};
use sluice_testkit::metric_value;
use sluice_testkit::proxies::{
    Microsocks, MicrosocksOptions, ProxyAuth, Tinyproxy, TinyproxyOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_before_the_proxy_ttl_leaves_no_gap_and_no_duplicate() {
    let Some(proxy) = Tinyproxy::start_or_skip(TinyproxyOptions::default()) else {
        return;
    };
    const EVENTS: u64 = 900;
    let sim = sim(EVENTS, 300.0).await;
    let rig = Rig::new("rotate").await;
    let (base, ca) = support::tls_front(&sim, &rig.dir).await;
    // The upstream (standing in for the proxy's TTL) kills every connection at 1.5 s; the target
    // knows its max connection age and switches streams before that.
    rig.target(
        "rotating",
        &format!("{base}/v1/stream?last_event_id=0&max_age=1500ms"),
        &format!(
            "proxy:\n  url: {}\nmax_connection_age: 1500ms\ntls:\n  ca_file: {}",
            proxy.url(),
            ca.display()
        ),
    );
    let worker = rig.start("").await;
    let records = rig.wait_all_ids(&[("rotating", EVENTS)]).await;
    let ids = ids_of(&records, "rotating");
    assert_complete_in_order("rotating", &ids, EVENTS);
    assert_eq!(
        ids.len() as u64,
        EVENTS,
        "a planned switch delivers no duplicate"
    );

    let metrics = worker.metrics().await;
    let reason = |r: &str| {
        metric_value(
            &metrics,
            &format!("sluice_reconnects_total{{reason=\"{r}\",target=\"rotating\"}}"),
        )
    };
    assert!(
        reason("rotate") >= 1.0,
        "switched streams before the TTL:\n{metrics}"
    );
    assert_eq!(
        reason("proxy_ttl"),
        0.0,
        "the TTL never cut a stream:\n{metrics}"
    );
    assert_eq!(reason("eof"), 0.0, "{metrics}");
    let connections: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|r| r.header("sluice.connection"))
        .collect();
    assert!(
        connections.len() >= 2,
        "events came over several connections: {connections:?}"
    );
    assert!(
        proxy.log().contains("CONNECT"),
        "tunnelled by tinyproxy: {}",
        proxy.log()
    );
    let row = worker.row("rotating").await;
    assert!(
        row["proxy"].as_str().unwrap_or("").contains("127.0.0.1"),
        "{row}"
    );

    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socks5_pool_with_credentials_carries_targets_and_no_secret_leaks() {
    const PROXY_PASSWORD: &str = "ms-pass-90210-secret";
    const TOKEN: &str = "tok-5e5e5e-secret";
    const COOKIE: &str = "session=c00k1e-secret";
    let Some(socks) = Microsocks::start_or_skip(MicrosocksOptions {
        auth: Some(ProxyAuth::new("scraper", PROXY_PASSWORD)),
    }) else {
        return;
    };
    const EVENTS: u64 = 200;
    let good = sim(EVENTS, 500.0).await;
    let other = sim(EVENTS, 500.0).await;
    let rig = Rig::new("socks").await;
    let password = write_file(&rig.dir, "proxy-password", &format!("{PROXY_PASSWORD}\n"));
    let wrong = write_file(&rig.dir, "wrong-password", "wrong-password-secret\n");
    let cookie = write_file(&rig.dir, "cookie", COOKIE);
    let pools = format!(
        "proxy_pools:\n  socks:\n    - url: socks5h://scraper@127.0.0.1:{port}\n      password: {{file: {pw}}}\n\
         \x20 broken:\n    - url: socks5://scraper@127.0.0.1:{port}\n      password: {{file: {wrong}}}\n",
        port = socks.port(),
        pw = password.display(),
        wrong = wrong.display(),
    );
    let auth = format!(
        "auth:\n  bearer: {{env: SLUICE_TEST_TOKEN}}\n  cookie: {{file: {}}}",
        cookie.display()
    );
    for (id, sim) in [("pooled-a", &good), ("pooled-b", &other)] {
        rig.target(
            id,
            &format!("{}?last_event_id=0&close_after_events=70", sim.stream_url()),
            &format!("proxy: {{pool: socks}}\n{auth}"),
        );
    }
    rig.target(
        "refused",
        &good.stream_url(),
        &format!("proxy: {{pool: broken}}\n{auth}"),
    );
    let worker = rig
        .start_with_env(&pools, &[("SLUICE_TEST_TOKEN", TOKEN)])
        .await;
    let records = rig
        .wait_all_ids(&[("pooled-a", EVENTS), ("pooled-b", EVENTS)])
        .await;
    for id in ["pooled-a", "pooled-b"] {
        assert_complete_in_order(id, &ids_of(&records, id), EVENTS);
    }
    // The target behind the wrong password keeps failing, visibly.
    worker
        .wait_for(
            "the refused target to report its proxy failure",
            async |w: &rig::Worker| w.row("refused").await["reconnects"].as_u64().unwrap_or(0) >= 2,
        )
        .await;

    let mut outputs = vec![
        ("/metrics".to_owned(), worker.metrics().await),
        ("/status".to_owned(), worker.status().await.to_string()),
        (
            "/status.html".to_owned(),
            worker.get("/status.html").await.expect("html").1,
        ),
    ];
    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
    assert!(log.contains("reconnecting"), "{log}");
    outputs.push(("log".to_owned(), log));
    for (name, text) in &outputs {
        for secret in [
            PROXY_PASSWORD,
            TOKEN,
            "c00k1e-secret",
            "wrong-password-secret",
        ] {
            assert!(!text.contains(secret), "{name} reveals {secret:?}:\n{text}");
        }
    }
    assert!(
        outputs[1].1.contains("socks5h://scraper@127.0.0.1"),
        "status names the proxy without its password: {}",
        outputs[1].1
    );
}
