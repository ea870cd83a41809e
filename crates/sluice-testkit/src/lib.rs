//! Test support for Sluice: a Kafka to test against, real proxy servers on loopback, and the
//! policy for tests whose external program is missing.
//!
//! - [`kafka::TestKafka`] is the broker named by `SLUICE_TEST_KAFKA` when set (the shared Apache
//!   Kafka `scripts/test` starts), else librdkafka's in-process mock cluster, so `cargo test`
//!   needs nothing installed. [`TestKafka::private`] is a broker one test owns and may pause, kill
//!   and restart ([`broker::KafkaBroker`], a private Apache Kafka under `scripts/test`).
//! - [`proxies::Tinyproxy`] (HTTP CONNECT) and [`proxies::Microsocks`] (SOCKS5) run the real
//!   Debian programs on free loopback ports and kill them on drop.
//! - [`compressed::CompressedSse`] is an SSE endpoint on loopback that answers one request with a
//!   gzip, br or zstd body, each write compressed and flushed on its own, as the test releases it.
//! - [`s3::S3Server`] is moto's S3-compatible server (from PyPI) on a loopback port.
//! - [`read_head`] reads an HTTP request head off a raw socket, for servers of hand-written bytes.
//! - [`free_port`] is a loopback port free right now; [`prometheus`] parses the `/metrics` text
//!   tests scrape ([`prometheus::parse_samples`], [`metric_value`]).
//! - [`skip::skip_or_fail`] prints a loud `SKIPPED:` line, or fails the test when
//!   `SLUICE_TEST_STRICT=1` (set by `scripts/test`), so CI cannot pass by skipping.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice_testkit::{TestKafka, Tinyproxy, TinyproxyOptions, unique_topic};
//!
//! let kafka = TestKafka::start()?; // declared first, so dropped after the clients
//! let topic = unique_topic("my-test");
//! kafka.create_topic(&topic, 3, false).await?;
//! let producer: rdkafka::producer::FutureProducer =
//!     kafka.producer_config().set("acks", "all").create()?;
//!
//! let Some(proxy) = Tinyproxy::start_or_skip(TinyproxyOptions::default()) else {
//!     return Ok(()); // skipped (or failed under SLUICE_TEST_STRICT=1)
//! };
//! let proxy_url = proxy.url(); // http://127.0.0.1:PORT
//! # Ok(()) }
//! ```
//!
//! This crate is a dev-dependency only: it must NOT be used by production code, must NOT install
//! anything or reach beyond loopback, and must NOT leave a process or temp directory behind once
//! its handles are dropped.

pub mod broker;
pub mod compressed;
pub mod head;
pub mod kafka;
pub mod prometheus;
pub mod proxies;
pub mod python;
pub mod s3;
pub mod skip;

mod daemon;
mod mock;
mod port;

pub use broker::{KafkaBroker, SaslListener};
pub use head::read_head;
pub use kafka::{Outage, TestKafka, TestKafkaError, is_real_broker_run, unique_topic};
pub use port::free_port;
pub use prometheus::metric_value;
pub use proxies::{
    Microsocks, MicrosocksOptions, ProxyAuth, ProxyError, Tinyproxy, TinyproxyOptions,
};
pub use skip::{is_strict, skip_or_fail};
