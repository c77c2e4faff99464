//! The SQLite file: schema, opening with checks, the process lock, connection settings.
//!
//! Layout (kine-inspired, with the latest state kept separately so reads at the latest
//! revision never scan history):
//!
//! * `log`: one row per write, keyed by its revision; deletes are tombstones. Each row
//!   names the key's previous row (`prev_revision`, 0 for a create), so history is a chain
//!   per key. Values live only here.
//! * `current`: key → revision of its latest `log` row, for live keys only.
//!
//! There is deliberately no index on `log(name)`: it would be written on every commit (a
//! random leaf page per key touched, as many pages again as the rest of the commit) to
//! serve only rare reads at past revisions. Those follow the chain instead: a key's value
//! at revision R is the previous row of its first change after R (see `read.rs`).
//! * `meta`: `format`, `revision` (latest write), `compact_revision` (reads below fail),
//!   `compact_done` (history below it has been physically removed).
//!
//! Opening never creates a store over something that is already there: an existing file
//! must be a healthy keelson database, otherwise the error names the file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::StoreError;

/// Version of the schema below; bumped with migrations.
const FORMAT: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE log (
    revision        INTEGER PRIMARY KEY,
    name            BLOB    NOT NULL,
    deleted         INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision   INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    value           BLOB    NOT NULL
);
CREATE TABLE current (
    name     BLOB PRIMARY KEY,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (name, value) VALUES
    ('format', 1), ('revision', 1), ('compact_revision', 0), ('compact_done', 0);
";

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// WAL files are truncated back to this size after a checkpoint resets them.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// What the writer learns when it opens the file.
pub(super) struct Opened {
    pub conn: Connection,
    pub lock: File,
    pub revision: i64,
    pub compacted: i64,
    pub compact_done: i64,
}

fn open_error(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Names SQLite's corruption codes plainly; other errors keep SQLite's message.
fn sqlite_open_error(path: &Path, error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match error.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => {
            open_error(path, format!("database is corrupt or truncated: {error}"))
        }
        _ => open_error(path, error.to_string()),
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Takes the exclusive lock that keeps a second process (or a second store in this
/// process) from writing the same file.
fn lock(path: &Path) -> Result<File, StoreError> {
    let lock_path = sibling(path, ".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| open_error(&lock_path, format!("cannot open lock file: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(open_error(
            path,
            format!(
                "in use by another keelson process (lock {} is held)",
                lock_path.display()
            ),
        )),
        Err(TryLockError::Error(e)) => Err(open_error(&lock_path, format!("cannot lock: {e}"))),
    }
}

/// Rejects files that cannot be a database before SQLite sees them: SQLite would happily
/// treat an empty file as a new empty database.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut file = File::open(path).map_err(|e| open_error(path, e.to_string()))?;
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(open_error(path, e.to_string())),
        }
    }
    if read == 0 {
        return Err(open_error(path, "the database file is empty (truncated?)"));
    }
    if read < header.len() || &header != SQLITE_HEADER {
        return Err(open_error(
            path,
            "not a SQLite database (corrupt or truncated header)",
        ));
    }
    Ok(())
}

/// How long a connection waits for a lock before failing with "database is locked".
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", false)?;
    Ok(())
}

/// Opens (creating if absent) the store at `path` for the single writer.
pub(super) fn open_writer(path: &Path) -> Result<Opened, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| open_error(dir, format!("cannot create directory: {e}")))?;
    }
    let lock = lock(path)?;
    let exists = path
        .try_exists()
        .map_err(|e| open_error(path, e.to_string()))?;
    if exists {
        check_header(path)?;
    } else if sibling(path, "-wal").exists() {
        return Err(open_error(
            path,
            "the database file is missing but its -wal file exists",
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | if exists {
            OpenFlags::empty()
        } else {
            OpenFlags::SQLITE_OPEN_CREATE
        };
    let fail = |e: rusqlite::Error| sqlite_open_error(path, e);
    let mut conn = Connection::open_with_flags(path, flags).map_err(fail)?;
    configure(&conn).map_err(fail)?;
    // Check an existing file before changing anything in it.
    if exists {
        verify(&conn).map_err(|reason| open_error(path, reason))?;
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(open_error(
            path,
            format!("cannot switch to WAL mode (got {mode})"),
        ));
    }
    // Every commit is fsynced before it is acknowledged.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(fail)?;
    // Checkpoints never run inside a commit: see writer.rs.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(fail)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(fail)?;
    if !exists {
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(SCHEMA).map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    let meta = |name: &str| -> Result<i64, StoreError> {
        conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .map_err(|e| open_error(path, format!("reading meta {name}: {e}")))
    };
    let revision = meta("revision")?;
    let compacted = meta("compact_revision")?;
    let compact_done = meta("compact_done")?;
    Ok(Opened {
        conn,
        lock,
        revision,
        compacted,
        compact_done,
    })
}

/// Checks an existing file is an intact keelson store of a format we read.
fn verify(conn: &Connection) -> Result<(), String> {
    let corrupt = |e: rusqlite::Error| format!("database is corrupt or truncated: {e}");
    let mut check = conn.prepare("PRAGMA quick_check").map_err(corrupt)?;
    let problems: Vec<String> = check
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(corrupt)?;
    if problems.len() != 1 || problems[0] != "ok" {
        let shown: Vec<_> = problems.into_iter().take(3).collect();
        return Err(format!(
            "database is corrupt or truncated: {}",
            shown.join("; ")
        ));
    }
    let has_meta: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    if has_meta.is_none() {
        return Err("a SQLite database, but not a keelson store (no meta table)".into());
    }
    let format: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE name = 'format'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| e.to_string())?;
    match format {
        Some(FORMAT) => Ok(()),
        Some(other) => Err(format!(
            "store format {other} is not supported (expected {FORMAT})"
        )),
        None => Err("not a keelson store (no format record)".into()),
    }
}

/// Opens a connection for readers (never writes, never creates).
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Opens the connection the checkpointer uses.
pub(super) fn open_checkpointer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    Ok(conn)
}
