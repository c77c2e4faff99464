//! StatefulSet controller: pods with stable identities — `<set>-<ordinal>`, hostname the
//! pod's name, subdomain the governing service — each with its own PersistentVolumeClaims
//! made from `volumeClaimTemplates` (`<template>-<set>-<ordinal>`, created before the pod
//! and kept after it unless `persistentVolumeClaimRetentionPolicy` says Delete).
//!
//! `OrderedReady` creates ordinal i only once 0..i-1 are Running and Ready and removes
//! from the highest ordinal down, one at a time; `Parallel` does either all at once. The
//! template's history is kept as ControllerRevisions (see `revisions`): pods carry their
//! revision's name in `controller-revision-hash`, and `RollingUpdate` replaces pods from
//! the highest ordinal down to `partition`, one at a time, each waiting for the previous
//! to be Ready; `OnDelete` only gives pods that were deleted the new template. The status
//! is what `kubectl rollout status statefulset` and `kubectl get sts` read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::ControllerError;
use crate::cache::watched;
use crate::events;
use crate::revisions::{self, HASH_LABEL, History};
use crate::workload::{
    adopt, controller_ref, controller_uid, count, is_active, is_available, is_running_and_ready,
    pod_from_template, selector_matches,
};

const COMPONENT: &str = "statefulset-controller";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// How long a create or delete is remembered while the cache catches up.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Pods this controller created (by namespace and name) or deleted (by UID) that its
/// cache may not show yet.
#[derive(Default)]
struct Expectations {
    created: HashMap<(String, String), Instant>,
    deleted: HashMap<String, Instant>,
}

struct Context {
    client: Client,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    claims: Store<PersistentVolumeClaim>,
    expectations: Mutex<Expectations>,
}

impl Context {
    fn expectations(&self) -> std::sync::MutexGuard<'_, Expectations> {
        self.expectations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

pub async fn run(client: Client) {
    // One watch of pods fills the cache reconciles read and triggers them.
    let (pods, writer) = reflector::store();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let context = Arc::new(Context {
        client: client.clone(),
        pods,
        revisions: watched(Api::all(client.clone()), None),
        claims: watched(Api::all(client.clone()), None),
        expectations: Mutex::new(Expectations::default()),
    });
    Controller::new(Api::<StatefulSet>::all(client), watcher::Config::default())
        .owns_stream(pod_events)
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<StatefulSet>, error: &ControllerError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "statefulset controller");
    Action::requeue(Duration::from_secs(1))
}

/// The ordinal in a pod's name `<set>-<ordinal>`, if it is one of this set's.
fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let digits = pod.strip_prefix(set)?.strip_prefix('-')?;
    let ordinal: i32 = digits.parse().ok()?;
    (ordinal >= 0 && ordinal.to_string() == digits).then_some(ordinal)
}

fn revision_of(pod: &Pod) -> &str {
    pod.labels().get(HASH_LABEL).map_or("", String::as_str)
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// What one reconcile works from.
struct View<'a> {
    set: &'a StatefulSet,
    name: String,
    namespace: String,
    history: History,
    current: Arc<ControllerRevision>,
    /// The set's pods by ordinal (terminating ones included).
    pods: BTreeMap<i32, Arc<Pod>>,
    /// Owned pods whose names are no ordinal of the set.
    strays: Vec<Arc<Pod>>,
    start: i32,
    replicas: i32,
}

