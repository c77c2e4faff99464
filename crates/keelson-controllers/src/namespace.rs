//! Namespace controller: empties a namespace being deleted, then lets it go.
//!
//! Deleting a namespace only marks it (`deletionTimestamp`, phase `Terminating`); its
//! `kubernetes` finalizer (in `spec.finalizers`) holds it. This controller finds every
//! namespaced resource through the API's discovery, as kube-controller-manager does (so
//! it needs no list of kinds), deletes their objects in the namespace, reports progress
//! in the namespace's conditions (`NamespaceDeletionDiscoveryFailure`,
//! `NamespaceDeletionContentFailure`, `NamespaceContentRemaining`,
//! `NamespaceFinalizersRemaining`, …), waits until nothing is left (pods on nodes go
//! only when their node has stopped them), and then removes its finalizer through
//! `namespaces/{name}/finalize`; the API server removes a namespace left without
//! finalizers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::ControllerError;

/// The finalizer this controller owns.
const FINALIZER: &str = "kubernetes";
/// How soon a namespace whose content is still going is looked at again.
const RECHECK: Duration = Duration::from_millis(500);

pub async fn run(client: Client) {
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, Arc::new(client))
    .for_each(|_| futures::future::ready(()))
    .await;
}

fn error_policy(_: Arc<Namespace>, error: &ControllerError, _: Arc<Client>) -> Action {
    tracing::warn!(%error, "namespace controller");
    Action::requeue(Duration::from_secs(1))
}

/// The namespaced resources that can be listed and deleted, each at its group's preferred
/// version.
async fn namespaced_resources(
    client: &Client,
) -> Result<Vec<(ApiResource, ApiCapabilities)>, String> {
    let discovery = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(discovery) => discovery,
        Err(_) => Discovery::new(client.clone())
            .run()
            .await
            .map_err(|e| format!("Discovery failed for some groups: {e}"))?,
    };
    Ok(discovery
        .groups()
        .flat_map(|group| group.recommended_resources())
        .filter(|(_, caps)| {
            caps.scope == Scope::Namespaced
                && caps.supports_operation(verbs::LIST)
                && (caps.supports_operation(verbs::DELETE_COLLECTION)
                    || caps.supports_operation(verbs::DELETE))
        })
        .collect())
}

/// `plural` or `plural.group`, as upstream names a resource in its conditions.
fn group_resource(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

/// What one pass over a namespace's content found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Progress {
    discovery_error: Option<String>,
    /// Resources whose objects could not be deleted or listed, with why.
    failures: Vec<String>,
    /// Objects still there, per resource.
    remaining: BTreeMap<String, usize>,
    /// Finalizers the remaining objects carry, with how many objects carry each.
    finalizers: BTreeMap<String, usize>,
}

impl Progress {
    fn done(&self) -> bool {
        self.discovery_error.is_none() && self.failures.is_empty() && self.remaining.is_empty()
    }

    /// The five deletion conditions, as the upstream namespace controller words them.
    fn conditions(&self) -> Vec<(&'static str, bool, &'static str, String)> {
        let ok = |kind, reason, message: &str| (kind, false, reason, message.to_owned());
        let discovery = match &self.discovery_error {
            None => ok(
                "NamespaceDeletionDiscoveryFailure",
                "ResourcesDiscovered",
                "All resources successfully discovered",
            ),
            Some(error) => (
                "NamespaceDeletionDiscoveryFailure",
                true,
                "DiscoveryFailed",
                error.clone(),
            ),
        };
        let parsing = ok(
            "NamespaceDeletionGroupVersionParsingFailure",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        );
        let content = if self.failures.is_empty() {
            ok(
                "NamespaceDeletionContentFailure",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization",
            )
        } else {
            (
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    self.failures.len(),
                    self.failures.join(", ")
                ),
            )
        };
        let remaining = if self.remaining.is_empty() {
            ok(
                "NamespaceContentRemaining",
                "ContentRemoved",
                "All content successfully removed",
            )
        } else {
            let each: Vec<String> = self
                .remaining
                .iter()
                .map(|(resource, n)| format!("{resource} has {n} resource instances"))
                .collect();
            (
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", each.join(", ")),
            )
        };
        let finalizers = if self.finalizers.is_empty() {
            ok(
                "NamespaceFinalizersRemaining",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished",
            )
        } else {
            let each: Vec<String> = self
                .finalizers
                .iter()
                .map(|(finalizer, n)| format!("{finalizer} in {n} resource instances"))
                .collect();
            (
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    each.join(", ")
                ),
            )
        };
        vec![discovery, parsing, content, remaining, finalizers]
    }
}

