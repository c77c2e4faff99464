//! Controllers against a real, in-process API server, with the scheduler and simulated
//! nodes running as they do in `keelson server` and `keelson agent --simulate`.

use std::sync::Arc;
use std::time::Duration;

mod support;

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use keelson_apiserver::testing::eventually;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::{ready, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_sets_keep_their_count_of_pods() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "100m"}}}]}}}}))?;
    sets.create(&PostParams::default(), &rs).await?;
    let web = ListParams::default().labels("app=web");
    eventually("3 ready replicas", || async {
        let status = sets.get("web").await?.status;
        Ok(status
            .filter(|s| s.ready_replicas == Some(3) && s.available_replicas == Some(3))
            .map(|_| ()))
    })
    .await?;
    let listed = pods.list(&web).await?;
    ensure!(listed.items.len() == 3, "{}", listed.items.len());
    ensure!(
        listed
            .items
            .iter()
            .all(|p| ready(p) && p.name_any().starts_with("web-"))
    );
    ensure!(
        listed.items.iter().all(|p| p
            .owner_references()
            .iter()
            .any(|o| o.kind == "ReplicaSet" && o.controller == Some(true))),
        "owned by the ReplicaSet"
    );

    // A deleted pod is replaced.
    let victim = listed.items[0].name_any();
    pods.delete(&victim, &DeleteParams::default()).await?;
    eventually("a replacement", || async {
        let list = pods.list(&web).await?;
        let active: Vec<_> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
            .collect();
        Ok((active.len() == 3 && active.iter().all(|p| p.name_any() != victim)).then_some(()))
    })
    .await?;

    // Scaled down: the extra pods go, and the count holds (no flapping back up).
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await?;
    eventually("one pod left", || async {
        let list = pods.list(&web).await?;
        Ok((list.items.len() == 1).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(pods.list(&web).await?.items.len() == 1);
    let status = sets.get("web").await?.status;
    ensure!(
        status.as_ref().is_some_and(|s| s.replicas == 1),
        "{status:?}"
    );

    // Every namespace gets a default ServiceAccount.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}}))?,
        )
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    eventually("the default ServiceAccount", || async {
        Ok(accounts.get_opt("default").await?.map(|_| ()))
    })
    .await?;
    Ok(())
}

fn deployment(image: &str) -> Result<k8s_openapi::api::apps::v1::Deployment> {
    Ok(serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image, "resources": {"requests": {"cpu": "100m"}}}]}}}}))?)
}

/// Waits until the rollout is complete, as `kubectl rollout status` judges it.
async fn rolled_out(deployments: &Api<k8s_openapi::api::apps::v1::Deployment>) -> Result<()> {
    let result = rollout_done(deployments).await;
    if result.is_err() {
        let d = deployments.get("web").await?;
        let sets: Api<ReplicaSet> = Api::namespaced(deployments.clone().into_client(), "default");
        let listed = sets.list(&ListParams::default()).await?;
        let states: Vec<String> = listed
            .items
            .iter()
            .map(|rs| {
                format!(
                    "{} gen {:?} spec {:?} status {:?}",
                    rs.name_any(),
                    rs.metadata.generation,
                    rs.spec.replicas,
                    rs.status
                )
            })
            .collect();
        bail!(
            "rollout stuck: generation {:?} status {:?}\n{}",
            d.metadata.generation,
            d.status,
            states.join("\n")
        );
    }
    result
}

