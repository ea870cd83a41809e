//! The parse loop of one open stream: bytes in, events out, with rotation's replay matching.
//!
//! [`Reader::read`] takes a chunk and hands each event (and each `retry:` value) to the caller,
//! dropping only the replacement stream's provable replays ([`super::rotation`]).
//!
//! What it must NOT do: I/O, clocks, or Kafka; it only turns bytes into what the connection
//! state machine acts on.

use sluice_sse::{Event, Item, Limits, ParseError, Parser};

use super::rotation::Overlap;

/// What the reader hands out while reading a chunk.
pub(crate) enum Read {
    /// A new event (not a provable replay).
    Event(Event),
    /// The replacement stream replayed an event the old one delivered: dropped.
    Replayed,
    /// A `retry:` field: the new reconnection floor in milliseconds.
    Retry(u64),
}

/// How the stream stands after a chunk.
pub(crate) enum Flow {
    /// Read on.
    Open {
        /// At least one event was read (replays included).
        events: bool,
    },
    /// The stream broke the parser's rules (an event over the limits, say): reconnect.
    Rejected(ParseError),
}

/// The replay matching a stream takes part in (boxed: rare, and every stream holds one).
#[derive(Debug, Default)]
enum Replay {
    #[default]
    None,
    /// This is the old stream and its replacement connects: record what it delivers.
    Recording(Box<Overlap>),
    /// This is the replacement: drop what the old stream provably delivered.
    Matching(Box<Overlap>),
}

/// The SSE reading side of one open stream.
pub(crate) struct Reader {
    parser: Parser,
    replay: Replay,
}

impl Reader {
    /// A reader for a stream that resumes after `last_event_id` (the id events without an
    /// `id:` line carry until one comes).
    pub(crate) fn new(limits: Limits, last_event_id: &str) -> Reader {
        Reader {
            parser: Parser::new(limits).with_last_event_id(last_event_id),
            replay: Replay::None,
        }
    }

    /// Makes this the replacement of a stream that recorded `overlap`: its provable replays
    /// are dropped.
    pub(crate) fn match_replays(&mut self, overlap: Box<Overlap>) {
        self.replay = Replay::Matching(overlap);
    }

    /// From now on, record the ids of delivered events for a replacement that resumes after
    /// `resumed_from`.
    pub(crate) fn record_overlap(&mut self, resumed_from: &str) {
        self.replay = Replay::Recording(Box::new(Overlap::recording(resumed_from)));
    }

    /// Ends recording (the replacement failed) and returns what was recorded.
    pub(crate) fn take_overlap(&mut self) -> Box<Overlap> {
        match std::mem::take(&mut self.replay) {
            Replay::Recording(overlap) => overlap,
            other => {
                self.replay = other;
                Box::default()
            }
        }
    }

    /// Reads one chunk, handing every new event and `retry:` to `on`, in stream order.
    pub(crate) fn read(&mut self, bytes: &[u8], mut on: impl FnMut(Read)) -> Flow {
        self.parser.push(bytes);
        let mut events = false;
        loop {
            match self.parser.next_item() {
                Ok(Some(Item::Event(event))) => {
                    events = true;
                    match &mut self.replay {
                        Replay::None => {}
                        Replay::Recording(overlap) => overlap.record(event.id.as_str()),
                        Replay::Matching(overlap) => {
                            let replay = overlap.is_replay(event.id.as_str());
                            if overlap.is_done() {
                                self.replay = Replay::None;
                            }
                            if replay {
                                on(Read::Replayed);
                                continue;
                            }
                        }
                    }
                    on(Read::Event(event));
                }
                Ok(Some(Item::Retry(ms))) => on(Read::Retry(ms)),
                Ok(Some(Item::Comment(_))) => {}
                Ok(None) => return Flow::Open { events },
                Err(error) => return Flow::Rejected(error),
            }
        }
    }
}
