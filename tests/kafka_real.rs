//! The client stack on a real Apache Kafka: what later work (hardening, the fleet, exactly-once)
//! relies on, checked on the broker users run rather than on librdkafka's mock cluster, which
//! does not enforce fencing or read_committed fully and never compacts.
//!
//! Needs a real broker (`SLUICE_TEST_KAFKA`, set by `scripts/test`); each test says so and is
//! skipped without one (a failure under `SLUICE_TEST_STRICT=1`). Covered: idempotent produce with
//! acks=all, a compacted topic that really compacts, consumer groups with cooperative-sticky
//! (classic protocol) and with `group.protocol=consumer` (KIP-848), a transactional producer with
//! read_committed and read_uncommitted consumers, fencing of a producer by a second one with the
//! same transactional id, and the SASL listeners (SASL_PLAINTEXT and SASL_SSL, PLAIN and
//! SCRAM-SHA-256).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use sluice_testkit::{TestKafka, is_real_broker_run, skip_or_fail, unique_topic};

/// An upper bound for any one step, so a broken broker fails a test instead of hanging it (not a
/// performance assertion).
const STEP_LIMIT: Duration = Duration::from_secs(60);
/// One poll of a consumer.
const POLL: Duration = Duration::from_millis(100);

/// The shared real broker, or `None` (skipped, or failed under strict mode) without one.
fn real_kafka(what: &str) -> Option<TestKafka> {
    if !is_real_broker_run() {
        skip_or_fail(
            what,
            "needs a real Kafka broker: run scripts/test, or set SLUICE_TEST_KAFKA",
        );
        return None;
    }
    Some(TestKafka::start().expect("the broker in SLUICE_TEST_KAFKA"))
}

/// A deadline `STEP_LIMIT` from now on tokio's clock.
fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + STEP_LIMIT
}

/// Reads every record of `topic`'s `partition` from the beginning to its end (the last stable
/// offset under read_committed) and returns the (key, value) pairs in offset order.
fn read_partition(config: &ClientConfig, topic: &str, partition: i32) -> Vec<(String, String)> {
    let consumer: BaseConsumer = config
        .clone()
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut records = Vec::new();
    let until = deadline();
    loop {
        assert!(
            tokio::time::Instant::now() < until,
            "{topic}/{partition}: no end of partition within {STEP_LIMIT:?}"
        );
        match consumer.poll(POLL) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => return records,
            Some(Err(e)) => panic!("{topic}/{partition}: {e}"),
            Some(Ok(message)) => records.push((
                String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            )),
        }
    }
}

