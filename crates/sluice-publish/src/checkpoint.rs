//! Which event id is safe to checkpoint for one target, given out-of-order acknowledgements.

use std::collections::VecDeque;

use sluice_sse::Text;

/// In-flight capacity up to which an emptied tracker releases its buffer.
const SMALL: usize = 16;

/// Tracks the in-flight events of one target and the checkpoint they allow.
///
/// Every event sent gets the next sequence number (`sluice.seq`, starting at 0). The checkpoint
/// is the event id of the highest sequence number that is acknowledged together with every
/// earlier one, so it never passes an unacknowledged event. Memory is bounded by the number of
/// in-flight events: the acknowledged prefix is dropped as soon as it is complete.
#[derive(Debug, Clone, Default)]
pub struct CheckpointTracker {
    /// The sequence number of `in_flight[0]`.
    base: u64,
    /// Event id and whether it is acknowledged, for every sequence number from `base` on.
    /// (`Text`: a typical id is stored inline, so sending an event allocates nothing here.)
    in_flight: VecDeque<(Text, bool)>,
    /// The event id of the last event of the complete acknowledged prefix.
    checkpoint: Option<Text>,
}

impl CheckpointTracker {
    /// A tracker with nothing sent yet and no checkpoint.
    pub fn new() -> CheckpointTracker {
        CheckpointTracker::default()
    }

    /// Records that the event `event_id` is being sent and returns its sequence number.
    pub fn sent(&mut self, event_id: &str) -> u64 {
        let seq = self.next_seq();
        self.in_flight
            .push_back((Text::copy_from_str(event_id), false));
        seq
    }

    /// Marks the event with sequence number `seq` as acknowledged by Kafka.
    ///
    /// Acknowledgements may come in any order. One for a sequence number that was never
    /// handed out, or that is already acknowledged, changes nothing.
    pub fn acked(&mut self, seq: u64) {
        let Some(index) = seq.checked_sub(self.base) else {
            return;
        };
        let Ok(index) = usize::try_from(index) else {
            return;
        };
        if let Some(slot) = self.in_flight.get_mut(index) {
            slot.1 = true;
        }
        while self.in_flight.front().is_some_and(|(_, acked)| *acked) {
            if let Some((id, _)) = self.in_flight.pop_front() {
                self.checkpoint = Some(id);
                self.base += 1;
            }
        }
        // A target with a few events in flight at a time is idle between them: give the small
        // buffer back (a worker holds thousands of trackers). Large ones, of a busy target,
        // are kept rather than grown again.
        if self.in_flight.is_empty() && self.in_flight.capacity() <= SMALL {
            self.in_flight = VecDeque::new();
        }
    }

    /// The event id that is safe to checkpoint: that of the highest sequence number such that it
    /// and every earlier one are acknowledged; `None` until the first event is.
    pub fn checkpoint(&self) -> Option<&str> {
        self.checkpoint.as_ref().map(Text::as_str)
    }

    /// How many events form the complete acknowledged prefix (every sequence number below it is
    /// acknowledged): the number of events the current checkpoint covers.
    pub fn acked_prefix(&self) -> u64 {
        self.base
    }

    /// The sequence number the next [`CheckpointTracker::sent`] returns.
    pub fn next_seq(&self) -> u64 {
        self.base + self.in_flight.len() as u64
    }

    /// How many events are sent but not yet part of the acknowledged prefix.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    /// Sends `ids` in order, then acks `acks` one by one, returning the checkpoint after each.
    fn run(ids: &[&str], acks: &[u64]) -> Vec<Option<String>> {
        let mut tracker = CheckpointTracker::new();
        for (expected, id) in ids.iter().enumerate() {
            assert_eq!(tracker.sent(id), expected as u64);
        }
        acks.iter()
            .map(|&seq| {
                tracker.acked(seq);
                tracker.checkpoint().map(str::to_owned)
            })
            .collect()
    }

    /// A table case: name, ids sent, acks in order, checkpoint expected after each ack.
    type Case<'a> = (&'a str, &'a [&'a str], &'a [u64], Vec<Option<String>>);

    #[test]
    fn checkpoint_follows_acknowledgements_only_over_a_complete_prefix() {
        let some = |s: &str| Some(s.to_owned());
        let cases: &[Case<'_>] = &[
            (
                "in order",
                &["a", "b", "c"],
                &[0, 1, 2],
                vec![some("a"), some("b"), some("c")],
            ),
            (
                "reversed",
                &["a", "b", "c"],
                &[2, 1, 0],
                vec![None, None, some("c")],
            ),
            (
                "gap then fill",
                &["a", "b", "c"],
                &[0, 2, 1],
                vec![some("a"), some("a"), some("c")],
            ),
            (
                "duplicate ack",
                &["a", "b"],
                &[1, 1, 0, 0],
                vec![None, None, some("b"), some("b")],
            ),
            ("unknown seq", &["a"], &[7, 0], vec![None, some("a")]),
        ];
        for (name, ids, acks, expected) in cases {
            assert_eq!(&run(ids, acks), expected, "case {name}");
        }
    }

    #[test]
    fn nothing_sent_means_no_checkpoint() {
        let tracker = CheckpointTracker::new();
        assert_eq!(tracker.checkpoint(), None);
        assert_eq!(tracker.next_seq(), 0);
    }

    #[test]
    fn the_acknowledged_prefix_is_dropped_from_memory() {
        let mut tracker = CheckpointTracker::new();
        for i in 0..1000 {
            let seq = tracker.sent(&i.to_string());
            tracker.acked(seq);
        }
        assert_eq!(tracker.in_flight(), 0);
        assert_eq!(tracker.checkpoint(), Some("999"));
        assert_eq!(tracker.next_seq(), 1000);
        tracker.sent("x");
        tracker.sent("y");
        tracker.acked(1001);
        assert_eq!(tracker.in_flight(), 2);
        assert_eq!(tracker.checkpoint(), Some("999"));
    }

    #[test]
    fn an_emptied_tracker_gives_a_small_buffer_back_and_keeps_a_large_one() {
        let mut tracker = CheckpointTracker::new();
        let seq = tracker.sent("a");
        assert!(tracker.in_flight.capacity() > 0);
        tracker.acked(seq);
        assert_eq!(tracker.in_flight.capacity(), 0);
        assert_eq!(tracker.checkpoint(), Some("a"));
        for i in 0..100 {
            tracker.sent(&i.to_string());
        }
        for seq in 1..=100 {
            tracker.acked(seq);
        }
        assert_eq!(tracker.in_flight(), 0);
        assert!(tracker.in_flight.capacity() >= 100);
        assert_eq!(tracker.checkpoint(), Some("99"));
    }

    proptest! {
        #[test]
        fn the_checkpoint_never_passes_an_unacknowledged_event(
            order in (1usize..64).prop_flat_map(|n| Just((0..n as u64).collect::<Vec<_>>()).prop_shuffle())
        ) {
            let n = order.len();
            let mut tracker = CheckpointTracker::new();
            for i in 0..n {
                prop_assert_eq!(tracker.sent(&format!("id-{i}")), i as u64);
            }
            let mut acked = vec![false; n];
            for &seq in &order {
                tracker.acked(seq);
                acked[seq as usize] = true;
                let prefix = acked.iter().take_while(|a| **a).count();
                let expected = prefix.checked_sub(1).map(|i| format!("id-{i}"));
                prop_assert_eq!(tracker.checkpoint().map(str::to_owned), expected);
                prop_assert_eq!(tracker.in_flight(), n - prefix);
            }
            prop_assert_eq!(tracker.in_flight(), 0);
        }
    }
}
