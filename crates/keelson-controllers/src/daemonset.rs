//! DaemonSet controller: one pod per eligible node. A node is eligible when the template's
//! `nodeSelector` and required node affinity match it and its NoSchedule/NoExecute taints
//! are tolerated — by the template, or by the tolerations every daemon pod gets, as
//! upstream adds them (not-ready and unreachable for NoExecute; disk, memory and pid
//! pressure and unschedulable for NoSchedule; network-unavailable for host-network pods).
//! A pod already running stays on a node that only gained an untolerated NoSchedule taint.
//!
//! Pods are created unbound, with a required node affinity on `metadata.name` naming their
//! node, and the scheduler binds them, as upstream does. Nodes added get a pod; pods on
//! nodes removed or no longer eligible are deleted. The template's history is kept as
//! ControllerRevisions (see `revisions`), pods labelled with their revision's
//! `controller-revision-hash` and `pod-template-generation`. `RollingUpdate` replaces old
//! pods with at most `maxUnavailable` nodes without an available pod (default 1) or, with
//! `maxSurge`, starts the new pod beside the old one first; `OnDelete` only gives nodes
//! whose pod was deleted the new template. The status is what `kubectl rollout status
//! daemonset` and `kubectl get ds` read.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};
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
use crate::revisions::{self, HASH_LABEL};
use crate::workload::{
    adopt, controller_ref, controller_uid, count, is_active, is_available, pod_from_template,
    ready_since, scaled, selector_matches,
};

const COMPONENT: &str = "daemonset-controller";
const GENERATION_LABEL: &str = "pod-template-generation";
/// How long a create or delete is remembered while the cache catches up.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Pods this controller created (by DaemonSet UID and node: the pod's name) or deleted
/// (by UID) that its cache may not show yet.
#[derive(Default)]
struct Expectations {
    created: HashMap<(String, String), (String, Instant)>,
    deleted: HashMap<String, Instant>,
}

struct Context {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Mutex<Expectations>,
}

impl Context {
    fn expectations(&self) -> std::sync::MutexGuard<'_, Expectations> {
        self.expectations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What about a node decides where daemon pods go: its labels and spec (taints,
/// unschedulable), not its status heartbeats.
fn placement_key(node: &Node) -> u64 {
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(&(&node.metadata.labels, &node.spec))
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

pub async fn run(client: Client) {
    // One watch of pods fills the cache reconciles read and triggers them.
    let (pods, writer) = reflector::store();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    // Nodes coming, going or changing where daemon pods may run reconcile every set.
    let (nodes, node_writer) = reflector::store();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let node_changes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .filter_map(move |event| {
            let changed = match event {
                Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                    let key = placement_key(&node);
                    seen.insert(node.name_any(), key) != Some(key)
                }
                Ok(watcher::Event::Delete(node)) => {
                    seen.remove(&node.name_any());
                    true
                }
                Ok(watcher::Event::InitDone) => true,
                _ => false,
            };
            futures::future::ready(changed.then_some(()))
        });
    let context = Arc::new(Context {
        client: client.clone(),
        pods,
        nodes,
        revisions: watched(Api::all(client.clone()), None),
        expectations: Mutex::new(Expectations::default()),
    });
    Controller::new(Api::<DaemonSet>::all(client), watcher::Config::default())
        .owns_stream(pod_events)
        .reconcile_all_on(node_changes)
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<DaemonSet>, error: &ControllerError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "daemonset controller");
    Action::requeue(Duration::from_secs(1))
}

/// The tolerations every daemon pod has, beside its template's.
fn daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    let mut automatic = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        automatic.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    for (key, effect) in automatic {
        let toleration = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        if !tolerations.contains(&toleration) {
            tolerations.push(toleration);
        }
    }
    tolerations
}

/// Whether a daemon pod should be started on a node, and whether one already there may
/// stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict {
    should_run: bool,
    should_continue: bool,
}

fn verdict(spec: &PodSpec, tolerations: &[Toleration], node: &Node) -> Verdict {
    const NEVER: Verdict = Verdict {
        should_run: false,
        should_continue: false,
    };
    let name = node.name_any();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return NEVER;
    }
    let labels = node.labels();
    let selected = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let info = keelson_scheduler::NodeInfo::new(node.clone());
    let affine = required.is_none_or(|r| {
        r.node_selector_terms
            .iter()
            .any(|t| keelson_scheduler::plugins::term_matches(t, &info))
    });
    if !selected || !affine {
        return NEVER;
    }
    let mut result = Verdict {
        should_run: true,
        should_continue: true,
    };
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref());
    for taint in taints.unwrap_or_default() {
        let blocking = matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute");
        if !blocking
            || tolerations
                .iter()
                .any(|t| keelson_scheduler::plugins::tolerates(t, taint))
        {
            continue;
        }
        result.should_run = false;
        if taint.effect == "NoExecute" {
            result.should_continue = false;
        }
    }
    result
}

