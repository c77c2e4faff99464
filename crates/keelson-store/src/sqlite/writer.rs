//! The single writer: group commit, revision assignment, event publication, compaction.
//!
//! One thread owns the only write connection. It takes every queued command at once,
//! applies the writes in one transaction (each write gets its own revision), commits with
//! one fsync, then publishes the group's events and answers the callers. Compaction moves
//! the readable floor (`compact_revision`) in one small transaction, then deletes the
//! dead history in batches of revisions, each its own transaction between write groups,
//! so writers never wait behind more than one batch.
//!
//! Checkpoints run on a second thread with its own connection (PASSIVE: they never block
//! the writer or readers) and copy the WAL back into the database as it grows. A PASSIVE
//! checkpoint cannot *restart* the WAL while writes never pause and readers overlap (the
//! WAL then grows without bound: SQLite's "checkpoint starvation", kine's failure). So
//! once the WAL passes `WAL_RESTART_FRAMES`, the writer itself, between two groups, runs a
//! RESTART checkpoint: it waits briefly for readers on old snapshots to finish, after
//! which the next commit starts the WAL from the beginning. The background copying keeps
//! that pause short.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::metrics::SqliteMetrics;
use super::schema;
use crate::StoreError;
use crate::kv::{EventKind, KeyValue, WatchEvent};

/// WAL size (in 4 KiB frames) past which the writer restarts the WAL: 16 MiB.
const WAL_RESTART_FRAMES: i64 = 4096;

/// How long the writer waits for readers when it restarts the WAL; if they take longer
/// it tries again after the next group.
const WAL_RESTART_WAIT: Duration = Duration::from_millis(20);

/// The events of one commit group, in revision order.
pub(super) type EventBatch = Arc<[WatchEvent]>;

pub(super) enum WriteOp {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: i64,
    },
    Delete {
        key: String,
        expected: i64,
    },
}

