//! What a start reads and checks before (or beside) running targets: the checkpoints, read
//! until Kafka answers for them (only a missing topic means "start fresh"), and the topics'
//! configs (a checkpoint topic must be compacted, an events topic must take every event its
//! targets accept).
//!
//! What it must NOT do: start or stop targets; it only reads and answers.

#[allow(clippy::wildcard_imports)]
use super::*;
use sluice_publish::CheckpointReadError;

/// Reads the checkpoint topic, creating it (compacted) when missing and retrying while Kafka is
/// unreachable or answers for the topic with an error (only "unknown topic" means no checkpoint
/// was ever written). `/readyz` says why while it retries. `Ok(None)` when shutdown came first.
pub(crate) async fn load_checkpoints(
    kafka: &ClientConfig,
    topic: &str,
    only: Option<&std::collections::BTreeSet<i32>>,
    ops: &http::Ops,
    shutdown: &CancellationToken,
) -> Result<Option<sluice_publish::Checkpoints>, WorkerError> {
    let mut delay = Duration::from_millis(200);
    let only: Option<Vec<i32>> = only.map(|p| p.iter().copied().collect());
    loop {
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            read = sluice_publish::read_checkpoints_of(kafka, topic, only.clone(), CHECKPOINT_READ_TIMEOUT) => read,
        };
        match read {
            Ok(checkpoints) => return Ok(Some(checkpoints)),
            Err(CheckpointReadError::TopicMissing { .. }) => {
                // No topic, so no checkpoint was ever written: every target starts fresh.
                tracing::warn!(
                    topic,
                    "checkpoint topic missing: starting every target without a checkpoint"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = sluice_publish::topics::create_topic(kafka, topic, true) => {}
                }
                return Ok(Some(sluice_publish::Checkpoints::default()));
            }
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, kind = error.kind(), retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(0), "checkpoint topic not readable yet: no target starts without its checkpoint");
                ops.set_not_ready_reason(format!("cannot read checkpoints yet: {error}"));
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(error) => return Err(WorkerError::Checkpoints(error)),
        }
    }
}

/// Refuses a checkpoint topic that is not compacted: with `cleanup.policy=delete` retention would
/// delete the checkpoints of quiet targets, which would then start without them. A broker that
/// cannot describe the topic (librdkafka's mock cluster) is not checked, with a warning.
pub(crate) async fn check_compacted(kafka: &ClientConfig, topic: &str) -> Result<(), WorkerError> {
    match sluice_publish::topics::cleanup_policy(kafka, topic).await {
        Some(policy) if policy.split(',').any(|p| p.trim() == "compact") => Ok(()),
        Some(policy) => Err(WorkerError::CheckpointsNotCompacted {
            topic: topic.to_owned(),
            policy,
        }),
        None => {
            tracing::warn!(
                topic,
                "cannot read the checkpoint topic's cleanup.policy; make sure it is compact"
            );
            Ok(())
        }
    }
}

/// Per events topic, the largest record its enabled targets' events can make and the target
/// needing it ([`sluice_publish::max_record_bytes`] of its parser limits).
pub(crate) fn record_needs(
    targets: &[Arc<sluice_config::TargetConfig>],
) -> BTreeMap<String, (usize, String)> {
    let mut needs: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for target in targets.iter().filter(|t| t.enabled) {
        let needed = max_record_of(std::iter::once(target.limits));
        let entry = needs
            .entry(target.topic.clone())
            .or_insert_with(|| (0, target.id.to_string()));
        if needed > entry.0 {
            *entry = (needed, target.id.to_string());
        }
    }
    needs
}

/// Refuses an events topic whose `max.message.bytes` is below the largest record one of its
/// targets' events can make (`needs`, from [`record_needs`]). A topic the broker cannot describe
/// (librdkafka's mock cluster, a missing topic) is not checked, with a warning.
pub(crate) async fn check_events_topics(
    kafka: &ClientConfig,
    needs: &BTreeMap<String, (usize, String)>,
) -> Result<(), WorkerError> {
    for (topic, (needed, target)) in needs {
        match sluice_publish::topics::max_message_bytes(kafka, topic).await {
            Some(topic_max) if usize::try_from(topic_max).is_ok_and(|max| max >= *needed) => {
                tracing::debug!(
                    topic,
                    topic_max,
                    needed,
                    "the events topic takes every accepted event"
                );
            }
            Some(topic_max) => {
                return Err(WorkerError::EventsTopicTooSmall {
                    topic: topic.clone(),
                    topic_max,
                    needed: *needed,
                    target: target.clone(),
                });
            }
            None => tracing::warn!(
                topic,
                needed,
                "cannot read the events topic's max.message.bytes; make sure it takes records of this size"
            ),
        }
    }
    Ok(())
}
