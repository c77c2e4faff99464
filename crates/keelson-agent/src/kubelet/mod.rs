//! The real node: keelson's kubelet on containerd. Today it registers the machine as a
//! Node (capacity, allocatable, addresses, node info, images), keeps its Lease and status
//! fresh with the Ready condition taken from the runtime, and writes the pod network once
//! the node has a pod CIDR. Pod workers come next.

pub mod machine;
pub mod node;

use std::path::PathBuf;
use std::time::Duration;

use k8s_cri::v1::{ListImagesRequest, StatusRequest};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::task::JoinHandle;

use crate::cri::config::{Network, Paths};
use crate::cri::{Containerd, Cri, CriError, write_network};
use crate::lease;
use machine::Machine;
use node::{Reserved, Runtime};

/// How a real node runs.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// The Node's name; the machine's hostname when `None`.
    pub node_name: Option<String>,
    /// containerd, the CNI state and (later) pod volumes live here.
    pub data_dir: PathBuf,
    pub reserved: Reserved,
    /// The Linux bridge pods attach to.
    pub bridge: String,
    /// Whether the bridge routes the pods' traffic out (see [`Network::gateway`]).
    pub gateway: bool,
    pub lease_duration_seconds: i32,
    /// How often the Lease is renewed and the status posted.
    pub heartbeat: Duration,
}

impl KubeletConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        KubeletConfig {
            node_name: None,
            data_dir,
            reserved: Reserved::default(),
            bridge: "keelson0".into(),
            gateway: true,
            lease_duration_seconds: 40,
            heartbeat: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("the container runtime: {0}")]
    Runtime(#[from] CriError),
    #[error("the API server: {0}")]
    Api(#[from] kube::Error),
    #[error("reading the machine: {0}")]
    Machine(std::io::Error),
    #[error("the Node object: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// A running node; [`Kubelet::shutdown`] stops it and the containerd it started.
pub struct Kubelet {
    pub name: String,
    containerd: Option<Containerd>,
    heartbeat: JoinHandle<()>,
}

/// What the runtime says about itself now.
async fn runtime(cri: &Cri) -> Result<Runtime, CriError> {
    let version = cri.version().await?;
    let status = cri
        .runtime
        .clone()
        .status(StatusRequest { verbose: false })
        .await
        .map_err(CriError::call("Status"))?
        .into_inner();
    let not_ready = status
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .filter(|c| !c.status)
        .map(|c| {
            let what = if c.r#type == "NetworkReady" {
                "network"
            } else {
                "container runtime"
            };
            format!("{what} not ready: {}: {}", c.reason, c.message)
        })
        .reduce(|a, b| format!("{a}; {b}"));
    let images = cri
        .images
        .clone()
        .list_images(ListImagesRequest { filter: None })
        .await
        .map_err(CriError::call("ListImages"))?
        .into_inner()
        .images
        .into_iter()
        .map(|image| {
            let names = if image.repo_tags.is_empty() {
                image.repo_digests
            } else {
                image.repo_tags
            };
            (names, image.size)
        })
        .collect();
    Ok(Runtime {
        version: format!("{}://{}", version.runtime_name, version.runtime_version),
        not_ready,
        images,
    })
}

impl Kubelet {
    /// Starts containerd, registers the Node (taking over one registered before under
    /// the same name) and starts the heartbeat.
    pub async fn start(client: Client, config: KubeletConfig) -> Result<Kubelet, KubeletError> {
        std::fs::create_dir_all(&config.data_dir).map_err(KubeletError::Machine)?;
        let containerd = Containerd::start(Paths::under(&config.data_dir)).await?;
        let machine = Machine::read(&config.data_dir).map_err(KubeletError::Machine)?;
        let name = config
            .node_name
            .clone()
            .unwrap_or_else(|| machine.hostname.clone());
        let facts = runtime(&containerd.cri).await?;
        let nodes: Api<Node> = Api::all(client.clone());
        let registered = node::build(&name, &machine, &config.reserved, &facts, Timestamp::now())?;
        match nodes.create(&PostParams::default(), &registered).await {
            Ok(_) => tracing::info!(node = %name, "registered"),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let status = serde_json::json!({"status": registered.status});
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                tracing::info!(node = %name, "registered before; taken over");
            }
            Err(error) => return Err(error.into()),
        }
        let heartbeat = tokio::spawn(heartbeat(
            client,
            config,
            name.clone(),
            machine,
            containerd.cri.clone(),
            containerd.paths.clone(),
        ));
        Ok(Kubelet {
            name,
            containerd: Some(containerd),
            heartbeat,
        })
    }

    /// Stops the heartbeat and the containerd this node started (its containers with it
    /// only if they were stopped first). A node that just exits leaves containerd running
    /// for the next start to adopt.
    pub async fn shutdown(mut self) -> Result<(), KubeletError> {
        self.heartbeat.abort();
        if let Some(containerd) = self.containerd.take() {
            containerd.stop().await?;
        }
        Ok(())
    }

    /// The CRI clients of this node's containerd.
    pub fn cri(&self) -> Option<&Cri> {
        self.containerd.as_ref().map(|c| &c.cri)
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// Renews the Lease and posts the status every `heartbeat`; writes the pod network when
/// the node's pod CIDR first shows up (or changes).
async fn heartbeat(
    client: Client,
    config: KubeletConfig,
    name: String,
    machine: Machine,
    cri: Cri,
    paths: Paths,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    // The pod CIDR the network list was written for.
    let mut written: Option<String> = None;
    loop {
        let now = Timestamp::now();
        lease::renew(&leases, &name, config.lease_duration_seconds, now).await;
        match nodes.get(&name).await {
            Ok(current) => {
                let cidr = current.spec.and_then(|s| s.pod_cidr);
                if let Some(cidr) = cidr
                    && written.as_deref() != Some(cidr.as_str())
                {
                    let network = Network {
                        name: "keelson".into(),
                        bridge: config.bridge.clone(),
                        subnet: cidr.clone(),
                        gateway: config.gateway,
                    };
                    match write_network(&paths, &network) {
                        Ok(()) => {
                            tracing::info!(node = %name, %cidr, "pod network written");
                            written = Some(cidr);
                        }
                        Err(error) => tracing::warn!(%error, "writing the pod network"),
                    }
                }
            }
            Err(error) => tracing::warn!(node = %name, %error, "reading the node"),
        }
        match runtime(&cri).await {
            Ok(facts) => {
                let status = node::status(&machine, &config.reserved, &facts, now);
                let patch = serde_json::json!({ "status": status });
                if let Err(error) = nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    tracing::warn!(node = %name, %error, "status update failed");
                }
            }
            Err(error) => tracing::warn!(%error, "asking the runtime for its status"),
        }
        tokio::time::sleep(config.heartbeat).await;
    }
}
