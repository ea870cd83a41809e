//! Shared helpers of the simulator's integration tests: start a sim on loopback, read a stream
//! through the real SSE parser.

#![allow(dead_code, clippy::unwrap_used)]

use std::error::Error as _;

use sluice_sim::{RunningSim, SimConfig};
use sluice_sse::{Event, Item, Limits, Parser};

/// A fast, finite feed: tests wait on `wait_for_head` instead of sleeping.
pub fn fast(max_events: u64) -> SimConfig {
    SimConfig {
        rate: 1_000.0,
        max_events: Some(max_events),
        ..SimConfig::default()
    }
}

pub async fn start(config: SimConfig) -> RunningSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    RunningSim::start(config, listener).await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// How reading a stream ended.
#[derive(Debug)]
pub enum End {
    /// The body ended cleanly.
    Eof,
    /// The transport failed (reset, cut mid-body, …).
    Transport(reqwest::Error),
    /// The parser refused the stream.
    Parse(sluice_sse::ParseError),
}

impl End {
    pub fn is_connection_reset(&self) -> bool {
        let End::Transport(error) = self else {
            return false;
        };
        let mut source = error.source();
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionReset {
                    return true;
                }
            }
            source = s.source();
        }
        false
    }
}

/// An SSE response read through `sluice_sse::Parser`.
pub struct Sse {
    pub response: reqwest::Response,
    parser: Parser,
    eof: bool,
}

impl Sse {
    pub fn new(response: reqwest::Response) -> Self {
        Self::with_limits(response, Limits::default())
    }

    pub fn with_limits(response: reqwest::Response, limits: Limits) -> Self {
        assert_eq!(response.status(), 200, "stream status");
        Sse {
            response,
            parser: Parser::new(limits),
            eof: false,
        }
    }

    /// The next item, or how the stream ended.
    pub async fn item(&mut self) -> Result<Item, End> {
        loop {
            match self.parser.next_item() {
                Ok(Some(item)) => return Ok(item),
                Ok(None) if self.eof => return Err(End::Eof),
                Ok(None) => {}
                Err(error) => return Err(End::Parse(error)),
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.parser.push(&chunk),
                Ok(None) => {
                    self.parser.end_of_stream();
                    self.eof = true;
                }
                Err(error) => return Err(End::Transport(error)),
            }
        }
    }

    /// The next event, skipping comments and retry hints.
    pub async fn event(&mut self) -> Result<Event, End> {
        loop {
            if let Item::Event(event) = self.item().await? {
                return Ok(event);
            }
        }
    }

    /// The next `n` events; panics if the stream ends first.
    pub async fn events(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.event().await.unwrap());
        }
        out
    }

    /// Every event until the stream ends, and how it ended.
    pub async fn rest(&mut self) -> (Vec<Event>, End) {
        let mut out = Vec::new();
        loop {
            match self.event().await {
                Ok(event) => out.push(event),
                Err(end) => return (out, end),
            }
        }
    }
}

pub async fn open(url: &str) -> Sse {
    Sse::new(client().get(url).send().await.unwrap())
}

pub async fn open_after(url: &str, last_event_id: u64) -> Sse {
    let response = client()
        .get(url)
        .header("Last-Event-ID", last_event_id.to_string())
        .send()
        .await
        .unwrap();
    Sse::new(response)
}

pub fn id(event: &Event) -> u64 {
    event.id.as_str().parse().unwrap()
}

/// Asserts the events are deltas `first, first+1, …` exactly as the model says.
pub fn assert_deltas_from(first: u64, events: &[Event], config: &SimConfig) {
    for (i, event) in events.iter().enumerate() {
        let seq = first + i as u64;
        let expected = sluice_sim::delta(config.seed, config.entities, seq);
        assert_eq!(id(event), seq, "event {i} id");
        assert_eq!(
            event.event.as_str(),
            expected.event_type(),
            "event {seq} type"
        );
        assert_eq!(
            event.data.as_str(),
            expected.to_json(config.entities),
            "event {seq} data"
        );
    }
}

pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}
