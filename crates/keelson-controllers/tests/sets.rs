//! StatefulSets and DaemonSets against a real, in-process API server, with the scheduler
//! and simulated nodes running as they do in `keelson server` and `keelson agent
//! --simulate`. Orderings are asserted on the pod watch: events arrive in the order the
//! store wrote them, so "created after its predecessor was Ready" is exact.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod support;

use anyhow::{Result, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod};
use keelson_agent::{SimConfig, SimulatedNodes};
use keelson_apiserver::testing::eventually;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::Cluster;

/// A server, the scheduler, the controllers and `nodes` simulated nodes whose pods become
/// Ready `start_delay` after they are bound.
async fn start(dir: &std::path::Path, nodes: usize, start_delay: Duration) -> Result<Cluster> {
    support::start_with(dir, support::controllers(), sim("node", nodes, start_delay)).await
}

fn sim(prefix: &str, count: usize, start_delay: Duration) -> SimConfig {
    let mut sim = support::sim(prefix, count);
    sim.start_delay = start_delay;
    sim
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// One pod event as the watch delivered it.
#[derive(Clone, Debug)]
enum Seen {
    Added(Pod),
    Modified(Pod),
    Deleted(Pod),
}

/// Every event of the pods `labels` selects, in order, from the moment it returns.
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(pods: Api<Pod>, labels: &str) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let (listed, on_listed) = tokio::sync::oneshot::channel();
        let config = watcher::Config::default().labels(labels);
        let task = tokio::spawn(async move {
            let mut listed = Some(listed);
            let mut known = std::collections::HashSet::new();
            let mut events = std::pin::pin!(watcher(pods, config).default_backoff());
            while let Some(Ok(event)) = events.next().await {
                let entry = match event {
                    watcher::Event::InitDone => {
                        if let Some(listed) = listed.take() {
                            let _ = listed.send(());
                        }
                        continue;
                    }
                    watcher::Event::Init => continue,
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        if known.insert(p.name_any()) {
                            Seen::Added(p)
                        } else {
                            Seen::Modified(p)
                        }
                    }
                    watcher::Event::Delete(p) => {
                        known.remove(&p.name_any());
                        Seen::Deleted(p)
                    }
                };
                if let Ok(mut seen) = into.lock() {
                    seen.push(entry);
                }
            }
        });
        on_listed.await?;
        Ok(Recorder { seen, task })
    }

    fn events(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn web(policy: &str, replicas: i32, partition: i32) -> Result<StatefulSet> {
    Ok(serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": replicas, "serviceName": "web", "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": "web"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1", "resources": {"requests": {"cpu": "10m"}}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}))?)
}

async fn ready_replicas(sets: &Api<StatefulSet>, want: i32) -> Result<StatefulSet> {
    Ok(eventually(&format!("{want} ready replicas"), || async {
        let set = sets.get("web").await?;
        let done = set.status.as_ref().is_some_and(|s| {
            s.ready_replicas.unwrap_or(0) == want
                && s.replicas == want
                && s.observed_generation == set.metadata.generation
        });
        Ok(done.then_some(set))
    })
    .await?)
}