impl View<'_> {
    fn wanted(&self, ordinal: i32) -> bool {
        ordinal >= self.start && ordinal < self.start + self.replicas
    }

    fn pod_name(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.name)
    }

    fn claim_name(&self, template: &PersistentVolumeClaim, ordinal: i32) -> String {
        format!("{}-{}-{ordinal}", template.name_any(), self.name)
    }

    fn rolling(&self) -> bool {
        self.set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .is_none_or(|t| t == "RollingUpdate")
    }

    fn partition(&self) -> i32 {
        self.set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0)
    }

    fn claim_templates(&self) -> &[PersistentVolumeClaim] {
        self.set
            .spec
            .volume_claim_templates
            .as_deref()
            .unwrap_or_default()
    }

    /// `persistentVolumeClaimRetentionPolicy.whenDeleted` is Delete.
    fn claims_go_with_set(&self) -> bool {
        let policy = self
            .set
            .spec
            .persistent_volume_claim_retention_policy
            .as_ref();
        policy.and_then(|p| p.when_deleted.as_deref()) == Some("Delete")
    }

    /// `persistentVolumeClaimRetentionPolicy.whenScaled` is Delete.
    fn claims_go_on_scale_down(&self) -> bool {
        let policy = self
            .set
            .spec
            .persistent_volume_claim_retention_policy
            .as_ref();
        policy.and_then(|p| p.when_scaled.as_deref()) == Some("Delete")
    }
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    // Never judge from partial caches.
    for ready in [
        ctx.pods.wait_until_ready().await,
        ctx.revisions.wait_until_ready().await,
        ctx.claims.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = set.name_any();
    let namespace = set.namespace().unwrap_or_default();
    let status = set.status.clone().unwrap_or_default();
    let history = revisions::sync(
        &ctx.client,
        set.as_ref(),
        &set.spec.template,
        revisions::owned_by(&ctx.revisions, set.as_ref()),
        status.collision_count.unwrap_or(0),
    )
    .await?;
    let current = status
        .current_revision
        .as_deref()
        .and_then(|n| history.named(n))
        .cloned()
        .unwrap_or_else(|| history.update.clone());

    let owned = claim_pods(&ctx, &set, &namespace).await?;
    let mut pods = BTreeMap::new();
    let mut strays = Vec::new();
    for pod in owned {
        match ordinal_of(&name, &pod.name_any()) {
            Some(ordinal) => {
                pods.insert(ordinal, pod);
            }
            None => strays.push(pod),
        }
    }
    let view = View {
        set: set.as_ref(),
        name,
        namespace,
        history,
        current,
        pods,
        strays,
        start: set
            .spec
            .ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0),
        replicas: set.spec.replicas.unwrap_or(1).max(0),
    };
    forget_settled(&ctx, &view);
    sync_pods(&ctx, &view).await?;
    own_claims(&ctx, &view).await?;
    delete_scaled_claims(&ctx, &view).await?;
    let in_use: HashSet<String> = view
        .pods
        .values()
        .map(|p| revision_of(p).to_owned())
        .chain([view.current.name_any()])
        .collect();
    revisions::prune(
        &ctx.client,
        &view.history,
        &in_use,
        set.spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    sync_status(&ctx, &view).await
}

/// The set's pods: those it controls, and orphans named as its own that its selector
/// matches, adopted.
async fn claim_pods(
    ctx: &Context,
    set: &StatefulSet,
    namespace: &str,
) -> Result<Vec<Arc<Pod>>, ControllerError> {
    let uid = set.metadata.uid.as_deref();
    let name = set.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut owned = Vec::new();
    for pod in ctx.pods.state() {
        if pod.namespace().as_deref() != Some(namespace) {
            continue;
        }
        let controller = controller_uid(&pod.metadata);
        if controller.is_some() && controller == uid {
            owned.push(pod);
        } else if controller.is_none()
            && is_active(&pod)
            && ordinal_of(&name, &pod.name_any()).is_some()
            && selector_matches(&set.spec.selector, pod.labels())
            && let Some(adopted) = adopt(&api, &pod, controller_ref(set)).await?
        {
            owned.push(Arc::new(adopted));
        }
    }
    Ok(owned)
}

/// Drops expectations the cache has caught up with (or that are too old to trust).
fn forget_settled(ctx: &Context, view: &View<'_>) {
    let now = Instant::now();
    let mut expect = ctx.expectations();
    expect.created.retain(|(ns, pod), at| {
        now.duration_since(*at) < EXPECTATION_TTL
            && !(ns == &view.namespace && view.pods.values().any(|p| &p.name_any() == pod))
    });
    let shown_deleted = |uid: &String| {
        view.pods
            .values()
            .chain(&view.strays)
            .find(|p| p.metadata.uid.as_ref() == Some(uid))
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    };
    expect
        .deleted
        .retain(|uid, at| now.duration_since(*at) < EXPECTATION_TTL && !shown_deleted(uid));
}

