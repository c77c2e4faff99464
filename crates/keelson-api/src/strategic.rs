//! Strategic merge patch, as kubectl sends it for built-in kinds.
//!
//! Like a JSON merge patch (maps merge recursively, `null` deletes a key), except lists:
//! a list whose Kubernetes type declares a merge key (`containers` by `name`, container
//! `ports` by `containerPort`, …) merges element by element; a list of primitives declared
//! mergeable (`finalizers`) is a set union; every other list is replaced. Directives:
//!
//! * `"$patch": "replace"` in a map replaces the whole map; `"$patch": "delete"` deletes it;
//!   in a list element, `delete` removes the element with that key and a bare
//!   `{"$patch": "replace"}` makes the list replace the original;
//! * `"$retainKeys": [..]` keeps only those keys of the merged map;
//! * `"$setElementOrder/<list>": [..]` orders a merged list;
//! * `"$deleteFromPrimitiveList/<list>": [..]` removes values from a primitive list.
//!
//! The merge keys come from the Go struct tags of the Kubernetes API types
//! (`patchMergeKey`, `patchStrategy`), reduced to the lists the built-in kinds have.

use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// Elements are maps identified by this key.
    ByKey(&'static str),
    /// A set of primitives.
    Union,
    /// The patch's list replaces the original.
    Replace,
}

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The same merge rules as [`strategy`], keyed the way the OpenAPI schemas are: (schema
/// definition, an example kind and path where it appears, list property, merge key — `None`
/// for a set of primitives). A test keeps the two in agreement.
pub struct SchemaMergeKey {
    pub definition: &'static str,
    pub kind: &'static str,
    pub path: &'static [&'static str],
    pub property: &'static str,
    pub key: Option<&'static str>,
}

const fn mk(
    definition: &'static str,
    kind: &'static str,
    path: &'static [&'static str],
    property: &'static str,
    key: Option<&'static str>,
) -> SchemaMergeKey {
    SchemaMergeKey {
        definition,
        kind,
        path,
        property,
        key,
    }
}

pub const SCHEMA_MERGE_KEYS: &[SchemaMergeKey] = &[
    mk(
        "io.k8s.api.core.v1.PodSpec",
        "Pod",
        &["spec"],
        "containers",
        Some("name"),
    ),
    mk(
        "io.k8s.api.core.v1.PodSpec",
        "Pod",
        &["spec"],
        "initContainers",
        Some("name"),
    ),
    mk(
        "io.k8s.api.core.v1.PodSpec",
        "Pod",
        &["spec"],
        "ephemeralContainers",
        Some("name"),
    ),
    mk(
        "io.k8s.api.core.v1.PodSpec",
        "Pod",
        &["spec"],
        "volumes",
        Some("name"),
    ),
    mk(
        "io.k8s.api.core.v1.PodSpec",
        "Pod",
        &["spec"],
        "imagePullSecrets",
        Some("name"),
    ),
    mk(
        "io.k8s.api.core.v1.PodSpec",
        "Pod",
        &["spec"],
        "hostAliases",
        Some("ip"),
    ),
    mk(
        "io.k8s.api.core.v1.PodSpec",
        "Pod",
        &["spec"],
        "topologySpreadConstraints",
        Some("topologyKey"),
    ),
    mk(
        "io.k8s.api.core.v1.PodSpec",
        "Pod",
        &["spec"],
        "resourceClaims",
        Some("name"),
    ),
    mk(
        "io.k8s.api.core.v1.PodSpec",
        "Pod",
        &["spec"],
        "schedulingGates",
        Some("name"),
    ),
    mk(
        "io.k8s.api.core.v1.Container",
        "Pod",
        &["spec", "containers"],
        "ports",
        Some("containerPort"),
    ),
    mk(
        "io.k8s.api.core.v1.Container",
        "Pod",
        &["spec", "containers"],
        "env",
        Some("name"),
    ),
    mk(
        "io.k8s.api.core.v1.Container",
        "Pod",
        &["spec", "containers"],
        "volumeMounts",
        Some("mountPath"),
    ),
    mk(
        "io.k8s.api.core.v1.Container",
        "Pod",
        &["spec", "containers"],
        "volumeDevices",
        Some("devicePath"),
    ),
    mk(
        "io.k8s.api.core.v1.ServiceSpec",
        "Service",
        &["spec"],
        "ports",
        Some("port"),
    ),
    mk(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "Pod",
        &["metadata"],
        "ownerReferences",
        Some("uid"),
    ),
    mk(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "Pod",
        &["metadata"],
        "finalizers",
        None,
    ),
    mk(
        "io.k8s.api.core.v1.PodStatus",
        "Pod",
        &["status"],
        "conditions",
        Some("type"),
    ),
    mk(
        "io.k8s.api.core.v1.NodeStatus",
        "Node",
        &["status"],
        "conditions",
        Some("type"),
    ),
    mk(
        "io.k8s.api.core.v1.NodeStatus",
        "Node",
        &["status"],
        "addresses",
        Some("type"),
    ),
    mk(
        "io.k8s.api.apps.v1.DeploymentStatus",
        "Deployment",
        &["status"],
        "conditions",
        Some("type"),
    ),
];

