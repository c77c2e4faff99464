//! The agent against a real containerd (Debian's, installed by `dev/setup`; run as
//! root): our own containerd instance in a temporary data dir, the locally made pause
//! image imported and seen by the CRI, the CNI network list loaded, and a pod sandbox
//! started with an address from the node's pod CIDR, then stopped and removed; and the
//! real node registering with an in-process API server, Ready once it has a pod CIDR.
//! Everything the tests make — containerd, sandboxes, the bridge, the Node — is named
//! uniquely and removed at the end, pass or fail.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxState,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest,
    StopPodSandboxRequest,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use keelson_agent::cri::config::{Network, Paths};
use keelson_agent::cri::pause::PAUSE_IMAGE;
use keelson_agent::cri::{Containerd, Cri};
use keelson_agent::kubelet::{Kubelet, KubeletConfig};
use keelson_apiserver::testing::eventually;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// A /24 and a bridge name of this test run's own (the process id picks them).
fn network() -> Network {
    let id = std::process::id();
    Network {
        name: format!("keelson-test-{id}"),
        bridge: format!("kt{:x}", id % 0xff_ffff),
        subnet: format!("10.42.{}.0/24", 128 + id % 100),
        // No gateway: the bridge plugin then leaves the machine's IP forwarding alone.
        gateway: false,
    }
}

async fn network_ready(cri: &Cri) -> Result<bool> {
    let status = cri
        .runtime
        .clone()
        .status(StatusRequest { verbose: false })
        .await?
        .into_inner();
    Ok(status
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.r#type == "NetworkReady" && c.status))
}

/// Starts, inspects, stops and removes one pod sandbox.
async fn sandbox_round_trip(
    containerd: &Containerd,
    network: &Network,
    logs: &std::path::Path,
) -> Result<()> {
    let cri = &containerd.cri;
    let version = cri.version().await?;
    ensure!(version.runtime_name == "containerd", "{version:?}");
    ensure!(version.runtime_api_version == "v1", "{version:?}");
    ensure!(
        cri.has_image(PAUSE_IMAGE).await?,
        "the pause image is imported"
    );

    containerd.set_network(network)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !network_ready(cri).await? {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "NetworkReady within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let uid = format!("uid-{}", std::process::id());
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "sandbox".into(),
            uid: uid.clone(),
            namespace: "keelson-test".into(),
            attempt: 0,
        }),
        hostname: "sandbox".into(),
        log_directory: logs.display().to_string(),
        labels: HashMap::from([("io.kubernetes.pod.uid".to_owned(), uid.clone())]),
        ..Default::default()
    };
    let id = cri
        .runtime
        .clone()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    let status = cri
        .runtime
        .clone()
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("no sandbox status")?;
    let result = (|| {
        ensure!(
            status.state == PodSandboxState::SandboxReady as i32,
            "{status:?}"
        );
        let ip = status
            .network
            .as_ref()
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        let prefix = network.subnet.trim_end_matches("0/24");
        ensure!(
            ip.starts_with(prefix),
            "pod IP {ip:?} from {}",
            network.subnet
        );
        Ok(())
    })();
    let listed = cri
        .runtime
        .clone()
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items;
    cri.runtime
        .clone()
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .context("StopPodSandbox")?;
    cri.runtime
        .clone()
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .context("RemovePodSandbox")?;
    result?;
    ensure!(listed.iter().any(|s| s.id == id), "listed while it ran");
    let after = cri
        .runtime
        .clone()
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items;
    ensure!(after.is_empty(), "removed: {after:?}");
    Ok(())
}

/// Removes whatever sandboxes are left (a failed run), so no shim outlives the test.
async fn remove_all_sandboxes(cri: &Cri) {
    let Ok(listed) = cri
        .runtime
        .clone()
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
    else {
        return;
    };
    for sandbox in listed.into_inner().items {
        let id = sandbox.id;
        let _ = cri
            .runtime
            .clone()
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        let _ = cri
            .runtime
            .clone()
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await;
    }
}

