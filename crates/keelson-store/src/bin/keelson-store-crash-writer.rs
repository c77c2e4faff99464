//! Writes to a SQLite store as fast as it can and reports every acknowledged write on
//! stdout, for the crash test (`tests/crash.rs`), which kills it with SIGKILL at random
//! moments and then checks that every reported write survived.
//!
//! Usage: `keelson-store-crash-writer DB_PATH EPOCH`. Lines printed:
//! * `create KEY REVISION` — `KEY` was created with the value `value_of(KEY)`;
//! * `update KEY N REVISION` — counter `KEY` was set to `N`.

use std::io::Write;
use std::sync::Arc;

use keelson_store::{SqliteConfig, SqliteStore, Store, StoreError};

const WRITERS: usize = 8;

/// The value stored under a created key: derived from the key, of varying length.
fn value_of(key: &str) -> Vec<u8> {
    let len = 16 + key.bytes().map(usize::from).sum::<usize>() % 2000;
    key.bytes().cycle().take(len).collect()
}

fn report(line: String) {
    let mut out = std::io::stdout().lock();
    // The parent reads line by line; a line is only complete once flushed.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

async fn writer(store: Arc<SqliteStore>, epoch: String, id: usize) -> Result<(), StoreError> {
    let counter = format!("/crash/counter/{id}");
    let (mut n, mut revision) = match store.get(&counter, None).await? {
        Some(kv) => (
            String::from_utf8_lossy(&kv.value)
                .parse::<u64>()
                .unwrap_or(0),
            kv.mod_revision,
        ),
        None => (0, store.create(&counter, "0".into()).await?),
    };
    for i in 0u64.. {
        let key = format!("/crash/keys/{epoch}/{id}/{i}");
        let created = store.create(&key, value_of(&key).into()).await?;
        report(format!("create {key} {created}"));
        n += 1;
        revision = store
            .update(&counter, n.to_string().into(), revision)
            .await?;
        report(format!("update {counter} {n} {revision}"));
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(epoch)) = (args.next(), args.next()) else {
        eprintln!("usage: keelson-store-crash-writer DB_PATH EPOCH");
        std::process::exit(2);
    };
    let store = match SqliteStore::open(SqliteConfig::new(path)).await {
        Ok(store) => Arc::new(store),
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(1);
        }
    };
    let tasks: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(store.clone(), epoch.clone(), id)))
        .collect();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("write failed: {error}");
                std::process::exit(1);
            }
            Err(error) => {
                eprintln!("writer task failed: {error}");
                std::process::exit(1);
            }
        }
    }
}
