//! The scheduler against a real, in-process API server over HTTPS, through kube-rs: pods
//! bound and spread, a pod too big for every node left Pending with kubectl's reason as an
//! event and a condition, and placed as soon as a node with room appears.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use keelson_apiserver::testing::eventually;
use keelson_scheduler::SchedulerConfig;
use keelson_scheduler::plugins::default_profile;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

async fn start(dir: &std::path::Path) -> Result<Client> {
    let kubeconfig = keelson_apiserver::testing::start_in_process(dir)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;
    let scheduler = SchedulerConfig {
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        ..Default::default()
    };
    tokio::spawn(keelson_scheduler::run(
        client.clone(),
        default_profile(),
        scheduler,
    ));
    Ok(client)
}

fn node(name: &str, cpu: &str) -> Result<Node> {
    Ok(serde_json::from_value(json!({"metadata": {"name": name},
        "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}, "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}}))?)
}

fn pod(name: &str, cpu: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": cpu}}}]}}))?)
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_placed_and_unschedulable_ones_wait_for_room() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let client = start(dir.path()).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    for name in ["n1", "n2"] {
        nodes.create(&pp, &node(name, "2")?).await?;
    }
    for i in 0..4 {
        pods.create(&pp, &pod(&format!("p{i}"), "500m")?).await?;
    }
    let placed = eventually("four pods bound", || async {
        let list = pods.list(&ListParams::default()).await?;
        let placed: Vec<String> = list.items.iter().filter_map(node_of).collect();
        Ok((placed.len() == 4).then_some(placed))
    })
    .await?;
    let on_n1 = placed.iter().filter(|n| *n == "n1").count();
    anyhow::ensure!(on_n1 == 2, "spread evenly: {placed:?}");

    // Too big for both nodes: Pending, with the reason as an event and a condition.
    pods.create(&pp, &pod("big", "3")?).await?;
    let message = eventually("a FailedScheduling event", || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=big"))
            .await?;
        Ok(list
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
            .and_then(|e| e.message))
    })
    .await?;
    anyhow::ensure!(
        message == "0/2 nodes are available: 2 Insufficient cpu.",
        "{message}"
    );
    // The condition is written just after the event: wait for it too.
    let condition = eventually("the PodScheduled condition", || async {
        let big = pods.get("big").await?;
        Ok(big
            .status
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "PodScheduled")))
    })
    .await?;
    anyhow::ensure!(
        condition.status == "False" && condition.reason.as_deref() == Some("Unschedulable"),
        "{condition:?}"
    );
    anyhow::ensure!(node_of(&pods.get("big").await?).is_none());

    // Room appears: the pod is placed there without being created again.
    nodes.create(&pp, &node("n3", "4")?).await?;
    let node = eventually("the big pod bound", || async {
        Ok(node_of(&pods.get("big").await?))
    })
    .await?;
    anyhow::ensure!(node == "n3", "{node}");
    Ok(())
}