/// Pod names of the events in `events` matching `keep`, in order.
fn names(events: &[Seen], keep: impl Fn(&Seen) -> bool) -> Vec<String> {
    events
        .iter()
        .filter(|e| keep(e))
        .map(|e| match e {
            Seen::Added(p) | Seen::Modified(p) | Seen::Deleted(p) => p.name_any(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_stateful_sets_start_in_order_and_stop_from_the_top() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2, Duration::from_millis(300)).await?;
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let recorder = Recorder::start(pods.clone(), "app=web").await?;
    sets.create(&PostParams::default(), &web("OrderedReady", 3, 0)?)
        .await?;
    let set = ready_replicas(&sets, 3).await?;

    // Pod i appears only once pod i-1 is Ready.
    let mut state: BTreeMap<String, Pod> = BTreeMap::new();
    let mut created = Vec::new();
    for event in recorder.events() {
        match event {
            Seen::Added(pod) => {
                let name = pod.name_any();
                if let Some(ordinal) = name
                    .strip_prefix("web-")
                    .and_then(|o| o.parse::<u32>().ok())
                    .filter(|o| *o > 0)
                {
                    let before = format!("web-{}", ordinal - 1);
                    ensure!(
                        state.get(&before).is_some_and(ready),
                        "{name} created before {before} was Ready"
                    );
                }
                created.push(name.clone());
                state.insert(name, pod);
            }
            Seen::Modified(pod) => {
                state.insert(pod.name_any(), pod);
            }
            Seen::Deleted(pod) => {
                state.remove(&pod.name_any());
            }
        }
    }
    ensure!(created == ["web-0", "web-1", "web-2"], "{created:?}");

    // Stable identities, their own claims, the revision they were made from.
    let status = set.status.clone().unwrap_or_default();
    let revision = status.update_revision.clone().unwrap_or_default();
    ensure!(
        revision.starts_with("web-") && status.current_revision.as_ref() == Some(&revision),
        "{status:?}"
    );
    ensure!(
        status.current_replicas == Some(3) && status.updated_replicas == Some(3),
        "{status:?}"
    );
    for ordinal in 0..3 {
        let name = format!("web-{ordinal}");
        let pod = pods.get(&name).await?;
        let labels = pod.labels();
        ensure!(
            labels.get("statefulset.kubernetes.io/pod-name") == Some(&name)
                && labels.get("apps.kubernetes.io/pod-index") == Some(&ordinal.to_string())
                && labels.get("controller-revision-hash") == Some(&revision),
            "{labels:?}"
        );
        let spec = pod.spec.clone().unwrap_or_default();
        ensure!(
            spec.hostname.as_deref() == Some(name.as_str())
                && spec.subdomain.as_deref() == Some("web"),
            "{spec:?}"
        );
        let claim = format!("data-web-{ordinal}");
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone());
        ensure!(volume.as_ref() == Some(&claim), "{volume:?}");
        let made = claims.get(&claim).await?;
        ensure!(
            made.labels().get("app").map(String::as_str) == Some("web"),
            "{:?}",
            made.labels()
        );
        ensure!(
            pod.owner_references()
                .iter()
                .any(|o| o.kind == "StatefulSet" && o.controller == Some(true)),
            "owned by the set"
        );
    }
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let stored = revisions.get(&revision).await?;
    ensure!(stored.revision == Some(1), "{:?}", stored.revision);
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let messages: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
        .filter_map(|e| e.message)
        .collect();
    ensure!(
        messages
            .iter()
            .any(|m| m == "create Pod web-0 in StatefulSet web successful"),
        "{messages:?}"
    );

    // Scaled down: web-2 goes first, and web-1 only once web-2 is gone.
    let before = recorder.events().len();
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await?;
    ready_replicas(&sets, 1).await?;
    eventually("one pod left", || async {
        Ok((pods.list(&ListParams::default()).await?.items.len() == 1).then_some(()))
    })
    .await?;
    let events = recorder.events().split_off(before);
    let terminated = names(
        &events,
        |e| matches!(e, Seen::Modified(p) if p.metadata.deletion_timestamp.is_some()),
    );
    let first = |name: &str| terminated.iter().position(|n| n == name);
    let gone = names(&events, |e| matches!(e, Seen::Deleted(_)));
    ensure!(gone == ["web-2", "web-1"], "{gone:?}");
    let web2_gone = events
        .iter()
        .position(|e| matches!(e, Seen::Deleted(p) if p.name_any() == "web-2"));
    let web1_marked = events.iter().position(
        |e| matches!(e, Seen::Modified(p) if p.name_any() == "web-1" && p.metadata.deletion_timestamp.is_some()),
    );
    ensure!(
        first("web-2") < first("web-1") && web2_gone < web1_marked,
        "{terminated:?}"
    );
    // The claims stay (Retain).
    let left = claims.list(&ListParams::default()).await?.items.len();
    ensure!(left == 3, "claims kept: {left}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_stateful_sets_start_at_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Pods take a second to start: all three must exist before the first is Ready.
    let cluster = start(dir.path(), 2, Duration::from_secs(1)).await?;
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let recorder = Recorder::start(pods.clone(), "app=web").await?;
    sets.create(&PostParams::default(), &web("Parallel", 3, 0)?)
        .await?;
    ready_replicas(&sets, 3).await?;
    let events = recorder.events();
    let first_ready = events
        .iter()
        .position(|e| matches!(e, Seen::Modified(p) if ready(p)))
        .unwrap_or(events.len());
    let added = names(&events[..first_ready], |e| matches!(e, Seen::Added(_)));
    ensure!(added.len() == 3, "created before any was Ready: {added:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_updates_go_from_the_top_down_to_the_partition() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2, Duration::from_millis(200)).await?;
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    sets.create(&PostParams::default(), &web("OrderedReady", 3, 1)?)
        .await?;
    let first = ready_replicas(&sets, 3).await?;
    let old_revision = first
        .status
        .and_then(|s| s.update_revision)
        .unwrap_or_default();
    let recorder = Recorder::start(pods.clone(), "app=web").await?;
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(&json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}})),
    )
    .await?;
    let set = eventually("ordinals 1 and 2 updated", || async {
        let set = sets.get("web").await?;
        let done = set.status.as_ref().is_some_and(|s| {
            s.observed_generation == set.metadata.generation
                && s.updated_replicas == Some(2)
                && s.ready_replicas == Some(3)
        });
        Ok(done.then_some(set))
    })
    .await?;
    let status = set.status.unwrap_or_default();
    let new_revision = status.update_revision.clone().unwrap_or_default();
    ensure!(new_revision != old_revision, "{status:?}");
    ensure!(
        status.current_revision.as_ref() == Some(&old_revision)
            && status.current_replicas == Some(1),
        "below the partition the current revision stays: {status:?}"
    );
    let images: Vec<(String, String)> = (0..3)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod = pods.get(&format!("web-{i}")).await?;
                anyhow::Ok((
                    image(&pod),
                    pod.labels()
                        .get("controller-revision-hash")
                        .cloned()
                        .unwrap_or_default(),
                ))
            }
        })
        .collect::<futures::stream::FuturesOrdered<_>>()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    ensure!(
        images
            == [
                ("nginx:1".to_owned(), old_revision.clone()),
                ("nginx:2".to_owned(), new_revision.clone()),
                ("nginx:2".to_owned(), new_revision.clone()),
            ],
        "{images:?}"
    );
    // web-2 was replaced first; web-1 went only once the new web-2 was Ready.
    let events = recorder.events();
    let marked = |name: &str| {
        events.iter().position(|e| {
            matches!(e, Seen::Modified(p) if p.name_any() == name && p.metadata.deletion_timestamp.is_some())
        })
    };
    let new_web2_ready = events.iter().position(
        |e| matches!(e, Seen::Modified(p) if p.name_any() == "web-2" && image(p) == "nginx:2" && ready(p)),
    );
    ensure!(
        marked("web-2").is_some() && new_web2_ready.is_some() && new_web2_ready < marked("web-1"),
        "order: web-2 marked {:?}, new web-2 ready {new_web2_ready:?}, web-1 marked {:?}",
        marked("web-2"),
        marked("web-1")
    );
    ensure!(marked("web-0").is_none(), "web-0 is below the partition");

    // Partition 0: web-0 follows, and the update revision becomes the current one.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await?;
    eventually("the whole set updated", || async {
        let set = sets.get("web").await?;
        let done = set.status.as_ref().is_some_and(|s| {
            s.observed_generation == set.metadata.generation
                && s.updated_replicas == Some(3)
                && s.ready_replicas == Some(3)
                && s.current_revision.as_ref() == Some(&new_revision)
                && s.current_replicas == Some(3)
        });
        Ok(done.then_some(()))
    })
    .await?;
    ensure!(image(&pods.get("web-0").await?) == "nginx:2");

    // OnDelete: a new template replaces nothing by itself; a deleted pod comes back new.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null},
            "template": {"spec": {"containers": [{"name": "c", "image": "nginx:3", "resources": {"requests": {"cpu": "10m"}}}]}}}})),
    )
    .await?;
    // The status is written after the pass over the pods, so once it shows the new
    // revision, any replacement would already have begun.
    eventually("the new revision observed", || async {
        let set = sets.get("web").await?;
        let done = set.status.as_ref().is_some_and(|s| {
            s.observed_generation == set.metadata.generation
                && s.update_revision.as_ref() != Some(&new_revision)
                && s.updated_replicas == Some(0)
        });
        Ok(done.then_some(()))
    })
    .await?;
    let untouched = pods
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && image(p) == "nginx:2")
        .count();
    ensure!(untouched == 3, "OnDelete replaced pods: {untouched} left");
    let old_uid = pods.get("web-1").await?.metadata.uid;
    pods.delete("web-1", &DeleteParams::default()).await?;
    eventually("web-1 back with the new template", || async {
        let pod = pods.get_opt("web-1").await?;
        Ok(pod
            .filter(|p| p.metadata.uid != old_uid && ready(p) && image(p) == "nginx:3")
            .map(|_| ()))
    })
    .await?;
    ensure!(image(&pods.get("web-0").await?) == "nginx:2");
    ensure!(image(&pods.get("web-2").await?) == "nginx:2");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_follow_the_retention_policy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2, Duration::from_millis(100)).await?;
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let claim_names = || async {
        let mut names: Vec<String> = claims
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .map(|c| c.name_any())
            .collect();
        names.sort();
        anyhow::Ok(names)
    };

    // Retain (the default): deleting the set takes its pods and revisions, not its claims.
    sets.create(&PostParams::default(), &web("Parallel", 2, 0)?)
        .await?;
    ready_replicas(&sets, 2).await?;
    sets.delete("web", &DeleteParams::default()).await?;
    eventually("pods and revisions collected", || async {
        let left = pods.list(&ListParams::default()).await?.items.len()
            + revisions.list(&ListParams::default()).await?.items.len();
        Ok((left == 0).then_some(()))
    })
    .await?;
    ensure!(claim_names().await? == ["data-web-0", "data-web-1"]);

    // Delete on scale-down and on deletion: the claims of ordinals scaled away go (those
    // made under Retain too), and the rest go with the set.
    let mut set = web("Parallel", 3, 0)?;
    set.spec.persistent_volume_claim_retention_policy = Some(serde_json::from_value(
        json!({"whenDeleted": "Delete", "whenScaled": "Delete"}),
    )?);
    sets.create(&PostParams::default(), &set).await?;
    ready_replicas(&sets, 3).await?;
    ensure!(claim_names().await? == ["data-web-0", "data-web-1", "data-web-2"]);
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await?;
    let claims_left = |want: &'static [&'static str]| {
        let claim_names = &claim_names;
        async move {
            eventually(&format!("claims {want:?}"), || async {
                let names = claim_names()
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Ok((names == want).then_some(()))
            })
            .await
        }
    };
    claims_left(&["data-web-0"]).await?;
    let kept = claims.get("data-web-0").await?;
    ensure!(
        kept.owner_references()
            .iter()
            .any(|o| o.kind == "StatefulSet" && o.name == "web"),
        "the retained claim is now the set's: {:?}",
        kept.owner_references()
    );
    sets.delete("web", &DeleteParams::default()).await?;
    claims_left(&[]).await?;
    eventually("the pods collected", || async {
        let left = pods.list(&ListParams::default()).await?.items.len();
        Ok((left == 0).then_some(()))
    })
    .await?;
    Ok(())
}

