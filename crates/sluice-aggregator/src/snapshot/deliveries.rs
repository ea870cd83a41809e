//! The snapshot and dead-letter producer's context: the delivery result of each snapshot
//! record, by the id it was sent with, until the round that sent it takes them. Dead letters
//! (id 0) are only logged. It also knows which snapshot records are still unreported, so a
//! periodic round can wait for a stalled one's records instead of queueing another copy. It
//! must not retry or decide anything about a failed record.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};

use crate::shared::lock;

/// The producer's context (see the module doc).
#[derive(Default)]
pub struct Deliveries {
    results: Mutex<HashMap<usize, Result<(), KafkaError>>>,
    /// Snapshot records queued and not reported yet.
    unreported: Mutex<HashSet<usize>>,
}

impl Deliveries {
    /// Whether every one of `ids` was reported.
    pub fn all_done(&self, ids: &[usize]) -> bool {
        let results = lock(&self.results);
        ids.iter().all(|id| results.contains_key(id))
    }

    /// Notes that the snapshot record `id` was queued (before the next producer poll, which
    /// is the only place its report can arrive).
    pub fn sent(&self, id: usize) {
        lock(&self.unreported).insert(id);
    }

    /// Whether every snapshot record queued so far was reported.
    pub fn idle(&self) -> bool {
        lock(&self.unreported).is_empty()
    }

    /// How many of `ids` were reported.
    pub fn reported(&self, ids: &[usize]) -> usize {
        let results = lock(&self.results);
        ids.iter().filter(|id| results.contains_key(id)).count()
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
        if id == crate::owners::MEMBER_DELIVERY {
            if let Err(error) = outcome {
                tracing::warn!(%error, "member record not written; the next heartbeat writes it again");
            }
            return;
        }
        lock(&self.unreported).remove(&id);
        lock(&self.results).insert(id, outcome);
    }
}
