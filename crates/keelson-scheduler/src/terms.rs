//! Pod affinity terms ready to match: namespaces resolved against the pod that wrote the
//! term, and the label selector parsed once rather than for every pod it is tried on.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use keelson_api::selector::LabelSelector;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

pub fn labels(pod: &Pod) -> &BTreeMap<String, String> {
    pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
}

pub fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// One `PodAffinityTerm`, as written on a pod in some namespace.
#[derive(Clone, Debug)]
pub struct Term {
    pub topology_key: String,
    /// `None`: every namespace (an empty `namespaceSelector`).
    namespaces: Option<Vec<String>>,
    /// `None` selects nothing (no selector, or one that does not parse).
    selector: Option<LabelSelector>,
}

impl Term {
    /// `term`, written on a pod in namespace `owner`.
    pub fn new(term: &PodAffinityTerm, owner: &str) -> Self {
        let any_namespace = term
            .namespace_selector
            .as_ref()
            .is_some_and(|s| s.match_labels.is_none() && s.match_expressions.is_none());
        let listed = term.namespaces.clone().unwrap_or_default();
        let namespaces = if any_namespace {
            None
        } else if listed.is_empty() {
            Some(vec![owner.to_owned()])
        } else {
            Some(listed)
        };
        Term {
            topology_key: term.topology_key.clone(),
            namespaces,
            selector: term
                .label_selector
                .as_ref()
                .and_then(LabelSelector::from_object),
        }
    }

    /// Whether the term selects `pod`.
    pub fn selects(&self, pod: &Pod) -> bool {
        let namespace_ok = self
            .namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == namespace(pod)));
        namespace_ok
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(labels(pod)))
    }
}

/// The pod's required anti-affinity terms, ready to match.
pub fn required_anti_affinity(pod: &Pod) -> Vec<Term> {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|t| Term::new(t, namespace(pod)))
        .collect()
}
