//! The cluster as one scheduling cycle sees it: every node with the pods on it and what
//! they use.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::resources::{Resources, pod_requests};

/// A host port in use: (host IP, protocol, port).
pub type HostPort = (String, String, i32);

/// One node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub allocatable: Resources,
    pub requested: Resources,
    pub pods: Vec<Arc<Pod>>,
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
        let status = node.status.as_ref();
        let allocatable = Resources::from_list(
            status
                .and_then(|s| s.allocatable.as_ref())
                .or_else(|| status.and_then(|s| s.capacity.as_ref())),
        );
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            node: Arc::new(node),
            allocatable,
            requested: Resources::default(),
            pods: Vec::new(),
            used_ports: BTreeSet::new(),
        }
    }

    /// Counts `pod` as running here.
    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        self.requested.add(&pod_requests(&pod));
        self.used_ports.extend(host_ports(&pod));
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
        let mut snapshot = Snapshot {
            nodes: nodes.into_iter().map(NodeInfo::new).collect(),
        };
        let index: HashMap<String, usize> = snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for pod in pods {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.as_ref());
            if let Some(&i) = node.and_then(|n| index.get(n)) {
                snapshot.nodes[i].add_pod(Arc::new(pod));
            }
        }
        snapshot
    }

    /// Records that `pod` goes to the node at `index` (the Reserve step): later cycles
    /// count it there.
    pub fn assume(&mut self, pod: Pod, index: usize) {
        if let Some(info) = self.nodes.get_mut(index) {
            info.add_pod(Arc::new(pod));
        }
    }
}
