//! Inter-pod affinity and anti-affinity: where a pod may go, and prefers to go, given the
//! pods already running in each topology domain (a node, a zone: any `topologyKey`).
//!
//! The cluster-wide part is computed once per cycle ([`AffinityState::new`], upstream's
//! PreFilter); the per-node checks only look up the node's labels.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};

use crate::framework::{CycleState, Filter, Score};
use crate::snapshot::{NodeInfo, Snapshot};
use crate::terms::{Term, namespace};

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
    rejected_by_others: HashMap<String, HashSet<String>>,
    /// Preferred terms: (key, value, weight), negative for anti-affinity.
    preferred: Vec<(String, String, i64)>,
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
        // A pod with no terms of its own is checked only against running pods' required
        // anti-affinity, which each node keeps a list of.
        let own_terms =
            !(anti_terms.is_empty() && affinity_terms.is_empty() && preferred_terms.is_empty());
        let anti_compiled: Vec<Term> = anti_terms.iter().map(|t| Term::new(t, own_ns)).collect();
        let affinity_compiled: Vec<Term> = affinity_terms
            .iter()
            .map(|t| Term::new(t, own_ns))
            .collect();
        let preferred_compiled: Vec<(Term, i64)> = preferred_terms
            .iter()
            .map(|(t, w)| (Term::new(t, own_ns), *w))
            .collect();
        for node in &snapshot.nodes {
            if own_terms {
                for other in &node.pods {
                    for (term, (key, domains)) in anti_compiled.iter().zip(state.anti.iter_mut()) {
                        if term.selects(other)
                            && let Some(value) = node_label(node, key)
                        {
                            domains.insert(value.clone());
                        }
                    }
                    for (term, (key, domains)) in
                        affinity_compiled.iter().zip(state.affinity.iter_mut())
                    {
                        if term.selects(other)
                            && let Some(value) = node_label(node, key)
                        {
                            domains.insert(value.clone());
                        }
                    }
                    for (term, weight) in &preferred_compiled {
                        if term.selects(other)
                            && let Some(value) = node_label(node, &term.topology_key)
                        {
                            state.preferred.push((
                                term.topology_key.clone(),
                                value.clone(),
                                *weight,
                            ));
                        }
                    }
                }
            }
            // The running pods' own anti-affinity, against the new pod.
            for (_, theirs) in &node.pods_with_required_anti_affinity {
                for term in theirs.iter() {
                    if term.selects(pod)
                        && let Some(value) = node_label(node, &term.topology_key)
                    {
                        let values = match state.rejected_by_others.get_mut(&term.topology_key) {
                            Some(values) => values,
                            None => state
                                .rejected_by_others
                                .entry(term.topology_key.clone())
                                .or_default(),
                        };
                        if !values.contains(value) {
                            values.insert(value.clone());
                        }
                    }
                }
            }
        }
        state.first_of_group = !affinity_terms.is_empty()
            && state.affinity.iter().all(|(_, domains)| domains.is_empty())
            && affinity_compiled.iter().all(|t| t.selects(pod));
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
            .any(|(key, values)| in_domain(key, values))
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