async fn rollout_done(deployments: &Api<k8s_openapi::api::apps::v1::Deployment>) -> Result<()> {
    eventually("the rollout to complete", || async {
        let d = deployments.get("web").await?;
        let Some(status) = d.status else {
            return Ok(None);
        };
        let done = status.observed_generation >= d.metadata.generation
            && status.updated_replicas == Some(4)
            && status.replicas == Some(4)
            && status.available_replicas == Some(4)
            && status.conditions.iter().flatten().any(|c| {
                c.type_.as_deref() == Some("Progressing")
                    && c.reason.as_deref() == Some("NewReplicaSetAvailable")
            });
        Ok(done.then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_updates_stay_within_surge_and_unavailability() -> Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::runtime::{WatchStreamExt, watcher};
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 3).await?;
    let client = cluster.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("nginx:1")?)
        .await?;
    rolled_out(&deployments).await?;
    let available = deployments
        .get("web")
        .await?
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    ensure!(
        available
            .iter()
            .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")),
        "{available:?}"
    );

    // Watch every pod event while the image changes: never more than 4 + 1 pods that are
    // not terminating, never fewer than 4 - 1 of them ready.
    let violations = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = violations.clone();
    let watch = tokio::spawn(async move {
        let mut state: std::collections::BTreeMap<String, Pod> = Default::default();
        let mut listed = false;
        let mut events = std::pin::pin!(
            watcher(pods, watcher::Config::default().labels("app=web")).default_backoff()
        );
        while let Some(Ok(event)) = events.next().await {
            match event {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    state.insert(p.name_any(), p);
                }
                watcher::Event::Delete(p) => {
                    state.remove(&p.name_any());
                }
                watcher::Event::InitDone => listed = true,
                watcher::Event::Init => continue,
            }
            if !listed {
                continue;
            }
            let active: Vec<&Pod> = state
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ready_count = active.iter().filter(|p| ready(p)).count();
            if (active.len() > 5 || ready_count < 3)
                && let Ok(mut v) = seen.lock()
            {
                v.push(format!("{} active, {ready_count} ready", active.len()));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}})))
        .await?;
    rolled_out(&deployments).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    watch.abort();
    let broken = violations.lock().map(|v| v.clone()).unwrap_or_default();
    ensure!(
        broken.is_empty(),
        "rolling update broke its bounds: {broken:?}"
    );

    // Two ReplicaSets, revisions 1 and 2; the old one empty.
    let listed = sets.list(&ListParams::default()).await?;
    let mut revisions: Vec<(String, i32, String)> = listed
        .items
        .iter()
        .map(|rs| {
            let image = rs
                .spec
                .template
                .as_ref()
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            (
                rs.annotations()
                    .get("deployment.kubernetes.io/revision")
                    .cloned()
                    .unwrap_or_default(),
                rs.spec.replicas.unwrap_or(0),
                image,
            )
        })
        .collect();
    revisions.sort();
    ensure!(
        revisions
            == [
                ("1".to_owned(), 0, "nginx:1".to_owned()),
                ("2".to_owned(), 4, "nginx:2".to_owned())
            ],
        "{revisions:?}"
    );

    // Going back to the first template (what `rollout undo` does) revives its ReplicaSet
    // as revision 3.
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})))
        .await?;
    rolled_out(&deployments).await?;
    let back = sets.list(&ListParams::default()).await?;
    ensure!(back.items.len() == 2, "no third ReplicaSet");
    let revived = back
        .items
        .iter()
        .find(|rs| rs.spec.replicas == Some(4))
        .and_then(|rs| {
            rs.annotations()
                .get("deployment.kubernetes.io/revision")
                .cloned()
        });
    ensure!(revived.as_deref() == Some("3"), "{revived:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_owners_collects_or_orphans_their_dependents() -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let app = |name: &str| -> Result<Value> {
        Ok(json!({"metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "10m"}}}]}}}}))
    };
    let count = |label: &'static str| {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={label}")))
                .await?;
            anyhow::Ok(
                list.items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .count(),
            )
        }
    };

    // Background (the default): the Deployment goes, then its ReplicaSet, then the pods.
    deployments
        .create(&PostParams::default(), &serde_json::from_value(app("bg")?)?)
        .await?;
    eventually("two bg pods", || async {
        Ok((count("bg").await? == 2).then_some(()))
    })
    .await?;
    deployments.delete("bg", &DeleteParams::default()).await?;
    eventually("bg collected", || async {
        let sets_left = sets
            .list(&ListParams::default().labels("app=bg"))
            .await?
            .items
            .len();
        Ok((sets_left == 0 && count("bg").await? == 0).then_some(()))
    })
    .await?;

    // Orphan: the ReplicaSet goes, its pods stay, no longer owned.
    sets.create(
        &PostParams::default(),
        &serde_json::from_value(app("keep")?)?,
    )
    .await?;
    eventually("two keep pods", || async {
        Ok((count("keep").await? == 2).then_some(()))
    })
    .await?;
    sets.delete("keep", &DeleteParams::orphan()).await?;
    eventually("the orphaning owner gone", || async {
        Ok(sets.get_opt("keep").await?.is_none().then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = pods.list(&ListParams::default().labels("app=keep")).await?;
    ensure!(kept.items.len() == 2, "orphans stay: {}", kept.items.len());
    ensure!(
        kept.items.iter().all(|p| p.owner_references().is_empty()),
        "and are no longer owned"
    );

    // Foreground: the pods go first, then the ReplicaSet.
    sets.create(&PostParams::default(), &serde_json::from_value(app("fg")?)?)
        .await?;
    eventually("two fg pods", || async {
        Ok((count("fg").await? == 2).then_some(()))
    })
    .await?;
    sets.delete("fg", &DeleteParams::foreground()).await?;
    eventually("fg gone after its pods", || async {
        let left = pods
            .list(&ListParams::default().labels("app=fg"))
            .await?
            .items
            .len();
        Ok((left == 0 && sets.get_opt("fg").await?.is_none()).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_silent_node_are_replaced_elsewhere() -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "10m"}}}]}}}}))?;
    sets.create(&PostParams::default(), &rs).await?;
    let web = ListParams::default().labels("app=web");
    eventually("4 ready pods", || async {
        let list = pods.list(&web).await?;
        Ok((list.items.iter().filter(|p| ready(p)).count() == 4).then_some(()))
    })
    .await?;
    let on = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };
    let victim = on(&pods.list(&web).await?.items[0]);
    cluster.nodes.stop_heartbeat(&victim)?;
    // The node goes Unknown and tainted; its pods are evicted and replaced on the other.
    eventually("the node unreachable", || async {
        let node = nodes.get(&victim).await?;
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| {
                t.iter()
                    .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
            });
        let unknown = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Ready" && c.status == "Unknown")
            });
        Ok((tainted && unknown).then_some(()))
    })
    .await?;
    eventually("4 ready pods elsewhere", || async {
        let list = pods.list(&web).await?;
        let healthy = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p) && on(p) != victim)
            .count();
        Ok((healthy == 4).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_anti_affinity_spreads_replicas_across_nodes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 3).await?;
    let client = cluster.client.clone();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "spread"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "spread"}},
            "template": {"metadata": {"labels": {"app": "spread"}},
                "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "spread"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [{"name": "c", "image": "nginx"}]}}}}))?;
    sets.create(&PostParams::default(), &rs).await?;
    let list = ListParams::default().labels("app=spread");
    // Three run, one per node; the fourth cannot be placed.
    let nodes = eventually("three placed, one pending", || async {
        let items = pods.list(&list).await?.items;
        let placed: Vec<String> = items
            .iter()
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
            .collect();
        Ok((items.len() == 4 && placed.len() == 3).then_some(placed))
    })
    .await?;
    let mut distinct = nodes.clone();
    distinct.sort();
    distinct.dedup();
    ensure!(distinct.len() == 3, "{nodes:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let placed = pods
        .list(&list)
        .await?
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count();
    ensure!(placed == 3, "the fourth stays pending: {placed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_pod_preempts_a_lower_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 1).await?;
    let client = cluster.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let pod = |name: &str, cpu: &str, class: Option<&str>| -> Result<Pod> {
        let mut pod = json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "nginx",
                "resources": {"requests": {"cpu": cpu}}}]}});
        if let Some(class) = class {
            pod["spec"]["priorityClassName"] = Value::from(class);
        }
        Ok(serde_json::from_value(pod)?)
    };
    // The one node (4 CPUs) is mostly taken by a pod of the default priority.
    pods.create(&pp, &pod("low", "3", None)?).await?;
    eventually("low running", || async {
        Ok(ready(&pods.get("low").await?).then_some(()))
    })
    .await?;
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(client.clone());
    classes
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "urgent"}, "value": 1000}))?,
        )
        .await?;
    pods.create(&pp, &pod("urgent", "2", Some("urgent"))?)
        .await?;
    // The low pod is preempted (told why), and the urgent one runs in its place.
    let placed = eventually("urgent running", || async {
        let urgent = pods.get("urgent").await?;
        Ok(ready(&urgent)
            .then(|| urgent.spec.and_then(|s| s.node_name))
            .flatten())
    })
    .await?;
    ensure!(placed == "node-0", "{placed}");
    ensure!(
        pods.get_opt("low").await?.is_none(),
        "the preempted pod is gone"
    );
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let preempted = events
        .list(&ListParams::default().fields("involvedObject.name=low"))
        .await?
        .items
        .into_iter()
        .any(|e| e.reason.as_deref() == Some("Preempted"));
    ensure!(preempted, "a Preempted event on the victim");
    // A pod of the default priority never preempts: it waits.
    pods.create(&pp, &pod("patient", "3", None)?).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let urgent = pods.get("urgent").await?;
    ensure!(urgent.metadata.deletion_timestamp.is_none() && ready(&urgent));
    let patient = pods.get("patient").await?;
    ensure!(patient.spec.and_then(|s| s.node_name).is_none());
    drop(cluster.nodes);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_gets_its_own_pod_cidr() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 3).await?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client.clone());
    let cidrs = eventually("three pod CIDRs", || async {
        let list = nodes.list(&ListParams::default()).await?;
        let cidrs: Vec<String> = list
            .items
            .iter()
            .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
            .collect();
        Ok((cidrs.len() == 3).then_some(cidrs))
    })
    .await?;
    let distinct: std::collections::BTreeSet<&String> = cidrs.iter().collect();
    ensure!(distinct.len() == 3, "{cidrs:?}");
    ensure!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.42.") && c.ends_with(".0/24")),
        "{cidrs:?}"
    );
    // Kept for life: a status heartbeat later, the same CIDRs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again: std::collections::BTreeSet<String> = nodes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
        .collect();
    ensure!(again.iter().collect::<Vec<_>>() == distinct.into_iter().collect::<Vec<_>>());
    drop(cluster.nodes);
    Ok(())
}
