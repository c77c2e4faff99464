//! Amounts of node resources: what a pod requests and what a node can give.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use keelson_api::quantity::parse_milli;

/// Resources in thousandths (millicores for CPU, thousandths of a byte for memory), plus a
/// pod count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli: BTreeMap<String, i128>,
    pub pods: i64,
}

impl Resources {
    /// From a resource list (`requests`, `allocatable`); `pods` is read as a count.
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut out = Resources::default();
        for (name, quantity) in list.into_iter().flatten() {
            let Ok(milli) = parse_milli(&quantity.0) else {
                continue;
            };
            if name == "pods" {
                out.pods = i64::try_from(milli / 1000).unwrap_or(i64::MAX);
            } else {
                out.milli.insert(name.clone(), milli);
            }
        }
        out
    }

    pub fn get(&self, name: &str) -> i128 {
        self.milli.get(name).copied().unwrap_or(0)
    }

    pub fn add(&mut self, other: &Resources) {
        for (name, amount) in &other.milli {
            *self.milli.entry(name.clone()).or_default() += amount;
        }
        self.pods += other.pods;
    }

    pub fn subtract(&mut self, other: &Resources) {
        for (name, amount) in &other.milli {
            *self.milli.entry(name.clone()).or_default() -= amount;
        }
        self.pods -= other.pods;
    }

    /// Each resource at the larger of the two amounts.
    fn max(&mut self, other: &Resources) {
        for (name, amount) in &other.milli {
            let entry = self.milli.entry(name.clone()).or_default();
            *entry = (*entry).max(*amount);
        }
    }
}

fn container_requests(container: &Container) -> Resources {
    Resources::from_list(
        container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref()),
    )
}

/// What a pod asks of a node, as Kubernetes computes it: its containers and sidecars
/// summed, at least its largest init container, plus its overhead; and one pod.
pub fn pod_requests(pod: &Pod) -> Resources {
    let mut total = Resources::default();
    let Some(spec) = pod.spec.as_ref() else {
        total.pods = 1;
        return total;
    };
    for container in &spec.containers {
        total.add(&container_requests(container));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for init in spec.init_containers.iter().flatten() {
        let requests = container_requests(init);
        if init.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&requests);
        } else {
            // An init container runs beside the sidecars started before it.
            let mut running = sidecars.clone();
            running.add(&requests);
            init_peak.max(&running);
        }
    }
    total.add(&sidecars);
    total.max(&init_peak);
    if let Some(overhead) = spec.overhead.as_ref() {
        total.add(&Resources::from_list(Some(overhead)));
    }
    total.pods = 1;
    total
}
