//! `POST pods/{name}/eviction`: deletes a pod unless that would break its
//! PodDisruptionBudget, as kube-apiserver's eviction storage does.
//!
//! Pods that are finished, pending or already being deleted go without consulting budgets.
//! Otherwise the one budget selecting the pod (more than one is a 500) must allow a
//! disruption: its `status.disruptionsAllowed` is decremented and the pod recorded in
//! `status.disruptedPods` (a write guarded by the budget's revision, retried on conflict)
//! before the pod is deleted with the eviction's `DeleteOptions`; a budget with nothing to
//! spare answers 429, which `kubectl drain` retries. A pod that is not ready while the
//! budget is met is deleted without spending a disruption, guarded by the revision it was
//! judged at. The pod gets a `DisruptionTarget` condition just before its deletion.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keelson_api::Resource;
use keelson_api::meta::format_timestamp;
use keelson_api::selector::LabelSelector;
use keelson_store::StoreError;
use serde_json::{Value, json};

use super::object::{
    self, bad_request, conflict, decode, encode, labels, not_found, now, str_field,
};
use super::target::object_key;
use super::write::{DeleteOptions, RETRIES, delete_one, delete_options, read_body};
use super::{Query, Rest, Target, object_response};
use crate::status::{ApiError, StatusDetails};

/// The most pods a budget may list as disrupted but not yet seen deleted.
const MAX_DISRUPTED_PODS: usize = 2000;

/// The message of a 429 for a budget with nothing to spare (upstream's wording).
const BUDGET_VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

pub async fn evict(
    rest: &Rest,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let pods = &target.resource;
    let name = target.name.clone().unwrap_or_default();
    let namespace = target.namespace.clone().unwrap_or_default();
    let eviction = read_body(headers, body)
        .await?
        .ok_or_else(|| bad_request("the request body is empty"))?;
    check_eviction(&eviction, &name)?;
    let options = delete_options(query, Some(eviction["deleteOptions"].clone()))?;
    let key = target.key(&name);

    // Pods whose eviction disrupts nothing go at once.
    let mut attempts = 0;
    let pod = loop {
        attempts += 1;
        let pod = match rest.store.get(&key, None).await {
            Ok(Some(kv)) => decode(&kv)?,
            Ok(None) => return Err(not_found(pods, &name)),
            Err(error) => return Err(object::internal(error)),
        };
        if !can_ignore_budget(&pod) {
            break pod;
        }
        let mut attempt = options.clone();
        // A pending pod could start meanwhile: delete the one judged, unless the client
        // named its own version.
        if enforce_resource_version(&pod) && attempt.resource_version.is_none() {
            attempt.resource_version = Some(resource_version(&pod));
        }
        match condition_and_delete(rest, pods, &namespace, &name, attempt).await {
            Ok(()) => return Ok(success()),
            // Changed since it was read: judge it again (not when the client's own
            // precondition failed).
            Err(error)
                if error.code == StatusCode::CONFLICT
                    && options.resource_version.is_none()
                    && attempts < RETRIES => {}
            Err(error) => return Err(error),
        }
    };

    let budgets = budgets_of(rest, &namespace, &pod).await?;
    if budgets.len() > 1 {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let mut guard_version = false;
    if let Some((budget_key, mut budget, mut revision)) = budgets.into_iter().next() {
        let budget_name = str_field(&budget, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned();
        let status = &budget["status"];
        let healthy = status["currentHealthy"].as_i64().unwrap_or(0);
        let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
        let always_allow = budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
        // An unready pod does not count as healthy: evicting it spends no disruption when
        // the budget is met (or its policy always allows it).
        if !pod_ready(&pod) && (always_allow || (healthy >= desired && desired > 0)) {
            guard_version = true;
        } else {
            let mut done = false;
            for _ in 0..RETRIES {
                let Some(updated) = check_and_decrement(&budget, &name, options.dry_run)? else {
                    done = true;
                    break;
                };
                match rest
                    .store
                    .update(&budget_key, encode(&updated), revision)
                    .await
                {
                    Ok(_) => {
                        done = true;
                        break;
                    }
                    Err(StoreError::Conflict { .. }) => {
                        match rest.store.get(&budget_key, None).await {
                            Ok(Some(kv)) => {
                                revision = kv.mod_revision;
                                budget = decode(&kv)?;
                            }
                            Ok(None) => {
                                return Err(not_found(&budgets_resource(rest)?, &budget_name));
                            }
                            Err(error) => return Err(object::internal(error)),
                        }
                    }
                    Err(error) => return Err(object::internal(error)),
                }
            }
            if !done {
                let mut error = ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Timeout",
                    format!(
                        "Timeout: couldn't update PodDisruptionBudget \"{budget_name}\" due to conflicts"
                    ),
                );
                error.details = Some(Box::new(StatusDetails {
                    retry_after_seconds: Some(10),
                    ..Default::default()
                }));
                return Err(error);
            }
        }
        if guard_version {
            let mut options = options.clone();
            let client_versioned = options.resource_version.is_some();
            if !client_versioned {
                options.resource_version = Some(resource_version(&pod));
            }
            return match condition_and_delete(rest, pods, &namespace, &name, options).await {
                Ok(()) => Ok(success()),
                // The pod changed (it may have become ready) since it was judged: try again.
                Err(error) if error.code == StatusCode::CONFLICT && !client_versioned => {
                    Err(too_many_requests(
                        BUDGET_VIOLATION,
                        10,
                        format!(
                            "The disruption budget {budget_name} is still being processed by the server."
                        ),
                    ))
                }
                Err(error) => Err(error),
            };
        }
    }
    condition_and_delete(rest, pods, &namespace, &name, options).await?;
    Ok(success())
}

/// The body must be an `Eviction` (`policy/v1` or `policy/v1beta1`) of the pod in the URL.
fn check_eviction(eviction: &Value, name: &str) -> Result<(), ApiError> {
    if !eviction.is_object() {
        return Err(bad_request("the body must be a JSON object"));
    }
    if let Some(kind) = eviction["kind"].as_str().filter(|k| *k != "Eviction") {
        return Err(bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind (Eviction) of pods/eviction"
        )));
    }
    if let Some(version) = eviction["apiVersion"]
        .as_str()
        .filter(|v| !matches!(*v, "policy/v1" | "policy/v1beta1"))
    {
        return Err(bad_request(format!(
            "the API version in the data ({version}) does not match the expected API version (policy/v1)"
        )));
    }
    if str_field(eviction, &["metadata", "name"]) != Some(name) {
        return Err(bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    if !matches!(eviction["deleteOptions"], Value::Null | Value::Object(_)) {
        return Err(bad_request("deleteOptions must be an object"));
    }
    Ok(())
}

/// 201 `Status` `Success`, as upstream answers an eviction.
fn success() -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success", "code": 201});
    object_response(StatusCode::CREATED, &status)
}

