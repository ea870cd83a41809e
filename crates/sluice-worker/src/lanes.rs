//! HTTP/2 lanes: hyper never opens a second connection to a host when the first has reached the
//! server's `SETTINGS_MAX_CONCURRENT_STREAMS`, so a stream over it waits for ever. Targets are
//! spread over lanes instead: each lane of a host is its own HTTP client (its own connection),
//! and takes at most `defaults.streams_per_connection` targets; a target keeps its lane for its
//! life (reconnects reuse the connection) and gives it back when it stops.
//!
//! What it must NOT do: open connections itself, or cap connections (that is
//! [`crate::pool::HostLimits`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The lanes of every host.
pub struct Lanes {
    per_lane: usize,
    hosts: Arc<Mutex<HashMap<String, Vec<usize>>>>,
}

/// A target's place on a lane; given back on drop.
pub struct Lane {
    index: usize,
    host: String,
    hosts: Arc<Mutex<HashMap<String, Vec<usize>>>>,
}

impl Lane {
    /// Which lane of its host.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let mut hosts = self
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lanes) = hosts.get_mut(&self.host)
            && let Some(count) = lanes.get_mut(self.index)
        {
            *count = count.saturating_sub(1);
        }
    }
}

impl Lanes {
    /// Lanes of at most `per_lane` targets (at least 1).
    pub fn new(per_lane: u32) -> Lanes {
        Lanes {
            per_lane: usize::try_from(per_lane.max(1)).unwrap_or(usize::MAX),
            hosts: Arc::default(),
        }
    }

    /// A place for one target on `host` (any string naming the host and its transport): the
    /// first lane with room, or a new one.
    pub fn take(&self, host: &str) -> Lane {
        let mut hosts = self
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lanes = hosts.entry(host.to_owned()).or_default();
        let index = match lanes.iter().position(|n| *n < self.per_lane) {
            Some(index) => index,
            None => {
                lanes.push(0);
                lanes.len() - 1
            }
        };
        if let Some(count) = lanes.get_mut(index) {
            *count += 1;
        }
        Lane {
            index,
            host: host.to_owned(),
            hosts: self.hosts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_fill_a_lane_then_open_the_next_and_stopped_ones_make_room() {
        let lanes = Lanes::new(2);
        let a = lanes.take("h");
        let b = lanes.take("h");
        let c = lanes.take("h");
        let other = lanes.take("other");
        assert_eq!(
            (a.index(), b.index(), c.index(), other.index()),
            (0, 0, 1, 0)
        );
        drop(b);
        assert_eq!(lanes.take("h").index(), 0, "the room b left");
    }
}
