//! Garbage collector, for what the workload controllers own (Deployments own ReplicaSets,
//! ReplicaSets own Pods, CronJobs own Jobs, Jobs own Pods): dependents whose owners are gone are deleted (background
//! propagation); an owner being deleted with the `orphan` finalizer has its dependents'
//! references to it removed, with `foregroundDeletion` its dependents deleted first; the
//! finalizer is removed once that is done. An owner is only judged gone after a live read
//! says so, never from a cache alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Notify;

use crate::ControllerError;
use crate::cache::watched;

pub async fn run(client: Client) {
    let wake = Arc::new(Notify::new());
    let deployments = watched(Api::<Deployment>::all(client.clone()), Some(wake.clone()));
    let sets = watched(Api::<ReplicaSet>::all(client.clone()), Some(wake.clone()));
    let pods = watched(Api::<Pod>::all(client.clone()), Some(wake.clone()));
    let cron_jobs = watched(Api::<CronJob>::all(client.clone()), Some(wake.clone()));
    let jobs = watched(Api::<Job>::all(client.clone()), Some(wake.clone()));
    for ready in [
        deployments.wait_until_ready().await,
        sets.wait_until_ready().await,
        pods.wait_until_ready().await,
        cron_jobs.wait_until_ready().await,
        jobs.wait_until_ready().await,
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
        let batch = sweep(&client, &deployments, &sets, &pods).await;
        let batch = match batch {
            Ok(()) => sweep_batch(&client, &cron_jobs, &jobs, &pods).await,
            Err(error) => Err(error),
        };
        if let Err(error) = batch {
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

async fn sweep(
    client: &Client,
    deployments: &Store<Deployment>,
    sets: &Store<ReplicaSet>,
    pods: &Store<Pod>,
) -> Result<(), ControllerError> {
    let deployment_owners = owners_of(deployments);
    let set_owners = owners_of(sets);
    // ReplicaSets owned by Deployments, Pods owned by ReplicaSets.
    collect(
        client,
        &sets.state(),
        "Deployment",
        &deployment_owners,
        Api::<Deployment>::namespaced,
    )
    .await?;
    collect(client, &pods.state(), "ReplicaSet", &set_owners, |c, ns| {
        Api::<ReplicaSet>::namespaced(c, ns)
    })
    .await?;
    finish_owners(client, deployments.state(), &sets.state()).await?;
    finish_owners(client, sets.state(), &pods.state()).await?;
    Ok(())
}

/// Jobs owned by CronJobs, Pods owned by Jobs.
async fn sweep_batch(
    client: &Client,
    cron_jobs: &Store<CronJob>,
    jobs: &Store<Job>,
    pods: &Store<Pod>,
) -> Result<(), ControllerError> {
    let cron_job_owners = owners_of(cron_jobs);
    let job_owners = owners_of(jobs);
    collect(
        client,
        &jobs.state(),
        "CronJob",
        &cron_job_owners,
        Api::<CronJob>::namespaced,
    )
    .await?;
    collect(client, &pods.state(), "Job", &job_owners, |c, ns| {
        Api::<Job>::namespaced(c, ns)
    })
    .await?;
    finish_owners(client, cron_jobs.state(), &jobs.state()).await?;
    finish_owners(client, jobs.state(), &pods.state()).await?;
    Ok(())
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
/// done with (no dependent still refers to them).
async fn finish_owners<O, K>(
    client: &Client,
    owners: Vec<Arc<O>>,
    dependents: &[Arc<K>],
) -> Result<(), ControllerError>
where
    O: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K: Resource<DynamicType = ()>,
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
        let still_referenced = dependents
            .iter()
            .any(|d| d.owner_references().iter().any(|r| r.uid == uid));
        if still_referenced {
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