pub(super) enum Command {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<i64, StoreError>>,
    },
    Compact {
        revision: i64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Limits the writer works within.
#[derive(Clone, Copy)]
pub(super) struct WriterLimits {
    pub max_group: usize,
    pub compaction_batch: i64,
}

pub(super) struct Writer {
    conn: Connection,
    _lock: File,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<EventBatch>,
    limits: WriterLimits,
    metrics: SqliteMetrics,
    revision: i64,
    compacted: i64,
    compact_done: i64,
    compact_waiters: Vec<(i64, oneshot::Sender<Result<(), StoreError>>)>,
    compaction_failed: bool,
    checkpoint_signal: Option<std_mpsc::SyncSender<()>>,
    checkpointer: Option<JoinHandle<()>>,
    /// Frames in the WAL as last seen by a checkpoint.
    wal_frames: Arc<AtomicI64>,
}

impl Writer {
    pub fn new(
        opened: schema::Opened,
        path: &std::path::Path,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<EventBatch>,
        limits: WriterLimits,
        metrics: SqliteMetrics,
    ) -> Result<Self, StoreError> {
        let (signal, wake) = std_mpsc::sync_channel(1);
        let checkpoint_conn = schema::open_checkpointer(path).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            reason: format!("cannot open checkpoint connection: {e}"),
        })?;
        let wal_frames = Arc::new(AtomicI64::new(0));
        let frames = wal_frames.clone();
        let checkpointer = std::thread::Builder::new()
            .name("keelson-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, wake, frames))
            .map_err(|e| StoreError::backend("spawn checkpoint thread", e))?;
        metrics.compacted.set(opened.compacted);
        Ok(Writer {
            conn: opened.conn,
            _lock: opened.lock,
            commands,
            events,
            limits,
            metrics,
            revision: opened.revision,
            compacted: opened.compacted,
            compact_done: opened.compact_done,
            compact_waiters: Vec::new(),
            compaction_failed: false,
            checkpoint_signal: Some(signal),
            checkpointer: Some(checkpointer),
            wal_frames,
        })
    }

    /// Serves commands until shutdown or until every sender is gone.
    pub fn run(mut self) {
        let mut shutdown = None;
        loop {
            let first = if self.compaction_pending() {
                match self.commands.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match self.commands.blocking_recv() {
                    Some(command) => Some(command),
                    None => break,
                }
            };
            if let Some(first) = first {
                let mut group = vec![first];
                while group.len() < self.limits.max_group {
                    match self.commands.try_recv() {
                        Ok(command) => group.push(command),
                        Err(_) => break,
                    }
                }
                if let Some(reply) = self.handle(group) {
                    shutdown = Some(reply);
                    break;
                }
            }
            if self.compaction_pending() {
                self.compact_step();
            }
            if self.wal_frames.load(Ordering::Relaxed) >= WAL_RESTART_FRAMES {
                self.restart_wal();
            }
        }
        self.close();
        drop(self);
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Handles one group of commands; returns the shutdown reply if one was asked for.
    fn handle(&mut self, group: Vec<Command>) -> Option<oneshot::Sender<()>> {
        let mut writes = Vec::with_capacity(group.len());
        let mut shutdown = None;
        for command in group {
            match command {
                Command::Write { op, reply } => writes.push((op, reply)),
                Command::Compact { revision, reply } => self.start_compaction(revision, reply),
                Command::Shutdown { reply } => shutdown = Some(reply),
            }
        }
        if !writes.is_empty() {
            self.commit_group(writes);
        }
        shutdown
    }

    fn commit_group(&mut self, writes: Vec<(WriteOp, oneshot::Sender<Result<i64, StoreError>>)>) {
        let started = Instant::now();
        match self.apply_group(&writes) {
            Ok((results, events)) => {
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.group_size.observe(writes.len() as f64);
                if !events.is_empty() {
                    self.revision = events[events.len() - 1].revision();
                    // No receivers is fine: nobody is watching.
                    let _ = self.events.send(events.into());
                    if let Some(signal) = &self.checkpoint_signal {
                        let _ = signal.try_send(());
                    }
                }
                for ((_, reply), result) in writes.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::error!(%error, "sqlite commit failed");
                let message = error.to_string();
                for (_, reply) in writes {
                    let _ = reply.send(Err(StoreError::backend(
                        "commit",
                        std::io::Error::other(message.clone()),
                    )));
                }
            }
        }
    }

    /// Applies the writes in one transaction; on success returns each write's outcome
    /// and the events, in revision order.
    #[allow(clippy::type_complexity)]
    fn apply_group(
        &mut self,
        writes: &[(WriteOp, oneshot::Sender<Result<i64, StoreError>>)],
    ) -> rusqlite::Result<(Vec<Result<i64, StoreError>>, Vec<WatchEvent>)> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut revision = self.revision;
        let mut results = Vec::with_capacity(writes.len());
        let mut events = Vec::with_capacity(writes.len());
        for (op, _) in writes {
            match apply(&tx, op, revision + 1)? {
                Ok(event) => {
                    revision += 1;
                    results.push(Ok(revision));
                    events.push(event);
                }
                Err(error) => results.push(Err(error)),
            }
        }
        if revision != self.revision {
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE name = 'revision'",
                [revision],
            )?;
        }
        tx.commit()?;
        Ok((results, events))
    }

    fn start_compaction(&mut self, revision: i64, reply: oneshot::Sender<Result<(), StoreError>>) {
        if revision <= self.compacted {
            let _ = reply.send(Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compacted,
            }));
            return;
        }
        if revision > self.revision {
            let _ = reply.send(Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            }));
            return;
        }
        let floor = self.conn.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compact_revision'",
            [revision],
        );
        match floor {
            Ok(_) => {
                self.compacted = revision;
                self.compaction_failed = false;
                self.metrics.compacted.set(revision);
                self.compact_waiters.push((revision, reply));
            }
            Err(error) => {
                let _ = reply.send(Err(StoreError::backend("compact", error)));
            }
        }
    }

    fn compaction_pending(&self) -> bool {
        !self.compaction_failed && self.compact_done < self.compacted
    }

    /// Deletes the dead history in one batch of revisions.
    fn compact_step(&mut self) {
        let from = self.compact_done;
        let to = (from + self.limits.compaction_batch).min(self.compacted);
        let started = Instant::now();
        match compact_batch(&mut self.conn, from, to, self.compacted) {
            Ok(deleted) => {
                self.metrics
                    .compaction_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.compacted_rows.inc_by(deleted as u64);
                self.compact_done = to;
                let done = self.compact_done;
                let (finished, waiting): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut self.compact_waiters)
                        .into_iter()
                        .partition(|(target, _)| *target <= done);
                self.compact_waiters = waiting;
                for (_, reply) in finished {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(%error, from, to, "sqlite compaction batch failed");
                for (_, reply) in self.compact_waiters.drain(..) {
                    let _ = reply.send(Err(StoreError::backend(
                        "compact",
                        std::io::Error::other(error.to_string()),
                    )));
                }
                // Stop until the next compaction request (or the next start) retries.
                self.compaction_failed = true;
            }
        }
    }

    /// Checkpoints everything and makes the next commit restart the WAL.
    fn restart_wal(&mut self) {
        let _ = self.conn.busy_timeout(WAL_RESTART_WAIT);
        let result = checkpoint(&self.conn, "RESTART");
        let _ = self.conn.busy_timeout(schema::BUSY_TIMEOUT);
        match result {
            // Not busy: every frame is in the database and no reader holds the WAL.
            Ok((0, _, _)) => self.wal_frames.store(0, Ordering::Relaxed),
            Ok((_, frames, _)) => self.wal_frames.store(frames, Ordering::Relaxed),
            Err(error) => tracing::warn!(%error, "wal restart checkpoint failed"),
        }
    }

    fn close(&mut self) {
        for (_, reply) in self.compact_waiters.drain(..) {
            let _ = reply.send(Err(StoreError::Closed));
        }
        self.checkpoint_signal = None;
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
        if let Err(error) = checkpoint(&self.conn, "TRUNCATE") {
            tracing::warn!(%error, "final checkpoint failed");
        }
    }
}

