//! Which part of an object a write may change: the object itself (not its status, when
//! the kind has a status subresource), only `status` (`/status`), only `spec.replicas`
//! through an `autoscaling/v1` `Scale` (`/scale`), or only a namespace's
//! `spec.finalizers` (`/finalize`).

use keelson_api::Resource;
use serde_json::{Value, json};

use super::object::bad_request;
use super::target::Target;
use crate::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
    Scale,
    Finalize,
}

pub fn has_subresource(resource: &Resource, name: &str) -> bool {
    resource.subresources.iter().any(|s| s.name == name)
}

impl Part {
    /// The part a request addresses; `None` for a subresource this kind does not have.
    pub fn of(target: &Target) -> Option<Part> {
        match target.subresource.as_deref() {
            None => Some(Part::Main),
            Some("status") if has_subresource(&target.resource, "status") => Some(Part::Status),
            Some("scale") if has_subresource(&target.resource, "scale") => Some(Part::Scale),
            Some("finalize") if has_subresource(&target.resource, "finalize") => {
                Some(Part::Finalize)
            }
            Some(_) => None,
        }
    }

    /// What a client reads and writes through this part.
    pub fn view(self, object: &Value) -> Value {
        match self {
            Part::Main | Part::Status | Part::Finalize => object.clone(),
            Part::Scale => scale(object),
        }
    }

    /// The object after a write of `new_view` to this part of `old`.
    pub fn fold(
        self,
        resource: &Resource,
        old: &Value,
        new_view: Value,
    ) -> Result<Value, ApiError> {
        match self {
            Part::Main => {
                let mut new = new_view;
                if has_subresource(resource, "status") {
                    replace_field(&mut new, "status", old.get("status"));
                }
                Ok(new)
            }
            Part::Status => {
                let mut new = old.clone();
                replace_field(&mut new, "status", new_view.get("status"));
                Ok(new)
            }
            Part::Finalize => {
                let mut new = old.clone();
                let finalizers = new_view["spec"].get("finalizers").cloned();
                if let Some(spec) = new.as_object_mut().map(|o| {
                    o.entry("spec")
                        .or_insert_with(|| Value::Object(Default::default()))
                }) {
                    replace_field(spec, "finalizers", finalizers.as_ref());
                }
                Ok(new)
            }
            Part::Scale => {
                if let Some(kind) = new_view
                    .get("kind")
                    .and_then(Value::as_str)
                    .filter(|k| *k != "Scale")
                {
                    return Err(bad_request(format!(
                        "the body of a scale request must be a Scale, not a {kind}"
                    )));
                }
                let replicas = new_view["spec"]["replicas"].as_i64().unwrap_or(0);
                if replicas < 0 {
                    return Err(bad_request(format!(
                        "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
                    )));
                }
                let mut new = old.clone();
                new["spec"]["replicas"] = json!(replicas);
                // A scale write may carry its own resourceVersion precondition.
                new["metadata"]["resourceVersion"] =
                    new_view["metadata"]["resourceVersion"].clone();
                Ok(new)
            }
        }
    }
}

fn replace_field(object: &mut Value, field: &str, value: Option<&Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(v) => {
                map.insert(field.to_owned(), v.clone());
            }
            None => {
                map.remove(field);
            }
        }
    }
}

/// A label selector as the string `Scale.status.selector` carries.
fn selector_string(selector: &Value) -> String {
    let mut terms: Vec<String> = Vec::new();
    // ReplicationControllers select with a plain map; the others with a LabelSelector.
    let labels = selector
        .get("matchLabels")
        .or(if selector.get("matchExpressions").is_none() {
            Some(selector)
        } else {
            None
        });
    if let Some(Value::Object(labels)) = labels {
        terms.extend(
            labels
                .iter()
                .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?))),
        );
    }
    for expression in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expression["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match expression["operator"].as_str() {
            Some("In") => terms.push(format!("{key} in ({})", values.join(","))),
            Some("NotIn") => terms.push(format!("{key} notin ({})", values.join(","))),
            Some("Exists") => terms.push(key.to_owned()),
            Some("DoesNotExist") => terms.push(format!("!{key}")),
            _ => {}
        }
    }
    terms.join(",")
}

/// The `autoscaling/v1` `Scale` of an object with `spec.replicas`.
pub fn scale(object: &Value) -> Value {
    let metadata = &object["metadata"];
    let mut scale_metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = metadata.get(field) {
            scale_metadata[field] = value.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_metadata,
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": object["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector_string(&object["spec"]["selector"]),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_views_carry_replicas_and_a_selector_string() {
        let deploy = json!({"metadata": {"name": "web", "namespace": "default", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
            "status": {"replicas": 2}});
        let scale = scale(&deploy);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(
            scale["status"],
            json!({"replicas": 2, "selector": "app=web,tier in (a,b)"})
        );
        assert_eq!(scale["metadata"]["resourceVersion"], "7");
        assert!(scale["metadata"].get("labels").is_none());
        let rc = json!({"metadata": {"name": "rc"}, "spec": {"replicas": 1, "selector": {"app": "old"}}});
        assert_eq!(super::scale(&rc)["status"]["selector"], "app=old");
    }
}
