//! Why a storage operation failed.

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (I/O, corruption, a full disk).
    #[error("database: {0}")]
    Database(String),
    /// A record could not be decoded or encoded.
    #[error("bad record: {0}")]
    Record(String),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    pub(super) fn db(e: impl Into<redb::Error>) -> Self {
        StoreError::Database(e.into().to_string())
    }
}
