//! Crash safety of the SQLite store: a writer process is killed with SIGKILL at random
//! moments, several times over the same database. After each kill the store must reopen
//! with every acknowledged write present with its exact value and revision, counters at
//! least at their last acknowledged value, and revisions that never go backwards.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use keelson_store::{ListOptions, SqliteConfig, SqliteStore, Store};
use rand::Rng;

/// Same derivation as the writer binary.
fn value_of(key: &str) -> Vec<u8> {
    let len = 16 + key.bytes().map(usize::from).sum::<usize>() % 2000;
    key.bytes().cycle().take(len).collect()
}

#[derive(Default)]
struct Acked {
    creates: BTreeMap<String, i64>,
    counters: BTreeMap<String, (u64, i64)>,
    max_revision: i64,
}

impl Acked {
    fn record(&mut self, line: &str) -> Result<()> {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["create", key, rev] => {
                let rev: i64 = rev.parse()?;
                self.creates.insert(key.to_string(), rev);
                self.max_revision = self.max_revision.max(rev);
            }
            ["update", key, n, rev] => {
                let (n, rev): (u64, i64) = (n.parse()?, rev.parse()?);
                let entry = self.counters.entry(key.to_string()).or_default();
                if n > entry.0 {
                    *entry = (n, rev);
                }
                self.max_revision = self.max_revision.max(rev);
            }
            _ => bail!("unexpected line from writer: {line:?}"),
        }
        Ok(())
    }
}

/// Runs the writer for `run_for`, kills it, and returns the lines it completed.
fn run_and_kill(db: &std::path::Path, epoch: usize, run_for: Duration) -> Result<Vec<String>> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keelson-store-crash-writer"))
        .arg(db)
        .arg(epoch.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn writer")?;
    let stdout = child.stdout.take().context("writer stdout")?;
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        // Only newline-terminated lines are complete acknowledgements.
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if line.ends_with('\n') {
                lines.push(line.trim_end().to_string());
            }
            line.clear();
        }
        lines
    });
    std::thread::sleep(run_for);
    child.kill().context("SIGKILL writer")?;
    let status = child.wait()?;
    ensure!(
        status.code().is_none(),
        "writer exited on its own ({status}) instead of being killed"
    );
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))
}

async fn verify(db: &std::path::Path, acked: &Acked) -> Result<i64> {
    let store = SqliteStore::open(SqliteConfig::new(db))
        .await
        .context("reopen after crash")?;
    for (key, rev) in &acked.creates {
        let kv = store
            .get(key, None)
            .await?
            .with_context(|| format!("acknowledged create of {key} at {rev} is lost"))?;
        ensure!(
            kv.mod_revision == *rev,
            "{key}: revision {} != acknowledged {rev}",
            kv.mod_revision
        );
        ensure!(
            kv.value == value_of(key),
            "{key}: value differs from what was written"
        );
    }
    for (key, (n, rev)) in &acked.counters {
        let kv = store
            .get(key, None)
            .await?
            .with_context(|| format!("counter {key} is lost"))?;
        let stored: u64 = String::from_utf8_lossy(&kv.value).parse()?;
        ensure!(
            stored >= *n,
            "{key}: {stored} is below the acknowledged {n}"
        );
        ensure!(
            kv.mod_revision >= *rev,
            "{key}: revision went back below {rev}"
        );
    }
    let current = store.current_revision().await?;
    ensure!(
        current >= acked.max_revision,
        "revision {current} is below acknowledged {}",
        acked.max_revision
    );
    let listed = store
        .list("/crash/keys/", ListOptions::default())
        .await?
        .kvs
        .len();
    ensure!(
        listed >= acked.creates.len(),
        "list shows {listed} keys, {} acknowledged",
        acked.creates.len()
    );
    store.close().await;
    Ok(current)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("state.db");
    let mut rng = rand::rng();
    let mut acked = Acked::default();
    let mut last_revision = 0;
    let mut total_acks = 0;
    for epoch in 0..6 {
        // Early kills land in start-up and the first commits, later ones mid-stream.
        let run_for = Duration::from_millis(rng.random_range(50..1200));
        let db2 = db.clone();
        let lines =
            tokio::task::spawn_blocking(move || run_and_kill(&db2, epoch, run_for)).await??;
        let before = acked.max_revision;
        for line in &lines {
            acked.record(line)?;
        }
        if let Some(first) = lines.first() {
            let rev: i64 = first.rsplit(' ').next().unwrap_or("0").parse()?;
            ensure!(
                rev > last_revision,
                "epoch {epoch}: revision {rev} not above {last_revision} from before the crash"
            );
        }
        ensure!(acked.max_revision >= before);
        total_acks += lines.len();
        last_revision = verify(&db, &acked).await?;
    }
    ensure!(
        total_acks > 100,
        "the writer acknowledged only {total_acks} writes; the test proved little"
    );
    Ok(())
}
