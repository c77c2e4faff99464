//! Simulated nodes: `count` nodes named `{prefix}-0` … `{prefix}-{count-1}`, driven through
//! the API like real ones. Each has a Node object (capacity, labels including
//! `kubernetes.io/hostname` and `topology.kubernetes.io/zone`, taints, Ready conditions),
//! a Lease in `kube-node-lease` renewed every `lease_renew`, and status heartbeats. Pods
//! bound to them become Running and Ready after `start_delay`; deleted pods are removed
//! after their grace period (at most `max_termination`); a container can be made to exit
//! with a code, and a node can stop heartbeating. When the process dies, its nodes go
//! silent, as real nodes would.
//!
//! Pods whose `restartPolicy` is `Never` or `OnFailure` run to completion: after
//! `run_to_completion` their containers exit with code 0 (terminated, reason `Completed`)
//! and the pod Succeeds. Two annotations on a pod change that:
//!
//! - `sim.keelson.io/run-ms`: how long its containers run, in milliseconds;
//! - `sim.keelson.io/exit-code`: the code they exit with. Non-zero means reason `Error`;
//!   the pod then fails (`Never`), or its containers restart (`OnFailure`, `restartCount`
//!   + 1) and run again for as long, and exit again.
//!
//! Pods with `restartPolicy: Always` run until deleted (or told to exit).

mod node;
mod pods;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::task::JoinHandle;

use crate::lease;

/// Annotation: how long a pod that runs to completion runs, in milliseconds.
pub const RUN_MS: &str = "sim.keelson.io/run-ms";
/// Annotation: the code a pod that runs to completion exits with.
pub const EXIT_CODE: &str = "sim.keelson.io/exit-code";

/// What the simulated nodes are and how their pods behave.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub prefix: String,
    pub count: usize,
    /// Capacity (= allocatable): `cpu`, `memory`, `pods`, `ephemeral-storage`, extended.
    pub capacity: BTreeMap<String, String>,
    /// Extra labels on every node.
    pub labels: BTreeMap<String, String>,
    /// Zones dealt round-robin (`topology.kubernetes.io/zone`); none when empty.
    pub zones: Vec<String>,
    pub taints: Vec<Taint>,
    /// Bound pod → Running and Ready.
    pub start_delay: Duration,
    /// The longest a deleted pod takes to go (its grace period if shorter).
    pub max_termination: Duration,
    /// How long pods that run to completion (`Never`, `OnFailure`) run before their
    /// containers exit, unless their `sim.keelson.io/run-ms` annotation says otherwise.
    pub run_to_completion: Duration,
    pub lease_duration_seconds: i32,
    pub lease_renew: Duration,
    /// How often node status is re-posted.
    pub status_interval: Duration,
}

