//! The agent's runtime plumbing against a real containerd (Debian's, installed by
//! `dev/setup`; run as root): our own containerd instance in a temporary data dir, the
//! locally made pause image imported and seen by the CRI, the CNI network list loaded,
//! and a pod sandbox started with an address from the node's pod CIDR, then stopped and
//! removed. Everything the test makes — the containerd, its sandbox, the bridge — is
//! named uniquely and removed at the end, pass or fail.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxState,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest,
    StopPodSandboxRequest,
};
use keelson_agent::cri::config::{Network, Paths};
use keelson_agent::cri::pause::PAUSE_IMAGE;
use keelson_agent::cri::{Containerd, Cri};

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
