//! The resources keelson serves, as one explicit table.
//!
//! Each entry says what discovery advertises and what the REST layer needs to route a
//! request and store an object. Only what is served is listed: a subresource is added
//! here when its handler exists.

/// Whether objects live in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// A subresource (`pods/status`, `deployments/scale`) and what it answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// group, version, kind of the body, e.g. `("autoscaling", "v1", "Scale")`.
    pub response: (&'static str, &'static str, &'static str),
    pub verbs: &'static [&'static str],
}

/// One resource of one group version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Plural, lower case: the URL segment (`deployments`).
    pub plural: &'static str,
    pub scope: Scope,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: Vec<Subresource>,
}

/// `status`: the object, written without its spec.
fn status(group: &'static str, version: &'static str, kind: &'static str) -> Subresource {
    Subresource {
        name: "status",
        response: (group, version, kind),
        verbs: &["get", "patch", "update"],
    }
}

/// `scale`: an `autoscaling/v1` `Scale`.
fn scale() -> Subresource {
    Subresource {
        name: "scale",
        response: ("autoscaling", "v1", "Scale"),
        verbs: &["get", "patch", "update"],
    }
}

/// `binding` (pods): a `Binding` that assigns the pod to a node.
fn binding() -> Subresource {
    Subresource {
        name: "binding",
        response: ("", "v1", "Binding"),
        verbs: &["create"],
    }
}

/// `eviction` (pods): a `policy/v1` `Eviction`, which deletes the pod if its disruption
/// budget allows.
fn eviction() -> Subresource {
    Subresource {
        name: "eviction",
        response: ("policy", "v1", "Eviction"),
        verbs: &["create"],
    }
}

/// `finalize` (namespaces): the namespace, of which an update writes only
/// `spec.finalizers`.
fn finalize() -> Subresource {
    Subresource {
        name: "finalize",
        response: ("", "v1", "Namespace"),
        verbs: &["update"],
    }
}

/// Kinds with a status subresource, and those that also scale.
const WITH_STATUS: &[&str] = &[
    "Namespace",
    "Pod",
    "Service",
    "Node",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ResourceQuota",
    "ReplicationController",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Ingress",
    "APIService",
];
const WITH_SCALE: &[&str] = &[
    "ReplicationController",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
];

/// The verbs of an ordinary stored resource.
pub const CRUD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl Resource {
    /// `group/version`, or just `version` for the core group.
    pub fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as Kubernetes names a resource in messages.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The lower-case singular name, as discovery reports it (`deployment`).
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    /// How this version converts to the stored form, when it differs.
    pub fn conversion(&self) -> Option<crate::conversion::Conversion> {
        crate::conversion::Conversion::of(self.group, self.version, self.kind)
    }

    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }
}

/// A group's versions, preferred first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: &'static str,
    pub versions: Vec<&'static str>,
}

/// All served resources, in discovery order.
#[derive(Clone, Debug)]
pub struct Registry {
    resources: Vec<Resource>,
}

/// Compact constructor for the table below.
#[allow(clippy::too_many_arguments)]
fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    scope: Scope,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        scope,
        short_names,
        categories,
        verbs: CRUD_VERBS,
        subresources: Vec::new(),
    }
}

