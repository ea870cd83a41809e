//! `delivery.mode: exactly_once`: each target's events and the checkpoint that covers them go
//! to Kafka in one transaction, so a `read_committed` reader sees every event the upstream sent
//! exactly once, and a restart resumes exactly after the last committed event.
//!
//! One transactional producer (a *lane*) per checkpoint partition, its `transactional.id`
//! `<checkpoint topic>-<partition>`: whichever worker runs that partition's targets uses it, and
//! its `init_transactions` fences a previous holder (a zombie's next commit fails) and ends the
//! transaction it left open. A target's records go to its checkpoint partition's lane, which
//! keeps them in order in its own buffer, writes them in a transaction with one checkpoint record
//! per target (its last event id in that transaction), and commits after `commit_interval`,
//! `max_records`, or once records stop coming for a few milliseconds (the targets behind them
//! wait for the acknowledgements). Only then are the records acknowledged to their targets. A transaction that
//! cannot commit is aborted and the same records, in the same order, are sent again in a new one:
//! nothing is dropped in the hope that the upstream replays it.
//!
//! What it must not do: acknowledge a record before its transaction committed, reorder a target's
//! records, or keep going once fenced (another process holds the lane's id: its records fail for
//! good, and the targets stop before them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use sluice_config::{TargetId, Transactions};
use sluice_publish::{
    Delivered, Mark, PublishError, Publisher, Record, RecordMeta, Stamp, TrySendError,
    for_each_header, partition_for,
};
use sluice_sse::Event;
use tokio::sync::{mpsc, oneshot};

/// Records a lane holds, waiting or in its transaction, before a sender is told it is full.
const LANE_CAPACITY: usize = 20_000;
/// A transaction is committed once no record came for this long (or at `commit_interval`, or
/// at `max_records`, whichever is first).
const LINGER: Duration = Duration::from_millis(5);
/// A lane's pause after a failed transaction, doubling up to [`MAX_RETRY_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(200);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// One record for a lane, with whom to tell when it is committed.
struct Item {
    topic: Box<str>,
    record: Record,
    target: TargetId,
    /// The event id a restart resumes after once this record is committed (`None`: an event
    /// without an id, which moves no checkpoint).
    resume_id: Option<Box<str>>,
    ack: oneshot::Sender<Result<Delivered, PublishError>>,
}

/// The lanes of a worker, and each target's owner epoch (stamped on its checkpoints).
pub(crate) struct Lanes {
    senders: Vec<mpsc::Sender<Item>>,
    epochs: Arc<Mutex<HashMap<TargetId, u64>>>,
}

/// A record's answer: its transaction committed (where it is stored), or why not.
pub(crate) struct LaneAck(oneshot::Receiver<Result<Delivered, PublishError>>);

impl std::future::Future for LaneAck {
    type Output = Result<Delivered, PublishError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|answer| {
            // A lane that went away (the worker stops) answers nothing: sent again, in order.
            answer.unwrap_or(Err(PublishError::Delivery(KafkaError::Canceled)))
        })
    }
}

/// Why the lanes could not start.
#[derive(Debug, thiserror::Error)]
pub enum LanesError {
    /// A producer could not be created.
    #[error("creating the transactional producer {id} failed: {source}")]
    Create {
        /// Its `transactional.id`.
        id: String,
        /// The error.
        source: PublishError,
    },
    /// `init_transactions` failed for good (e.g. the broker refuses transactions).
    #[error("initialising the transactions of {id} failed: {source}")]
    Init {
        /// Its `transactional.id`.
        id: String,
        /// The error.
        source: KafkaError,
    },
}

