//! `keelson agent`: a node agent joined to a server by kubeconfig: this machine as a real
//! node on its own containerd, or simulated nodes (`--simulate N`), the scale harness.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use keelson_agent::kubelet::{Kubelet, KubeletConfig};
use keelson_agent::{SimConfig, SimulatedNodes};

#[derive(clap::Args)]
pub struct AgentArgs {
    /// Kubeconfig of the server to join (e.g. its `admin.kubeconfig`).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,

    /// Run this many simulated nodes instead of a real one.
    #[arg(long)]
    pub simulate: Option<usize>,

    /// Simulated nodes are named PREFIX-0 … PREFIX-(N-1).
    #[arg(long, default_value = "sim")]
    pub node_prefix: String,

    /// Capacity of each simulated node: `cpu=4,memory=8Gi,pods=110`.
    #[arg(long, value_delimiter = ',')]
    pub capacity: Vec<String>,

    /// Extra labels of each simulated node: `key=value` (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,

    /// Zones dealt to the nodes in turn (`topology.kubernetes.io/zone`).
    #[arg(long, value_delimiter = ',')]
    pub zones: Vec<String>,

    /// Taints of each simulated node: `key=value:Effect` or `key:Effect` (repeatable).
    #[arg(long = "taint")]
    pub taints: Vec<String>,

    /// Milliseconds from a pod's binding to Running and Ready.
    #[arg(long, default_value_t = 100)]
    pub start_delay_ms: u64,

    /// The real node's state (its containerd, pod network): /var/lib/keelson/agent.
    #[arg(long, default_value = "/var/lib/keelson/agent")]
    pub data_dir: PathBuf,

    /// The real node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,

    /// Held back from pods on the real node: `cpu=500m,memory=1Gi`.
    #[arg(long, value_delimiter = ',')]
    pub system_reserved: Vec<String>,
}

/// This machine as a node, until Ctrl-C; containerd keeps running for the next start.
async fn run_real(args: AgentArgs) -> Result<()> {
    let mut config = KubeletConfig::new(args.data_dir.clone());
    config.node_name = args.node_name.clone();
    for entry in &args.system_reserved {
        let (k, v) = pair(entry, "system-reserved")?;
        config
            .reserved
            .set(&k, &v)
            .map_err(|e| anyhow::anyhow!("system-reserved {k}={v}: {}", e.0))?;
    }
    let client = crate::kube_client(&args.kubeconfig).await?;
    let kubelet = Kubelet::start(client, config).await?;
    eprintln!("keelson agent: node {} running", kubelet.name);
    tokio::signal::ctrl_c().await?;
    drop(kubelet);
    Ok(())
}

fn pair(text: &str, what: &str) -> Result<(String, String)> {
    let (key, value) = text
        .split_once('=')
        .with_context(|| format!("{what} {text:?} is not key=value"))?;
    Ok((key.to_owned(), value.to_owned()))
}

fn taint(text: &str) -> Result<k8s_openapi::api::core::v1::Taint> {
    let (rest, effect) = text
        .rsplit_once(':')
        .with_context(|| format!("taint {text:?} is not key[=value]:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        bail!("taint effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute");
    }
    let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
    Ok(k8s_openapi::api::core::v1::Taint {
        key: key.to_owned(),
        value: (!value.is_empty()).then(|| value.to_owned()),
        effect: effect.to_owned(),
        time_added: None,
    })
}

pub async fn run(args: AgentArgs) -> Result<()> {
    let Some(count) = args.simulate else {
        return run_real(args).await;
    };
    let mut config = SimConfig::new(&args.node_prefix, count);
    for entry in &args.capacity {
        let (k, v) = pair(entry, "capacity")?;
        config.capacity.insert(k, v);
    }
    for label in &args.labels {
        let (k, v) = pair(label, "label")?;
        config.labels.insert(k, v);
    }
    config.zones = args.zones.clone();
    config.taints = args
        .taints
        .iter()
        .map(|t| taint(t))
        .collect::<Result<_>>()?;
    config.start_delay = Duration::from_millis(args.start_delay_ms);
    let client = crate::kube_client(&args.kubeconfig).await?;
    let nodes = SimulatedNodes::start(client, config).await?;
    tracing::info!(count, prefix = %args.node_prefix, "simulated nodes running");
    eprintln!(
        "keelson agent: {count} simulated nodes ({}-0 …) running",
        args.node_prefix
    );
    tokio::signal::ctrl_c().await?;
    drop(nodes);
    Ok(())
}
