//! Behaviour only the SQLite backend has: its file, lock, WAL, group commit and batched
//! compaction. The shared contract is in `conformance_sqlite.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use keelson_store::{
    CompactionPolicy, Compactor, ListOptions, SqliteConfig, SqliteStore, Store, StoreError,
};
use prometheus_client::registry::Registry;

async fn open(path: &Path) -> Result<SqliteStore> {
    Ok(SqliteStore::open(SqliteConfig::new(path)).await?)
}

fn value(len: usize, seed: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i * 31 + seed) as u8).collect::<Vec<u8>>())
}

/// Opening must fail with an `Open` error that names `path`.
async fn refused(path: &Path, reason_contains: &str) -> Result<()> {
    match SqliteStore::open(SqliteConfig::new(path)).await {
        Err(error @ StoreError::Open { .. }) => {
            let message = error.to_string();
            ensure!(
                message.contains(&path.display().to_string()),
                "error does not name the file: {message}"
            );
            ensure!(
                message.to_lowercase().contains(reason_contains),
                "error {message:?} does not mention {reason_contains:?}"
            );
        }
        Err(other) => anyhow::bail!("expected an Open error, got {other}"),
        Ok(_) => anyhow::bail!("opening {} must fail", path.display()),
    }
    Ok(())
}

/// Opening must fail as [`refused`] says, and leave the file exactly as it was.
async fn assert_open_fails(path: &Path, reason_contains: &str) -> Result<()> {
    let before = std::fs::read(path).ok();
    refused(path, reason_contains).await?;
    ensure!(
        std::fs::read(path).ok() == before,
        "a failed open must not change the file"
    );
    Ok(())
}

/// A closed store with `keys` keys of 1 KiB and some history.
async fn populated(path: &Path, keys: usize) -> Result<()> {
    let store = open(path).await?;
    for i in 0..keys {
        let rev = store.create(&format!("/k/{i:05}"), value(1024, i)).await?;
        if i % 10 == 0 {
            store
                .update(&format!("/k/{i:05}"), value(1024, i + 1), rev)
                .await?;
        }
    }
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn reopen_keeps_data_and_revision() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let store = open(&path).await?;
    let a = store.create("/a", "1".into()).await?;
    let a2 = store.update("/a", "2".into(), a).await?;
    let b = store.create("/b", "b".into()).await?;
    store.compact(a2).await?;
    store.close().await;
    ensure!(
        matches!(store.get("/a", None).await, Err(StoreError::Closed)),
        "a closed store refuses reads"
    );
    ensure!(matches!(
        store.create("/c", "c".into()).await,
        Err(StoreError::Closed)
    ));

    let store = open(&path).await?;
    ensure!(store.current_revision().await? == b);
    ensure!(store.compacted_revision().await? == a2);
    let kv = store.get("/a", None).await?.context("/a survives")?;
    ensure!(kv.value == "2" && kv.version == 2 && kv.create_revision == a);
    ensure!(
        store.get("/a", Some(a)).await.is_err(),
        "compaction survives the restart"
    );
    let next = store.create("/c", "c".into()).await?;
    ensure!(
        next > b,
        "revisions continue after a restart ({next} after {b})"
    );
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn a_second_writer_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let first = open(&path).await?;
    first.create("/x", "x".into()).await?;
    // (The open store keeps checkpointing, so the file may change meanwhile.)
    refused(&path, "in use").await?;
    first.close().await;
    let second = open(&path).await?;
    ensure!(second.get("/x", None).await?.is_some());
    second.close().await;
    Ok(())
}

#[tokio::test]
async fn empty_file_is_not_a_new_store() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"")?;
    assert_open_fails(&path, "empty").await
}

#[tokio::test]
async fn garbage_file_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"this is not a database at all, just some text")?;
    assert_open_fails(&path, "not a sqlite database").await
}

#[tokio::test]
async fn truncated_database_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    populated(&path, 2000).await?;
    let len = std::fs::metadata(&path)?.len();
    ensure!(len > 1_000_000, "populated store is only {len} bytes");
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.set_len(len * 6 / 10)?;
    drop(file);
    assert_open_fails(&path, "corrupt").await?;
    // Cut inside the header page too.
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.set_len(10)?;
    drop(file);
    assert_open_fails(&path, "not a sqlite database").await
}

#[tokio::test]
async fn corrupted_pages_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    populated(&path, 2000).await?;
    let mut bytes = std::fs::read(&path)?;
    let middle = bytes.len() / 2;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in &mut bytes[middle..middle + 64 * 1024] {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::write(&path, &bytes)?;
    assert_open_fails(&path, "corrupt").await
}

#[tokio::test]
async fn foreign_sqlite_database_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY, data BLOB);")?;
    drop(conn);
    assert_open_fails(&path, "not a keelson store").await
}

#[tokio::test]
async fn a_wal_without_its_database_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    std::fs::write(dir.path().join("state.db-wal"), b"leftover")?;
    match SqliteStore::open(SqliteConfig::new(&path)).await {
        Err(StoreError::Open {
            path: named,
            reason,
        }) => {
            ensure!(named == path && reason.contains("missing"), "{reason}");
        }
        other => anyhow::bail!("expected an Open error, got {:?}", other.err()),
    }
    ensure!(
        !path.exists(),
        "no new database is created next to an orphaned WAL"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_writes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open(&dir.path().join("state.db")).await?);
    let mut registry = Registry::default();
    store.register_metrics(&mut registry);
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    store.create(&format!("/g/{w}/{i}"), value(1024, i)).await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    let metric = |name: &str| -> Result<f64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing from:\n{text}"))?;
        Ok(line.rsplit(' ').next().unwrap_or("").parse()?)
    };
    let writes = metric("keelson_sqlite_commit_group_size_sum")?;
    let commits = metric("keelson_sqlite_commit_group_size_count")?;
    ensure!(writes == 640.0, "{writes} writes recorded");
    ensure!(
        commits < writes / 2.0,
        "64 concurrent writers should share commits: {writes} writes in {commits} commits"
    );
    Ok(())
}