/// The node a daemon pod is for: where it is bound, or what its node affinity names.
fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(node.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// `affinity` with its required node terms replaced by one naming `node`.
fn pinned_to(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_owned()]),
            }]),
        }],
    });
    affinity
}

fn hash_of(pod: &Pod) -> &str {
    pod.labels().get(HASH_LABEL).map_or("", String::as_str)
}

fn failed(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

fn created_at(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// One node as a reconcile sees it.
struct NodePods {
    verdict: Verdict,
    /// Daemon pods for this node, not being deleted, oldest first.
    running: Vec<Arc<Pod>>,
    /// Daemon pods for this node, any state.
    all: usize,
    /// A pod created for it that the cache does not show yet.
    pending: bool,
}

/// What one reconcile decides to do.
#[derive(Default)]
struct Plan {
    create: Vec<String>,
    delete: Vec<Arc<Pod>>,
    /// Pods whose node is gone: nothing will finish them, so they go at once.
    delete_now: Vec<Arc<Pod>>,
}

impl Plan {
    fn deletes(&self, pod: &Pod) -> bool {
        self.delete
            .iter()
            .chain(&self.delete_now)
            .any(|p| p.metadata.uid == pod.metadata.uid)
    }

    fn delete(&mut self, pod: &Arc<Pod>) {
        if !self.deletes(pod) {
            self.delete.push(pod.clone());
        }
    }
}

struct Settings {
    hash: String,
    min_ready: i32,
    rolling: bool,
    max_surge: i32,
    max_unavailable: i32,
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    for ready in [
        ctx.pods.wait_until_ready().await,
        ctx.nodes.wait_until_ready().await,
        ctx.revisions.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = ds.namespace().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let status = ds.status.clone().unwrap_or_default();
    let history = revisions::sync(
        &ctx.client,
        ds.as_ref(),
        &ds.spec.template,
        revisions::owned_by(&ctx.revisions, ds.as_ref()),
        status.collision_count.unwrap_or(0),
    )
    .await?;
    let owned = claim_pods(&ctx, &ds, &namespace).await?;
    forget_settled(&ctx, &uid, &owned);

    let template_spec = ds.spec.template.spec.clone().unwrap_or_default();
    let tolerations = daemon_tolerations(&template_spec);
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    let mut plan = Plan::default();
    for pod in &owned {
        match target_node(pod) {
            Some(node) => by_node.entry(node).or_default().push(pod.clone()),
            None => plan.delete(pod),
        }
    }
    let mut nodes: Vec<(String, NodePods)> = Vec::new();
    {
        let expect = ctx.expectations();
        for node in ctx.nodes.state() {
            let name = node.name_any();
            let pods = by_node.remove(&name).unwrap_or_default();
            let mut running: Vec<Arc<Pod>> = pods
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.metadata
                            .uid
                            .as_ref()
                            .is_none_or(|u| !expect.deleted.contains_key(u))
                })
                .cloned()
                .collect();
            running.sort_by_key(|p| created_at(p));
            let pending = expect.created.contains_key(&(uid.clone(), name.clone()));
            nodes.push((
                name,
                NodePods {
                    verdict: verdict(&template_spec, &tolerations, &node),
                    running,
                    all: pods.len(),
                    pending,
                },
            ));
        }
    }
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    // Pods for nodes that no longer exist.
    for pods in by_node.values() {
        for pod in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            plan.delete_now.push(pod.clone());
        }
    }

    let desired = count(nodes.iter().filter(|(_, n)| n.verdict.should_run).count());
    let rolling_update = ds
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let rolling = ds
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    let max_surge = if rolling {
        scaled(
            rolling_update.and_then(|r| r.max_surge.as_ref()),
            desired,
            "0",
            true,
        )
    } else {
        0
    };
    let mut max_unavailable = scaled(
        rolling_update.and_then(|r| r.max_unavailable.as_ref()),
        desired,
        "1",
        true,
    );
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let settings = Settings {
        hash: revisions::hash_of(&history.update).to_owned(),
        min_ready: ds.spec.min_ready_seconds.unwrap_or(0),
        rolling,
        max_surge,
        max_unavailable,
    };
    let now = Timestamp::now();
    manage(&nodes, &settings, now, &mut plan);
    if settings.rolling {
        if settings.max_surge == 0 {
            roll_within_unavailability(&nodes, &settings, now, &mut plan);
        } else {
            roll_with_surge(&nodes, &settings, now, &mut plan);
        }
    }
    execute(&ctx, &ds, &settings, &plan).await?;

    let in_use: HashSet<String> = owned
        .iter()
        .filter_map(|p| history.with_hash(hash_of(p)).map(|r| r.name_any()))
        .collect();
    revisions::prune(
        &ctx.client,
        &history,
        &in_use,
        ds.spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    sync_status(&ctx, &ds, &nodes, &settings, history.collision_count, now).await
}

/// The set's pods: those it controls, and active orphans its selector matches, adopted.
async fn claim_pods(
    ctx: &Context,
    ds: &DaemonSet,
    namespace: &str,
) -> Result<Vec<Arc<Pod>>, ControllerError> {
    let uid = ds.metadata.uid.as_deref();
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
            && selector_matches(&ds.spec.selector, pod.labels())
            && let Some(adopted) = adopt(&api, &pod, controller_ref(ds)).await?
        {
            owned.push(Arc::new(adopted));
        }
    }
    Ok(owned)
}