fn daemon(name: &str, extra_spec: Value) -> Result<DaemonSet> {
    let mut spec = json!({"containers": [{"name": "c", "image": "agent:1", "resources": {"requests": {"cpu": "10m"}}}]});
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra_spec) {
        spec.extend(extra);
    }
    Ok(serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}))?)
}

/// The nodes running a ready pod of `app`, once they are exactly `want`.
async fn daemon_nodes(pods: &Api<Pod>, app: &str, want: &[&str]) -> Result<()> {
    let labels = format!("app={app}");
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    let result = eventually(&format!("{app} pods on {want:?}"), || async {
        let list = pods.list(&ListParams::default().labels(&labels)).await?;
        let mut on: Vec<String> = list
            .items
            .iter()
            .filter(|p| ready(p))
            .map(node_of)
            .collect();
        on.sort();
        Ok((on == want && list.items.len() == want.len()).then_some(()))
    })
    .await;
    if let Err(error) = result {
        let list = pods.list(&ListParams::default().labels(&labels)).await?;
        let have: Vec<(String, String, bool)> = list
            .items
            .iter()
            .map(|p| (p.name_any(), node_of(p), ready(p)))
            .collect();
        anyhow::bail!("{error}: have {have:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sets_run_one_pod_per_eligible_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 3, Duration::from_millis(100)).await?;
    let client = cluster.client.clone();
    let daemons: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            "node-2",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
                "metadata": {"labels": {"disk": "ssd"}}})),
        )
        .await?;
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"disk": "ssd"}}})),
        )
        .await?;

    // The tainted node is left out.
    daemons
        .create(&PostParams::default(), &daemon("agent", json!({}))?)
        .await?;
    daemon_nodes(&pods, "agent", &["node-0", "node-1"]).await?;
    let pod = pods
        .list(&ListParams::default().labels("app=agent"))
        .await?
        .items
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no pod"))?;
    let spec = pod.spec.clone().unwrap_or_default();
    let pinned = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| serde_json::to_value(&r.node_selector_terms))
        .transpose()?;
    ensure!(
        pinned
            == Some(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_of(&pod)]}]}])
            ),
        "{pinned:?}"
    );
    let tolerated: Vec<String> = spec
        .tolerations
        .iter()
        .flatten()
        .filter_map(|t| t.key.clone())
        .collect();
    ensure!(
        tolerated.contains(&"node.kubernetes.io/unreachable".to_owned())
            && tolerated.contains(&"node.kubernetes.io/unschedulable".to_owned()),
        "{tolerated:?}"
    );
    ensure!(
        pod.labels().contains_key("controller-revision-hash")
            && pod
                .labels()
                .get("pod-template-generation")
                .map(String::as_str)
                == Some("1"),
        "{:?}",
        pod.labels()
    );
    let status = eventually("the agent status", || async {
        let status = daemons.get("agent").await?.status;
        Ok(status.filter(|s| s.number_ready == 2))
    })
    .await?;
    ensure!(
        status.desired_number_scheduled == 2
            && status.current_number_scheduled == 2
            && status.updated_number_scheduled == Some(2)
            && status.number_available == Some(2)
            && status.number_misscheduled == 0,
        "{status:?}"
    );

    // Tolerating the taint brings the node in.
    daemons
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"template": {"spec": {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}}}})),
        )
        .await?;
    daemon_nodes(&pods, "agent", &["node-0", "node-1", "node-2"]).await?;

    // A node selector picks the nodes.
    daemons
        .create(
            &PostParams::default(),
            &daemon(
                "ssd",
                json!({"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
            )?,
        )
        .await?;
    daemon_nodes(&pods, "ssd", &["node-1", "node-2"]).await?;

    // A new node gets a pod; a node no longer selected loses its pod.
    let extra =
        SimulatedNodes::start(client.clone(), sim("extra", 1, Duration::from_millis(100))).await?;
    daemon_nodes(&pods, "agent", &["node-0", "node-1", "node-2", "extra-0"]).await?;
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"disk": null}}})),
        )
        .await?;
    daemon_nodes(&pods, "ssd", &["node-2"]).await?;

    // A node removed: its pod goes.
    drop(extra);
    nodes.delete("extra-0", &DeleteParams::default()).await?;
    daemon_nodes(&pods, "agent", &["node-0", "node-1", "node-2"]).await?;
    Ok(())
}

