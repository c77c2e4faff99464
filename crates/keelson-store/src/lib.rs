//! keelson's state store: a revisioned key-value store with watch.
//!
//! Everything the API server keeps lives here, and its watch stream feeds every other
//! component (through the API server's watch cache). The contract is etcd-shaped:
//!
//! * one cluster-wide revision that strictly increases with every write; each key carries
//!   `create_revision`, `mod_revision` and `version`;
//! * reads at the latest revision or at a past one, prefix lists paged at one revision;
//! * create-if-absent, and update/delete guarded by the expected `mod_revision`;
//! * watches of a prefix from a revision, in revision order, with previous values;
//! * compaction that drops history older than a revision, automatic by policy.
//!
//! [`Store`] is the one trait; [`SqliteStore`] (embedded, the default) and [`EtcdStore`]
//! implement it, and both pass the same conformance suite (`testing::conformance`).
//! [`Compactor`] applies a retention policy to any store.

mod compactor;
mod error;
mod etcd;
mod kv;
mod metrics;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;
use bytes::Bytes;

pub use compactor::{CompactionPolicy, Compactor, RevisionSample, compaction_target};
pub use error::StoreError;
pub use etcd::{EtcdConfig, EtcdStore};
pub use kv::{EventKind, KeyValue, ListOptions, ListPage, WatchEvent, WatchStream, prefix_end};
pub use metrics::{Instrumented, StoreMetrics};
pub use sqlite::{SqliteConfig, SqliteStore};

/// Result of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The revisioned key-value store every backend implements.
///
/// Revisions are `i64` (as in etcd and Kubernetes' `resourceVersion`). A fresh store is at
/// revision 1; the first write gets a larger one. Keys are non-empty strings; prefixes are
/// compared bytewise.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short backend name for logs and metrics (`sqlite`, `etcd`).
    fn backend(&self) -> &'static str;

    /// The revision of the latest write.
    async fn current_revision(&self) -> Result<i64>;

    /// The compaction point: reads and watches below it fail with
    /// [`StoreError::Compacted`]. 0 when nothing has been compacted.
    async fn compacted_revision(&self) -> Result<i64>;

    /// The value of `key` at the latest revision (`None`) or at a past `revision`.
    async fn get(&self, key: &str, revision: Option<i64>) -> Result<Option<KeyValue>>;

    /// Keys under `prefix` in key order. Every page of one listing must pass the
    /// `revision` the first page returned, so all pages show one snapshot.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage>;

    /// Number of keys under `prefix` at the latest revision.
    async fn count(&self, prefix: &str) -> Result<i64>;

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it is present.
    /// Returns the revision of the write.
    async fn create(&self, key: &str, value: Bytes) -> Result<i64>;

    /// Replaces the value of `key` if its `mod_revision` is `expected_mod_revision`
    /// ([`StoreError::Conflict`] otherwise, [`StoreError::NotFound`] if absent).
    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: i64) -> Result<i64>;

    /// Deletes `key` if its `mod_revision` is `expected_mod_revision`.
    async fn delete(&self, key: &str, expected_mod_revision: i64) -> Result<i64>;

    /// Every change under `prefix` with revision `>= start_revision`, in revision order,
    /// then every later change as it happens. `start_revision == 0` means "from now".
    /// Every revision is a change, so a watch of the empty prefix sees each one, gap-free.
    /// Fails with [`StoreError::Compacted`] when `start_revision` is below the compaction
    /// point; a stream that cannot continue ends with an error item, never silently.
    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream>;

    /// Drops the history below `revision`: afterwards, reads at older revisions and
    /// watches starting below it fail with [`StoreError::Compacted`].
    async fn compact(&self, revision: i64) -> Result<()>;
}

/// Checks a key argument the same way on every backend.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("key must not be empty".into()));
    }
    Ok(())
}
