//! Targets managed at run time, through the real path: a `sluice worker` process on Kafka (the
//! real broker named by `SLUICE_TEST_KAFKA`, or the mock cluster), the simulator over HTTP, the
//! admin API over HTTP. Target files are watched (added, changed, broken, removed while the
//! worker runs), definitions written to the targets topic through `PUT`/`DELETE
//! /v1/admin/targets/{id}` start, stop and survive a restart, a removed and re-added target
//! resumes from its checkpoint, and an id defined both ways is reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use rig::{Rig, Worker, assert_complete_in_order, first_occurrences, ids_of, sim};
use serde_json::Value;
use sluice_testkit::unique_topic;

const TOKEN: &str = "run-time-admin-token";

/// The worker.yaml lines these tests add: the admin API, and a fast look at the files.
const EXTRA: &str = "admin:\n  token: {file: admin-token}\ntargets_watch: 100ms\n";

fn target_yaml(id: &str, url: &str, extra: &str) -> String {
    format!("id: {id}\nurl: {url}\n{extra}")
}

/// An admin request on `worker`: status and JSON body.
async fn admin(
    worker: &Worker,
    method: Method,
    path: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}/v1/admin{path}", worker.base()))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/yaml")
            .body(body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert!(!text.contains(TOKEN), "{text}");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The `/status` rows' target ids.
async fn rows(worker: &Worker) -> Vec<String> {
    let status = worker.status().await;
    status["targets"]
        .as_array()
        .expect("targets array")
        .iter()
        .map(|row| row["target"].as_str().unwrap().to_owned())
        .collect()
}

/// The (redacted) url of `target`'s `/status` row, if it has one now.
async fn url_of(worker: &Worker, target: &str) -> Option<String> {
    let status = worker.status().await;
    status["targets"]
        .as_array()?
        .iter()
        .find(|row| row["target"] == target)
        .and_then(|row| row["url"].as_str().map(str::to_owned))
}

async fn definitions(worker: &Worker) -> Value {
    let (code, body) = worker.get("/status/definitions.json").await.unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `target` has `n` distinct event ids in Kafka beyond the `after` it had.
async fn wait_more(rig: &Rig, target: &str, after: usize, n: usize) -> Vec<u64> {
    let records = rig
        .records_until(|records| first_occurrences(&ids_of(records, target)).len() >= after + n)
        .await;
    ids_of(&records, target)
}

/// A simulator, the url of its stream, and a worker running target `a` (a file) on it with the
/// admin API on; returns once `a` streams.
async fn start(rig: &Rig) -> (sluice_sim::RunningSim, String, Worker) {
    let upstream = sim(1_000_000, 200.0).await;
    let url = format!("{}?last_event_id=0", upstream.stream_url());
    rig.target("a", &url, "");
    std::fs::write(rig.dir.join("admin-token"), TOKEN).unwrap();
    let worker = rig.start(EXTRA).await;
    worker.wait_ready().await;
    rig.wait_all_ids(&[("a", 5)]).await;
    (upstream, url, worker)
}

#[tokio::test]
async fn target_files_are_watched_while_the_worker_runs() {
    let rig = Rig::new("defs-files").await;
    let (_upstream, url, worker) = start(&rig).await;

    // Added: it streams, without a restart.
    let b = rig.dir.join("targets/b.yaml");
    std::fs::write(&b, target_yaml("b", &url, "")).unwrap();
    let before = wait_more(&rig, "b", 0, 5).await;

    // Changed (another simulator, the same stream): it restarts with the new definition, from
    // its checkpoint (the first occurrences stay 1..=n: it resumed, it did not start over).
    let other = sim(1_000_000, 200.0).await;
    let other_base = other.base_url();
    let changed = format!("{}?last_event_id=0", other.stream_url());
    std::fs::write(&b, target_yaml("b", &changed, "")).unwrap();
    worker
        .wait_for("b to run with its changed url", async |w: &Worker| {
            url_of(w, "b")
                .await
                .is_some_and(|u| u.starts_with(&other_base))
        })
        .await;
    let ids = wait_more(&rig, "b", first_occurrences(&before).len(), 5).await;
    let n = first_occurrences(&ids).len() as u64;
    assert_complete_in_order("b", &first_occurrences(&ids), n);

    // Broken: the definition that ran runs on, and the problem is shown.
    std::fs::write(&b, "id: b\nurl: ftp://nowhere\n").unwrap();
    worker
        .wait_for(
            "the broken file's problem in /status/definitions.json",
            async |w: &Worker| {
                definitions(w).await["problems"]
                    .as_array()
                    .is_some_and(|p| {
                        p.iter().any(|p| {
                            p["target"] == "b"
                                && p["message"].as_str().unwrap().starts_with("url: ")
                        })
                    })
            },
        )
        .await;
    assert!(rows(&worker).await.contains(&"b".to_owned()), "b runs on");
    let (_, console) = worker.get("/status.html").await.unwrap();
    assert!(console.contains("id=\"definition-problems\""), "{console}");
    assert!(console.contains("b.yaml): url: "), "{console}");
    let (code, listed) = admin(&worker, Method::GET, "/targets", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        listed["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("still runs"),
        "{listed}"
    );

    // Removed: it stops; the other target never stopped.
    std::fs::remove_file(&b).unwrap();
    worker
        .wait_for("b to stop", async |w: &Worker| {
            !rows(w).await.contains(&"b".to_owned())
        })
        .await;
    assert!(
        definitions(&worker).await["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(worker.row("a").await["state"], "streaming");
    let (status, log) = worker.terminate().await;
    assert!(status.success(), "{log}");
}

#[tokio::test]
async fn the_admin_api_defines_and_removes_targets_in_the_targets_topic() {
    let rig = Rig::new("defs-topic").await;
    let (_upstream, url, worker) = start(&rig).await;

    // Invalid: every problem, with the validation's messages, and nothing written.
    let (code, body) = admin(
        &worker,
        Method::PUT,
        "/targets/c",
        Some("id: c\nurl: ftp://x\nbogus: 1\n".to_owned()),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["kind"], "invalid_definition");
    let fields: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"bogus"), "{body}");
    let (code, body) = admin(
        &worker,
        Method::PUT,
        "/targets/c",
        Some(target_yaml("other", &url, "")),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["kind"], "id_mismatch");
    // A file's target is the file's.
    let (code, body) = admin(
        &worker,
        Method::PUT,
        "/targets/a",
        Some(target_yaml("a", &url, "")),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let (code, _) = admin(&worker, Method::DELETE, "/targets/a", None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, _) = admin(&worker, Method::DELETE, "/targets/nobody", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // Defined: it streams.
    let (code, body) = admin(
        &worker,
        Method::PUT,
        "/targets/c",
        Some(target_yaml("c", &url, "")),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let first = wait_more(&rig, "c", 0, 5).await;
    let (_, listed) = admin(&worker, Method::GET, "/targets", None).await;
    assert_eq!(
        listed["defined"]["topic"],
        serde_json::json!(["c"]),
        "{listed}"
    );

    // Removed: it stops, with its checkpoint stored.
    let (code, _) = admin(&worker, Method::DELETE, "/targets/c", None).await;
    assert_eq!(code, StatusCode::OK);
    worker
        .wait_for("c to stop", async |w: &Worker| {
            !rows(w).await.contains(&"c".to_owned())
        })
        .await;
    let stopped_at: u64 = rig.checkpoints().await["c"].parse().unwrap();
    assert!(stopped_at >= 5);

    // Defined again: it resumes after that checkpoint, it does not start over.
    let (code, _) = admin(
        &worker,
        Method::PUT,
        "/targets/c",
        Some(target_yaml("c", &url, "")),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let seen = first_occurrences(&first)
        .len()
        .max(usize::try_from(stopped_at).unwrap());
    let ids = wait_more(&rig, "c", seen, 5).await;
    let firsts = first_occurrences(&ids);
    assert_complete_in_order("c", &firsts, firsts.len() as u64);

    // It survives a restart: the topic defines it, so the new process runs it too.
    let (status, log) = worker.terminate().await;
    assert!(status.success(), "{log}");
    let worker = rig.start(EXTRA).await;
    worker.wait_ready().await;
    let ids = wait_more(&rig, "c", firsts.len(), 5).await;
    let firsts = first_occurrences(&ids);
    assert_complete_in_order("c", &firsts, firsts.len() as u64);

    // The same id in a file too: the file's definition runs, and both say so.
    let other = sim(1_000_000, 200.0).await;
    let other_base = other.base_url();
    rig.target("c", &format!("{}?last_event_id=0", other.stream_url()), "");
    worker
        .wait_for("c to run the file's definition", async |w: &Worker| {
            url_of(w, "c")
                .await
                .is_some_and(|u| u.starts_with(&other_base))
        })
        .await;
    let problems = definitions(&worker).await["problems"].clone();
    assert!(
        problems
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == "c"
                && p["message"].as_str().unwrap().contains("defined both in")),
        "{problems}"
    );
    let (code, body) = admin(
        &worker,
        Method::PUT,
        "/targets/c",
        Some(target_yaml("c", &url, "")),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let (status, log) = worker.terminate().await;
    assert!(status.success(), "{log}");
}

/// Runs the `sluice` binary with `args` against `worker`, the token in the environment:
/// whether it succeeded, stdout, stderr.
async fn cli(worker: &Worker, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(["--worker".to_owned(), worker.base().to_owned()]);
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&all)
            .env("SLUICE_ADMIN_TOKEN", TOKEN)
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
async fn the_cli_puts_and_deletes_definitions_and_resets_a_checkpoint() {
    let rig = Rig::new("defs-cli").await;
    let (_upstream, url, worker) = start(&rig).await;
    let file = rig.dir.join("d.yaml");

    // An invalid file: the worker's validation messages, non-zero exit, nothing defined.
    std::fs::write(&file, "id: d\nurl: ftp://x\n").unwrap();
    let path = file.to_str().unwrap();
    let (ok, _, err) = cli(&worker, &["targets", "put", "d", path]).await;
    assert!(!ok);
    assert!(err.contains("400") && err.contains("url"), "{err}");
    let (ok, _, err) = cli(&worker, &["targets", "put", "d", "/nonexistent.yaml"]).await;
    assert!(!ok && err.contains("cannot read the target file"), "{err}");

    std::fs::write(&file, target_yaml("d", &url, "")).unwrap();
    let (ok, out, err) = cli(&worker, &["targets", "put", "d", path]).await;
    assert!(ok, "{err}");
    assert!(out.contains("\"defined\":true"), "{out}");
    let before = wait_more(&rig, "d", 0, 5).await;
    assert_eq!(before.iter().filter(|id| **id == 1).count(), 1);

    // Reset: through the owner (paused, tombstone, resumed), it starts over without
    // Last-Event-ID, so the upstream sends its first ids again.
    let (ok, out, err) = cli(&worker, &["checkpoints", "reset", "d"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("\"checkpoint\":null"), "{out}");
    rig.records_until(|records| ids_of(records, "d").iter().filter(|id| **id == 1).count() == 2)
        .await;

    let (ok, _, err) = cli(&worker, &["targets", "delete", "d"]).await;
    assert!(ok, "{err}");
    worker
        .wait_for("d to stop", async |w: &Worker| {
            !rows(w).await.contains(&"d".to_owned())
        })
        .await;
    let (ok, _, err) = cli(&worker, &["targets", "delete", "d"]).await;
    assert!(!ok && err.contains("404"), "{err}");
    let (status, log) = worker.terminate().await;
    assert!(status.success(), "{log}");
}

/// The targets `worker` runs now (its `/status` rows; none when it does not answer).
async fn running(worker: &Worker) -> BTreeSet<String> {
    let Some((200, body)) = worker.get("/status").await else {
        return BTreeSet::new();
    };
    let status: Value = serde_json::from_str(&body).expect("status is json");
    status["targets"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["target"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_each_definition_runs_on_its_owner_only() {
    if !rig::real_broker_or_skip(
        "in_a_fleet_each_definition_runs_on_its_owner_only",
        "librdkafka's mock cluster does not finish cooperative rebalances; run scripts/test",
    ) {
        return;
    }
    let rig = Rig::new("defs-fleet").await;
    let upstream = sim(1_000_000, 100.0).await;
    let url = format!("{}?last_event_id=0", upstream.stream_url());
    rig.target("f0", &url, "");
    std::fs::write(rig.dir.join("admin-token"), TOKEN).unwrap();
    let group = unique_topic("defs-fleet.group");
    let checkpoints = unique_topic("defs-fleet.checkpoints");
    let extra =
        format!("{EXTRA}fleet:\n  group_id: {group}\n  partitions: 4\n  session_timeout: 3s\n");
    let env = [("SLUICE__TOPICS__CHECKPOINTS", checkpoints.as_str())];
    let first = rig.start_with_env(&extra, &env).await;
    let second = rig.start_with_env(&extra, &env).await;
    first.wait_ready().await;
    second.wait_ready().await;

    // Through either worker's API, through the files: each target runs on exactly one.
    let mut all: BTreeSet<String> = ["f0".to_owned()].into();
    for n in 0..6 {
        let id = format!("r{n}");
        let via = if n % 2 == 0 { &first } else { &second };
        let (code, body) = admin(
            via,
            Method::PUT,
            &format!("/targets/{id}"),
            Some(target_yaml(&id, &url, "")),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        all.insert(id);
    }
    rig.target("f1", &url, "");
    all.insert("f1".to_owned());
    let split = async |all: &BTreeSet<String>| {
        first
            .wait_for(
                "every target to run on exactly one worker",
                async |w: &Worker| {
                    let a = running(w).await;
                    let b = running(&second).await;
                    let union: BTreeSet<String> = a.union(&b).cloned().collect();
                    union == *all && a.is_disjoint(&b)
                },
            )
            .await;
    };
    split(&all).await;
    // The fleet view counts them: every target owned by some member.
    let count = all.len();
    second
        .wait_for(
            "the fleet view to count every defined target",
            async |w: &Worker| {
                let Some((200, body)) = w.get("/status/fleet.json").await else {
                    return false;
                };
                let view: Value = serde_json::from_str(&body).expect("fleet view is json");
                let owned: u64 = view["members"]
                    .as_array()
                    .map(|m| m.iter().filter_map(|m| m["targets"].as_u64()).sum())
                    .unwrap_or(0);
                owned == count as u64 && view["unowned_targets"] == 0
            },
        )
        .await;
    let expected: Vec<(&str, u64)> = all.iter().map(|id| (id.as_str(), 5)).collect();
    rig.wait_all_ids(&expected).await;

    // Removed through the other worker, and a file removed: their owners stop them.
    for n in 0..6 {
        let id = format!("r{n}");
        let via = if n % 2 == 0 { &second } else { &first };
        let (code, body) = admin(via, Method::DELETE, &format!("/targets/{id}"), None).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        all.remove(&id);
    }
    std::fs::remove_file(rig.dir.join("targets/f1.yaml")).unwrap();
    all.remove("f1");
    split(&all).await;
    drop(second);
    drop(first);
}