/// The strategy of list `field` inside the object reached by `path` (field names from the
/// root, list elements skipped), for objects of `kind`.
pub(crate) fn strategy(kind: &str, path: &[String], field: &str) -> ListStrategy {
    let parent = path.last().map(String::as_str);
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::ByKey("name"),
        "volumeMounts" => ListStrategy::ByKey("mountPath"),
        "volumeDevices" => ListStrategy::ByKey("devicePath"),
        "hostAliases" => ListStrategy::ByKey("ip"),
        "topologySpreadConstraints" => ListStrategy::ByKey("topologyKey"),
        "ports" if parent.is_some_and(|p| CONTAINER_LISTS.contains(&p)) => {
            ListStrategy::ByKey("containerPort")
        }
        "ports" if kind == "Service" && path == ["spec"] => ListStrategy::ByKey("port"),
        "ownerReferences" if parent == Some("metadata") => ListStrategy::ByKey("uid"),
        "finalizers" if parent == Some("metadata") => ListStrategy::Union,
        "conditions" if parent == Some("status") => ListStrategy::ByKey("type"),
        "addresses" if kind == "Node" && parent == Some("status") => ListStrategy::ByKey("type"),
        _ => ListStrategy::Replace,
    }
}

/// Why a patch could not be applied; shown to the user as a bad request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchError(pub String);

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Applies `patch` to `original`, an object of `kind`.
pub fn apply(kind: &str, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    match merge_map(kind, &mut Vec::new(), original, patch)? {
        Some(map) => Ok(Value::Object(map)),
        None => Err(PatchError("a patch cannot delete the whole object".into())),
    }
}

/// Merges `patch` into `original`; `None` when the patch deletes the map.
fn merge_map(
    kind: &str,
    path: &mut Vec<String>,
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut replacement = patch.clone();
            replacement.remove("$patch");
            return Ok(Some(strip_directives(replacement)));
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError(format!("unknown patch type {other:?}"))),
    }
    let mut orders: Vec<(&str, &Vec<Value>)> = Vec::new();
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            let order = value
                .as_array()
                .ok_or_else(|| PatchError(format!("{key} must be a list")))?;
            orders.push((field, order));
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let doomed = value
                .as_array()
                .ok_or_else(|| PatchError(format!("{key} must be a list")))?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !doomed.contains(v));
            }
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let merged = match (original.remove(key), value) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                path.push(key.clone());
                let merged = merge_map(kind, path, old, new)?;
                path.pop();
                merged.map(Value::Object)
            }
            (old, Value::Array(new)) => {
                let old = match old {
                    Some(Value::Array(old)) => old,
                    _ => Vec::new(),
                };
                Some(Value::Array(merge_list(kind, path, key, old, new)?))
            }
            (_, Value::Object(new)) => {
                // Nothing to merge into: the patch's map, without directives.
                merge_map(kind, path, Map::new(), new)?.map(Value::Object)
            }
            (_, new) => Some(new.clone()),
        };
        if let Some(merged) = merged {
            original.insert(key.clone(), merged);
        }
    }
    for (field, order) in orders {
        if let (Some(Value::Array(list)), ListStrategy::ByKey(merge_key)) =
            (original.get_mut(field), strategy(kind, path, field))
        {
            reorder(list, order, merge_key);
        }
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        original.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(Some(original))
}

