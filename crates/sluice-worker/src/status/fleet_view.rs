//! The fleet as the group coordinator describes it, for `/status/fleet.json` and the console:
//! every member of the fleet's consumer group (member id, client id — a worker's owner name,
//! `instance#pid` — and host), the checkpoint partitions its assignment holds (decoded from the
//! consumer protocol's assignment bytes), how many of the configured targets map there, and the
//! targets in partitions no member owns.
//!
//! Read with librdkafka's group list (ListGroups + DescribeGroups) from a client of its own,
//! every few seconds on a blocking thread, never from the group consumer (whose thread serves
//! the rebalances).
//!
//! What it must NOT do: join the group, or show a member's subscription metadata or user data
//! (not for operators; may hold anything).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

/// How often the group is described.
pub const EVERY: Duration = Duration::from_secs(5);
/// How long one description may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The fleet now.
#[derive(Debug, Clone, Serialize, Default)]
pub struct FleetView {
    /// The consumer group.
    pub group: String,
    /// The group's state (`Stable`, `PreparingRebalance`, …).
    pub state: String,
    /// The checkpoint topic's partitions.
    pub partitions: i32,
    /// This worker's name (the client id of its member).
    pub this_worker: String,
    /// The members, by client id.
    pub members: Vec<Member>,
    /// Partitions no member owns.
    pub unowned_partitions: Vec<i32>,
    /// Configured targets in partitions no member owns.
    pub unowned_targets: usize,
    /// Why the last description failed, if it did (the view is the last good one).
    pub error: Option<String>,
}

/// One member of the group.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The coordinator's member id.
    pub member_id: String,
    /// The client id: the worker's owner name (`instance#pid`).
    pub client_id: String,
    /// The worker's instance id (the client id before `#`), when it has one.
    pub instance_id: Option<String>,
    /// The host the coordinator sees.
    pub host: String,
    /// The checkpoint partitions assigned to it.
    pub partitions: Vec<i32>,
    /// Configured targets in those partitions.
    pub targets: usize,
    /// Whether this is the worker answering.
    pub this_worker: bool,
}

/// A consumer-protocol assignment that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("member assignment cannot be decoded: {0}")]
pub struct DecodeError(&'static str);

/// The partitions of `topic` in a consumer-protocol `ConsumerProtocolAssignment` (version 0–3:
/// int16 version, an int32-counted array of (int16-length topic, int32-counted int32
/// partitions), then user data, which is ignored).
pub fn assigned_partitions(bytes: &[u8], topic: &str) -> Result<BTreeSet<i32>, DecodeError> {
    let mut reader = Reader(bytes);
    if bytes.is_empty() {
        return Ok(BTreeSet::new());
    }
    let version = reader.i16()?;
    if version < 0 {
        return Err(DecodeError("negative version"));
    }
    let mut found = BTreeSet::new();
    let topics = reader.count()?;
    for _ in 0..topics {
        let length = usize::try_from(reader.i16()?).map_err(|_| DecodeError("null topic"))?;
        let name = reader.take(length)?;
        let partitions = reader.count()?;
        for _ in 0..partitions {
            let partition = reader.i32()?;
            if name == topic.as_bytes() {
                found.insert(partition);
            }
        }
    }
    Ok(found)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b: [u8; 2] = self
            .take(2)?
            .try_into()
            .map_err(|_| DecodeError("truncated"))?;
        Ok(i16::from_be_bytes(b))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        let b: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| DecodeError("truncated"))?;
        Ok(i32::from_be_bytes(b))
    }

    /// An array count (-1, null, is empty); more entries than bytes left is an error.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.i32()?;
        let n = usize::try_from(n.max(0)).map_err(|_| DecodeError("count"))?;
        if n > self.0.len() {
            return Err(DecodeError("count larger than the data"));
        }
        Ok(n)
    }
}

/// The checkpoint partition of every target the fleet's workers know, shared with the loop
/// that updates it.
pub type TargetPartitions = Arc<std::sync::RwLock<Vec<i32>>>;

/// What describing the fleet needs.
pub struct Describe {
    /// The group.
    pub group: String,
    /// The checkpoint topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: i32,
    /// The partition of each defined target (the shared partitioner), updated as definitions
    /// change at run time.
    pub target_partitions: TargetPartitions,
    /// This worker's client id.
    pub this_worker: String,
}