/// 429 with a `DisruptionBudget` cause.
fn too_many_requests(message: &str, retry_after: u32, cause: String) -> ApiError {
    let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
    error.details = Some(Box::new(StatusDetails {
        causes: vec![json!({"reason": "DisruptionBudget", "message": cause})],
        retry_after_seconds: Some(retry_after).filter(|s| *s > 0),
        ..Default::default()
    }));
    error
}

fn phase(pod: &Value) -> &str {
    str_field(pod, &["status", "phase"]).unwrap_or_default()
}

fn being_deleted(pod: &Value) -> bool {
    pod["metadata"].get("deletionTimestamp").is_some()
}

/// Finished, pending or already being deleted: evicting it disrupts nothing.
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed" | "Pending") || being_deleted(pod)
}

/// Whether deleting the pod must be guarded by the version it was judged at (it could
/// become healthy meanwhile).
fn enforce_resource_version(pod: &Value) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && !being_deleted(pod)
}

fn resource_version(object: &Value) -> i64 {
    str_field(object, &["metadata", "resourceVersion"])
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_default()
}

/// The `Ready` condition is `True` (upstream's "healthy").
pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn budgets_resource(rest: &Rest) -> Result<Resource, ApiError> {
    rest.registry
        .find("policy", "v1", "poddisruptionbudgets")
        .cloned()
        .ok_or_else(|| ApiError::internal("no poddisruptionbudgets resource"))
}

/// The budgets of the pod's namespace whose selector matches it: store key,
/// object and revision of each.
async fn budgets_of(
    rest: &Rest,
    namespace: &str,
    pod: &Value,
) -> Result<Vec<(String, Value, i64)>, ApiError> {
    let resource = budgets_resource(rest)?;
    let prefix = object_key(&resource, Some(namespace), "");
    let page = rest
        .store
        .list(&prefix, Default::default())
        .await
        .map_err(object::internal)?;
    let pod_labels = labels(pod);
    let mut found = Vec::new();
    for kv in page.kvs {
        let budget = decode(&kv)?;
        // policy/v1: an empty selector selects every pod of the namespace, a missing one
        // none.
        let selects = LabelSelector::from_json(&budget["spec"]["selector"])
            .is_some_and(|s| s.matches(&pod_labels));
        if selects {
            found.push((kv.key, budget, kv.mod_revision));
        }
    }
    Ok(found)
}

