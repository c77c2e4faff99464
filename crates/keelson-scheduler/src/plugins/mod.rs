//! The built-in plugins and the default profile that runs them.

mod affinity;
mod fit;
mod node;
mod spread;

pub use affinity::{AffinityState, InterPodAffinity};
pub use fit::{BalancedAllocation, LeastAllocated, NodeResourcesFit};
pub use node::{
    NodeAffinity, NodeName, NodePorts, NodeUnschedulable, TaintToleration, term_matches, tolerates,
};
pub use spread::{PodTopologySpread, SpreadState};

use crate::framework::Profile;

/// The filters and scores `keelson server` schedules with, in the order Kubernetes runs
/// them, with its default weights.
pub fn default_profile() -> Profile {
    Profile {
        filters: vec![
            Box::new(NodeUnschedulable),
            Box::new(NodeName),
            Box::new(TaintToleration),
            Box::new(NodeAffinity),
            Box::new(NodePorts),
            Box::new(NodeResourcesFit),
            Box::new(PodTopologySpread),
            Box::new(InterPodAffinity),
        ],
        scores: vec![
            (Box::new(TaintToleration), 3),
            (Box::new(NodeAffinity), 2),
            (Box::new(InterPodAffinity), 2),
            (Box::new(PodTopologySpread), 2),
            (Box::new(LeastAllocated), 1),
            (Box::new(BalancedAllocation), 1),
        ],
    }
}