/// Deletes what is left of `resource` in `namespace`; records what remains in `progress`.
async fn empty_resource(
    client: &Client,
    namespace: &str,
    resource: &ApiResource,
    caps: &ApiCapabilities,
    progress: &mut Progress,
) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let name = group_resource(resource);
    let listed = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(error) => {
            progress.failures.push(format!("{name}: {error}"));
            return;
        }
    };
    let live: Vec<&DynamicObject> = listed
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .collect();
    if !live.is_empty() {
        let deleted = if caps.supports_operation(verbs::DELETE_COLLECTION) {
            api.delete_collection(&DeleteParams::background(), &ListParams::default())
                .await
                .map(|_| ())
        } else {
            let mut result = Ok(());
            for object in &live {
                match api
                    .delete(&object.name_any(), &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(error) => result = Err(error),
                }
            }
            result
        };
        if let Err(error) = deleted {
            progress.failures.push(format!("{name}: {error}"));
        }
    }
    // What is left after the delete: objects being deleted gracefully or held by
    // finalizers (a fresh list, so objects that went at once are not counted).
    let left = if live.is_empty() {
        listed
    } else {
        match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(error) => {
                progress.failures.push(format!("{name}: {error}"));
                return;
            }
        }
    };
    if left.is_empty() {
        return;
    }
    progress.remaining.insert(name, left.len());
    for object in &left {
        for finalizer in object.finalizers() {
            *progress.finalizers.entry(finalizer.clone()).or_default() += 1;
        }
    }
}

/// Writes the deletion conditions, keeping the transition time of those unchanged.
async fn write_conditions(
    namespaces: &Api<Namespace>,
    namespace: &Namespace,
    progress: &Progress,
) -> Result<(), ControllerError> {
    let current = namespace
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(Timestamp::now());
    let mut changed = false;
    let mut conditions: Vec<NamespaceCondition> = current
        .iter()
        .filter(|c| {
            !progress
                .conditions()
                .iter()
                .any(|(kind, ..)| *kind == c.type_)
        })
        .cloned()
        .collect();
    for (kind, failing, reason, message) in progress.conditions() {
        let status = if failing { "True" } else { "False" };
        let old = current.iter().find(|c| c.type_ == kind);
        let same = old.is_some_and(|c| {
            c.status == status
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message.as_str())
        });
        changed |= !same;
        let since = old
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        conditions.push(NamespaceCondition {
            type_: kind.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message),
            last_transition_time: Some(since),
        });
    }
    if !changed {
        return Ok(());
    }
    let patch = json!({"status": {"conditions": conditions}});
    match namespaces
        .patch_status(
            &namespace.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn spec_finalizers(namespace: &Namespace) -> Vec<String> {
    namespace
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default()
}

async fn reconcile(
    namespace: Arc<Namespace>,
    client: Arc<Client>,
) -> Result<Action, ControllerError> {
    if namespace.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let namespaces: Api<Namespace> = Api::all((*client).clone());
    let finalizers = spec_finalizers(&namespace);
    if !finalizers.iter().any(|f| f == FINALIZER) {
        // Ours is done. Without any finalizer left it is deleted for good (the API server
        // also does this when the last one goes through `finalize`).
        if finalizers.is_empty() {
            match namespaces.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
        }
        return Ok(Action::await_change());
    }

    let mut progress = Progress::default();
    match namespaced_resources(&client).await {
        Ok(resources) => {
            for (resource, caps) in &resources {
                empty_resource(&client, &name, resource, caps, &mut progress).await;
            }
        }
        Err(error) => progress.discovery_error = Some(error),
    }
    write_conditions(&namespaces, &namespace, &progress).await?;
    if !progress.done() {
        tracing::debug!(namespace = %name, ?progress, "namespace content remains");
        return Ok(Action::requeue(RECHECK));
    }

    // Empty: remove our finalizer (a PUT of `finalize` with the namespace as read, so a
    // namespace changed meanwhile is looked at again).
    let mut finalized = (*namespace).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    finalized.metadata.managed_fields = None;
    match namespaces
        .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_what_remains() {
        let done = Progress::default();
        assert!(done.done());
        let reasons: Vec<(&str, bool, &str)> = done
            .conditions()
            .into_iter()
            .map(|(kind, failing, reason, _)| (kind, failing, reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "NamespaceDeletionDiscoveryFailure",
                    false,
                    "ResourcesDiscovered"
                ),
                (
                    "NamespaceDeletionGroupVersionParsingFailure",
                    false,
                    "ParsedGroupVersions"
                ),
                ("NamespaceDeletionContentFailure", false, "ContentDeleted"),
                ("NamespaceContentRemaining", false, "ContentRemoved"),
                (
                    "NamespaceFinalizersRemaining",
                    false,
                    "ContentHasNoFinalizers"
                ),
            ]
        );
        let waiting = Progress {
            remaining: BTreeMap::from([("pods".to_owned(), 2), ("configmaps".to_owned(), 1)]),
            finalizers: BTreeMap::from([("example.com/keep".to_owned(), 1)]),
            ..Default::default()
        };
        assert!(!waiting.done());
        let conditions = waiting.conditions();
        assert_eq!(
            conditions[3],
            (
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                "Some resources are remaining: configmaps has 1 resource instances, pods has 2 resource instances".to_owned()
            )
        );
        assert_eq!(
            conditions[4].3,
            "Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances"
        );
    }
}
