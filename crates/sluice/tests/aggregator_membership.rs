//! End to end, on a real broker: the aggregators' consumer group. A static member (its
//! `group.instance.id` from `SLUICE__KAFKA__GROUP_INSTANCE_ID`) killed with SIGKILL and
//! restarted with the same id serves again at once, long before its previous run's session
//! (45 s here) would have timed out; a second aggregator joining moves only the partitions it
//! takes (cooperative-sticky), so the targets that stay are served throughout and their
//! `/stream` clients stay connected; a static member stopped gracefully leaves the group, so
//! the other takes its targets without waiting for the session timeout.
//!
//! Every process is real (simulator, worker, aggregators) and every hop is TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rig::{Rig, Worker, aggregate_yaml, one_target_per_partition};
use serde_json::Value;
use sluice_sim::{RunningSim, SimConfig};
use sluice_testkit::TestKafka;
use tokio::time::Instant;

/// The session timeout of these tests: far above every bound they check, so a run that waits
/// for a session to time out fails them.
const SESSION_TIMEOUT_MS: u32 = 45_000;
/// How soon a restarted static member must serve again (the bound).
const RESTART_BOUND: Duration = Duration::from_secs(10);
/// How soon the remaining aggregator must serve the targets of one that left.
const LEAVE_BOUND: Duration = Duration::from_secs(20);
/// The environment override of `kafka.group_instance_id`.
const INSTANCE_ENV: &str = "SLUICE__KAFKA__GROUP_INSTANCE_ID";

fn sim_config(events: u64) -> SimConfig {
    SimConfig {
        entities: 20,
        rate: 100.0,
        max_events: Some(events),
        heartbeat: Duration::from_millis(100),
        ..SimConfig::default()
    }
}

/// Whether the test runs on a real broker (static membership and cooperative rebalances are
/// what a real group coordinator does).
fn real_broker_or_skip(test: &str) -> bool {
    rig::real_broker_or_skip(test, "needs a real broker's group coordinator")
}

/// A rig with one simulator target per partition, each streaming for about `events / 100` s.
async fn rig_with_targets(name: &str, partitions: i32, events: u64) -> (Rig, Vec<RunningSim>) {
    let kafka = TestKafka::start().expect("test kafka");
    let rig = Rig::with_partitions(name, kafka, partitions).await;
    let mut sims = Vec::new();
    for id in one_target_per_partition(partitions) {
        let sim = rig::sim_with(sim_config(events)).await;
        rig.target(&id, &sim.stream_url(), &aggregate_yaml(&sim.snapshot_url()));
        sims.push(sim);
    }
    (rig, sims)
}

async fn start_member(rig: &Rig, instance: &str, ready: bool) -> Worker {
    rig.start_aggregator_with("", ready, SESSION_TIMEOUT_MS, &[(INSTANCE_ENV, instance)])
        .await
}

/// The targets `aggregator` owns now.
async fn owned(aggregator: &Worker) -> Vec<String> {
    let Some((200, body)) = aggregator.get("/v1/targets").await else {
        return Vec::new();
    };
    let list: Value = serde_json::from_str(&body).expect("json");
    list["targets"]
        .as_array()
        .expect("targets array")
        .iter()
        .map(|t| t["target"].as_str().expect("target id").to_owned())
        .collect()
}

/// Whether `aggregator` serves `target`'s state (200: complete, synced or not).
async fn serves(aggregator: &Worker, target: &str) -> bool {
    aggregator
        .get(&format!("/v1/targets/{target}/state"))
        .await
        .is_some_and(|(code, _)| code == 200)
}

