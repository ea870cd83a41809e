//! The publisher against Kafka: the mock cluster by default, the broker named by
//! `SLUICE_TEST_KAFKA` (Apache Kafka under `scripts/test`) when set.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, UNIX_EPOCH};

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use sluice_config::{RecordKey, TargetId};
use sluice_publish::{
    CheckpointTracker, Mark, Publisher, RecordMeta, Resume, Stamp, build_record, headers,
    read_checkpoints, read_checkpoints_of,
};
use sluice_sse::{Event, Text};
use sluice_testkit::{TestKafka, unique_topic};

/// How many events the publish test sends.
const EVENTS: u64 = 50;
/// An upper bound for any one step, so a broken broker fails the test instead of hanging it.
const STEP_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_come_back_with_key_value_headers_in_order() {
    let kafka = TestKafka::start().unwrap();
    let topic = unique_topic("sluice-publish");
    kafka.create_topic(&topic, 3, false).await.unwrap();
    let publisher = Publisher::new(&kafka.producer_config()).unwrap();
    let target: TargetId = "feed-a".parse().unwrap();
    let mut tracker = CheckpointTracker::new();

    let mut sent = Vec::new();
    for i in 0..EVENTS {
        let id = format!("ev-{i}");
        let event = Event {
            id: Text::from(id.clone()),
            event: Text::from_static("tick"),
            data: Text::from(format!("{{\"n\":{i}}}")),
        };
        let seq = tracker.sent(&id);
        let meta = RecordMeta {
            target: &target,
            received_at: UNIX_EPOCH + Duration::from_millis(1_000 + i),
            connection: 1,
            seq,
            resume: None,
            cloudevents: false,
        };
        let record = build_record(&event, &RecordKey::Target, &meta).unwrap();
        let delivered = tokio::time::timeout(STEP_LIMIT, publisher.publish(&topic, &record))
            .await
            .unwrap()
            .unwrap();
        tracker.acked(seq);
        sent.push((record, delivered));
    }
    assert_eq!(tracker.checkpoint(), Some("ev-49"));

    let consumer: StreamConsumer = kafka
        .consumer_config(&unique_topic("sluice-publish-group"))
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    for (record, delivered) in &sent {
        let message = tokio::time::timeout(STEP_LIMIT, consumer.recv())
            .await
            .expect("a record within the step limit")
            .unwrap();
        // One key, so one partition, so Kafka's order is send order.
        assert_eq!(message.partition(), delivered.partition);
        assert_eq!(message.offset(), delivered.offset);
        assert_eq!(message.key(), Some(&b"feed-a"[..]));
        assert_eq!(message.payload(), Some(record.value.as_ref()));
        let got: Vec<(String, Vec<u8>)> = message
            .headers()
            .unwrap()
            .iter()
            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
            .collect();
        let want: Vec<(String, Vec<u8>)> = record
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        assert_eq!(got, want);
    }
    let last = &sent.last().unwrap().0;
    assert_eq!(last.header(headers::SSE_ID), Some(&b"ev-49"[..]));
    assert_eq!(last.header(headers::SEQ), Some(&b"49"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_an_event_directly_writes_the_record_build_record_builds() {
    let kafka = TestKafka::start().unwrap();
    let topic = unique_topic("sluice-publish-direct");
    kafka.create_topic(&topic, 1, false).await.unwrap();
    let publisher = Publisher::new(&kafka.producer_config()).unwrap();
    let target: TargetId = "feed-b".parse().unwrap();
    let key = RecordKey::Pointer("/sym".to_owned());

    let mut sent = Vec::new();
    for i in 0..4u64 {
        let event = Event {
            id: Text::from(if i == 2 {
                String::new()
            } else {
                format!("ev-{i}")
            }),
            event: Text::from_static("tick"),
            data: Text::from(format!("{{\"sym\":\"S{i}\",\"n\":{i}}}")),
        };
        let meta = RecordMeta {
            target: &target,
            received_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i),
            connection: 3,
            seq: i,
            resume: (i == 0).then_some("ev-x"),
            cloudevents: i % 2 == 1,
        };
        let record = build_record(&event, &key, &meta).unwrap();
        let record_key = sluice_publish::record_key(&event, &key, &meta).unwrap();
        let pending = publisher
            .try_send_event(&topic, &record_key, &event, &meta)
            .unwrap();
        tokio::time::timeout(STEP_LIMIT, pending)
            .await
            .unwrap()
            .unwrap();
        sent.push(record);
    }

    let consumer: StreamConsumer = kafka
        .consumer_config(&unique_topic("sluice-publish-direct-group"))
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    for record in &sent {
        let message = tokio::time::timeout(STEP_LIMIT, consumer.recv())
            .await
            .expect("a record within the step limit")
            .unwrap();
        assert_eq!(message.key(), Some(record.key.as_slice()));
        assert_eq!(message.payload(), Some(record.value.as_ref()));
        let got: Vec<(String, Vec<u8>)> = message
            .headers()
            .unwrap()
            .iter()
            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
            .collect();
        let want: Vec<(String, Vec<u8>)> = record
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        assert_eq!(got, want);
    }
    assert_eq!(sent[0].header(headers::RESUME), Some(&b"ev-x"[..]));
    assert!(sent[1].header(headers::CE_ID).is_some());
}

/// The latest event id per target, the highest owner epoch any of its records carried (a
/// zombie's late record has a lower one than the last owner's), unstamped format-0 records read
/// as epoch 0, and where each partition's read ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_checkpoints_returns_the_latest_event_id_and_highest_epoch_per_target() {
    let kafka = TestKafka::start().unwrap();
    let topic = unique_topic("sluice-checkpoints");
    kafka.create_topic(&topic, 2, true).await.unwrap();
    let publisher = Publisher::new(&kafka.producer_config()).unwrap();
    let a: TargetId = "target-a".parse().unwrap();
    let b: TargetId = "target-b".parse().unwrap();
    let c: TargetId = "target-c".parse().unwrap();
    let stamp = |epoch| Stamp {
        epoch,
        owner: std::sync::Arc::from("test#1"),
        mark: Mark::Plain,
    };
    for (target, id, epoch) in [
        (&a, "1", 1),
        (&b, "10", 1),
        (&a, "2", 3),
        (&b, "11", 2),
        (&a, "3", 2),
    ] {
        publisher
            .write_checkpoint(&topic, target, id, &stamp(epoch))
            .await
            .unwrap();
    }
    // A checkpoint as a worker before owner stamps wrote it: the bare event id.
    let plain: rdkafka::producer::FutureProducer = kafka.producer_config().create().unwrap();
    let partition = sluice_publish::partition_for(c.as_str(), 2);
    plain
        .send(
            rdkafka::producer::FutureRecord::to(&topic)
                .partition(partition)
                .key(c.as_str())
                .payload("77"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let checkpoints = read_checkpoints(&kafka.producer_config(), &topic, STEP_LIMIT)
        .await
        .unwrap();
    let resume = |id: &str| checkpoints.resume.get(id).cloned();
    let at = |event_id: &str, epoch| {
        Some(Resume {
            event_id: event_id.to_owned(),
            epoch,
            offered_by: None,
        })
    };
    assert_eq!(checkpoints.resume.len(), 3);
    assert_eq!(resume("target-a"), at("3", 3), "last id, highest epoch");
    assert_eq!(resume("target-b"), at("11", 2));
    assert_eq!(resume("target-c"), at("77", 0), "a format-0 record");
    let total: i64 = checkpoints.ends.values().sum();
    assert_eq!(checkpoints.ends.len(), 2);
    assert_eq!(total, 6, "the read ended at every partition's end");

    // A fleet worker reads only the partitions it was assigned.
    let home = sluice_publish::partition_for("target-a", 2);
    let only = read_checkpoints_of(
        &kafka.producer_config(),
        &topic,
        Some(vec![home]),
        STEP_LIMIT,
    )
    .await
    .unwrap();
    let mut expected: Vec<&str> = ["target-a", "target-b", "target-c"]
        .into_iter()
        .filter(|t| sluice_publish::partition_for(t, 2) == home)
        .collect();
    let mut got: Vec<&str> = only.resume.keys().map(String::as_str).collect();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected);
    assert_eq!(only.ends.keys().copied().collect::<Vec<_>>(), [home]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_checkpoints_of_an_empty_topic_is_empty() {
    let kafka = TestKafka::start().unwrap();
    let topic = unique_topic("sluice-checkpoints-empty");
    kafka.create_topic(&topic, 1, true).await.unwrap();
    let checkpoints = read_checkpoints(&kafka.producer_config(), &topic, STEP_LIMIT)
        .await
        .unwrap();
    assert!(checkpoints.resume.is_empty());
    assert_eq!(checkpoints.ends.get(&0), Some(&0));
}

/// Sluice, not the producer's `partitioner`, places records: every event and checkpoint record
/// of a target is in `partition_for(target, N)`, whatever its key (here an entity key that
/// differs per event, which librdkafka's partitioner would spread over the partitions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_target_land_in_its_partition_for_partition() {
    const PARTITIONS: i32 = 6;
    let kafka = TestKafka::start().unwrap();
    let topic = unique_topic("sluice-publish-placed");
    let checkpoints = unique_topic("sluice-publish-placed-checkpoints");
    kafka.create_topic(&topic, PARTITIONS, false).await.unwrap();
    kafka
        .create_topic(&checkpoints, PARTITIONS, true)
        .await
        .unwrap();
    // A partitioner that ignores the key would put everything in one partition: it must not
    // matter either.
    let publisher = Publisher::new(kafka.producer_config().set("partitioner", "random")).unwrap();
    let key = RecordKey::Pointer("/sym".to_owned());
    let targets: Vec<TargetId> = ["prices", "scores", "inventory", "t-0001", "t-9999"]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let homes: std::collections::BTreeSet<i32> = targets
        .iter()
        .map(|t| sluice_publish::partition_for(t.as_str(), PARTITIONS))
        .collect();
    assert!(
        homes.len() > 1,
        "the targets must spread, or the test proves nothing"
    );

    for target in &targets {
        for i in 0..8u64 {
            let event = Event {
                id: Text::from(format!("ev-{i}")),
                event: Text::from_static("tick"),
                data: Text::from(format!("{{\"sym\":\"S{i}\"}}")),
            };
            let meta = RecordMeta {
                target,
                received_at: UNIX_EPOCH + Duration::from_millis(1_000 + i),
                connection: 1,
                seq: i,
                resume: None,
                cloudevents: false,
            };
            let record_key = sluice_publish::record_key(&event, &key, &meta).unwrap();
            let pending = publisher
                .try_send_event(&topic, &record_key, &event, &meta)
                .unwrap();
            let delivered = tokio::time::timeout(STEP_LIMIT, pending)
                .await
                .unwrap()
                .unwrap();
            let record = build_record(&event, &key, &meta).unwrap();
            let published = tokio::time::timeout(STEP_LIMIT, publisher.publish(&topic, &record))
                .await
                .unwrap()
                .unwrap();
            let home = sluice_publish::partition_for(target.as_str(), PARTITIONS);
            assert_eq!(delivered.partition, home, "{target} event {i}");
            assert_eq!(published.partition, home, "{target} record {i}");
            assert_eq!(publisher.partition(&topic, target.as_str()).unwrap(), home);
        }
        let pending = publisher
            .try_write_checkpoint(&checkpoints, target, "ev-7", &test_stamp())
            .unwrap();
        let delivered = tokio::time::timeout(STEP_LIMIT, pending)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            delivered.partition,
            sluice_publish::partition_for(target.as_str(), PARTITIONS)
        );
    }
}

/// A topic that does not exist, on a broker that does not create topics on demand, is a typed,
/// retryable error naming the topic, not a record waiting in the producer queue for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_a_typed_retryable_error() {
    let kafka = TestKafka::start().unwrap();
    let topic = unique_topic("sluice-publish-missing");
    let publisher = Publisher::new(
        kafka
            .producer_config()
            .set("allow.auto.create.topics", "false"),
    )
    .unwrap();
    let target: TargetId = "feed-z".parse().unwrap();
    let error = publisher
        .try_write_checkpoint(&topic, &target, "1", &test_stamp())
        .unwrap_err();
    let sluice_publish::TrySendError::Failed(error) = error else {
        panic!("expected a failure, got {error:?}");
    };
    assert_eq!(error.kind(), "partitions");
    assert!(error.is_retryable());
    assert!(error.to_string().contains(&topic), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_stays_open_through_its_own_runs_records_and_closes_at_a_claim_or_a_newer_run() {
    let kafka = TestKafka::start().unwrap();
    let topic = unique_topic("sluice-checkpoints");
    kafka.create_topic(&topic, 1, true).await.unwrap();
    let publisher = Publisher::new(&kafka.producer_config()).unwrap();
    let stamp = |epoch, owner: &str, mark| Stamp {
        epoch,
        owner: std::sync::Arc::from(owner),
        mark,
    };
    let open: TargetId = "offered".parse().unwrap();
    let claimed: TargetId = "claimed".parse().unwrap();
    let overtaken: TargetId = "overtaken".parse().unwrap();
    for (target, id, stamp) in [
        (&open, "1", stamp(2, "old#1", Mark::Plain)),
        (&open, "2", stamp(2, "old#1", Mark::Offer)),
        (&open, "3", stamp(1, "zombie#9", Mark::Plain)),
        (&claimed, "5", stamp(2, "old#1", Mark::Offer)),
        (&claimed, "5", stamp(3, "new#2", Mark::Claim)),
        (&claimed, "6", stamp(2, "old#1", Mark::Release)),
        (&overtaken, "8", stamp(4, "old#1", Mark::Offer)),
        (&overtaken, "9", stamp(5, "other#3", Mark::Plain)),
    ] {
        publisher
            .write_checkpoint(&topic, target, id, &stamp)
            .await
            .unwrap();
    }
    let read = read_checkpoints(&kafka.producer_config(), &topic, STEP_LIMIT)
        .await
        .unwrap();
    let offer = |id: &str| read.resume.get(id).and_then(|r| r.offered_by.clone());
    assert_eq!(
        offer("offered"),
        Some(sluice_publish::Offer {
            epoch: 2,
            owner: "old#1".to_owned()
        }),
        "a zombie's older record leaves the offer open"
    );
    assert_eq!(offer("claimed"), None, "claimed and released");
    assert_eq!(
        read.resume
            .get("claimed")
            .map(|r| (r.event_id.as_str(), r.epoch)),
        Some(("6", 3)),
        "the release is the resume point; the claim's epoch the highest"
    );
    assert_eq!(offer("overtaken"), None, "a newer run closes the offer");
}

fn test_stamp() -> Stamp {
    Stamp {
        epoch: 1,
        owner: std::sync::Arc::from("test#1"),
        mark: Mark::Plain,
    }
}
