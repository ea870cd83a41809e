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
            value: Some("message"),
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
