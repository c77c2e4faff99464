//! Disruption controller: the status of every PodDisruptionBudget — how many pods it
//! expects, how many are healthy (Ready), how many must be, and so how many disruptions
//! the eviction API may allow now — as kube-controller-manager's disruption controller
//! writes it.
//!
//! `minAvailable` as a number counts the selected pods; a percentage, or `maxUnavailable`,
//! is taken of the scale of the pods' controllers (a Deployment's, a ReplicaSet's of its
//! own, a StatefulSet's or a ReplicationController's `spec.replicas`). Pods the eviction
//! API has recorded in `status.disruptedPods` do not count as healthy until they are gone
//! or two minutes have passed, when the record is dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::ControllerError;
use crate::events;
use crate::workload::{self, count, ready_since};

const COMPONENT: &str = "disruption-controller";
/// How long a pod the eviction API let go may take to be deleted before it counts again.
const DELETION_TIMEOUT: i64 = 120;

struct Context {
    client: Client,
    pods: Store<Pod>,
}

pub async fn run(client: Client) {
    // One watch of pods fills the cache reconciles read and triggers them.
    let (pods, writer) = reflector::store();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    );
    let budgets = controller.store();
    let context = Arc::new(Context {
        client: client.clone(),
        pods,
    });
    controller
        .watches_stream(pod_events, move |pod: Pod| budgets_of_pod(&budgets, &pod))
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<PodDisruptionBudget>, error: &ControllerError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "disruption controller");
    Action::requeue(Duration::from_secs(1))
}

/// Whether a budget's selector selects `labels` (policy/v1: an empty selector selects every
/// pod of the namespace, a missing one none).
fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    selector
        .and_then(keelson_api::selector::LabelSelector::from_object)
        .is_some_and(|s| s.matches(labels))
}

/// The budgets (from the controller's cache) that select `pod`.
fn budgets_of_pod(
    budgets: &Store<PodDisruptionBudget>,
    pod: &Pod,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let namespace = pod.namespace();
    budgets
        .state()
        .iter()
        .filter(|b| {
            b.namespace() == namespace
                && selects(
                    b.spec.as_ref().and_then(|s| s.selector.as_ref()),
                    pod.labels(),
                )
        })
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

/// `value` of `total` (a count, or a percentage rounded up), as upstream's
/// `GetScaledValueFromIntOrPercent` with rounding up.
fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(text) => {
            let percent: i64 = text
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {text:?}"))?;
            let scaled = (percent * i64::from(total) + 99).div_euclid(100);
            i32::try_from(scaled).map_err(|_| format!("{text} of {total} is out of range"))
        }
    }
}

/// What a budget's status says, before it is compared with what is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Computed {
    expected: i32,
    desired: i32,
    healthy: i32,
    allowed: i32,
    disrupted: BTreeMap<String, Time>,
}

/// The scale of the controller of `owner` (a pod's controller reference), with the UID it
/// is counted under (a Deployment's for the ReplicaSets it owns); `None` for a kind no
/// finder knows or an owner that is gone or replaced.
async fn controller_scale(
    client: &Client,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<Option<(String, i32)>, ControllerError> {
    let group = owner.api_version.split('/').next().unwrap_or_default();
    let same = |uid: Option<&String>| uid.is_some_and(|u| *u == owner.uid);
    match (group, owner.kind.as_str()) {
        ("apps", "ReplicaSet") => {
            let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
            let Some(rs) = sets.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            if !same(rs.metadata.uid.as_ref()) {
                return Ok(None);
            }
            let deployment = rs
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true) && r.kind == "Deployment");
            if let Some(deployment) = deployment {
                let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                return Ok(deployments
                    .get_opt(&deployment.name)
                    .await?
                    .filter(|d| d.metadata.uid.as_deref() == Some(deployment.uid.as_str()))
                    .map(|d| (deployment.uid.clone(), d.spec.replicas.unwrap_or(1))));
            }
            Ok(Some((owner.uid.clone(), rs.spec.replicas.unwrap_or(1))))
        }
        ("apps", "StatefulSet") => {
            let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            Ok(sets
                .get_opt(&owner.name)
                .await?
                .filter(|s| same(s.metadata.uid.as_ref()))
                .map(|s| (owner.uid.clone(), s.spec.replicas.unwrap_or(1))))
        }
        ("v1", "ReplicationController") => {
            let controllers: Api<ReplicationController> =
                Api::namespaced(client.clone(), namespace);
            Ok(controllers
                .get_opt(&owner.name)
                .await?
                .filter(|c| same(c.metadata.uid.as_ref()))
                .map(|c| {
                    (
                        owner.uid.clone(),
                        c.spec.and_then(|s| s.replicas).unwrap_or(1),
                    )
                }))
        }
        _ => Ok(None),
    }
}