impl Registry {
    /// The resources of the Kubernetes API keelson serves.
    pub fn builtin() -> Self {
        use Scope::{Cluster, Namespaced};
        let all: &'static [&'static str] = &["all"];
        let resources = vec![
            res("", "v1", "Namespace", "namespaces", Cluster, &["ns"], &[]),
            res("", "v1", "Pod", "pods", Namespaced, &["po"], all),
            res("", "v1", "Service", "services", Namespaced, &["svc"], all),
            res("", "v1", "Endpoints", "endpoints", Namespaced, &["ep"], &[]),
            res(
                "",
                "v1",
                "ConfigMap",
                "configmaps",
                Namespaced,
                &["cm"],
                &[],
            ),
            res("", "v1", "Secret", "secrets", Namespaced, &[], &[]),
            res(
                "",
                "v1",
                "ServiceAccount",
                "serviceaccounts",
                Namespaced,
                &["sa"],
                &[],
            ),
            res("", "v1", "Node", "nodes", Cluster, &["no"], &[]),
            res("", "v1", "Event", "events", Namespaced, &["ev"], &[]),
            res(
                "",
                "v1",
                "PersistentVolume",
                "persistentvolumes",
                Cluster,
                &["pv"],
                &[],
            ),
            res(
                "",
                "v1",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                Namespaced,
                &["pvc"],
                &[],
            ),
            res(
                "",
                "v1",
                "ResourceQuota",
                "resourcequotas",
                Namespaced,
                &["quota"],
                &[],
            ),
            res(
                "",
                "v1",
                "LimitRange",
                "limitranges",
                Namespaced,
                &["limits"],
                &[],
            ),
            res(
                "",
                "v1",
                "ReplicationController",
                "replicationcontrollers",
                Namespaced,
                &["rc"],
                all,
            ),
            res(
                "apps",
                "v1",
                "Deployment",
                "deployments",
                Namespaced,
                &["deploy"],
                all,
            ),
            res(
                "apps",
                "v1",
                "ReplicaSet",
                "replicasets",
                Namespaced,
                &["rs"],
                all,
            ),
            res(
                "apps",
                "v1",
                "StatefulSet",
                "statefulsets",
                Namespaced,
                &["sts"],
                all,
            ),
            res(
                "apps",
                "v1",
                "DaemonSet",
                "daemonsets",
                Namespaced,
                &["ds"],
                all,
            ),
            res(
                "apps",
                "v1",
                "ControllerRevision",
                "controllerrevisions",
                Namespaced,
                &[],
                &[],
            ),
            res("batch", "v1", "Job", "jobs", Namespaced, &[], all),
            res(
                "batch",
                "v1",
                "CronJob",
                "cronjobs",
                Namespaced,
                &["cj"],
                all,
            ),
            res(
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                Namespaced,
                &["hpa"],
                all,
            ),
            res(
                "autoscaling",
                "v1",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                Namespaced,
                &["hpa"],
                all,
            ),
            res(
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                Namespaced,
                &["pdb"],
                &[],
            ),
            res(
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
                Namespaced,
                &["netpol"],
                &[],
            ),
            res(
                "networking.k8s.io",
                "v1",
                "Ingress",
                "ingresses",
                Namespaced,
                &["ing"],
                &[],
            ),
            res(
                "networking.k8s.io",
                "v1",
                "IngressClass",
                "ingressclasses",
                Cluster,
                &[],
                &[],
            ),
            res(
                "rbac.authorization.k8s.io",
                "v1",
                "Role",
                "roles",
                Namespaced,
                &[],
                &[],
            ),
            res(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                Namespaced,
                &[],
                &[],
            ),
            res(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                Cluster,
                &[],
                &[],
            ),
            res(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                Cluster,
                &[],
                &[],
            ),
            res(
                "storage.k8s.io",
                "v1",
                "StorageClass",
                "storageclasses",
                Cluster,
                &["sc"],
                &[],
            ),
            res(
                "coordination.k8s.io",
                "v1",
                "Lease",
                "leases",
                Namespaced,
                &[],
                &[],
            ),
            res(
                "discovery.k8s.io",
                "v1",
                "EndpointSlice",
                "endpointslices",
                Namespaced,
                &[],
                &[],
            ),
            res(
                "events.k8s.io",
                "v1",
                "Event",
                "events",
                Namespaced,
                &["ev"],
                &[],
            ),
            res(
                "scheduling.k8s.io",
                "v1",
                "PriorityClass",
                "priorityclasses",
                Cluster,
                &["pc"],
                &[],
            ),
            res(
                "apiregistration.k8s.io",
                "v1",
                "APIService",
                "apiservices",
                Cluster,
                &[],
                &[],
            ),
        ];
        let resources = resources
            .into_iter()
            .map(|mut r| {
                if WITH_STATUS.contains(&r.kind) {
                    r.subresources.push(status(r.group, r.version, r.kind));
                }
                if WITH_SCALE.contains(&r.kind) {
                    r.subresources.push(scale());
                }
                if r.kind == "Pod" && r.group.is_empty() {
                    r.subresources.push(binding());
                    r.subresources.push(eviction());
                }
                if r.kind == "Namespace" && r.group.is_empty() {
                    r.subresources.push(finalize());
                }
                r
            })
            .collect();
        Registry { resources }
    }

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// The resource `plural` of `group/version`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&Resource> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// The groups (core excluded), each with its versions, preferred first, in table order.
    pub fn groups(&self) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        for r in self.resources.iter().filter(|r| !r.group.is_empty()) {
            match groups.iter_mut().find(|g| g.name == r.group) {
                Some(group) if !group.versions.contains(&r.version) => {
                    group.versions.push(r.version)
                }
                Some(_) => {}
                None => groups.push(Group {
                    name: r.group,
                    versions: vec![r.version],
                }),
            }
        }
        groups
    }

    /// The resources of one group version, in table order.
    pub fn group_version(&self, group: &str, version: &str) -> Vec<&Resource> {
        self.resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_per_group_version() {
        let registry = Registry::builtin();
        let mut seen = std::collections::HashSet::new();
        for r in registry.resources() {
            assert!(seen.insert((r.group, r.version, r.plural)), "{r:?} twice");
        }
    }

    #[test]
    fn short_names_are_unique_except_for_the_same_resource() {
        let registry = Registry::builtin();
        let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for r in registry.resources() {
            for short in r.short_names {
                let previous = seen.insert(short, r.plural);
                assert!(
                    previous.is_none_or(|p| p == r.plural),
                    "{short} names two resources"
                );
            }
        }
    }

    #[test]
    fn groups_list_the_preferred_version_first() {
        let registry = Registry::builtin();
        let autoscaling = registry
            .groups()
            .into_iter()
            .find(|g| g.name == "autoscaling");
        assert_eq!(autoscaling.map(|g| g.versions), Some(vec!["v2", "v1"]));
        assert!(registry.groups().iter().all(|g| !g.name.is_empty()));
    }

    #[test]
    fn workloads_have_status_and_scale() {
        let registry = Registry::builtin();
        let subs = |g, p| {
            registry
                .find(g, "v1", p)
                .map(|r| r.subresources.iter().map(|s| s.name).collect::<Vec<_>>())
        };
        assert_eq!(subs("apps", "deployments"), Some(vec!["status", "scale"]));
        assert_eq!(
            subs("", "pods"),
            Some(vec!["status", "binding", "eviction"])
        );
        assert_eq!(subs("", "namespaces"), Some(vec!["status", "finalize"]));
        assert_eq!(subs("", "configmaps"), Some(vec![]));
    }

    #[test]
    fn names_read_as_kubernetes_writes_them() {
        let registry = Registry::builtin();
        let deploy = registry
            .find("apps", "v1", "deployments")
            .expect("deployments");
        assert_eq!(deploy.qualified_name(), "deployments.apps");
        assert_eq!(deploy.group_version(), "apps/v1");
        assert_eq!(deploy.singular(), "deployment");
        let pods = registry.find("", "v1", "pods").expect("pods");
        assert_eq!(
            (
                pods.qualified_name().as_str(),
                pods.group_version().as_str()
            ),
            ("pods", "v1")
        );
    }
}
