//! The Node object a real node registers and the status it keeps posting: capacity from
//! the machine, allocatable after the configured reservations, addresses, node info, the
//! Ready condition from the container runtime's own status, and its images.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use keelson_api::quantity::{QuantityError, parse_milli};
use serde_json::{Value, json};

use super::machine::Machine;

/// What is held back from pods: `--system-reserved` (and the kubelet's default hard
/// eviction threshold for memory, 100Mi).
#[derive(Clone, Debug, Default)]
pub struct Reserved {
    /// Quantities by resource name (`cpu: 500m`, `memory: 1Gi`).
    pub amounts: BTreeMap<String, String>,
}

impl Reserved {
    /// Reserves `quantity` of `name` (`cpu`, `memory`, `ephemeral-storage`).
    pub fn set(&mut self, name: &str, quantity: &str) -> Result<(), QuantityError> {
        parse_milli(quantity)?;
        self.amounts.insert(name.to_owned(), quantity.to_owned());
        Ok(())
    }
}

/// The kubelet's default `memory.available` hard eviction threshold, in bytes.
const EVICTION_MEMORY: u64 = 100 * 1024 * 1024;

/// The Kubernetes version the node reports (the API server serves the same minor).
const KUBELET_VERSION: &str = "v1.37.0";

/// Pods a node takes by default (the kubelet's `--max-pods`).
pub const MAX_PODS: u64 = 110;

/// The runtime's view of itself, for the Ready condition and node info.
#[derive(Clone, Debug, Default)]
pub struct Runtime {
    /// `containerd://1.6.20`.
    pub version: String,
    /// Why the node is not ready, when it is not (runtime or network not ready).
    pub not_ready: Option<String>,
    /// Images: (names, size in bytes).
    pub images: Vec<(Vec<String>, u64)>,
}

/// Thousandths of `name` reserved, 0 when none (or unparsable: the flag was checked when
/// it was read).
fn reserved_milli(reserved: &Reserved, name: &str) -> i128 {
    reserved
        .amounts
        .get(name)
        .and_then(|q| parse_milli(q).ok())
        .unwrap_or(0)
}

fn kibibytes(bytes: i128) -> String {
    format!("{}Ki", bytes.max(0) / 1024)
}

/// capacity and allocatable, as the kubelet reports them (memory and storage in Ki).
pub fn resources(machine: &Machine, reserved: &Reserved) -> (Value, Value) {
    let memory = i128::from(machine.memory_bytes);
    let storage = i128::from(machine.storage_bytes);
    let cpu_milli = i128::from(machine.cpus) * 1000;
    let capacity = json!({
        "cpu": machine.cpus.to_string(),
        "memory": kibibytes(memory),
        "ephemeral-storage": kibibytes(storage),
        "pods": MAX_PODS.to_string(),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    });
    let cpu_left = (cpu_milli - reserved_milli(reserved, "cpu")).max(0);
    let memory_left =
        memory - reserved_milli(reserved, "memory") / 1000 - i128::from(EVICTION_MEMORY);
    let storage_left = storage - reserved_milli(reserved, "ephemeral-storage") / 1000;
    let allocatable = json!({
        "cpu": format!("{cpu_left}m"),
        "memory": kibibytes(memory_left),
        "ephemeral-storage": kibibytes(storage_left),
        "pods": MAX_PODS.to_string(),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    });
    (capacity, allocatable)
}

/// The four conditions, heartbeat `now`; Ready from the runtime.
pub fn conditions(runtime: &Runtime, now: Timestamp) -> Value {
    match &runtime.not_ready {
        None => node_conditions(Ok("kubelet is posting ready status"), now),
        Some(why) => node_conditions(Err(why), now),
    }
}

