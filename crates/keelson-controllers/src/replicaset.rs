//! ReplicaSet controller: keeps `spec.replicas` active pods made from the template, owned
//! by the ReplicaSet, and reports how many exist, are ready and are available.
//!
//! Pods it has just created or deleted may not show in its pod cache yet; it remembers
//! them in its [`Expectations`](crate::expectations::Expectations), so a quick second
//! reconcile neither creates nor deletes twice.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::ControllerError;
use crate::events;
use crate::expectations::Expectations;
use crate::workload::{
    controller_ref, controller_uid, deletion_rank, is_active, is_available, pod_from_template,
    ready_since, selector_matches,
};

const COMPONENT: &str = "replicaset-controller";
/// At most this many pods created or deleted per reconcile.
const BURST: usize = 500;

struct Context {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations<()>,
}

pub async fn run(client: Client) {
    // The controller's own watch of pods triggers reconciles; this cache answers them.
    // One watch of pods: it fills the cache that reconciles read, and the same events
    // trigger them, so a reconcile never runs on a cache older than its trigger.
    let (pods, writer) = reflector::store();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let context = Arc::new(Context {
        client: client.clone(),
        pods,
        expectations: Expectations::new(),
    });
    Controller::new(Api::<ReplicaSet>::all(client), watcher::Config::default())
        .owns_stream(pod_events)
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<ReplicaSet>, error: &ControllerError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "replicaset controller");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    // Never count pods before the cache has them all: that would create duplicates.
    if ctx.pods.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let spec = &rs.spec;
    let wanted = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    let in_namespace: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .collect();
    let mut owned: Vec<Arc<Pod>> = in_namespace
        .iter()
        .filter(|p| controller_uid(&p.metadata) == Some(uid.as_str()))
        .cloned()
        .collect();
    // Orphans the selector matches are adopted, as upstream does.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    for orphan in in_namespace.iter().filter(|p| {
        controller_uid(&p.metadata).is_none()
            && is_active(p)
            && selector_matches(&spec.selector, &p.labels().clone())
    }) {
        let mut owners = orphan.metadata.owner_references.clone().unwrap_or_default();
        owners.push(controller_ref(rs.as_ref()));
        let patch = json!({"metadata": {"ownerReferences": owners, "uid": orphan.metadata.uid}});
        match pods
            .patch(
                &orphan.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(adopted) => owned.push(Arc::new(adopted)),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    let (created, pending_deletes) = ctx.expectations.outstanding(&uid, &owned);
    let pending_creates = created.len();
    let mut active: Vec<&Arc<Pod>> = owned
        .iter()
        .filter(|p| is_active(p) && !pending_deletes.contains(&p.name_any()))
        .collect();
    let have = active.len() + pending_creates;

    if have < wanted {
        let template = spec.template.as_ref().ok_or_else(|| {
            ControllerError::Invalid(format!("replicaset {name} has no template"))
        })?;
        // Upstream's slow start: batches of 1, 2, 4, … created concurrently, stopping at
        // the first batch with a failure (a quota or a bad template fails fast, not 500 times).
        let mut left = (wanted - have).min(BURST);
        let mut batch = 1;
        while left > 0 {
            let size = batch.min(left);
            let results = futures::future::join_all((0..size).map(|_| {
                let pod = pod_from_template(template, controller_ref(rs.as_ref()), &name);
                let pods = pods.clone();
                async move { pods.create(&PostParams::default(), &pod).await }
            }))
            .await;
            let mut failed = None;
            for result in results {
                match result {
                    Ok(created) => {
                        let pod_name = created.name_any();
                        ctx.expectations.created(&uid, pod_name.clone(), ());
                        let (client, rs) = (ctx.client.clone(), rs.clone());
                        tokio::spawn(async move {
                            events::record(
                                &client,
                                COMPONENT,
                                rs.as_ref(),
                                "Normal",
                                "SuccessfulCreate",
                                &format!("Created pod: {pod_name}"),
                            )
                            .await;
                        });
                    }
                    Err(error) => failed = Some(error),
                }
            }
            if let Some(error) = failed {
                return Err(error.into());
            }
            left -= size;
            batch *= 2;
        }
    } else if have > wanted {
        active.sort_by_key(|p| deletion_rank(p));
        for pod in active.iter().take((have - wanted).min(BURST)) {
            let pod_name = pod.name_any();
            match pods.delete(&pod_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
            ctx.expectations.deleted(&uid, pod_name.clone());
            events::record(
                &ctx.client,
                COMPONENT,
                rs.as_ref(),
                "Normal",
                "SuccessfulDelete",
                &format!("Deleted pod: {pod_name}"),
            )
            .await;
        }
    }

    // Status, from what the cache shows.
    let now = Timestamp::now();
    // Pods it just deleted are gone as far as its status says, even before the cache knows.
    let deleted_now = ctx.expectations.deleting(&uid);
    let counted: Vec<&Arc<Pod>> = owned
        .iter()
        .filter(|p| is_active(p) && !deleted_now.contains(&p.name_any()))
        .collect();
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = counted
        .iter()
        .filter(|p| {
            let labels = p.labels();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = counted.iter().filter(|p| ready_since(p).is_some()).count();
    let available = counted
        .iter()
        .filter(|p| is_available(p, min_ready, now))
        .count();
    let status = json!({"status": {
        "replicas": counted.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
    }});
    let current = rs.status.as_ref();
    let unchanged = current.is_some_and(|s| {
        usize::try_from(s.replicas).ok() == Some(counted.len())
            && s.ready_replicas
                .and_then(|r| usize::try_from(r).ok())
                .unwrap_or(0)
                == ready
            && s.available_replicas
                .and_then(|r| usize::try_from(r).ok())
                .unwrap_or(0)
                == available
            && s.fully_labeled_replicas
                .and_then(|r| usize::try_from(r).ok())
                .unwrap_or(0)
                == fully_labeled
            && s.observed_generation == rs.metadata.generation
    });
    if !unchanged {
        let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
        sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    // Pods that are ready but not yet available become available with time alone.
    if ready > available && min_ready > 0 {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if pending_creates > 0 || !pending_deletes.is_empty() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    Ok(Action::await_change())
}
