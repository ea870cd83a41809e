//! The worker's librdkafka settings: the producer's, and the reader's and admin client's, all
//! built by sluice-publish's one Kafka client policy ([`KafkaSettings`]).
//!
//! What it must not do: add a property of its own outside that policy, or log a value (secret
//! properties are read here).

use rdkafka::ClientConfig;
use sluice_config::WorkerConfig;
use sluice_publish::{KafkaSettings, SecretPropertyError};

/// The librdkafka settings of the worker's producer.
///
/// Sluice's defaults (overridable in `kafka.properties`): messages never time out in the
/// producer (`message.timeout.ms=0`: a delivery is retried until Kafka takes it, never dropped)
/// and the producer queue is bounded to 64 MiB, so a Kafka outage pauses reading instead of
/// growing memory. Secret properties are read now.
pub fn kafka_client_config(config: &WorkerConfig) -> Result<ClientConfig, SecretPropertyError> {
    let max_record = max_record_bytes(config).to_string();
    kafka_settings(config).full(&[
        ("message.max.bytes", max_record.as_str()),
        ("message.timeout.ms", "0"),
        ("queue.buffering.max.kbytes", "65536"),
    ])
}

/// The largest record an enabled target's events can make ([`sluice_publish::max_record_bytes`]
/// of its parser limits), within librdkafka's ceiling for `message.max.bytes`.
fn max_record_bytes(config: &WorkerConfig) -> usize {
    max_record_of(
        config
            .targets
            .iter()
            .filter(|t| t.enabled)
            .map(|t| t.limits),
    )
}

pub(crate) fn max_record_of(limits: impl Iterator<Item = sluice_sse::Limits>) -> usize {
    /// librdkafka refuses a larger `message.max.bytes`.
    const LIBRDKAFKA_MAX: usize = 1_000_000_000;
    limits
        .map(sluice_publish::max_record_bytes)
        .max()
        .unwrap_or(1_000_000)
        .min(LIBRDKAFKA_MAX)
}

/// The settings of the checkpoint reader and admin client: connection and security properties
/// only (producer tuning would only draw librdkafka configuration warnings).
pub(crate) fn kafka_reader_config(
    config: &WorkerConfig,
) -> Result<ClientConfig, SecretPropertyError> {
    kafka_settings(config).connection()
}

fn kafka_settings(config: &WorkerConfig) -> KafkaSettings<'_> {
    KafkaSettings::from(&config.kafka)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_takes_the_largest_record_a_target_can_make() {
        let small = sluice_sse::Limits {
            max_line_bytes: 1000,
            max_event_bytes: 10_000,
        };
        let large = sluice_sse::Limits::default();
        assert_eq!(
            max_record_of([small, large].into_iter()),
            sluice_publish::max_record_bytes(large)
        );
        // 4 MiB events (the default) need far more than librdkafka's default of about 1 MB.
        assert!(sluice_publish::max_record_bytes(large) > 2 * 4 * 1024 * 1024);
        assert_eq!(max_record_of(std::iter::empty()), 1_000_000);
    }
}
