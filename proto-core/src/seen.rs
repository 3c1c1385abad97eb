//! Signed changes already applied: the memory that makes a recipient-signed delete or
//! expiry update take effect at most once per node, and so at most once per swarm.
//!
//! A signed request is accepted only while its timestamp is within the auth window of the
//! node's clock, so it needs remembering only until then. Entries are keyed by the first
//! 16 bytes of the request's Ed25519 signature (its `R`, fixed by the signer's key and the
//! message: nobody without the key makes another valid signature of other bytes with the
//! same `R`). The set is bounded: when full, the entry closest to leaving the window makes
//! room, and that is counted, because from then on a replay of it would be applied again.
//! This module never reads a clock.

use alloc::collections::{BTreeMap, BTreeSet};

use crate::types::Timestamp;

/// Default bound on remembered changes: 65,536 (about 4 MiB), two minutes of 546 signed
/// changes per second.
pub const DEFAULT_SEEN_CAPACITY: usize = 65_536;

/// Key of a signed change: the first half of its signature.
pub type SeenKey = [u8; 16];

/// A bounded set of signed changes seen, each kept until its window closes.
#[derive(Clone, Debug)]
pub struct SeenChanges {
    capacity: usize,
    until: BTreeMap<SeenKey, Timestamp>,
    by_time: BTreeSet<(Timestamp, SeenKey)>,
    evicted_early: u64,
}

impl SeenChanges {
    /// An empty set holding at most `capacity` changes (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            until: BTreeMap::new(),
            by_time: BTreeSet::new(),
            evicted_early: 0,
        }
    }

    /// The key of a change signed with `signature`.
    #[must_use]
    pub fn key(signature: &[u8; 64]) -> SeenKey {
        let mut k = [0u8; 16];
        k.copy_from_slice(&signature[..16]);
        k
    }

    /// Records `key`, to be remembered until `until`; false when it is already recorded
    /// (the change must not be applied again).
    pub fn insert(&mut self, key: SeenKey, until: Timestamp, now: Timestamp) -> bool {
        self.forget_closed(now);
        if self.until.contains_key(&key) {
            return false;
        }
        if self.until.len() >= self.capacity
            && let Some(first) = self.by_time.pop_first()
        {
            self.until.remove(&first.1);
            self.evicted_early += 1;
        }
        self.until.insert(key, until);
        self.by_time.insert((until, key));
        true
    }

    /// Changes remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Entries dropped before their window closed because the set was full.
    #[must_use]
    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }

    fn forget_closed(&mut self, now: Timestamp) {
        while let Some(&(until, key)) = self.by_time.first() {
            if until >= now {
                break;
            }
            self.by_time.pop_first();
            self.until.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp(1_000_000);

    #[test]
    fn a_change_is_accepted_once_until_its_window_closes() {
        let mut s = SeenChanges::new(8);
        let k = SeenChanges::key(&[7; 64]);
        assert!(s.insert(k, T.plus_millis(100), T));
        assert!(!s.insert(k, T.plus_millis(100), T.plus_millis(50)));
        assert!(!s.insert(k, T.plus_millis(100), T.plus_millis(100)));
        // After the window the request itself is refused as stale; the entry can go.
        assert!(s.insert(k, T.plus_millis(300), T.plus_millis(101)));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_full_set_drops_the_entry_closest_to_closing_and_counts_it() {
        let mut s = SeenChanges::new(2);
        assert!(s.insert([1; 16], T.plus_millis(30), T));
        assert!(s.insert([2; 16], T.plus_millis(10), T));
        assert!(s.insert([3; 16], T.plus_millis(20), T));
        assert_eq!((s.len(), s.evicted_early()), (2, 1));
        assert!(s.insert([2; 16], T.plus_millis(10), T), "2 was dropped");
        assert!(
            !s.insert([1; 16], T.plus_millis(30), T),
            "1 is still remembered"
        );
    }
}
