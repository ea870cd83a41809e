//! Deltas written to Kafka by hand, as a worker would write them (its headers, key = target):
//! for tests that feed the aggregator records no upstream would send.

use std::time::Duration;

use sluice_testkit::TestKafka;

/// Writes a delta of `target` to `partition` of `topic` by hand (as a worker would, headers
/// included).
pub async fn produce_delta(
    kafka: &TestKafka,
    topic: &str,
    partition: i32,
    target: &str,
    id: u64,
    data: &str,
) {
    produce_event(kafka, topic, partition, target, id, "message", data).await;
}

/// [`produce_delta`] of the SSE event type `event`.
pub async fn produce_event(
    kafka: &TestKafka,
    topic: &str,
    partition: i32,
    target: &str,
    id: u64,
    event: &str,
    data: &str,
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let id = id.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "sluice.target",
            value: Some(target),
        })
        .insert(Header {
            key: "sse.id",
            value: Some(&id),
        })
        .insert(Header {
            key: "sse.event",
            value: Some(event),
        });
    producer
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(target)
                .payload(data)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("produce");
}

/// Writes `records` (headers and value) to `partition` of `topic` with the key `key`, batched
/// by one producer, and waits until Kafka acknowledged every one.
pub async fn produce_all(
    kafka: &TestKafka,
    topic: &str,
    partition: i32,
    key: &str,
    records: impl IntoIterator<Item = (rdkafka::message::OwnedHeaders, String)>,
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka
        .producer_config()
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let mut acks = Vec::new();
    for (headers, data) in records {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(&data)
            .headers(headers);
        match producer.send_result(record) {
            Ok(ack) => acks.push(ack),
            Err((error, _)) => panic!("queue a record: {error}"),
        }
    }
    for ack in acks {
        ack.await
            .expect("the producer is alive")
            .map_err(|(e, _)| e)
            .expect("record written");
    }
}
