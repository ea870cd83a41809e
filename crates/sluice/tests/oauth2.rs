//! OAuth2 client credentials over real HTTP on loopback: a token endpoint that checks the client
//! and counts its requests, and an upstream that takes only the token it issued last. Targets
//! that share a grant share one token (one request for all of them); when the upstream stops
//! taking it (a `401`), one refresh serves every target and no event is lost; no token reaches
//! the log. Kafka is the rig's (the mock cluster, or the real broker under `scripts/test`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use rig::{Rig, assert_complete_in_order, first_occurrences, ids_of};
use tokio::net::TcpListener;

/// Basic auth of `client-7:s3cret-of-the-client`.
const BASIC: &str = "Basic Y2xpZW50LTc6czNjcmV0LW9mLXRoZS1jbGllbnQ=";

#[derive(Default)]
struct Tokens {
    /// Token requests answered.
    issued: u64,
    /// The token the upstream takes (`None`: it takes none, as after a revocation).
    accepted: Option<String>,
    /// The form bodies of the token requests.
    forms: Vec<String>,
}

type Shared = Arc<Mutex<Tokens>>;

async fn token(State(tokens): State<Shared>, headers: HeaderMap, form: Bytes) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(BASIC) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::empty())
            .unwrap();
    }
    let mut tokens = tokens.lock().unwrap();
    tokens.issued += 1;
    let token = format!("tok-{}-{}", tokens.issued, "x".repeat(8));
    tokens.accepted = Some(token.clone());
    tokens
        .forms
        .push(String::from_utf8_lossy(&form).into_owned());
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(format!(
            r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600}}"#
        )))
        .unwrap()
}

async fn stream(State(tokens): State<Shared>, headers: HeaderMap) -> Response {
    let accepted = tokens.lock().unwrap().accepted.clone();
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    if accepted.is_none() || given != accepted.map(|t| format!("Bearer {t}")).as_deref() {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::empty())
            .unwrap();
    }
    let after: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let events: String = (after + 1..=after + 2)
        .map(|id| format!("id: {id}\ndata: {{\"n\":{id}}}\n\n"))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(format!("retry: 10\n\n{events}")))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_of_one_grant_share_a_token_and_refresh_it_once_on_a_401() {
    let tokens: Shared = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/token", post(token))
        .route("/stream", get(stream))
        .with_state(tokens.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let rig = Rig::new("oauth2").await;
    let secret = rig.dir.join("client-secret");
    std::fs::write(&secret, "s3cret-of-the-client\n").unwrap();
    let auth = format!(
        "auth:\n  oauth2:\n    token_url: {base}/token\n    client_id: client-7\n    \
         client_secret: {{file: {}}}\n    scopes: [read:prices, read:scores]\n",
        secret.display()
    );
    let targets = ["a", "b", "c"];
    for id in targets {
        rig.target(id, &format!("{base}/stream?target={id}"), &auth);
    }
    let worker = rig.start("").await;
    let expected: Vec<(&str, u64)> = targets.iter().map(|t| (*t, 6)).collect();
    rig.wait_all_ids(&expected).await;
    {
        let tokens = tokens.lock().unwrap();
        assert_eq!(tokens.issued, 1, "one token for the three targets");
        assert_eq!(
            tokens.forms[0],
            "grant_type=client_credentials&scope=read%3Aprices+read%3Ascores"
        );
    }

    // The upstream stops taking the token: every target's next connect gets a 401.
    tokens.lock().unwrap().accepted = None;
    let records = rig.records_until(|_| true).await;
    let after: Vec<(&str, u64)> = targets
        .iter()
        .map(|t| (*t, first_occurrences(&ids_of(&records, t)).len() as u64 + 6))
        .collect();
    let records = rig.wait_all_ids(&after).await;
    for target in targets {
        let ids = ids_of(&records, target);
        let n = first_occurrences(&ids).len() as u64;
        assert_complete_in_order(target, &ids, n);
    }
    assert_eq!(
        tokens.lock().unwrap().issued,
        2,
        "one refresh served every target"
    );
    let (exit, log) = worker.terminate().await;
    assert!(exit.success(), "{log}");
    assert!(!log.contains("tok-"), "no token in the log");
    assert!(!log.contains("s3cret"), "no client secret in the log");
}