fn terminating(ctx: &Context, pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || pod
            .metadata
            .uid
            .as_ref()
            .is_some_and(|uid| ctx.expectations().deleted.contains_key(uid))
}

fn being_created(ctx: &Context, view: &View<'_>, ordinal: i32) -> bool {
    ctx.expectations()
        .created
        .contains_key(&(view.namespace.clone(), view.pod_name(ordinal)))
}

/// One pass over the set's pods, in upstream's order: create or wait for the ordinals it
/// should have, then remove the condemned, then roll. In `OrderedReady` every step that
/// changes something, or finds a pod not yet Running and Ready, ends the pass.
async fn sync_pods(ctx: &Context, view: &View<'_>) -> Result<(), ControllerError> {
    let ordered = view.set.spec.pod_management_policy.as_deref() != Some("Parallel");
    let partition = view.partition();
    for ordinal in view.start..view.start + view.replicas {
        match view.pods.get(&ordinal) {
            None if being_created(ctx, view, ordinal) => {}
            None => {
                // Below the partition, a rolling update keeps the current revision.
                let revision = if view.rolling() && ordinal - view.start < partition {
                    &view.current
                } else {
                    &view.history.update
                };
                create_pod(ctx, view, revision, ordinal).await?;
            }
            Some(pod) if terminating(ctx, pod) => {}
            Some(pod) if finished(pod) => delete_pod(ctx, view, pod).await?,
            Some(pod) if is_running_and_ready(pod) => continue,
            Some(_) => {}
        }
        if ordered {
            return Ok(());
        }
    }

    // The condemned: ordinals beyond the replicas (highest first), and strays.
    let mut condemned: Vec<&Arc<Pod>> = view
        .pods
        .iter()
        .rev()
        .filter(|(ordinal, _)| !view.wanted(**ordinal))
        .map(|(_, pod)| pod)
        .chain(&view.strays)
        .collect();
    if ordered {
        if condemned.iter().any(|p| terminating(ctx, p)) {
            return Ok(());
        }
        condemned.truncate(1);
    }
    let condemned: Vec<&Arc<Pod>> = condemned
        .into_iter()
        .filter(|p| !terminating(ctx, p))
        .collect();
    for pod in &condemned {
        delete_pod(ctx, view, pod).await?;
    }
    if ordered && !condemned.is_empty() {
        return Ok(());
    }

    // The rolling update: from the highest ordinal down to the partition, one pod at a
    // time, each replaced pod Ready before the next goes.
    if !view.rolling() {
        return Ok(());
    }
    let update = view.history.update.name_any();
    for index in (partition.max(0)..view.replicas).rev() {
        let Some(pod) = view.pods.get(&(view.start + index)) else {
            return Ok(());
        };
        if terminating(ctx, pod) {
            return Ok(());
        }
        if revision_of(pod) != update {
            return delete_pod(ctx, view, pod).await;
        }
        if !is_running_and_ready(pod) {
            return Ok(());
        }
    }
    Ok(())
}

/// The pod of `ordinal` at `revision`: the revision's template, named and labelled for
/// its ordinal, its claim templates' volumes pointing at its own claims.
fn pod_for(
    view: &View<'_>,
    template: &PodTemplateSpec,
    revision: &ControllerRevision,
    ordinal: i32,
) -> Pod {
    let pod_name = view.pod_name(ordinal);
    let mut pod = pod_from_template(template, controller_ref(view.set), &view.name);
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(pod_name.clone());
    pod.metadata.namespace = Some(view.namespace.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.name_any());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(pod_name);
    if let Some(service) = view
        .set
        .spec
        .service_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(service.to_owned());
    }
    let templates = view.claim_templates();
    if !templates.is_empty() {
        let mut volumes: Vec<Volume> = templates
            .iter()
            .map(|t| Volume {
                name: t.name_any(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: view.claim_name(t, ordinal),
                    read_only: None,
                }),
                ..Default::default()
            })
            .collect();
        let claimed: HashSet<String> = templates.iter().map(ResourceExt::name_any).collect();
        volumes.extend(
            spec.volumes
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|v| !claimed.contains(&v.name)),
        );
        spec.volumes = Some(volumes);
    }
    pod
}

