//! `keelson agent`: a node agent joined to a server by kubeconfig. Today it runs simulated
//! nodes (`--simulate N`), the scale harness; the containerd-backed agent comes next.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
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
        bail!("only simulated nodes are available yet: pass --simulate N");
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