/// Rows left in the history table, read straight from the file.
fn history_rows(path: &Path) -> Result<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_runs_in_batches_between_writes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let mut config = SqliteConfig::new(&path);
    config.compaction_batch = 200;
    let store = Arc::new(SqliteStore::open(config).await?);
    // 100 keys updated 100 times: 10,000 rows of history, 100 of them live.
    let mut tasks = Vec::new();
    for k in 0..100 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("/h/{k}");
            let mut rev = store.create(&key, value(256, 0)).await?;
            for i in 1..100 {
                rev = store.update(&key, value(256, i), rev).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    ensure!(history_rows(&path)? == 10_000);
    let floor = store.current_revision().await?;

    let compaction = tokio::spawn({
        let store = store.clone();
        async move { store.compact(floor).await }
    });
    // Writes keep completing while the 50 batches run.
    let mut during = 0;
    while !compaction.is_finished() {
        store
            .create(&format!("/during/{during}"), value(64, during))
            .await?;
        during += 1;
    }
    compaction.await??;
    ensure!(
        during >= 3,
        "only {during} writes completed during compaction: it blocked writers"
    );

    // Per key, only the newest row below the floor remains; the key written at the floor
    // itself also keeps that predecessor (its previous value); then what came after.
    let rows = history_rows(&path)?;
    ensure!(rows == 101 + during as i64, "{rows} history rows left");
    for k in 0..100 {
        let kv = store
            .get(&format!("/h/{k}"), None)
            .await?
            .context("live key kept")?;
        ensure!(kv.version == 100 && kv.value == value(256, 99));
    }
    ensure!(store.count("/during/").await? == during as i64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_stays_bounded_under_continuous_writes_and_reads() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let wal = dir.path().join("state.db-wal");
    let store = Arc::new(open(&path).await?);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readers that never pause, the way kine's WAL stopped being checkpointed.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store
                        .list(
                            "/wal/",
                            ListOptions {
                                limit: Some(50),
                                ..ListOptions::default()
                            },
                        )
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    let mut largest_wal = 0;
    let mut written = 0u64;
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..400 {
                    store
                        .create(&format!("/wal/{w}/{i}"), value(8192, i))
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for writer in writers {
        while !writer.is_finished() {
            largest_wal = largest_wal.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.await??;
        written += 400 * 8192;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await??;
    }
    // 52 MB of values (well over 100 MB of WAL frames) went through; restarts keep the
    // WAL near its 16 MiB threshold.
    ensure!(written > 50_000_000);
    ensure!(
        largest_wal < 40 * 1024 * 1024,
        "WAL grew to {largest_wal} bytes"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactor_applies_its_policy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(open(&dir.path().join("state.db")).await?);
    let mut rev = store.create("/c", "0".into()).await?;
    for i in 1..200 {
        rev = store.update("/c", i.to_string().into(), rev).await?;
    }
    // History younger than an hour is kept, however many revisions it has.
    let patient = Compactor::spawn(
        store.clone(),
        CompactionPolicy {
            retain_revisions: 10,
            retain_for: Duration::from_secs(3600),
            interval: Duration::from_millis(10),
        },
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(
        store.compacted_revision().await? == 0,
        "compacted history younger than retain_for"
    );
    drop(patient);

    let _eager = Compactor::spawn(
        store.clone(),
        CompactionPolicy {
            retain_revisions: 10,
            retain_for: Duration::ZERO,
            interval: Duration::from_millis(10),
        },
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let compacted = store.compacted_revision().await?;
        if compacted == rev - 10 {
            break;
        }
        ensure!(
            compacted < rev - 10,
            "compacted past the retained revisions: {compacted}"
        );
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no compaction within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(store.get("/c", None).await?.context("latest kept")?.value == "199");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_overtaken_by_compaction_is_told() -> Result<()> {
    use futures::StreamExt;
    let dir = tempfile::tempdir()?;
    let mut config = SqliteConfig::new(dir.path().join("state.db"));
    config.watch_buffer = 4;
    let store = SqliteStore::open(config).await?;
    let mut watch = store.watch("/lag/", 0).await?;
    // The watcher reads nothing while its events leave the live buffer and then the log.
    let mut rev = store.create("/lag/k", "0".into()).await?;
    for i in 1..50 {
        rev = store.update("/lag/k", i.to_string().into(), rev).await?;
    }
    store.compact(rev).await?;
    let mut delivered = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await? {
            Some(Ok(_)) => delivered += 1,
            Some(Err(StoreError::Compacted { compacted, .. })) => {
                ensure!(compacted == rev);
                break;
            }
            Some(Err(other)) => anyhow::bail!("expected Compacted, got {other}"),
            None => anyhow::bail!("the watch ended without saying why after {delivered} events"),
        }
    }
    ensure!(
        delivered < 50,
        "all {delivered} events arrived: the watcher never fell behind"
    );
    ensure!(watch.next().await.is_none(), "nothing follows the error");
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_end_when_the_store_closes() -> Result<()> {
    use futures::StreamExt;
    let dir = tempfile::tempdir()?;
    let store = open(&dir.path().join("state.db")).await?;
    let mut watch = store.watch("/", 0).await?;
    store.close().await;
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await? {
        Some(Err(StoreError::Closed)) => {}
        other => anyhow::bail!("expected Closed, got {other:?}"),
    }
    ensure!(matches!(store.watch("/", 0).await, Err(StoreError::Closed)));
    Ok(())
}