fn forget_settled(ctx: &Context, uid: &str, owned: &[Arc<Pod>]) {
    let now = Instant::now();
    let names: HashSet<String> = owned.iter().map(|p| p.name_any()).collect();
    let mut expect = ctx.expectations();
    expect.created.retain(|(owner, _), (pod, at)| {
        now.duration_since(*at) < EXPECTATION_TTL && !(owner == uid && names.contains(pod))
    });
    let shown_deleted = |pod_uid: &String| {
        owned
            .iter()
            .find(|p| p.metadata.uid.as_ref() == Some(pod_uid))
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    };
    expect
        .deleted
        .retain(|pod_uid, at| now.duration_since(*at) < EXPECTATION_TTL && !shown_deleted(pod_uid));
}

fn available(pod: &Pod, settings: &Settings, now: Timestamp) -> bool {
    is_available(pod, settings.min_ready, now)
}

/// Each node to its one daemon pod: created where one should run and none is, failed ones
/// replaced, extras removed, and pods gone from nodes they may no longer stay on.
fn manage(nodes: &[(String, NodePods)], settings: &Settings, now: Timestamp, plan: &mut Plan) {
    let surge = settings.max_surge > 0;
    for (name, node) in nodes {
        if !node.verdict.should_run {
            if !node.verdict.should_continue {
                for pod in &node.running {
                    plan.delete(pod);
                }
            }
            continue;
        }
        if node.pending {
            continue;
        }
        if node.all == 0 {
            plan.create.push(name.clone());
            continue;
        }
        let mut running: Vec<&Arc<Pod>> = Vec::new();
        for pod in &node.running {
            if failed(pod) {
                plan.delete(pod);
            } else {
                running.push(pod);
            }
        }
        if !surge {
            // Without surge, the oldest stays.
            for extra in running.iter().skip(1) {
                plan.delete(extra);
            }
            continue;
        }
        if running.is_empty() {
            if node.verdict.should_continue {
                plan.create.push(name.clone());
            }
            continue;
        }
        // With surge, an old pod and a new one may share the node until the new one is
        // available (or the old one is not ready); anything else beyond one goes.
        let (mut oldest_new, mut oldest_old) = (None, None);
        for pod in &running {
            let slot = if hash_of(pod) == settings.hash {
                &mut oldest_new
            } else {
                &mut oldest_old
            };
            if slot.is_none() {
                *slot = Some(*pod);
            } else {
                plan.delete(pod);
            }
        }
        if let (Some(new), Some(old)) = (oldest_new, oldest_old)
            && (ready_since(old).is_none() || available(new, settings, now))
        {
            plan.delete(old);
        }
    }
}

/// A node's pod of the update revision and its older one, either possibly missing.
type NewAndOld<'a> = (Option<&'a Arc<Pod>>, Option<&'a Arc<Pod>>);

/// A node's one new pod and one old pod (not being deleted); `None` when it has more of
/// either (the manage step removes extras first).
fn updated_and_old<'a>(
    node: &'a NodePods,
    settings: &Settings,
    plan: &Plan,
) -> Option<NewAndOld<'a>> {
    let (mut new, mut old) = (None, None);
    for pod in node.running.iter().filter(|p| !plan.deletes(p)) {
        let slot = if hash_of(pod) == settings.hash {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod);
    }
    Some((new, old))
}

