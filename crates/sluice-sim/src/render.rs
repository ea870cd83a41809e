//! SSE encoding of deltas and control events, written straight into a buffer.
//!
//! The hot path (firehose) renders hundreds of thousands of events per second, so nothing here
//! allocates or goes through serde: numbers are formatted with `itoa` / `ryu` into the buffer.

use bytes::BufMut;

use crate::model::{Delta, KeyFormat, cents_to_price};

/// The heartbeat comment sent on an idle stream.
pub(crate) const HEARTBEAT: &[u8] = b": hb\n\n";

/// Why a stream starts with a `reset` event instead of replaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// `Last-Event-ID` is older than the replay history.
    HistoryExhausted,
    /// `Last-Event-ID` is ahead of the feed's head.
    IdInFuture,
    /// `Last-Event-ID` is not a decimal sequence number.
    InvalidId,
}

impl ResetReason {
    /// The `reason` string in the reset event's data.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResetReason::HistoryExhausted => "history_exhausted",
            ResetReason::IdInFuture => "id_in_future",
            ResetReason::InvalidId => "invalid_id",
        }
    }
}

fn put_u64<B: BufMut>(buf: &mut B, n: u64) {
    let mut fmt = itoa::Buffer::new();
    buf.put_slice(fmt.format(n).as_bytes());
}

fn put_key<B: BufMut>(buf: &mut B, entity: u32, keys: KeyFormat) {
    let mut fmt = itoa::Buffer::new();
    let digits = fmt.format(entity).as_bytes();
    buf.put_u8(b'E');
    for _ in digits.len()..keys.digits() {
        buf.put_u8(b'0');
    }
    buf.put_slice(digits);
}

/// Writes the `data` JSON of a delta (no field name, no line end).
pub(crate) fn write_data<B: BufMut>(buf: &mut B, delta: &Delta, keys: KeyFormat) {
    buf.put_slice(b"{\"key\":\"");
    put_key(buf, delta.entity(), keys);
    match *delta {
        Delta::PriceUpdate {
            seq,
            price_cents,
            qty,
            ..
        } => {
            buf.put_slice(b"\",\"price\":");
            let mut fmt = ryu::Buffer::new();
            buf.put_slice(fmt.format_finite(cents_to_price(price_cents)).as_bytes());
            buf.put_slice(b",\"qty\":");
            put_u64(buf, u64::from(qty));
            buf.put_slice(b",\"version\":");
            put_u64(buf, seq);
        }
        Delta::Delete { seq, .. } => {
            buf.put_slice(b"\",\"version\":");
            put_u64(buf, seq);
        }
    }
    buf.put_u8(b'}');
}

/// Writes one delta as a complete SSE event: `id`, `event`, `data`, blank line.
pub(crate) fn write_event<B: BufMut>(buf: &mut B, delta: &Delta, keys: KeyFormat) {
    buf.put_slice(b"id: ");
    put_u64(buf, delta.seq());
    buf.put_slice(b"\nevent: ");
    buf.put_slice(delta.event_type().as_bytes());
    buf.put_slice(b"\ndata: ");
    write_data(buf, delta, keys);
    buf.put_slice(b"\n\n");
}

/// Writes the `retry:` field (milliseconds) as its own block.
pub(crate) fn write_retry<B: BufMut>(buf: &mut B, millis: u64) {
    buf.put_slice(b"retry: ");
    put_u64(buf, millis);
    buf.put_slice(b"\n\n");
}

/// Writes the `reset` event. Its id is the head, so a client that reconnects with it resumes
/// live from where the reset put it instead of being reset again.
pub(crate) fn write_reset<B: BufMut>(buf: &mut B, reason: ResetReason, head: u64) {
    buf.put_slice(b"id: ");
    put_u64(buf, head);
    buf.put_slice(b"\nevent: reset\ndata: {\"reason\":\"");
    buf.put_slice(reason.as_str().as_bytes());
    buf.put_slice(b"\",\"snapshot_version\":");
    put_u64(buf, head);
    buf.put_slice(b"}\n\n");
}

/// Writes the malformed-event fault: a `price_update` whose data is not JSON, followed by a
/// line that is not a valid field. It has no `id`, so the client's last event id is unchanged.
pub(crate) fn write_malformed<B: BufMut>(buf: &mut B) {
    buf.put_slice(b"event: price_update\ndata: {\"key\": this is not json\n");
    buf.put_slice(b"this line is not a field\n\n");
}

/// Writes the oversized-event fault: one `oversized` event whose single data line is exactly
/// `data_bytes` long (a JSON object padded with `x`, or just `x`s when too short for one).
pub(crate) fn write_oversized<B: BufMut>(buf: &mut B, data_bytes: usize) {
    const OPEN: &[u8] = b"{\"padding\":\"";
    const CLOSE: &[u8] = b"\"}";
    buf.put_slice(b"event: oversized\ndata: ");
    if data_bytes >= OPEN.len() + CLOSE.len() {
        buf.put_slice(OPEN);
        buf.put_bytes(b'x', data_bytes - OPEN.len() - CLOSE.len());
        buf.put_slice(CLOSE);
    } else {
        buf.put_bytes(b'x', data_bytes);
    }
    buf.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::delta;

    fn render(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut buf = Vec::new();
        f(&mut buf);
        String::from_utf8(buf).expect("ascii")
    }

    #[test]
    fn price_update_renders_as_one_sse_event() {
        let d = Delta::PriceUpdate {
            seq: 42,
            entity: 7,
            price_cents: 10_125,
            qty: 17,
        };
        let text = render(|b| write_event(b, &d, KeyFormat::new(100)));
        assert_eq!(
            text,
            "id: 42\nevent: price_update\ndata: {\"key\":\"E0007\",\"price\":101.25,\"qty\":17,\"version\":42}\n\n"
        );
    }

    #[test]
    fn delete_renders_key_and_version_only() {
        let d = Delta::Delete { seq: 9, entity: 12 };
        let text = render(|b| write_event(b, &d, KeyFormat::new(100)));
        assert_eq!(
            text,
            "id: 9\nevent: delete\ndata: {\"key\":\"E0012\",\"version\":9}\n\n"
        );
    }

    #[test]
    fn rendered_prices_match_serde_json_formatting() {
        for seq in 1..2_000 {
            let d = delta(5, 100, seq);
            if let Delta::PriceUpdate { price_cents, .. } = d {
                let ours = d.to_json(100);
                let price = serde_json::to_string(&cents_to_price(price_cents)).expect("f64");
                assert!(ours.contains(&format!("\"price\":{price},")), "{ours}");
            }
        }
    }

    #[test]
    fn oversized_data_line_has_exactly_the_requested_length() {
        for n in [0, 5, 14, 1_000] {
            let text = render(|b| write_oversized(b, n));
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data line");
            assert_eq!(line.len(), n);
        }
    }

    #[test]
    fn reset_event_carries_reason_and_head() {
        let text = render(|b| write_reset(b, ResetReason::HistoryExhausted, 77));
        assert_eq!(
            text,
            "id: 77\nevent: reset\ndata: {\"reason\":\"history_exhausted\",\"snapshot_version\":77}\n\n"
        );
    }
}