#[tokio::test]
async fn our_containerd_runs_a_pod_sandbox_on_the_pod_network() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("this test drives a real containerd and needs root (CI runs it as root)");
    }
    let dir = tempfile::tempdir()?;
    let paths = Paths::under(dir.path());
    let network = network();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let containerd = Containerd::start(paths.clone())
        .await
        .with_context(|| format!("starting containerd; log: {}", paths.log_file().display()))?;
    let result = sandbox_round_trip(&containerd, &network, &logs).await;
    remove_all_sandboxes(&containerd.cri).await;
    containerd.stop().await?;
    // The bridge the CNI plugin made for this run.
    let _ = std::process::Command::new("ip")
        .args(["link", "delete", &network.bridge])
        .status();
    result
}

async fn api_client(dir: &std::path::Path) -> Result<kube::Client> {
    let kubeconfig = keelson_apiserver::testing::start_in_process(dir)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn ready(node: &Node) -> Option<(String, String)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()))
}

/// Registration and heartbeats of the real node, with `kubelet` running.
async fn node_round_trip(client: &kube::Client, kubelet: &Kubelet, subnet: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(&kubelet.name).await?;
    let status = node.status.clone().context("status")?;
    let capacity = status.capacity.unwrap_or_default();
    let cpus = std::thread::available_parallelism()?.get().to_string();
    ensure!(
        capacity.get("cpu").map(|q| q.0.as_str()) == Some(cpus.as_str()),
        "{capacity:?}"
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let total_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .context("MemTotal")?;
    ensure!(
        capacity.get("memory").map(|q| q.0.clone()) == Some(format!("{total_kib}Ki")),
        "{capacity:?}"
    );
    let info = status.node_info.context("nodeInfo")?;
    ensure!(
        info.container_runtime_version.starts_with("containerd://"),
        "{info:?}"
    );
    ensure!(
        status.images.unwrap_or_default().iter().any(|i| i
            .names
            .iter()
            .flatten()
            .any(|n| n.contains("keelson/pause"))),
        "the pause image is listed"
    );
    // No pod CIDR yet: no pod network, so not Ready, and it says why.
    let (ready_now, message) = ready(&node).context("Ready")?;
    ensure!(
        ready_now == "False" && message.contains("network"),
        "{message}"
    );

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renewed = |lease: Lease| lease.spec.and_then(|s| s.renew_time).map(|t| t.0);
    let first = eventually("a lease", || async {
        Ok(leases.get_opt(&kubelet.name).await?.and_then(renewed))
    })
    .await?;

    let patch = json!({"spec": {"podCIDR": subnet, "podCIDRs": [subnet]}});
    nodes
        .patch(
            &kubelet.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    eventually("Ready with a pod network", || async {
        let node = nodes.get(&kubelet.name).await?;
        Ok(ready(&node).filter(|(s, _)| s == "True").map(drop))
    })
    .await?;
    eventually("the lease renewed", || async {
        let now = leases.get_opt(&kubelet.name).await?.and_then(renewed);
        Ok(now.filter(|t| *t > first).map(drop))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_real_node_registers_and_is_ready_once_it_has_a_pod_network() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("this test drives a real containerd and needs root (CI runs it as root)");
    }
    let dir = tempfile::tempdir()?;
    let client = api_client(&dir.path().join("server")).await?;
    let id = std::process::id();
    let mut config = KubeletConfig::new(dir.path().join("agent"));
    config.node_name = Some(format!("keelson-test-node-{id}"));
    config.bridge = format!("kn{:x}", id % 0xff_ffff);
    config.gateway = false;
    config.heartbeat = Duration::from_millis(300);
    let kubelet = Kubelet::start(client.clone(), config).await?;
    let subnet = format!("10.42.{}.0/24", 28 + id % 100);
    let result = node_round_trip(&client, &kubelet, &subnet).await;
    kubelet.shutdown().await?;
    result
}
