//! `sluice dead-letters list|show|replay`: inspect the aggregator's dead-letter topic and send a
//! record back through the normal path (to the events topic and partition it came from, with
//! its original headers), unchanged or with a corrected payload.
//!
//! What it must NOT do: change or delete a dead letter (the topic is append-only; a replayed
//! record stays there too), or send a record anywhere but the topic it came from.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use sluice_publish::KafkaSettings;

/// How long reading the topic, or one delivery, may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// The headers the aggregator adds to a dead letter (not sent back on replay).
const ERROR_HEADER: &str = "sluice.error";
const SOURCE_HEADER: &str = "sluice.source";
/// The header a replayed record carries: where in the dead-letter topic it came from.
const REPLAYED_HEADER: &str = "sluice.replayed-from";

/// Arguments of `sluice dead-letters`.
#[derive(Debug, Args)]
#[command(after_help = "\
Reads topics.dead_letter of the aggregator configuration (the deltas the aggregator could not
merge: malformed JSON, a patch that does not apply, ...). Each dead letter holds the original
payload and headers, plus sluice.error (why) and sluice.source (topic/partition/offset it came
from). `list` prints one JSON line per dead letter, `show P/O` one in full, `replay P/O` sends it
back to its source topic and partition (original headers, plus sluice.replayed-from), with the
payload unchanged or read from --payload-file.")]
pub struct DeadLettersArgs {
    /// The aggregator configuration file (Kafka settings and topics.dead_letter).
    #[arg(long, default_value = "config/aggregator.yaml", env = "SLUICE_CONFIG")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub action: Action,
}

/// What to do with the dead letters.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// One JSON line per dead letter: where it is, its target, its source, the error, its size.
    List,
    /// One dead letter in full: headers and payload, as JSON.
    Show {
        /// `partition/offset` in the dead-letter topic, as `list` prints it.
        at: Position,
    },
    /// Sends a dead letter back to the topic and partition it came from.
    Replay {
        /// `partition/offset` in the dead-letter topic, as `list` prints it.
        at: Position,
        /// A corrected payload (the file's bytes); without it the payload is sent unchanged.
        #[arg(long)]
        payload_file: Option<PathBuf>,
    },
}

/// A record's place in the dead-letter topic: `partition/offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    partition: i32,
    offset: i64,
}

impl FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Position, String> {
        let parsed = text.split_once('/').and_then(|(p, o)| {
            Some(Position {
                partition: p.parse().ok().filter(|p: &i32| *p >= 0)?,
                offset: o.parse().ok().filter(|o: &i64| *o >= 0)?,
            })
        });
        parsed.ok_or_else(|| format!("{text:?} is not partition/offset (for example 0/42)"))
    }
}

/// Why a dead-letter command failed.
#[derive(Debug, thiserror::Error)]
enum DeadLetterError {
    #[error("the configuration has no topics.dead_letter: dead letters are only counted")]
    NoTopic,
    #[error("cannot build the kafka client: {0}")]
    Settings(#[from] sluice_publish::SecretPropertyError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("no dead letter at {partition}/{offset} of {topic}")]
    NotFound {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error("the dead letter has no valid {SOURCE_HEADER} header (topic/partition/offset): {0:?}")]
    NoSource(String),
    #[error("cannot read the payload file {path}: {source}")]
    PayloadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {topic} did not reach its end within {}s", KAFKA_TIMEOUT.as_secs())]
    Timeout { topic: String },
    #[error("the reading task failed: {0}")]
    Task(String),
}

/// Runs one dead-letter action.
pub async fn run(args: DeadLettersArgs) -> ExitCode {
    let config = match sluice_config::load_aggregator(&args.config) {
        Ok(config) => config,
        Err(errors) => return super::refuse_config("dead-letters", &errors),
    };
    let settings = KafkaSettings::from(&config.kafka);
    let Some(topic) = config.topics.dead_letter.clone() else {
        return fail(&DeadLetterError::NoTopic);
    };
    let result = match args.action {
        Action::List => list(&settings, &topic).await,
        Action::Show { at } => show(&settings, &topic, at).await,
        Action::Replay { at, payload_file } => replay(&settings, &topic, at, payload_file).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &DeadLetterError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "sluice dead-letters: {error}");
    ExitCode::FAILURE
}

/// A dead letter as read back.
struct DeadLetter {
    at: Position,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
            .map(|value| String::from_utf8_lossy(value).into_owned())
    }

    fn summary(&self) -> Value {
        json!({
            "at": format!("{}/{}", self.at.partition, self.at.offset),
            "target": self.key.as_deref().map(String::from_utf8_lossy),
            "source": self.header(SOURCE_HEADER),
            "error": self.header(ERROR_HEADER),
            "bytes": self.payload.len(),
        })
    }

