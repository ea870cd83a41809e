//! What the parser yields: events, comments and reconnection-time hints.

use crate::Text;

/// One thing found in the stream, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event (an empty line ended a block that had at least one `data` line).
    Event(Event),
    /// A comment line (`:` first): the text after the colon, exactly as sent (no space removed).
    /// Upstreams send these as heartbeats.
    Comment(Text),
    /// A `retry` field with only ASCII digits: the new reconnection time in milliseconds.
    /// Surfaced as soon as the line is read, not at dispatch. A value that does not fit in `u64`
    /// is ignored (no item), as is any value with a non-digit.
    Retry(u64),
}

/// A dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The last event id in force at dispatch (it persists across events); empty means none.
    pub id: Text,
    /// The event type; `message` when the block had no (or an empty) `event` field.
    pub event: Text,
    /// The data lines joined with LF. Zero-copy slice of the input for a single valid-UTF-8
    /// `data` line, so it keeps that input buffer alive: copy it before storing it for long.
    pub data: Text,
}
