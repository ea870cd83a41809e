//! The Server-Sent Events parser of Sluice: bytes in, items out.
//!
//! It implements the WHATWG HTML rules for interpreting an event stream completely: a leading
//! UTF-8 BOM, CR / LF / CRLF line ends (also when CR and LF arrive in different chunks), comments
//! (surfaced as heartbeats), `data` / `event` / `id` / `retry` fields, an `id` that persists across
//! events and reconnections, and lossy UTF-8 decoding that is zero-copy for valid input. Lines and
//! events are bounded by [`Limits`], so a hostile stream becomes a [`ParseError`] rather than
//! memory growth.
//!
//! What it must NOT do: any I/O, async, clock reads, logging or knowledge of HTTP and Kafka. The
//! connection, reconnect and publish logic live in other crates and drive this one.
//!
//! ```
//! use sluice_sse::{Item, Limits, Parser};
//!
//! let mut parser = Parser::new(Limits::default()).with_last_event_id("41");
//! parser.push(b"data: hello\n\nid: 42\nda");
//! parser.push(b"ta: world\n\n");
//! let mut events = Vec::new();
//! while let Some(item) = parser.next_item().expect("within limits") {
//!     if let Item::Event(event) = item {
//!         events.push((event.id.to_string(), event.data.to_string()));
//!     }
//! }
//! assert_eq!(events, [("41".into(), "hello".into()), ("42".into(), "world".into())]);
//! assert_eq!(parser.last_event_id(), "42");
//! ```

mod error;
mod item;
mod limits;
mod parser;
mod text;

pub use error::ParseError;
pub use item::{Event, Item};
pub use limits::Limits;
pub use parser::Parser;
pub use text::Text;