async fn create_pod(
    ctx: &Context,
    view: &View<'_>,
    revision: &ControllerRevision,
    ordinal: i32,
) -> Result<(), ControllerError> {
    let template =
        revisions::template_of(revision).unwrap_or_else(|| view.set.spec.template.clone());
    let pod = pod_for(view, &template, revision, ordinal);
    let pod_name = pod.name_any();
    create_claims(ctx, view, ordinal, &pod_name).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &view.namespace);
    let outcome = match api.create(&PostParams::default(), &pod).await {
        Ok(_) => "successful",
        // The previous pod of this ordinal is still going, or the cache is behind.
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
        Err(kube::Error::Api(e)) => {
            events::record(
                &ctx.client,
                COMPONENT,
                view.set,
                "Warning",
                "FailedCreate",
                &format!(
                    "create Pod {pod_name} in StatefulSet {} failed error: {}",
                    view.name, e.message
                ),
            )
            .await;
            return Err(kube::Error::Api(e).into());
        }
        Err(error) => return Err(error.into()),
    };
    ctx.expectations()
        .created
        .insert((view.namespace.clone(), pod_name.clone()), Instant::now());
    events::record(
        &ctx.client,
        COMPONENT,
        view.set,
        "Normal",
        "SuccessfulCreate",
        &format!(
            "create Pod {pod_name} in StatefulSet {} {outcome}",
            view.name
        ),
    )
    .await;
    Ok(())
}

