//! What reached Kafka: a consumer thread reads the events topic from the beginning for the
//! whole run and counts, per target, the records of each simulator id and the timestamp of
//! each id's first record (the producer's create time: when the worker handed it to Kafka),
//! from which the longest gap per target is measured; every record (key, headers, value) is
//! searched for secrets on the way. `read_all` reads any other topic to its
//! end once. It only reads; it must not produce or commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use super::secrets::{Findings, Secrets};
use crate::kafka::base_config;

/// Records of one target.
#[derive(Debug, Default, Clone)]
pub struct TargetTally {
    /// Records per `sse.id`.
    pub ids: HashMap<u64, u32>,
    /// Records in all.
    pub records: u64,
    /// Records without a numeric `sse.id` (the simulator's ids are all numbers).
    pub odd: u64,
    /// Per `sse.id`, the earliest timestamp (ms since the epoch) of its records.
    pub first_at: HashMap<u64, i64>,
}

/// The longest stretch in which no new event of a target reached Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Its length.
    pub length: Duration,
    /// When it started (the last new event before it), ms since the epoch.
    pub from_ms: i64,
    /// The id whose first record ended it.
    pub ended_by: u64,
}

impl TargetTally {
    /// Ids in `1..=last` with no record.
    pub fn missing(&self, last: u64) -> Vec<u64> {
        (1..=last).filter(|id| !self.ids.contains_key(id)).collect()
    }

    /// The longest time between two consecutive new events (ids in the order their first
    /// record was written), `None` with fewer than two ids with a timestamp. Duplicates do not
    /// end a gap: a replay of old ids is not progress.
    pub fn longest_gap(&self) -> Option<Gap> {
        let mut firsts: Vec<(i64, u64)> = self.first_at.iter().map(|(id, at)| (*at, *id)).collect();
        firsts.sort_unstable();
        firsts
            .windows(2)
            .map(|w| Gap {
                length: Duration::from_millis(u64::try_from(w[1].0 - w[0].0).unwrap_or(0)),
                from_ms: w[0].0,
                ended_by: w[1].1,
            })
            .max_by_key(|g| g.length)
    }

    /// Records per distinct id (0 when none).
    pub fn per_event(&self) -> f64 {
        if self.ids.is_empty() {
            0.0
        } else {
            self.records as f64 / self.ids.len() as f64
        }
    }
}

/// Everything counted so far.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// By target id (the `sluice.target` header).
    pub targets: BTreeMap<String, TargetTally>,
    /// Secrets found in records.
    pub findings: Findings,
}

