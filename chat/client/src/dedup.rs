//! Remembers the ids of recent messages, so one that arrives by two paths (peer to peer and
//! through the server) or twice on one path (replayed after a reconnect) is shown once.

use std::collections::{HashSet, VecDeque};

use uuid::Uuid;

/// A bounded set of recently seen message ids: once full, the oldest id is forgotten first.
///
/// Replays are short-lived (a message is replayed only until it is acknowledged, and a direct
/// copy races its relayed copy by at most the direct-send timeout), so a few thousand ids cover
/// every duplicate a client can realistically receive.
#[derive(Debug)]
pub(crate) struct SeenIds {
    capacity: usize,
    order: VecDeque<Uuid>,
    set: HashSet<Uuid>,
}

impl SeenIds {
    /// A set that remembers the last `capacity` ids (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        SeenIds {
            capacity,
            order: VecDeque::with_capacity(capacity.min(1024)),
            set: HashSet::with_capacity(capacity.min(1024)),
        }
    }

    /// Records `id`; true when it was not seen before (the message is new).
    pub(crate) fn insert(&mut self, id: Uuid) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        true
    }

    /// Whether `id` was seen (and not yet forgotten).
    #[cfg(test)]
    fn contains(&self, id: &Uuid) -> bool {
        self.set.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_copy_is_not_new() {
        let mut seen = SeenIds::new(8);
        let id = Uuid::new_v4();
        assert!(seen.insert(id));
        assert!(!seen.insert(id));
        assert!(seen.insert(Uuid::new_v4()));
    }

    #[test]
    fn the_oldest_ids_are_forgotten_first() {
        let mut seen = SeenIds::new(3);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            assert!(seen.insert(*id));
        }
        assert!(!seen.contains(&ids[0]));
        assert!(ids[1..].iter().all(|id| seen.contains(id)));
        assert_eq!(seen.order.len(), 3);
        assert_eq!(seen.set.len(), 3);
        // A forgotten id counts as new again: the bound is the price of bounded memory.
        assert!(seen.insert(ids[0]));
    }

    #[test]
    fn a_zero_capacity_still_catches_back_to_back_copies() {
        let mut seen = SeenIds::new(0);
        let id = Uuid::new_v4();
        assert!(seen.insert(id));
        assert!(!seen.insert(id));
    }
}