/// Applies one write at `revision`: `Ok(Err(..))` is a refused write (nothing written).
fn apply(
    tx: &Connection,
    op: &WriteOp,
    revision: i64,
) -> rusqlite::Result<Result<WatchEvent, StoreError>> {
    let insert = "INSERT INTO log (revision, name, deleted, create_revision, prev_revision,
                                   version, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    match op {
        WriteOp::Create { key, value } => {
            let exists: Option<i64> = tx
                .prepare_cached("SELECT revision FROM current WHERE name = ?1")?
                .query_row([key.as_bytes()], |r| r.get(0))
                .optional()?;
            if exists.is_some() {
                return Ok(Err(StoreError::AlreadyExists { key: key.clone() }));
            }
            tx.prepare_cached(insert)?.execute(params![
                revision,
                key.as_bytes(),
                false,
                revision,
                0,
                1,
                value.as_ref()
            ])?;
            tx.prepare_cached("INSERT INTO current (name, revision) VALUES (?1, ?2)")?
                .execute(params![key.as_bytes(), revision])?;
            Ok(Ok(WatchEvent {
                kind: EventKind::Create,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: revision,
                    mod_revision: revision,
                    version: 1,
                },
                prev: None,
            }))
        }
        WriteOp::Update {
            key,
            value,
            expected,
        } => {
            let prev = match guarded(tx, key, *expected)? {
                Ok(prev) => prev,
                Err(refused) => return Ok(Err(refused)),
            };
            tx.prepare_cached(insert)?.execute(params![
                revision,
                key.as_bytes(),
                false,
                prev.create_revision,
                prev.mod_revision,
                prev.version + 1,
                value.as_ref()
            ])?;
            tx.prepare_cached("UPDATE current SET revision = ?2 WHERE name = ?1")?
                .execute(params![key.as_bytes(), revision])?;
            Ok(Ok(WatchEvent {
                kind: EventKind::Modify,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                    version: prev.version + 1,
                },
                prev: Some(prev),
            }))
        }
        WriteOp::Delete { key, expected } => {
            let prev = match guarded(tx, key, *expected)? {
                Ok(prev) => prev,
                Err(refused) => return Ok(Err(refused)),
            };
            tx.prepare_cached(insert)?.execute(params![
                revision,
                key.as_bytes(),
                true,
                prev.create_revision,
                prev.mod_revision,
                0,
                &[] as &[u8]
            ])?;
            tx.prepare_cached("DELETE FROM current WHERE name = ?1")?
                .execute(params![key.as_bytes()])?;
            Ok(Ok(WatchEvent::deleted(prev, revision)))
        }
    }
}

