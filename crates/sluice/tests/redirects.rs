//! What crosses a redirect, for the stream (`Client::connect`) and base-state fetches
//! (`Client::fetch_document`) alike, against servers on loopback that record every request they
//! receive: the target's own headers (tokens, API keys) reach only its own origin, an `https` to
//! `http` redirect is refused before anything is sent in the clear, and no `Referer` is sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice_client::{Client, ClientOptions};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

const STREAM_OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: x\n\n";
const JSON_OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
const SECRET: &str = "k3y-s3cret-42";
const TOKEN: &str = "Bearer t0ken-s3cret";

/// A server on loopback answering connection `i` with `answers[i]` (the last one for any
/// later connection) and keeping every request head it read, lowercased.
struct Recorder {
    base: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(answers: Vec<Vec<u8>>) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(serve(listener, None, answers, heads.clone()));
        Recorder { base, heads }
    }

    /// The same over TLS for `localhost`; returns the recorder (base `https://localhost:PORT`)
    /// and the PEM file a client must trust.
    async fn start_tls(dir: &std::path::Path, answers: Vec<Vec<u8>>) -> (Recorder, Vec<u8>) {
        let (acceptor, pem) = support::localhost_tls(dir, "ca.pem", Vec::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let heads = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(serve(listener, Some(acceptor), answers, heads.clone()));
        (Recorder { base, heads }, std::fs::read(pem).unwrap())
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    answers: Vec<Vec<u8>>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    for i in 0.. {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let answer = answers[i.min(answers.len() - 1)].clone();
        let heads = heads.clone();
        match &tls {
            Some(acceptor) => {
                let Ok(stream) = acceptor.accept(socket).await else {
                    continue;
                };
                answer_one(stream, answer, heads).await;
            }
            None => answer_one(socket, answer, heads).await,
        }
    }
}

async fn answer_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    answer: Vec<u8>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    let head = sluice_testkit::read_head(&mut stream).await;
    if !head.ends_with(b"\r\n\r\n") {
        return;
    }
    heads
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&head).to_ascii_lowercase());
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
}

fn redirect_to(location: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A client for `url` with an API key and a bearer token as its own headers.
fn client(url: &str, pem: Option<Vec<u8>>) -> Client {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_static(SECRET),
    );
    headers.insert(http::header::AUTHORIZATION, HeaderValue::from_static(TOKEN));
    Client::new(
        Url::parse(url).unwrap(),
        ClientOptions {
            headers,
            root_certificates_pem: pem.into_iter().collect(),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

fn carries_secrets(head: &str) -> bool {
    head.contains("x-api-key")
        || head.contains(&SECRET.to_ascii_lowercase())
        || head.contains("authorization")
}

#[tokio::test]
async fn own_headers_follow_a_same_origin_redirect_and_stop_at_another_origin() {
    let other = Recorder::start(vec![STREAM_OK.to_vec()]).await;
    let other_url = format!("{}/elsewhere", other.base);
    // Connection 0: to /hop on the same origin; 1: to the other origin.
    let origin = Recorder::start(vec![redirect_to("/hop"), redirect_to(&other_url)]).await;
    let stream = client(&format!("{}/stream", origin.base), None);
    let mut connection = tokio::time::timeout(Duration::from_secs(30), stream.connect("41"))
        .await
        .unwrap()
        .unwrap();
    assert!(connection.next_chunk().await.unwrap().is_some());

    let heads = origin.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[0].starts_with("get /stream "), "{heads:?}");
    assert!(heads[1].starts_with("get /hop "), "{heads:?}");
    for head in &heads {
        assert!(
            carries_secrets(head),
            "the target's own origin gets its headers: {head}"
        );
        assert!(head.contains("last-event-id: 41"), "{head}");
    }
    let elsewhere = other.heads();
    assert_eq!(elsewhere.len(), 1, "{elsewhere:?}");
    assert!(elsewhere[0].starts_with("get /elsewhere "), "{elsewhere:?}");
    assert!(!carries_secrets(&elsewhere[0]), "{}", elsewhere[0]);
    assert!(
        elsewhere[0].contains("last-event-id: 41"),
        "{}",
        elsewhere[0]
    );
    for head in heads.iter().chain(&elsewhere) {
        assert!(!head.contains("referer"), "{head}");
    }
}

#[tokio::test]
async fn a_base_state_fetch_keeps_its_headers_to_its_own_origin_too() {
    let other = Recorder::start(vec![JSON_OK.to_vec()]).await;
    let origin = Recorder::start(vec![redirect_to(&format!("{}/state", other.base))]).await;
    let fetch = client(&format!("{}/base", origin.base), None);
    let body = fetch
        .fetch_document(Duration::from_secs(30), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"{}");
    let heads = origin.heads();
    assert!(carries_secrets(&heads[0]), "{heads:?}");
    let elsewhere = other.heads();
    assert_eq!(elsewhere.len(), 1, "{elsewhere:?}");
    assert!(!carries_secrets(&elsewhere[0]), "{}", elsewhere[0]);
    assert!(
        elsewhere[0].contains("accept: application/json"),
        "{}",
        elsewhere[0]
    );
    assert!(!elsewhere[0].contains("referer"), "{}", elsewhere[0]);
}

#[tokio::test]
async fn an_https_to_http_redirect_is_refused_before_anything_is_sent_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Recorder::start(vec![STREAM_OK.to_vec(), JSON_OK.to_vec()]).await;
    let (secure, pem) = Recorder::start_tls(
        dir.path(),
        vec![redirect_to(&format!("{}/clear?token=s3cret", plain.base))],
    )
    .await;
    let stream = client(&format!("{}/stream", secure.base), Some(pem.clone()));
    let error = stream.connect("7").await.unwrap_err();
    assert_eq!(error.kind(), "redirect", "{error}");
    assert!(!error.is_retryable());
    let shown = error.to_string();
    assert!(shown.contains("https to plain http"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");

    let fetch = client(&format!("{}/base", secure.base), Some(pem));
    let error = fetch
        .fetch_document(Duration::from_secs(30), 1024)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "redirect", "{error}");
    assert!(!error.to_string().contains("s3cret"), "{error}");

    assert_eq!(secure.heads().len(), 2, "both asked the https origin");
    assert!(
        plain.heads().is_empty(),
        "nothing went out in the clear: {:?}",
        plain.heads()
    );
}
