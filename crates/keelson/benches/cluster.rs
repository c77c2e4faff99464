//! Whole-cluster benchmarks over the real binary: `keelson server` and `keelson agent
//! --simulate` as separate processes, driven through the API by a kube-rs client as users'
//! tools drive them. Prints figures; asserts nothing.
//!
//! - `scheduler`: 10k pods onto 1,000 and 5,000 simulated nodes, plain and with required
//!   pod anti-affinity; throughput (pods/s) and create→bound latency p50/p99. Anchor: the
//!   rate at which the same server accepts the same 10k pods with no scheduler running.
//! - `deployment`: a 1,000-replica Deployment from create to all Ready, beside 1,000 bare
//!   pods created by the client to all Ready on the same cluster.
//! - `rss`: the server's RSS idle, and at 5,000 nodes with 50,000 running pods.
//!
//! `cargo bench -p keelson --bench cluster [-- scheduler|deployment|rss]` (all by default).
//! `KEELSON_BENCH_PODS` overrides the 10k pods of the scheduler phase,
//! `KEELSON_BENCH_NODES` its node counts (`1000,5000`), `KEELSON_BENCH_VARIANTS` its
//! variants (`plain,anti`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// Requests of every benchmark pod: small enough that 10 fit on a node many times over.
const CPU: &str = "10m";
const MEMORY: &str = "16Mi";
const CREATE_CONCURRENCY: usize = 32;

struct Cluster {
    _dir: tempfile::TempDir,
    server: Child,
    agents: Vec<Child>,
    kubeconfig: PathBuf,
    client: Client,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn client(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

impl Cluster {
    async fn start(server_args: &[&str]) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut server = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(["server", "--port", &port.to_string(), "--data-dir"])
            .arg(dir.path())
            .args(server_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            if let Some(status) = server.try_wait()? {
                bail!("server exited with {status}");
            }
            if kubeconfig.exists()
                && let Ok(client) = client(&kubeconfig).await
                && client.apiserver_version().await.is_ok()
            {
                break client;
            }
            ensure!(Instant::now() < deadline, "server not up in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "bench"}}))?,
            )
            .await?;
        Ok(Cluster {
            _dir: dir,
            server,
            agents: Vec::new(),
            kubeconfig,
            client,
        })
    }

    /// `count` simulated nodes in one agent process; waits until all are Ready.
    async fn add_nodes(&mut self, prefix: &str, count: usize, start_delay_ms: u64) -> Result<()> {
        let agent = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args([
                "agent",
                "--simulate",
                &count.to_string(),
                "--node-prefix",
                prefix,
            ])
            .args(["--start-delay-ms", &start_delay_ms.to_string()])
            .args(["--capacity", "cpu=32,memory=128Gi,pods=110"])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.agents.push(agent);
        let nodes: Api<Node> = Api::all(self.client.clone());
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let listed = nodes.list_metadata(&ListParams::default()).await?;
            let ours = listed
                .items
                .iter()
                .filter(|n| n.name_any().starts_with(&format!("{prefix}-")))
                .count();
            if ours == count {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{ours}/{count} nodes registered");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn server_rss_mib(&self) -> Result<f64> {
        rss_mib(self.server.id())
    }
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

fn pod(name: &str, anti_affinity_group: Option<usize>) -> Result<Pod> {
    let mut pod = json!({"metadata": {"name": name, "labels": {"bench": "yes"}},
        "spec": {"containers": [{"name": "c", "image": "bench:1",
            "resources": {"requests": {"cpu": CPU, "memory": MEMORY}}}]}});
    if let Some(group) = anti_affinity_group {
        let group = format!("g{group}");
        pod["metadata"]["labels"]["group"] = Value::from(group.clone());
        pod["spec"]["affinity"] = json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"group": group}},
                "topologyKey": "kubernetes.io/hostname"}]}});
    }
    Ok(serde_json::from_value(pod)?)
}

/// When each pod was first seen with a condition met, by name.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Watches the bench namespace's pods, noting when each first satisfies `done`.
fn watch_pods(client: &Client, done: fn(&Pod) -> bool) -> Seen {
    let seen: Seen = Arc::default();
    let api: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let record = seen.clone();
    tokio::spawn(
        watcher(api, watcher::Config::default())
            .applied_objects()
            .try_for_each(move |pod| {
                if done(&pod) {
                    let now = Instant::now();
                    record
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(pod.name_any())
                        .or_insert(now);
                }
                futures::future::ready(Ok(()))
            }),
    );
    seen
}

fn bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates `count` pods, `CREATE_CONCURRENCY` at a time; returns when each was sent.
async fn create_pods(
    client: &Client,
    count: usize,
    groups: Option<usize>,
) -> Result<HashMap<String, Instant>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let sent = futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("p-{i}");
                let pod = pod(&name, groups.map(|g| i % g))?;
                let at = Instant::now();
                api.create(&PostParams::default(), &pod).await?;
                Ok::<_, anyhow::Error>((name, at))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(sent)
}

