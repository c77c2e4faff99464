//! The scheduler's view of the cluster, kept current event by event rather than rebuilt
//! for every cycle: the snapshot (nodes and what is placed on them), which node each
//! placed pod is on, the pods waiting for a node, and the pods this scheduler has assumed
//! onto a node while their binding is in flight. Pure: the run loop feeds it watch events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::snapshot::{NodeInfo, Snapshot};

/// A pod's uid, the key it is tracked by.
pub(crate) fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

#[derive(Default)]
pub struct ClusterState {
    /// Pods whose `spec.schedulerName` is this are ours to place.
    scheduler_name: String,
    pub snapshot: Snapshot,
    node_index: HashMap<String, usize>,
    /// Placed pods (bound or assumed) by uid: the node, and the pod as counted there.
    placed: HashMap<String, (String, Arc<Pod>)>,
    /// Our pods waiting for a node, by uid.
    pending: HashMap<String, Arc<Pod>>,
    /// Pods placed by us whose binding the API has not shown yet.
    assumed: HashSet<String>,
}

impl ClusterState {
    pub fn new(scheduler_name: &str) -> Self {
        ClusterState {
            scheduler_name: scheduler_name.to_owned(),
            ..Default::default()
        }
    }

    /// The pods waiting for a node.
    pub fn pending(&self) -> impl Iterator<Item = (&String, &Arc<Pod>)> {
        self.pending.iter()
    }

    pub fn is_pending(&self, uid: &str) -> bool {
        self.pending.contains_key(uid)
    }

    /// Starts over from a full list of nodes and pods (after a watch restarts).
    pub fn reset(&mut self, nodes: Vec<Arc<Node>>, pods: Vec<Arc<Pod>>) {
        let assumed: Vec<(String, String)> = std::mem::take(&mut self.assumed)
            .into_iter()
            .filter_map(|uid| Some((uid.clone(), self.placed.get(&uid)?.0.clone())))
            .collect();
        self.snapshot = Snapshot::default();
        self.node_index.clear();
        self.placed.clear();
        self.pending.clear();
        for node in nodes {
            self.apply_node(node);
        }
        for pod in pods {
            self.apply_pod(pod);
        }
        // Assumptions still unconfirmed stay counted where they were made.
        for (key, node) in assumed {
            if let Some(pod) = self.pending.remove(&key) {
                self.assumed.insert(key.clone());
                self.place(key, node, pod);
            }
        }
    }

    /// Replaces the nodes wholesale (after the node watch restarts), keeping the pods.
    pub fn reset_nodes(&mut self, nodes: Vec<Arc<Node>>) {
        let pods: Vec<Arc<Pod>> = self
            .placed
            .values()
            .map(|(_, p)| p.clone())
            .chain(self.pending.values().cloned())
            .collect();
        self.reset(nodes, pods);
    }

    /// Replaces the pods wholesale (after the pod watch restarts), keeping the nodes.
    pub fn reset_pods(&mut self, pods: Vec<Arc<Pod>>) {
        let nodes: Vec<Arc<Node>> = self.snapshot.nodes.iter().map(|n| n.node.clone()).collect();
        self.reset(nodes, pods);
    }

