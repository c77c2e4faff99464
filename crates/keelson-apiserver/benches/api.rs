//! API server benchmark: latency of create, get, update and list through HTTPS (kept-alive
//! connections, admin client certificate) beside the same operations on the store directly
//! (the anchor: what the API layer adds), watch fan-out to 100 watchers, the target
//! (write p99 at 200 requests/s), and memory per 10,000 pods stored (measured first, in the
//! fresh process, which also holds the client side). Prints figures only.
//!
//! `cargo bench -p keelson-apiserver --bench api` (`KEELSON_BENCH_SECONDS`, default 3).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use keelson_apiserver::testing::{Client, ClientAuth};
use keelson_apiserver::{ApiServer, BuildInfo, ServerConfig};
use keelson_store::{SqliteConfig, SqliteStore, Store};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn configmap(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"bench": "yes"}},
        "data": {"payload": "x".repeat(1024)}}).to_string()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Create,
    Get,
    Update,
    /// A whole namespace of 1,000 config maps (`list1k`).
    List,
}

/// `clients` tasks doing `op` through the API for `run`; returns sorted latencies.
async fn api_phase(
    client: &Client,
    ns: &str,
    op: Op,
    clients: usize,
    run: Duration,
    tag: &str,
) -> Result<Vec<Duration>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, stop, ns, tag) = (client.clone(), stop.clone(), ns.to_owned(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connection().await?;
            let base = format!("/api/v1/namespaces/{ns}/configmaps");
            let mut latencies = Vec::new();
            let mut object: Option<Value> = None;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = match op {
                    Op::Create => {
                        conn.request(
                            "POST",
                            &base,
                            Some("application/json"),
                            Some(&configmap(&format!("{tag}-{c}-{i}"))),
                        )
                        .await?
                    }
                    Op::Get => {
                        conn.request(
                            "GET",
                            &format!("{base}/seed-{}", (c * 7919 + i) % 1000),
                            None,
                            None,
                        )
                        .await?
                    }
                    Op::List => conn.request("GET", &base, None, None).await?,
                    Op::Update => {
                        let mut current = match object.take() {
                            Some(o) => o,
                            None => conn
                                .request("GET", &format!("{base}/seed-{c}"), None, None)
                                .await?
                                .json(),
                        };
                        current["data"]["n"] = json!(i.to_string());
                        conn.request(
                            "PUT",
                            &format!("{base}/seed-{c}"),
                            Some("application/json"),
                            Some(&current.to_string()),
                        )
                        .await?
                    }
                };
                latencies.push(started.elapsed());
                anyhow::ensure!(response.code < 300, "{} {}", response.code, response.body);
                if op == Op::Update {
                    object = Some(response.json());
                }
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort();
    Ok(all)
}

/// The same operations on the store directly.
async fn store_phase(
    store: &Arc<dyn Store>,
    op: Op,
    clients: usize,
    run: Duration,
    tag: &str,
) -> Result<Vec<Duration>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (store, stop, tag) = (store.clone(), stop.clone(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let value = Bytes::from(configmap("x"));
            let key = format!("/anchor/{tag}/fixed-{c}");
            let mut rev = store.create(&key, value.clone()).await?;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match op {
                    Op::Create => {
                        store
                            .create(&format!("/anchor/{tag}/{c}/{i}"), value.clone())
                            .await?;
                    }
                    Op::Get => {
                        store.get(&key, None).await?;
                    }
                    Op::Update => {
                        rev = store.update(&key, value.clone(), rev).await?;
                    }
                    Op::List => {
                        store
                            .list("/registry/core/configmaps/list1k/", Default::default())
                            .await?;
                    }
                }
                latencies.push(started.elapsed());
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort();
    Ok(all)
}

async fn populate(client: &Client, ns: &str, count: usize) -> Result<()> {
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..16 {
        let (client, ns, done) = (client.clone(), ns.to_owned(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connection().await?;
            for i in (c..count).step_by(16) {
                let r = conn
                    .request(
                        "POST",
                        &format!("/api/v1/namespaces/{ns}/configmaps"),
                        Some("application/json"),
                        Some(&configmap(&format!("seed-{i}"))),
                    )
                    .await?;
                anyhow::ensure!(r.code == 201, "{}", r.body);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let r = client
        .post(
            "/api/v1/namespaces",
            &json!({"kind": "Namespace", "metadata": {"name": name}}).to_string(),
        )
        .await?;
    ensure!(r.code == 201, "{}", r.body);
    Ok(())
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
        .unwrap_or(3);
    let run = Duration::from_secs(seconds);
    let dir = tempfile::tempdir()?;
    let sqlite =
        Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("db/state.db"))).await?);
    let store: Arc<dyn Store> = sqlite.clone();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        tls_sans: vec![],
        build: BuildInfo {
            version: "bench".into(),
            commit: "bench".into(),
        },
        cache: Default::default(),
    };
    let server = ApiServer::bind(config, store.clone(), Registry::default()).await?;
    let addr = server.url().trim_start_matches("https://").to_owned();
    let pki = server.pki().clone();
    tokio::spawn(server.serve(std::future::pending()));
    let client = Client::new(
        &addr,
        &pki.ca_cert,
        ClientAuth::Certificate {
            cert_pem: pki.admin_cert,
            key_pem: pki.admin_key,
        },
    );

    for ns in [
        "small", "large", "list1k", "watched", "paced", "pods", "created",
    ] {
        create_namespace(&client, ns).await?;
    }
    // Memory: 10,000 pods (about 1.5 KiB of JSON each) stored.
    let before = rss_kib();
    let pod = |i: usize| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench", "i": i.to_string()}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}], "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        "env": [{"name": "A", "value": "x".repeat(512)}]}]}}).to_string()
    };
    let mut tasks = Vec::new();
    for c in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connection().await?;
            for i in (c..10_000).step_by(16) {
                let r = conn
                    .request(
                        "POST",
                        "/api/v1/namespaces/pods/pods",
                        Some("application/json"),
                        Some(&pod(i)),
                    )
                    .await?;
                anyhow::ensure!(r.code == 201, "{}", r.body);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let after = rss_kib();
    println!();
    println!("| memory | value |");
    println!("|---|---|");
    println!(
        "| process RSS growth while storing 10,000 pods | {} MiB (from {} to {} MiB) |",
        (after.saturating_sub(before)) / 1024,
        before / 1024,
        after / 1024
    );
    populate(&client, "small", 1000).await?;
    populate(&client, "list1k", 1000).await?;
    // Lists: 1k and 10k objects, one request each, median of several, on a quiet server
    // (before the write phases).
    populate(&client, "large", 10_000).await?;
    println!();
    println!("| list | objects | API p50 | API p99 | store p50 | API ÷ store (p50) |");
    println!("|---|---|---|---|---|---|");
    for (ns, count) in [("small", 1000usize), ("large", 10_000)] {
        let mut conn = client.connection().await?;
        let mut api = Vec::new();
        let mut anchor = Vec::new();
        for _ in 0..9 {
            let started = Instant::now();
            let r = conn
                .request(
                    "GET",
                    &format!("/api/v1/namespaces/{ns}/configmaps"),
                    None,
                    None,
                )
                .await?;
            api.push(started.elapsed());
            ensure!(r.json()["items"].as_array().map(Vec::len).unwrap_or(0) >= count);
            let started = Instant::now();
            store
                .list(
                    &format!("/registry/core/configmaps/{ns}/"),
                    Default::default(),
                )
                .await?;
            anchor.push(started.elapsed());
        }
        api.sort();
        anchor.sort();
        println!(
            "| configmaps | {count} | {} | {} | {} | {:.1}× |",
            ms(percentile(&api, 0.5)),
            ms(percentile(&api, 0.99)),
            ms(percentile(&anchor, 0.5)),
            percentile(&api, 0.5).as_secs_f64() / percentile(&anchor, 0.5).as_secs_f64()
        );
    }

    println!(
        "| operation | clients | API p50 | API p99 | store p50 | store p99 | API ÷ store (p50) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, op) in [
        ("create", Op::Create),
        ("get", Op::Get),
        ("update", Op::Update),
        ("list 1k", Op::List),
    ] {
        for clients in [1, 16, 64] {
            let tag = format!("{name}-{clients}");
            let ns = if op == Op::List { "list1k" } else { "small" };
            let api = api_phase(&client, ns, op, clients, run, &tag).await?;
            let anchor = store_phase(&store, op, clients, run, &tag).await?;
            let (a50, a99, s50, s99) = (
                percentile(&api, 0.5),
                percentile(&api, 0.99),
                percentile(&anchor, 0.5),
                percentile(&anchor, 0.99),
            );
            println!(
                "| {name} | {clients} | {} | {} | {} | {} | {:.1}× |",
                ms(a50),
                ms(a99),
                ms(s50),
                ms(s99),
                a50.as_secs_f64() / s50.as_secs_f64().max(1e-9)
            );
        }
    }

    // Watch fan-out: 100 watchers, one writer; from issuing a write to each watcher's event.
    let base = Instant::now();
    let mut watchers = Vec::new();
    for _ in 0..100 {
        let mut events = client
            .watch(
                &format!(
                    "/api/v1/namespaces/watched/configmaps?watch=true&resourceVersion={}",
                    store.current_revision().await?
                ),
                &[],
            )
            .await?;
        watchers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some(event) = events.next().await? {
                let sent: u64 = event["object"]["data"]["sent"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                latencies.push(base.elapsed().saturating_sub(Duration::from_nanos(sent)));
                if event["object"]["metadata"]["name"] == "last" {
                    break;
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut conn = client.connection().await?;
    let writes = 200;
    for i in 0..=writes {
        let name = if i == writes {
            "last".to_owned()
        } else {
            format!("w{i}")
        };
        let body = json!({"kind": "ConfigMap", "metadata": {"name": name}, "data": {"sent": (base.elapsed().as_nanos() as u64).to_string()}});
        conn.request(
            "POST",
            "/api/v1/namespaces/watched/configmaps",
            Some("application/json"),
            Some(&body.to_string()),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut fanout = Vec::new();
    for watcher in watchers {
        fanout.extend(tokio::time::timeout(Duration::from_secs(60), watcher).await???);
    }
    fanout.sort();
    println!();
    println!("| watch fan-out | watchers | events delivered | p50 | p99 |");
    println!("|---|---|---|---|---|");
    println!(
        "| 201 creates, 5 ms apart | 100 | {} | {} | {} |",
        fanout.len(),
        ms(percentile(&fanout, 0.5)),
        ms(percentile(&fanout, 0.99))
    );

    // The target: single-object writes at 200 requests/s.
    let mut paced = Vec::new();
    let mut conn = client.connection().await?;
    let start = Instant::now();
    for i in 0..(200 * seconds.max(5)) {
        let due = start + Duration::from_millis(i * 5);
        tokio::time::sleep_until(due.into()).await;
        let t = Instant::now();
        let r = conn
            .request(
                "POST",
                "/api/v1/namespaces/paced/configmaps",
                Some("application/json"),
                Some(&configmap(&format!("p{i}"))),
            )
            .await?;
        paced.push(t.elapsed());
        ensure!(r.code == 201);
    }
    paced.sort();
    println!();
    println!("| paced creates | rate | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| {} | 200/s | {} | {} | {} |",
        paced.len(),
        ms(percentile(&paced, 0.5)),
        ms(percentile(&paced, 0.99)),
        ms(*paced.last().context("paced")?)
    );

    sqlite.close().await;
    Ok(())
}
