//! Shared helpers of the `sluice tail` tests: run the real binary, read its JSON lines.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod h2;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sluice_sim::{RunningSim, SimConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Upper bound for one `sluice tail` run; hitting it fails the test, it is not a timing assertion.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs `sluice tail ARGS` to completion (logging at `debug`, so secrets are searched for in the
/// most verbose output).
pub async fn tail(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("tail")
        .args(args)
        .env("SLUICE_LOG", "debug")
        .env_remove("SLUICE_TAIL_PROXY")
        .kill_on_drop(true);
    tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .expect("sluice tail did not finish within the run limit")
        .expect("sluice tail could not be started")
}

/// Every stdout line, parsed as JSON.
pub fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .expect("stdout is utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("every stdout line is json"))
        .collect()
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The numeric ids of the events (lines with `data`).
pub fn ids(values: &[Value]) -> Vec<u64> {
    values
        .iter()
        .filter(|v| v.get("data").is_some())
        .map(|v| {
            v["id"]
                .as_str()
                .expect("event has an id")
                .parse()
                .expect("numeric id")
        })
        .collect()
}

/// Fails unless every id is its predecessor plus one (no gap, no duplicate).
pub fn assert_contiguous(ids: &[u64]) {
    for pair in ids.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "ids are not contiguous: {ids:?}");
    }
}

/// A simulator on a loopback port.
pub async fn sim(config: SimConfig) -> RunningSim {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    RunningSim::start(config, listener)
        .await
        .expect("simulator starts")
}

/// A fast feed with frequent heartbeats, so tests finish quickly.
pub fn fast() -> SimConfig {
    SimConfig {
        rate: 2000.0,
        heartbeat: Duration::from_millis(200),
        // 500 s of replay at this rate: a reconnect slowed by a loaded CI machine must still
        // resume (at the default 10,000 a 5 s stall exhausted the history and the upstream reset).
        history: 1_000_000,
        ..SimConfig::default()
    }
}

/// A TLS terminator for `localhost` in front of the simulator, with a fresh self-signed CA.
/// Returns the HTTPS base URL and the PEM file the client must trust.
pub async fn tls_front(sim: &RunningSim, dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let (acceptor, pem_path) = localhost_tls(dir, "ca.pem", Vec::new());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind tls front");
    let port = listener.local_addr().expect("addr").port();
    let upstream = sim.addr();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (format!("https://localhost:{port}"), pem_path)
}

/// A TLS acceptor for `localhost` with a fresh self-signed certificate offering the ALPN
/// protocols `alpn` (none: no ALPN), and the PEM file (`dir/file_name`) a client must trust.
pub fn localhost_tls(
    dir: &std::path::Path,
    file_name: &str,
    alpn: Vec<Vec<u8>>,
) -> (TlsAcceptor, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    let pem_path = dir.join(file_name);
    std::fs::write(&pem_path, cert.pem()).expect("write pem");

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    config.alpn_protocols = alpn;
    (TlsAcceptor::from(Arc::new(config)), pem_path)
}
