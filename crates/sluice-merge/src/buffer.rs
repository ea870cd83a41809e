//! The deltas held while a target waits for a base state: owned raw bytes, bounded, oldest
//! dropped first (the merger asks [`Buffer::is_full`] first where a drop would lose a delta
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
}

/// The held deltas, oldest first, at most `capacity`.
#[derive(Debug, Clone)]
pub(crate) struct Buffer {
    capacity: usize,
    held: VecDeque<Held>,
    dropped: u64,
    /// The `seq` of the next delta pushed.
    next_seq: u64,
}

impl Buffer {
    /// An empty buffer of `capacity` deltas.
    pub(crate) fn new(capacity: usize) -> Buffer {
        Buffer {
            capacity,
            held: VecDeque::new(),
            dropped: 0,
            next_seq: 0,
        }
    }

    /// Holds `delta` at the back (numbered after every delta held before), dropping the oldest
    /// when full.
    pub(crate) fn push(&mut self, mut delta: Held) {
        delta.seq = self.next_seq;
        self.next_seq += 1;
        if self.capacity == 0 {
            self.dropped += 1;
            return;
        }
        if self.held.len() == self.capacity {
            self.held.pop_front();
            self.dropped += 1;
        }
        self.held.push_back(delta);
    }

    /// Puts `delta` back at the front (it was just taken by [`Buffer::pop`]).
    pub(crate) fn push_front(&mut self, delta: Held) {
        self.held.push_front(delta);
    }

    /// Takes the oldest delta.
    pub(crate) fn pop(&mut self) -> Option<Held> {
        self.held.pop_front()
    }

    /// Drops everything held; returns how many.
    pub(crate) fn clear(&mut self) -> u64 {
        let n = self.held.len() as u64;
        self.held.clear();
        n
    }

    /// Whether the next [`Buffer::push`] drops the oldest delta.
    pub(crate) fn is_full(&self) -> bool {
        self.held.len() >= self.capacity
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
            id: None,
            delete: false,
            data: data.as_bytes().into(),
            caused: None,
            seq: 0,
        }
    }

    #[test]
    fn a_full_buffer_drops_its_oldest() {
        let mut buffer = Buffer::new(2);
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
        let mut buffer = Buffer::new(0);
        buffer.push(held("1"));
        assert_eq!((buffer.len(), buffer.dropped()), (0, 1));
    }
}