/// Why a budget's expected count could not be worked out.
enum Unknown {
    /// Recorded on the budget as `SyncFailed`.
    Failed(String),
    Api(ControllerError),
}

/// The pods' controllers' summed scale, and the pods that have no controller.
async fn expected_scale(
    client: &Client,
    namespace: &str,
    pods: &[Arc<Pod>],
) -> Result<(i32, Vec<String>), Unknown> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let Some(owner) = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
        else {
            unmanaged.push(pod.name_any());
            continue;
        };
        if scales.contains_key(&owner.uid) {
            continue;
        }
        match controller_scale(client, namespace, owner)
            .await
            .map_err(Unknown::Api)?
        {
            Some((uid, scale)) => {
                scales.insert(uid, scale);
            }
            None => {
                return Err(Unknown::Failed(format!(
                    "found no controllers for pod {:?}",
                    pod.name_any()
                )));
            }
        }
    }
    Ok((scales.values().sum(), unmanaged))
}

async fn reconcile(
    budget: Arc<PodDisruptionBudget>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    if ctx.pods.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let namespace = budget.namespace().unwrap_or_default();
    let name = budget.name_any();
    let spec = budget.spec.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace.as_str())
                && selects(spec.selector.as_ref(), p.labels())
        })
        .collect();
    if pods.is_empty() && budget.status.as_ref().and_then(|s| s.expected_pods) != Some(0) {
        events::record(
            &ctx.client,
            COMPONENT,
            budget.as_ref(),
            "Normal",
            "NoPods",
            "No matching pods found",
        )
        .await;
    }

    // expected and desired counts, from minAvailable or maxUnavailable.
    let counts = async {
        let mut unmanaged = Vec::new();
        let (expected, desired) = match (&spec.max_unavailable, &spec.min_available) {
            (Some(max_unavailable), _) => {
                let (expected, without) = expected_scale(&ctx.client, &namespace, &pods).await?;
                unmanaged = without;
                let unavailable = scaled(max_unavailable, expected).map_err(Unknown::Failed)?;
                (expected, (expected - unavailable).max(0))
            }
            (None, Some(IntOrString::Int(min))) => (count(pods.len()), *min),
            (None, Some(min @ IntOrString::String(_))) => {
                let (expected, without) = expected_scale(&ctx.client, &namespace, &pods).await?;
                unmanaged = without;
                (expected, scaled(min, expected).map_err(Unknown::Failed)?)
            }
            (None, None) => (0, 0),
        };
        Ok::<_, Unknown>((expected, desired, unmanaged))
    }
    .await;
    let (expected, desired, unmanaged) = match counts {
        Ok(counts) => counts,
        Err(Unknown::Api(error)) => return Err(error),
        Err(Unknown::Failed(message)) => {
            events::record(
                &ctx.client,
                COMPONENT,
                budget.as_ref(),
                "Warning",
                "CalculateExpectedPodCountFailed",
                &format!("Failed to calculate the number of expected pods: {message}"),
            )
            .await;
            fail_safe(&ctx.client, &budget, &message).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    if !unmanaged.is_empty() {
        tracing::debug!(budget = %name, ?unmanaged, "pods without a controller");
    }

    let now = Timestamp::now();
    let (disrupted, recheck) = disrupted_pods(&budget, &pods, now);
    let healthy = healthy_pods(&pods, &disrupted, now);
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let computed = Computed {
        expected,
        desired,
        healthy,
        allowed,
        disrupted,
    };
    write_status(&ctx.client, &budget, &computed).await?;
    Ok(match recheck {
        Some(seconds) => Action::requeue(Duration::from_secs(seconds.max(1))),
        None => Action::await_change(),
    })
}

/// The budget's `disruptedPods` without the pods that are gone, being deleted, or overdue
/// (recorded more than two minutes ago), and the seconds until the next one is overdue.
fn disrupted_pods(
    budget: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<u64>) {
    let recorded = budget
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let mut kept = BTreeMap::new();
    let mut recheck: Option<u64> = None;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = recorded.get(&pod.name_any()) else {
            continue;
        };
        let due = at.0.as_second() + DELETION_TIMEOUT;
        if due < now.as_second() {
            tracing::info!(pod = %pod.name_any(), budget = %budget.name_any(),
                "a pod evicted two minutes ago is still there; it counts again");
            continue;
        }
        let wait = u64::try_from(due - now.as_second()).unwrap_or(0);
        recheck = Some(recheck.map_or(wait, |r| r.min(wait)));
        kept.insert(pod.name_any(), at.clone());
    }
    (kept, recheck)
}