/// The claims of `ordinal` that do not exist yet, from the claim templates.
async fn create_claims(
    ctx: &Context,
    view: &View<'_>,
    ordinal: i32,
    pod_name: &str,
) -> Result<(), ControllerError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &view.namespace);
    let existing: HashSet<String> = ctx
        .claims
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(view.namespace.as_str()))
        .map(|c| c.name_any())
        .collect();
    for template in view.claim_templates() {
        let claim_name = view.claim_name(template, ordinal);
        if existing.contains(&claim_name) {
            continue;
        }
        let mut labels = template.metadata.labels.clone().unwrap_or_default();
        labels.extend(
            view.set
                .spec
                .selector
                .match_labels
                .clone()
                .unwrap_or_default(),
        );
        let owners: Option<Vec<OwnerReference>> =
            view.claims_go_with_set().then(|| vec![claim_owner(view)]);
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(claim_name.clone()),
                namespace: Some(view.namespace.clone()),
                labels: Some(labels),
                annotations: template.metadata.annotations.clone(),
                owner_references: owners,
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {
                events::record(
                    &ctx.client,
                    COMPONENT,
                    view.set,
                    "Normal",
                    "SuccessfulCreate",
                    &format!(
                        "create Claim {claim_name} Pod {pod_name} in StatefulSet {} success",
                        view.name
                    ),
                )
                .await;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

async fn delete_pod(ctx: &Context, view: &View<'_>, pod: &Pod) -> Result<(), ControllerError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &view.namespace);
    let pod_name = pod.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod_name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    if let Some(uid) = pod.metadata.uid.clone() {
        ctx.expectations().deleted.insert(uid, Instant::now());
    }
    events::record(
        &ctx.client,
        COMPONENT,
        view.set,
        "Normal",
        "SuccessfulDelete",
        &format!(
            "delete Pod {pod_name} in StatefulSet {} successful",
            view.name
        ),
    )
    .await;
    Ok(())
}

/// Deleted with the set when the policy says so: the set owns the claim (not as its
/// controller), and the garbage collector follows.
fn claim_owner(view: &View<'_>) -> OwnerReference {
    OwnerReference {
        controller: None,
        ..controller_ref(view.set)
    }
}

/// The claims of the set's ordinals are owned by the set exactly when `whenDeleted` is
/// Delete, whoever made them and whatever the policy was then.
async fn own_claims(ctx: &Context, view: &View<'_>) -> Result<(), ControllerError> {
    if view.claim_templates().is_empty() {
        return Ok(());
    }
    let owned_by_set = view.claims_go_with_set();
    let uid = view.set.metadata.uid.clone().unwrap_or_default();
    let wanted: HashSet<String> = (view.start..view.start + view.replicas)
        .flat_map(|ordinal| {
            view.claim_templates()
                .iter()
                .map(move |t| view.claim_name(t, ordinal))
        })
        .collect();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &view.namespace);
    for claim in ctx.claims.state() {
        if claim.namespace().as_deref() != Some(view.namespace.as_str())
            || !wanted.contains(&claim.name_any())
            || claim.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let owners = claim.owner_references();
        if owners.iter().any(|r| r.uid == uid) == owned_by_set {
            continue;
        }
        let mut owners: Vec<OwnerReference> =
            owners.iter().filter(|r| r.uid != uid).cloned().collect();
        if owned_by_set {
            owners.push(claim_owner(view));
        }
        let patch = json!({"metadata": {"ownerReferences": owners, "uid": claim.metadata.uid}});
        match api
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// With `whenScaled: Delete`, the claims of ordinals scaled away go once their pod has.
async fn delete_scaled_claims(ctx: &Context, view: &View<'_>) -> Result<(), ControllerError> {
    if !view.claims_go_on_scale_down() || view.claim_templates().is_empty() {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &view.namespace);
    for claim in ctx.claims.state() {
        if claim.namespace().as_deref() != Some(view.namespace.as_str())
            || claim.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let claim_name = claim.name_any();
        let ordinal = view.claim_templates().iter().find_map(|t| {
            let set_part = claim_name.strip_prefix(&format!("{}-", t.name_any()))?;
            ordinal_of(&view.name, set_part)
        });
        let Some(ordinal) = ordinal else {
            continue;
        };
        if view.wanted(ordinal) || view.pods.contains_key(&ordinal) {
            continue;
        }
        match api.delete(&claim_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Zero counts and absent ones are the same status.
fn normalized(status: &StatefulSetStatus) -> StatefulSetStatus {
    let nonzero = |n: Option<i32>| n.filter(|n| *n != 0);
    StatefulSetStatus {
        available_replicas: nonzero(status.available_replicas),
        collision_count: nonzero(status.collision_count),
        current_replicas: nonzero(status.current_replicas),
        ready_replicas: nonzero(status.ready_replicas),
        updated_replicas: nonzero(status.updated_replicas),
        ..status.clone()
    }
}

async fn sync_status(ctx: &Context, view: &View<'_>) -> Result<Action, ControllerError> {
    let set = view.set;
    let now = Timestamp::now();
    let min_ready = set.spec.min_ready_seconds.unwrap_or(0);
    let active: Vec<&Arc<Pod>> = view
        .pods
        .values()
        .chain(&view.strays)
        .filter(|p| !terminating(ctx, p) && !finished(p))
        .collect();
    let ready = active.iter().filter(|p| is_running_and_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| is_running_and_ready(p) && is_available(p, min_ready, now))
        .count();
    let update = view.history.update.name_any();
    let updated = active.iter().filter(|p| revision_of(p) == update).count();
    let mut current = view.current.name_any();
    let mut current_count = active.iter().filter(|p| revision_of(p) == current).count();
    // Every pod updated and ready: the update revision becomes the current one.
    let wanted = usize::try_from(view.replicas).unwrap_or(0);
    if updated == wanted && ready == wanted && active.len() == wanted {
        current = update.clone();
        current_count = updated;
    }
    let previous = set.status.clone().unwrap_or_default();
    let status = StatefulSetStatus {
        replicas: count(active.len()),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        current_replicas: Some(count(current_count)),
        updated_replicas: Some(count(updated)),
        current_revision: Some(current),
        update_revision: Some(update),
        collision_count: Some(view.history.collision_count),
        observed_generation: set.metadata.generation,
        conditions: previous.conditions.clone(),
    };
    if normalized(&status) != normalized(&previous) {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &view.namespace);
        api.patch_status(
            &view.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
    }
    if ready > available && min_ready > 0 {
        // Ready pods become available with time alone.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let expecting = {
        let expect = ctx.expectations();
        !expect.created.is_empty() || !expect.deleted.is_empty()
    };
    if expecting {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_are_read_from_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web--1"), None);
        assert_eq!(ordinal_of("web-a", "web-a-3"), Some(3));
    }
}
