//! The store conformance suite on the embedded SQLite backend.
//!
//! The store is opened with a tiny live-event buffer so that the watch tests also drive
//! the catch-up-from-the-log path that slow watchers take.

use std::sync::Arc;

use keelson_store::{SqliteConfig, SqliteStore, Store};
use tempfile::TempDir;

async fn sqlite() -> (TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = SqliteConfig::new(dir.path().join("state.db"));
    config.watch_buffer = 4;
    let store = SqliteStore::open(config).await.expect("open sqlite store");
    (dir, Arc::new(store))
}

keelson_store::conformance_suite!(sqlite);
