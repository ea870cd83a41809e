//! Make-before-break rotation's replay matching: which events of the replacement stream are
//! provably ones the old stream already delivered.
//!
//! While the replacement connects, the old stream keeps delivering; the replacement, asked to
//! resume after the id in force when it was requested, replays those events. An event of the
//! replacement is dropped as a replay only when ids prove it: every event the old stream
//! delivered in the overlap had an id of its own (not empty, not the id the replacement resumed
//! from, none repeated, so no id was merely carried forward from an earlier event), and the
//! replacement's events match them in order. Where the ids cannot prove it (no `id:` lines, ids
//! on some events only, repeated ids), nothing is dropped: a duplicate is delivered instead.
//!
//! What it must NOT do: drop an event it cannot prove is a replay, or hold more than
//! [`MAX_OVERLAP`] ids.

use std::collections::{HashSet, VecDeque};

/// Longest replay overlap remembered for dropping duplicates after a switch.
pub(crate) const MAX_OVERLAP: usize = 65_536;

/// The ids the old stream delivered after the replacement's `Last-Event-ID`.
#[derive(Debug, Default)]
pub(crate) struct Overlap {
    /// The id the replacement resumes after.
    resumed_from: Box<str>,
    ids: VecDeque<Box<str>>,
    seen: HashSet<Box<str>>,
    /// False once an id could not prove a replay: nothing will be dropped.
    provable: bool,
}

impl Overlap {
    /// Starts recording for a replacement that resumes after `resumed_from`.
    pub(crate) fn recording(resumed_from: &str) -> Overlap {
        Overlap {
            resumed_from: resumed_from.into(),
            ids: VecDeque::new(),
            seen: HashSet::new(),
            provable: true,
        }
    }

    /// An event the old stream delivered while the replacement connects.
    pub(crate) fn record(&mut self, id: &str) {
        if !self.provable || self.ids.len() >= MAX_OVERLAP {
            // Past the cap the prefix still proves what it holds; later replays are delivered.
            return;
        }
        if id.is_empty() || *id == *self.resumed_from || self.seen.contains(id) {
            self.give_up();
            return;
        }
        let id: Box<str> = id.into();
        self.seen.insert(id.clone());
        self.ids.push_back(id);
    }

    /// Whether the replacement's next event, with `id`, is a replay of the old stream's: only
    /// when ids prove it. The first event that does not match ends the matching.
    pub(crate) fn is_replay(&mut self, id: &str) -> bool {
        if !self.provable {
            return false;
        }
        if self.ids.front().is_some_and(|front| **front == *id) {
            if let Some(front) = self.ids.pop_front() {
                self.seen.remove(&front);
            }
            return true;
        }
        self.give_up();
        false
    }

    /// Nothing left to match (or nothing provable): the overlap can be dropped.
    pub(crate) fn is_done(&self) -> bool {
        !self.provable || self.ids.is_empty()
    }

    fn give_up(&mut self) {
        self.provable = false;
        self.ids = VecDeque::new();
        self.seen = HashSet::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlap(resumed_from: &str, old: &[&str]) -> Overlap {
        let mut overlap = Overlap::recording(resumed_from);
        for id in old {
            overlap.record(id);
        }
        overlap
    }

    #[test]
    fn unique_ids_prove_the_replay_in_order_and_the_first_new_event_passes() {
        let mut o = overlap("5", &["6", "7"]);
        assert!(o.is_replay("6"));
        assert!(o.is_replay("7"));
        assert!(o.is_done());
        assert!(!o.is_replay("8"));
    }

    #[test]
    fn events_without_ids_are_never_dropped() {
        // No `id:` lines: every event carries the resumed id (or none).
        let mut o = overlap("5", &["5", "5"]);
        assert!(!o.is_replay("5"));
        assert!(!o.is_replay("5"));
        let mut o = overlap("", &["", ""]);
        assert!(!o.is_replay(""));
    }

    #[test]
    fn ids_on_some_events_only_prove_nothing() {
        // 6 had an id, the next event carried it forward.
        let mut o = overlap("5", &["6", "6", "7"]);
        assert!(!o.is_replay("6"));
        assert!(!o.is_replay("6"));
        assert!(!o.is_replay("7"));
    }

    #[test]
    fn repeated_ids_prove_nothing() {
        let mut o = overlap("5", &["a", "b", "a"]);
        assert!(!o.is_replay("a"));
        assert!(!o.is_replay("b"));
    }

    #[test]
    fn a_replacement_that_does_not_replay_gets_every_event_delivered() {
        let mut o = overlap("5", &["6", "7"]);
        assert!(!o.is_replay("9"));
        // Matching ended: a later 7 is a new event as far as anyone can prove.
        assert!(!o.is_replay("7"));
    }

    #[test]
    fn the_overlap_is_capped_and_its_prefix_still_matches() {
        let ids: Vec<String> = (0..MAX_OVERLAP + 10).map(|i| format!("id-{i}")).collect();
        let mut o = Overlap::recording("start");
        for id in &ids {
            o.record(id);
        }
        for id in ids.iter().take(MAX_OVERLAP) {
            assert!(o.is_replay(id));
        }
        assert!(!o.is_replay(&ids[MAX_OVERLAP]));
    }
}