/// Waits until `kubectl rollout status daemonset/agent` would say it rolled out.
async fn daemon_rolled_out(daemons: &Api<DaemonSet>, nodes: i32) -> Result<()> {
    eventually("the rollout to complete", || async {
        let ds = daemons.get("agent").await?;
        let done = ds.status.as_ref().is_some_and(|s| {
            s.observed_generation == ds.metadata.generation
                && s.desired_number_scheduled == nodes
                && s.updated_number_scheduled == Some(nodes)
                && s.number_available == Some(nodes)
        });
        Ok(done.then_some(()))
    })
    .await?;
    Ok(())
}

/// What a rollout did, replayed from the pod watch: the most nodes without a ready pod at
/// once, the most ready pods on one node at once, and how many pods went. The first
/// `listed` events are the initial list, not yet judged.
fn replay(events: Vec<Seen>, listed: usize, nodes: &[&str]) -> (usize, usize, usize) {
    let mut state: BTreeMap<String, Pod> = BTreeMap::new();
    let (mut uncovered_most, mut crowded_most, mut deleted) = (0, 0, 0);
    for (index, event) in events.into_iter().enumerate() {
        match event {
            Seen::Added(pod) | Seen::Modified(pod) => {
                state.insert(pod.name_any(), pod);
            }
            Seen::Deleted(pod) => {
                deleted += 1;
                state.remove(&pod.name_any());
            }
        }
        if index + 1 < listed {
            continue;
        }
        let mut ready_on: BTreeMap<String, usize> = BTreeMap::new();
        for pod in state.values().filter(|p| ready(p)) {
            *ready_on.entry(node_of(pod)).or_default() += 1;
        }
        let uncovered = nodes.iter().filter(|n| !ready_on.contains_key(**n)).count();
        uncovered_most = uncovered_most.max(uncovered);
        crowded_most = crowded_most.max(ready_on.values().copied().max().unwrap_or(0));
    }
    (uncovered_most, crowded_most, deleted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_set_rolling_updates_stay_within_their_bounds() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 4, Duration::from_millis(300)).await?;
    let client = cluster.client.clone();
    let daemons: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let all = ["node-0", "node-1", "node-2", "node-3"];
    daemons
        .create(&PostParams::default(), &daemon("agent", json!({}))?)
        .await?;
    daemon_nodes(&pods, "agent", &all).await?;
    let images = || async {
        let list = pods
            .list(&ListParams::default().labels("app=agent"))
            .await?;
        anyhow::Ok(list.items.iter().map(image).collect::<Vec<_>>())
    };

    // maxUnavailable 1: one node at a time loses its pod.
    let recorder = Recorder::start(pods.clone(), "app=agent").await?;
    let listed = recorder.events().len();
    ensure!(listed == 4, "{listed} pods listed");
    daemons
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Strategic(&json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}})),
        )
        .await?;
    daemon_rolled_out(&daemons, 4).await?;
    daemon_nodes(&pods, "agent", &all).await?;
    ensure!(images().await? == ["agent:2"; 4], "every pod updated");
    let (uncovered, crowded, deleted) = replay(recorder.events(), listed, &all);
    ensure!(deleted == 4, "each old pod replaced: {deleted}");
    ensure!(
        uncovered <= 1,
        "{uncovered} nodes were without a ready pod at once"
    );
    ensure!(crowded == 1, "no surge asked for, {crowded} pods on a node");
    drop(recorder);

    // maxSurge 1, maxUnavailable 0: the new pod is ready beside the old one before the old
    // one goes, so no node is ever without one.
    let recorder = Recorder::start(pods.clone(), "app=agent").await?;
    let listed = recorder.events().len();
    daemons
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Strategic(&json!({"spec": {
                "updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"spec": {"containers": [{"name": "c", "image": "agent:3"}]}}}})),
        )
        .await?;
    daemon_rolled_out(&daemons, 4).await?;
    daemon_nodes(&pods, "agent", &all).await?;
    ensure!(images().await? == ["agent:3"; 4], "every pod updated");
    let (uncovered, crowded, deleted) = replay(recorder.events(), listed, &all);
    ensure!(deleted == 4, "each old pod replaced: {deleted}");
    ensure!(uncovered == 0, "{uncovered} nodes were without a ready pod");
    ensure!(
        crowded == 2,
        "surged: {crowded} ready pods on a node at most"
    );

    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let mut numbers: Vec<i64> = revisions
        .list(&ListParams::default().labels("app=agent"))
        .await?
        .items
        .iter()
        .filter_map(|r| r.revision)
        .collect();
    numbers.sort();
    ensure!(numbers == [1, 2, 3], "{numbers:?}");
    Ok(())
}
