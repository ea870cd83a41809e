//! The consumer group's rebalances, run by librdkafka inside `poll` on the consumer thread:
//! an assignment restores the targets of its partitions (`restore`, after pinning start offsets
//! in `start_offsets`), a revocation snapshots, commits and lets them go (`release`), and a lost
//! assignment drops them without writing anything.
//!
//! The group is cooperative (`membership`): an assignment lists only the partitions added and a
//! revocation only those taken away, so the targets of the partitions that stay are neither
//! released nor restored and keep being served throughout. (A lost assignment lists them all.)
//! rust-rdkafka's default `rebalance` calls `incremental_assign` / `incremental_unassign` after
//! `pre_rebalance`, as the protocol in use requires.
//!
//! Because these run on the loop's own thread, a revoked partition's targets are snapshotted
//! and committed before another aggregator can take them, and an assigned partition's targets
//! are restored before its first record is offered. Nothing here handles records or fetches
//! base states; it only queues the targets that need one.

mod release;
mod restore;
mod start_offsets;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock, Weak};

use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};

use crate::batch::BatchQueue;
use crate::shared::{Shared, TopicPartition};

/// The consumer's context: rebalances go to [`restore`](restore::restore) and
/// [`release`](release::release) with the shared state.
pub struct Ctx {
    /// The shared state.
    pub shared: Arc<Shared>,
    /// The engine's batch queue, which assigned partitions forward their records to. Weak: the
    /// engine owns it and drops it before the consumer.
    queue: OnceLock<Weak<BatchQueue>>,
}

impl Ctx {
    /// A context around the shared state.
    pub fn new(shared: Arc<Shared>) -> Ctx {
        Ctx {
            shared,
            queue: OnceLock::new(),
        }
    }

    /// Tells the context the engine's batch queue (once).
    pub fn set_queue(&self, queue: &Arc<BatchQueue>) {
        let _ = self.queue.set(Arc::downgrade(queue));
    }

    /// Forwards each partition's fetch queue to the batch queue, before the assignment starts
    /// fetching (librdkafka keeps a forwarding the application set), so every record of these
    /// partitions takes the batch path.
    pub fn forward(&self, tpl: &TopicPartitionList) {
        let Some(queue) = self.queue.get().and_then(Weak::upgrade) else {
            return;
        };
        for element in tpl.elements() {
            if !queue.forward(element.topic(), element.partition()) {
                tracing::warn!(
                    topic = element.topic(),
                    partition = element.partition(),
                    "cannot forward the partition to the batch queue: its records come through the consumer's queue"
                );
            }
        }
    }
}

/// The partitions of `tpl`.
fn partitions(tpl: &TopicPartitionList) -> BTreeSet<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.forward(tpl);
                restore::restore(&self.shared, consumer, tpl);
            }
            Rebalance::Revoke(tpl) => release::release(&self.shared, consumer, tpl),
            Rebalance::Error(error) => tracing::warn!(%error, "consumer group rebalance failed"),
        }
    }
}
