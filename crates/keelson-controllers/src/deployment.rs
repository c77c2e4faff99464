//! Deployment controller: one ReplicaSet per pod template (named by the template's hash,
//! `pod-template-hash`), rolled from old to new by the strategy (RollingUpdate within
//! `maxSurge`/`maxUnavailable`, or Recreate), revision annotations for `kubectl rollout
//! history|undo`, old ReplicaSets pruned to `revisionHistoryLimit`, and the status counters
//! and `Available`/`Progressing` conditions that `kubectl rollout status` and `wait` read.
//! A paused Deployment is scaled but not rolled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::ControllerError;
use crate::events;
use crate::revisions::template_hash;
use crate::workload::{controller_ref, controller_uid, scaled};

const COMPONENT: &str = "deployment-controller";
const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH: &str = "pod-template-hash";

struct Context {
    client: Client,
    sets: Store<ReplicaSet>,
}

pub async fn run(client: Client) {
    // One watch of ReplicaSets fills the cache reconciles read and triggers them.
    let (sets, writer) = reflector::store();
    let set_events = watcher(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let context = Arc::new(Context {
        client: client.clone(),
        sets,
    });
    Controller::new(Api::<Deployment>::all(client), watcher::Config::default())
        .owns_stream(set_events)
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<Deployment>, error: &ControllerError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "deployment controller");
    Action::requeue(Duration::from_secs(1))
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// The template without the `pod-template-hash` label, for comparing with a Deployment's.
fn template_without_hash(rs: &ReplicaSet) -> Value {
    let mut template = serde_json::to_value(&rs.spec.template).unwrap_or(Value::Null);
    if let Some(labels) = template
        .get_mut("metadata")
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH);
    }
    template
}

async fn scale(
    ctx: &Context,
    deploy: &Deployment,
    rs: &ReplicaSet,
    replicas: i32,
) -> Result<(), ControllerError> {
    let from = spec_replicas(rs);
    if from == replicas {
        return Ok(());
    }
    let namespace = rs.namespace().unwrap_or_default();
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({"spec": {"replicas": replicas},
        "metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": Some(&deploy.spec).and_then(|s| s.replicas).unwrap_or(1).to_string()}}});
    sets.patch(
        &rs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    let verb = if replicas > from { "up" } else { "down" };
    events::record(
        &ctx.client,
        COMPONENT,
        deploy,
        "Normal",
        "ScalingReplicaSet",
        &format!(
            "Scaled {verb} replica set {} from {from} to {replicas}",
            rs.name_any()
        ),
    )
    .await;
    Ok(())
}

async fn reconcile(deploy: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    // Never judge from a partial cache: that would create ReplicaSets twice.
    if ctx.sets.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if deploy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = deploy.namespace().unwrap_or_default();
    let name = deploy.name_any();
    let uid = deploy.metadata.uid.clone().unwrap_or_default();
    let spec = &deploy.spec;
    let replicas = spec.replicas.unwrap_or(1);
    let template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
    let hash = template_hash(&template);

    let mut owned: Vec<Arc<ReplicaSet>> = ctx
        .sets
        .state()
        .into_iter()
        .filter(|rs| rs.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|rs| controller_uid(&rs.metadata) == Some(uid.as_str()))
        .collect();
    owned.sort_by_key(|rs| rs.metadata.creation_timestamp.clone().map(|t| t.0));
    let max_revision = owned.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let current = owned
        .iter()
        .find(|rs| template_without_hash(rs) == template)
        .cloned();
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);

    // The ReplicaSet of the current template: found (its revision raised if it is an old
    // one come back, as after `rollout undo`), or created.
    let new_rs: Arc<ReplicaSet> = match current {
        Some(rs) if revision(&rs) < max_revision && !spec.paused.unwrap_or(false) => {
            let patch =
                json!({"metadata": {"annotations": {REVISION: (max_revision + 1).to_string()}}});
            Arc::new(
                sets.patch(
                    &rs.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?,
            )
        }
        Some(rs) => rs,
        None if spec.paused.unwrap_or(false) => {
            return sync_status(&ctx, &deploy, &owned, None, replicas).await;
        }
        None => {
            let mut labels = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(HASH.into(), hash.clone());
            let mut rs_template = spec.template.clone();
            rs_template
                .metadata
                .get_or_insert_with(Default::default)
                .labels = Some(labels.clone());
            let mut selector = spec.selector.clone();
            selector
                .match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(HASH.into(), hash.clone());
            let mut annotations: BTreeMap<String, String> = deploy
                .annotations()
                .iter()
                .filter(|(k, _)| k.as_str() != "kubectl.kubernetes.io/last-applied-configuration")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            annotations.insert(REVISION.into(), (max_revision + 1).to_string());
            annotations.insert(
                "deployment.kubernetes.io/desired-replicas".into(),
                replicas.to_string(),
            );
            let initial = match strategy_type(&deploy) {
                "Recreate" => 0,
                _ if owned.iter().all(|rs| spec_replicas(rs) == 0) => replicas,
                _ => 0,
            };
            let rs = ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-{hash}")),
                    namespace: Some(namespace.clone()),
                    labels: Some(labels),
                    annotations: Some(annotations),
                    owner_references: Some(vec![controller_ref(deploy.as_ref())]),
                    ..Default::default()
                },
                spec: k8s_openapi::api::apps::v1::ReplicaSetSpec {
                    replicas: Some(initial),
                    min_ready_seconds: spec.min_ready_seconds,
                    selector,
                    template: Some(rs_template),
                },
                status: None,
            };
            let created = match sets.create(&PostParams::default(), &rs).await {
                Ok(created) => created,
                // Created by an earlier reconcile the cache does not show yet.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(error) => return Err(error.into()),
            };
            events::record(
                &ctx.client,
                COMPONENT,
                deploy.as_ref(),
                "Normal",
                "ScalingReplicaSet",
                &format!(
                    "Scaled up replica set {} from 0 to {initial}",
                    created.name_any()
                ),
            )
            .await;
            owned.push(Arc::new(created.clone()));
            Arc::new(created)
        }
    };
    let old: Vec<Arc<ReplicaSet>> = owned
        .iter()
        .filter(|rs| rs.metadata.uid != new_rs.metadata.uid)
        .cloned()
        .collect();
    // The Deployment carries its current revision too (`kubectl rollout undo` edits its
    // annotations in place).
    let current_revision = revision(&new_rs).to_string();
    if deploy.annotations().get(REVISION) != Some(&current_revision) {
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({"metadata": {"annotations": {REVISION: current_revision}}});
        deployments
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    if spec.paused.unwrap_or(false) {
        // Paused: scale what exists to the replica count, roll nothing.
        if old.iter().all(|rs| spec_replicas(rs) == 0) {
            scale(&ctx, &deploy, &new_rs, replicas).await?;
        }
    } else if strategy_type(&deploy) == "Recreate" {
        for rs in &old {
            scale(&ctx, &deploy, rs, 0).await?;
        }
        if old.iter().all(|rs| actual(rs) == 0) {
            scale(&ctx, &deploy, &new_rs, replicas).await?;
        }
    } else {
        roll(&ctx, &deploy, &new_rs, &old, replicas).await?;
    }
    prune(&ctx, &deploy, &old).await?;
    sync_status(&ctx, &deploy, &owned, Some(&new_rs), replicas).await
}

