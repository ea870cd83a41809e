//! The incremental event-stream parser (WHATWG HTML, "Interpreting an event stream").

use std::borrow::Cow;

use bytes::{Buf, BufMut, BytesMut};

use crate::{Event, Item, Limits, ParseError, Text};

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";
const MESSAGE: Text = Text::from_static("message");

/// Incremental parser of one `text/event-stream`, one connection at a time.
///
/// Feed bytes with [`Parser::push`] in any chunking, then call [`Parser::next_item`] until it
/// returns `Ok(None)`. Any chunking of the same bytes yields the same items. Memory is bounded by
/// the [`Limits`] plus the size of one pushed chunk, provided the caller drains `next_item`
/// between pushes.
///
/// At the end of a connection call [`Parser::end_of_stream`]; the parser keeps the last event id
/// and can be reused for the next connection.
#[derive(Debug, Clone)]
pub struct Parser {
    limits: Limits,
    /// Input not yet consumed; starts at the beginning of the current line.
    buf: BytesMut,
    /// Leading bytes of `buf` already searched for a line end without finding one.
    scanned: usize,
    /// A BOM may still follow (nothing consumed on this connection yet).
    at_stream_start: bool,
    /// The last line ended with a CR at the very end of the input: an LF that comes first in
    /// the next input is the second half of that CRLF.
    skip_lf: bool,
    data: Data,
    /// Spill buffer for events with more than one `data` line; reused across events.
    multi: BytesMut,
    /// The event type buffer; meaningful only while `event_type_set` (kept otherwise so that
    /// the next `event` line can overwrite a short type in place).
    event_type: Text,
    event_type_set: bool,
    /// The id buffer when an `id` line of the event being read set it (`id_set`); otherwise
    /// the id buffer equals `last_event_id` and this holds stale bytes reused in place.
    id_buffer: Text,
    id_set: bool,
    /// The last event id string: the id buffer as of the last empty line.
    last_event_id: Text,
    failed: Option<ParseError>,
}

/// The data buffer of the event being read.
#[derive(Debug, Clone)]
enum Data {
    /// No `data` line yet.
    Empty,
    /// Exactly one `data` line: its value (zero-copy).
    One(Text),
    /// More than one `data` line: the joined values are in `Parser::multi`.
    Many,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser::new(Limits::default())
    }
}

