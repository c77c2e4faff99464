//! Node lifecycle controller: a node whose Lease has not been renewed for the grace period
//! is marked `Ready=Unknown` ("Kubelet stopped posting node status.") and tainted
//! `node.kubernetes.io/unreachable` (NoSchedule and NoExecute); once renewed again, the
//! taints go. Pods on an unreachable node are evicted (deleted) when their toleration of
//! the NoExecute taint runs out: its `tolerationSeconds`, forever without one, or the
//! default (300 s, configurable) for pods that do not mention it — what the
//! DefaultTolerationSeconds admission gives every pod upstream. Their controllers replace
//! them elsewhere.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::cache::watched;
use crate::{ControllerError, ControllersConfig};

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

pub async fn run(client: Client, config: ControllersConfig) {
    let nodes = watched(Api::<Node>::all(client.clone()), None);
    let leases = watched(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        None,
    );
    let pods = watched(Api::<Pod>::all(client.clone()), None);
    for ready in [
        nodes.wait_until_ready().await,
        leases.wait_until_ready().await,
        pods.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return;
        }
    }
    // When each node was first seen without a lease: the grace period counts from there.
    let mut first_seen: HashMap<String, Timestamp> = HashMap::new();
    loop {
        if let Err(error) = check(&client, &config, &nodes, &leases, &pods, &mut first_seen).await {
            tracing::warn!(%error, "node lifecycle controller");
        }
        tokio::time::sleep(config.node_check_interval).await;
    }
}

fn unreachable_taints(node: &Node) -> Vec<&Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.key == UNREACHABLE)
        .collect()
}

async fn check(
    client: &Client,
    config: &ControllersConfig,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    pods: &Store<Pod>,
    first_seen: &mut HashMap<String, Timestamp>,
) -> Result<(), ControllerError> {
    let now = Timestamp::now();
    let renewals: HashMap<String, Timestamp> = leases
        .state()
        .iter()
        .filter_map(|l| {
            let renewed = l.spec.as_ref()?.renew_time.as_ref()?.0;
            Some((l.name_any(), renewed))
        })
        .collect();
    let api: Api<Node> = Api::all(client.clone());
    let grace = i64::try_from(config.node_grace.as_millis()).unwrap_or(i64::MAX);
    for node in nodes.state() {
        let name = node.name_any();
        let last = renewals
            .get(&name)
            .copied()
            .unwrap_or_else(|| *first_seen.entry(name.clone()).or_insert(now));
        let silent = now.as_millisecond() - last.as_millisecond() > grace;
        let tainted = !unreachable_taints(&node).is_empty();
        if silent && !tainted {
            tracing::info!(node = %name, "node stopped heartbeating: unreachable");
            let mut taints: Vec<serde_json::Value> = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|t| serde_json::to_value(t).ok())
                .collect();
            for effect in ["NoSchedule", "NoExecute"] {
                taints.push(json!({"key": UNREACHABLE, "effect": effect, "timeAdded": Time(now)}));
            }
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"taints": taints}})),
            )
            .await?;
            let unknown = |kind: &str| {
                json!({"type": kind, "status": "Unknown", "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.", "lastTransitionTime": Time(now)})
            };
            let status = json!({"status": {"conditions": [unknown("Ready"), unknown("MemoryPressure"),
                unknown("DiskPressure"), unknown("PIDPressure")]}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
                .await?;
        } else if !silent && tainted {
            tracing::info!(node = %name, "node heartbeating again");
            let kept: Vec<&Taint> = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter(|t| t.key != UNREACHABLE)
                .collect();
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"taints": kept}})),
            )
            .await?;
        }
        if silent {
            evict(client, config, &node, pods, now).await?;
        }
    }
    Ok(())
}

/// Deletes the pods on `node` whose toleration of its NoExecute unreachable taint has run out.
async fn evict(
    client: &Client,
    config: &ControllersConfig,
    node: &Arc<Node>,
    pods: &Store<Pod>,
    now: Timestamp,
) -> Result<(), ControllerError> {
    let Some(tainted_at) = unreachable_taints(node)
        .into_iter()
        .find(|t| t.effect == "NoExecute")
        .map(|t| t.time_added.as_ref().map_or(now, |t| t.0))
    else {
        return Ok(());
    };
    let name = node.name_any();
    for pod in pods.state().iter().filter(|p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
            && p.metadata.deletion_timestamp.is_none()
    }) {
        let toleration = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .into_iter()
            .flatten()
            .find(|t| {
                let key_ok = t.key.as_deref() == Some(UNREACHABLE)
                    || (t.key.as_deref().is_none_or(str::is_empty)
                        && t.operator.as_deref() == Some("Exists"));
                let effect_ok = t
                    .effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "NoExecute");
                key_ok && effect_ok
            });
        let seconds = match toleration {
            Some(t) => match t.toleration_seconds {
                Some(seconds) => seconds,
                None => continue, // tolerated forever
            },
            None => i64::try_from(config.default_toleration.as_secs()).unwrap_or(i64::MAX),
        };
        if now.as_second() - tainted_at.as_second() < seconds {
            continue;
        }
        let namespace = pod.namespace().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods.delete(&pod.name_any(), &params).await {
            Ok(_) => {
                tracing::info!(pod = %pod.name_any(), node = %name, "evicted from an unreachable node");
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
