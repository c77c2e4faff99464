//! Server-side apply (`application/apply-patch+yaml`): merge an applier's configuration into
//! the live object and record what it owns in `metadata.managedFields`.
//!
//! Field sets are kept in Kubernetes' `FieldsV1` form: a tree whose keys are `f:<field>`,
//! `k:<merge key as JSON>` (an element of a list keyed by a merge key), `v:<value as JSON>`
//! (an element of a set of primitives) and `.` (the element itself). Applying:
//!
//! 1. the configuration's field set is computed (lists by their strategic merge rules);
//! 2. fields it sets that another applier owns with a different live value are conflicts
//!    (409), unless forced, which moves their ownership;
//! 3. the configuration is merged into the live object (maps recursively, keyed lists by
//!    key, sets by value, other lists whole);
//! 4. fields this applier set last time, sets no longer, and nobody else owns are removed;
//! 5. the applier's `managedFields` entry becomes the new set.

use serde_json::{Map, Value, json};

use crate::strategic::{self, ListStrategy};

/// A field another manager owns with a different value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    /// `.spec.replicas`, `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    Conflicts(Vec<Conflict>),
    Invalid(String),
}

/// Who applies, and how.
pub struct Applier<'a> {
    pub manager: &'a str,
    /// The group-version the configuration is written in.
    pub api_version: &'a str,
    pub force: bool,
    /// RFC 3339 time for the `managedFields` entry.
    pub time: &'a str,
}

