//! What kube-apiserver's admission plugins do on create that clients rely on. Today the
//! Priority plugin: a pod gets `spec.priority` (and `preemptionPolicy`) from the
//! PriorityClass it names, or from the global default class, else priority 0; naming a
//! class that does not exist is refused. The two system classes exist from the start.

use axum::http::StatusCode;
use keelson_api::meta::format_timestamp;
use keelson_store::StoreError;
use serde_json::{Value, json};

use super::Rest;
use super::object::{self, decode, encode, new_uid, now};
use crate::status::ApiError;

const PRIORITY_CLASSES: &str = "/registry/scheduling.k8s.io/priorityclasses/";

/// The PriorityClasses every cluster has.
const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
];

/// Creates the system PriorityClasses, if missing.
pub async fn ensure_priority_classes(rest: &Rest) -> Result<(), ApiError> {
    for (name, value, description) in SYSTEM_CLASSES {
        let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name, "uid": new_uid(), "creationTimestamp": format_timestamp(now()), "generation": 1},
            "value": value, "description": description, "preemptionPolicy": "PreemptLowerPriority"});
        match rest
            .store
            .create(&format!("{PRIORITY_CLASSES}{name}"), encode(&class))
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(error) => return Err(object::internal(error)),
        }
    }
    Ok(())
}

/// Sets a new pod's priority from its PriorityClass (Kubernetes' Priority admission).
pub async fn admit_pod(rest: &Rest, pod: &mut Value) -> Result<(), ApiError> {
    let named = pod["spec"]["priorityClassName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let class = match &named {
        Some(name) => match rest
            .store
            .get(&format!("{PRIORITY_CLASSES}{name}"), None)
            .await
        {
            Ok(Some(kv)) => Some(decode(&kv)?),
            Ok(None) => {
                let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!(
                        "pods \"{pod_name}\" is forbidden: no PriorityClass with name {name} was found"
                    ),
                ));
            }
            Err(error) => return Err(object::internal(error)),
        },
        None => {
            let page = rest
                .store
                .list(PRIORITY_CLASSES, Default::default())
                .await
                .map_err(object::internal)?;
            let mut default = None;
            for kv in &page.kvs {
                let class = decode(kv)?;
                if class["globalDefault"] == true {
                    default = Some(class);
                    break;
                }
            }
            default
        }
    };
    let (priority, policy) = match &class {
        Some(class) => (
            class["value"].as_i64().unwrap_or(0),
            class["preemptionPolicy"]
                .as_str()
                .unwrap_or("PreemptLowerPriority")
                .to_owned(),
        ),
        None => (0, "PreemptLowerPriority".to_owned()),
    };
    if let Some(given) = pod["spec"]["priority"].as_i64()
        && given != priority
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "pods \"{}\" is forbidden: the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name",
                pod["metadata"]["name"].as_str().unwrap_or_default()
            ),
        ));
    }
    if let (Some(class), None) = (&class, &named)
        && let Some(name) = class["metadata"]["name"].as_str()
    {
        pod["spec"]["priorityClassName"] = json!(name);
    }
    pod["spec"]["priority"] = json!(priority);
    pod["spec"]["preemptionPolicy"] = json!(policy);
    Ok(())
}