/// No pressure, and Ready (`Ok` with its message) or not (`Err` with why), heartbeat
/// `now`: what real and simulated nodes post.
pub fn node_conditions(ready: Result<&str, &str>, now: Timestamp) -> Value {
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": Time(now), "lastTransitionTime": Time(now)})
    };
    let ready = match ready {
        Ok(message) => condition("Ready", "True", "KubeletReady", message),
        Err(why) => condition("Ready", "False", "KubeletNotReady", why),
    };
    json!([
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        ready,
    ])
}

fn images(runtime: &Runtime) -> Value {
    runtime
        .images
        .iter()
        .map(|(names, size)| json!({"names": names, "sizeBytes": size}))
        .collect()
}

/// The Go architecture name Kubernetes labels nodes with.
fn architecture() -> &'static str {
    crate::cri::archive::architecture()
}

/// The status part of the Node: what the node posts on every update.
pub fn status(machine: &Machine, reserved: &Reserved, runtime: &Runtime, now: Timestamp) -> Value {
    let (capacity, allocatable) = resources(machine, reserved);
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": conditions(runtime, now),
        "addresses": [
            {"type": "InternalIP", "address": machine.address.to_string()},
            {"type": "Hostname", "address": machine.hostname},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": machine.machine_id,
            "systemUUID": machine.machine_id,
            "bootID": machine.boot_id,
            "kernelVersion": machine.kernel,
            "osImage": machine.os_image,
            "containerRuntimeVersion": runtime.version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": architecture(),
        },
        "images": images(runtime),
    })
}

/// The Node this machine registers as `name`.
pub fn build(
    name: &str,
    machine: &Machine,
    reserved: &Reserved,
    runtime: &Runtime,
    now: Timestamp,
) -> Result<Node, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": architecture(),
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": architecture(),
        }},
        "status": status(machine, reserved, runtime, now),
    }))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn machine() -> Machine {
        Machine {
            hostname: "box".into(),
            cpus: 2,
            memory_bytes: 8 * 1024 * 1024 * 1024,
            storage_bytes: 100 * 1024 * 1024 * 1024,
            kernel: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            machine_id: "abc".into(),
            boot_id: "def".into(),
            address: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 5)),
        }
    }

    #[test]
    fn allocatable_is_capacity_less_reservations_and_the_eviction_threshold() {
        let reserved = Reserved {
            amounts: [("cpu", "500m"), ("memory", "1Gi")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let (capacity, allocatable) = resources(&machine(), &reserved);
        assert_eq!(capacity["cpu"], "2");
        assert_eq!(capacity["memory"], "8388608Ki");
        assert_eq!(capacity["pods"], "110");
        assert_eq!(allocatable["cpu"], "1500m");
        // 8 GiB − 1 GiB − 100 MiB.
        assert_eq!(
            allocatable["memory"],
            format!("{}Ki", (7 * 1024 - 100) * 1024)
        );
        assert_eq!(
            allocatable["ephemeral-storage"],
            capacity["ephemeral-storage"]
        );
    }

    #[test]
    fn ready_follows_the_runtime() -> Result<(), serde_json::Error> {
        let now = Timestamp::now();
        let mut runtime = Runtime {
            version: "containerd://1.6.20".into(),
            not_ready: Some("network plugin not ready".into()),
            images: vec![(vec!["localhost/keelson/pause:1".into()], 188)],
        };
        let node = build("box", &machine(), &Reserved::default(), &runtime, now)?;
        let status = node.status.unwrap_or_default();
        let ready = |conditions: &[k8s_openapi::api::core::v1::NodeCondition]| {
            conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()))
        };
        assert_eq!(
            ready(status.conditions.as_deref().unwrap_or_default()),
            Some(("False".into(), "network plugin not ready".into()))
        );
        let info = status.node_info.unwrap_or_default();
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        assert_eq!(info.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(status.images.unwrap_or_default()[0].size_bytes, Some(188));
        runtime.not_ready = None;
        let patched = conditions(&runtime, now);
        assert_eq!(patched[3]["status"], "True");
        assert_eq!(patched[3]["reason"], "KubeletReady");
        Ok(())
    }
}
