//! Kafka smoke test: what Sluice needs from a broker works end to end.
//!
//! Runs against librdkafka's mock cluster by default, and against the broker named by
//! `SLUICE_TEST_KAFKA` (Apache Kafka under `scripts/test`) when that is set. It covers the producer
//! settings the worker uses (`acks=all`, idempotence, headers), topic creation (plain and
//! compacted), and reading back through a consumer group with committed offsets, as the
//! aggregator does.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use sluice_testkit::{TestKafka, unique_topic};

/// How many records the smoke test sends.
const RECORDS: usize = 300;
/// How many partitions its topic has.
const PARTITIONS: i32 = 3;
/// How many distinct keys (targets) the records spread over.
const KEYS: usize = 7;
/// An upper bound for any one step to finish, so a broken broker fails the test instead of
/// hanging it (not a performance assertion).
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// One record as the test sent it, and where the broker put it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    key: String,
    value: String,
    sse_id: String,
    partition: i32,
    offset: i64,
}

fn record_key(seq: usize) -> String {
    format!("target-{}", seq % KEYS)
}

fn record_value(seq: usize) -> String {
    format!("{{\"seq\":{seq},\"price\":{}.25}}", 100 + seq)
}

fn header<'a>(message: &'a BorrowedMessage<'_>, key: &str) -> Option<&'a [u8]> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
}

fn idempotent_producer(kafka: &TestKafka) -> FutureProducer {
    kafka
        .producer_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer config is valid")
}

/// Sends `RECORDS` records with headers, pipelined, and returns them by sequence number with the
/// partition and offset from each delivery report.
async fn produce(kafka: &TestKafka, topic: &str) -> Vec<Sent> {
    let producer = idempotent_producer(kafka);
    let mut pending = Vec::with_capacity(RECORDS);
    for seq in 0..RECORDS {
        let (key, value, sse_id) = (record_key(seq), record_value(seq), seq.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "sse.id",
                value: Some(sse_id.as_str()),
            })
            .insert(Header {
                key: "sluice.seq",
                value: Some(sse_id.as_str()),
            });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("the producer queue holds every smoke record");
        pending.push((key, value, sse_id, delivery));
    }
    let mut sent = Vec::with_capacity(RECORDS);
    for (key, value, sse_id, delivery) in pending {
        let delivery = tokio::time::timeout(STEP_LIMIT, delivery)
            .await
            .expect("delivery report within the step limit")
            .expect("the producer outlives its delivery futures")
            .map_err(|(e, _)| e)
            .expect("the broker acknowledges every record");
        sent.push(Sent {
            key,
            value,
            sse_id,
            partition: delivery.partition,
            offset: delivery.offset,
        });
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_records_with_headers_come_back_in_order_through_a_consumer_group() {
    let kafka = TestKafka::start().unwrap();
    let topic = unique_topic("sluice-smoke");
    kafka.create_topic(&topic, PARTITIONS, false).await.unwrap();

    let sent = produce(&kafka, &topic).await;
    // A key always lands on one partition, so order per key is order per partition.
    let mut partition_of_key = BTreeMap::new();
    for record in &sent {
        let partition = *partition_of_key
            .entry(record.key.clone())
            .or_insert(record.partition);
        assert_eq!(partition, record.partition, "key {} moved", record.key);
    }

    let group = unique_topic("sluice-smoke-group");
    let consumer: StreamConsumer = kafka.consumer_config(&group).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut received: Vec<Sent> = Vec::with_capacity(RECORDS);
    while received.len() < RECORDS {
        let message = tokio::time::timeout(STEP_LIMIT, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {RECORDS} records arrived within the step limit",
                    received.len()
                )
            })
            .unwrap();
        assert_eq!(message.topic(), topic);
        let sse_id = header(&message, "sse.id").expect("every record has an sse.id header");
        assert_eq!(header(&message, "sluice.seq"), Some(sse_id));
        received.push(Sent {
            key: String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
            value: String::from_utf8(message.payload().unwrap().to_vec()).unwrap(),
            sse_id: String::from_utf8(sse_id.to_vec()).unwrap(),
            partition: message.partition(),
            offset: message.offset(),
        });
    }

    // Every record arrived exactly as sent, at the offset its delivery report named.
    let mut by_seq: Vec<Sent> = received.clone();
    by_seq.sort_by_key(|r| r.sse_id.parse::<usize>().unwrap());
    assert_eq!(by_seq, sent);

    // In order per partition: offsets and sequence numbers both only go up.
    for partition in 0..PARTITIONS {
        let in_partition: Vec<&Sent> = received
            .iter()
            .filter(|r| r.partition == partition)
            .collect();
        assert!(
            in_partition.windows(2).all(|w| w[0].offset < w[1].offset
                && w[0].sse_id.parse::<usize>().unwrap() < w[1].sse_id.parse::<usize>().unwrap()),
            "partition {partition} out of order"
        );
    }

    // The group's committed offsets are what a restarted consumer resumes from.
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition(&topic, partition);
    }
    let committed = consumer.committed_offsets(assignment, STEP_LIMIT).unwrap();
    for partition in 0..PARTITIONS {
        let next = sent
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.offset + 1)
            .max();
        let committed = committed
            .find_partition(&topic, partition)
            .unwrap()
            .offset();
        match next {
            Some(next) => assert_eq!(committed, Offset::Offset(next), "partition {partition}"),
            None => assert!(
                matches!(committed, Offset::Invalid | Offset::Offset(0)),
                "partition {partition} has no records but committed {committed:?}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_takes_keyed_records_and_replays_them() {
    let kafka = TestKafka::start().unwrap();
    let topic = unique_topic("sluice-smoke-compacted");
    kafka.create_topic(&topic, 1, true).await.unwrap();

    let producer = idempotent_producer(&kafka);
    for (key, value) in [("target-a", "1"), ("target-b", "7"), ("target-a", "2")] {
        producer
            .send(FutureRecord::to(&topic).key(key).payload(value), STEP_LIMIT)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let consumer: StreamConsumer = kafka
        .consumer_config(&unique_topic("sluice-smoke-compacted-group"))
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut latest = BTreeMap::new();
    // Compaction may or may not have run; the latest value per key is the same either way.
    while latest.get("target-a") != Some(&"2".to_owned()) || !latest.contains_key("target-b") {
        let message = tokio::time::timeout(STEP_LIMIT, consumer.recv())
            .await
            .expect("a checkpoint record within the step limit")
            .unwrap();
        latest.insert(
            String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
            String::from_utf8(message.payload().unwrap().to_vec()).unwrap(),
        );
    }
    assert_eq!(latest.get("target-b"), Some(&"7".to_owned()));
}
