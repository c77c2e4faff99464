//! Amounts of node resources: what a pod requests and what a node can give.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use keelson_api::quantity::parse_milli;

/// Resources in thousandths (millicores for CPU, thousandths of a byte for memory), plus a
/// pod count. CPU, memory and ephemeral storage have their own fields: every filter and
/// score of every node reads them, so they are not looked up by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i128,
    pub memory: i128,
    pub ephemeral_storage: i128,
    /// Every other resource (extended resources, hugepages), by name.
    pub other: BTreeMap<String, i128>,
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
                *out.slot(name) = milli;
            }
        }
        out
    }

    fn slot(&mut self, name: &str) -> &mut i128 {
        match name {
            "cpu" => &mut self.cpu,
            "memory" => &mut self.memory,
            "ephemeral-storage" => &mut self.ephemeral_storage,
            _ => self.other.entry(name.to_owned()).or_default(),
        }
    }

    pub fn get(&self, name: &str) -> i128 {
        match name {
            "cpu" => self.cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            _ => self.other.get(name).copied().unwrap_or(0),
        }
    }

    /// Every resource by name (not `pods`), the three common ones first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i128)> {
        [
            ("cpu", self.cpu),
            ("memory", self.memory),
            ("ephemeral-storage", self.ephemeral_storage),
        ]
        .into_iter()
        .chain(
            self.other
                .iter()
                .map(|(name, &amount)| (name.as_str(), amount)),
        )
    }

    pub fn add(&mut self, other: &Resources) {
        self.combine(other, |mine, theirs| mine + theirs);
        self.pods += other.pods;
    }

    pub fn subtract(&mut self, other: &Resources) {
        self.combine(other, |mine, theirs| mine - theirs);
        self.pods -= other.pods;
    }

    /// Each resource at the larger of the two amounts.
    fn max(&mut self, other: &Resources) {
        self.combine(other, i128::max);
    }

    /// Each resource (not `pods`) as `op` of ours and theirs.
    fn combine(&mut self, other: &Resources, op: impl Fn(i128, i128) -> i128) {
        self.cpu = op(self.cpu, other.cpu);
        self.memory = op(self.memory, other.memory);
        self.ephemeral_storage = op(self.ephemeral_storage, other.ephemeral_storage);
        for (name, &amount) in &other.other {
            let mine = self.other.entry(name.clone()).or_default();
            *mine = op(*mine, amount);
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