impl Lanes {
    /// A lane for each of the `partitions` partitions of `checkpoint_topic`, each producer from
    /// `kafka` with its transactional id, initialised (fencing whoever held the ids before) before
    /// this returns. `owner` stamps the checkpoint records.
    pub(crate) async fn start(
        kafka: &ClientConfig,
        checkpoint_topic: &str,
        partitions: i32,
        settings: Transactions,
        owner: Arc<str>,
    ) -> Result<Lanes, LanesError> {
        let epochs: Arc<Mutex<HashMap<TargetId, u64>>> = Arc::default();
        let mut senders = Vec::new();
        for partition in 0..partitions.max(1) {
            let id = format!("{checkpoint_topic}-{partition}");
            let mut config = kafka.clone();
            let timeout_ms = settings.transaction_timeout.as_millis().to_string();
            let record_timeout_ms = (settings.transaction_timeout / 2).as_millis().to_string();
            config
                .set("transactional.id", &id)
                .set("transaction.timeout.ms", &timeout_ms)
                // Bounded under transactions (librdkafka requires it): a record that times out
                // fails its transaction, which is aborted and sent again, so none is lost. Half
                // the transaction timeout, so the abort comes before the broker's coordinator
                // times the transaction out itself (which fences this producer for good).
                .set("message.timeout.ms", &record_timeout_ms);
            let publisher = Publisher::new(&config).map_err(|source| LanesError::Create {
                id: id.clone(),
                source,
            })?;
            init(&publisher, &id, settings.transaction_timeout).await?;
            let (tx, rx) = mpsc::channel(LANE_CAPACITY);
            let lane = Lane {
                id,
                publisher,
                checkpoint_topic: checkpoint_topic.to_owned(),
                owner: owner.clone(),
                epochs: epochs.clone(),
                settings,
            };
            tokio::spawn(lane.run(rx));
            senders.push(tx);
        }
        tracing::info!(
            lanes = senders.len(),
            commit_interval_ms = u64::try_from(settings.commit_interval.as_millis()).unwrap_or(0),
            "exactly-once delivery: one transactional producer per checkpoint partition"
        );
        Ok(Lanes { senders, epochs })
    }

    /// Notes the owner epoch `target`'s run stamps its checkpoints with.
    pub(crate) fn begin(&self, target: &TargetId, epoch: u64) {
        self.epochs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(target.clone(), epoch);
    }