fn idempotent_producer(kafka: &TestKafka) -> FutureProducer {
    kafka
        .producer_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()
        .unwrap()
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, value: &str) -> (i32, i64) {
    let delivery = producer
        .send(FutureRecord::to(topic).key(key).payload(value), STEP_LIMIT)
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    (delivery.partition, delivery.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_acks_all_producer_writes_each_record_once_in_order() {
    let Some(kafka) =
        real_kafka("an_idempotent_acks_all_producer_writes_each_record_once_in_order")
    else {
        return;
    };
    let topic = unique_topic("real-idempotent");
    kafka.create_topic(&topic, 1, false).await.unwrap();
    let producer = idempotent_producer(&kafka);
    let mut pending = Vec::new();
    for seq in 0..500 {
        let value = seq.to_string();
        let record = FutureRecord::to(&topic).key("target").payload(&value);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    let mut offsets = Vec::new();
    for delivery in pending {
        let delivery = delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
        offsets.push(delivery.offset);
    }
    assert_eq!(
        offsets,
        (0..500).collect::<Vec<i64>>(),
        "one offset each, in order"
    );
    let records = read_partition(&kafka.consumer_config(&unique_topic("g")), &topic, 0);
    let values: Vec<String> = records.into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, (0..500).map(|s| s.to_string()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_only_the_latest_value_of_a_key_once_compacted() {
    let Some(kafka) =
        real_kafka("a_compacted_topic_keeps_only_the_latest_value_of_a_key_once_compacted")
    else {
        return;
    };
    let topic = unique_topic("real-compacted");
    // Segments roll every 100 ms (on the next write after that), and the cleaner takes any dirty
    // segment at once; the broker's cleaner wakes every second (scripts/kafka).
    kafka
        .create_topic_with(
            &topic,
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.ms", "100"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("min.compaction.lag.ms", "0"),
                ("delete.retention.ms", "100"),
            ],
        )
        .await
        .unwrap();
    let producer = idempotent_producer(&kafka);
    for value in 0..200 {
        send(&producer, &topic, "target-a", &value.to_string()).await;
    }
    send(&producer, &topic, "target-b", "7").await;

    let config = kafka.consumer_config(&unique_topic("g"));
    let until = deadline();
    let mut tick = 0;
    loop {
        // A write rolls the segment that holds target-a's history, so the cleaner may take it.
        tick += 1;
        send(&producer, &topic, "tick", &tick.to_string()).await;
        let records = read_partition(&config, &topic, 0);
        let a: Vec<&str> = records
            .iter()
            .filter(|(k, _)| k == "target-a")
            .map(|(_, v)| v.as_str())
            .collect();
        // Whatever compaction did, the latest value of every key is there.
        assert_eq!(a.last(), Some(&"199"), "{records:?}");
        assert!(records.iter().any(|(k, v)| k == "target-b" && v == "7"));
        if a.len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "target-a still has {} values after {STEP_LIMIT:?}: the log was never compacted",
            a.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Records the partitions each rebalance revoked from a consumer.
#[derive(Default, Clone)]
struct RevokeLog(Arc<Mutex<Vec<BTreeSet<i32>>>>);

impl ClientContext for RevokeLog {}

impl ConsumerContext for RevokeLog {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = tpl.elements().iter().map(|e| e.partition()).collect();
            self.0.lock().unwrap().push(revoked);
        }
    }
}

fn assigned<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> BTreeSet<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Two consumers of one group on a 4-partition topic: the first takes everything, the second
/// joins, and the partitions end split between them, each in one owner. Returns the first
/// consumer's revocations and both consumers, for the caller's protocol checks.
fn two_members_split_the_partitions(
    config: &ClientConfig,
    topic: &str,
) -> (RevokeLog, BaseConsumer<RevokeLog>, BaseConsumer<RevokeLog>) {
    let log = RevokeLog::default();
    let first: BaseConsumer<RevokeLog> = config.create_with_context(log.clone()).unwrap();
    first.subscribe(&[topic]).unwrap();
    let until = deadline();
    while assigned(&first).len() < 4 {
        assert!(
            tokio::time::Instant::now() < until,
            "first member never got all 4 partitions"
        );
        assert!(first.poll(POLL).is_none_or(|m| m.is_ok()));
    }
    let second: BaseConsumer<RevokeLog> = config.create_with_context(RevokeLog::default()).unwrap();
    second.subscribe(&[topic]).unwrap();
    loop {
        let (a, b) = (assigned(&first), assigned(&second));
        if !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the members did not split the partitions: first {a:?}, second {b:?}"
        );
        assert!(first.poll(POLL).is_none_or(|m| m.is_ok()));
        assert!(second.poll(POLL).is_none_or(|m| m.is_ok()));
    }
    (log, first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_sticky_group_moves_only_the_partitions_a_new_member_takes() {
    let Some(kafka) =
        real_kafka("a_cooperative_sticky_group_moves_only_the_partitions_a_new_member_takes")
    else {
        return;
    };
    let topic = unique_topic("real-coop");
    kafka.create_topic(&topic, 4, false).await.unwrap();
    let mut config = kafka.consumer_config(&unique_topic("coop"));
    config
        .set("group.protocol", "classic")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    let (revokes, first, second) = tokio::task::spawn_blocking(move || {
        let (log, first, second) = two_members_split_the_partitions(&config, &topic);
        (log, first, second)
    })
    .await
    .unwrap();
    assert!(
        matches!(first.rebalance_protocol(), RebalanceProtocol::Cooperative),
        "cooperative-sticky runs the cooperative protocol"
    );
    let revoked = revokes.0.lock().unwrap().clone();
    assert!(!revoked.is_empty(), "the first member gave something up");
    assert!(
        revoked.iter().all(|set| set.len() < 4),
        "an incremental rebalance never revokes the whole assignment: {revoked:?}"
    );
    let kept = assigned(&first);
    assert!(!kept.is_empty() && assigned(&second).len() == 4 - kept.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_consumer_group_splits_partitions_incrementally() {
    let Some(kafka) = real_kafka("a_kip_848_consumer_group_splits_partitions_incrementally") else {
        return;
    };
    let topic = unique_topic("real-kip848");
    kafka.create_topic(&topic, 4, false).await.unwrap();
    // Under the consumer protocol the broker owns the session timeout and heartbeat interval
    // (scripts/kafka lowers them); the client may not set them.
    let mut config = kafka.consumer_config(&unique_topic("kip848"));
    config.set("group.protocol", "consumer");
    let (revokes, first, second) = tokio::task::spawn_blocking(move || {
        let (log, first, second) = two_members_split_the_partitions(&config, &topic);
        (log, first, second)
    })
    .await
    .unwrap();
    let revoked = revokes.0.lock().unwrap().clone();
    assert!(
        revoked.iter().all(|set| set.len() < 4),
        "KIP-848 revokes only what moves: {revoked:?}"
    );
    assert!(!assigned(&first).is_empty() && !assigned(&second).is_empty());
}

fn transactional_producer(kafka: &TestKafka, id: &str) -> BaseProducer {
    let producer: BaseProducer = kafka
        .producer_config()
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "30000")
        .create()
        .unwrap();
    producer.init_transactions(STEP_LIMIT).unwrap();
    producer
}

fn send_in_transaction(producer: &BaseProducer, topic: &str, values: &[&str]) {
    producer.begin_transaction().unwrap();
    for value in values {
        producer
            .send(BaseRecord::to(topic).key("k").payload(*value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(STEP_LIMIT).unwrap();
}

fn values(records: Vec<(String, String)>) -> Vec<String> {
    records.into_iter().map(|(_, v)| v).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_readers_see_committed_transactions_and_never_aborted_ones() {
    let Some(kafka) =
        real_kafka("read_committed_readers_see_committed_transactions_and_never_aborted_ones")
    else {
        return;
    };
    let topic = unique_topic("real-txn");
    kafka.create_topic(&topic, 1, false).await.unwrap();
    let committed = kafka.consumer_config(&unique_topic("rc"));
    let mut uncommitted = kafka.consumer_config(&unique_topic("ru"));
    uncommitted.set("isolation.level", "read_uncommitted");
    let id = unique_topic("txn");
    let reads = tokio::task::spawn_blocking(move || {
        let producer = transactional_producer(&kafka, &id);
        send_in_transaction(&producer, &topic, &["c1", "c2"]);
        producer.commit_transaction(STEP_LIMIT).unwrap();
        send_in_transaction(&producer, &topic, &["a1", "a2"]);
        producer.abort_transaction(STEP_LIMIT).unwrap();
        send_in_transaction(&producer, &topic, &["c3"]);
        producer.commit_transaction(STEP_LIMIT).unwrap();
        (
            values(read_partition(&committed, &topic, 0)),
            values(read_partition(&uncommitted, &topic, 0)),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        reads.0,
        ["c1", "c2", "c3"],
        "read_committed (librdkafka's default)"
    );
    assert_eq!(reads.1, ["c1", "c2", "a1", "a2", "c3"], "read_uncommitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let Some(kafka) =
        real_kafka("a_second_producer_with_the_same_transactional_id_fences_the_first")
    else {
        return;
    };
    let topic = unique_topic("real-fence");
    kafka.create_topic(&topic, 1, false).await.unwrap();
    let committed = kafka.consumer_config(&unique_topic("rc"));
    let id = unique_topic("fence");
    let (commit, read) = tokio::task::spawn_blocking(move || {
        let zombie = transactional_producer(&kafka, &id);
        send_in_transaction(&zombie, &topic, &["zombie-1"]);
        // The new owner's init_transactions aborts the zombie's open transaction and bumps the
        // epoch, so anything the zombie does next is refused by the broker.
        let owner = transactional_producer(&kafka, &id);
        let _ = zombie.send(BaseRecord::to(&topic).key("k").payload("zombie-2"));
        let commit = zombie.commit_transaction(STEP_LIMIT);
        send_in_transaction(&owner, &topic, &["owner-1"]);
        owner.commit_transaction(STEP_LIMIT).unwrap();
        (commit, values(read_partition(&committed, &topic, 0)))
    })
    .await
    .unwrap();
    let error = commit.expect_err("the fenced producer cannot commit");
    let code = error.rdkafka_error_code();
    assert!(
        matches!(
            code,
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        ),
        "fenced, not some other failure: {error} ({code:?})"
    );
    assert_eq!(
        read,
        ["owner-1"],
        "nothing of the zombie's is ever committed"
    );
}

/// A client of the broker's SASL listener: SASL_PLAINTEXT, or SASL_SSL (TLS, trusting the
/// broker's certificate) when `tls`.
fn sasl_config(
    kafka: &TestKafka,
    tls: bool,
    mechanism: &str,
    password: Option<&str>,
) -> ClientConfig {
    let listener = kafka
        .sasl()
        .expect("scripts/kafka wrote the SASL listener (SLUICE_TEST_KAFKA_DIR)")
        .expect("the SASL listener files are readable");
    let mut config = ClientConfig::new();
    if tls {
        config
            .set("bootstrap.servers", &listener.ssl_bootstrap)
            .set("security.protocol", "SASL_SSL")
            .set("ssl.ca.location", listener.ca_file.to_string_lossy());
    } else {
        config
            .set("bootstrap.servers", &listener.bootstrap)
            .set("security.protocol", "SASL_PLAINTEXT");
    }
    config
        .set("sasl.mechanism", mechanism)
        .set("sasl.username", &listener.username)
        .set("sasl.password", password.unwrap_or(&listener.password));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sasl_listeners_take_scram_and_plain_over_tls_and_not_and_refuse_a_wrong_password() {
    let Some(kafka) = real_kafka(
        "the_sasl_listeners_take_scram_and_plain_over_tls_and_not_and_refuse_a_wrong_password",
    ) else {
        return;
    };
    let topic = unique_topic("real-sasl");
    kafka.create_topic(&topic, 1, false).await.unwrap();
    let ways = [
        (false, "PLAIN"),
        (false, "SCRAM-SHA-256"),
        (true, "SCRAM-SHA-256"),
        (true, "PLAIN"),
    ];
    for (n, (tls, mechanism)) in ways.iter().enumerate() {
        let producer: FutureProducer = sasl_config(&kafka, *tls, mechanism, None)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        send(&producer, &topic, mechanism, &n.to_string()).await;
    }
    let mut reader = sasl_config(&kafka, true, "SCRAM-SHA-256", None);
    reader.set("group.id", unique_topic("sasl"));
    let records = tokio::task::spawn_blocking(move || read_partition(&reader, &topic, 0))
        .await
        .unwrap();
    assert_eq!(values(records), ["0", "1", "2", "3"]);

    // The broker's refusal reaches the client's error callback (a metadata call only sees the
    // connection go away).
    let errors = ErrorLog::default();
    let wrong: BaseProducer<ErrorLog> =
        sasl_config(&kafka, true, "SCRAM-SHA-256", Some("not-the-password"))
            .create_with_context(errors.clone())
            .unwrap();
    let refused = tokio::task::spawn_blocking(move || {
        let until = deadline();
        loop {
            let _ = wrong
                .client()
                .fetch_metadata(None, Duration::from_millis(500));
            wrong.poll(POLL);
            let seen = errors.0.lock().unwrap().clone();
            if seen
                .iter()
                .any(|(code, _)| *code == Some(RDKafkaErrorCode::Authentication))
            {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "no authentication failure reported: {seen:?}"
            );
        }
    })
    .await
    .unwrap();
    let (_, reason) = refused
        .iter()
        .find(|(code, _)| *code == Some(RDKafkaErrorCode::Authentication))
        .unwrap();
    assert!(
        reason.contains("Authentication failed") || reason.contains("SASL"),
        "the reason names the authentication: {reason}"
    );
}

/// An error librdkafka reported: its code and reason.
type Reported = (Option<RDKafkaErrorCode>, String);

/// Records the errors librdkafka reports through the client context.
#[derive(Default, Clone)]
struct ErrorLog(Arc<Mutex<Vec<Reported>>>);

impl ClientContext for ErrorLog {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0
            .lock()
            .unwrap()
            .push((error.rdkafka_error_code(), reason.to_owned()));
    }
}

impl rdkafka::producer::ProducerContext for ErrorLog {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_broker_keeps_acknowledged_records_across_a_kill_and_a_restart() {
    if real_kafka("a_private_broker_keeps_acknowledged_records_across_a_kill_and_a_restart")
        .is_none()
    {
        return;
    }
    let kafka = TestKafka::private().expect("a private broker");
    assert!(kafka.is_private() && !kafka.is_mock());
    let topic = unique_topic("real-private");
    kafka.create_topic(&topic, 1, false).await.unwrap();
    let producer = idempotent_producer(&kafka);
    for seq in 0..50 {
        send(&producer, &topic, "k", &seq.to_string()).await;
    }
    drop(producer);
    kafka
        .broker_down(sluice_testkit::Outage::Kill)
        .await
        .unwrap();
    kafka
        .broker_up(sluice_testkit::Outage::Kill)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", kafka.broker_log_tail(40)));
    // Same address after the restart, and every acknowledged record is still there.
    let config = kafka.consumer_config(&unique_topic("g"));
    let records = tokio::task::spawn_blocking(move || read_partition(&config, &topic, 0))
        .await
        .unwrap();
    assert_eq!(
        values(records),
        (0..50).map(|s| s.to_string()).collect::<Vec<_>>()
    );
}
