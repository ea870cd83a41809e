//! Client certificates (mTLS) over real TLS on loopback: a server that requires a certificate
//! from a private client CA and records the one each connection presented. The worker presents
//! `tls.client_cert` / `tls.client_key` and, after the files are replaced (a rotation), the new
//! certificate from its next connection on, losing no event; it presents it to an HTTPS proxy
//! that requires one too; `sluice tail --cert --key` does, and without a certificate the
//! handshake is refused. Kafka is the rig's (the mock cluster, or the
//! real broker under `scripts/test`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;
mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rig::{Rig, assert_complete_in_order, first_occurrences, ids_of};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A private client CA and the certificates it signs.
struct ClientCa {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

impl ClientCa {
    fn new() -> ClientCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        ClientCa {
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A client certificate: (its DER, its PEM, its key's PEM).
    fn client(&self, name: &str) -> (Vec<u8>, String, String) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().to_vec(), cert.pem(), key.serialize_pem())
    }
}

/// A TLS acceptor for `localhost` that requires a client certificate of `ca`, and the PEM file
/// that trusts its own certificate.
fn mtls_acceptor(dir: &Path, name: &str, ca: &ClientCa) -> (TlsAcceptor, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone().into()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), pem)
}

/// An HTTPS server for `localhost` that requires a client certificate of `ca` and answers each
/// connection with two events after its `Last-Event-ID`, then closes. Returns its URL, the PEM
/// file that trusts it, and the client certificates (DER) the connections presented.
async fn mtls_server(dir: &Path, ca: &ClientCa) -> (String, PathBuf, Arc<Mutex<Vec<Vec<u8>>>>) {
    let (acceptor, pem) = mtls_acceptor(dir, "server", ca);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}/stream",
        listener.local_addr().unwrap().port()
    );
    let presented: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let seen = presented.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut tls) = acceptor.accept(socket).await else {
                continue; // no (valid) client certificate: refused in the handshake
            };
            if let Some(certs) = tls.get_ref().1.peer_certificates() {
                seen.lock().unwrap().push(certs[0].to_vec());
            }
            let head =
                String::from_utf8_lossy(&sluice_testkit::read_head(&mut tls).await).to_lowercase();
            let after: u64 = head
                .lines()
                .find_map(|l| l.strip_prefix("last-event-id:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let events: String = (after + 1..=after + 2)
                .map(|id| format!("id: {id}\ndata: {{\"n\":{id}}}\n\n"))
                .collect();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nretry: 10\n\n{events}"
            );
            let _ = tls.write_all(answer.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    (url, pem, presented)
}

/// Writes the client certificate and key into `dir`; returns their paths and the target's
/// `tls:` section trusting `ca_pem` and presenting them.
fn client_files(dir: &Path, ca_pem: &Path, pem: &str, key: &str) -> (PathBuf, PathBuf, String) {
    let cert = dir.join("client.pem");
    let key_file = dir.join("client.key");
    std::fs::write(&cert, pem).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let tls = format!(
        "tls:\n  ca_file: {}\n  client_cert: {}\n  client_key: {{file: {}}}\n",
        ca_pem.display(),
        cert.display(),
        key_file.display()
    );
    (cert, key_file, tls)
}

/// Replaces `path` with `text` in one rename, as a certificate rotation does.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_presents_its_client_certificate_and_a_rotated_one_from_the_next_connection() {
    let rig = Rig::new("mtls").await;
    let ca = ClientCa::new();
    let (url, server_pem, presented) = mtls_server(&rig.dir, &ca).await;
    let (first_der, first_pem, first_key) = ca.client("client-1");
    let (cert, key, tls) = client_files(&rig.dir, &server_pem, &first_pem, &first_key);
    rig.target("mtls", &url, &tls);
    let worker = rig.start("").await;
    rig.wait_all_ids(&[("mtls", 6)]).await;
    assert!(
        presented
            .lock()
            .unwrap()
            .iter()
            .all(|der| *der == first_der),
        "every connection presented client-1"
    );

    let (second_der, second_pem, second_key) = ca.client("client-2");
    replace(&key, &second_key);
    replace(&cert, &second_pem);
    let deadline = tokio::time::Instant::now() + rig::LIMIT;
    while !presented.lock().unwrap().contains(&second_der) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client-2 never presented"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connections = presented.lock().unwrap().len() as u64;
    // Every event of every connection so far, and the next ones, in order: none lost.
    let n = 2 * connections + 4;
    let records = rig.wait_all_ids(&[("mtls", n)]).await;
    // The worker goes on reconnecting meanwhile: the records read may hold more than `n` ids,
    // and the first `n` must be 1..=n in order.
    let first = first_occurrences(&ids_of(&records, "mtls"));
    let n_usize = usize::try_from(n).unwrap();
    assert!(first.len() >= n_usize, "{first:?}");
    assert_complete_in_order("mtls", &first[..n_usize], n);
    let row = worker.row("mtls").await;
    assert!(
        !row.to_string().contains("PRIVATE KEY"),
        "no key material on the status page: {row}"
    );
    drop(worker);
}