/// Polls until `aggregator` serves every one of `targets`; returns how long that took from
/// `since`, failing the test once `bound` has passed.
async fn served_within(
    aggregator: &Worker,
    targets: &[String],
    since: Instant,
    bound: Duration,
) -> Duration {
    loop {
        let mut all = true;
        for target in targets {
            all &= serves(aggregator, target).await;
        }
        let elapsed = since.elapsed();
        if all {
            return elapsed;
        }
        assert!(
            elapsed < bound,
            "{targets:?} not served within {bound:?}; log:\n{}",
            aggregator.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_killed_and_restarted_with_its_id_serves_again_at_once() {
    if !real_broker_or_skip("a_static_member_killed_and_restarted_with_its_id_serves_again_at_once")
    {
        return;
    }
    let (rig, _sims) = rig_with_targets("member-restart", 2, 6_000).await;
    let targets = one_target_per_partition(2);
    let worker = rig.start("").await;
    let first = start_member(&rig, "aggregator-0", true).await;
    first
        .wait_for("a snapshot in kafka", async |a: &Worker| {
            a.metric("sluice_aggregator_snapshots_written_total{sink=\"kafka\"}")
                .await
                >= 1.0
        })
        .await;
    served_within(&first, &targets, Instant::now(), rig::LIMIT).await;

    // SIGKILL: no revocation, no leave; the broker still counts the dead run as a member.
    first.kill().await;
    let restarted_at = Instant::now();
    let second = start_member(&rig, "aggregator-0", false).await;
    let took = served_within(&second, &targets, restarted_at, RESTART_BOUND).await;
    eprintln!("restarted static member served again after {took:?}");
    second.wait_ready().await;
    assert!(
        second.log().contains("target restored from its snapshot"),
        "the restart took its partitions back from the snapshots:\n{}",
        second.log()
    );
    drop(worker);
}

/// Polls `/state` of every target on `aggregator` until `stop`, counting per target the answers
/// that were not 200 (the target unserved).
fn watch_states(
    aggregator: &Worker,
    targets: &[String],
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeMap<String, u64>> {
    let base = aggregator.base().to_owned();
    let targets = targets.to_vec();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut unserved: BTreeMap<String, u64> = BTreeMap::new();
        while !stop.load(Ordering::Acquire) {
            for target in &targets {
                let code = http
                    .get(format!("{base}/v1/targets/{target}/state"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if code != 200 {
                    *unserved.entry(target.clone()).or_default() += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        unserved
    })
}

/// An open `/stream` of `target` on `aggregator`: counts the bytes received, and says when the
/// server ended it.
struct Stream {
    bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

async fn open_stream(aggregator: &Worker, target: &str) -> Stream {
    let mut response = reqwest::Client::new()
        .get(format!("{}/v1/targets/{target}/stream", aggregator.base()))
        .send()
        .await
        .expect("stream answers");
    assert_eq!(response.status().as_u16(), 200, "{target}: stream opens");
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = bytes.clone();
    let task = tokio::spawn(async move {
        while let Ok(Some(chunk)) = response.chunk().await {
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    Stream { bytes, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_aggregator_joining_keeps_serving_the_targets_that_stay() {
    if !real_broker_or_skip("a_second_aggregator_joining_keeps_serving_the_targets_that_stay") {
        return;
    }
    let (rig, _sims) = rig_with_targets("member-join", 4, 20_000).await;
    let targets = one_target_per_partition(4);
    let worker = rig.start("").await;
    let first = start_member(&rig, "aggregator-0", true).await;
    served_within(&first, &targets, Instant::now(), rig::LIMIT).await;
    first.wait_ready().await;

    let mut streams = BTreeMap::new();
    for target in &targets {
        streams.insert(target.clone(), open_stream(&first, target).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_states(&first, &targets, stop.clone());

    let second = start_member(&rig, "aggregator-1", false).await;
    second
        .wait_for("the group to split the targets", async |b: &Worker| {
            !owned(b).await.is_empty() && b.get("/readyz").await.is_some_and(|(c, _)| c == 200)
        })
        .await;
    let (stayed, moved) = (owned(&first).await, owned(&second).await);
    stop.store(true, Ordering::Release);
    let unserved = watcher.await.expect("watcher");
    assert!(
        !stayed.is_empty() && !moved.is_empty(),
        "both own targets: {stayed:?} {moved:?}"
    );
    assert!(
        stayed.iter().all(|t| !moved.contains(t)),
        "one owner each: {stayed:?} {moved:?}"
    );

    for target in &stayed {
        assert_eq!(
            unserved.get(target).copied().unwrap_or(0),
            0,
            "{target} stayed on the first aggregator and was unserved during the rebalance \
             ({unserved:?}); log:\n{}",
            first.log()
        );
        let stream = &streams[target];
        assert!(
            !stream.task.is_finished(),
            "{target} stayed, but its /stream client was disconnected by the rebalance"
        );
        // Still live: changes keep arriving on the same connection.
        let before = stream.bytes.load(Ordering::Relaxed);
        first
            .wait_for(
                &format!("{target}'s stream to carry changes"),
                async |_: &Worker| stream.bytes.load(Ordering::Relaxed) > before,
            )
            .await;
    }
    for target in &moved {
        // A target that moved: its stream on the first ends (404 for it there from now on).
        first
            .wait_for(
                &format!("{target}'s stream to end on the first"),
                async |_: &Worker| streams[target].task.is_finished(),
            )
            .await;
    }
    served_within(&second, &moved, Instant::now(), rig::LIMIT).await;
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_stopped_gracefully_leaves_so_the_other_serves_its_targets_at_once() {
    if !real_broker_or_skip(
        "a_static_member_stopped_gracefully_leaves_so_the_other_serves_its_targets_at_once",
    ) {
        return;
    }
    let (rig, _sims) = rig_with_targets("member-leave", 4, 20_000).await;
    let targets = one_target_per_partition(4);
    let worker = rig.start("").await;
    let first = start_member(&rig, "aggregator-0", true).await;
    let second = start_member(&rig, "aggregator-1", false).await;
    second
        .wait_for("the group to split the targets", async |b: &Worker| {
            !owned(b).await.is_empty() && b.get("/readyz").await.is_some_and(|(c, _)| c == 200)
        })
        .await;
    let moving = owned(&second).await;

    // A scale-in: SIGTERM, as Kubernetes sends to the pod it removes.
    let stopped_at = Instant::now();
    let (exit, log) = second.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(
        log.contains("left the consumer group"),
        "the static member left explicitly:\n{log}"
    );
    let took = served_within(&first, &moving, stopped_at, LEAVE_BOUND).await;
    eprintln!("targets of the stopped static member served by the other after {took:?}");
    served_within(&first, &targets, Instant::now(), rig::LIMIT).await;
    drop(worker);
}

/// `GET path` on `aggregator` without following redirects: status, `Location`, body.
async fn get_raw(aggregator: &Worker, path: &str) -> (u16, String, String) {
    let response = rig::no_redirects()
        .get(format!("{}{path}", aggregator.base()))
        .send()
        .await
        .expect("the aggregator answers");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().expect("an ASCII Location").to_owned())
        .unwrap_or_default();
    (status, location, response.text().await.expect("a body"))
}

/// `/v1/targets`' `group`: target → owner URL (as that aggregator sees it).
async fn group_view(aggregator: &Worker) -> BTreeMap<String, Option<String>> {
    let (_, _, body) = get_raw(aggregator, "/v1/targets").await;
    let list: Value = serde_json::from_str(&body).expect("json");
    list["group"]
        .as_array()
        .expect("a group array")
        .iter()
        .map(|t| {
            (
                t["target"].as_str().expect("id").to_owned(),
                t["owner"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_aggregator_sends_a_client_to_the_owner_and_lists_every_target_with_its_owner() {
    if !real_broker_or_skip(
        "any_aggregator_sends_a_client_to_the_owner_and_lists_every_target_with_its_owner",
    ) {
        return;
    }
    let (rig, _sims) = rig_with_targets("member-route", 4, 20_000).await;
    let targets = one_target_per_partition(4);
    let worker = rig.start("").await;
    let a = start_member(&rig, "aggregator-0", true).await;
    let b = start_member(&rig, "aggregator-1", false).await;
    b.wait_for("the group to split the targets", async |b: &Worker| {
        !owned(b).await.is_empty() && b.get("/readyz").await.is_some_and(|(c, _)| c == 200)
    })
    .await;
    a.wait_ready().await;

    // Both see every target's owner, and agree with what each says it holds.
    let expected = async || -> BTreeMap<String, Option<String>> {
        let (mine, theirs) = (owned(&a).await, owned(&b).await);
        targets
            .iter()
            .map(|t| {
                let owner = if mine.contains(t) {
                    Some(a.base().to_owned())
                } else if theirs.contains(t) {
                    Some(b.base().to_owned())
                } else {
                    None
                };
                (t.clone(), owner)
            })
            .collect()
    };
    for member in [&a, &b] {
        member
            .wait_for("every owner known and right", async |m: &Worker| {
                let want = expected().await;
                want.values().all(Option::is_some) && group_view(m).await == want
            })
            .await;
    }

    // A request to the aggregator that does not own a target is sent to the one that does,
    // path and query kept; the owner answers it.
    let (on_a, on_b) = (owned(&a).await, owned(&b).await);
    for (asked, owner, target) in [(&a, &b, &on_b[0]), (&b, &a, &on_a[0])] {
        let path = format!("/v1/targets/{target}/state?timeout=1s");
        let (status, location, body) = get_raw(asked, &path).await;
        assert_eq!(status, 307, "{target} asked of a non-owner: {body}");
        assert_eq!(location, format!("{}{path}", owner.base()));
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["owner"], owner.base());
        let (status, _, state) = get_raw(owner, &path).await;
        assert_eq!(status, 200, "{state}");
        let state: Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["target"], target.as_str());
        // The stream and the entity reads are routed the same way.
        for sub in ["entities?limit=1", "stream"] {
            let (status, location, _) =
                get_raw(asked, &format!("/v1/targets/{target}/{sub}")).await;
            assert_eq!(status, 307, "{sub}");
            assert_eq!(
                location,
                format!("{}/v1/targets/{target}/{sub}", owner.base())
            );
        }
    }
    let (status, _, body) = get_raw(&a, "/v1/targets/no-such-target/state").await;
    assert_eq!(status, 404, "{body}");

    // b stops (a scale-in): every answer a gives meanwhile is the state, a redirect or a 503
    // with Retry-After, never anything else, until a serves b's targets itself.
    let (exit, log) = b.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    for target in &on_b {
        let path = format!("/v1/targets/{target}/state");
        a.wait_for(
            "a to serve the stopped member's target",
            async |a: &Worker| {
                let (status, _, body) = get_raw(a, &path).await;
                assert!(matches!(status, 200 | 307 | 503), "{status}: {body}");
                status == 200
            },
        )
        .await;
    }
    a.wait_for(
        "a to list itself as every target's owner",
        async |a: &Worker| {
            group_view(a)
                .await
                .values()
                .all(|owner| owner.as_deref() == Some(a.base()))
        },
    )
    .await;
    drop(worker);
}

/// A read of the token-protected API of `aggregator`, not following redirects: status,
/// headers, body.
async fn api(
    aggregator: &Worker,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = rig::no_redirects().get(format!("{}{path}", aggregator.base()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the aggregator answers");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.text().await.expect("a body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_routing_proxy_any_aggregator_serves_any_target_from_its_owner_with_its_own_token() {
    if !real_broker_or_skip(
        "with_routing_proxy_any_aggregator_serves_any_target_from_its_owner_with_its_own_token",
    ) {
        return;
    }
    // 300 events a target (3 s), then the states stand still and can be compared.
    let (rig, _sims) = rig_with_targets("member-proxy", 4, 300).await;
    let targets = one_target_per_partition(4);
    const TOKEN: &str = "group-token-5d1c";
    let token_file = rig.dir.join("api-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_path = token_file.display().to_string();
    let worker = rig.start("").await;
    let member = async |instance: &str| {
        let env = [
            (INSTANCE_ENV, instance),
            ("SLUICE__HTTP__ROUTING", "proxy"),
            ("SLUICE__HTTP__AUTH__BEARER__FILE", token_path.as_str()),
        ];
        rig.start_aggregator_with("", false, SESSION_TIMEOUT_MS, &env)
            .await
    };
    let (a, b) = (member("aggregator-0").await, member("aggregator-1").await);
    // Each holds some targets, and each knows every target's owner.
    let held = async |m: &Worker| -> Vec<String> {
        let (status, _, body) = api(m, "/v1/targets", Some(TOKEN), &[]).await;
        if status != 200 {
            return Vec::new();
        }
        let list: Value = serde_json::from_str(&body).unwrap();
        list["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["target"].as_str().unwrap().to_owned())
            .collect()
    };
    let all_owned = async |m: &Worker| {
        let (status, _, body) = api(m, "/v1/targets", Some(TOKEN), &[]).await;
        let list: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        status == 200
            && list["group"].as_array().is_some_and(|g| {
                g.len() == targets.len() && g.iter().all(|t| t["owner"].is_string())
            })
    };
    for m in [&a, &b] {
        m.wait_for("ready, and every owner known", async |m: &Worker| {
            m.get("/readyz").await.is_some_and(|(c, _)| c == 200)
                && !held(m).await.is_empty()
                && all_owned(m).await
        })
        .await;
    }
    let (on_a, on_b) = (held(&a).await, held(&b).await);
    assert_eq!(on_a.len() + on_b.len(), targets.len(), "{on_a:?} {on_b:?}");

    for (asked, owner, target) in [(&a, &b, &on_b[0]), (&b, &a, &on_a[0])] {
        let path = format!("/v1/targets/{target}/state");
        // Without the token the asked aggregator refuses before routing anything.
        let (status, _, _) = api(asked, &path, None, &[]).await;
        assert_eq!(status, 401);
        // With it, the answer is the owner's own, byte for byte once the state stands still,
        // served by the owner (which requires the token too: the proxy sent its own).
        asked
            .wait_for(
                "the proxied state to equal the owner's",
                async |asked: &Worker| {
                    let (status, headers, body) = api(asked, &path, Some(TOKEN), &[]).await;
                    let (_, _, direct) = api(owner, &path, Some(TOKEN), &[]).await;
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(
                        headers
                            .get("sluice-served-by")
                            .and_then(|v| v.to_str().ok()),
                        Some(owner.base())
                    );
                    body == direct
                },
            )
            .await;
        // If-None-Match goes through: 304 once the state stands still (a 200 meanwhile
        // carries the newer state's tag).
        asked
            .wait_for("a 304 through the proxy", async |asked: &Worker| {
                let (_, headers, _) = api(asked, &path, Some(TOKEN), &[]).await;
                let etag = headers["etag"].to_str().unwrap().to_owned();
                let conditional = [("if-none-match", etag.as_str())];
                let (status, _, _) = api(asked, &path, Some(TOKEN), &conditional).await;
                assert!(matches!(status, 200 | 304), "{status}");
                status == 304
            })
            .await;
        // A change stream through the proxy: the whole state, then up to date.
        let mut stream = rig::no_redirects()
            .get(format!("{}/v1/targets/{target}/stream", asked.base()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        let mut text = String::new();
        while !text.contains("event: up-to-date") {
            let chunk = tokio::time::timeout(rig::LIMIT, stream.chunk())
                .await
                .expect("the proxied stream flows")
                .unwrap()
                .expect("the proxied stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.contains("event: state"), "{text}");
        // One hop only: a forwarded request for a target the receiver does not hold is a 503.
        let (status, headers, body) = api(
            owner,
            &format!(
                "/v1/targets/{}/state",
                if owner.base() == a.base() {
                    &on_b[0]
                } else {
                    &on_a[0]
                }
            ),
            Some(TOKEN),
            &[("sluice-forwarded-by", "http://elsewhere:1")],
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(headers["retry-after"], "1");
    }

    // b stops: a answers b's targets with the state or a 503, never anything else, until it
    // serves them itself.
    let (exit, log) = b.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(!log.contains(TOKEN), "the token in a log");
    for target in &on_b {
        let path = format!("/v1/targets/{target}/state");
        a.wait_for(
            "a to serve the stopped member's target",
            async |a: &Worker| {
                let (status, headers, body) = api(a, &path, Some(TOKEN), &[]).await;
                assert!(matches!(status, 200 | 503), "{status}: {body}");
                status == 200 && headers.get("sluice-served-by").is_none()
            },
        )
        .await;
    }
    drop(worker);
}