fn merge_list(
    kind: &str,
    path: &mut Vec<String>,
    field: &str,
    original: Vec<Value>,
    patch: &[Value],
) -> Result<Vec<Value>, PatchError> {
    match strategy(kind, path, field) {
        ListStrategy::Replace => Ok(patch.iter().map(|v| strip_value(v.clone())).collect()),
        ListStrategy::Union => {
            let mut merged = original;
            for value in patch {
                if !merged.contains(value) {
                    merged.push(value.clone());
                }
            }
            Ok(merged)
        }
        ListStrategy::ByKey(merge_key) => {
            let replace = patch.iter().any(|item| {
                item.get("$patch").and_then(Value::as_str) == Some("replace")
                    && item.as_object().is_some_and(|m| m.len() == 1)
            });
            if replace {
                return Ok(patch
                    .iter()
                    .filter(|item| item.get("$patch").is_none())
                    .map(|v| strip_value(v.clone()))
                    .collect());
            }
            let mut merged = original;
            path.push(field.to_owned());
            for item in patch {
                let Value::Object(item) = item else {
                    return Err(PatchError(format!("elements of {field} must be objects")));
                };
                let key = item.get(merge_key).ok_or_else(|| {
                    PatchError(format!(
                        "map: {item:?} does not contain declared merge key: {merge_key}"
                    ))
                })?;
                let position = merged.iter().position(|m| m.get(merge_key) == Some(key));
                if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(i) = position {
                        merged.remove(i);
                    }
                    continue;
                }
                match position {
                    Some(i) => {
                        let old = match merged[i].take() {
                            Value::Object(old) => old,
                            _ => Map::new(),
                        };
                        match merge_map(kind, path, old, item)? {
                            Some(new) => merged[i] = Value::Object(new),
                            None => {
                                merged.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(new) = merge_map(kind, path, Map::new(), item)? {
                            merged.push(Value::Object(new));
                        }
                    }
                }
            }
            path.pop();
            Ok(merged)
        }
    }
}

/// Puts the elements named in `order` first, in that order; the others keep theirs, after.
fn reorder(list: &mut Vec<Value>, order: &[Value], merge_key: &str) {
    let mut rest = std::mem::take(list);
    for wanted in order {
        if let Some(key) = wanted.get(merge_key)
            && let Some(i) = rest.iter().position(|v| v.get(merge_key) == Some(key))
        {
            list.push(rest.remove(i));
        }
    }
    list.extend(rest);
}

fn strip_value(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip_directives(map)),
        other => other,
    }
}