    pub fn apply_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.node_index.get(&name) {
            Some(&i) => {
                self.snapshot.nodes[i].set_node(node);
            }
            None => {
                self.node_index
                    .insert(name.clone(), self.snapshot.nodes.len());
                self.snapshot.nodes.push(NodeInfo::shared(node));
                // Pods already bound to it (seen before the node) count there now.
                let here: Vec<(String, Arc<Pod>)> = self
                    .placed
                    .iter()
                    .filter(|(_, (n, _))| *n == name)
                    .map(|(k, (_, p))| (k.clone(), p.clone()))
                    .collect();
                if let Some(&i) = self.node_index.get(&name) {
                    for (_, pod) in here {
                        self.snapshot.nodes[i].add_pod(pod);
                    }
                }
            }
        }
    }

    pub fn delete_node(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let Some(i) = self.node_index.remove(&name) else {
            return;
        };
        self.snapshot.nodes.swap_remove(i);
        if let Some(moved) = self.snapshot.nodes.get(i) {
            self.node_index.insert(moved.name.clone(), i);
        }
    }

    /// A pod was added or changed.
    pub fn apply_pod(&mut self, pod: Arc<Pod>) {
        let key = uid(&pod);
        let gone = is_terminal(&pod);
        match bound_node(&pod).map(str::to_owned) {
            Some(node) if !gone => {
                self.pending.remove(&key);
                self.assumed.remove(&key);
                self.unplace(&key);
                self.place(key, node, pod);
            }
            Some(_) => {
                self.pending.remove(&key);
                self.assumed.remove(&key);
                self.unplace(&key);
            }
            None if self.assumed.contains(&key) => {
                // Binding in flight: keep it where we put it, with the newer object.
                if gone || pod.metadata.deletion_timestamp.is_some() {
                    self.assumed.remove(&key);
                    self.unplace(&key);
                }
            }
            None => {
                let ours = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.scheduler_name.as_deref())
                    .is_none_or(|n| n == self.scheduler_name);
                if ours && !gone && pod.metadata.deletion_timestamp.is_none() {
                    self.pending.insert(key, pod);
                } else {
                    self.pending.remove(&key);
                }
            }
        }
    }

    pub fn delete_pod(&mut self, pod: &Pod) {
        let key = uid(pod);
        self.pending.remove(&key);
        self.assumed.remove(&key);
        self.unplace(&key);
    }

    /// Reserve: the pod goes to the node at `index`; its binding is on the way.
    pub fn assume(&mut self, pod: Arc<Pod>, index: usize) {
        let key = uid(&pod);
        let Some(node) = self.snapshot.nodes.get(index).map(|n| n.name.clone()) else {
            return;
        };
        self.pending.remove(&key);
        self.assumed.insert(key.clone());
        self.place(key, node, pod);
    }

    /// The binding failed: the pod waits for a node again.
    pub fn forget(&mut self, key: &str) -> Option<Arc<Pod>> {
        if !self.assumed.remove(key) {
            return None;
        }
        let pod = self.unplace(key)?;
        self.pending.insert(key.to_owned(), pod.clone());
        Some(pod)
    }

    fn place(&mut self, key: String, node: String, pod: Arc<Pod>) {
        if let Some(&i) = self.node_index.get(&node) {
            self.snapshot.nodes[i].add_pod(pod.clone());
        }
        self.placed.insert(key, (node, pod));
    }

    fn unplace(&mut self, key: &str) -> Option<Arc<Pod>> {
        let (node, pod) = self.placed.remove(key)?;
        if let Some(&i) = self.node_index.get(&node) {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            self.snapshot.nodes[i].remove_pod(namespace, name);
        }
        Some(pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
            .expect("node"),
        )
    }

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "default", "uid": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"cpu": "1"}}}]},
                "status": {"phase": phase}}),
            )
            .expect("pod"),
        )
    }

    fn cpu_on(state: &ClusterState, node: &str) -> i128 {
        let i = state.node_index[node];
        state.snapshot.nodes[i].requested.get("cpu")
    }

    #[test]
    fn pods_move_between_pending_placed_and_gone() {
        let mut state = ClusterState::new("default-scheduler");
        state.reset(vec![node("a"), node("b")], vec![pod("p", None, "Pending")]);
        assert!(state.is_pending("p"));
        // Assumed: counted on the node, no longer pending, even if an unbound update
        // of the pod arrives while the binding is in flight.
        state.assume(pod("p", None, "Pending"), state.node_index["b"]);
        state.apply_pod(pod("p", None, "Pending"));
        assert!(!state.is_pending("p"));
        assert_eq!(cpu_on(&state, "b"), 1000);
        // Bound as assumed: still counted once.
        state.apply_pod(pod("p", Some("b"), "Running"));
        assert_eq!(cpu_on(&state, "b"), 1000);
        // Finished pods free their node.
        state.apply_pod(pod("p", Some("b"), "Succeeded"));
        assert_eq!(cpu_on(&state, "b"), 0);

        // A failed binding puts the pod back in the queue and frees the node.
        state.apply_pod(pod("q", None, "Pending"));
        state.assume(pod("q", None, "Pending"), state.node_index["a"]);
        assert_eq!(cpu_on(&state, "a"), 1000);
        assert!(state.forget("q").is_some());
        assert_eq!(cpu_on(&state, "a"), 0);
        assert!(state.is_pending("q"));
        state.delete_pod(&pod("q", None, "Pending"));
        assert!(!state.is_pending("q"));
    }

    #[test]
    fn nodes_come_and_go_with_their_pods() {
        let mut state = ClusterState::new("default-scheduler");
        // A pod bound to a node not seen yet counts once the node appears.
        state.reset(vec![node("a")], vec![pod("p", Some("c"), "Running")]);
        state.apply_node(node("c"));
        assert_eq!(cpu_on(&state, "c"), 1000);
        // Removing a node in the middle keeps the index of the others right.
        state.apply_node(node("d"));
        state.delete_node(&node("a"));
        assert_eq!(state.snapshot.nodes.len(), 2);
        assert_eq!(cpu_on(&state, "c"), 1000);
        state.apply_pod(pod("r", Some("d"), "Running"));
        assert_eq!(cpu_on(&state, "d"), 1000);
        // A node update keeps what is placed on it.
        state.apply_node(node("d"));
        assert_eq!(cpu_on(&state, "d"), 1000);
        // Pods of other schedulers are not ours to place.
        let mut other = (*pod("x", None, "Pending")).clone();
        if let Some(spec) = other.spec.as_mut() {
            spec.scheduler_name = Some("custom".into());
        }
        state.apply_pod(Arc::new(other));
        assert!(!state.is_pending("x"));
    }
}
