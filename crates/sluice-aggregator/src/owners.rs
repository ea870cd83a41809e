//! Which aggregator of the group owns which partition, so any of them can send a client to a
//! target's owner. Each aggregator writes a record to the compacted members topic (key: its
//! member key; value: its base URL and the partitions it owns, each with the time it got it)
//! whenever its assignment changes and every [`HEARTBEAT`], and a tombstone when it stops; a
//! follower thread reads the topic from the beginning and keeps the latest record of every
//! member.
//!
//! A partition's owner, as another aggregator sees it, is the member whose fresh record (written
//! within [`STALE`]) claims it with the latest claim time; none during a rebalance (the old
//! owner released it, the new one has not written yet) or after an owner died and before the
//! group moved its partitions. This is advice for routing only: it must not decide what this
//! aggregator consumes or serves (the group does), so a stale view can send a client to the
//! wrong aggregator, which answers 307 or 503 itself, never a wrong state.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::shared::{TopicPartition, lock};
use crate::snapshot::Deliveries;

/// How often an aggregator rewrites its record when nothing changed.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A record older than this no longer counts (its writer stopped without a tombstone).
pub const STALE: Duration = Duration::from_secs(30);
/// The record format written; a reader skips records of a format it does not know.
const FORMAT: u32 = 1;
/// How long one poll of the follower waits.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// One partition a member owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The events topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// When the member got it (Unix milliseconds).
    pub since_ms: u64,
}

/// A member's record in the members topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The record format ([`FORMAT`]).
    pub format: u32,
    /// The base URL clients are sent to.
    pub url: String,
    /// The partitions it owns.
    pub claims: Vec<Claim>,
    /// When it was written (Unix milliseconds).
    pub at_ms: u64,
}

/// Who owns a partition, as this aggregator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This aggregator.
    Me,
    /// Another one, at this base URL.
    Other(String),
    /// No one that has said so (a rebalance, or an owner that died).
    Nobody,
}

/// This aggregator's identity in the members topic.
#[derive(Debug, Clone)]
struct Me {
    key: String,
    url: String,
}

/// The members view and this aggregator's own claims (see the module doc).
#[derive(Default)]
pub struct Owners {
    me: Mutex<Option<Me>>,
    /// This aggregator's partitions, with the time it got each.
    mine: Mutex<HashMap<TopicPartition, u64>>,
    /// The latest record of every other member, by key.
    others: Mutex<HashMap<String, MemberRecord>>,
    /// When this aggregator's record was last queued (`None`: never, or it changed since).
    written_at: Mutex<Option<SystemTime>>,
}

