//! Simulated nodes against a real, in-process API server with the scheduler running:
//! nodes register with leases, pods bound to them start and become Ready, deleted pods are
//! removed after their grace period, containers exit on demand by restart policy, and a
//! node told to stop heartbeating stops renewing its lease.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use keelson_agent::{SimConfig, SimulatedNodes};
use keelson_apiserver::testing::eventually;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

async fn start(dir: &std::path::Path) -> Result<Client> {
    let kubeconfig = keelson_apiserver::testing::start_in_process(dir)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;
    tokio::spawn(keelson_scheduler::run(
        client.clone(),
        keelson_scheduler::plugins::default_profile(),
        keelson_scheduler::SchedulerConfig::default(),
    ));
    Ok(client)
}

fn pod(name: &str, restart: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]}}))?)
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_run_pods_like_kubelets() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let client = start(dir.path()).await?;
    let mut config = SimConfig::new("sim", 3);
    config.zones = vec!["a".into(), "b".into()];
    config.lease_renew = Duration::from_millis(300);
    config.max_termination = Duration::from_millis(500);
    let sim = SimulatedNodes::start(client.clone(), config).await?;

    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes.list(&ListParams::default()).await?;
    let names: Vec<String> = listed
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    ensure!(names == ["sim-0", "sim-1", "sim-2"], "{names:?}");
    let zone = listed.items[1]
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("topology.kubernetes.io/zone"))
        .cloned();
    ensure!(zone.as_deref() == Some("b"), "{zone:?}");

    // Bound pods start and become Ready, each with an address.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    for i in 0..6 {
        pods.create(&pp, &pod(&format!("p{i}"), "Always")?).await?;
    }
    eventually("six Running, Ready pods", || async {
        let list = pods.list(&ListParams::default()).await?;
        let all =
            list.items.iter().all(|p| phase(p) == "Running" && ready(p)) && list.items.len() == 6;
        Ok(all.then_some(()))
    })
    .await?;
    let p0 = pods.get("p0").await?;
    ensure!(
        p0.status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .is_some_and(|ip| ip.starts_with("10.244.")),
        "{p0:?}"
    );

    // Exits follow the restart policy: restarted (Always), or the pod finishes (Never).
    sim.exit_container("default", "p0", None, 1);
    eventually("p0 restarted", || async {
        let p = pods.get("p0").await?;
        let restarts = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .map(|c| c.restart_count);
        Ok((restarts == Some(1) && phase(&p) == "Running").then_some(()))
    })
    .await?;
    pods.create(&pp, &pod("once", "Never")?).await?;
    eventually("once running", || async {
        Ok((phase(&pods.get("once").await?) == "Running").then_some(()))
    })
    .await?;
    sim.exit_container("default", "once", Some("c"), 3);
    eventually("once failed", || async {
        Ok((phase(&pods.get("once").await?) == "Failed").then_some(()))
    })
    .await?;

    // Graceful deletion: marked first, removed by its node after the (capped) grace period.
    pods.delete("p1", &DeleteParams::default()).await?;
    ensure!(
        pods.get_opt("p1")
            .await?
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "marked, still there"
    );
    eventually("p1 removed", || async {
        Ok(pods.get_opt("p1").await?.is_none().then_some(()))
    })
    .await?;

    // Leases are renewed, until a node stops heartbeating.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renewed = |lease: Lease| lease.spec.and_then(|s| s.renew_time).map(|t| t.0);
    let first = renewed(leases.get("sim-2").await?).context("renewTime")?;
    eventually("a renewal", || async {
        Ok(renewed(leases.get("sim-2").await?)
            .filter(|t| *t > first)
            .map(|_| ()))
    })
    .await?;
    sim.stop_heartbeat("sim-2")?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stopped = renewed(leases.get("sim-2").await?).context("renewTime")?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    ensure!(
        renewed(leases.get("sim-2").await?) == Some(stopped),
        "no renewal once silent"
    );
    ensure!(sim.stop_heartbeat("nope").is_err());
    Ok(())
}
