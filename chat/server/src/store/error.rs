//! Why a storage operation failed.

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (corruption, a record or a transaction it refuses).
    #[error("database: {0}")]
    Database(String),
    /// The database failed with an I/O error (a full disk, a failing device), or is being
    /// opened again after one. A write that failed so may or may not have been kept; the store
    /// opens the database again by itself: try again.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A record could not be decoded or encoded.
    #[error("bad record: {0}")]
    Record(String),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// A redb error, told apart: an I/O error, or one that follows an I/O error, makes the
    /// store unavailable until the database is opened again.
    pub(super) fn db(e: impl Into<redb::Error>) -> Self {
        match e.into() {
            e @ (redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::Backend(_)) => {
                StoreError::Unavailable(e.to_string())
            }
            redb::Error::DatabaseClosed => StoreError::Closed,
            e => StoreError::Database(e.to_string()),
        }
    }

    /// The answer while the database is opened again.
    pub(super) fn recovering() -> Self {
        StoreError::Unavailable("opening the database again after an I/O error".into())
    }
}
