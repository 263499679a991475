//! Counts of the messages the server handled, kept for metrics whether or not they are served
//! (an atomic add per message).

use std::sync::atomic::{AtomicU64, Ordering};

/// Messages the server handled, by what became of them.
#[derive(Debug, Default)]
pub(crate) struct MessageCounts {
    /// Relayed messages pushed at once to the recipient's open inbox (here or on another node).
    relayed: AtomicU64,
    /// Relayed messages stored for a recipient who was not reachable.
    stored: AtomicU64,
    /// Messages in mailboxes that their recipients acknowledged (and so were deleted).
    acknowledged: AtomicU64,
    /// Every relayed message committed to a mailbox (pushed or not): each waits there until it
    /// is acknowledged.
    committed: AtomicU64,
}

impl MessageCounts {
    /// A relayed message was committed; `pushed` if it reached an open inbox at once.
    pub(crate) fn relayed(&self, pushed: bool) {
        self.committed.fetch_add(1, Ordering::Relaxed);
        let path = if pushed { &self.relayed } else { &self.stored };
        path.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` waiting messages were acknowledged.
    pub(crate) fn acknowledged(&self, n: usize) {
        self.acknowledged
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Relayed messages pushed at once, and stored for later.
    pub(crate) fn by_path(&self) -> [(&'static str, u64); 2] {
        [
            ("relayed", self.relayed.load(Ordering::Relaxed)),
            ("stored", self.stored.load(Ordering::Relaxed)),
        ]
    }

    /// Messages committed and not yet acknowledged since the server started.
    pub(crate) fn waiting(&self) -> i64 {
        let committed = self.committed.load(Ordering::Relaxed);
        let acknowledged = self.acknowledged.load(Ordering::Relaxed);
        // Acknowledgements of messages stored before a restart are not matched by commits.
        i64::try_from(committed.saturating_sub(acknowledged)).unwrap_or(i64::MAX)
    }
}
