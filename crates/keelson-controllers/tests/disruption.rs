//! PodDisruptionBudgets against a real, in-process API server with the scheduler, the
//! controllers and simulated nodes: the disruption controller's status numbers, and the
//! eviction API spending them (201) or refusing (429).

mod support;

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use keelson_apiserver::testing::eventually;
use kube::api::{EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// The cluster, and a client that hands back 429s (kube-rs retries them by default).
struct Cluster {
    client: Client,
    direct: Client,
    _cluster: support::Cluster,
}

async fn start(dir: &std::path::Path, nodes: usize) -> Result<Cluster> {
    let cluster = support::start(dir, nodes).await?;
    let mut direct = cluster.config.clone();
    direct.default_retry = false;
    Ok(Cluster {
        client: cluster.client.clone(),
        direct: Client::try_from(direct)?,
        _cluster: cluster,
    })
}

/// (expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed) of a status.
fn numbers(status: &PodDisruptionBudgetStatus) -> (i32, i32, i32, i32) {
    (
        status.expected_pods.unwrap_or(-1),
        status.desired_healthy.unwrap_or(-1),
        status.current_healthy.unwrap_or(-1),
        status.disruptions_allowed.unwrap_or(-1),
    )
}

/// The budget once its status, for its current generation, reads `want`.
async fn budget_reads(
    budgets: &Api<PodDisruptionBudget>,
    want: (i32, i32, i32, i32),
) -> Result<PodDisruptionBudget> {
    let what = format!("budget status {want:?}");
    Ok(eventually(&what, || async {
        let budget = budgets.get("web").await?;
        let current = budget.status.as_ref().is_some_and(|s| {
            numbers(s) == want && s.observed_generation == budget.metadata.generation
        });
        Ok(current.then_some(budget))
    })
    .await?)
}

fn allowed_condition(budget: &PodDisruptionBudget) -> Option<(String, String)> {
    budget
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionAllowed")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_count_healthy_pods_and_evictions_spend_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.direct.clone(), "default");
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let deploy: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))?;
    deployments.create(&PostParams::default(), &deploy).await?;
    let budget: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}))?;
    budgets.create(&PostParams::default(), &budget).await?;

    // Three ready pods, two needed: one disruption allowed.
    let budget = budget_reads(&budgets, (3, 2, 3, 1)).await?;
    ensure!(
        allowed_condition(&budget) == Some(("True".into(), "SufficientPods".into())),
        "{:?}",
        budget.status
    );
    let web = ListParams::default().labels("app=web");
    let names: Vec<String> = pods
        .list(&web)
        .await?
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    ensure!(names.len() == 3, "{names:?}");

    // With the nodes cordoned no replacement can start, so the numbers hold still: the
    // first eviction spends the one disruption; the second is refused with a 429.
    let nodes: Api<Node> = Api::all(client.clone());
    let cordon = |unschedulable: bool| {
        let nodes = nodes.clone();
        async move {
            for node in nodes.list(&ListParams::default()).await?.items {
                nodes
                    .patch(
                        &node.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"spec": {"unschedulable": unschedulable}})),
                    )
                    .await?;
            }
            Ok::<_, kube::Error>(())
        }
    };
    cordon(true).await?;
    pods.evict(&names[0], &EvictParams::default()).await?;
    // The pod goes (its node finishes it), marked as a disruption target; the budget has
    // nothing left (the eviction spent it, and the controller agrees).
    let evicted = pods.get_opt(&names[0]).await?;
    ensure!(
        evicted
            .as_ref()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "DisruptionTarget"
                        && c.reason.as_deref() == Some("EvictionByEvictionAPI")))),
        "{evicted:?}"
    );
    let spent = budgets.get("web").await?;
    ensure!(
        spent.status.as_ref().and_then(|s| s.disruptions_allowed) == Some(0),
        "{:?}",
        spent.status
    );
    let refused = pods.evict(&names[1], &EvictParams::default()).await;
    ensure!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 429
            && e.reason == "TooManyRequests"
            && e.message == "Cannot evict pod as it would violate the pod's disruption budget."),
        "{refused:?}"
    );
    ensure!(
        pods.get_opt(&names[1])
            .await?
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    );
    // The controller agrees once the evicted pod is gone: two healthy, none to spare.
    let waiting = budget_reads(&budgets, (3, 2, 2, 0)).await?;
    ensure!(
        allowed_condition(&waiting) == Some(("False".into(), "InsufficientPods".into())),
        "{:?}",
        waiting.status
    );
    eventually("the evicted pod gone", || async {
        Ok(pods.get_opt(&names[0]).await?.is_none().then_some(()))
    })
    .await?;
    cordon(false).await?;

    // The Deployment replaces the evicted pod; once it is ready the budget has room again
    // and the evicted pod is no longer listed as disrupted.
    let budget = budget_reads(&budgets, (3, 2, 3, 1)).await?;
    ensure!(
        budget
            .status
            .as_ref()
            .and_then(|s| s.disrupted_pods.as_ref())
            .is_none_or(|d| d.is_empty()),
        "{:?}",
        budget.status
    );
    pods.evict(&names[1], &EvictParams::default()).await?;

    // Percentages are of the Deployment's scale: maxUnavailable 50% of 3 rounds up to 2.
    budgets
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"minAvailable": null, "maxUnavailable": "50%"}})),
        )
        .await?;
    budget_reads(&budgets, (3, 1, 3, 2)).await?;
    // minAvailable 100%: nothing may go.
    budgets
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"minAvailable": "100%", "maxUnavailable": null}})),
        )
        .await?;
    let full = budget_reads(&budgets, (3, 3, 3, 0)).await?;
    ensure!(
        allowed_condition(&full) == Some(("False".into(), "InsufficientPods".into())),
        "{:?}",
        full.status
    );
    let any = pods.list(&web).await?.items;
    let victim = any
        .iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .unwrap_or_default();
    let refused = pods.evict(&victim, &EvictParams::default()).await;
    ensure!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 429),
        "{refused:?}"
    );
    // Scaled up, the Deployment's scale is what 100% is of.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 4}})),
        )
        .await?;
    budget_reads(&budgets, (4, 4, 4, 0)).await?;
    Ok(())
}
