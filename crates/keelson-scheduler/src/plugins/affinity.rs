//! Inter-pod affinity and anti-affinity: where a pod may go, and prefers to go, given the
//! pods already running in each topology domain (a node, a zone: any `topologyKey`).
//!
//! The cluster-wide part is computed once per cycle ([`AffinityState::new`], upstream's
//! PreFilter); the per-node checks only look up the node's labels.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use keelson_api::selector::LabelSelector;

use crate::framework::{CycleState, Filter, Score};
use crate::snapshot::{NodeInfo, Snapshot};

/// What the cycle's pod needs to know about the pods already placed.
#[derive(Clone, Debug, Default)]
pub struct AffinityState {
    /// Per required anti-affinity term of the pod: its topology key and the domains where
    /// a matching pod runs.
    anti: Vec<(String, HashSet<String>)>,
    /// Per required affinity term: the same, for where the pod must go.
    affinity: Vec<(String, HashSet<String>)>,
    /// No pod matches the affinity terms yet, and the pod matches them itself: it may start
    /// its group anywhere.
    first_of_group: bool,
    /// Domains (key, value) where a running pod's anti-affinity rejects this pod.
    rejected_by_others: HashSet<(String, String)>,
    /// Preferred terms: (key, value, weight), negative for anti-affinity.
    preferred: Vec<(String, String, i64)>,
}

fn labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// Whether `term` (written on a pod in `owner_ns`) selects `pod`.
fn term_selects(term: &PodAffinityTerm, owner_ns: &str, pod: &Pod) -> bool {
    let namespaces = term.namespaces.as_deref().unwrap_or_default();
    let any_namespace = term
        .namespace_selector
        .as_ref()
        .is_some_and(|s| s.match_labels.is_none() && s.match_expressions.is_none());
    let namespace_ok = any_namespace
        || if namespaces.is_empty() {
            namespace(pod) == owner_ns
        } else {
            namespaces.iter().any(|n| n == namespace(pod))
        };
    namespace_ok
        && term
            .label_selector
            .as_ref()
            .and_then(LabelSelector::from_object)
            .is_some_and(|s| s.matches(&labels(pod)))
}

fn node_label<'a>(node: &'a NodeInfo, key: &str) -> Option<&'a String> {
    node.node.metadata.labels.as_ref()?.get(key)
}

impl AffinityState {
    pub fn new(pod: &Pod, snapshot: &Snapshot) -> Self {
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let required = |anti: bool| -> Vec<PodAffinityTerm> {
            let terms = if anti {
                affinity
                    .and_then(|a| a.pod_anti_affinity.as_ref())
                    .and_then(|a| {
                        a.required_during_scheduling_ignored_during_execution
                            .clone()
                    })
            } else {
                affinity
                    .and_then(|a| a.pod_affinity.as_ref())
                    .and_then(|a| {
                        a.required_during_scheduling_ignored_during_execution
                            .clone()
                    })
            };
            terms.unwrap_or_default()
        };
        let anti_terms = required(true);
        let affinity_terms = required(false);
        let mut preferred_terms: Vec<(PodAffinityTerm, i64)> = Vec::new();
        if let Some(a) = affinity.and_then(|a| a.pod_affinity.as_ref()) {
            for w in a
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                preferred_terms.push((w.pod_affinity_term.clone(), i64::from(w.weight)));
            }
        }
        if let Some(a) = affinity.and_then(|a| a.pod_anti_affinity.as_ref()) {
            for w in a
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                preferred_terms.push((w.pod_affinity_term.clone(), -i64::from(w.weight)));
            }
        }
        let own_ns = namespace(pod);
        let mut state = AffinityState {
            anti: anti_terms
                .iter()
                .map(|t| (t.topology_key.clone(), HashSet::new()))
                .collect(),
            affinity: affinity_terms
                .iter()
                .map(|t| (t.topology_key.clone(), HashSet::new()))
                .collect(),
            ..Default::default()
        };
        for node in &snapshot.nodes {
            for other in &node.pods {
                for (term, (key, domains)) in anti_terms.iter().zip(state.anti.iter_mut()) {
                    if term_selects(term, own_ns, other)
                        && let Some(value) = node_label(node, key)
                    {
                        domains.insert(value.clone());
                    }
                }
                for (term, (key, domains)) in affinity_terms.iter().zip(state.affinity.iter_mut()) {
                    if term_selects(term, own_ns, other)
                        && let Some(value) = node_label(node, key)
                    {
                        domains.insert(value.clone());
                    }
                }
                for (term, weight) in &preferred_terms {
                    if term_selects(term, own_ns, other)
                        && let Some(value) = node_label(node, &term.topology_key)
                    {
                        state
                            .preferred
                            .push((term.topology_key.clone(), value.clone(), *weight));
                    }
                }
                // The running pod's own anti-affinity, against the new pod.
                let theirs = other
                    .spec
                    .as_ref()
                    .and_then(|s| s.affinity.as_ref())
                    .and_then(|a| a.pod_anti_affinity.as_ref())
                    .and_then(|a| {
                        a.required_during_scheduling_ignored_during_execution
                            .as_ref()
                    });
                for term in theirs.into_iter().flatten() {
                    if term_selects(term, namespace(other), pod)
                        && let Some(value) = node_label(node, &term.topology_key)
                    {
                        state
                            .rejected_by_others
                            .insert((term.topology_key.clone(), value.clone()));
                    }
                }
            }
        }
        state.first_of_group = !affinity_terms.is_empty()
            && state.affinity.iter().all(|(_, domains)| domains.is_empty())
            && affinity_terms.iter().all(|t| term_selects(t, own_ns, pod));
        state
    }
}

/// Filter: required pod affinity and anti-affinity, the pod's and the running pods'.
/// Score: the weights of the preferred terms the node's domains satisfy.
pub struct InterPodAffinity;

impl Filter for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Result<(), Vec<String>> {
        let a = &state.affinity;
        let in_domain = |key: &str, domains: &HashSet<String>| {
            node_label(node, key).is_some_and(|v| domains.contains(v))
        };
        if a.rejected_by_others
            .iter()
            .any(|(key, value)| node_label(node, key) == Some(value))
        {
            return Err(vec![
                "node(s) didn't satisfy existing pods anti-affinity rules".into(),
            ]);
        }
        if a.anti.iter().any(|(key, domains)| in_domain(key, domains)) {
            return Err(vec!["node(s) didn't match pod anti-affinity rules".into()]);
        }
        let affinity_ok = if a.first_of_group {
            a.affinity
                .iter()
                .all(|(key, _)| node_label(node, key).is_some())
        } else {
            a.affinity
                .iter()
                .all(|(key, domains)| in_domain(key, domains))
        };
        if !affinity_ok {
            return Err(vec!["node(s) didn't match pod affinity rules".into()]);
        }
        Ok(())
    }
}

impl Score for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> i64 {
        state
            .affinity
            .preferred
            .iter()
            .filter(|(key, value, _)| node_label(node, key) == Some(value))
            .map(|(_, _, weight)| weight)
            .sum()
    }

    /// Rescaled to 0 (the least preferred node) … 100 (the most).
    fn normalize(&self, scores: &mut [i64]) {
        let (Some(min), Some(max)) = (scores.iter().min().copied(), scores.iter().max().copied())
        else {
            return;
        };
        for score in scores.iter_mut() {
            *score = if max == min {
                0
            } else {
                (*score - min) * 100 / (max - min)
            };
        }
    }
}
