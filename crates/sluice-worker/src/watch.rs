//! Follows the checkpoint topic from where the worker's start read it to: every checkpoint
//! record another worker process writes from then on (a zombie's late write, a newer owner's
//! first one) is reported as a [`Landed`], and [`serve`] keeps the last record of each running
//! target this run's: a lower (epoch, owner) than the run's makes the target write its
//! checkpoint again; a higher one means a newer owner runs it, so it is stopped here.
//!
//! It reads by `assign()` (no group, no committed offsets) on a thread of its own, from the
//! offsets the start read ended at, or the partitions' high watermarks noted before any target
//! starts, so no record written after the start is missed.
//!
//! What it must NOT do: report the worker's own records, write to Kafka itself (the target
//! does, through its one checkpoint writer), or act on a target that is not running.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sluice_config::TargetId;
use sluice_publish::checkpoint_record;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::supervisor::Supervisor;

/// One poll of the consumer: how soon a stop is seen.
const POLL: Duration = Duration::from_millis(100);
/// How long the setup may take to learn the topic's partitions and their ends.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A checkpoint record another worker process wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Landed {
    /// The target id (the record's key).
    pub(crate) target: String,
    /// Its owner epoch (0: unstamped, an old format).
    pub(crate) epoch: u64,
    /// The process that wrote it, when stamped.
    pub(crate) owner: Option<String>,
    /// The event id (the resume point it names).
    pub(crate) event_id: String,
    /// Its part in a planned handover.
    pub(crate) mark: sluice_publish::Mark,
}

/// The follower's thread and what it reports.
pub(crate) struct Watch {
    landed: mpsc::UnboundedReceiver<Landed>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Follows `topic` from `ends` (partitions missing there start at their high watermark
    /// now), reporting records not written by `own`.
    pub(crate) async fn start(
        kafka: &ClientConfig,
        topic: &str,
        ends: &HashMap<i32, i64>,
        own: Arc<str>,
    ) -> Result<Watch, KafkaError> {
        let mut config = kafka.clone();
        config
            .set("group.id", "sluice-checkpoint-watch")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let topic = topic.to_owned();
        let ends = ends.clone();
        let consumer = tokio::task::spawn_blocking(move || assign(&config, &topic, &ends))
            .await
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))??;
        let (tx, landed) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sluice-watch".to_owned())
                .spawn(move || follow(&consumer, &stop, &own, &tx))
                .map_err(|e| KafkaError::ClientCreation(e.to_string()))?
        };
        Ok(Watch {
            landed,
            stop,
            thread: Some(thread),
        })
    }

    /// The next record of another process (`None` once the thread ended).
    pub(crate) async fn next(&mut self) -> Option<Landed> {
        self.landed.recv().await
    }

    /// `first` and the records that came after it, up to `max` in all, without waiting.
    pub(crate) fn batch(&mut self, first: Landed, max: usize) -> Vec<Landed> {
        let mut batch = vec![first];
        while batch.len() < max {
            match self.landed.try_recv() {
                Ok(landed) => batch.push(landed),
                Err(_) => break,
            }
        }
        batch
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The consumer, assigned to every partition of `topic` at its start offset.
fn assign(
    config: &ClientConfig,
    topic: &str,
    ends: &HashMap<i32, i64>,
) -> Result<BaseConsumer, KafkaError> {
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), SETUP_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let start = match ends.get(&partition) {
            Some(end) => *end,
            None => {
                consumer
                    .fetch_watermarks(topic, partition, SETUP_TIMEOUT)?
                    .1
            }
        };
        assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

fn follow(
    consumer: &BaseConsumer,
    stop: &AtomicBool,
    own: &str,
    landed: &mpsc::UnboundedSender<Landed>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(POLL) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, "following the checkpoint topic");
                continue;
            }
        };
        let (Some(Ok(target)), Some(value)) =
            (message.key().map(std::str::from_utf8), message.payload())
        else {
            continue; // a tombstone or a key that is no target id
        };
        let headers = message.headers().into_iter().flat_map(|h| h.iter());
        let Ok(stored) = checkpoint_record::decode(value, headers.map(|h| (h.key, h.value))) else {
            continue;
        };
        if stored.owner == Some(own) {
            continue;
        }
        let report = Landed {
            target: target.to_owned(),
            epoch: stored.epoch,
            owner: stored.owner.map(str::to_owned),
            event_id: stored.event_id.to_owned(),
            mark: stored.mark,
        };
        if landed.send(report).is_err() {
            return;
        }
    }
}

/// Acts on a record another process wrote for a target this worker may run.
pub(crate) async fn serve(
    landed: Landed,
    own: &str,
    supervisor: &mut Supervisor,
    metrics: &Metrics,
    grace: Duration,
) {
    let Ok(id) = landed.target.parse::<TargetId>() else {
        return; // no target id: no target of ours
    };
    let Some(epoch) = supervisor.epoch_of(&id) else {
        return; // not running here: nothing of ours to keep last
    };
    let theirs = (landed.epoch, landed.owner.as_deref().unwrap_or(""));
    if theirs < (epoch, own) {
        tracing::info!(
            target_id = landed.target,
            epoch,
            their_epoch = landed.epoch,
            owner = landed.owner.as_deref().unwrap_or("unstamped"),
            "an older owner's checkpoint landed after this run's: rewriting it"
        );
        supervisor.rewrite(&id);
        metrics.checkpoint_rewrites.inc();
        return;
    }
    tracing::warn!(
        target_id = landed.target,
        epoch,
        their_epoch = landed.epoch,
        owner = landed.owner.as_deref().unwrap_or("unstamped"),
        "a newer owner runs this target: stopping it here"
    );
    metrics.targets_superseded.inc();
    let failed = supervisor.stop_many(&[id], grace).await;
    if failed > 0 {
        tracing::warn!(
            target_id = landed.target,
            "the superseded target did not stop cleanly"
        );
    }
}
