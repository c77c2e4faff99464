//! The Node object a simulated node registers, and its heartbeat status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::SimConfig;
use crate::kubelet::node::node_conditions;

/// The node's conditions: Ready, and no pressure, heartbeat `now`.
fn conditions(now: Timestamp) -> Value {
    node_conditions(Ok("kubelet is posting ready status (simulated)"), now)
}

/// A status patch saying the node is alive.
pub fn ready_status(now: Timestamp) -> Value {
    json!({"status": {"conditions": conditions(now)}})
}

/// The Node object of simulated node `index`.
pub fn build(config: &SimConfig, index: usize) -> Result<Node, serde_json::Error> {
    let name = config.node_name(index);
    let mut labels: BTreeMap<String, String> = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    labels.insert("node.keelson.io/simulated".into(), "true".into());
    if !config.zones.is_empty() {
        labels.insert(
            "topology.kubernetes.io/zone".into(),
            config.zones[index % config.zones.len()].clone(),
        );
    }
    let now = Timestamp::now();
    // Addresses in 10.x.y.z, unique per node index; nothing listens there.
    let address = format!(
        "10.{}.{}.{}",
        (index >> 16) & 0xff,
        (index >> 8) & 0xff,
        index & 0xff
    );
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": config.taints},
        "status": {
            "capacity": config.capacity,
            "allocatable": config.capacity,
            "conditions": conditions(now),
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("{index:032x}"), "systemUUID": format!("{index:032x}"),
                "bootID": format!("{index:032x}"), "kernelVersion": "simulated",
                "osImage": "keelson simulated node", "containerRuntimeVersion": "simulated://1.0",
                "kubeletVersion": "v1.37.0", "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    });
    serde_json::from_value(node)
}
