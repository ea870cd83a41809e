//! Fleet ownership through Kafka's group protocol, end to end: workers of one `fleet.group_id`
//! share the targets of their files (each runs those of the checkpoint partitions the group
//! assigns it, none runs twice), a worker killed with -9 has its targets taken by the others
//! from their checkpoints with nothing lost, and a worker that stops hands its targets over
//! first. Real HTTP upstreams (the simulator, which replays after `Last-Event-ID`); Kafka is
//! the real broker under scripts/test (librdkafka's mock cluster leaves partitions a
//! cooperative rebalance revoked unassigned, so these tests need the real one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::collections::BTreeSet;

use rig::{Rig, Worker, assert_complete_in_order, ids_of, one_target_per_partition};
use sluice_testkit::{Outage, TestKafka, unique_topic};

const PARTITIONS: i32 = 4;
const EVENTS: u64 = 300;
/// Events per target of the pause test: the feeds still run when the paused worker wakes up.
const LONG_EVENTS: u64 = 1_200;

/// The targets `worker` runs now, by its `/status`.
async fn running(worker: &Worker) -> BTreeSet<String> {
    let Some((200, body)) = worker.get("/status").await else {
        return BTreeSet::new();
    };
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is json");
    status["targets"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["target"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A rig with one simulator target per fleet partition, and the worker settings of a fleet
/// of its own: the fleet section and the environment giving it a checkpoint topic of its own
/// (the rig's has one partition; the fleet's is created with `PARTITIONS`).
struct Fleet {
    rig: Rig,
    ids: Vec<String>,
    events: u64,
    _sims: Vec<sluice_sim::RunningSim>,
    extra: String,
    checkpoints: String,
}

impl Fleet {
    async fn new(name: &str) -> Fleet {
        Fleet::with_events(name, EVENTS).await
    }

    /// Targets of `events` events each, at 60 a second.
    async fn with_events(name: &str, events: u64) -> Fleet {
        Fleet::on(name, TestKafka::start().expect("test kafka"), events).await
    }

    /// [`Fleet::with_events`] on the given Kafka.
    async fn on(name: &str, kafka: TestKafka, events: u64) -> Fleet {
        let rig = Rig::with_kafka(name, kafka).await;
        let ids = one_target_per_partition(PARTITIONS);
        let mut sims = Vec::new();
        for id in &ids {
            let sim = rig::sim(events, 60.0).await;
            // `last_event_id=0`: the first connection replays from the first event.
            rig.target(id, &format!("{}?last_event_id=0", sim.stream_url()), "");
            sims.push(sim);
        }
        let group = unique_topic(&format!("{name}.group"));
        Fleet {
            rig,
            ids,
            events,
            _sims: sims,
            extra: format!(
                "fleet:\n  group_id: {group}\n  partitions: {PARTITIONS}\n  session_timeout: 3s\n"
            ),
            checkpoints: unique_topic(&format!("{name}.checkpoints")),
        }
    }

    async fn start(&self) -> Worker {
        self.start_as(None).await
    }

    /// A worker with `fleet.instance_id` `instance` (static membership), when given.
    async fn start_as(&self, instance: Option<&str>) -> Worker {
        let mut env = vec![("SLUICE__TOPICS__CHECKPOINTS", self.checkpoints.as_str())];
        if let Some(instance) = instance {
            env.push(("SLUICE__FLEET__INSTANCE_ID", instance));
        }
        self.rig.start_with_env(&self.extra, &env).await
    }

    fn all(&self) -> BTreeSet<String> {
        self.ids.iter().cloned().collect()
    }

    /// Waits until every id of every target is in Kafka (in any order: a zombie's late
    /// records land among the new owner's).
    async fn assert_nothing_missing(&self) {
        let expected: Vec<(&str, u64)> = self
            .ids
            .iter()
            .map(|id| (id.as_str(), self.events))
            .collect();
        let records = self.rig.wait_all_ids(&expected).await;
        for id in &self.ids {
            let seen: BTreeSet<u64> = ids_of(&records, id).into_iter().collect();
            assert_eq!(
                seen,
                (1..=self.events).collect::<BTreeSet<u64>>(),
                "{id}: every id is in kafka"
            );
        }
    }

    /// Waits until every id of every target is in Kafka, first seen in order.
    async fn assert_nothing_lost(&self) {
        let expected: Vec<(&str, u64)> = self
            .ids
            .iter()
            .map(|id| (id.as_str(), self.events))
            .collect();
        let records = self.rig.wait_all_ids(&expected).await;
        for id in &self.ids {
            assert_complete_in_order(id, &ids_of(&records, id), self.events);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_its_targets_and_survives_a_kill_9_without_loss() {
    if !rig::real_broker_or_skip(
        "a_fleet_shares_its_targets_and_survives_a_kill_9_without_loss",
        "librdkafka's mock cluster does not finish cooperative rebalances (revoked partitions stay unassigned); run scripts/test",
    ) {
        return;
    }
    let fleet = Fleet::new("fleet-kill").await;
    let first = fleet.start().await;
    let second = fleet.start().await;
    let all = fleet.all();

    // Every target runs on exactly one of the two, and each runs some.
    first
        .wait_for(
            "the targets split between the two workers",
            async |w: &Worker| {
                let a = running(w).await;
                let b = running(&second).await;
                let union: BTreeSet<String> = a.union(&b).cloned().collect();
                union == all && a.is_disjoint(&b) && !a.is_empty() && !b.is_empty()
            },
        )
        .await;
    let on_first = running(&first).await;

    // The first dies without a chance to checkpoint: the second takes its targets after the
    // session timeout, from their last checkpoints.
    let first_log = first.kill().await;
    second
        .wait_for("the survivor to run every target", async |w: &Worker| {
            running(w).await == all
        })
        .await;
    let log = second.log();
    assert!(
        log.contains("starting the targets of assigned fleet partitions"),
        "the survivor took the partitions:\n{log}"
    );

    // Nothing is lost: every id of every target reaches Kafka.
    fleet.assert_nothing_lost().await;
    assert!(
        on_first.iter().all(|id| first_log.contains(id.as_str())),
        "the killed worker ran its share: {on_first:?}"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_hands_its_targets_over_checkpointed() {
    if !rig::real_broker_or_skip(
        "a_worker_that_stops_hands_its_targets_over_checkpointed",
        "librdkafka's mock cluster does not finish cooperative rebalances (revoked partitions stay unassigned); run scripts/test",
    ) {
        return;
    }
    let fleet = Fleet::new("fleet-leave").await;
    let first = fleet.start().await;
    let all = fleet.all();
    first
        .wait_for("a lone worker to run every target", async |w: &Worker| {
            running(w).await == all
        })
        .await;
    let second = fleet.start().await;
    second
        .wait_for("the second worker to take a share", async |w: &Worker| {
            let b = running(w).await;
            !b.is_empty() && b.is_disjoint(&running(&first).await)
        })
        .await;

    // SIGTERM: the first leaves the group after stopping its targets, so the second takes
    // them at once (no session timeout), resuming after their final checkpoints.
    let (exit, first_log) = first.terminate().await;
    assert!(exit.success(), "{exit:?}\n{first_log}");
    assert!(
        first_log.contains("left the fleet"),
        "an explicit leave:\n{first_log}"
    );
    second
        .wait_for("the second to run every target", async |w: &Worker| {
            running(w).await == all
        })
        .await;
    fleet.assert_nothing_lost().await;
    drop(second);
}

/// A planned rebalance hands targets over make-before-break: a worker joining takes its share
/// while the first streams on until each claim (offer, claim, release in the checkpoint topic),
/// and the joiner, leaving again (a dynamic member), hands them back the same way. Every id of
/// every target is in Kafka exactly once, in order: the new owner starts from the old one's
/// release, so nothing is published twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_rebalances_hand_targets_over_make_before_break_publishing_nothing_twice() {
    if !rig::real_broker_or_skip(
        "planned_rebalances_hand_targets_over_make_before_break_publishing_nothing_twice",
        "librdkafka's mock cluster does not finish cooperative rebalances (revoked partitions stay unassigned); run scripts/test",
    ) {
        return;
    }
    let fleet = Fleet::with_events("fleet-handover", LONG_EVENTS).await;
    assert_planned_handovers(&fleet, [None, None]).await;
}

/// Static members (`fleet.instance_id`) hand over the same way: the leave unsubscribes, and
/// librdkafka sends a LeaveGroup after an unsubscribe even for a static member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_members_hand_over_make_before_break_too() {
    if !rig::real_broker_or_skip(
        "static_members_hand_over_make_before_break_too",
        "librdkafka's mock cluster does not finish cooperative rebalances (revoked partitions stay unassigned); run scripts/test",
    ) {
        return;
    }
    let fleet = Fleet::with_events("fleet-handover-static", LONG_EVENTS).await;
    assert_planned_handovers(&fleet, [Some("worker-0"), Some("worker-1")]).await;
}

/// `fleet.group_protocol: consumer` (KIP-848, the broker assigns): the same handovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kip_848_group_protocol_shares_and_hands_over_the_same_way() {
    if !rig::real_broker_or_skip(
        "the_kip_848_group_protocol_shares_and_hands_over_the_same_way",
        "librdkafka's mock cluster does not speak KIP-848; run scripts/test",
    ) {
        return;
    }
    let mut fleet = Fleet::with_events("fleet-handover-848", LONG_EVENTS).await;
    // The session is the broker's (`group.consumer.session.timeout.ms`, 45 s by default).
    fleet.extra = fleet.extra.replace(
        "session_timeout: 3s",
        "session_timeout: 45s\n  group_protocol: consumer",
    );
    assert_planned_handovers(&fleet, [None, None]).await;
}

/// Static membership: a worker killed with -9 and restarted with the same `instance_id`
/// within the session takes its partitions back without a rebalance (the other worker is
/// neither revoked nor assigned anything), resuming its targets from their checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_within_its_session_takes_its_targets_back_without_a_rebalance() {
    if !rig::real_broker_or_skip(
        "a_static_member_restarted_within_its_session_takes_its_targets_back_without_a_rebalance",
        "librdkafka's mock cluster does not finish cooperative rebalances (revoked partitions stay unassigned); run scripts/test",
    ) {
        return;
    }
    let mut fleet = Fleet::with_events("fleet-static-restart", LONG_EVENTS).await;
    // Room for the restart within the session.
    fleet.extra = fleet
        .extra
        .replace("session_timeout: 3s", "session_timeout: 30s");
    let first = fleet.start_as(Some("static-0")).await;
    let second = fleet.start_as(Some("static-1")).await;
    let all = fleet.all();
    first
        .wait_for(
            "the targets to split between the two",
            async |w: &Worker| {
                let (a, b) = (running(w).await, running(&second).await);
                !a.is_empty()
                    && !b.is_empty()
                    && a.is_disjoint(&b)
                    && a.union(&b).cloned().collect::<BTreeSet<_>>() == all
            },
        )
        .await;
    let share = running(&second).await;
    let rebalances = |log: &str| log.matches("fleet partitions").count();
    let before = rebalances(&first.log());
    second.kill().await;
    let second = fleet.start_as(Some("static-1")).await;
    second
        .wait_for(
            "the restarted member to run its share again",
            async |w: &Worker| running(w).await == share,
        )
        .await;
    assert_eq!(
        rebalances(&first.log()),
        before,
        "the other member saw no revocation or assignment:\n{}",
        first.log()
    );
    fleet.assert_nothing_lost().await;
    drop(second);
    drop(first);
}

/// A pause is the worker's that made it (admin API): when a paused target's partition moves
/// to another worker, that worker runs it, and the first no longer shows it paused; the paused
/// targets that stay are not started by the rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_ends_where_the_targets_partition_moves_away_and_holds_where_it_stays() {
    if !rig::real_broker_or_skip(
        "a_pause_ends_where_the_targets_partition_moves_away_and_holds_where_it_stays",
        "librdkafka's mock cluster does not finish cooperative rebalances (revoked partitions stay unassigned); run scripts/test",
    ) {
        return;
    }
    let mut fleet = Fleet::with_events("fleet-pause", LONG_EVENTS).await;
    std::fs::write(fleet.rig.dir.join("admin-token"), "pause-token\n").unwrap();
    fleet
        .extra
        .push_str("admin:\n  token: {file: admin-token}\n");
    let first = fleet.start().await;
    let all = fleet.all();
    first
        .wait_for("a lone worker to run every target", async |w: &Worker| {
            running(w).await == all
        })
        .await;
    let http = reqwest::Client::new();
    for id in &fleet.ids {
        let answer = http
            .post(format!("{}/v1/admin/targets/{id}/pause", first.base()))
            .bearer_auth("pause-token")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{id}: {:?}", answer.text().await);
    }
    let second = fleet.start().await;
    second
        .wait_for("the joiner to take its share", async |w: &Worker| {
            !running(w).await.is_empty()
        })
        .await;
    first
        .wait_for(
            "the first to drop the paused rows of the targets that moved",
            async |w: &Worker| running(w).await.is_disjoint(&running(&second).await),
        )
        .await;
    let status = first.status().await;
    let rows = status["targets"].as_array().unwrap();
    assert!(!rows.is_empty(), "some targets stayed: {status}");
    for row in rows {
        assert_eq!(row["state"], "stopped", "still paused, not started: {row}");
    }
    drop(second);
    drop(first);
}

/// A second worker joins (taking a share make-before-break: offer, claim, release) and leaves
/// again (handing its share back the same way); every id of every target once, in order.
async fn assert_planned_handovers(fleet: &Fleet, instances: [Option<&str>; 2]) {
    use sluice_publish::Mark;
    let first = fleet.start_as(instances[0]).await;
    let all = fleet.all();
    first
        .wait_for("a lone worker to run every target", async |w: &Worker| {
            running(w).await == all
        })
        .await;
    let second = fleet.start_as(instances[1]).await;
    second
        .wait_for("the joiner to take its share", async |w: &Worker| {
            let b = running(w).await;
            !b.is_empty() && b.is_disjoint(&running(&first).await)
        })
        .await;
    let moved = running(&second).await;
    let (first_pid, second_pid) = (format!("#{}", first.pid()), format!("#{}", second.pid()));
    let marks = rig::checkpoint_marks(&fleet.rig.kafka, &fleet.checkpoints).await;
    for id in &moved {
        let handover: Vec<(Mark, bool)> = marks
            .get(id)
            .map(|records| {
                records
                    .iter()
                    .filter(|(mark, _)| *mark != Mark::Plain)
                    .map(|(mark, owner)| (*mark, owner.ends_with(&first_pid)))
                    .collect()
            })
            .unwrap_or_default();
        let offered = handover.iter().position(|m| *m == (Mark::Offer, true));
        let claimed = handover.iter().position(|m| *m == (Mark::Claim, false));
        let released = handover.iter().position(|m| *m == (Mark::Release, true));
        assert!(
            matches!((offered, claimed, released), (Some(o), Some(c), Some(r)) if o < c && c < r),
            "{id}: the first offers, the joiner claims, the first releases: {handover:?}"
        );
    }
    assert!(
        first
            .log()
            .contains("handover: the new owners claimed these targets"),
        "{}",
        first.log()
    );

    // The joiner leaves (SIGTERM, a dynamic member): its targets go back the same way.
    let (exit, second_log) = second.terminate().await;
    assert!(exit.success(), "{exit:?}\n{second_log}");
    assert!(
        second_log.contains("handover: the new owners claimed these targets"),
        "the leaver streamed on until the first claimed its targets:\n{second_log}"
    );
    first
        .wait_for("the first to run every target again", async |w: &Worker| {
            running(w).await == all
        })
        .await;
    let marks = rig::checkpoint_marks(&fleet.rig.kafka, &fleet.checkpoints).await;
    for id in &moved {
        let released_by_leaver = marks.get(id).is_some_and(|records| {
            records
                .iter()
                .any(|(mark, owner)| *mark == Mark::Release && owner.ends_with(&second_pid))
        });
        assert!(
            released_by_leaver,
            "{id}: the leaver released it: {marks:?}"
        );
    }

    let expected: Vec<(&str, u64)> = fleet
        .ids
        .iter()
        .map(|id| (id.as_str(), fleet.events))
        .collect();
    let records = fleet.rig.wait_all_ids(&expected).await;
    for id in &fleet.ids {
        let ids = ids_of(&records, id);
        let repeated: Vec<(usize, u64)> = ids
            .iter()
            .enumerate()
            .filter(|(at, id)| ids[..*at].contains(id))
            .map(|(at, id)| (at, *id))
            .collect();
        assert!(
            ids == (1..=fleet.events).collect::<Vec<u64>>(),
            "{id}: every id exactly once, in order (moved: {}); {} records, repeated (position, id): {repeated:?}",
            moved.contains(id),
            ids.len()
        );
    }
    drop(first);
}

/// A worker frozen (SIGSTOP) past the session timeout is a zombie when it wakes (SIGCONT): the
/// group gave its targets to the other worker meanwhile. It stops them once it learns the
/// session was lost, its late checkpoints (lower owner epochs) are written over by the new
/// owner, so every target's last checkpoint record (what compaction keeps) is its current
/// runner's, of the highest epoch, and nothing is lost (its late records, still in its
/// producer when it froze, may land among the new owner's: duplicates, out of order, never
/// loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_wakes_as_a_zombie_stops_its_targets_and_cannot_move_a_resume_point_back() {
    if !rig::real_broker_or_skip(
        "a_frozen_worker_wakes_as_a_zombie_stops_its_targets_and_cannot_move_a_resume_point_back",
        "librdkafka's mock cluster does not finish cooperative rebalances (revoked partitions stay unassigned); run scripts/test",
    ) {
        return;
    }
    let fleet = Fleet::with_events("fleet-zombie", LONG_EVENTS).await;
    let zombie = fleet.start().await;
    let owner = fleet.start().await;
    let all = fleet.all();
    owner
        .wait_for("the targets split between the two", async |w: &Worker| {
            let a = running(&zombie).await;
            let b = running(w).await;
            a.union(&b).count() == all.len() && a.is_disjoint(&b) && !a.is_empty() && !b.is_empty()
        })
        .await;

    zombie.freeze(true);
    owner
        .wait_for("the owner to take every target", async |w: &Worker| {
            running(w).await == all
        })
        .await;
    zombie.freeze(false);
    zombie
        .wait_for(
            "the woken zombie to stop its targets",
            async |w: &Worker| running(w).await.is_empty(),
        )
        .await;
    assert!(
        zombie.log().contains("fleet partitions lost"),
        "{}",
        zombie.log()
    );

    fleet.assert_nothing_missing().await;
    // It rejoins the group and may take a share back (with a new epoch); whoever runs a target
    // now, its record is the target's last and carries the highest epoch of all its records.
    let mut config = fleet.rig.kafka.producer_config();
    config.set("client.id", "sluice-test-checkpoints");
    let deadline = tokio::time::Instant::now() + rig::LIMIT;
    loop {
        let last = rig::last_checkpoint_records(&fleet.rig.kafka, &fleet.checkpoints).await;
        let highest = sluice_publish::read_checkpoints(&config, &fleet.checkpoints, rig::LIMIT)
            .await
            .expect("read checkpoints")
            .resume;
        let (on_zombie, on_owner) = (running(&zombie).await, running(&owner).await);
        let settled = all.iter().all(|id| {
            let runner = if on_zombie.contains(id) {
                zombie.pid()
            } else if on_owner.contains(id) {
                owner.pid()
            } else {
                return false;
            };
            last.get(id)
                .zip(highest.get(id))
                .is_some_and(|(record, read)| {
                    record.2 == read.epoch
                        && record
                            .3
                            .as_deref()
                            .is_some_and(|o| o.ends_with(&format!("#{runner}")))
                })
        });
        if settled {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a target's last checkpoint is not its runner's, or not of its highest epoch: {last:?} {highest:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(zombie);
    drop(owner);
}

/// The local lease: a worker that has not heard from its group coordinator for most of the
/// session (here the broker hangs, SIGSTOP) stops its targets itself, before its client declares
/// the session lost (the moment the group may give them away), and starts them again from their
/// checkpoints once the coordinator answers again; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_hear_its_coordinator_stops_its_targets_within_its_lease() {
    if !rig::real_broker_or_skip(
        "a_worker_that_cannot_hear_its_coordinator_stops_its_targets_within_its_lease",
        "the lease needs a private Apache Kafka to freeze; run scripts/test",
    ) {
        return;
    }
    let kafka = TestKafka::private().expect("a private broker");
    let fleet = Fleet::on("fleet-lease", kafka, LONG_EVENTS).await;
    let env = [("SLUICE__TOPICS__CHECKPOINTS", fleet.checkpoints.as_str())];
    let worker = fleet.rig.start_tuned(&fleet.extra, "", "2s", &env).await;
    let all = fleet.all();
    worker
        .wait_for("the worker to run every target", async |w: &Worker| {
            running(w).await == all
        })
        .await;

    fleet
        .rig
        .kafka
        .broker_down(Outage::Pause)
        .await
        .expect("broker down");
    worker
        .wait_for("the lease to expire", async |w: &Worker| {
            w.log().contains("fleet lease expired")
        })
        .await;
    let log = worker.log();
    let expired = log.find("fleet lease expired").expect("expired");
    for lost in ["Consumer group session timed out", "fleet partitions lost"] {
        assert!(
            log.find(lost).is_none_or(|at| at > expired),
            "the lease expired before the client gave the session up:\n{log}"
        );
    }
    worker
        .wait_for("its targets to stop", async |w: &Worker| {
            running(w).await.is_empty()
        })
        .await;

    fleet
        .rig
        .kafka
        .broker_up(Outage::Pause)
        .await
        .expect("broker up");
    worker
        .wait_for("its targets to run again", async |w: &Worker| {
            running(w).await == all
        })
        .await;
    fleet.assert_nothing_lost().await;
    drop(worker);
}
