//! keelson's controllers. Each module is one controller: a kube-rs `Controller` whose
//! `reconcile` compares what an object asks for with what exists, acts on the difference
//! through the API server, and returns an `Action`. No controller depends on another, and
//! none reads the store. [`run`] starts them all.

mod cache;
pub mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod events;
mod expectations;
mod gc;
pub mod job;
mod namespace;
mod nodeipam;
mod nodelifecycle;
mod replicaset;
mod revisions;
mod serviceaccount;
mod statefulset;
mod workload;

use std::time::Duration;

use kube::Client;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("the API server: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Settings of the controllers that have any.
#[derive(Clone, Debug)]
pub struct ControllersConfig {
    /// A node whose lease is older than this is unreachable.
    pub node_grace: Duration,
    /// How long pods that say nothing about it tolerate an unreachable node.
    pub default_toleration: Duration,
    /// How often nodes are checked.
    pub node_check_interval: Duration,
    /// The first wait before a Job's failed pod is replaced (doubled per failure).
    pub job_backoff: Duration,
    /// Node IPAM: the range pod CIDRs are carved from, and each node's prefix length.
    pub cluster_cidr: String,
    pub node_cidr_mask: u8,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            node_grace: Duration::from_secs(40),
            default_toleration: Duration::from_secs(300),
            node_check_interval: Duration::from_secs(1),
            job_backoff: Duration::from_secs(10),
            cluster_cidr: "10.42.0.0/16".into(),
            node_cidr_mask: 24,
        }
    }
}

/// Runs every controller until the process ends.
pub async fn run(client: Client, config: ControllersConfig) {
    tokio::join!(
        serviceaccount::run(client.clone()),
        replicaset::run(client.clone()),
        deployment::run(client.clone()),
        statefulset::run(client.clone()),
        daemonset::run(client.clone()),
        gc::run(client.clone()),
        job::run(client.clone(), config.job_backoff),
        cronjob::run(client.clone()),
        disruption::run(client.clone()),
        namespace::run(client.clone()),
        nodeipam::run(
            client.clone(),
            config.cluster_cidr.clone(),
            config.node_cidr_mask
        ),
        nodelifecycle::run(client.clone(), config),
    );
}
