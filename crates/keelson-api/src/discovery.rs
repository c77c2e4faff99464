//! Discovery documents, built from the [`Registry`].
//!
//! Clients learn what the server serves in two ways, and both must work: the legacy walk
//! (`/api`, `/apis`, then every group version) and aggregated discovery
//! (`apidiscovery.k8s.io/v2`: two documents, `/api` and `/apis`), which clients recognize
//! only by the response content type [`AGGREGATED_CONTENT_TYPE`].

use serde_json::{Value, json};

use crate::registry::{Registry, Resource, Scope};

/// Content type of an aggregated discovery response.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery (v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// `GET /api` (legacy): the core versions. `server_address` is `host:port`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_version_ref(group: &str, version: &str) -> Value {
    json!({"groupVersion": format!("{group}/{version}"), "version": version})
}

/// `GET /apis/<group>` (legacy), or `None` for an unknown group.
pub fn api_group(registry: &Registry, name: &str) -> Option<Value> {
    let group = registry.groups().into_iter().find(|g| g.name == name)?;
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group.name,
        "versions": group.versions.iter().map(|v| group_version_ref(group.name, v)).collect::<Vec<_>>(),
        "preferredVersion": group_version_ref(group.name, group.versions[0]),
    }))
}

/// `GET /apis` (legacy): every group with its versions.
pub fn api_group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .filter_map(|g| api_group(registry, g.name))
        .map(|mut g| {
            if let Some(object) = g.as_object_mut() {
                object.remove("kind");
                object.remove("apiVersion");
            }
            g
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /api/v1` or `/apis/<group>/<version>` (legacy), or `None` if nothing is served there.
pub fn api_resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let served = registry.group_version(group, version);
    if served.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in served {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular(),
            "namespaced": r.namespaced(),
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for sub in &r.subresources {
            let (sub_group, sub_version, sub_kind) = sub.response;
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub.name),
                "singularName": "",
                "namespaced": r.namespaced(),
                "kind": sub_kind,
                "verbs": sub.verbs,
            });
            if (sub_group, sub_version) != (r.group, r.version) {
                entry["group"] = json!(sub_group);
                entry["version"] = json!(sub_version);
            }
            resources.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn discovery_resource(r: &Resource) -> Value {
    let mut entry = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.scope == Scope::Namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular(),
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        entry["subresources"] = r
            .subresources
            .iter()
            .map(|sub| {
                let (group, version, kind) = sub.response;
                json!({
                    "subresource": sub.name,
                    "responseKind": {"group": group, "version": version, "kind": kind},
                    "verbs": sub.verbs,
                })
            })
            .collect();
    }
    entry
}

fn discovery_group(registry: &Registry, name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = registry
                .group_version(name, version)
                .into_iter()
                .map(discovery_resource)
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": name, "creationTimestamp": null}, "versions": versions})
}

fn discovery_list(items: Vec<Value>) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// `GET /api` (aggregated): the core group, named `""`.
pub fn aggregated_core(registry: &Registry) -> Value {
    discovery_list(vec![discovery_group(registry, "", &["v1"])])
}

/// `GET /apis` (aggregated): every named group.
pub fn aggregated_groups(registry: &Registry) -> Value {
    discovery_list(
        registry
            .groups()
            .iter()
            .map(|g| discovery_group(registry, g.name, &g.versions))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_is_recognized_only_when_asked_for() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
    }

    #[test]
    fn legacy_documents_name_every_group_version() {
        let registry = Registry::builtin();
        let list = api_group_list(&registry);
        let autoscaling = list["groups"]
            .as_array()
            .and_then(|groups| groups.iter().find(|g| g["name"] == "autoscaling"))
            .expect("autoscaling group");
        assert_eq!(
            autoscaling["preferredVersion"]["groupVersion"],
            "autoscaling/v2"
        );
        assert_eq!(autoscaling["versions"][1]["version"], "v1");
        let core = api_resource_list(&registry, "", "v1").expect("core");
        assert_eq!(core["groupVersion"], "v1");
        let pods = core["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "pods"))
            .expect("pods");
        assert_eq!(pods["shortNames"][0], "po");
        assert_eq!(pods["namespaced"], true);
        assert!(api_resource_list(&registry, "apps", "v9").is_none());
        assert!(api_group(&registry, "nope").is_none());
    }

    #[test]
    fn aggregated_documents_carry_scope_and_kind() {
        let registry = Registry::builtin();
        let core = aggregated_core(&registry);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let namespaces = &core["items"][0]["versions"][0]["resources"][0];
        assert_eq!(namespaces["resource"], "namespaces");
        assert_eq!(namespaces["scope"], "Cluster");
        assert_eq!(namespaces["responseKind"]["kind"], "Namespace");
        let groups = aggregated_groups(&registry);
        let apps = &groups["items"][0];
        assert_eq!(apps["metadata"]["name"], "apps");
        assert_eq!(apps["versions"][0]["freshness"], "Current");
    }
}
