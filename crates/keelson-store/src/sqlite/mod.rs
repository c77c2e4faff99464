//! The embedded backend: one SQLite file in WAL mode.
//!
//! * writes go through one writer thread that commits concurrent writes in groups
//!   (`writer.rs`), each group one transaction and one fsync;
//! * reads run on a small pool of separate connections (`pool.rs`, `read.rs`), each in
//!   one read transaction, so they never wait for the writer;
//! * watches are fed in-process by the writer's event broadcast, falling back to the log
//!   for history (`watch.rs`); there is no polling;
//! * the file is checked on open and locked against a second writer (`schema.rs`).

mod metrics;
mod pool;
mod read;
mod schema;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, mpsc, oneshot};

use self::metrics::SqliteMetrics;
use self::pool::ReadPool;
use self::read::{Range, Snapshot};
use self::watch::Watch;
use self::writer::{Command, EventBatch, WriteOp, Writer, WriterLimits};
use crate::kv::{KeyValue, ListOptions, ListPage, WatchStream, list_lower_bound, prefix_end};
use crate::{Result, Store, StoreError, check_key};

/// Settings of the SQLite backend.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The database file (created with its directory if absent).
    pub path: PathBuf,
    /// Read connections kept open.
    pub read_connections: usize,
    /// Most writes committed in one transaction.
    pub max_group: usize,
    /// Revisions of history removed per compaction transaction.
    pub compaction_batch: i64,
    /// Commit groups buffered for live watchers before a slow one catches up from the log.
    pub watch_buffer: usize,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            read_connections: 4,
            max_group: 1024,
            compaction_batch: 1000,
            watch_buffer: 1024,
        }
    }
}

/// The embedded SQLite store. Dropping it stops the writer; [`SqliteStore::close`] also
/// waits for the final checkpoint and releases the file.
pub struct SqliteStore {
    path: PathBuf,
    commands: mpsc::Sender<Command>,
    /// Subscribes watchers to the writer's events; taken on close so watchers end.
    events: Mutex<Option<broadcast::Sender<EventBatch>>>,
    readers: Arc<ReadPool>,
    metrics: SqliteMetrics,
}

impl SqliteStore {
    /// Opens the store at `config.path`, creating it if the file does not exist. An
    /// existing file must be an intact keelson store.
    pub async fn open(config: SqliteConfig) -> Result<Self> {
        let path = config.path.clone();
        let opened = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || schema::open_writer(&path))
                .await
                .map_err(|e| StoreError::backend("open", e))??
        };
        let (commands_tx, commands_rx) = mpsc::channel(config.max_group.max(1) * 4);
        let (events_tx, _) = broadcast::channel(config.watch_buffer.max(1));
        let metrics = SqliteMetrics::default();
        let limits = WriterLimits {
            max_group: config.max_group.max(1),
            compaction_batch: config.compaction_batch.max(1),
        };
        let writer = Writer::new(
            opened,
            &path,
            commands_rx,
            events_tx.clone(),
            limits,
            metrics.clone(),
        )?;
        std::thread::Builder::new()
            .name("keelson-sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::backend("spawn writer thread", e))?;
        Ok(SqliteStore {
            readers: Arc::new(ReadPool::new(path.clone(), config.read_connections)),
            path,
            commands: commands_tx,
            events: Mutex::new(Some(events_tx)),
            metrics,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds the SQLite backend's own series to `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// Stops the writer after the queued writes, checkpoints the WAL into the database,
    /// and releases the file lock. Later calls fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.readers.close();
    }

    async fn write(&self, op: WriteOp) -> Result<i64> {
        let (reply, result) = oneshot::channel();
        self.commands
            .send(Command::Write { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Snapshot<'_>) -> Result<T> + Send + 'static,
    {
        self.readers
            .run(move |conn| f(&Snapshot::begin(conn)?))
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn current_revision(&self) -> Result<i64> {
        self.read(|snapshot| Ok(snapshot.revision)).await
    }

    async fn compacted_revision(&self) -> Result<i64> {
        self.read(|snapshot| Ok(snapshot.compacted)).await
    }

    async fn get(&self, key: &str, revision: Option<i64>) -> Result<Option<KeyValue>> {
        check_key(key)?;
        let key = key.to_owned();
        self.read(move |snapshot| snapshot.get(&key, revision))
            .await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage> {
        let prefix = prefix.to_owned();
        self.read(move |snapshot| {
            let lower = list_lower_bound(&prefix, options.start_after.as_deref());
            let upper = prefix_end(prefix.as_bytes());
            let range = Range {
                lower: &lower,
                upper: upper.as_deref(),
            };
            let (kvs, more) = snapshot.list(&range, options.revision, options.limit)?;
            Ok(ListPage {
                kvs,
                revision: options.revision.unwrap_or(snapshot.revision),
                more,
            })
        })
        .await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let prefix = prefix.to_owned();
        self.read(move |snapshot| {
            let upper = prefix_end(prefix.as_bytes());
            snapshot.count(&Range {
                lower: prefix.as_bytes(),
                upper: upper.as_deref(),
            })
        })
        .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<i64> {
        check_key(key)?;
        self.write(WriteOp::Create {
            key: key.to_owned(),
            value,
        })
        .await
    }

    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: i64) -> Result<i64> {
        check_key(key)?;
        self.write(WriteOp::Update {
            key: key.to_owned(),
            value,
            expected: expected_mod_revision,
        })
        .await
    }

    async fn delete(&self, key: &str, expected_mod_revision: i64) -> Result<i64> {
        check_key(key)?;
        self.write(WriteOp::Delete {
            key: key.to_owned(),
            expected: expected_mod_revision,
        })
        .await
    }

    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream> {
        // Subscribe before reading the log: see watch.rs.
        let live = match &*self.events.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(events) => events.subscribe(),
            None => return Err(StoreError::Closed),
        };
        Watch::start(
            self.readers.clone(),
            self.metrics.clone(),
            live,
            prefix,
            start_revision,
        )
        .await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let (reply, result) = oneshot::channel();
        self.commands
            .send(Command::Compact { revision, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }
}
