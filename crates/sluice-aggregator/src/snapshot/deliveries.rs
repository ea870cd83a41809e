//! The snapshot and dead-letter producer's context: the delivery result of each snapshot
//! record, by the id it was sent with, until the round that sent it takes them. Dead letters
//! (id 0) are only logged. It must not retry or decide anything about a failed record.

use std::collections::HashMap;
use std::sync::Mutex;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};

use crate::shared::lock;

/// The producer's context (see the module doc).
#[derive(Default)]
pub struct Deliveries {
    results: Mutex<HashMap<usize, Result<(), KafkaError>>>,
}

impl Deliveries {
    /// Whether every one of `ids` was reported.
    pub fn all_done(&self, ids: &[usize]) -> bool {
        let results = lock(&self.results);
        ids.iter().all(|id| results.contains_key(id))
    }

    /// Everything reported so far (late reports of an earlier round included, which no one
    /// asks for again).
    pub fn take(&self) -> HashMap<usize, Result<(), KafkaError>> {
        std::mem::take(&mut *lock(&self.results))
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.clone()),
        };
        if id == 0 {
            if let Err(error) = outcome {
                tracing::warn!(%error, "dead-letter record not written");
            }
            return;
        }
        lock(&self.results).insert(id, outcome);
    }
}