/// The consumer thread.
pub struct Collector {
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Collector {
    /// Starts reading `topic` (`partitions` partitions) from the beginning.
    pub fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        secrets: Secrets,
    ) -> anyhow::Result<Collector> {
        let consumer = assigned(bootstrap, topic, partitions)?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, flag, place) = (tally.clone(), stop.clone(), format!("kafka {topic}"));
        let thread = std::thread::Builder::new()
            .name("chaos-collector".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    // The broker's errors are transient to librdkafka (it retries); say so.
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => {
                            tracing::warn!(%error, "reading the events topic");
                            continue;
                        }
                    };
                    let mut tally = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    scan_record(&mut tally.findings, &secrets, &place, &message);
                    let target = header(&message, "sluice.target").unwrap_or_default();
                    let entry = tally.targets.entry(target).or_default();
                    entry.records += 1;
                    match header(&message, "sse.id").and_then(|id| id.parse::<u64>().ok()) {
                        Some(id) => {
                            *entry.ids.entry(id).or_default() += 1;
                            if let Some(at) = message.timestamp().to_millis() {
                                let first = entry.first_at.entry(id).or_insert(at);
                                *first = (*first).min(at);
                            }
                        }
                        None => entry.odd += 1,
                    }
                }
                Ok(())
            })
            .context("cannot start the collector thread")?;
        Ok(Collector {
            tally,
            stop,
            thread,
        })
    }

    /// A copy of the counts so far.
    pub fn snapshot(&self) -> Tally {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the thread ended early (its error comes from [`Collector::finish`]).
    pub fn failed(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the thread and returns the final counts.
    pub async fn finish(self) -> anyhow::Result<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the collector thread panicked"))??;
        Ok(self
            .tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }
}

/// Reads every record of `topic` up to its current end, searching each for secrets; returns
/// how many records were read.
pub async fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    secrets: &Secrets,
    findings: &mut Findings,
) -> anyhow::Result<u64> {
    let (bootstrap, topic, secrets) = (bootstrap.to_owned(), topic.to_owned(), secrets.clone());
    let (found, records) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Findings, u64)> {
        let consumer = assigned(&bootstrap, &topic, partitions)?;
        // The end of each partition now; compaction may have removed records below it, so the
        // read stops at these offsets, not at a count.
        let mut ends = HashMap::new();
        for partition in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                .with_context(|| format!("cannot fetch the watermarks of {topic}"))?;
            if high > low {
                ends.insert(partition, high);
            }
        }
        let mut findings = Findings::default();
        let place = format!("kafka {topic}");
        let mut read = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !ends.is_empty() {
            if tokio::time::Instant::now() > deadline {
                bail!("{topic}: {read} records read in 120 s, partitions {ends:?} not at their end");
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    read += 1;
                    scan_record(&mut findings, &secrets, &place, &message);
                    if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
                        ends.remove(&message.partition());
                    }
                }
                Some(Err(e)) => bail!("reading {topic} failed: {e}"),
                // A transactional topic ends in a commit marker no consumer receives: a
                // partition whose position passed its end is read to its end.
                None => {
                    if let Ok(positions) = consumer.position() {
                        for element in positions.elements_for_topic(&topic) {
                            if let rdkafka::Offset::Offset(at) = element.offset()
                                && ends.get(&element.partition()).is_some_and(|end| at >= *end)
                            {
                                ends.remove(&element.partition());
                            }
                        }
                    }
                }
            }
        }
        Ok((findings, read))
    })
    .await??;
    findings.merge(found);
    Ok(records)
}

fn assigned(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = base_config(bootstrap)
        .set("group.id", format!("sluice-bench-chaos-reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("cannot create a reader")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

fn header(message: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn scan_record(
    findings: &mut Findings,
    secrets: &Secrets,
    place: &str,
    message: &BorrowedMessage<'_>,
) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(message.key().unwrap_or_default());
    bytes.push(b'\n');
    if let Some(headers) = message.headers() {
        for h in headers.iter() {
            bytes.extend_from_slice(h.key.as_bytes());
            bytes.push(b'=');
            bytes.extend_from_slice(h.value.unwrap_or_default());
            bytes.push(b'\n');
        }
    }
    bytes.extend_from_slice(message.payload().unwrap_or_default());
    findings.scan(secrets, place, &bytes);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn missing_ids_and_records_per_event() {
        let mut t = TargetTally::default();
        for (id, n) in [(1, 1), (2, 3), (4, 2)] {
            t.ids.insert(id, n);
            t.records += u64::from(n);
        }
        assert_eq!(t.missing(5), vec![3, 5]);
        assert!((t.per_event() - 2.0).abs() < 1e-9);
        assert_eq!(TargetTally::default().per_event(), 0.0);
    }

    #[test]
    fn the_longest_gap_is_between_new_events_and_ignores_replays() {
        let mut t = TargetTally::default();
        assert_eq!(t.longest_gap(), None);
        // ids 1..=3 at 0, 20, 40 ms; 4 at 3040 (a handover); 5 at 3060. A replay of 2 at 3000
        // is a later record of an old id: its first time stays 20.
        for (id, at) in [(1, 0), (2, 20), (3, 40), (4, 3_040), (2, 3_000), (5, 3_060)] {
            let first = t.first_at.entry(id).or_insert(at);
            *first = (*first).min(at);
        }
        let gap = t.longest_gap().unwrap();
        assert_eq!(gap.length, Duration::from_millis(3_000));
        assert_eq!((gap.from_ms, gap.ended_by), (40, 4));
    }
}
