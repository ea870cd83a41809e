//! A deliberately naive transcription of WHATWG HTML "Interpreting an event stream" (one piece,
//! strings everywhere) used as the oracle for the real parser. Limits follow the parser's
//! documented meaning: a line longer than `max_line_bytes` raw bytes (terminated or not), or event
//! data (decoded, joined with LF) larger than `max_event_bytes`, ends the stream with an error.

use sluice_sse::{Event, Item, Limits, ParseError, Text};

use super::Outcome;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses a whole connection's bytes.
pub fn parse(stream: &[u8], limits: Limits, seed_id: &str) -> Outcome {
    let mut items = Vec::new();
    let mut data = String::new();
    let mut event_type = String::new();
    let mut id_buffer = seed_id.to_owned();
    let mut last_event_id = seed_id.to_owned();
    let finish = |items, error, last_event_id| Outcome {
        items,
        error,
        last_event_id,
    };

    // A stream that is only the start of a BOM has not said whether it has one: nothing to parse.
    if stream.len() < BOM.len() && BOM.starts_with(stream) {
        return finish(items, None, last_event_id);
    }
    let body = stream.strip_prefix(BOM).unwrap_or(stream);

    // Split into lines; the bytes after the last line end are an unterminated line.
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' => {
                lines.push(&body[start..i]);
                i += if body.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            b'\n' => {
                lines.push(&body[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    let tail = &body[start..];

    for raw in lines {
        if raw.len() > limits.max_line_bytes {
            let error = ParseError::LineTooLong {
                limit: limits.max_line_bytes,
            };
            return finish(items, Some(error), last_event_id);
        }
        let line = String::from_utf8_lossy(raw).into_owned();
        if line.is_empty() {
            // Dispatch.
            last_event_id = id_buffer.clone();
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            let event = if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type.clone()
            };
            items.push(Item::Event(Event {
                id: Text::from(last_event_id.clone()),
                event: Text::from(event),
                data: Text::from(std::mem::take(&mut data)),
            }));
            event_type.clear();
            continue;
        }
        if let Some(rest) = line.strip_prefix(':') {
            items.push(Item::Comment(Text::from(rest.to_owned())));
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line.as_str(), ""),
        };
        match field {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
                if data.len() - 1 > limits.max_event_bytes {
                    let error = ParseError::EventTooLarge {
                        limit: limits.max_event_bytes,
                    };
                    return finish(items, Some(error), last_event_id);
                }
            }
            "id" if !value.contains('\0') => id_buffer = value.to_owned(),
            // Only ASCII digits; a value too large for u64 is ignored (the parser's documented rule).
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    items.push(Item::Retry(ms));
                }
            }
            _ => {}
        }
    }
    let error = (tail.len() > limits.max_line_bytes).then_some(ParseError::LineTooLong {
        limit: limits.max_line_bytes,
    });
    finish(items, error, last_event_id)
}
