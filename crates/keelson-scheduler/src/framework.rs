//! The extension points, the cycle state, and one scheduling cycle.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::plugins::{AffinityState, SpreadState};
use crate::resources::{Resources, pod_requests};
use crate::snapshot::{NodeInfo, Snapshot, host_ports};

/// What a cycle computes once about the pod, for every plugin and node to share.
#[derive(Clone, Debug)]
pub struct CycleState {
    pub requests: Resources,
    pub host_ports: Vec<(String, String, i32)>,
    /// The running pods as the pod's (and their own) affinity terms see them.
    pub affinity: AffinityState,
    /// The pod's topology spread constraints, with matching pods counted per domain.
    pub spread: SpreadState,
}

impl CycleState {
    pub fn new(pod: &Pod, snapshot: &Snapshot) -> Self {
        CycleState {
            requests: pod_requests(pod),
            host_ports: host_ports(pod),
            affinity: AffinityState::new(pod, snapshot),
            spread: SpreadState::new(pod, snapshot),
        }
    }
}

/// Filter: can the pod run on this node? `Err` carries the reasons, in the words
/// `kubectl describe` shows (`Insufficient cpu`).
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), Vec<String>>;
}

/// Score: how good is this (feasible) node, 0 to 100.
pub trait Score: Send + Sync {
    fn name(&self) -> &'static str;
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> i64;
    /// Rescales the scores of all feasible nodes (for plugins whose raw scores are not
    /// already 0 to 100).
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// The plugins one scheduler runs, in order, and each score's weight: the registry,
/// built in code.
pub struct Profile {
    pub filters: Vec<Box<dyn Filter>>,
    pub scores: Vec<(Box<dyn Score>, i64)>,
}

/// Where a pod goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Index of the node in the snapshot.
    pub index: usize,
    pub node: String,
    pub score: i64,
}

/// No node fits: how many nodes there were and why each was passed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    /// Reason → number of nodes it ruled out.
    pub reasons: BTreeMap<String, usize>,
}

impl std::fmt::Display for FitError {
    /// `0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu.`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        reasons.sort();
        if reasons.is_empty() {
            write!(f, "0/{} nodes are available.", self.nodes)
        } else {
            write!(
                f,
                "0/{} nodes are available: {}.",
                self.nodes,
                reasons.join(", ")
            )
        }
    }
}

/// One scheduling cycle over every node: filter them all, score the feasible ones, pick
/// the best (the first in snapshot order among equals).
pub fn schedule(profile: &Profile, snapshot: &Snapshot, pod: &Pod) -> Result<Placement, FitError> {
    schedule_sampled(profile, snapshot, pod, &mut NodeCursor::all())
}

/// Where the next cycle starts filtering, and how many feasible nodes are enough: the
/// upstream scheduler's `percentageOfNodesToScore`. Large clusters are not filtered whole
/// for every pod; each cycle starts where the last one stopped, so all nodes take turns.
#[derive(Clone, Debug)]
pub struct NodeCursor {
    next: usize,
    /// Percent of the nodes to find feasible before scoring; 0 picks it from the cluster
    /// size as upstream does (50% less 1% per 125 nodes, at least 5%), 100 means all.
    pub percentage: u32,
}

/// Below this many nodes, every node is filtered.
const MIN_FEASIBLE_NODES: usize = 100;

impl NodeCursor {
    /// Every node, every cycle.
    pub fn all() -> Self {
        NodeCursor {
            next: 0,
            percentage: 100,
        }
    }

    /// Upstream's adaptive sample.
    pub fn adaptive() -> Self {
        NodeCursor {
            next: 0,
            percentage: 0,
        }
    }

    /// How many feasible nodes a cycle over `nodes` nodes looks for.
    pub fn feasible_to_find(&self, nodes: usize) -> usize {
        if nodes < MIN_FEASIBLE_NODES || self.percentage >= 100 {
            return nodes;
        }
        let percentage = if self.percentage == 0 {
            (50 - i64::try_from(nodes / 125).unwrap_or(i64::MAX)).max(5) as usize
        } else {
            self.percentage as usize
        };
        (nodes * percentage / 100).max(MIN_FEASIBLE_NODES)
    }
}

/// One scheduling cycle that stops filtering once the cursor's share of nodes is found
/// feasible, starting where the previous cycle stopped. A pod that fits nowhere has had
/// every node filtered, so its `FitError` is complete.
pub fn schedule_sampled(
    profile: &Profile,
    snapshot: &Snapshot,
    pod: &Pod,
    cursor: &mut NodeCursor,
) -> Result<Placement, FitError> {
    let state = CycleState::new(pod, snapshot);
    let mut feasible = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let count = snapshot.nodes.len();
    let wanted = cursor.feasible_to_find(count);
    let start = if count == 0 { 0 } else { cursor.next % count };
    let mut processed = 0;
    for offset in 0..count {
        if feasible.len() >= wanted {
            break;
        }
        processed += 1;
        let index = (start + offset) % count;
        let node = &snapshot.nodes[index];
        let verdict = profile
            .filters
            .iter()
            .try_for_each(|filter| filter.filter(&state, pod, node));
        match verdict {
            Ok(()) => feasible.push(index),
            Err(why) => {
                for reason in why {
                    *reasons.entry(reason).or_default() += 1;
                }
            }
        }
    }
    if count > 0 {
        cursor.next = (start + processed) % count;
    }
    if feasible.is_empty() {
        return Err(FitError {
            nodes: snapshot.nodes.len(),
            reasons,
        });
    }
    let mut totals = vec![0i64; feasible.len()];
    for (plugin, weight) in &profile.scores {
        let mut scores: Vec<i64> = feasible
            .iter()
            .map(|&i| plugin.score(&state, pod, &snapshot.nodes[i]))
            .collect();
        plugin.normalize(&mut scores);
        for (total, score) in totals.iter_mut().zip(scores) {
            *total += score * weight;
        }
    }
    let (best, score) =
        totals.iter().enumerate().fold(
            (0, i64::MIN),
            |(best, top), (i, &s)| {
                if s > top { (i, s) } else { (best, top) }
            },
        );
    let index = feasible[best];
    Ok(Placement {
        index,
        node: snapshot.nodes[index].name.clone(),
        score,
    })
}
