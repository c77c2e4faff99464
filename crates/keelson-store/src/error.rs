//! The store's error type, shared by every backend.

use std::path::PathBuf;

/// Boxed cause of a backend failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a store operation can fail with. Backends map their own errors onto these
/// variants so callers (the API server) can turn them into Kubernetes `Status` codes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist (update, delete).
    #[error("key {key:?} not found")]
    NotFound { key: String },

    /// The key already exists (create).
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },

    /// The key's `mod_revision` is not the one the caller expected.
    #[error("conflict on key {key:?}: expected mod_revision {expected}, current is {current}")]
    Conflict {
        key: String,
        expected: i64,
        current: i64,
    },

    /// The requested revision is older than the compaction point.
    #[error("revision {requested} has been compacted (compaction point {compacted})")]
    Compacted { requested: i64, compacted: i64 },

    /// The requested revision has not happened yet.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: i64, current: i64 },

    /// The caller passed something the contract does not allow.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The store's files could not be opened (corrupt, truncated, not a keelson store,
    /// in use by another process).
    #[error("cannot open store {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },

    /// The backend failed (IO, SQL, network, etcd).
    #[error("store backend failure: {context}: {source}")]
    Backend {
        context: String,
        #[source]
        source: BoxError,
    },

    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn backend(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            context: context.into(),
            source: source.into(),
        }
    }
}