    /// Hands one event's record to its target's lane (full: [`TrySendError::QueueFull`]).
    pub(crate) fn send_event(
        &self,
        topic: &str,
        key: &[u8],
        event: &Event,
        meta: &RecordMeta<'_>,
    ) -> Result<LaneAck, TrySendError> {
        let lanes = i32::try_from(self.senders.len()).unwrap_or(i32::MAX);
        let lane = usize::try_from(partition_for(meta.target.as_str(), lanes)).unwrap_or(0);
        let Some(sender) = self.senders.get(lane) else {
            return Err(TrySendError::Failed(PublishError::Delivery(
                KafkaError::Canceled,
            )));
        };
        let mut headers = Vec::with_capacity(if meta.cloudevents { 12 } else { 7 });
        for_each_header(event, meta, |name, value| {
            headers.push((name, value.to_vec()))
        });
        let (ack, answer) = oneshot::channel();
        let item = Item {
            topic: topic.into(),
            record: Record {
                key: key.to_vec(),
                value: event.data.clone().into_bytes(),
                headers,
            },
            target: meta.target.clone(),
            resume_id: (!event.id.is_empty()).then(|| event.id.as_str().into()),
            ack,
        };
        match sender.try_send(item) {
            Ok(()) => Ok(LaneAck(answer)),
            Err(mpsc::error::TrySendError::Full(_)) => Err(TrySendError::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(TrySendError::Failed(
                PublishError::Delivery(KafkaError::Canceled),
            )),
        }
    }
}

/// `init_transactions`, retried while the broker is not ready for it.
async fn init(publisher: &Publisher, id: &str, timeout: Duration) -> Result<(), LanesError> {
    let mut pause = RETRY_PAUSE;
    loop {
        let producer = publisher.clone();
        let result = tokio::task::spawn_blocking(move || producer.init_transactions(timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled));
        match result {
            Ok(()) => return Ok(()),
            Err(error) if retriable(&error) => {
                tracing::warn!(transactional_id = id, %error, "initialising transactions failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            Err(source) => {
                return Err(LanesError::Init {
                    id: id.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Whether trying again may work (not fenced, not a fatal producer error).
fn retriable(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => !e.is_fatal() && e.code() != RDKafkaErrorCode::Fenced,
        _ => true,
    }
}

/// One transactional producer and its records.
struct Lane {
    id: String,
    publisher: Publisher,
    checkpoint_topic: String,
    owner: Arc<str>,
    epochs: Arc<Mutex<HashMap<TargetId, u64>>>,
    settings: Transactions,
}

impl Lane {
    /// Collects records into transactions until every sender is gone.
    async fn run(self, mut rx: mpsc::Receiver<Item>) {
        let mut batch: Vec<Item> = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.settings.commit_interval;
            while batch.len() < self.settings.max_records {
                // Records that stop coming for LINGER end the transaction early: the targets
                // behind them wait for its acknowledgements (their windows are full, or the
                // upstream is quiet), so waiting longer only delays them.
                let until = deadline.min(tokio::time::Instant::now() + LINGER);
                tokio::select! {
                    biased;
                    item = rx.recv() => match item {
                        Some(item) => batch.push(item),
                        None => break,
                    },
                    () = tokio::time::sleep_until(until) => break,
                }
            }
            if !self.commit(&mut batch).await {
                // Fenced: this lane's id belongs to another process now.
                for item in batch.drain(..) {
                    let _ = item.ack.send(Err(fenced()));
                }
                rx.close();
                while let Some(item) = rx.recv().await {
                    let _ = item.ack.send(Err(fenced()));
                }
                return;
            }
        }
    }

    /// Commits `batch` in a transaction, as many times as it takes; acknowledges its records.
    /// `false` when the lane is fenced (nothing acknowledged).
    async fn commit(&self, batch: &mut Vec<Item>) -> bool {
        let mut pause = RETRY_PAUSE;
        let mut failures = 0u64;
        loop {
            match self.transaction(batch).await {
                Ok(delivered) => {
                    for (item, at) in batch.drain(..).zip(delivered) {
                        let _ = item.ack.send(Ok(at));
                    }
                    return true;
                }
                Err(error) if retriable(&error) => {
                    failures += 1;
                    if failures.is_power_of_two() {
                        tracing::warn!(transactional_id = %self.id, records = batch.len(), %error, failures, "a transaction did not commit: aborted, its records are sent again in a new one");
                    }
                    let producer = self.publisher.clone();
                    let timeout = self.settings.transaction_timeout;
                    let aborted =
                        tokio::task::spawn_blocking(move || producer.abort_transaction(timeout))
                            .await
                            .unwrap_or(Err(KafkaError::Canceled));
                    if let Err(error) = aborted {
                        if !retriable(&error) {
                            tracing::error!(transactional_id = %self.id, %error, "fenced: another process holds this transactional id; its targets' records fail here");
                            return false;
                        }
                        tracing::debug!(transactional_id = %self.id, %error, "abort failed; trying the transaction again");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(error) => {
                    tracing::error!(transactional_id = %self.id, %error, "fenced: another process holds this transactional id; its targets' records fail here");
                    return false;
                }
            }
        }
    }

    /// One attempt: begin, send every record in order and one checkpoint per target, commit.
    async fn transaction(&self, batch: &[Item]) -> Result<Vec<Delivered>, KafkaError> {
        self.publisher.begin_transaction()?;
        let mut pending = Vec::with_capacity(batch.len());
        let mut last: HashMap<&TargetId, &str> = HashMap::new();
        for item in batch {
            pending.push(self.send(|p| p.try_send(&item.topic, &item.record)).await?);
            if let Some(id) = &item.resume_id {
                last.insert(&item.target, id);
            }
        }
        let stamps: Vec<(&TargetId, &str, u64)> = {
            let epochs = self
                .epochs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            last.into_iter()
                .map(|(target, id)| (target, id, epochs.get(target).copied().unwrap_or(0)))
                .collect()
        };
        let mut checkpoints = Vec::with_capacity(stamps.len());
        for (target, id, epoch) in stamps {
            let stamp = Stamp {
                epoch,
                owner: self.owner.clone(),
                mark: Mark::Plain,
            };
            checkpoints.push(
                self.send(|p| p.try_write_checkpoint(&self.checkpoint_topic, target, id, &stamp))
                    .await?,
            );
        }
        let producer = self.publisher.clone();
        let timeout = self.settings.transaction_timeout;
        let started = tokio::time::Instant::now();
        tokio::task::spawn_blocking(move || producer.commit_transaction(timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))?;
        tracing::trace!(transactional_id = %self.id, records = batch.len(), commit_ms = started.elapsed().as_millis() as u64, "transaction committed");
        // Committed: every record of it was delivered.
        let mut delivered = Vec::with_capacity(pending.len());
        for answer in pending {
            delivered.push(answer.await.map_err(kafka_error)?);
        }
        for answer in checkpoints {
            answer.await.map_err(kafka_error)?;
        }
        Ok(delivered)
    }

    /// Hands one record to the producer, waiting while its queue is full.
    async fn send(
        &self,
        mut send: impl FnMut(&Publisher) -> Result<sluice_publish::Pending, TrySendError>,
    ) -> Result<sluice_publish::Pending, KafkaError> {
        loop {
            match send(&self.publisher) {
                Ok(pending) => return Ok(pending),
                Err(TrySendError::QueueFull) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(TrySendError::Failed(error)) => return Err(kafka_error(error)),
            }
        }
    }
}

fn kafka_error(error: PublishError) -> KafkaError {
    match error {
        PublishError::Create(e) | PublishError::Delivery(e) | PublishError::Flush(e) => e,
        PublishError::Partitions(_) => KafkaError::Canceled,
    }
}

/// The error a fenced lane's records fail with (never retried: the target stops before them).
fn fenced() -> PublishError {
    PublishError::Delivery(KafkaError::MessageProduction(RDKafkaErrorCode::Fatal))
}
