//! The concurrency limits: how many calls one connection, and the whole server, may have open
//! at once. A call holds its [`Slot`] until its answer has been written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The counters a connection's calls are admitted against.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    connection: Arc<AtomicUsize>,
    per_connection: usize,
    server: Arc<AtomicUsize>,
    per_server: usize,
}

impl Limits {
    /// Limits for a new connection of a server whose calls `server` counts.
    pub(crate) fn new(per_connection: usize, server: Arc<AtomicUsize>, per_server: usize) -> Self {
        Limits {
            connection: Arc::new(AtomicUsize::new(0)),
            per_connection,
            server,
            per_server,
        }
    }

    /// The connection's count of open calls (also the writer's coalescing hint).
    pub(crate) fn connection_count(&self) -> &Arc<AtomicUsize> {
        &self.connection
    }

    /// A place for one more call, if both limits allow it.
    pub(crate) fn acquire(&self) -> Option<Slot> {
        if self.connection.fetch_add(1, Ordering::AcqRel) >= self.per_connection {
            self.connection.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if self.server.fetch_add(1, Ordering::AcqRel) >= self.per_server {
            self.server.fetch_sub(1, Ordering::AcqRel);
            self.connection.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot {
            connection: self.connection.clone(),
            server: self.server.clone(),
        })
    }
}

/// One call's place in the concurrency limits; released when dropped, which is when its answer
/// has been written (or the call ended without one).
#[derive(Debug)]
pub(crate) struct Slot {
    connection: Arc<AtomicUsize>,
    server: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.server.fetch_sub(1, Ordering::AcqRel);
        self.connection.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_limits_hold_and_slots_give_their_place_back() {
        let server = Arc::new(AtomicUsize::new(0));
        let a = Limits::new(2, server.clone(), 3);
        let b = Limits::new(2, server.clone(), 3);
        let a1 = a.acquire().unwrap();
        let _a2 = a.acquire().unwrap();
        assert!(a.acquire().is_none(), "connection limit");
        let _b1 = b.acquire().unwrap();
        assert!(b.acquire().is_none(), "server limit");
        assert_eq!(server.load(Ordering::SeqCst), 3);
        assert_eq!(b.connection_count().load(Ordering::SeqCst), 1);
        drop(a1);
        let _b2 = b.acquire().expect("a place was given back");
        assert_eq!(server.load(Ordering::SeqCst), 3);
    }
}
