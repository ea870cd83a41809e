//! The worker's admin API over real HTTP (`/v1/admin/...` on the operations server), with a real
//! worker, the simulator and Kafka (the mock cluster, or the real broker named by
//! `SLUICE_TEST_KAFKA`): off without a token, 401 without the right one, and pause, resume,
//! restart and checkpoint reads that act on the running worker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use reqwest::StatusCode;
use rig::{LIMIT, Rig, ids_of, sim};
use serde_json::Value;
use sluice_worker::Control;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cret-admin-token";

/// Starts a worker on `rig` with `extra` worker.yaml; returns its base URL, stop and task.
async fn start(
    rig: &Rig,
    extra: &str,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), sluice_worker::WorkerError>>,
) {
    let config = sluice_config::load(&rig.worker_yaml(0, extra)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_control, inbox) = Control::channel();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(sluice_worker::run_controlled(
        config,
        Some(listener),
        shutdown.clone(),
        inbox,
    ));
    (base, shutdown, worker)
}

async fn stop(
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<Result<(), sluice_worker::WorkerError>>,
) {
    shutdown.cancel();
    tokio::time::timeout(LIMIT, worker)
        .await
        .expect("the worker stops within the limit")
        .unwrap()
        .expect("a clean shutdown");
}

#[tokio::test]
async fn without_a_token_the_admin_api_is_off() {
    let rig = Rig::new("admin-off").await;
    let sim = sim(1_000_000, 200.0).await;
    rig.target("a", &format!("{}?last_event_id=0", sim.stream_url()), "");
    let (base, shutdown, worker) = start(&rig, "").await;
    rig.wait_all_ids(&[("a", 5)]).await;
    let http = reqwest::Client::new();
    let answer = http
        .get(format!("{base}/v1/admin/targets"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    stop(shutdown, worker).await;
}

#[tokio::test]
async fn the_admin_api_pauses_resumes_and_restarts_targets_behind_a_bearer_token() {
    let rig = Rig::new("admin").await;
    let sim = sim(1_000_000, 200.0).await;
    let url = format!("{}?last_event_id=0", sim.stream_url());
    rig.target("a", &url, "");
    rig.target("b", &url, "");
    std::fs::write(rig.dir.join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let (base, shutdown, worker) = start(&rig, "admin:\n  token: {file: admin-token}\n").await;
    rig.wait_all_ids(&[("a", 20), ("b", 20)]).await;
    let http = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}/v1/admin{path}"))
            .bearer_auth(TOKEN)
    };

    // No token, a wrong one, another scheme: 401, and nothing in the answer names the token.
    for request in [
        http.get(format!("{base}/v1/admin/targets")),
        http.get(format!("{base}/v1/admin/targets"))
            .bearer_auth("wrong"),
        http.post(format!("{base}/v1/admin/targets/a/pause"))
            .basic_auth("admin", Some(TOKEN)),
    ] {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        let text = answer.text().await.unwrap();
        assert!(!text.contains(TOKEN), "{text}");
    }
    let listed: Value = admin(reqwest::Method::GET, "/targets")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["running"], serde_json::json!(["a", "b"]), "{listed}");
    assert_eq!(listed["paused"], serde_json::json!([]), "{listed}");

    // Pause: the answer carries the final checkpoint, as Kafka stored it.
    let answer = admin(reqwest::Method::POST, "/targets/a/pause")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let paused: Value = answer.json().await.unwrap();
    let checkpoint = paused["checkpoint"]
        .as_str()
        .expect("a checkpoint")
        .to_owned();
    assert_eq!(rig.checkpoints().await.get("a"), Some(&checkpoint));
    let one: Value = admin(reqwest::Method::GET, "/targets/a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["paused"], true, "{one}");
    assert_eq!(one["status"]["delivery"], "paused", "{one}");
    let read: Value = admin(reqwest::Method::GET, "/targets/a/checkpoint")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["checkpoint"], checkpoint.as_str(), "{read}");
    // Pausing again, resuming a running one, an unknown id: refused with a kind.
    let again = admin(reqwest::Method::POST, "/targets/a/pause")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let running = admin(reqwest::Method::POST, "/targets/b/resume")
        .send()
        .await
        .unwrap();
    assert_eq!(running.status(), StatusCode::CONFLICT);
    let body: Value = running.json().await.unwrap();
    assert_eq!(body["kind"], "not_paused", "{body}");
    let unknown = admin(reqwest::Method::GET, "/targets/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // Resume from the checkpoint; restart (stop with a final checkpoint, start from it): every
    // id of `a` in order, none sent twice.
    let answer = admin(reqwest::Method::POST, "/targets/a/resume")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let last: u64 = checkpoint.parse().unwrap();
    rig.wait_all_ids(&[("a", last + 20)]).await;
    let answer = admin(reqwest::Method::POST, "/targets/a/restart")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let restarted: Value = answer.json().await.unwrap();
    let from: u64 = restarted["restarted_from"]
        .as_str()
        .expect("restarted from a checkpoint")
        .parse()
        .unwrap();
    assert!(from >= last + 20, "{restarted}");
    let records = rig.wait_all_ids(&[("a", from + 20)]).await;
    let a_ids = ids_of(&records, "a");
    let newest = a_ids.iter().copied().max().unwrap_or(0);
    rig::assert_complete_in_order("a", &a_ids, newest);
    assert_eq!(
        rig::first_occurrences(&a_ids).len(),
        a_ids.len(),
        "a resent ids"
    );
    let listed: Value = admin(reqwest::Method::GET, "/targets")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["running"], serde_json::json!(["a", "b"]), "{listed}");

    stop(shutdown, worker).await;
}

