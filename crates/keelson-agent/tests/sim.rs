//! Simulated nodes against a real, in-process API server with the scheduler running:
//! nodes register with leases, pods bound to them start and become Ready, deleted pods are
//! removed after their grace period (with the kubelet's `Killing` event), containers exit on demand by restart policy, pods
//! that run to completion finish (as their annotations say), and a node told to stop
//! heartbeating stops renewing its lease.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
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
    annotated_pod(name, restart, json!({}))
}

fn annotated_pod(name: &str, restart: &str, annotations: serde_json::Value) -> Result<Pod> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name, "annotations": annotations},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]}}),
    )?)
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
    // (It would finish by itself after an hour.)
    let long = json!({"sim.keelson.io/run-ms": "3600000"});
    pods.create(&pp, &annotated_pod("once", "Never", long)?)
        .await?;
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
    // Its node said it was stopping the container, as the kubelet does.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let (message, field_path, component) = eventually("a Killing event for p1", || async {
        let listed = events.list(&ListParams::default()).await?;
        Ok(listed
            .items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("Killing")
                    && e.involved_object.name.as_deref() == Some("p1")
            })
            .map(|e| {
                (
                    e.message.clone(),
                    e.involved_object.field_path.clone(),
                    e.source.as_ref().and_then(|s| s.component.clone()),
                )
            }))
    })
    .await?;
    ensure!(
        message.as_deref() == Some("Stopping container c"),
        "{message:?}"
    );
    ensure!(
        field_path.as_deref() == Some("spec.containers{c}"),
        "{field_path:?}"
    );
    ensure!(component.as_deref() == Some("kubelet"), "{component:?}");

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

/// The first container's status, as JSON.
fn container(pod: &Pod) -> serde_json::Value {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_run_to_completion_finish() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let client = start(dir.path()).await?;
    let mut config = SimConfig::new("sim", 1);
    config.run_to_completion = Duration::from_millis(300);
    let _sim = SimulatedNodes::start(client.clone(), config).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    pods.create(&pp, &pod("forever", "Always")?).await?;
    pods.create(&pp, &pod("done", "Never")?).await?;
    pods.create(
        &pp,
        &annotated_pod(
            "broken",
            "Never",
            json!({"sim.keelson.io/exit-code": "2", "sim.keelson.io/run-ms": "200"}),
        )?,
    )
    .await?;
    pods.create(
        &pp,
        &annotated_pod(
            "retried",
            "OnFailure",
            json!({"sim.keelson.io/exit-code": "1", "sim.keelson.io/run-ms": "200"}),
        )?,
    )
    .await?;
    pods.create(
        &pp,
        &annotated_pod(
            "slow",
            "OnFailure",
            json!({"sim.keelson.io/run-ms": "3600000"}),
        )?,
    )
    .await?;

    // Never, exit 0 (the default): Succeeded, its container terminated with Completed.
    let done = eventually("done succeeded", || async {
        let p = pods.get("done").await?;
        Ok((phase(&p) == "Succeeded").then_some(p))
    })
    .await?;
    let terminated = &container(&done)["state"]["terminated"];
    ensure!(
        terminated["exitCode"] == 0 && terminated["reason"] == "Completed",
        "{terminated}"
    );
    ensure!(!ready(&done), "a finished pod is not ready");
    // Never, exit 2: Failed, reason Error.
    let broken = eventually("broken failed", || async {
        let p = pods.get("broken").await?;
        Ok((phase(&p) == "Failed").then_some(p))
    })
    .await?;
    let terminated = &container(&broken)["state"]["terminated"];
    ensure!(
        terminated["exitCode"] == 2 && terminated["reason"] == "Error",
        "{terminated}"
    );
    // OnFailure, exit 1: restarted in place, again and again; never finished.
    eventually("retried restarted twice", || async {
        let p = pods.get("retried").await?;
        let c = container(&p);
        Ok((c["restartCount"].as_i64().unwrap_or(0) >= 2 && phase(&p) == "Running").then_some(()))
    })
    .await?;
    let retried = pods.get("retried").await?;
    let last = &container(&retried)["lastState"]["terminated"];
    ensure!(last["exitCode"] == 1 && last["reason"] == "Error", "{last}");
    // Pods with restart policy Always, or a long run, are still running.
    for name in ["forever", "slow"] {
        let p = pods.get(name).await?;
        ensure!(
            phase(&p) == "Running" && ready(&p),
            "{name}: {:?}",
            p.status
        );
        let restarts = container(&p)["restartCount"].as_i64();
        ensure!(restarts == Some(0), "{name}: {restarts:?}");
    }
    Ok(())
}