/// Now in Unix milliseconds.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Owners {
    /// Sets this aggregator's member key and base URL (once it listens).
    pub fn set_me(&self, key: String, url: String) {
        *lock(&self.me) = Some(Me { key, url });
        *lock(&self.written_at) = None;
    }

    /// This aggregator's base URL, once set.
    pub fn my_url(&self) -> Option<String> {
        lock(&self.me).as_ref().map(|me| me.url.clone())
    }

    /// Notes partitions this aggregator was assigned.
    pub fn claim(&self, parts: &BTreeSet<TopicPartition>) {
        let now = now_ms();
        let mut mine = lock(&self.mine);
        for part in parts {
            mine.entry(part.clone()).or_insert(now);
        }
        drop(mine);
        *lock(&self.written_at) = None;
    }

    /// Notes partitions this aggregator gave up.
    pub fn release(&self, parts: &BTreeSet<TopicPartition>) {
        let mut mine = lock(&self.mine);
        for part in parts {
            mine.remove(part);
        }
        drop(mine);
        *lock(&self.written_at) = None;
    }

    /// This aggregator's record (key, value) when it is due: its claims changed, or
    /// [`HEARTBEAT`] passed since it was last queued. Marks it queued.
    pub fn due_record(&self) -> Option<(String, Vec<u8>)> {
        // Called every round of the consumer loop: the common answer (not due) costs one lock
        // and a clock read, nothing is cloned before it is known to be due.
        let now = SystemTime::now();
        let mut written_at = lock(&self.written_at);
        if written_at.is_some_and(|at| now.duration_since(at).unwrap_or_default() < HEARTBEAT) {
            return None;
        }
        let me = lock(&self.me).clone()?;
        *written_at = Some(now);
        drop(written_at);
        let mut claims: Vec<Claim> = lock(&self.mine)
            .iter()
            .map(|((topic, partition), since)| Claim {
                topic: topic.clone(),
                partition: *partition,
                since_ms: *since,
            })
            .collect();
        claims.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let record = MemberRecord {
            format: FORMAT,
            url: me.url,
            claims,
            at_ms: now_ms(),
        };
        Some((me.key, serde_json::to_vec(&record).unwrap_or_default()))
    }

    /// This aggregator's member key, once set (for its tombstone).
    pub fn my_key(&self) -> Option<String> {
        lock(&self.me).as_ref().map(|me| me.key.clone())
    }

    /// Takes in one record of the members topic (`None`: a tombstone). This aggregator's own
    /// key and records of an unknown format are skipped.
    pub fn observe(&self, key: &str, value: Option<&[u8]>) {
        if lock(&self.me).as_ref().is_some_and(|me| me.key == key) {
            return;
        }
        let mut others = lock(&self.others);
        let Some(value) = value else {
            others.remove(key);
            return;
        };
        match serde_json::from_slice::<MemberRecord>(value) {
            Ok(record) if record.format == FORMAT => {
                others.insert(key.to_owned(), record);
            }
            Ok(record) => {
                tracing::debug!(
                    key,
                    format = record.format,
                    "member record of an unknown format: skipped"
                );
            }
            Err(error) => {
                tracing::debug!(key, %error, "member record is not JSON of the known format: skipped");
            }
        }
    }

    /// Who owns `partition` of `topic`.
    pub fn owner_of(&self, topic: &str, partition: i32) -> Owner {
        let key = (topic.to_owned(), partition);
        if lock(&self.mine).contains_key(&key) {
            return Owner::Me;
        }
        let fresh_after = now_ms().saturating_sub(u64::try_from(STALE.as_millis()).unwrap_or(0));
        lock(&self.others)
            .values()
            .filter(|record| record.at_ms >= fresh_after)
            .filter_map(|record| {
                record
                    .claims
                    .iter()
                    .find(|c| c.topic == topic && c.partition == partition)
                    .map(|claim| (claim.since_ms, record.url.clone()))
            })
            .max()
            .map_or(Owner::Nobody, |(_, url)| Owner::Other(url))
    }
}

/// The delivery id of member records (their reports are only logged).
pub const MEMBER_DELIVERY: usize = usize::MAX;

/// Queues this aggregator's record in `topic` when it is due (see [`Owners::due_record`]).
pub fn publish(owners: &Owners, producer: &BaseProducer<Deliveries>, topic: &str) {
    let Some((key, value)) = owners.due_record() else {
        return;
    };
    let record = BaseRecord::with_opaque_to(topic, MEMBER_DELIVERY)
        .key(key.as_str())
        .payload(value.as_slice());
    if let Err((error, _)) = producer.send(record) {
        tracing::warn!(%error, topic, "cannot queue this aggregator's member record");
    }
}

/// Queues the tombstone of this aggregator's record (at a graceful stop, after leaving the
/// group): the others stop sending clients here at once.
pub fn publish_tombstone(owners: &Owners, producer: &BaseProducer<Deliveries>, topic: &str) {
    let Some(key) = owners.my_key() else {
        return;
    };
    let record =
        BaseRecord::<str, [u8], usize>::with_opaque_to(topic, MEMBER_DELIVERY).key(key.as_str());
    if let Err((error, _)) = producer.send(record) {
        tracing::warn!(%error, topic, "cannot queue this aggregator's member tombstone");
    }
}