    fn full(&self) -> Value {
        let headers: BTreeMap<&str, Option<String>> = self
            .headers
            .iter()
            .map(|(key, value)| {
                (
                    key.as_str(),
                    value
                        .as_deref()
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        let mut value = self.summary();
        value["headers"] = json!(headers);
        value["payload"] = json!(String::from_utf8_lossy(&self.payload));
        value
    }
}

fn reader(settings: &KafkaSettings<'_>) -> Result<BaseConsumer, DeadLetterError> {
    let mut config: ClientConfig = settings.full(&[
        ("group.id", "sluice-dead-letters"),
        ("enable.auto.commit", "false"),
        ("enable.partition.eof", "false"),
    ])?;
    config.set("client.id", "sluice-dead-letters");
    Ok(config.create()?)
}

/// Every dead letter, in partition and offset order (read up to the end the topic had when
/// reading started).
async fn read_all(
    settings: &KafkaSettings<'_>,
    topic: &str,
    only: Option<Position>,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let consumer = reader(settings)?;
    let topic = topic.to_owned();
    // librdkafka's calls block; keep them off the runtime's threads.
    let read = tokio::task::spawn_blocking(move || -> Result<Vec<DeadLetter>, DeadLetterError> {
        let metadata = consumer.fetch_metadata(Some(&topic), KAFKA_TIMEOUT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .filter(|p| only.is_none_or(|at| at.partition == *p))
            .collect();
        let mut ends = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, partition, KAFKA_TIMEOUT)?;
            let start = only.map_or(low, |at| at.offset.max(low));
            if start < high {
                ends.insert(partition, high);
                assignment.add_partition_offset(&topic, partition, Offset::Offset(start))?;
            }
        }
        let mut letters = Vec::new();
        if ends.is_empty() {
            return Ok(letters);
        }
        consumer.assign(&assignment)?;
        let deadline = tokio::time::Instant::now() + KAFKA_TIMEOUT;
        while !ends.is_empty() {
            if tokio::time::Instant::now() > deadline {
                return Err(DeadLetterError::Timeout { topic });
            }
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            let at = Position {
                partition: message.partition(),
                offset: message.offset(),
            };
            if ends
                .get(&at.partition)
                .is_some_and(|end| at.offset + 1 >= *end)
            {
                ends.remove(&at.partition);
            }
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            letters.push(DeadLetter {
                at,
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers,
            });
            if only.is_some_and(|o| o == at) {
                break;
            }
        }
        letters.sort_by_key(|l| (l.at.partition, l.at.offset));
        Ok(letters)
    });
    read.await
        .map_err(|error| DeadLetterError::Task(error.to_string()))?
}

async fn find(
    settings: &KafkaSettings<'_>,
    topic: &str,
    at: Position,
) -> Result<DeadLetter, DeadLetterError> {
    read_all(settings, topic, Some(at))
        .await?
        .into_iter()
        .find(|letter| letter.at == at)
        .ok_or(DeadLetterError::NotFound {
            topic: topic.to_owned(),
            partition: at.partition,
            offset: at.offset,
        })
}

async fn list(settings: &KafkaSettings<'_>, topic: &str) -> Result<(), DeadLetterError> {
    let mut stdout = std::io::stdout().lock();
    for letter in read_all(settings, topic, None).await? {
        let _ = writeln!(stdout, "{}", letter.summary());
    }
    Ok(())
}

async fn show(
    settings: &KafkaSettings<'_>,
    topic: &str,
    at: Position,
) -> Result<(), DeadLetterError> {
    let letter = find(settings, topic, at).await?;
    let _ = writeln!(std::io::stdout(), "{}", letter.full());
    Ok(())
}

async fn replay(
    settings: &KafkaSettings<'_>,
    topic: &str,
    at: Position,
    payload_file: Option<PathBuf>,
) -> Result<(), DeadLetterError> {
    let letter = find(settings, topic, at).await?;
    let source = letter.header(SOURCE_HEADER).unwrap_or_default();
    let (source_topic, source_partition) =
        parse_source(&source).ok_or_else(|| DeadLetterError::NoSource(source.clone()))?;
    let payload = match payload_file {
        Some(path) => {
            std::fs::read(&path).map_err(|source| DeadLetterError::PayloadFile { path, source })?
        }
        None => letter.payload.clone(),
    };
    let replayed_from = format!("{topic}/{}/{}", at.partition, at.offset);
    let mut headers = OwnedHeaders::new_with_capacity(letter.headers.len() + 1);
    for (key, value) in &letter.headers {
        if key != ERROR_HEADER && key != SOURCE_HEADER {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
    }
    headers = headers.insert(Header {
        key: REPLAYED_HEADER,
        value: Some(&replayed_from),
    });
    let producer: FutureProducer = settings
        .full(&[("enable.idempotence", "true"), ("acks", "all")])?
        .create()?;
    let mut record = FutureRecord::to(&source_topic)
        .partition(source_partition)
        .payload(&payload)
        .headers(headers);
    if let Some(key) = &letter.key {
        record = record.key(key);
    }
    let (partition, offset) = producer
        .send(record, KAFKA_TIMEOUT)
        .await
        .map_err(|(error, _)| error)
        .map(|delivery| (delivery.partition, delivery.offset))?;
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        json!({
            "replayed": replayed_from,
            "to": format!("{source_topic}/{partition}/{offset}"),
            "bytes": payload.len(),
        })
    );
    Ok(())
}

/// `topic/partition/offset` → (topic, partition). Topic names cannot hold `/`.
fn parse_source(source: &str) -> Option<(String, i32)> {
    let mut parts = source.rsplitn(3, '/');
    let _offset: i64 = parts.next()?.parse().ok()?;
    let partition: i32 = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    (!topic.is_empty() && partition >= 0).then(|| (topic.to_owned(), partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_sources_parse_or_are_refused() {
        assert_eq!(
            "3/42".parse::<Position>(),
            Ok(Position {
                partition: 3,
                offset: 42
            })
        );
        for bad in ["", "3", "3/", "/4", "-1/4", "3/-4", "a/b"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
        assert_eq!(
            parse_source("sluice.events/2/99"),
            Some(("sluice.events".to_owned(), 2))
        );
        assert_eq!(parse_source("events/x/99"), None);
        assert_eq!(parse_source("/2/99"), None);
        assert_eq!(parse_source(""), None);
    }
}
