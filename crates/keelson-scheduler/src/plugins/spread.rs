//! Pod topology spread: `topologySpreadConstraints` keep the pods a selector matches evenly
//! spread over the values of a node label (hostname, zone). `DoNotSchedule` constraints
//! filter: a node is refused when placing the pod there would leave its domain more than
//! `maxSkew` pods above the emptiest domain. `ScheduleAnyway` constraints score: the fewer
//! matching pods in a node's domains, the better.
//!
//! The counts are taken once per cycle ([`SpreadState::new`], upstream's PreFilter) over
//! every node carrying the topology key; matching pods are those in the pod's namespace,
//! not terminating. Upstream's `nodeAffinityPolicy`, `nodeTaintsPolicy`, `minDomains` and
//! `matchLabelKeys` refinements are not applied.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use keelson_api::selector::LabelSelector;

use crate::framework::{CycleState, Filter, Score};
use crate::snapshot::{NodeInfo, Snapshot};
use crate::terms::{labels, namespace};

/// One constraint with the matching pods counted per domain.
#[derive(Clone, Debug)]
struct Constraint {
    key: String,
    max_skew: i64,
    hard: bool,
    /// Whether the incoming pod matches the selector itself (it then adds one).
    self_match: i64,
    counts: HashMap<String, i64>,
    min: i64,
}

/// What the cycle's pod needs to know about its spread constraints.
#[derive(Clone, Debug, Default)]
pub struct SpreadState {
    constraints: Vec<Constraint>,
}

fn node_label<'a>(node: &'a NodeInfo, key: &str) -> Option<&'a String> {
    node.node.metadata.labels.as_ref()?.get(key)
}

impl SpreadState {
    pub fn new(pod: &Pod, snapshot: &Snapshot) -> Self {
        let written = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or_default();
        if written.is_empty() {
            return SpreadState::default();
        }
        let own_ns = namespace(pod);
        let mut constraints = Vec::new();
        for c in written {
            let selector = c
                .label_selector
                .as_ref()
                .and_then(LabelSelector::from_object);
            let selects = |p: &Pod| {
                namespace(p) == own_ns && selector.as_ref().is_some_and(|s| s.matches(labels(p)))
            };
            let mut counts: HashMap<String, i64> = HashMap::new();
            for node in &snapshot.nodes {
                let Some(value) = node_label(node, &c.topology_key) else {
                    continue;
                };
                let here = node
                    .pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && selects(p))
                    .count();
                *counts.entry(value.clone()).or_default() += i64::try_from(here).unwrap_or(0);
            }
            let min = counts.values().min().copied().unwrap_or(0);
            constraints.push(Constraint {
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew.max(1)),
                hard: c.when_unsatisfiable != "ScheduleAnyway",
                self_match: i64::from(selects(pod)),
                counts,
                min,
            });
        }
        SpreadState { constraints }
    }
}

/// Filter on `DoNotSchedule` constraints; score on `ScheduleAnyway` ones.
pub struct PodTopologySpread;

impl Filter for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Result<(), Vec<String>> {
        for c in state.spread.constraints.iter().filter(|c| c.hard) {
            let Some(value) = node_label(node, &c.key) else {
                return Err(vec![
                    "node(s) didn't match pod topology spread constraints (missing required label)"
                        .into(),
                ]);
            };
            let here = c.counts.get(value).copied().unwrap_or(0);
            if here + c.self_match - c.min > c.max_skew {
                return Err(vec![
                    "node(s) didn't match pod topology spread constraints".into(),
                ]);
            }
        }
        Ok(())
    }
}

impl Score for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    /// The matching pods in the node's domains, negated: fewer is better. A node without
    /// a soft constraint's key counts as the most crowded.
    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> i64 {
        let mut crowd = 0;
        for c in state.spread.constraints.iter().filter(|c| !c.hard) {
            crowd += match node_label(node, &c.key) {
                Some(value) => c.counts.get(value).copied().unwrap_or(0),
                None => c.counts.values().max().copied().unwrap_or(0) + 1,
            };
        }
        -crowd
    }

    /// Rescaled to 0 (the most crowded node) … 100 (the least).
    fn normalize(&self, scores: &mut [i64]) {
        let (Some(min), Some(max)) = (scores.iter().min().copied(), scores.iter().max().copied())
        else {
            return;
        };
        for score in scores.iter_mut() {
            *score = if max == min {
                100
            } else {
                (*score - min) * 100 / (max - min)
            };
        }
    }
}