impl Parser {
    /// A parser for a new stream with no last event id.
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            buf: BytesMut::new(),
            scanned: 0,
            at_stream_start: true,
            skip_lf: false,
            data: Data::Empty,
            multi: BytesMut::new(),
            event_type: Text::new(),
            event_type_set: false,
            id_buffer: Text::new(),
            id_set: false,
            last_event_id: Text::new(),
            failed: None,
        }
    }

    /// Seed the last event id (e.g. from a checkpoint or the previous connection).
    ///
    /// Events that carry no `id` line report this id until the stream sets another one.
    pub fn with_last_event_id(mut self, id: &str) -> Parser {
        self.id_set = false;
        self.last_event_id = Text::copy_from_str(id);
        self
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Append bytes from the stream (any chunking).
    ///
    /// After an error the bytes are dropped: the connection is done.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// Next complete item, or `Ok(None)` when more bytes are needed.
    ///
    /// An error is final for the connection: every later call returns the same error and pushed
    /// bytes are dropped until [`Parser::end_of_stream`] prepares the parser for a new
    /// connection. The error is reported as soon as a buffered unterminated line exceeds
    /// [`Limits::max_line_bytes`], so a stream without line ends cannot grow memory.
    pub fn next_item(&mut self) -> Result<Option<Item>, ParseError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.at_stream_start && !self.skip_bom() {
            return Ok(None);
        }
        loop {
            if self.skip_lf {
                match self.buf.first() {
                    None => {
                        self.release_input();
                        return Ok(None);
                    }
                    Some(b'\n') => self.buf.advance(1),
                    Some(_) => {}
                }
                self.skip_lf = false;
            }
            let Some(found) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.limits.max_line_bytes {
                    return Err(self.fail(ParseError::LineTooLong {
                        limit: self.limits.max_line_bytes,
                    }));
                }
                self.release_input();
                return Ok(None);
            };
            let end = self.scanned + found;
            self.scanned = 0;
            if end > self.limits.max_line_bytes {
                return Err(self.fail(ParseError::LineTooLong {
                    limit: self.limits.max_line_bytes,
                }));
            }
            let terminator = self.terminator_len(end);
            if end == 0 {
                self.buf.advance(terminator);
                if let Some(event) = self.dispatch() {
                    return Ok(Some(Item::Event(event)));
                }
                continue;
            }
            let item = self.field(end)?;
            self.buf.advance(terminator);
            if let Some(item) = item {
                return Ok(Some(item));
            }
        }
    }

    /// End of the stream (connection closed): discards the unfinished event and buffered partial
    /// line, keeps the last event id, and re-arms BOM handling so the parser can be reused for
    /// the next connection.
    ///
    /// The kept id is the one in force at the last empty line: an `id` line of the discarded
    /// unfinished event does not count. A previous error is cleared.
    pub fn end_of_stream(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.at_stream_start = true;
        self.skip_lf = false;
        self.data = Data::Empty;
        self.multi.clear();
        self.event_type_set = false;
        self.id_set = false;
        self.failed = None;
    }

    /// The last event id currently in force ("" when none): the id of the last dispatched event
    /// or, if the stream set an id in a block without data, that id. This is the value to send as
    /// `Last-Event-ID` when reconnecting.
    pub fn last_event_id(&self) -> &str {
        self.last_event_id.as_str()
    }

    /// Bytes currently allocated for buffered input (for tests and memory metrics).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity() + self.multi.capacity()
    }

    /// Gives the input buffer back once all of it is consumed. A stream whose chunks end on
    /// event boundaries (one event a second, say) would otherwise keep a buffer, and the header
    /// of the allocation its events share, per connection between chunks.
    fn release_input(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Skips a leading BOM. Returns false when more bytes are needed to decide.
    fn skip_bom(&mut self) -> bool {
        let n = self.buf.len().min(BOM.len());
        if self.buf[..n] != BOM[..n] {
            self.at_stream_start = false;
        } else if n == BOM.len() {
            self.buf.advance(n);
            self.at_stream_start = false;
        }
        !self.at_stream_start
    }

    /// Length of the line terminator at `end` (which holds CR or LF).
    fn terminator_len(&mut self, end: usize) -> usize {
        if self.buf[end] == b'\n' {
            return 1;
        }
        match self.buf.get(end + 1) {
            Some(b'\n') => 2,
            Some(_) => 1,
            None => {
                self.skip_lf = true;
                1
            }
        }
    }

    /// Handles the non-empty line `buf[..end]` and consumes it (not its terminator).
    fn field(&mut self, end: usize) -> Result<Option<Item>, ParseError> {
        let line = &self.buf[..end];
        let (name_end, value_start) = match memchr::memchr(b':', line) {
            Some(colon) if line.get(colon + 1) == Some(&b' ') => (colon, colon + 2),
            Some(colon) => (colon, colon + 1),
            None => (end, end),
        };
        match &line[..name_end] {
            b"" => return Ok(Some(Item::Comment(take_text(&mut self.buf, 1, end, true)))),
            b"data" => self.append_data(value_start, end)?,
            b"event" => {
                assign_text(&mut self.event_type, &mut self.buf, value_start, end);
                self.event_type_set = true;
            }
            b"id" if memchr::memchr(0, &line[value_start..]).is_none() => {
                assign_text(&mut self.id_buffer, &mut self.buf, value_start, end);
                self.id_set = true;
            }
            b"retry" => {
                let retry = parse_retry(&line[value_start..]);
                self.buf.advance(end);
                return Ok(retry.map(Item::Retry));
            }
            _ => self.buf.advance(end),
        }
        Ok(None)
    }

    /// Appends the value `buf[start..end]` of a `data` line to the data buffer and consumes
    /// `buf[..end]`.
    fn append_data(&mut self, start: usize, end: usize) -> Result<(), ParseError> {
        let limit = self.limits.max_event_bytes;
        let first = match std::mem::replace(&mut self.data, Data::Many) {
            Data::Empty => {
                let value = take_text(&mut self.buf, start, end, false);
                if value.len() > limit {
                    return Err(self.fail(ParseError::EventTooLarge { limit }));
                }
                self.data = Data::One(value);
                return Ok(());
            }
            Data::One(first) => Some(first),
            Data::Many => None,
        };
        let raw = &self.buf[start..end];
        let value = if is_utf8(raw) {
            Cow::Borrowed(raw)
        } else {
            Cow::Owned(String::from_utf8_lossy(raw).into_owned().into_bytes())
        };
        let joined = first.as_ref().map_or(self.multi.len(), Text::len) + 1 + value.len();
        if joined > limit {
            return Err(self.fail(ParseError::EventTooLarge { limit }));
        }
        if let Some(first) = first {
            self.multi.reserve(joined);
            self.multi.put_slice(first.as_bytes());
        }
        self.multi.put_u8(b'\n');
        self.multi.put_slice(&value);
        self.buf.advance(end);
        Ok(())
    }

    /// The empty-line step: commits the id and yields the event unless the data buffer is empty.
    fn dispatch(&mut self) -> Option<Event> {
        if self.id_set {
            std::mem::swap(&mut self.last_event_id, &mut self.id_buffer);
            self.id_set = false;
        }
        let event_type_set = std::mem::replace(&mut self.event_type_set, false);
        let data = match std::mem::replace(&mut self.data, Data::Empty) {
            Data::Empty => return None,
            Data::One(data) => data,
            Data::Many => {
                // Each part was decoded to valid UTF-8 and LF is ASCII, so the join is valid.
                Text::from_validated(self.multi.split().freeze())
            }
        };
        Some(Event {
            id: self.last_event_id.clone(),
            event: if event_type_set && !self.event_type.is_empty() {
                self.event_type.clone()
            } else {
                MESSAGE
            },
            data,
        })
    }

    /// Records a final error and releases the buffers.
    fn fail(&mut self, error: ParseError) -> ParseError {
        self.buf = BytesMut::new();
        self.multi = BytesMut::new();
        self.scanned = 0;
        self.data = Data::Empty;
        self.failed = Some(error.clone());
        error
    }
}