/// The budget with one disruption spent on `pod` (`None`: nothing to write, a dry run), or
/// the error that refuses it.
fn check_and_decrement(
    budget: &Value,
    pod: &str,
    dry_run: bool,
) -> Result<Option<Value>, ApiError> {
    let name = str_field(budget, &["metadata", "name"]).unwrap_or_default();
    let status = &budget["status"];
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    let generation = budget["metadata"]["generation"].as_i64().unwrap_or(0);
    if observed < generation {
        return Err(too_many_requests(
            BUDGET_VIOLATION,
            10,
            format!("The disruption budget {name} is still being processed by the server."),
        ));
    }
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
    let forbidden = |why: &str| {
        let mut error = ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("poddisruptionbudgets.policy \"{name}\" is forbidden: {why}"),
        );
        error.details = Some(Box::new(StatusDetails {
            name: name.to_owned(),
            group: "policy".into(),
            kind: "poddisruptionbudgets".into(),
            ..Default::default()
        }));
        error
    };
    if allowed < 0 {
        return Err(forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = status["disruptedPods"].as_object().map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(too_many_requests(
            BUDGET_VIOLATION,
            0,
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                status["desiredHealthy"].as_i64().unwrap_or(0),
                status["currentHealthy"].as_i64().unwrap_or(0)
            ),
        ));
    }
    if dry_run {
        return Ok(None);
    }
    let mut updated = budget.clone();
    let left = allowed - 1;
    updated["status"]["disruptionsAllowed"] = json!(left);
    if left == 0 {
        set_disruption_allowed_false(&mut updated["status"], observed);
    }
    let timestamp = format_timestamp(now());
    match updated["status"]["disruptedPods"].as_object_mut() {
        Some(pods) => {
            pods.insert(pod.to_owned(), json!(timestamp));
        }
        None => updated["status"]["disruptedPods"] = json!({ pod: timestamp }),
    }
    Ok(Some(updated))
}

/// The budget's `DisruptionAllowed` condition set to `False` (`InsufficientPods`).
fn set_disruption_allowed_false(status: &mut Value, observed: i64) {
    let conditions = status
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(Value::Array(conditions)) = conditions else {
        return;
    };
    let now = format_timestamp(now());
    match conditions
        .iter_mut()
        .find(|c| c["type"] == "DisruptionAllowed")
    {
        Some(condition) => {
            if condition["status"] != "False" {
                condition["status"] = json!("False");
                condition["lastTransitionTime"] = json!(now);
            }
            condition["reason"] = json!("InsufficientPods");
            condition["message"] = json!("");
            condition["observedGeneration"] = json!(observed);
        }
        None => conditions.push(json!({"type": "DisruptionAllowed", "status": "False",
            "reason": "InsufficientPods", "message": "", "observedGeneration": observed,
            "lastTransitionTime": now})),
    }
}