/// Ready pods that are neither being deleted nor recently let go by the eviction API.
fn healthy_pods(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    let count = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            disrupted
                .get(&p.name_any())
                .is_none_or(|at| at.0.as_second() + DELETION_TIMEOUT <= now.as_second())
        })
        .filter(|p| ready_since(p).is_some())
        .count();
    workload::count(count)
}

/// The `DisruptionAllowed` condition for `allowed`, keeping the transition time of an
/// unchanged status.
fn allowed_condition(
    current: Option<&Condition>,
    allowed: bool,
    reason: &str,
    message: &str,
    generation: i64,
) -> Condition {
    let status = if allowed { "True" } else { "False" };
    let since = current.filter(|c| c.status == status).map_or_else(
        || Time(Timestamp::now()),
        |c| c.last_transition_time.clone(),
    );
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: since,
    }
}

fn current_condition(budget: &PodDisruptionBudget) -> Option<&Condition> {
    budget
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionAllowed")
}

/// The other conditions of the budget, with `condition` in place of its own kind.
fn with_condition(budget: &PodDisruptionBudget, condition: Condition) -> Vec<Condition> {
    let mut conditions: Vec<Condition> = budget
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "DisruptionAllowed")
        .collect();
    conditions.push(condition);
    conditions
}

async fn write_status(
    client: &Client,
    budget: &PodDisruptionBudget,
    computed: &Computed,
) -> Result<(), ControllerError> {
    let generation = budget.metadata.generation.unwrap_or(0);
    let (reason, allowed) = if computed.allowed > 0 {
        ("SufficientPods", true)
    } else {
        ("InsufficientPods", false)
    };
    let current = current_condition(budget);
    let status = budget.status.clone().unwrap_or_default();
    let stored_disrupted = status.disrupted_pods.clone().unwrap_or_default();
    let unchanged = status.expected_pods == Some(computed.expected)
        && status.desired_healthy == Some(computed.desired)
        && status.current_healthy == Some(computed.healthy)
        && status.disruptions_allowed == Some(computed.allowed)
        && stored_disrupted == computed.disrupted
        && status.observed_generation == Some(generation)
        && current.is_some_and(|c| {
            c.reason == reason
                && c.status == if allowed { "True" } else { "False" }
                && c.observed_generation == Some(generation)
        });
    if unchanged {
        return Ok(());
    }
    let condition = allowed_condition(current, allowed, reason, "", generation);
    // A whole-status write guarded by the version read: the eviction API decrements
    // `disruptionsAllowed` with the same guard, so neither overwrites the other unseen.
    let mut updated = budget.clone();
    updated.status = Some(k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus {
        expected_pods: Some(computed.expected),
        desired_healthy: Some(computed.desired),
        current_healthy: Some(computed.healthy),
        disruptions_allowed: Some(computed.allowed),
        disrupted_pods: Some(computed.disrupted.clone()),
        observed_generation: Some(generation),
        conditions: Some(with_condition(budget, condition)),
    });
    updated.metadata.managed_fields = None;
    let budgets: Api<PodDisruptionBudget> =
        Api::namespaced(client.clone(), &budget.namespace().unwrap_or_default());
    match budgets
        .replace_status(&budget.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        // Changed meanwhile (an eviction, a spec change): the new version reconciles again.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// A budget whose expected count is unknown allows no disruption (`SyncFailed`).
async fn fail_safe(
    client: &Client,
    budget: &PodDisruptionBudget,
    message: &str,
) -> Result<(), ControllerError> {
    let generation = budget.metadata.generation.unwrap_or(0);
    let condition = allowed_condition(
        current_condition(budget),
        false,
        "SyncFailed",
        message,
        generation,
    );
    let patch = json!({"status": {
        "disruptionsAllowed": 0,
        "observedGeneration": generation,
        "conditions": with_condition(budget, condition),
    }});
    let budgets: Api<PodDisruptionBudget> =
        Api::namespaced(client.clone(), &budget.namespace().unwrap_or_default());
    budgets
        .patch_status(
            &budget.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up_of_the_expected_count() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(&pct("50%"), 3), Ok(2));
        assert_eq!(scaled(&pct("100%"), 4), Ok(4));
        assert_eq!(scaled(&pct("1%"), 4), Ok(1));
        assert_eq!(scaled(&pct("0%"), 4), Ok(0));
        assert_eq!(scaled(&IntOrString::Int(2), 10), Ok(2));
        assert!(scaled(&pct("half"), 4).is_err());
    }

    fn pod(name: &str, ready: bool, deleting: bool) -> Arc<Pod> {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                "deletionTimestamp": if deleting { json!("2025-01-01T00:00:00Z") } else { json!(null) }},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap_or_default();
        Arc::new(pod)
    }

    #[test]
    fn evicted_pods_count_as_unhealthy_until_overdue() {
        let now = Timestamp::now();
        let recent = Time(now);
        let old = Time(Timestamp::from_second(now.as_second() - 300).unwrap_or(now));
        let budget: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "default"},
            "status": {"disruptedPods": {"a": recent, "b": old, "gone": recent, "c": recent}}
        }))
        .unwrap_or_default();
        let pods = vec![
            pod("a", true, false),
            pod("b", true, false),
            pod("c", true, true),
            pod("d", true, false),
            pod("e", false, false),
        ];
        let (kept, recheck) = disrupted_pods(&budget, &pods, now);
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            ["a"],
            "gone, deleting and overdue pods are dropped"
        );
        assert!(
            recheck.is_some_and(|s| (119..=120).contains(&s)),
            "{recheck:?}"
        );
        assert_eq!(
            healthy_pods(&pods, &kept, now),
            2,
            "b and d: a is disrupted, c deleting, e unready"
        );
    }

    #[test]
    fn selectors_follow_policy_v1() {
        let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        assert!(
            selects(Some(&LabelSelector::default()), &labels),
            "empty selects all"
        );
        assert!(!selects(None, &labels), "missing selects none");
        let other = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_owned(), "db".to_owned())])),
            ..Default::default()
        };
        assert!(!selects(Some(&other), &labels));
    }
}