/// Decodes `buf[start..end]` and consumes `buf[..end]`. Valid UTF-8 becomes a zero-copy slice,
/// or an inline copy when `inline` and it is short; invalid UTF-8 is replaced.
fn take_text(buf: &mut BytesMut, start: usize, end: usize, inline: bool) -> Text {
    let value = &buf[start..end];
    if !is_utf8(value) {
        let text = Text::from(String::from_utf8_lossy(value).into_owned());
        buf.advance(end);
        return text;
    }
    if inline && let Some(text) = Text::inline_validated(value) {
        buf.advance(end);
        return text;
    }
    buf.advance(start);
    Text::from_validated(buf.split_to(end - start).freeze())
}

/// Like [`take_text`] with `inline`, but overwrites a short `dst` in place, which avoids moving
/// a freshly built `Text` around on the hot path.
fn assign_text(dst: &mut Text, buf: &mut BytesMut, start: usize, end: usize) {
    let value = &buf[start..end];
    if is_utf8(value) && dst.overwrite_inline_validated(value) {
        buf.advance(end);
    } else {
        *dst = take_text(buf, start, end, true);
    }
}

/// Whether `bytes` are valid UTF-8, with a fast path for ASCII.
#[inline]
fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

/// The value of a `retry` field: only non-empty all-ASCII-digit values count. A value too large
/// for `u64` is ignored, like any other value the browser would not use.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    let mut ms: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        ms = ms.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(ms)
}
