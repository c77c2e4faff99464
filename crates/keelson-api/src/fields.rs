//! Field selectors (`fieldSelector=`): `path=value`, `path==value`, `path!=value`, joined by
//! commas, over the fields each kind allows (as kube-apiserver does: an unsupported field is
//! an error, not an empty result).

use serde_json::Value;

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    pub path: String,
    pub value: String,
    pub negated: bool,
}

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub terms: Vec<FieldTerm>,
}

/// The fields `kind` may be selected by, besides `metadata.name` and `metadata.namespace`.
fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Secret" => &["type"],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "ReplicaSet" | "ReplicationController" => &["status.replicas"],
        "Job" => &["status.successful"],
        _ => &[],
    }
}

/// The value of `path` in `object` as a field selector compares it (`""` when absent;
/// booleans and numbers as text).
fn field_value(object: &Value, path: &str) -> String {
    // `source` on events is the component of `source`.
    let path = if path == "source" {
        "source.component"
    } else {
        path
    };
    let mut current = object;
    for part in path.split('.') {
        match current.get(part) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The selectable field values of one object, read once: the watch cache keeps them beside
/// each object, so matching a selector never re-reads the JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(Vec<(&'static str, String)>);

impl FieldSet {
    /// Every field a selector for `kind` may name, taken from `object`.
    pub fn of(kind: &str, object: &Value) -> Self {
        let paths = ["metadata.name", "metadata.namespace"]
            .iter()
            .chain(kind_fields(kind));
        FieldSet(paths.map(|p| (*p, field_value(object, p))).collect())
    }

    fn get(&self, path: &str) -> &str {
        self.0
            .iter()
            .find(|(p, _)| *p == path)
            .map_or("", |(_, v)| v.as_str())
    }
}

impl FieldSelector {
    /// Parses the selector for `kind`; the error names an unsupported field as kubectl
    /// shows it.
    pub fn parse(text: &str, kind: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, value, negated) = if let Some((p, v)) = part.split_once("!=") {
                (p, v, true)
            } else if let Some((p, v)) = part.split_once("==") {
                (p, v, false)
            } else if let Some((p, v)) = part.split_once('=') {
                (p, v, false)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                ));
            };
            let path = path.trim();
            if !matches!(path, "metadata.name" | "metadata.namespace")
                && !kind_fields(kind).contains(&path)
            {
                return Err(format!("field label not supported: {path}"));
            }
            terms.push(FieldTerm {
                path: path.to_owned(),
                value: value.trim().to_owned(),
                negated,
            });
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms
            .iter()
            .all(|t| (field_value(object, &t.path) == t.value) != t.negated)
    }

    /// Like [`FieldSelector::matches`], over values read beforehand.
    pub fn matches_set(&self, set: &FieldSet) -> bool {
        self.terms
            .iter()
            .all(|t| (set.get(&t.path) == t.value) != t.negated)
    }

    /// The name this selector pins (`metadata.name=x`), if any.
    pub fn exact_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.path == "metadata.name" && !t.negated)
            .map(|t| t.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_by_allowed_fields() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running"}});
        let s =
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending", "Pod").expect("valid");
        assert!(s.matches(&pod));
        assert!(
            !FieldSelector::parse("metadata.name=other", "Pod")
                .expect("valid")
                .matches(&pod)
        );
        assert!(
            FieldSelector::parse("spec.hostNetwork=true", "Pod")
                .expect("valid")
                .matches(&pod)
        );
        assert!(
            FieldSelector::parse("spec.nodeName=", "Pod")
                .expect("valid")
                .matches(&json!({"metadata": {}}))
        );
        assert_eq!(
            FieldSelector::parse("metadata.name==web", "Pod")
                .expect("valid")
                .exact_name(),
            Some("web")
        );
    }

    #[test]
    fn field_sets_match_like_the_object() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running"}});
        let set = FieldSet::of("Pod", &pod);
        for text in [
            "spec.nodeName=n1,status.phase!=Pending",
            "metadata.name=other",
            "spec.hostNetwork=true",
            "metadata.namespace=default,spec.nodeName=",
            "status.podIP=",
        ] {
            let selector = FieldSelector::parse(text, "Pod").expect("valid");
            assert_eq!(selector.matches_set(&set), selector.matches(&pod), "{text}");
        }
    }

    #[test]
    fn unsupported_fields_are_errors() {
        assert_eq!(
            FieldSelector::parse("spec.foo=1", "Pod"),
            Err("field label not supported: spec.foo".to_owned())
        );
        assert!(FieldSelector::parse("spec.nodeName=x", "ConfigMap").is_err());
        assert!(FieldSelector::parse("nonsense", "Pod").is_err());
    }
}
