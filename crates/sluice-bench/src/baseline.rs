//! `sluice-bench baseline`: the two straightforward implementations Sluice is compared with,
//! written the way a user writes them: `reqwest_eventsource::EventSource` streams and one
//! rdkafka `FutureProducer` with the same settings and the same six headers as Sluice.
//!
//! - `await`: every send is awaited before the next event is read.
//! - `inflight`: up to 10,000 delivery futures per stream in flight (`FuturesUnordered`).
//!
//! It runs as a child process of the harness (so its CPU and memory can be read alone) until it
//! is killed; with `--events N` it stops reading after N events in total and waits for their
//! acknowledgements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use reqwest_eventsource::{Event, EventSource};

use crate::{Mode, producer_config};

/// The most delivery futures one stream keeps in flight in `inflight` mode.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// What one baseline process does.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Await each send, or keep many in flight.
    pub mode: Mode,
    /// The SSE endpoints; stream `i` reads `urls[i % urls.len()]`.
    pub urls: Vec<String>,
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic every event goes to.
    pub topic: String,
    /// Stop reading after this many events in total.
    pub events: Option<u64>,
    /// Concurrent streams in this process.
    pub connections: usize,
    /// Extra producer properties, `key=value`.
    pub producer_properties: Vec<String>,
}

/// The target id of stream `index` of `connections` (the record key and `sluice.target`).
pub fn target_id(index: usize, connections: usize) -> String {
    if connections == 1 {
        "bench".to_owned()
    } else {
        format!("t{index:05}")
    }
}

/// Runs the baseline until killed.
pub async fn run(baseline: Baseline) -> anyhow::Result<()> {
    crate::raise_nofile_limit();
    let producer: FutureProducer =
        producer_config(&baseline.brokers, &baseline.producer_properties)?
            .create()
            .context("cannot create the kafka producer")?;
    let producer = Arc::new(producer);
    // One HTTP client for all streams, as a user opening many streams would do.
    let client = reqwest012::Client::builder()
        .build()
        .context("cannot build the http client")?;
    let budget = Arc::new(AtomicU64::new(baseline.events.unwrap_or(u64::MAX)));
    let baseline = Arc::new(baseline);
    let mut streams = tokio::task::JoinSet::new();
    if baseline.urls.is_empty() {
        bail!("no --url");
    }
    for index in 0..baseline.connections {
        let request = client.get(&baseline.urls[index % baseline.urls.len()]);
        let (producer, budget, baseline) = (producer.clone(), budget.clone(), baseline.clone());
        streams.spawn(async move {
            let target = target_id(index, baseline.connections);
            let source = EventSource::new(request).context("cannot build the event source")?;
            stream(source, &producer, &baseline, &target, &budget).await
        });
    }
    while let Some(done) = streams.join_next().await {
        done.context("stream task panicked")??;
    }
    tracing::info!("every stream is done; waiting to be stopped");
    std::future::pending::<()>().await;
    Ok(())
}

/// Takes one event from the shared budget; false when it is spent.
fn take(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

async fn stream(
    mut source: EventSource,
    producer: &FutureProducer,
    baseline: &Baseline,
    target: &str,
    budget: &AtomicU64,
) -> anyhow::Result<()> {
    let mut connection = 0u64;
    let mut seq = 0u64;
    let mut in_flight = FuturesUnordered::new();
    loop {
        let next = tokio::select! {
            biased;
            Some(delivered) = in_flight.next(), if !in_flight.is_empty() => {
                check(delivered)?;
                continue;
            }
            next = source.next() => next,
        };
        let message = match next {
            None => break,
            Some(Ok(Event::Open)) => {
                connection += 1;
                continue;
            }
            Some(Ok(Event::Message(message))) => message,
            Some(Err(reqwest_eventsource::Error::StreamEnded)) => continue,
            Some(Err(
                error @ (reqwest_eventsource::Error::InvalidStatusCode(..)
                | reqwest_eventsource::Error::InvalidContentType(..)),
            )) => {
                source.close();
                bail!("{target}: {error}");
            }
            Some(Err(error)) => {
                // reqwest-eventsource reconnects by itself on the next poll.
                tracing::debug!(target, %error, "stream error");
                continue;
            }
        };
        if !take(budget) {
            source.close();
            break;
        }
        seq += 1;
        let received_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
            .to_string();
        let (connection_text, seq_text) = (connection.to_string(), seq.to_string());
        let headers = OwnedHeaders::new_with_capacity(6)
            .insert(Header {
                key: "sse.id",
                value: Some(&message.id),
            })
            .insert(Header {
                key: "sse.event",
                value: Some(&message.event),
            })
            .insert(Header {
                key: "sluice.target",
                value: Some(target),
            })
            .insert(Header {
                key: "sluice.received_at",
                value: Some(&received_at),
            })
            .insert(Header {
                key: "sluice.connection",
                value: Some(&connection_text),
            })
            .insert(Header {
                key: "sluice.seq",
                value: Some(&seq_text),
            });
        let record = FutureRecord::to(&baseline.topic)
            .key(target)
            .payload(&message.data)
            .headers(headers);
        match baseline.mode {
            Mode::Await => {
                producer
                    .send(record, Timeout::Never)
                    .await
                    .map_err(|(error, _)| error)
                    .with_context(|| format!("{target}: delivery failed"))?;
            }
            Mode::Inflight => {
                while in_flight.len() >= MAX_IN_FLIGHT {
                    if let Some(delivered) = in_flight.next().await {
                        check(delivered)?;
                    }
                }
                let mut record = record;
                loop {
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            in_flight.push(delivery);
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            match in_flight.next().await {
                                Some(delivered) => check(delivered)?,
                                None => {
                                    tokio::time::sleep(std::time::Duration::from_millis(1)).await
                                }
                            }
                        }
                        Err((error, _)) => {
                            return Err(error).context(format!("{target}: cannot enqueue"));
                        }
                    }
                }
            }
        }
    }
    while let Some(delivered) = in_flight.next().await {
        check(delivered)?;
    }
    Ok(())
}

fn check(
    delivered: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> anyhow::Result<()> {
    delivered
        .context("producer dropped a delivery")?
        .map_err(|(error, _)| error)
        .context("delivery failed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_ids_are_stable_and_distinct() {
        assert_eq!(target_id(0, 1), "bench");
        assert_eq!(target_id(7, 10_000), "t00007");
        assert_ne!(target_id(1, 2), target_id(0, 2));
    }

    #[test]
    fn the_budget_stops_at_zero() {
        let budget = AtomicU64::new(2);
        assert!(take(&budget));
        assert!(take(&budget));
        assert!(!take(&budget));
    }
}
