//! Store benchmark: the embedded SQLite backend beside etcd (the anchor), in one run, on
//! the same disk. Prints figures; asserts nothing.
//!
//! `cargo bench -p keelson-store --bench store`
//!
//! Environment: `KEELSON_BENCH_SECONDS` (per write phase, default 5),
//! `KEELSON_BENCH_DIR` (where both keep their data; default the system temp dir),
//! `KEELSON_BENCH_ONLY=sqlite` (measure only the embedded store, no table: for quick
//! experiments).
//!
//! Phases, per backend:
//! * durable writes (creates of 1 KiB values) with 1, 16 and 256 concurrent writers:
//!   throughput and p50/p99 latency;
//! * listing 10,000 keys of 1 KiB: one unpaginated list, and pages of 500 (as kubectl and
//!   informers ask), median of several runs;
//! * watch delivery latency under a 16-writer load: from issuing a write to the watcher
//!   receiving its event, p50/p99.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use keelson_store::testing::EtcdServer;
use keelson_store::{EtcdConfig, EtcdStore, ListOptions, SqliteConfig, SqliteStore, Store};

const VALUE_SIZE: usize = 1024;
const LIST_KEYS: usize = 10_000;

struct Figures {
    writes: Vec<(usize, f64, Duration, Duration)>,
    list_all: Duration,
    list_pages: Duration,
    watch_p50: Duration,
    watch_p99: Duration,
    watch_events: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    percentile(&samples, 0.5)
}