#[tokio::test]
async fn tail_presents_cert_and_key_and_without_them_the_handshake_is_refused() {
    let dir = tempfile_dir("mtls-tail");
    let ca = ClientCa::new();
    let (url, server_pem, presented) = mtls_server(&dir, &ca).await;
    let (der, pem, key) = ca.client("tail");
    std::fs::write(dir.join("tail.pem"), pem).unwrap();
    std::fs::write(dir.join("tail.key"), key).unwrap();
    let cacert = server_pem.display().to_string();
    let cert = dir.join("tail.pem").display().to_string();
    let key = dir.join("tail.key").display().to_string();
    let output = support::tail(&[
        &url,
        "--cacert",
        &cacert,
        "--cert",
        &cert,
        "--key",
        &key,
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
    assert_eq!(support::ids(&support::lines(&output)), vec![1, 2]);
    assert_eq!(*presented.lock().unwrap(), vec![der]);

    let output = support::tail(&[&url, "--cacert", &cacert, "--no-reconnect"]).await;
    assert_eq!(
        output.status.code(),
        Some(7),
        "no certificate, no connection: {}",
        support::stderr(&output)
    );
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-{name}-{}-{}",
        std::process::id(),
        sluice_testkit::unique_topic("d")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An HTTPS forward proxy on loopback that requires a client certificate of `ca`: it forwards
/// each plain-HTTP request (absolute-form, as a client sends it to a proxy) to its origin and
/// copies the answer back. Returns its port, the PEM that trusts it, and the certificates
/// (DER) its connections presented.
async fn mtls_proxy(dir: &Path, ca: &ClientCa) -> (u16, PathBuf, Arc<Mutex<Vec<Vec<u8>>>>) {
    let (acceptor, pem) = mtls_acceptor(dir, "proxy", ca);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let presented: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let seen = presented.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return; // no (valid) client certificate: refused in the handshake
                };
                if let Some(certs) = tls.get_ref().1.peer_certificates() {
                    seen.lock().unwrap().push(certs[0].to_vec());
                }
                let head = sluice_testkit::read_head(&mut tls).await;
                let text = String::from_utf8_lossy(&head).to_string();
                // `GET http://127.0.0.1:PORT/path HTTP/1.1`: the origin is in the target.
                let Some(origin) = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|u| u.strip_prefix("http://"))
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_owned)
                else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&origin).await else {
                    return;
                };
                if upstream.write_all(&head).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (port, pem, presented)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_presents_its_client_certificate_to_an_https_proxy() {
    let rig = Rig::new("mtls-proxy").await;
    let ca = ClientCa::new();
    let (port, proxy_pem, presented) = mtls_proxy(&rig.dir, &ca).await;
    let sim = rig::sim(20, 200.0).await;
    let (der, pem, key) = ca.client("client-proxy");
    let (_, _, tls) = client_files(&rig.dir, &proxy_pem, &pem, &key);
    rig.target(
        "viaproxy",
        &format!("{}?last_event_id=0", sim.stream_url()),
        &format!("proxy:\n  url: https://localhost:{port}\n{tls}"),
    );
    let worker = rig.start("").await;
    let records = rig.wait_all_ids(&[("viaproxy", 20)]).await;
    assert_complete_in_order("viaproxy", &ids_of(&records, "viaproxy"), 20);
    let seen = presented.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the stream went through the proxy");
    assert!(
        seen.iter().all(|d| *d == der),
        "every proxy connection presented the client certificate"
    );
    drop(worker);
}