/// Runs the real `sluice` binary with `args` and `env`; returns (success, stdout, stderr).
async fn sluice(args: Vec<String>, env: Vec<(&'static str, String)>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .env_remove("SLUICE_ADMIN_TOKEN")
            .envs(env)
            .output()
            .expect("run sluice");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_cli_verbs_talk_to_a_workers_admin_api() {
    let rig = Rig::new("admin-cli").await;
    let sim = sim(1_000_000, 200.0).await;
    rig.target("a", &format!("{}?last_event_id=0", sim.stream_url()), "");
    let token_file = rig.dir.join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (base, shutdown, worker) = start(&rig, "admin:\n  token: {file: admin-token}\n").await;
    rig.wait_all_ids(&[("a", 10)]).await;
    let args = |words: &[&str]| -> Vec<String> {
        words
            .iter()
            .map(|w| (*w).to_owned())
            .chain(["--worker".to_owned(), base.clone()])
            .collect()
    };
    let with_env = vec![("SLUICE_ADMIN_TOKEN", TOKEN.to_owned())];

    let (ok, out, err) = sluice(args(&["targets", "list"]), with_env.clone()).await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["running"], serde_json::json!(["a"]), "{out}");

    let mut pause = args(&["targets", "pause", "a"]);
    pause.extend(["--token-file".to_owned(), token_file.display().to_string()]);
    let (ok, out, err) = sluice(pause, Vec::new()).await;
    assert!(ok, "{err}");
    let paused: Value = serde_json::from_str(&out).unwrap();
    let checkpoint = paused["checkpoint"]
        .as_str()
        .expect("checkpoint")
        .to_owned();

    let (ok, out, err) = sluice(args(&["checkpoints", "get", "a"]), with_env.clone()).await;
    assert!(ok, "{err}");
    let read: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(read["checkpoint"], checkpoint.as_str(), "{out}");

    // A refusal: non-zero, the status on stderr, and no token anywhere.
    let (ok, out, err) = sluice(args(&["targets", "resume", "nope"]), with_env.clone()).await;
    assert!(!ok, "{out}");
    assert!(err.contains("409") || err.contains("404"), "{err}");
    let (ok, _, err) = sluice(
        args(&["targets", "list"]),
        vec![("SLUICE_ADMIN_TOKEN", "wrong".to_owned())],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    let (ok, _, err) = sluice(args(&["targets", "list"]), Vec::new()).await;
    assert!(!ok);
    assert!(err.contains("SLUICE_ADMIN_TOKEN"), "{err}");

    let (ok, _, err) = sluice(args(&["targets", "resume", "a"]), with_env).await;
    assert!(ok, "{err}");
    stop(shutdown, worker).await;
}

#[tokio::test]
async fn moving_a_checkpoint_goes_through_the_owner_and_the_target_resumes_after_it() {
    let rig = Rig::new("admin-checkpoint").await;
    let sim = sim(1_000_000, 200.0).await;
    rig.target("a", &format!("{}?last_event_id=0", sim.stream_url()), "");
    std::fs::write(rig.dir.join("admin-token"), TOKEN).unwrap();
    let (base, shutdown, worker) = start(&rig, "admin:\n  token: {file: admin-token}\n").await;
    rig.wait_all_ids(&[("a", 30)]).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/admin/targets/a/checkpoint");

    // Invalid: refused, nothing changes.
    for body in [
        r#"{"checkpoint": ""}"#,
        r#"{"checkpoint": "1\n2"}"#,
        "not json",
    ] {
        let answer = http
            .put(&url)
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{body}");
    }

    // Back to 5, through the CLI: paused, written above the run's epoch, resumed after it.
    let (ok, out, err) = sluice(
        vec![
            "checkpoints".into(),
            "set".into(),
            "a".into(),
            "5".into(),
            "--worker".into(),
            base.clone(),
        ],
        vec![("SLUICE_ADMIN_TOKEN", TOKEN.to_owned())],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("\"5\""), "{out}");
    // The upstream is asked for what follows 5 again: 6 lands a second time, then the rest.
    let records = rig
        .records_until(|records| ids_of(records, "a").iter().filter(|id| **id == 6).count() >= 2)
        .await;
    let a_ids = ids_of(&records, "a");
    let newest = a_ids.iter().copied().max().unwrap_or(0);
    rig::assert_complete_in_order("a", &a_ids, newest);
    // And the target's own later checkpoints carry an epoch above the moved one: they win.
    let newest_after = newest + 20;
    rig.wait_all_ids(&[("a", newest_after)]).await;
    let read: Value = http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(read["owner_epoch"].as_u64().unwrap() >= 3, "{read}");

    // A target not here: 404.
    let answer = http
        .put(format!("{base}/v1/admin/targets/nope/checkpoint"))
        .bearer_auth(TOKEN)
        .body(r#"{"checkpoint": "5"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    stop(shutdown, worker).await;
}
