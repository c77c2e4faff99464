//! Resources: does the pod fit beside what the node already runs, and how full would the
//! node be.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{CycleState, Filter, Score};
use crate::resources::Resources;
use crate::snapshot::NodeInfo;

/// Filter: every requested resource (and one more pod) fits in what is left.
pub struct NodeResourcesFit;

impl Filter for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if node.requested.pods + 1 > node.allocatable.pods {
            reasons.push("Too many pods".to_owned());
        }
        for (name, wanted) in state.requests.iter() {
            if wanted <= 0 {
                continue;
            }
            if node.requested.get(name) + wanted > node.allocatable.get(name) {
                reasons.push(format!("Insufficient {name}"));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

/// The fraction of `resource` in use once the pod is placed (0.0 when the node has none).
fn used_fraction(state: &CycleState, node: &NodeInfo, resource: fn(&Resources) -> i128) -> f64 {
    let allocatable = resource(&node.allocatable);
    if allocatable <= 0 {
        return 0.0;
    }
    let used = resource(&node.requested) + resource(&state.requests);
    (used as f64 / allocatable as f64).min(1.0)
}

fn cpu(resources: &Resources) -> i128 {
    resources.cpu
}

fn memory(resources: &Resources) -> i128 {
    resources.memory
}

/// Score: the emptier the node after placing the pod, the better (CPU and memory, equally).
pub struct LeastAllocated;

impl Score for LeastAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> i64 {
        let free = 2.0 - used_fraction(state, node, cpu) - used_fraction(state, node, memory);
        (free / 2.0 * 100.0) as i64
    }
}

/// Score: prefers nodes whose CPU and memory would be used in the same proportion.
pub struct BalancedAllocation;

impl Score for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> i64 {
        let cpu = used_fraction(state, node, cpu);
        let memory = used_fraction(state, node, memory);
        // The standard deviation of two fractions is half their distance.
        ((1.0 - (cpu - memory).abs() / 2.0) * 100.0) as i64
    }
}
