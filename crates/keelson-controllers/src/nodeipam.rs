//! Node IPAM: gives every node a pod CIDR (`spec.podCIDR`, `spec.podCIDRs`) carved from the
//! cluster CIDR, as kube-controller-manager's range allocator does (k3s defaults: cluster
//! `10.42.0.0/16`, a /24 per node). CIDRs already on nodes are taken as used, and so are
//! the ones this controller gave out that its cache does not show yet, so no CIDR is handed
//! out twice and restarts agree; a node keeps its CIDR for life. When the range is
//! exhausted the node gets a `CIDRNotAvailable` event and no CIDR. IPv4 only.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::cache::watched;
use crate::{ControllerError, events};

const COMPONENT: &str = "node-ipam-controller";

/// A range of IPv4 addresses: base address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    /// `10.42.0.0/16`; the base is masked to the prefix.
    pub fn parse(text: &str) -> Result<Cidr, ControllerError> {
        let bad = || ControllerError::Invalid(format!("{text:?} is not an IPv4 CIDR"));
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Cidr {
            base: u32::from(address) & mask,
            prefix,
        })
    }

    /// The `n`th subnet of length `mask`, if the range has that many.
    pub fn subnet(&self, mask: u8, n: u32) -> Option<Cidr> {
        if mask < self.prefix || mask > 32 {
            return None;
        }
        let bits = u32::from(mask - self.prefix);
        if bits < 32 && n >= (1u32 << bits) {
            return None;
        }
        let step = if mask == 32 { 1 } else { 1u32 << (32 - mask) };
        Some(Cidr {
            base: self.base.checked_add(n.checked_mul(step)?)?,
            prefix: mask,
        })
    }

    /// How many subnets of length `mask` the range holds (saturating).
    pub fn subnets(&self, mask: u8) -> u32 {
        match mask.checked_sub(self.prefix) {
            Some(bits) if bits < 32 => 1u32 << bits,
            Some(_) => u32::MAX,
            None => 0,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .filter(|c| !c.is_empty())
}

/// The first subnet of `cluster` not in `used`.
pub fn next_free(cluster: Cidr, mask: u8, used: &HashSet<String>) -> Option<Cidr> {
    (0..cluster.subnets(mask))
        .filter_map(|n| cluster.subnet(mask, n))
        .find(|c| !used.contains(&c.to_string()))
}

pub async fn run(client: Client, cluster_cidr: String, node_mask: u8) {
    let cluster = match Cidr::parse(&cluster_cidr) {
        Ok(cluster) => cluster,
        Err(error) => {
            tracing::error!(%error, "node IPAM off: bad cluster CIDR");
            return;
        }
    };
    let wake = Arc::new(Notify::new());
    let nodes = watched(Api::<Node>::all(client.clone()), Some(wake.clone()));
    if nodes.wait_until_ready().await.is_err() {
        return;
    }
    let api: Api<Node> = Api::all(client.clone());
    // CIDRs given out that the cache may not show yet, by node: never handed out twice.
    let mut assigned: HashMap<String, String> = HashMap::new();
    loop {
        let all = nodes.state();
        assigned.retain(|name, _| {
            all.iter()
                .any(|n| n.name_any() == *name && pod_cidr(n).is_none())
        });
        let mut used: HashSet<String> = all
            .iter()
            .filter_map(|n| pod_cidr(n).map(str::to_owned))
            .chain(assigned.values().cloned())
            .collect();
        let waiting: Vec<_> = all
            .iter()
            .filter(|n| pod_cidr(n).is_none() && !assigned.contains_key(&n.name_any()))
            .collect();
        for node in waiting {
            let Some(cidr) = next_free(cluster, node_mask, &used) else {
                let message = format!("Node {} has no CIDR left in {cluster}", node.name_any());
                events::record(
                    &client,
                    COMPONENT,
                    node.as_ref(),
                    "Normal",
                    "CIDRNotAvailable",
                    &message,
                )
                .await;
                continue;
            };
            let cidr = cidr.to_string();
            let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
            match api
                .patch(
                    &node.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(node = %node.name_any(), %cidr, "pod CIDR assigned");
                    used.insert(cidr.clone());
                    assigned.insert(node.name_any(), cidr);
                }
                Err(error) => {
                    tracing::warn!(node = %node.name_any(), %error, "pod CIDR not assigned")
                }
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_carved_in_order_and_skip_the_used() {
        let cluster = Cidr::parse("10.42.7.9/16").expect("cidr");
        assert_eq!(cluster.to_string(), "10.42.0.0/16");
        assert_eq!(cluster.subnets(24), 256);
        assert_eq!(
            cluster.subnet(24, 0).map(|c| c.to_string()).as_deref(),
            Some("10.42.0.0/24")
        );
        assert_eq!(
            cluster.subnet(24, 255).map(|c| c.to_string()).as_deref(),
            Some("10.42.255.0/24")
        );
        assert_eq!(cluster.subnet(24, 256), None);
        let used: HashSet<String> = ["10.42.0.0/24", "10.42.1.0/24", "10.42.3.0/24"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            next_free(cluster, 24, &used)
                .map(|c| c.to_string())
                .as_deref(),
            Some("10.42.2.0/24")
        );
        let tiny = Cidr::parse("10.0.0.0/23").expect("cidr");
        let full: HashSet<String> = ["10.0.0.0/24", "10.0.1.0/24"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(next_free(tiny, 24, &full), None);
        assert!(Cidr::parse("10.0.0.0").is_err());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("fd00::/64").is_err());
    }
}
