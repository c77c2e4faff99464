//! Node Leases in `kube-node-lease`: the heartbeat the node lifecycle controller reads,
//! renewed the same way by simulated and real nodes.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// Renews one node's lease: a merge patch of its spec, or an apply that creates it the
/// first time (or after someone deleted it).
pub async fn renew(leases: &Api<Lease>, name: &str, duration_seconds: i32, now: Timestamp) {
    let spec = json!({"holderIdentity": name,
        "leaseDurationSeconds": duration_seconds, "renewTime": MicroTime(now)});
    let patched = leases
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": spec })),
        )
        .await;
    let result = match patched {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec});
            leases
                .patch(
                    name,
                    &PatchParams::apply("keelson-agent").force(),
                    &Patch::Apply(&lease),
                )
                .await
                .map(drop)
        }
        other => other.map(drop),
    };
    if let Err(error) = result {
        tracing::warn!(node = %name, %error, "lease renewal failed");
    }
}
