//! From a URL to what it names: resource, namespace, object, subresource.

use keelson_api::{Registry, Resource};

use crate::status::ApiError;

/// What a resource URL addresses.
#[derive(Clone, Debug)]
pub struct Target {
    pub resource: Resource,
    /// The namespace in the URL (`/namespaces/{ns}/...`), for namespaced resources.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// Resolves the segments after `/api/v1/` or `/apis/{group}/{version}/`.
    pub fn resolve(
        registry: &Registry,
        group: &str,
        version: &str,
        rest: &[&str],
    ) -> Result<Self, ApiError> {
        let find = |plural: &str| registry.find(group, version, plural).cloned();
        if let ["namespaces", namespace, plural, tail @ ..] = rest
            && let Some(resource) = find(plural).filter(|r| r.namespaced())
        {
            if tail.len() > 2 || namespace.is_empty() {
                return Err(ApiError::no_such_path());
            }
            return Ok(Target {
                resource,
                namespace: Some((*namespace).to_owned()),
                name: tail.first().map(|s| (*s).to_owned()),
                subresource: tail.get(1).map(|s| (*s).to_owned()),
            });
        }
        let [plural, tail @ ..] = rest else {
            return Err(ApiError::no_such_path());
        };
        let resource = find(plural).ok_or_else(ApiError::no_such_path)?;
        // A namespaced resource without a namespace is only its all-namespaces collection.
        if tail.len() > 2 || (resource.namespaced() && !tail.is_empty()) {
            return Err(ApiError::no_such_path());
        }
        Ok(Target {
            resource,
            namespace: None,
            name: tail.first().map(|s| (*s).to_owned()),
            subresource: tail.get(1).map(|s| (*s).to_owned()),
        })
    }

    /// The store prefix of the collection this target lists: one namespace, or all.
    pub fn collection_prefix(&self) -> String {
        let base = resource_prefix(&self.resource);
        match &self.namespace {
            Some(ns) => format!("{base}{ns}/"),
            None => base,
        }
    }

    /// The store key of the object `name` in this target's namespace.
    pub fn key(&self, name: &str) -> String {
        object_key(&self.resource, self.namespace.as_deref(), name)
    }
}

/// `/registry/{group}/{plural}/`, with `core` for the core group (and for `events.k8s.io`).
pub fn resource_prefix(resource: &Resource) -> String {
    // `events.k8s.io` Events are core Events in another form: one store for both.
    let group = if resource.group.is_empty() || resource.group == "events.k8s.io" {
        "core"
    } else {
        resource.group
    };
    format!("/registry/{group}/{}/", resource.plural)
}

/// The store key of an object.
pub fn object_key(resource: &Resource, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{}{ns}/{name}", resource_prefix(resource)),
        None => format!("{}{name}", resource_prefix(resource)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(group: &str, path: &str) -> Result<Target, ApiError> {
        let segments: Vec<&str> = path.split('/').collect();
        Target::resolve(&Registry::builtin(), group, "v1", &segments)
    }

    #[test]
    fn namespaced_and_cluster_paths() {
        let t = resolve("", "namespaces/default/configmaps/x").expect("object");
        assert_eq!(
            (t.resource.plural, t.namespace.as_deref(), t.name.as_deref()),
            ("configmaps", Some("default"), Some("x"))
        );
        assert_eq!(t.key("x"), "/registry/core/configmaps/default/x");
        let t = resolve("", "namespaces/default").expect("a namespace");
        assert_eq!(
            (t.resource.plural, t.namespace, t.name.as_deref()),
            ("namespaces", None, Some("default"))
        );
        let t = resolve("", "namespaces/default/status").expect("namespace status");
        assert_eq!(
            (t.name.as_deref(), t.subresource.as_deref()),
            (Some("default"), Some("status"))
        );
        let t = resolve("", "pods").expect("all pods");
        assert_eq!(t.collection_prefix(), "/registry/core/pods/");
        assert_eq!((t.namespace, t.name), (None, None));
        let t = resolve("apps", "namespaces/ns/deployments/web/scale").expect("scale");
        assert_eq!(t.subresource.as_deref(), Some("scale"));
        assert_eq!(t.key("web"), "/registry/apps/deployments/ns/web");
    }

    #[test]
    fn unknown_or_malformed_paths_are_not_found() {
        for path in [
            "widgets",
            "pods/x",
            "namespaces/default/widgets/x",
            "namespaces/default/configmaps/x/y/z",
            "",
        ] {
            assert!(resolve("", path).is_err(), "{path}");
        }
    }
}
