//! The cluster every controller test runs on: an in-process API server, the scheduler, the
//! controllers and simulated nodes, as `keelson server` and `keelson agent --simulate` run
//! them, with timings shortened so node failures and grace periods play out in seconds.
//! (Each test file is its own crate and uses part of this, hence `dead_code` allowed.)
#![allow(dead_code)]

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use keelson_agent::{SimConfig, SimulatedNodes};
use keelson_controllers::ControllersConfig;
use kube::Client;

pub struct Cluster {
    pub client: Client,
    /// The client's configuration, for tests that need a differently set-up client.
    pub config: kube::Config,
    pub nodes: SimulatedNodes,
}

/// Controllers with short node grace, tolerations and check interval.
pub fn controllers() -> ControllersConfig {
    ControllersConfig {
        node_grace: Duration::from_secs(2),
        default_toleration: Duration::from_secs(1),
        node_check_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

/// `count` simulated nodes named `{prefix}-N`, quick to renew leases and end pods.
pub fn sim(prefix: &str, count: usize) -> SimConfig {
    let mut sim = SimConfig::new(prefix, count);
    sim.max_termination = Duration::from_millis(300);
    sim.lease_renew = Duration::from_millis(300);
    sim
}

/// The default cluster: `nodes` simulated nodes named `node-N`.
pub async fn start(dir: &std::path::Path, nodes: usize) -> Result<Cluster> {
    start_with(dir, controllers(), sim("node", nodes)).await
}

pub async fn start_with(
    dir: &std::path::Path,
    controllers: ControllersConfig,
    sim: SimConfig,
) -> Result<Cluster> {
    let kubeconfig = keelson_apiserver::testing::start_in_process(dir)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config.clone())?;
    tokio::spawn(keelson_scheduler::run(
        client.clone(),
        keelson_scheduler::plugins::default_profile(),
        keelson_scheduler::SchedulerConfig::default(),
    ));
    tokio::spawn(keelson_controllers::run(client.clone(), controllers));
    let nodes = SimulatedNodes::start(client.clone(), sim).await?;
    Ok(Cluster {
        client,
        config,
        nodes,
    })
}

pub fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