impl Describe {
    /// One description, through `client` (blocking).
    pub fn once(&self, client: &BaseConsumer) -> Result<FleetView, String> {
        let list = client
            .fetch_group_list(Some(&self.group), TIMEOUT)
            .map_err(|e| e.to_string())?;
        let Some(group) = list.groups().iter().find(|g| g.name() == self.group) else {
            return Err(format!("group {} not found", self.group));
        };
        let target_partitions = self
            .target_partitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut owned = BTreeSet::new();
        let mut members: Vec<Member> = Vec::new();
        for member in group.members() {
            let partitions = match member.assignment() {
                Some(bytes) => {
                    assigned_partitions(bytes, &self.topic).map_err(|e| e.to_string())?
                }
                None => BTreeSet::new(),
            };
            owned.extend(partitions.iter().copied());
            let targets = target_partitions
                .iter()
                .filter(|p| partitions.contains(p))
                .count();
            let client_id = member.client_id().to_owned();
            members.push(Member {
                member_id: member.id().to_owned(),
                instance_id: client_id
                    .rsplit_once('#')
                    .map(|(instance, _)| instance.to_owned()),
                this_worker: client_id == self.this_worker,
                client_id,
                host: member.client_host().trim_start_matches('/').to_owned(),
                partitions: partitions.into_iter().collect(),
                targets,
            });
        }
        members.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        let unowned_partitions: Vec<i32> = (0..self.partitions)
            .filter(|p| !owned.contains(p))
            .collect();
        Ok(FleetView {
            group: self.group.clone(),
            state: group.state().to_owned(),
            partitions: self.partitions,
            this_worker: self.this_worker.clone(),
            members,
            unowned_targets: target_partitions
                .iter()
                .filter(|p| !owned.contains(p))
                .count(),
            unowned_partitions,
            error: None,
        })
    }
}

/// Describes the group every [`EVERY`] into `view` (and its unowned targets into `unowned`)
/// until `stop`.
pub async fn follow(
    kafka: ClientConfig,
    describe: Describe,
    view: Arc<Mutex<Option<FleetView>>>,
    unowned: prometheus::IntGauge,
    stop: tokio_util::sync::CancellationToken,
) {
    let client: BaseConsumer = match kafka.create() {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(%error, "cannot create the client that describes the fleet's group: /status shows no fleet");
            return;
        }
    };
    let shared = Arc::new((client, describe));
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let job = shared.clone();
        let Ok(result) = tokio::task::spawn_blocking(move || job.1.once(&job.0)).await else {
            continue;
        };
        let mut slot = view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(fresh) => {
                unowned.set(i64::try_from(fresh.unowned_targets).unwrap_or(i64::MAX));
                *slot = Some(fresh);
            }
            Err(error) => {
                tracing::debug!(%error, "cannot describe the fleet's group");
                let mut last = slot.take().unwrap_or_else(|| FleetView {
                    group: shared.1.group.clone(),
                    partitions: shared.1.partitions,
                    this_worker: shared.1.this_worker.clone(),
                    ..FleetView::default()
                });
                last.error = Some(error);
                *slot = Some(last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn encode(version: i16, topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        out.extend((topics.len() as i32).to_be_bytes());
        for (name, partitions) in topics {
            out.extend((name.len() as i16).to_be_bytes());
            out.extend(name.as_bytes());
            out.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                out.extend(p.to_be_bytes());
            }
        }
        out.extend((-1i32).to_be_bytes()); // null user data
        out
    }

    #[test]
    fn decodes_the_partitions_of_the_checkpoint_topic_only() {
        let bytes = encode(3, &[("other", &[9]), ("checkpoints", &[4, 0, 2])]);
        assert_eq!(
            assigned_partitions(&bytes, "checkpoints").unwrap(),
            BTreeSet::from([0, 2, 4])
        );
        assert!(assigned_partitions(&[], "checkpoints").unwrap().is_empty());
        for cut in [1, 5, bytes.len() - 9] {
            assert!(
                assigned_partitions(&bytes[..cut], "checkpoints").is_err(),
                "cut at {cut}"
            );
        }
        // A count far beyond the data is refused, not allocated.
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend(i32::MAX.to_be_bytes());
        assert!(assigned_partitions(&huge, "checkpoints").is_err());
    }
}
