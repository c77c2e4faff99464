//! What the workload controllers share: label selectors, pods made from a template and
//! owned by their controller, pod states as controllers count them, and rollout bounds
//! given as a count or a percentage.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

/// Whether `labels` satisfy `selector` (an empty selector matches nothing, as controllers
/// read it).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let empty = selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_deref()
            .unwrap_or_default()
            .is_empty();
    !empty
        && keelson_api::selector::LabelSelector::from_object(selector)
            .is_some_and(|s| s.matches(labels))
}

/// The controller reference an owner puts on what it creates.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The UID of the object's controller, if it has one.
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// A new pod from `template`, owned by `owner`, named by the server from `prefix`.
pub fn pod_from_template(template: &PodTemplateSpec, owner: OwnerReference, prefix: &str) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod became Ready, if it is.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
        })
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    ready_since(pod).is_some_and(|since| {
        min_ready_seconds <= 0
            || now.as_second() - since.as_second() >= i64::from(min_ready_seconds)
    })
}

/// Deletion order for scaling down (first = deleted first), as Kubernetes ranks pods:
/// unscheduled before scheduled, pending before running, not ready before ready, the most
/// recently created first.
pub fn deletion_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<i64>) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = ready_since(pod).is_some();
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    (
        u8::from(scheduled),
        u8::from(running),
        u8::from(ready),
        std::cmp::Reverse(created),
    )
}

/// Makes `owner` the controller of the orphan `pod`, as controllers adopt the orphans
/// their selector matches; `None` when the pod changed or went meanwhile.
pub async fn adopt(
    pods: &kube::Api<Pod>,
    pod: &Pod,
    owner: OwnerReference,
) -> Result<Option<Pod>, kube::Error> {
    let mut owners = pod.metadata.owner_references.clone().unwrap_or_default();
    owners.push(owner);
    let patch =
        serde_json::json!({"metadata": {"ownerReferences": owners, "uid": pod.metadata.uid}});
    match pods
        .patch(
            &pod.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(adopted) => Ok(Some(adopted)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
        Err(error) => Err(error),
    }
}

/// Running with every container ready: what ordered rollouts wait for.
pub fn is_running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && ready_since(pod).is_some()
}

/// `value` of an int-or-percent (`maxSurge`, `maxUnavailable`) against `total`, rounding
/// up or down; `default` when unset.
pub fn scaled(value: Option<&IntOrString>, total: i32, default: &str, round_up: bool) -> i32 {
    let text = match value {
        Some(IntOrString::Int(n)) => return (*n).max(0),
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    match text.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(percent) => {
            let product = i64::from(total) * percent;
            let value = if round_up {
                (product + 99) / 100
            } else {
                product / 100
            };
            i32::try_from(value).unwrap_or(0).max(0)
        }
        None => text.parse().unwrap_or(0),
    }
}

/// A count of objects as the `int32` status fields hold it.
pub fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailable_round_like_kubernetes() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(Some(&pct("25%")), 10, "25%", true), 3);
        assert_eq!(scaled(Some(&pct("25%")), 10, "25%", false), 2);
        assert_eq!(scaled(None, 4, "25%", true), 1);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 10, "25%", true), 2);
        assert_eq!(scaled(Some(&pct("0%")), 10, "25%", false), 0);
    }
}