/// Rolling update without surge: old pods are deleted (and recreated by the manage step)
/// while at most `maxUnavailable` nodes lack an available pod; old pods that are not
/// available anyway go at once.
fn roll_within_unavailability(
    nodes: &[(String, NodePods)],
    settings: &Settings,
    now: Timestamp,
    plan: &mut Plan,
) {
    let mut unavailable = 0;
    let mut replace_now = Vec::new();
    let mut candidates = Vec::new();
    for (_, node) in nodes.iter().filter(|(_, n)| n.verdict.should_run) {
        if node.pending {
            unavailable += 1;
            continue;
        }
        match updated_and_old(node, settings, plan) {
            None | Some((None, None) | (Some(_), Some(_))) => unavailable += 1,
            Some((Some(new), None)) => {
                if !available(new, settings, now) {
                    unavailable += 1;
                }
            }
            Some((None, Some(old))) => {
                if !available(old, settings, now) {
                    replace_now.push(old.clone());
                } else {
                    candidates.push(old.clone());
                }
            }
        }
    }
    let room = usize::try_from((settings.max_unavailable - unavailable).max(0)).unwrap_or(0);
    for pod in replace_now.iter().chain(candidates.iter().take(room)) {
        plan.delete(pod);
    }
}

/// Rolling update with surge: a new pod starts beside the old one on at most `maxSurge`
/// nodes at a time; the old one goes once the new one is available.
fn roll_with_surge(
    nodes: &[(String, NodePods)],
    settings: &Settings,
    now: Timestamp,
    plan: &mut Plan,
) {
    let mut surging = 0;
    let mut start_now = Vec::new();
    let mut candidates = Vec::new();
    for (name, node) in nodes.iter().filter(|(_, n)| n.verdict.should_run) {
        if node.pending {
            surging += 1;
            continue;
        }
        match updated_and_old(node, settings, plan) {
            None => surging += 1,
            Some((_, None)) => {}
            Some((None, Some(old))) => {
                if !available(old, settings, now) {
                    start_now.push(name.clone());
                } else {
                    candidates.push(name.clone());
                }
            }
            Some((Some(new), Some(old))) => {
                if available(new, settings, now) {
                    plan.delete(old);
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = usize::try_from((settings.max_surge - surging).max(0)).unwrap_or(0);
    for name in start_now
        .into_iter()
        .chain(candidates.into_iter().take(room))
    {
        if !plan.create.contains(&name) {
            plan.create.push(name);
        }
    }
}

async fn execute(
    ctx: &Context,
    ds: &DaemonSet,
    settings: &Settings,
    plan: &Plan,
) -> Result<(), ControllerError> {
    let namespace = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let template = &ds.spec.template;
    for node in &plan.create {
        let mut pod = pod_from_template(template, controller_ref(ds), &name);
        pod.metadata.namespace = Some(namespace.clone());
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(HASH_LABEL.into(), settings.hash.clone());
        if let Some(generation) = ds.metadata.generation {
            labels.insert(GENERATION_LABEL.into(), generation.to_string());
        }
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.tolerations = Some(daemon_tolerations(spec));
        spec.affinity = Some(pinned_to(spec.affinity.take(), node));
        let created = match api.create(&PostParams::default(), &pod).await {
            Ok(created) => created,
            Err(kube::Error::Api(e)) => {
                events::record(
                    &ctx.client,
                    COMPONENT,
                    ds,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating: {}", e.message),
                )
                .await;
                return Err(kube::Error::Api(e).into());
            }
            Err(error) => return Err(error.into()),
        };
        let pod_name = created.name_any();
        ctx.expectations().created.insert(
            (uid.clone(), node.clone()),
            (pod_name.clone(), Instant::now()),
        );
        events::record(
            &ctx.client,
            COMPONENT,
            ds,
            "Normal",
            "SuccessfulCreate",
            &format!("Created pod: {pod_name}"),
        )
        .await;
    }
    let now = plan.delete_now.iter().map(|p| (p, Some(0)));
    for (pod, grace) in plan.delete.iter().map(|p| (p, None)).chain(now) {
        let pod_name = pod.name_any();
        let params = DeleteParams {
            grace_period_seconds: grace,
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pod_name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => continue,
            Err(error) => return Err(error.into()),
        }
        if let Some(pod_uid) = pod.metadata.uid.clone() {
            ctx.expectations().deleted.insert(pod_uid, Instant::now());
        }
        events::record(
            &ctx.client,
            COMPONENT,
            ds,
            "Normal",
            "SuccessfulDelete",
            &format!("Deleted pod: {pod_name}"),
        )
        .await;
    }
    Ok(())
}

/// Zero counts and absent ones are the same status.
fn normalized(status: &DaemonSetStatus) -> DaemonSetStatus {
    let nonzero = |n: Option<i32>| n.filter(|n| *n != 0);
    DaemonSetStatus {
        collision_count: nonzero(status.collision_count),
        number_available: nonzero(status.number_available),
        number_unavailable: nonzero(status.number_unavailable),
        updated_number_scheduled: nonzero(status.updated_number_scheduled),
        ..status.clone()
    }
}

/// The status upstream reports, judged on each eligible node's oldest daemon pod.
async fn sync_status(
    ctx: &Context,
    ds: &DaemonSet,
    nodes: &[(String, NodePods)],
    settings: &Settings,
    collision_count: i32,
    now: Timestamp,
) -> Result<Action, ControllerError> {
    let (mut desired, mut current, mut ready, mut available_count, mut updated, mut misscheduled) =
        (0, 0, 0, 0, 0, 0);
    for (_, node) in nodes {
        let oldest = node.running.first();
        if !node.verdict.should_run {
            if oldest.is_some() {
                misscheduled += 1;
            }
            continue;
        }
        desired += 1;
        let Some(pod) = oldest else {
            continue;
        };
        current += 1;
        if ready_since(pod).is_some() {
            ready += 1;
            if available(pod, settings, now) {
                available_count += 1;
            }
        }
        if hash_of(pod) == settings.hash {
            updated += 1;
        }
    }
    let previous = ds.status.clone().unwrap_or_default();
    let status = DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_ready: ready,
        number_available: Some(available_count),
        number_unavailable: Some(desired - available_count),
        updated_number_scheduled: Some(updated),
        number_misscheduled: misscheduled,
        observed_generation: ds.metadata.generation,
        collision_count: Some(collision_count),
        conditions: previous.conditions.clone(),
    };
    if normalized(&status) != normalized(&previous) {
        let api: Api<DaemonSet> =
            Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
        api.patch_status(
            &ds.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
    }
    if ready > available_count && settings.min_ready > 0 {
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

    fn node(value: serde_json::Value) -> Node {
        serde_json::from_value(value).unwrap_or_default()
    }

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap_or_default()
    }

    #[test]
    fn daemon_pods_tolerate_what_upstream_tolerates() {
        let plain = daemon_tolerations(&spec(json!({"containers": []})));
        assert_eq!(plain.len(), 6);
        assert!(plain.iter().any(
            |t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
                && t.effect.as_deref() == Some("NoExecute")
        ));
        let host = daemon_tolerations(&spec(json!({"containers": [], "hostNetwork": true})));
        assert_eq!(host.len(), 7);
        // Given twice, a toleration is kept once.
        let given = daemon_tolerations(&spec(json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]})));
        assert_eq!(given.len(), 6);
    }

    #[test]
    fn taints_selectors_and_affinity_decide_eligibility() {
        let base = spec(json!({"containers": []}));
        let tolerations = daemon_tolerations(&base);
        let plain = node(json!({"metadata": {"name": "a", "labels": {"disk": "ssd"}}}));
        let run = Verdict {
            should_run: true,
            should_continue: true,
        };
        assert_eq!(verdict(&base, &tolerations, &plain), run);
        let cordoned = node(
            json!({"metadata": {"name": "a"}, "spec": {"unschedulable": true,
            "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(verdict(&base, &tolerations, &cordoned), run);
        let no_schedule = node(json!({"metadata": {"name": "a"}, "spec": {
            "taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}));
        assert_eq!(
            verdict(&base, &tolerations, &no_schedule),
            Verdict {
                should_run: false,
                should_continue: true
            }
        );
        let no_execute = node(json!({"metadata": {"name": "a"}, "spec": {
            "taints": [{"key": "dedicated", "value": "db", "effect": "NoExecute"}]}}));
        assert!(!verdict(&base, &tolerations, &no_execute).should_continue);
        let tolerant = spec(
            json!({"containers": [], "tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
        );
        assert_eq!(
            verdict(&tolerant, &daemon_tolerations(&tolerant), &no_execute),
            run
        );
        let selective = spec(json!({"containers": [], "nodeSelector": {"disk": "hdd"}}));
        assert!(!verdict(&selective, &tolerations, &plain).should_run);
        let affine = spec(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}}),
        );
        assert_eq!(verdict(&affine, &tolerations, &plain), run);
    }

    #[test]
    fn pods_are_pinned_to_their_node_by_field() {
        let affinity = pinned_to(None, "node-3");
        let pod = Pod {
            spec: Some(PodSpec {
                affinity: Some(affinity),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(target_node(&pod).as_deref(), Some("node-3"));
    }
}