/// Marks the pod with a `DisruptionTarget` condition, then deletes it with `options` (the
/// condition write moves the pod's version on, so a version precondition follows it).
async fn condition_and_delete(
    rest: &Rest,
    pods: &Resource,
    namespace: &str,
    name: &str,
    mut options: DeleteOptions,
) -> Result<(), ApiError> {
    if !options.dry_run {
        let key = object_key(pods, Some(namespace), name);
        let mut written = false;
        for _ in 0..RETRIES {
            let current = match rest.store.get(&key, None).await {
                Ok(Some(kv)) => kv,
                Ok(None) => return Err(not_found(pods, name)),
                Err(error) => return Err(object::internal(error)),
            };
            let mut pod = decode(&current)?;
            let uid = str_field(&pod, &["metadata", "uid"]).unwrap_or_default();
            if let Some(expected) = options.uid.as_deref().filter(|u| *u != uid) {
                let mut error = conflict(pods, name);
                error.message = format!(
                    "Operation cannot be fulfilled on pods \"{name}\": The UID in the precondition ({expected}) does not match the UID in record ({uid}). The object might have been recreated"
                );
                return Err(error);
            }
            if let Some(expected) = options
                .resource_version
                .filter(|rv| *rv != current.mod_revision)
            {
                let mut error = conflict(pods, name);
                error.message = format!(
                    "Operation cannot be fulfilled on pods \"{name}\": The ResourceVersion in the precondition ({expected}) does not match the ResourceVersion in record ({}). The object might have been modified",
                    current.mod_revision
                );
                return Err(error);
            }
            let condition = json!({"type": "DisruptionTarget", "status": "True",
                "lastProbeTime": null, "lastTransitionTime": format_timestamp(now()),
                "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"});
            let conditions = pod["status"]
                .as_object_mut()
                .map(|status| status.entry("conditions").or_insert_with(|| json!([])));
            if let Some(Value::Array(conditions)) = conditions {
                conditions.retain(|c| c["type"] != "DisruptionTarget");
                conditions.push(condition);
            }
            match rest
                .store
                .update(&key, encode(&pod), current.mod_revision)
                .await
            {
                Ok(revision) => {
                    if options.resource_version.is_some() {
                        options.resource_version = Some(revision);
                    }
                    written = true;
                    break;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Err(not_found(pods, name)),
                Err(error) => return Err(object::internal(error)),
            }
        }
        if !written {
            return Err(conflict(pods, name));
        }
    }
    delete_one(rest, pods, Some(namespace), name, &options).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(allowed: i64, generation: i64, observed: i64) -> Value {
        json!({"metadata": {"name": "web", "generation": generation},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 3, "desiredHealthy": 2,
                "expectedPods": 3, "observedGeneration": observed}})
    }

    #[test]
    fn a_budget_with_room_spends_one_disruption_on_the_pod() -> Result<(), ApiError> {
        let updated = check_and_decrement(&budget(1, 1, 1), "web-1", false)?
            .ok_or_else(|| ApiError::internal("nothing written"))?;
        assert_eq!(updated["status"]["disruptionsAllowed"], 0);
        assert!(updated["status"]["disruptedPods"]["web-1"].is_string());
        let condition = &updated["status"]["conditions"][0];
        assert_eq!(
            (
                &condition["type"],
                &condition["status"],
                &condition["reason"]
            ),
            (
                &json!("DisruptionAllowed"),
                &json!("False"),
                &json!("InsufficientPods")
            )
        );
        assert!(check_and_decrement(&budget(2, 1, 1), "web-1", true)?.is_none());
        Ok(())
    }

    #[test]
    fn a_budget_without_room_or_not_yet_observed_answers_429() {
        let full = check_and_decrement(&budget(0, 1, 1), "web-1", false).err();
        assert_eq!(
            full.map(|e| (e.code, e.message, e.details.map(|d| d.causes))),
            Some((
                StatusCode::TOO_MANY_REQUESTS,
                BUDGET_VIOLATION.to_owned(),
                Some(vec![json!({"reason": "DisruptionBudget",
                    "message": "The disruption budget web needs 2 healthy pods and has 3 currently"})])
            ))
        );
        let stale = check_and_decrement(&budget(1, 2, 1), "web-1", false);
        assert!(stale.is_err_and(|e| e.code == StatusCode::TOO_MANY_REQUESTS
            && e.details.is_some_and(|d| d.retry_after_seconds == Some(10))));
        let negative = check_and_decrement(&budget(-1, 1, 1), "web-1", false);
        assert!(negative.is_err_and(|e| e.code == StatusCode::FORBIDDEN));
    }

    #[test]
    fn finished_pending_and_deleting_pods_skip_budgets() {
        let pod = |phase: &str| json!({"metadata": {}, "status": {"phase": phase}});
        assert!(can_ignore_budget(&pod("Succeeded")));
        assert!(can_ignore_budget(&pod("Failed")));
        assert!(can_ignore_budget(&pod("Pending")));
        assert!(!can_ignore_budget(&pod("Running")));
        let deleting = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"},
            "status": {"phase": "Running"}});
        assert!(can_ignore_budget(&deleting));
        assert!(enforce_resource_version(&pod("Pending")));
        assert!(!enforce_resource_version(&pod("Failed")));
        assert!(!enforce_resource_version(&deleting));
    }

    #[test]
    fn evictions_name_their_pod() {
        let good =
            json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "p"}});
        assert!(check_eviction(&good, "p").is_ok());
        assert!(
            check_eviction(&good, "q")
                .is_err_and(|e| e.message == "name in URL does not match name in Eviction object")
        );
        let wrong = json!({"apiVersion": "v1", "kind": "Eviction", "metadata": {"name": "p"}});
        assert!(check_eviction(&wrong, "p").is_err());
        let kind = json!({"kind": "Pod", "metadata": {"name": "p"}});
        assert!(check_eviction(&kind, "p").is_err());
    }
}
