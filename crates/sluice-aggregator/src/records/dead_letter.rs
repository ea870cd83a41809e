//! A malformed delta's copy in the dead-letter topic (when one is configured): the original
//! key, payload and headers plus `sluice.error` (why) and `sluice.source` (topic/partition/offset).
//! Queued on the shared producer, never awaited; it must not hold up the loop or retry.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;

use super::record::Record;
use crate::shared::Shared;

/// Queues `message` (of `target`) in the dead-letter topic with `error`.
pub fn dead_letter<R: Record>(shared: &Shared, message: &R, target: &str, error: &str) {
    let Some(topic) = &shared.dead_letter else {
        return;
    };
    let mut original = Vec::new();
    message.for_each_header(|name, value| {
        original.push((String::from_utf8_lossy(name), value));
    });
    let mut headers = OwnedHeaders::new_with_capacity(original.len() + 2);
    for (key, value) in &original {
        headers = headers.insert(Header { key, value: *value });
    }
    let source = format!(
        "{}/{}/{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    headers = headers
        .insert(Header {
            key: "sluice.error",
            value: Some(error),
        })
        .insert(Header {
            key: "sluice.source",
            value: Some(&source),
        });
    let record = BaseRecord::with_opaque_to(topic, 0)
        .key(target)
        .payload(message.payload())
        .headers(headers);
    match shared.producer.send(record) {
        Ok(()) => shared.metrics.dead_letters.inc(),
        Err((error, _)) => tracing::warn!(%error, "dead-letter record not queued"),
    }
}
