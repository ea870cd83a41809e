//! The consumer loop: one thread owns the group consumer and, round after round, serves the
//! consumer's own queue (rebalances run inside its `poll`, see `rebalance`), hands each record
//! to `records`, steps the base fetches (`fetch`), runs a snapshot round every interval
//! (`snapshot`), refreshes the lag gauges and queues its member record when due (`owners`). At shutdown it writes final snapshots, commits
//! and leaves the group (`membership::leave`, explicitly, even as a static member).
//!
//! The loop owns the order of these steps and nothing else: it must not merge, fetch, snapshot
//! or rebalance itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use sluice_config::AggregatorKafka;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchQueue};
use crate::fetch::Fetcher;
use crate::membership;
use crate::out_of_range;
use crate::owners;
use crate::rebalance::Ctx;
use crate::records::{Handler, Record};
use crate::shared::Shared;
use crate::snapshot::snapshot_round;

/// How long shutdown waits for dead letters still in flight.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often consumer lag is refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// Records taken from the batch queue per call.
const BATCH: usize = 1024;
/// Records handled per round before the loop serves rebalances, base fetches and snapshots.
const ROUND: usize = 4096;
/// How long an idle round waits for records.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// The loop's own state.
pub struct Engine {
    shared: Arc<Shared>,
    /// Declared before `consumer`, so it is destroyed before the consumer's client.
    queue: Option<Arc<BatchQueue>>,
    consumer: BaseConsumer<Ctx>,
    fetcher: Fetcher,
    records: Handler,
    snapshot_interval: Duration,
    /// The group settings, for leaving it at shutdown.
    kafka: AggregatorKafka,
}

impl Engine {
    /// An engine around a subscribed consumer.
    pub fn new(
        shared: Arc<Shared>,
        consumer: BaseConsumer<Ctx>,
        snapshot_interval: Duration,
        kafka: AggregatorKafka,
    ) -> Engine {
        // SAFETY of the queue's contract: the engine owns both and drops the queue first.
        #[allow(unsafe_code)]
        let queue = unsafe { BatchQueue::new(consumer.client().native_ptr()) }.map(Arc::new);
        match &queue {
            Some(queue) => consumer.context().set_queue(queue),
            None => tracing::warn!(
                "cannot create the batch queue: records come through the consumer's queue"
            ),
        }
        Engine {
            fetcher: Fetcher::new(shared.clone()),
            records: Handler::new(shared.clone()),
            shared,
            queue,
            consumer,
            snapshot_interval,
            kafka,
        }
    }

    /// Runs until `shutdown`, then writes final snapshots, commits and leaves the group.
    pub fn run(mut self, shutdown: CancellationToken) {
        let mut next_snapshot = Instant::now() + self.snapshot_interval;
        let mut next_lag = Instant::now() + LAG_INTERVAL;
        let mut batch = Batch::with_capacity(BATCH);
        while !shutdown.is_cancelled() {
            self.consume_round(&mut batch);
            // Delivery reports of dead letters (snapshot rounds poll for their own).
            self.shared.producer.poll(Duration::ZERO);
            let queue = self.queue.as_deref();
            self.fetcher.step(&|topic, partition| {
                queue.and_then(|queue| queue.cached_high_watermark(topic, partition))
            });
            let now = Instant::now();
            if now >= next_snapshot {
                snapshot_round(&self.shared, &self.consumer, None, CommitMode::Async);
                next_snapshot = Instant::now() + self.snapshot_interval;
            }
            if now >= next_lag {
                self.update_lag();
                next_lag = now + LAG_INTERVAL;
            }
            owners::publish(
                &self.shared.owners,
                &self.shared.producer,
                &self.shared.members_topic,
            );
        }
        tracing::info!("stopping: writing final snapshots");
        snapshot_round(&self.shared, &self.consumer, None, CommitMode::Sync);
        // The revocation runs (it finds nothing new to snapshot), then the group is left.
        membership::leave(&self.shared, &self.consumer, &self.kafka);
        owners::publish_tombstone(
            &self.shared.owners,
            &self.shared.producer,
            &self.shared.members_topic,
        );
        for cell in self.shared.store.all() {
            cell.retire();
        }
        if let Err(error) = self.shared.producer.flush(FLUSH_TIMEOUT) {
            tracing::warn!(%error, "dead letters still in flight at shutdown");
        }
        drop(batch);
        // The queue goes before the consumer's client (field order does the same on a panic).
        self.queue = None;
    }

    /// Serves the consumer's own queue (rebalances, commits, errors, and the records of any
    /// partition not forwarded), then takes up to [`ROUND`] records from the batch queue,
    /// waiting up to [`IDLE_WAIT`] for the first when the consumer's queue had nothing.
    fn consume_round(&self, batch: &mut Batch) {
        let mut wait = if self.queue.is_some() {
            Duration::ZERO
        } else {
            IDLE_WAIT
        };
        let mut budget = ROUND;
        // One clock read per call: "as of" is exact to within a round.
        let mut now = SystemTime::now();
        while budget > 0 {
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    if wait > Duration::ZERO {
                        now = SystemTime::now();
                    }
                    self.records.handle(&message, now)
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    out_of_range::restart_gone_partitions(&self.shared, &self.consumer);
                    break;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "kafka consumer error");
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
            budget -= 1;
        }
        let Some(queue) = &self.queue else {
            return;
        };
        let mut wait = if budget == ROUND {
            IDLE_WAIT
        } else {
            Duration::ZERO
        };
        while budget > 0 {
            let n = queue.consume(wait, batch);
            if n == 0 {
                break;
            }
            if wait > Duration::ZERO {
                now = SystemTime::now();
            }
            let mut gone = Vec::new();
            batch.drain(|record| match record.error() {
                None => self.records.handle(&record, now),
                Some(_) if record.is_offset_out_of_range() => {
                    gone.push((
                        Record::topic(&record).to_owned(),
                        Record::partition(&record),
                    ));
                }
                Some(error) => tracing::warn!(
                    topic = Record::topic(&record),
                    partition = Record::partition(&record),
                    %error,
                    "kafka consumer error"
                ),
            });
            for (topic, partition) in gone {
                out_of_range::restart_partition(&self.shared, &self.consumer, &topic, partition);
            }
            budget = budget.saturating_sub(n);
            wait = Duration::ZERO;
        }
    }

    fn update_lag(&self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for element in positions.elements() {
            let Offset::Offset(position) = element.offset() else {
                continue;
            };
            match self.consumer.fetch_watermarks(
                element.topic(),
                element.partition(),
                Duration::from_secs(1),
            ) {
                Ok((_, high)) => self
                    .shared
                    .metrics
                    .consumer_lag
                    .with_label_values(&[element.topic(), &element.partition().to_string()])
                    .set((high - position).max(0)),
                Err(error) => tracing::debug!(%error, "cannot read watermarks for lag"),
            }
        }
    }
}