impl SimConfig {
    /// `count` nodes with 4 CPUs, 8 GiB and room for 110 pods, starting pods after 100 ms;
    /// pods that run to completion finish after 1 s.
    pub fn new(prefix: &str, count: usize) -> Self {
        SimConfig {
            prefix: prefix.to_owned(),
            count,
            capacity: [
                ("cpu", "4"),
                ("memory", "8Gi"),
                ("pods", "110"),
                ("ephemeral-storage", "100Gi"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            labels: BTreeMap::new(),
            zones: Vec::new(),
            taints: Vec::new(),
            start_delay: Duration::from_millis(100),
            max_termination: Duration::from_secs(1),
            run_to_completion: Duration::from_secs(1),
            lease_duration_seconds: 40,
            lease_renew: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
        }
    }

    pub fn node_name(&self, index: usize) -> String {
        format!("{}-{index}", self.prefix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the API server: {0}")]
    Api(#[from] kube::Error),
    #[error("no simulated node {0}")]
    NoSuchNode(String),
    #[error("the simulated node is not a valid Node: {0}")]
    Invalid(String),
}

/// What tests change while the nodes run.
#[derive(Default)]
struct Control {
    /// Nodes that stopped heartbeating.
    silent: HashSet<String>,
    /// (namespace, pod, container) → exit code to report.
    exits: Vec<(String, String, Option<String>, i32)>,
}

/// Running simulated nodes; dropping the handle stops them (they go silent).
pub struct SimulatedNodes {
    config: SimConfig,
    control: Arc<Mutex<Control>>,
    tasks: Vec<JoinHandle<()>>,
    wake_pods: Arc<tokio::sync::Notify>,
}

impl Drop for SimulatedNodes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl SimulatedNodes {
    /// Registers the nodes and their leases, then keeps them alive and runs their pods.
    pub async fn start(client: Client, config: SimConfig) -> Result<Self, SimError> {
        let nodes: Api<Node> = Api::all(client.clone());
        for index in 0..config.count {
            let node = node::build(&config, index).map_err(|e| SimError::Invalid(e.to_string()))?;
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // Registered before (a restarted agent): take it over.
                    let name = config.node_name(index);
                    nodes
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&node))
                        .await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        let control = Arc::new(Mutex::new(Control::default()));
        let wake_pods = Arc::new(tokio::sync::Notify::new());
        let tasks = vec![
            tokio::spawn(heartbeat(client.clone(), config.clone(), control.clone())),
            tokio::spawn(pods::run(
                client,
                config.clone(),
                control.clone(),
                wake_pods.clone(),
            )),
        ];
        Ok(SimulatedNodes {
            config,
            control,
            tasks,
            wake_pods,
        })
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node stops renewing its lease and posting status, as if it lost power.
    pub fn stop_heartbeat(&self, node: &str) -> Result<(), SimError> {
        let known = (0..self.config.count).any(|i| self.config.node_name(i) == node);
        if !known {
            return Err(SimError::NoSuchNode(node.to_owned()));
        }
        self.control().silent.insert(node.to_owned());
        self.wake_pods.notify_one();
        Ok(())
    }

    /// The node heartbeats again.
    pub fn resume_heartbeat(&self, node: &str) {
        self.control().silent.remove(node);
        self.wake_pods.notify_one();
    }

    /// Makes a container of a running pod exit with `code` (the first container when
    /// `container` is `None`); the pod then follows its restart policy.
    pub fn exit_container(&self, namespace: &str, pod: &str, container: Option<&str>, code: i32) {
        self.control().exits.push((
            namespace.to_owned(),
            pod.to_owned(),
            container.map(str::to_owned),
            code,
        ));
        self.wake_pods.notify_one();
    }
}

/// How often the heartbeat wakes to renew the next slice of leases.
const HEARTBEAT_TICK: Duration = Duration::from_millis(100);

/// Leases renewed (or statuses posted) at once.
const HEARTBEATS_IN_FLIGHT: usize = 16;

/// Renews every live node's lease each `lease_renew`, and re-posts its Ready condition
/// each `status_interval`. The first round renews every lease at once; after that each
/// node has its own slot in the period, so the server sees a steady trickle of renewals
/// rather than a burst of thousands, as it would from real kubelets.
async fn heartbeat(client: Client, config: SimConfig, control: Arc<Mutex<Control>>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let slots = usize::try_from(config.lease_renew.as_millis() / HEARTBEAT_TICK.as_millis())
        .unwrap_or(usize::MAX)
        .max(1);
    // Status goes out every this many lease rounds.
    let status_every =
        usize::try_from(config.status_interval.as_millis() / config.lease_renew.as_millis().max(1))
            .unwrap_or(usize::MAX)
            .max(1);
    let mut tick = tokio::time::interval(HEARTBEAT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    for step in 0usize.. {
        let (round, slot) = (step / slots, step % slots);
        let range = if first {
            0..config.count
        } else {
            config.count * slot / slots..config.count * (slot + 1) / slots
        };
        let post_status = round > 0 && round % status_every == 0;
        let silent = control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .silent
            .clone();
        let now = Timestamp::now();
        let beats = range
            .map(|index| config.node_name(index))
            .filter(|name| !silent.contains(name))
            .map(|name| {
                let (leases, nodes, config) = (&leases, &nodes, &config);
                async move {
                    lease::renew(leases, &name, config.lease_duration_seconds, now).await;
                    if post_status {
                        let status = node::ready_status(now);
                        if let Err(error) = nodes
                            .patch_status(
                                &name,
                                &PatchParams::default(),
                                &Patch::Strategic(&status),
                            )
                            .await
                        {
                            tracing::warn!(node = %name, %error, "status update failed");
                        }
                    }
                }
            });
        futures::stream::iter(beats)
            .buffer_unordered(HEARTBEATS_IN_FLIGHT)
            .collect::<()>()
            .await;
        first = false;
        tick.tick().await;
    }
}