/// Follows the members topic (partition 0, from the beginning) into `owners` until `stop`.
/// Runs on a thread of its own; a topic that cannot be read is retried, logged once.
pub fn follow(owners: &Owners, reader: &ClientConfig, topic: &str, stop: &CancellationToken) {
    let mut reader = reader.clone();
    // Assigned, never subscribed: the group id is only librdkafka's requirement.
    let consumer: BaseConsumer = match reader
        .set("group.id", "sluice-members-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
    {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::warn!(%error, topic, "cannot create the members reader: clients are not routed to other aggregators");
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    if let Err(error) = tpl.add_partition_offset(topic, 0, Offset::Beginning) {
        tracing::warn!(%error, topic, "cannot follow the members topic");
        return;
    }
    if let Err(error) = consumer.assign(&tpl) {
        tracing::warn!(%error, topic, "cannot follow the members topic");
        return;
    }
    let mut warned = false;
    while !stop.is_cancelled() {
        match consumer.poll(FOLLOW_POLL) {
            None => {}
            Some(Ok(message)) => {
                let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    continue;
                };
                owners.observe(key, message.payload());
            }
            Some(Err(error)) if !warned => {
                tracing::warn!(%error, topic, "reading the members topic failed; retrying");
                warned = true;
            }
            Some(Err(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(url: &str, claims: &[(&str, i32, u64)], at_ms: u64) -> Vec<u8> {
        serde_json::to_vec(&MemberRecord {
            format: FORMAT,
            url: url.to_owned(),
            claims: claims
                .iter()
                .map(|(topic, partition, since_ms)| Claim {
                    topic: (*topic).to_owned(),
                    partition: *partition,
                    since_ms: *since_ms,
                })
                .collect(),
            at_ms,
        })
        .unwrap()
    }

    #[test]
    fn the_latest_fresh_claim_owns_a_partition() {
        let owners = Owners::default();
        owners.set_me("me".to_owned(), "http://me:1".to_owned());
        let now = now_ms();
        owners.observe(
            "a",
            Some(&record("http://a:1", &[("e", 0, now - 5_000)], now)),
        );
        owners.observe(
            "b",
            Some(&record(
                "http://b:1",
                &[("e", 0, now - 1_000), ("e", 1, now)],
                now,
            )),
        );
        assert_eq!(
            owners.owner_of("e", 0),
            Owner::Other("http://b:1".to_owned())
        );
        assert_eq!(
            owners.owner_of("e", 1),
            Owner::Other("http://b:1".to_owned())
        );
        assert_eq!(owners.owner_of("e", 2), Owner::Nobody);
        // b stops (a tombstone): a's claim is the only one.
        owners.observe("b", None);
        assert_eq!(
            owners.owner_of("e", 0),
            Owner::Other("http://a:1".to_owned())
        );
        assert_eq!(owners.owner_of("e", 1), Owner::Nobody);
        // A record older than STALE no longer counts.
        let old = now - u64::try_from(STALE.as_millis()).unwrap() - 1_000;
        owners.observe("a", Some(&record("http://a:1", &[("e", 0, old)], old)));
        assert_eq!(owners.owner_of("e", 0), Owner::Nobody);
        // This aggregator's own claims win, and its own echo is skipped.
        owners.claim(&BTreeSet::from([("e".to_owned(), 2)]));
        owners.observe("me", Some(&record("http://elsewhere:1", &[], now)));
        assert_eq!(owners.owner_of("e", 2), Owner::Me);
    }

    #[test]
    fn records_of_another_format_or_not_json_are_skipped() {
        let owners = Owners::default();
        let now = now_ms();
        let mut future: serde_json::Value =
            serde_json::from_slice(&record("http://a:1", &[("e", 0, now)], now)).unwrap();
        future["format"] = 2.into();
        owners.observe("a", Some(future.to_string().as_bytes()));
        owners.observe("b", Some(b"not json"));
        assert_eq!(owners.owner_of("e", 0), Owner::Nobody);
    }

    #[test]
    fn the_record_is_due_when_claims_change_or_the_heartbeat_passed() {
        let owners = Owners::default();
        assert!(
            owners.due_record().is_none(),
            "no record before the URL is known"
        );
        owners.set_me("me".to_owned(), "http://me:1".to_owned());
        let (key, value) = owners.due_record().unwrap();
        assert_eq!(key, "me");
        let first: MemberRecord = serde_json::from_slice(&value).unwrap();
        assert!(first.claims.is_empty());
        assert!(
            owners.due_record().is_none(),
            "not again before the heartbeat"
        );
        owners.claim(&BTreeSet::from([("e".to_owned(), 3)]));
        let (_, value) = owners.due_record().unwrap();
        let second: MemberRecord = serde_json::from_slice(&value).unwrap();
        assert_eq!(second.claims.len(), 1);
        assert_eq!(
            (second.claims[0].topic.as_str(), second.claims[0].partition),
            ("e", 3)
        );
        owners.release(&BTreeSet::from([("e".to_owned(), 3)]));
        let (_, value) = owners.due_record().unwrap();
        let third: MemberRecord = serde_json::from_slice(&value).unwrap();
        assert!(third.claims.is_empty());
    }
}