/// Removes directive keys (which never belong in an object), recursively.
fn strip_directives(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| {
            let v = match v {
                Value::Object(m) => Value::Object(strip_directives(m)),
                Value::Array(items) => Value::Array(items.into_iter().map(strip_value).collect()),
                other => other,
            };
            (k, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a"]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1", "ports": [{"containerPort": 80}, {"containerPort": 443}], "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "busybox"}
            ]}}}
        })
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let patched = apply(
            "Deployment",
            &deployment(),
            &json!({"metadata": {"labels": {"tier": null, "new": "x"}}, "spec": {"replicas": 3}}),
        )
        .expect("patch");
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"app": "web", "new": "x"})
        );
        assert_eq!(patched["spec"]["replicas"], 3);
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][1]["name"], "sidecar",
            "untouched parts stay"
        );
    }

    #[test]
    fn set_image_merges_containers_by_name() {
        // What `kubectl set image deployment/web app=nginx:2` sends.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"name": "app", "image": "nginx:2"}]
        }}}});
        let patched = apply("Deployment", &deployment(), &patch).expect("patch");
        let containers = &patched["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(
            containers[0]["ports"].as_array().map(Vec::len),
            Some(2),
            "other fields of the element stay"
        );
        assert_eq!(containers[1]["image"], "busybox");
        assert!(
            patched.to_string().find('$').is_none(),
            "no directive is stored"
        );
    }

    #[test]
    fn nested_lists_merge_by_their_own_keys() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "ports": [{"containerPort": 8080}], "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "x"}]},
            {"name": "new", "image": "redis"}
        ]}}}});
        let patched = apply("Deployment", &deployment(), &patch).expect("patch");
        let app = &patched["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            app["ports"],
            json!([{"containerPort": 80}, {"containerPort": 443}, {"containerPort": 8080}])
        );
        assert_eq!(
            app["env"],
            json!([{"name": "A", "value": "2"}, {"name": "B", "value": "x"}])
        );
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][2]["name"],
            "new"
        );
    }

    #[test]
    fn delete_and_replace_directives() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}});
        let patched = apply("Deployment", &deployment(), &patch).expect("patch");
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );

        let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}});
        let patched = apply("Deployment", &deployment(), &patch).expect("patch");
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );

        let patch = json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}});
        let patched = apply("Deployment", &deployment(), &patch).expect("patch");
        assert_eq!(patched["metadata"]["labels"], json!({"only": "this"}));

        let patch = json!({"spec": {"template": {"$patch": "delete"}}});
        let patched = apply("Deployment", &deployment(), &patch).expect("patch");
        assert!(patched["spec"].get("template").is_none());
    }

    #[test]
    fn primitive_lists_union_or_replace() {
        let patched = apply(
            "Deployment",
            &deployment(),
            &json!({"metadata": {"finalizers": ["b", "a"]}}),
        )
        .expect("patch");
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "b"]));
        let patched = apply(
            "Deployment",
            &patched,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .expect("patch");
        assert_eq!(patched["metadata"]["finalizers"], json!(["b"]));
        let pod = json!({"spec": {"containers": [{"name": "c", "args": ["a", "b"]}]}});
        let patched = apply(
            "Pod",
            &pod,
            &json!({"spec": {"containers": [{"name": "c", "args": ["z"]}]}}),
        )
        .expect("patch");
        assert_eq!(
            patched["spec"]["containers"][0]["args"],
            json!(["z"]),
            "args replace"
        );
    }

    #[test]
    fn service_ports_merge_by_port_and_retain_keys_prunes() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}], "type": "ClusterIP", "clusterIP": "10.0.0.1"}});
        let patched = apply(
            "Service",
            &svc,
            &json!({"spec": {"ports": [{"port": 443, "name": "https"}]}}),
        )
        .expect("patch");
        assert_eq!(patched["spec"]["ports"].as_array().map(Vec::len), Some(2));
        let patched = apply(
            "Service",
            &svc,
            &json!({"spec": {"$retainKeys": ["ports", "type"], "type": "NodePort"}}),
        )
        .expect("patch");
        assert!(patched["spec"].get("clusterIP").is_none());
        assert_eq!(patched["spec"]["type"], "NodePort");
    }

    #[test]
    fn schema_table_agrees_with_the_merge_rules() {
        for entry in SCHEMA_MERGE_KEYS {
            let path: Vec<String> = entry.path.iter().map(|p| p.to_string()).collect();
            let expected = match entry.key {
                Some(key) => ListStrategy::ByKey(key),
                None => ListStrategy::Union,
            };
            let what = format!("{}.{}", entry.definition, entry.property);
            assert_eq!(
                strategy(entry.kind, &path, entry.property),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn malformed_patches_are_errors() {
        assert!(apply("Pod", &json!({}), &json!([1])).is_err());
        assert!(
            apply(
                "Pod",
                &json!({"spec": {"containers": []}}),
                &json!({"spec": {"containers": [{"image": "x"}]}})
            )
            .is_err(),
            "merge key missing"
        );
        assert!(apply("Pod", &json!({}), &json!({"$patch": "delete"})).is_err());
        assert!(apply("Pod", &json!({}), &json!({"spec": {"$patch": "sideways"}})).is_err());
    }
}
