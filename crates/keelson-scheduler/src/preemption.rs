//! Preemption (upstream's DefaultPreemption, PostFilter): when a pod fits nowhere, find the
//! node where removing the fewest, least important lower-priority pods would let it fit.
//! Pure: the run loop deletes the victims and nominates the node.
//!
//! For each node, every pod of lower priority is taken away; if the pod then passes every
//! filter there, victims are given back one by one, most important first, as long as the
//! pod still fits ("reprieve"). Of the nodes that work, the one whose most important victim
//! matters least wins, then the smallest sum of victim priorities, then the fewest victims.
//! A pod with `preemptionPolicy: Never` preempts nothing; a pod whose nominated node still
//! has victims terminating waits for them rather than preempting again.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{CycleState, Profile};
use crate::snapshot::{NodeInfo, Snapshot};

/// Where the pod can go once `victims` are gone.
#[derive(Clone, Debug)]
pub struct Preemption {
    pub index: usize,
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn fits(profile: &Profile, state: &CycleState, pod: &Pod, node: &NodeInfo) -> bool {
    profile
        .filters
        .iter()
        .all(|f| f.filter(state, pod, node).is_ok())
}

/// Whether the pod may preempt at all now.
fn eligible(pod: &Pod, snapshot: &Snapshot) -> bool {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return false;
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref());
    let waiting = nominated.is_some_and(|name| {
        snapshot.nodes.iter().any(|n| {
            n.name == name
                && n.pods
                    .iter()
                    .any(|p| terminating(p) && priority(p) < priority(pod))
        })
    });
    !waiting
}

/// The best node to preempt on, if any.
pub fn preempt(profile: &Profile, snapshot: &Snapshot, pod: &Pod) -> Option<Preemption> {
    if !eligible(pod, snapshot) {
        return None;
    }
    let own = priority(pod);
    let state = CycleState::new(pod, snapshot);
    let mut best: Option<((i32, i64, usize), Preemption)> = None;
    for (index, node) in snapshot.nodes.iter().enumerate() {
        let mut lower: Vec<Arc<Pod>> = node
            .pods
            .iter()
            .filter(|p| priority(p) < own && !terminating(p))
            .cloned()
            .collect();
        if lower.is_empty() {
            continue;
        }
        let mut trial = node.clone();
        for victim in &lower {
            trial.remove_pod(
                victim.metadata.namespace.as_deref().unwrap_or_default(),
                victim.metadata.name.as_deref().unwrap_or_default(),
            );
        }
        if !fits(profile, &state, pod, &trial) {
            continue;
        }
        // Reprieve the most important first.
        lower.sort_by_key(|p| std::cmp::Reverse(priority(p)));
        let mut victims = Vec::new();
        for candidate in lower {
            trial.add_pod(candidate.clone());
            if !fits(profile, &state, pod, &trial) {
                trial.remove_pod(
                    candidate.metadata.namespace.as_deref().unwrap_or_default(),
                    candidate.metadata.name.as_deref().unwrap_or_default(),
                );
                victims.push(candidate);
            }
        }
        if victims.is_empty() {
            continue;
        }
        let key = (
            victims
                .iter()
                .map(|p| priority(p))
                .max()
                .unwrap_or(i32::MIN),
            victims.iter().map(|p| i64::from(priority(p))).sum(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((
                key,
                Preemption {
                    index,
                    node: node.name.clone(),
                    victims,
                },
            ));
        }
    }
    best.map(|(_, p)| p)
}
