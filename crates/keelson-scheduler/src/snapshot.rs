//! The cluster as one scheduling cycle sees it: every node with the pods on it and what
//! they use.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use crate::resources::{Resources, pod_requests};
use crate::terms::{Term, required_anti_affinity};

/// A host port in use: (host IP, protocol, port).
pub type HostPort = (String, String, i32);

/// One node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub allocatable: Resources,
    /// `spec.unschedulable` (cordoned) and `spec.taints`, kept beside the counters: every
    /// cycle reads them for every node it filters.
    pub unschedulable: bool,
    pub taints: Vec<Taint>,
    pub requested: Resources,
    pub pods: Vec<Arc<Pod>>,
    /// The pods here with required pod anti-affinity, and those terms: the only pods a new
    /// pod without affinity terms of its own has to be checked against.
    pub pods_with_required_anti_affinity: Vec<(Arc<Pod>, Arc<[Term]>)>,
    pub used_ports: BTreeSet<HostPort>,
}

/// The host ports a pod asks for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some((
                p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port,
            ))
        })
        .collect()
}

impl NodeInfo {
    pub fn new(node: Node) -> Self {
        NodeInfo::shared(Arc::new(node))
    }

    pub fn shared(node: Arc<Node>) -> Self {
        let status = node.status.as_ref();
        let allocatable = Resources::from_list(
            status
                .and_then(|s| s.allocatable.as_ref())
                .or_else(|| status.and_then(|s| s.capacity.as_ref())),
        );
        let spec = node.spec.as_ref();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            node,
            allocatable,
            requested: Resources::default(),
            pods: Vec::new(),
            pods_with_required_anti_affinity: Vec::new(),
            used_ports: BTreeSet::new(),
        }
    }

    /// The node object changed (same name): what is read from it follows; the pods stay.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let fresh = NodeInfo::shared(node);
        self.node = fresh.node;
        self.allocatable = fresh.allocatable;
        self.unschedulable = fresh.unschedulable;
        self.taints = fresh.taints;
    }

    /// Counts `pod` as running here.
    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        self.add_pod_with(pod, &pod_requests);
    }

    /// Counts `pod` as running here, its requests as `requests` works them out (the run
    /// loop remembers them per pod rather than parsing quantities every cycle).
    pub fn add_pod_with(&mut self, pod: Arc<Pod>, requests: &dyn Fn(&Pod) -> Resources) {
        self.requested.add(&requests(&pod));
        self.used_ports.extend(host_ports(&pod));
        let terms = required_anti_affinity(&pod);
        if !terms.is_empty() {
            self.pods_with_required_anti_affinity
                .push((pod.clone(), terms.into()));
        }
        self.pods.push(pod);
    }

    /// Forgets `pod` (by namespace and name), if it is here.
    pub fn remove_pod(&mut self, namespace: &str, name: &str) -> bool {
        let found = self.pods.iter().position(|p| {
            p.metadata.namespace.as_deref().unwrap_or_default() == namespace
                && p.metadata.name.as_deref() == Some(name)
        });
        let Some(index) = found else {
            return false;
        };
        let pod = self.pods.remove(index);
        self.pods_with_required_anti_affinity
            .retain(|(p, _)| !Arc::ptr_eq(p, &pod));
        self.requested.subtract(&pod_requests(&pod));
        for port in host_ports(&pod) {
            self.used_ports.remove(&port);
        }
        true
    }
}

/// Every schedulable node, in a fixed order.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
}

impl Snapshot {
    /// Nodes, with the pods already bound to them (by `spec.nodeName`).
    pub fn new(nodes: Vec<Node>, pods: impl IntoIterator<Item = Pod>) -> Self {
        let nodes = nodes.into_iter().map(NodeInfo::new).collect();
        let pods = pods.into_iter().filter_map(|pod| {
            let node = pod.spec.as_ref()?.node_name.clone()?;
            Some((Arc::new(pod), node))
        });
        Snapshot::build(nodes, pods, &pod_requests)
    }

    /// Nodes (already turned into `NodeInfo`s, without pods), and shared pods with the node
    /// each is on — bound, or assumed by the scheduler.
    pub fn build(
        nodes: Vec<NodeInfo>,
        pods: impl IntoIterator<Item = (Arc<Pod>, String)>,
        requests: &dyn Fn(&Pod) -> Resources,
    ) -> Self {
        let mut snapshot = Snapshot { nodes };
        let index: HashMap<&str, usize> = snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let mut placed: Vec<(usize, Arc<Pod>)> = Vec::new();
        for (pod, node) in pods {
            if let Some(&i) = index.get(node.as_str()) {
                placed.push((i, pod));
            }
        }
        for (i, pod) in placed {
            snapshot.nodes[i].add_pod_with(pod, requests);
        }
        snapshot
    }

    /// Records that `pod` goes to the node at `index` (the Reserve step): later cycles
    /// count it there.
    pub fn assume(&mut self, pod: Pod, index: usize) {
        self.assume_shared(Arc::new(pod), index);
    }

    pub fn assume_shared(&mut self, pod: Arc<Pod>, index: usize) {
        if let Some(info) = self.nodes.get_mut(index) {
            info.add_pod(pod);
        }
    }
}
