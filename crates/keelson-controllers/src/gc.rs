//! Garbage collector, for what the workload controllers own (Deployments own ReplicaSets,
//! ReplicaSets own Pods; StatefulSets and DaemonSets own Pods and ControllerRevisions, and
//! StatefulSets the PersistentVolumeClaims their retention policy deletes; CronJobs own
//! Jobs, Jobs own Pods): dependents whose owners are gone are deleted (background
//! propagation); an owner being deleted with the `orphan` finalizer has its dependents'
//! references to it removed, with `foregroundDeletion` its dependents deleted first; the
//! finalizer is removed once that is done. An owner is only judged gone after a live read
//! says so, never from a cache alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Notify;

use crate::ControllerError;
use crate::cache::watched;

/// What the collector watches: the owners and their dependents.
struct Caches {
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    stateful: Store<StatefulSet>,
    daemons: Store<DaemonSet>,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    claims: Store<PersistentVolumeClaim>,
    cron_jobs: Store<CronJob>,
    jobs: Store<Job>,
}

pub async fn run(client: Client) {
    let wake = Arc::new(Notify::new());
    let caches = Caches {
        deployments: watched(Api::all(client.clone()), Some(wake.clone())),
        sets: watched(Api::all(client.clone()), Some(wake.clone())),
        stateful: watched(Api::all(client.clone()), Some(wake.clone())),
        daemons: watched(Api::all(client.clone()), Some(wake.clone())),
        pods: watched(Api::all(client.clone()), Some(wake.clone())),
        revisions: watched(Api::all(client.clone()), Some(wake.clone())),
        claims: watched(Api::all(client.clone()), Some(wake.clone())),
        cron_jobs: watched(Api::all(client.clone()), Some(wake.clone())),
        jobs: watched(Api::all(client.clone()), Some(wake.clone())),
    };
    for ready in [
        caches.deployments.wait_until_ready().await,
        caches.sets.wait_until_ready().await,
        caches.stateful.wait_until_ready().await,
        caches.daemons.wait_until_ready().await,
        caches.pods.wait_until_ready().await,
        caches.revisions.wait_until_ready().await,
        caches.claims.wait_until_ready().await,
        caches.cron_jobs.wait_until_ready().await,
        caches.jobs.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        if let Err(error) = sweep(&client, &caches).await {
            tracing::warn!(%error, "garbage collector");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// An owner as the collector knows it: its metadata and whether it is going away.
struct Owner {
    meta: ObjectMeta,
}

fn owners_of<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> HashMap<String, Owner> {
    store
        .state()
        .iter()
        .map(|o| {
            (
                o.meta().uid.clone().unwrap_or_default(),
                Owner {
                    meta: o.meta().clone(),
                },
            )
        })
        .collect()
}

async fn sweep(client: &Client, caches: &Caches) -> Result<(), ControllerError> {
    let deployment_owners = owners_of(&caches.deployments);
    let set_owners = owners_of(&caches.sets);
    let stateful_owners = owners_of(&caches.stateful);
    let daemon_owners = owners_of(&caches.daemons);
    let (sets, pods) = (caches.sets.state(), caches.pods.state());
    let (revisions, claims) = (caches.revisions.state(), caches.claims.state());
    // ReplicaSets owned by Deployments, Pods owned by ReplicaSets.
    collect(
        client,
        &sets,
        "Deployment",
        &deployment_owners,
        Api::<Deployment>::namespaced,
    )
    .await?;
    collect(client, &pods, "ReplicaSet", &set_owners, |c, ns| {
        Api::<ReplicaSet>::namespaced(c, ns)
    })
    .await?;
    // Pods and revisions of StatefulSets and DaemonSets, claims of StatefulSets.
    let stateful_api = |c, ns: &str| Api::<StatefulSet>::namespaced(c, ns);
    let daemon_api = |c, ns: &str| Api::<DaemonSet>::namespaced(c, ns);
    collect(client, &pods, "StatefulSet", &stateful_owners, stateful_api).await?;
    collect(
        client,
        &revisions,
        "StatefulSet",
        &stateful_owners,
        stateful_api,
    )
    .await?;
    collect(
        client,
        &claims,
        "StatefulSet",
        &stateful_owners,
        stateful_api,
    )
    .await?;
    collect(client, &pods, "DaemonSet", &daemon_owners, daemon_api).await?;
    collect(client, &revisions, "DaemonSet", &daemon_owners, daemon_api).await?;
    // Jobs owned by CronJobs, Pods owned by Jobs.
    let jobs = caches.jobs.state();
    let cron_job_owners = owners_of(&caches.cron_jobs);
    let job_owners = owners_of(&caches.jobs);
    collect(
        client,
        &jobs,
        "CronJob",
        &cron_job_owners,
        Api::<CronJob>::namespaced,
    )
    .await?;
    collect(client, &pods, "Job", &job_owners, |c, ns| {
        Api::<Job>::namespaced(c, ns)
    })
    .await?;
    let mut referenced = referenced_owners(&sets);
    referenced.extend(referenced_owners(&jobs));
    referenced.extend(referenced_owners(&pods));
    referenced.extend(referenced_owners(&revisions));
    referenced.extend(referenced_owners(&claims));
    finish_owners(client, caches.deployments.state(), &referenced).await?;
    finish_owners(client, caches.sets.state(), &referenced).await?;
    finish_owners(client, caches.stateful.state(), &referenced).await?;
    finish_owners(client, caches.daemons.state(), &referenced).await?;
    finish_owners(client, caches.cron_jobs.state(), &referenced).await?;
    finish_owners(client, caches.jobs.state(), &referenced).await?;
    Ok(())
}

/// The UIDs dependents name as their owners.
fn referenced_owners<K: Resource>(dependents: &[Arc<K>]) -> HashSet<String> {
    dependents
        .iter()
        .flat_map(|d| d.owner_references().iter().map(|r| r.uid.clone()))
        .collect()
}

/// Handles the dependents (`K`) of owners of `owner_kind`.
async fn collect<K, O>(
    client: &Client,
    dependents: &[Arc<K>],
    owner_kind: &str,
    owners: &HashMap<String, Owner>,
    owner_api: impl Fn(Client, &str) -> Api<O>,
) -> Result<(), ControllerError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    O: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    for dependent in dependents {
        let namespace = dependent.namespace().unwrap_or_default();
        let references: Vec<_> = dependent
            .owner_references()
            .iter()
            .filter(|r| r.kind == owner_kind)
            .cloned()
            .collect();
        if references.is_empty() || dependent.meta().deletion_timestamp.is_some() {
            continue;
        }
        let api: Api<K> = Api::namespaced(client.clone(), &namespace);
        for reference in &references {
            let owner = owners.get(&reference.uid);
            let finalizers = owner
                .map(|o| o.meta.finalizers.clone().unwrap_or_default())
                .unwrap_or_default();
            let deleting = owner.is_some_and(|o| o.meta.deletion_timestamp.is_some());
            if deleting && finalizers.iter().any(|f| f == "orphan") {
                // Orphan: drop the reference, keep the dependent.
                let kept: Vec<_> = dependent
                    .owner_references()
                    .iter()
                    .filter(|r| r.uid != reference.uid)
                    .cloned()
                    .collect();
                let patch =
                    json!({"metadata": {"ownerReferences": kept, "uid": dependent.meta().uid}});
                ignore_gone(
                    api.patch(
                        &dependent.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await,
                )?;
            } else if deleting && finalizers.iter().any(|f| f == "foregroundDeletion") {
                delete(&api, dependent.as_ref()).await?;
            }
        }
        // Background: every owner gone (checked live) → the dependent goes.
        let mut all_gone = true;
        for reference in &references {
            if owners.contains_key(&reference.uid) {
                all_gone = false;
                break;
            }
            let live = owner_api(client.clone(), &namespace)
                .get_opt(&reference.name)
                .await?;
            if live.is_some_and(|o| o.meta().uid.as_deref() == Some(reference.uid.as_str())) {
                all_gone = false;
                break;
            }
        }
        let only_these = dependent.owner_references().len() == references.len();
        if all_gone && only_these {
            delete(&api, dependent.as_ref()).await?;
        }
    }
    Ok(())
}

/// Removes the `orphan`/`foregroundDeletion` finalizer of owners whose dependents are
/// done with (no dependent still refers to them: `referenced` holds the UIDs they name).
async fn finish_owners<O>(
    client: &Client,
    owners: Vec<Arc<O>>,
    referenced: &HashSet<String>,
) -> Result<(), ControllerError>
where
    O: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    for owner in owners {
        if owner.meta().deletion_timestamp.is_none() {
            continue;
        }
        let finalizers = owner.finalizers().to_vec();
        let ours: Vec<&String> = finalizers
            .iter()
            .filter(|f| *f == "orphan" || *f == "foregroundDeletion")
            .collect();
        if ours.is_empty() {
            continue;
        }
        let uid = owner.meta().uid.clone().unwrap_or_default();
        if referenced.contains(&uid) {
            continue;
        }
        let kept: Vec<&String> = finalizers
            .iter()
            .filter(|f| *f != "orphan" && *f != "foregroundDeletion")
            .collect();
        let api: Api<O> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"finalizers": kept, "uid": uid}});
        ignore_gone(
            api.patch(
                &owner.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await,
        )?;
    }
    Ok(())
}

async fn delete<K>(api: &Api<K>, object: &K) -> Result<(), ControllerError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    ignore_gone(api.delete(&object.name_any(), &params).await.map(|_| ()))
}

/// Not found or changed meanwhile (UID precondition): nothing to do.
fn ignore_gone<T>(result: Result<T, kube::Error>) -> Result<(), ControllerError> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