fn value(seed: u64) -> Bytes {
    Bytes::from(
        (0..VALUE_SIZE)
            .map(|i| (i as u64 ^ seed) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// `writers` tasks creating keys for `seconds`; returns (writes/s, p50, p99).
async fn writes(
    store: &Arc<dyn Store>,
    writers: usize,
    run: Duration,
    tag: &str,
) -> Result<(f64, Duration, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, stop, tag) = (store.clone(), stop.clone(), tag.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("/bench/{tag}/{w}/{i}");
                    let t = Instant::now();
                    store.create(&key, value(i)).await?;
                    latencies.push(t.elapsed());
                    i += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed();
    all.sort();
    Ok((
        all.len() as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    ))
}

async fn populate(store: &Arc<dyn Store>, prefix: &str, keys: usize) -> Result<()> {
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let (store, prefix) = (store.clone(), prefix.to_owned());
            tokio::spawn(async move {
                for i in (w..keys).step_by(64) {
                    store
                        .create(&format!("{prefix}{i:05}"), value(i as u64))
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn list_figures(store: &Arc<dyn Store>) -> Result<(Duration, Duration)> {
    let prefix = "/bench/list/";
    populate(store, prefix, LIST_KEYS).await?;
    let mut whole = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let page = store.list(prefix, ListOptions::default()).await?;
        whole.push(t.elapsed());
        anyhow::ensure!(page.kvs.len() == LIST_KEYS, "listed {}", page.kvs.len());

        let t = Instant::now();
        let mut options = ListOptions {
            limit: Some(500),
            ..ListOptions::default()
        };
        let mut seen = 0;
        loop {
            let page = store.list(prefix, options.clone()).await?;
            seen += page.kvs.len();
            if !page.more {
                break;
            }
            options.revision = Some(page.revision);
            options.start_after = page.kvs.last().map(|kv| kv.key.clone());
        }
        paged.push(t.elapsed());
        anyhow::ensure!(seen == LIST_KEYS, "paged through {seen}");
    }
    Ok((median(whole), median(paged)))
}

async fn watch_figures(
    store: &Arc<dyn Store>,
    run: Duration,
) -> Result<(Duration, Duration, usize)> {
    let prefix = "/bench/watch/";
    let mut watch = store.watch(prefix, 0).await?;
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // The value starts with the moment the write was issued.
                    let mut v = (base.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
                    v.resize(VALUE_SIZE, 0);
                    store.create(&format!("{prefix}{w}/{i}"), v.into()).await?;
                    i += 1;
                }
                anyhow::Ok(i)
            })
        })
        .collect();
    let collector = tokio::spawn(async move {
        let mut latencies = Vec::new();
        while let Some(event) = watch.next().await {
            let event = event?;
            let sent = u64::from_le_bytes(event.kv.value[..8].try_into()?);
            latencies.push(base.elapsed().saturating_sub(Duration::from_nanos(sent)));
            if event.kv.key.ends_with("/done") {
                break;
            }
        }
        anyhow::Ok(latencies)
    });
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await??;
    }
    let mut done = (base.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
    done.resize(VALUE_SIZE, 0);
    store.create(&format!("{prefix}done"), done.into()).await?;
    let mut latencies = tokio::time::timeout(Duration::from_secs(60), collector).await???;
    latencies.sort();
    Ok((
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len(),
    ))
}

async fn measure(store: Arc<dyn Store>, run: Duration) -> Result<Figures> {
    let mut figures = Figures {
        writes: Vec::new(),
        list_all: Duration::ZERO,
        list_pages: Duration::ZERO,
        watch_p50: Duration::ZERO,
        watch_p99: Duration::ZERO,
        watch_events: 0,
    };
    for writers in [1, 16, 256] {
        let (rate, p50, p99) = writes(&store, writers, run, &format!("w{writers}")).await?;
        eprintln!(
            "  {:>3} writers: {rate:>8.0} writes/s  p50 {p50:?}  p99 {p99:?}",
            writers
        );
        figures.writes.push((writers, rate, p50, p99));
    }
    (figures.list_all, figures.list_pages) = list_figures(&store).await?;
    eprintln!(
        "  list 10k: {:?} whole, {:?} in pages of 500",
        figures.list_all, figures.list_pages
    );
    (figures.watch_p50, figures.watch_p99, figures.watch_events) =
        watch_figures(&store, run).await?;
    eprintln!(
        "  watch: p50 {:?} p99 {:?} over {} events",
        figures.watch_p50, figures.watch_p99, figures.watch_events
    );
    Ok(figures)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(ours: f64, anchor: f64) -> String {
    if anchor == 0.0 {
        "-".into()
    } else {
        format!("{:.2}×", ours / anchor)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let seconds: u64 = std::env::var("KEELSON_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let run = Duration::from_secs(seconds);
    let base: PathBuf = std::env::var_os("KEELSON_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);

    let sqlite_dir = tempfile::Builder::new()
        .prefix("keelson-bench")
        .tempdir_in(&base)?;
    eprintln!("sqlite ({})", sqlite_dir.path().display());
    let sqlite = SqliteStore::open(SqliteConfig::new(sqlite_dir.path().join("state.db"))).await?;
    let sqlite = Arc::new(sqlite);
    let ours = measure(sqlite.clone(), run).await?;
    sqlite.close().await;
    drop(sqlite_dir);
    if std::env::var("KEELSON_BENCH_ONLY").as_deref() == Ok("sqlite") {
        return Ok(());
    }

    let server = EtcdServer::start_in(Some(&base)).context("start etcd (install etcd-server)")?;
    eprintln!("etcd ({})", server.dir().display());
    let etcd = EtcdStore::connect(EtcdConfig::new(vec![server.endpoint().to_owned()])).await?;
    let anchor = measure(Arc::new(etcd), run).await?;
    drop(server);

    println!("| measure | sqlite | etcd | sqlite ÷ etcd |");
    println!("|---|---|---|---|");
    for ((writers, rate, p50, p99), (_, erate, ep50, ep99)) in
        ours.writes.iter().zip(&anchor.writes)
    {
        println!(
            "| writes/s, {writers} writers | {rate:.0} | {erate:.0} | {} |",
            ratio(*rate, *erate)
        );
        println!(
            "| write p50, {writers} writers | {} | {} | {} |",
            ms(*p50),
            ms(*ep50),
            ratio(p50.as_secs_f64(), ep50.as_secs_f64())
        );
        println!(
            "| write p99, {writers} writers | {} | {} | {} |",
            ms(*p99),
            ms(*ep99),
            ratio(p99.as_secs_f64(), ep99.as_secs_f64())
        );
    }
    println!(
        "| list 10,000 keys (one request) | {} | {} | {} |",
        ms(ours.list_all),
        ms(anchor.list_all),
        ratio(ours.list_all.as_secs_f64(), anchor.list_all.as_secs_f64())
    );
    println!(
        "| list 10,000 keys (pages of 500) | {} | {} | {} |",
        ms(ours.list_pages),
        ms(anchor.list_pages),
        ratio(
            ours.list_pages.as_secs_f64(),
            anchor.list_pages.as_secs_f64()
        )
    );
    println!(
        "| watch delivery p50 (16 writers) | {} | {} | {} |",
        ms(ours.watch_p50),
        ms(anchor.watch_p50),
        ratio(ours.watch_p50.as_secs_f64(), anchor.watch_p50.as_secs_f64())
    );
    println!(
        "| watch delivery p99 (16 writers) | {} | {} | {} |",
        ms(ours.watch_p99),
        ms(anchor.watch_p99),
        ratio(ours.watch_p99.as_secs_f64(), anchor.watch_p99.as_secs_f64())
    );
    Ok(())
}