/// Fields the server owns: never part of an applier's set.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The live object after `applier` applies `config` (`live` is `None` when it does not
/// exist yet).
pub fn apply(
    kind: &str,
    live: Option<&Value>,
    config: &Value,
    applier: &Applier,
) -> Result<Value, ApplyError> {
    let Value::Object(_) = config else {
        return Err(ApplyError::Invalid(
            "the applied configuration must be an object".into(),
        ));
    };
    let config = without_nulls(config);
    let new_set = field_set(kind, &config);
    let live = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries: Vec<Value> = live["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mine = |e: &Value| e["manager"] == applier.manager && e["operation"] == "Apply";
    let previous = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or_else(|| json!({}));

    // Conflicts: leaves of the new set that another manager owns, with another value.
    let mut conflicts = Vec::new();
    for leaf in leaves(&new_set) {
        for entry in entries.iter_mut().filter(|e| !mine(e)) {
            if !owns_leaf(&entry["fieldsV1"], &leaf) {
                continue;
            }
            if lookup(&live, &leaf) == lookup(&config, &leaf) {
                continue;
            }
            if applier.force {
                remove_from_set(&mut entry["fieldsV1"], &leaf);
            } else {
                conflicts.push(Conflict {
                    manager: entry["manager"].as_str().unwrap_or_default().to_owned(),
                    api_version: entry["apiVersion"].as_str().unwrap_or_default().to_owned(),
                    field: describe(&leaf),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }

    let mut merged =
        strategic::apply(kind, &live, &config).map_err(|e| ApplyError::Invalid(e.to_string()))?;
    // What this applier no longer sets, and nobody else owns, goes.
    let mut dropped = difference(&previous, &new_set);
    for entry in entries.iter().filter(|e| !mine(e)) {
        dropped = difference(&dropped, &entry["fieldsV1"]);
    }
    remove_fields(&mut merged, &dropped);

    let entry = json!({
        "manager": applier.manager,
        "operation": "Apply",
        "apiVersion": applier.api_version,
        "time": applier.time,
        "fieldsType": "FieldsV1",
        "fieldsV1": new_set,
    });
    match entries.iter().position(mine) {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    entries.retain(|e| e["fieldsV1"].as_object().is_some_and(|m| !m.is_empty()));
    merged["metadata"]["managedFields"] = Value::Array(entries);
    Ok(merged)
}

/// `config` without `null` values (an applier's `null` means "not set").
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The `FieldsV1` set of everything `object` sets.
pub fn field_set(kind: &str, object: &Value) -> Value {
    let mut set = Map::new();
    if let Value::Object(map) = object {
        for (key, value) in map {
            if key == "apiVersion" || key == "kind" || key == "status" {
                continue;
            }
            if key == "metadata" {
                let Value::Object(meta) = value else { continue };
                let kept: Map<String, Value> = meta
                    .iter()
                    .filter(|(k, _)| !SERVER_METADATA.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !kept.is_empty() {
                    let mut path = vec!["metadata".to_owned()];
                    set.insert("f:metadata".into(), map_set(kind, &mut path, &kept));
                }
                continue;
            }
            let mut path = Vec::new();
            set.insert(format!("f:{key}"), value_set(kind, &mut path, key, value));
        }
    }
    Value::Object(set)
}

fn map_set(kind: &str, path: &mut Vec<String>, map: &Map<String, Value>) -> Value {
    let mut set = Map::new();
    for (key, value) in map {
        set.insert(format!("f:{key}"), value_set(kind, path, key, value));
    }
    Value::Object(set)
}

/// The set under field `key` holding `value`, inside the object at `path`.
fn value_set(kind: &str, path: &mut Vec<String>, key: &str, value: &Value) -> Value {
    match value {
        Value::Object(map) if !map.is_empty() => {
            path.push(key.to_owned());
            let set = map_set(kind, path, map);
            path.pop();
            set
        }
        Value::Array(items) => match strategic::strategy(kind, path, key) {
            ListStrategy::ByKey(merge_key) => {
                path.push(key.to_owned());
                let mut set = Map::new();
                for item in items {
                    let Value::Object(element) = item else {
                        continue;
                    };
                    let id =
                        json!({merge_key: element.get(merge_key).cloned().unwrap_or(Value::Null)});
                    let mut node = match map_set(kind, path, element) {
                        Value::Object(node) => node,
                        _ => Map::new(),
                    };
                    node.insert(".".into(), json!({}));
                    set.insert(format!("k:{id}"), Value::Object(node));
                }
                path.pop();
                Value::Object(set)
            }
            ListStrategy::Union => Value::Object(
                items
                    .iter()
                    .map(|item| (format!("v:{item}"), json!({})))
                    .collect(),
            ),
            ListStrategy::Replace => json!({}),
        },
        _ => json!({}),
    }
}

/// Every leaf of a set, as the keys leading to it (an element's `.` is a leaf of its own).
fn leaves(set: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    collect_leaves(set, &mut Vec::new(), &mut out);
    out
}

fn collect_leaves(set: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match set.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                collect_leaves(child, path, out);
                path.pop();
            }
        }
        _ if !path.is_empty() => out.push(path.clone()),
        _ => {}
    }
}

/// Whether `set` owns exactly the leaf at `path` (not merely something below it).
fn owns_leaf(set: &Value, path: &[String]) -> bool {
    let mut node = set;
    for key in path {
        match node.get(key) {
            Some(next) => node = next,
            None => return false,
        }
    }
    node.as_object().is_none_or(Map::is_empty)
}

fn remove_from_set(set: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = set;
    for key in parents {
        match node.get_mut(key) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}

/// The keys of `a` not in `b` (leaves of `a` that `b` does not reach).
fn difference(a: &Value, b: &Value) -> Value {
    let Some(a_map) = a.as_object() else {
        return json!({});
    };
    let mut out = Map::new();
    for (key, child) in a_map {
        match b.get(key) {
            None => {
                out.insert(key.clone(), child.clone());
            }
            Some(other) => {
                let rest = difference(child, other);
                if rest.as_object().is_some_and(|m| !m.is_empty()) {
                    out.insert(key.clone(), rest);
                }
            }
        }
    }
    Value::Object(out)
}

/// The element of `list` a `k:`/`v:` key names.
fn find_element(list: &[Value], key: &str) -> Option<usize> {
    if let Some(id) = key.strip_prefix("k:") {
        let id: Value = serde_json::from_str(id).ok()?;
        let id = id.as_object()?;
        list.iter()
            .position(|item| id.iter().all(|(k, v)| item.get(k) == Some(v)))
    } else if let Some(value) = key.strip_prefix("v:") {
        let value: Value = serde_json::from_str(value).ok()?;
        list.iter().position(|item| *item == value)
    } else {
        None
    }
}

/// The value a set path reaches in `object`.
fn lookup<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = object;
    for key in path {
        node = if key == "." {
            node
        } else if let Some(field) = key.strip_prefix("f:") {
            node.get(field)?
        } else {
            let list = node.as_array()?;
            &list[find_element(list, key)?]
        };
    }
    Some(node)
}

/// `.spec.template.spec.containers[name="web"].image`.
fn describe(path: &[String]) -> String {
    let mut out = String::new();
    for key in path {
        if let Some(field) = key.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(id) = key.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(id)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = key.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        }
    }
    out
}

/// Removes from `object` every field `set` reaches; maps emptied by it go too.
fn remove_fields(object: &mut Value, set: &Value) {
    let Some(set) = set.as_object() else { return };
    for (key, child) in set {
        let whole = child.as_object().is_none_or(|m| m.is_empty()) || child.get(".").is_some();
        if let Some(field) = key.strip_prefix("f:") {
            let Some(map) = object.as_object_mut() else {
                continue;
            };
            if whole {
                map.remove(field);
            } else if let Some(inner) = map.get_mut(field) {
                remove_fields(inner, child);
                if inner.as_object().is_some_and(|m| m.is_empty()) {
                    map.remove(field);
                }
            }
        } else if let Some(list) = object.as_array_mut()
            && let Some(index) = find_element(list, key)
        {
            if whole {
                list.remove(index);
            } else {
                remove_fields(&mut list[index], child);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applier(manager: &str, force: bool) -> Applier<'_> {
        Applier {
            manager,
            api_version: "apps/v1",
            force,
            time: "2026-01-01T00:00:00Z",
        }
    }

    fn deployment(replicas: i64, image: &str, extra_label: bool) -> Value {
        let mut labels = json!({"app": "web"});
        if extra_label {
            labels["tier"] = json!("front");
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": image}]}}}})
    }

    #[test]
    fn field_sets_follow_the_list_rules() {
        let set = field_set("Deployment", &deployment(2, "nginx", false));
        assert_eq!(set["f:metadata"], json!({"f:labels": {"f:app": {}}}));
        assert_eq!(
            set["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({"k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:image": {}}})
        );
        assert!(set.get("f:apiVersion").is_none());
        let with_finalizers = json!({"metadata": {"name": "x", "finalizers": ["a", "b"]}});
        assert_eq!(
            field_set("ConfigMap", &with_finalizers)["f:metadata"],
            json!({"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}})
        );
    }

    #[test]
    fn applying_creates_merges_and_removes_what_was_dropped() {
        let created = apply(
            "Deployment",
            None,
            &deployment(2, "nginx", true),
            &applier("a", false),
        )
        .expect("applies");
        assert_eq!(created["metadata"]["managedFields"][0]["manager"], "a");
        assert_eq!(created["metadata"]["labels"]["tier"], "front");
        // Someone else adds a label by hand (not through apply): it is kept.
        let mut live = created.clone();
        live["metadata"]["labels"]["owner"] = json!("ops");
        // The applier drops `tier` and changes the image.
        let again = apply(
            "Deployment",
            Some(&live),
            &deployment(2, "nginx:2", false),
            &applier("a", false),
        )
        .expect("applies");
        assert_eq!(
            again["metadata"]["labels"],
            json!({"app": "web", "owner": "ops"})
        );
        assert_eq!(
            again["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        assert_eq!(
            again["metadata"]["managedFields"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn other_appliers_conflict_unless_forced() {
        let live = apply(
            "Deployment",
            None,
            &deployment(2, "nginx", false),
            &applier("a", false),
        )
        .expect("applies");
        // Same value: shared ownership, no conflict.
        let shared = apply(
            "Deployment",
            Some(&live),
            &deployment(2, "nginx", false),
            &applier("b", false),
        )
        .expect("no conflict on equal values");
        assert_eq!(
            shared["metadata"]["managedFields"].as_array().map(Vec::len),
            Some(2)
        );
        let conflict = apply(
            "Deployment",
            Some(&shared),
            &deployment(5, "nginx", false),
            &applier("b", false),
        );
        assert_eq!(
            conflict,
            Err(ApplyError::Conflicts(vec![Conflict {
                manager: "a".into(),
                api_version: "apps/v1".into(),
                field: ".spec.replicas".into()
            }]))
        );
        let forced = apply(
            "Deployment",
            Some(&shared),
            &deployment(5, "nginx", false),
            &applier("b", true),
        )
        .expect("forced");
        assert_eq!(forced["spec"]["replicas"], 5);
        let a_set = &forced["metadata"]["managedFields"][0]["fieldsV1"];
        assert!(
            a_set["f:spec"].get("f:replicas").is_none(),
            "ownership moved: {a_set}"
        );
        // A field the other applier still owns is not removed when b drops it.
        let mut without_labels = deployment(5, "nginx", false);
        without_labels["metadata"]["labels"] = json!({});
        let after = apply(
            "Deployment",
            Some(&forced),
            &without_labels,
            &applier("b", false),
        )
        .expect("applies");
        assert_eq!(after["metadata"]["labels"]["app"], "web", "a still owns it");
    }
}