async fn wait_all(seen: &Seen, count: usize, what: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let n = seen.lock().unwrap_or_else(PoisonError::into_inner).len();
        if n >= count {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{n}/{count} pods {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Pods/s from the first send to the last pod done, and the p50/p99 of send→done (ms).
fn summarize(sent: &HashMap<String, Instant>, seen: &Seen) -> (f64, f64, f64) {
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let first = sent.values().min().copied();
    let last = sent.keys().filter_map(|n| seen.get(n)).max().copied();
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(n, at)| Some(seen.get(n)?.duration_since(*at).as_secs_f64() * 1e3))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let rate = match (first, last) {
        (Some(first), Some(last)) => sent.len() as f64 / last.duration_since(first).as_secs_f64(),
        _ => f64::NAN,
    };
    (
        rate,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
    )
}

fn bench_pods() -> usize {
    std::env::var("KEELSON_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

async fn scheduler() -> Result<()> {
    let count = bench_pods();
    // Anchor: the API server's own create rate for the same pods, nothing scheduling.
    let anchor = {
        let cluster = Cluster::start(&["--disable-scheduler", "--disable-controllers"]).await?;
        let start = Instant::now();
        create_pods(&cluster.client, count, None).await?;
        count as f64 / start.elapsed().as_secs_f64()
    };
    println!("anchor: {count} pod creates with no scheduler: {anchor:.0} pods/s");
    println!(
        "| nodes | pods | anti-affinity | scheduled pods/s | ÷ create rate | create→bound p50 | p99 | server RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let node_counts: Vec<usize> = std::env::var("KEELSON_BENCH_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 5_000]);
    let variants = std::env::var("KEELSON_BENCH_VARIANTS").unwrap_or_else(|_| "plain,anti".into());
    let variants: Vec<bool> = variants.split(',').map(|v| v == "anti").collect();
    for &nodes in &node_counts {
        for &anti in &variants {
            let mut cluster = Cluster::start(&["--disable-controllers"]).await?;
            // Pods never start: only scheduling is measured.
            cluster.add_nodes("n", nodes, 3_600_000).await?;
            let seen = watch_pods(&cluster.client, bound);
            // One group per 1,000 pods: each node takes at most one pod of a group.
            let groups = anti.then(|| count.div_ceil(1_000).max(1));
            let sent = create_pods(&cluster.client, count, groups).await?;
            wait_all(&seen, count, "bound", Duration::from_secs(600)).await?;
            let (rate, p50, p99) = summarize(&sent, &seen);
            println!(
                "| {nodes} | {count} | {} | {rate:.0} | {:.2} | {p50:.1} ms | {p99:.1} ms | {:.0} MiB |",
                if anti { "required, hostname" } else { "none" },
                rate / anchor,
                cluster.server_rss_mib()?,
            );
        }
    }
    Ok(())
}

async fn deployment() -> Result<()> {
    const REPLICAS: usize = 1_000;
    let mut cluster = Cluster::start(&[]).await?;
    cluster.add_nodes("n", 100, 100).await?;
    // Anchor: the client creates 1,000 pods itself.
    let seen = watch_pods(&cluster.client, ready);
    let start = Instant::now();
    create_pods(&cluster.client, REPLICAS, None).await?;
    wait_all(&seen, REPLICAS, "ready", Duration::from_secs(600)).await?;
    let pods_time = start.elapsed().as_secs_f64();
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "bench");
    api.delete_collection(
        &Default::default(),
        &ListParams::default().labels("bench=yes"),
    )
    .await?;
    loop {
        if api
            .list_metadata(&ListParams::default())
            .await?
            .items
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "bench");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "big"},
        "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "big"}},
            "template": {"metadata": {"labels": {"app": "big"}},
                "spec": {"containers": [{"name": "c", "image": "bench:1",
                    "resources": {"requests": {"cpu": CPU, "memory": MEMORY}}}]}}}}))?;
    let start = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let ready = deployments
            .get_status("big")
            .await?
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if ready as usize == REPLICAS {
            break;
        }
        ensure!(Instant::now() < deadline, "{ready}/{REPLICAS} ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deployment_time = start.elapsed().as_secs_f64();
    println!("| measure | keelson | anchor | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| {REPLICAS}-replica Deployment → all Ready (100 nodes) | {deployment_time:.2} s | {pods_time:.2} s ({REPLICAS} client-created pods → Ready) | {:.2} |",
        deployment_time / pods_time
    );
    Ok(())
}

async fn rss() -> Result<()> {
    const NODES: usize = 5_000;
    const PODS: usize = 50_000;
    let mut cluster = Cluster::start(&[]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = cluster.server_rss_mib()?;
    cluster.add_nodes("n", NODES, 100).await?;
    let with_nodes = cluster.server_rss_mib()?;
    let seen = watch_pods(&cluster.client, ready);
    let start = Instant::now();
    create_pods(&cluster.client, PODS, None).await?;
    wait_all(&seen, PODS, "running", Duration::from_secs(1_200)).await?;
    let took = start.elapsed().as_secs_f64();
    let loaded = cluster.server_rss_mib()?;
    let agent = cluster
        .agents
        .first()
        .map(|a| rss_mib(a.id()))
        .transpose()?
        .unwrap_or(f64::NAN);
    println!("| measure | MiB |");
    println!("|---|---|");
    println!("| server RSS, idle | {idle:.0} |");
    println!("| server RSS, {NODES} nodes | {with_nodes:.0} |");
    println!("| server RSS, {NODES} nodes + {PODS} running pods | {loaded:.0} |");
    println!("| agent RSS, {NODES} simulated nodes + {PODS} pods | {agent:.0} |");
    println!(
        "({PODS} pods created → all Running and Ready in {took:.1} s = {:.0} pods/s)",
        PODS as f64 / took
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| chosen.is_empty() || chosen.iter().any(|c| c == name);
    if wants("scheduler") {
        scheduler().await?;
    }
    if wants("deployment") {
        deployment().await?;
    }
    if wants("rss") {
        rss().await?;
    }
    Ok(())
}