/// The key's current value if its `mod_revision` is `expected`.
fn guarded(
    tx: &Connection,
    key: &str,
    expected: i64,
) -> rusqlite::Result<Result<KeyValue, StoreError>> {
    let current = tx
        .prepare_cached(
            "SELECT l.revision, l.create_revision, l.version, l.value
             FROM current c JOIN log l ON l.revision = c.revision WHERE c.name = ?1",
        )?
        .query_row([key.as_bytes()], |r| {
            let value: Vec<u8> = r.get(3)?;
            Ok(KeyValue {
                key: key.to_owned(),
                value: Bytes::from(value),
                mod_revision: r.get(0)?,
                create_revision: r.get(1)?,
                version: r.get(2)?,
            })
        })
        .optional()?;
    Ok(match current {
        None => Err(StoreError::NotFound {
            key: key.to_owned(),
        }),
        Some(kv) if kv.mod_revision != expected => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            current: kv.mod_revision,
        }),
        Some(kv) => Ok(kv),
    })
}

/// Removes the history no read at or above `floor` can need, for the batch of revisions
/// `[from, to)` (`to <= floor`):
///
/// 1. the previous row of each row in the batch: superseded below the floor. Following the
///    chain also reaches rows an earlier compaction (with a lower floor) had to keep;
/// 2. tombstones in the batch: their previous rows go by rule 1, and nothing refers to a
///    tombstone (a create after a delete starts a new chain).
///
/// The newest row of each key below the floor survives unless it is a tombstone: it is
/// what reads at the floor see, and the previous value of the key's next change.
fn compact_batch(conn: &mut Connection, from: i64, to: i64, floor: i64) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let superseded = tx
        .prepare_cached(
            "DELETE FROM log WHERE revision IN (
                 SELECT prev_revision FROM log
                 WHERE revision >= ?1 AND revision < ?2 AND revision < ?3 AND prev_revision > 0)",
        )?
        .execute(params![from, to, floor])?;
    let tombstones = tx
        .prepare_cached(
            "DELETE FROM log
             WHERE revision >= ?1 AND revision < ?2 AND revision < ?3 AND deleted = 1",
        )?
        .execute(params![from, to, floor])?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'compact_done'",
        [to],
    )?;
    tx.commit()?;
    Ok(superseded + tombstones)
}

/// Runs a checkpoint; returns SQLite's (busy, frames in WAL, frames checkpointed).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// Copies WAL frames back into the database after the writer signals new commits (at most
/// once per `PAUSE`), and once a second regardless; publishes the WAL's size.
fn checkpoint_loop(conn: Connection, wake: std_mpsc::Receiver<()>, frames: Arc<AtomicI64>) {
    // Short enough that little is left to copy when the writer restarts the WAL (the
    // restart then takes well under a millisecond; at 100 ms it took up to 10 ms).
    const PAUSE: Duration = Duration::from_millis(10);
    loop {
        match wake.recv_timeout(Duration::from_secs(1)) {
            Ok(()) | Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
        match checkpoint(&conn, "PASSIVE") {
            Ok((_, log, _)) => frames.store(log, Ordering::Relaxed),
            Err(error) => tracing::warn!(%error, "wal checkpoint failed"),
        }
        std::thread::sleep(PAUSE);
    }
}
