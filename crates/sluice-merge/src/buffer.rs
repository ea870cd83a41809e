//! The deltas held while a target waits for a base state: owned raw bytes, bounded by count and
//! by bytes, oldest dropped first (the merger asks [`Buffer::is_full`] first where a drop would lose a delta
//! silently).

use std::collections::VecDeque;

use crate::outcome::ResnapshotReason;

/// One held delta, as received (parsed only when replayed).
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// Its `sse.id`.
    pub(crate) id: Option<Box<str>>,
    /// Whether its event type is a delete event.
    pub(crate) delete: bool,
    /// Its data.
    pub(crate) data: Box<[u8]>,
    /// The re-snapshot it caused, if it did.
    pub(crate) caused: Option<ResnapshotReason>,
    /// Its place in the order deltas were held (set by [`Buffer::push`]).
    pub(crate) seq: u64,
    /// Its record's offset in its partition, when the caller gave it.
    pub(crate) offset: Option<i64>,
}

impl Held {
    /// What holding it costs, as counted against the byte bound: its data, its id and the
    /// fixed part of the record.
    fn cost(&self) -> usize {
        self.data.len() + self.id.as_deref().map_or(0, str::len) + std::mem::size_of::<Held>()
    }
}

/// The held deltas, oldest first, at most `capacity` of them and at most `max_bytes` of
/// [`Held::cost`] (but always the newest one).
#[derive(Debug, Clone)]
pub(crate) struct Buffer {
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    held: VecDeque<Held>,
    dropped: u64,
    /// The `seq` of the next delta pushed.
    next_seq: u64,
}

impl Buffer {
    /// An empty buffer of `capacity` deltas and `max_bytes` bytes.
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Buffer {
        Buffer {
            capacity,
            max_bytes,
            bytes: 0,
            held: VecDeque::new(),
            dropped: 0,
            next_seq: 0,
        }
    }

    /// Holds `delta` at the back (numbered after every delta held before), dropping the oldest
    /// until it fits.
    pub(crate) fn push(&mut self, mut delta: Held) {
        delta.seq = self.next_seq;
        self.next_seq += 1;
        if self.capacity == 0 {
            self.dropped += 1;
            return;
        }
        let cost = delta.cost();
        while !self.held.is_empty()
            && (self.held.len() >= self.capacity || self.bytes + cost > self.max_bytes)
        {
            self.pop();
            self.dropped += 1;
        }
        self.bytes += cost;
        self.held.push_back(delta);
    }

    /// Puts `delta` back at the front (it was just taken by [`Buffer::pop`]).
    pub(crate) fn push_front(&mut self, delta: Held) {
        self.bytes += delta.cost();
        self.held.push_front(delta);
    }

    /// Takes the oldest delta.
    pub(crate) fn pop(&mut self) -> Option<Held> {
        let delta = self.held.pop_front()?;
        self.bytes -= delta.cost();
        Some(delta)
    }

    /// Drops everything held; returns how many.
    pub(crate) fn clear(&mut self) -> u64 {
        let n = self.held.len() as u64;
        self.held.clear();
        self.bytes = 0;
        n
    }

    /// Whether holding `data` (with `id`) next makes [`Buffer::push`] drop the oldest delta.
    pub(crate) fn is_full_for(&self, id: Option<&str>, data: &[u8]) -> bool {
        let cost = data.len() + id.map_or(0, str::len) + std::mem::size_of::<Held>();
        self.held.len() >= self.capacity
            || (!self.held.is_empty() && self.bytes + cost > self.max_bytes)
    }

    /// The bytes held, as counted against the byte bound.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Deltas held.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Deltas dropped from a full buffer, total.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The `seq` the next delta held will have: every delta held so far is below it.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::{Buffer, Held};

    fn held(data: &str) -> Held {
        Held {
            offset: None,
            id: None,
            delete: false,
            data: data.as_bytes().into(),
            caused: None,
            seq: 0,
        }
    }

    #[test]
    fn a_full_buffer_drops_its_oldest() {
        let mut buffer = Buffer::new(2, usize::MAX);
        for data in ["1", "2", "3"] {
            buffer.push(held(data));
        }
        assert_eq!(buffer.len(), 2);
        assert_eq!(buffer.dropped(), 1);
        let data: Vec<_> = std::iter::from_fn(|| buffer.pop())
            .map(|h| h.data)
            .collect();
        assert_eq!(data, [b"2".as_slice().into(), b"3".as_slice().into()]);
    }

    #[test]
    fn a_zero_buffer_drops_everything() {
        let mut buffer = Buffer::new(0, usize::MAX);
        buffer.push(held("1"));
        assert_eq!((buffer.len(), buffer.dropped()), (0, 1));
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_but_keeps_the_newest() {
        let one = held("x").cost();
        let mut buffer = Buffer::new(100, 2 * one + 1);
        for data in ["a", "b", "c"] {
            assert_eq!(buffer.is_full_for(None, b"x"), buffer.len() == 2);
            buffer.push(held(data));
        }
        assert_eq!((buffer.len(), buffer.dropped()), (2, 1));
        assert_eq!(buffer.bytes(), 2 * one);
        // A delta larger than the whole bound is held alone.
        let big = "y".repeat(10 * one);
        buffer.push(held(&big));
        assert_eq!((buffer.len(), buffer.dropped()), (1, 3));
        assert_eq!(buffer.pop().map(|h| h.data.len()), Some(big.len()));
        assert_eq!(buffer.bytes(), 0);
    }
}