fn strategy_type(deploy: &Deployment) -> &str {
    Some(&deploy.spec)
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

/// One step of a rolling update, as upstream takes it: scale the new ReplicaSet up within
/// `maxSurge`, then the old ones down while `maxUnavailable` allows.
async fn roll(
    ctx: &Context,
    deploy: &Deployment,
    new_rs: &ReplicaSet,
    old: &[Arc<ReplicaSet>],
    replicas: i32,
) -> Result<(), ControllerError> {
    let rolling = Some(&deploy.spec)
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(
        rolling.and_then(|r| r.max_surge.as_ref()),
        replicas,
        "25%",
        true,
    );
    let mut unavailable = scaled(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        "25%",
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    // Scale up the new ReplicaSet.
    let new_spec = spec_replicas(new_rs);
    let total_spec: i32 = new_spec + old.iter().map(|rs| spec_replicas(rs)).sum::<i32>();
    let target = if new_spec > replicas {
        replicas
    } else {
        let room = (replicas + surge - total_spec).max(0);
        (new_spec + room).min(replicas)
    };
    scale(ctx, deploy, new_rs, target).await?;

    // Scale down the old ones, as far as availability allows — judged only on statuses
    // that have caught up with their ReplicaSet's spec.
    let stale = |rs: &ReplicaSet| {
        rs.status.as_ref().and_then(|s| s.observed_generation) < rs.metadata.generation
    };
    if stale(new_rs) || old.iter().any(|rs| stale(rs)) {
        return Ok(());
    }
    let min_available = replicas - unavailable;
    let all_pods: i32 = actual(new_rs) + old.iter().map(|rs| actual(rs)).sum::<i32>();
    let new_unavailable = (target - available(new_rs)).max(0);
    let mut room = all_pods - min_available - new_unavailable;
    if room <= 0 {
        return Ok(());
    }
    // First the old replicas that are not available anyway.
    let mut reduced: Vec<(Arc<ReplicaSet>, i32)> = old
        .iter()
        .map(|rs| (rs.clone(), spec_replicas(rs)))
        .collect();
    for (rs, spec) in &mut reduced {
        let unhealthy = (*spec - available(rs)).max(0).min(room);
        *spec -= unhealthy;
        room -= unhealthy;
    }
    let available_all: i32 = available(new_rs) + old.iter().map(|rs| available(rs)).sum::<i32>();
    let mut scale_down = (available_all - min_available).max(0).min(room.max(0));
    for (_, spec) in &mut reduced {
        let step = (*spec).min(scale_down);
        *spec -= step;
        scale_down -= step;
    }
    for (rs, spec) in reduced {
        scale(ctx, deploy, &rs, spec).await?;
    }
    Ok(())
}

/// Deletes old, empty ReplicaSets beyond `revisionHistoryLimit` (oldest first).
async fn prune(
    ctx: &Context,
    deploy: &Deployment,
    old: &[Arc<ReplicaSet>],
) -> Result<(), ControllerError> {
    let limit = Some(&deploy.spec)
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    let empty: Vec<&Arc<ReplicaSet>> = old
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && actual(rs) == 0)
        .collect();
    let excess = empty
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    let mut by_revision = empty;
    by_revision.sort_by_key(|rs| revision(rs));
    for rs in by_revision.into_iter().take(excess) {
        let sets: Api<ReplicaSet> =
            Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
        match sets.delete(&rs.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    since: Option<&Value>,
    now: Timestamp,
) -> Value {
    json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason,
        "message": message, "lastUpdateTime": Time(now),
        "lastTransitionTime": since.cloned().unwrap_or_else(|| json!(Time(now)))})
}

async fn sync_status(
    ctx: &Context,
    deploy: &Deployment,
    owned: &[Arc<ReplicaSet>],
    new_rs: Option<&ReplicaSet>,
    replicas: i32,
) -> Result<Action, ControllerError> {
    let name = deploy.name_any();
    let spec = Some(&deploy.spec);
    let rolling = spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let max_unavailable = if strategy_type(deploy) == "Recreate" {
        0
    } else {
        scaled(
            rolling.and_then(|r| r.max_unavailable.as_ref()),
            replicas,
            "25%",
            false,
        )
    };
    let total: i32 = owned.iter().map(|rs| actual(rs)).sum();
    let ready_count: i32 = owned.iter().map(|rs| ready(rs)).sum();
    let available_count: i32 = owned.iter().map(|rs| available(rs)).sum();
    let updated = new_rs.map_or(0, actual);
    let old_pods: i32 = owned
        .iter()
        .filter(|rs| new_rs.is_none_or(|n| n.metadata.uid != rs.metadata.uid))
        .map(|rs| actual(rs))
        .sum();
    let now = Timestamp::now();
    let previous: Vec<Value> = deploy
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    let since = |kind: &str, status: &str| {
        previous
            .iter()
            .find(|c| c["type"] == kind && c["status"] == status)
            .map(|c| c["lastTransitionTime"].clone())
    };
    let is_available = available_count >= replicas - max_unavailable;
    let available_condition = if is_available {
        condition(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            since("Available", "True").as_ref(),
            now,
        )
    } else {
        condition(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            since("Available", "False").as_ref(),
            now,
        )
    };
    let complete = updated == replicas
        && available_count >= replicas
        && old_pods == 0
        && new_rs.is_some_and(|n| available(n) >= replicas);
    let rs_name = new_rs.map(|r| r.name_any()).unwrap_or_default();
    let deadline = spec
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600);
    let progressing_since = previous
        .iter()
        .find(|c| c["type"] == "Progressing")
        .and_then(|c| c["lastUpdateTime"].as_str())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let previous_reason = previous
        .iter()
        .find(|c| c["type"] == "Progressing")
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_owned();
    let progressing = if spec.and_then(|s| s.paused) == Some(true) {
        condition(
            "Progressing",
            false,
            "DeploymentPaused",
            "Deployment is paused",
            None,
            now,
        )
    } else if complete {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            since("Progressing", "True").as_ref(),
            now,
        )
    } else if previous_reason == "ProgressDeadlineExceeded"
        || progressing_since.is_some_and(|t| now.as_second() - t.as_second() > i64::from(deadline))
            && previous_reason != "NewReplicaSetAvailable"
    {
        condition(
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            since("Progressing", "False").as_ref(),
            now,
        )
    } else {
        condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs_name}\" is progressing."),
            since("Progressing", "True").as_ref(),
            now,
        )
    };
    let status = json!({"status": {
        "observedGeneration": deploy.metadata.generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready_count,
        "availableReplicas": available_count,
        "unavailableReplicas": (replicas - available_count).max(0),
        "conditions": [available_condition, progressing],
    }});
    // Only write when something other than the timestamps changed.
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(conditions) = v["status"]["conditions"].as_array_mut() {
            for c in conditions {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastUpdateTime");
                    c.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    let current = json!({"status": deploy.status});
    let mut current_stripped = strip(&current);
    if let Some(status) = current_stripped["status"].as_object_mut() {
        status.retain(|_, v| !v.is_null());
    }
    let mut wanted_stripped = strip(&status);
    if let Some(status) = wanted_stripped["status"].as_object_mut() {
        status.retain(|_, v| !v.is_null() && *v != json!(0));
    }
    if let Some(status) = current_stripped["status"].as_object_mut() {
        status.retain(|_, v| *v != json!(0));
    }
    if current_stripped != wanted_stripped {
        let deployments: Api<Deployment> =
            Api::namespaced(ctx.client.clone(), &deploy.namespace().unwrap_or_default());
        deployments
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    if complete {
        Ok(Action::await_change())
    } else {
        // Progress deadlines pass with time alone.
        Ok(Action::requeue(Duration::from_secs(5)))
    }
}
