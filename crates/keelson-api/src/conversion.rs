//! Versions that share one stored form, and the conversions between them, as kube-apiserver
//! keeps them: `autoscaling/v1` HorizontalPodAutoscalers are stored as `autoscaling/v2`
//! (what v1 cannot say travels in `autoscaling.alpha.kubernetes.io/*` annotations), and
//! `events.k8s.io/v1` Events are stored as core `v1` Events.
//!
//! [`to_storage`] runs on what a client sends, [`from_storage`] on what it gets back.

use serde_json::{Map, Value, json};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// Which conversion a served version needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    HpaV1,
    EventsV1,
}

impl Conversion {
    /// The conversion between the version clients use and the stored form, if any.
    pub fn of(group: &str, version: &str, kind: &str) -> Option<Self> {
        match (group, version, kind) {
            ("autoscaling", "v1", "HorizontalPodAutoscaler") => Some(Conversion::HpaV1),
            ("events.k8s.io", "v1", "Event") => Some(Conversion::EventsV1),
            _ => None,
        }
    }
}

/// The stored form of an object a client sent in a converted version.
pub fn to_storage(conversion: Conversion, object: &mut Value) {
    match conversion {
        Conversion::HpaV1 => hpa_v1_to_v2(object),
        Conversion::EventsV1 => event_rename(object, EVENT_FIELDS, true),
    }
}

/// An object as a client of a converted version sees it.
pub fn from_storage(conversion: Conversion, object: &mut Value) {
    match conversion {
        Conversion::HpaV1 => hpa_v2_to_v1(object),
        Conversion::EventsV1 => event_rename(object, EVENT_FIELDS, false),
    }
}

fn annotations(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let metadata = object.get_mut("metadata")?.as_object_mut()?;
    metadata
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
}

fn take_annotation(object: &mut Value, key: &str) -> Option<Value> {
    let annotations = object
        .get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()?;
    let text = annotations.remove(key)?;
    if annotations.is_empty()
        && let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        metadata.remove("annotations");
    }
    serde_json::from_str(text.as_str()?).ok()
}

fn is_cpu_utilization(metric: &Value) -> bool {
    metric["type"] == "Resource"
        && metric["resource"]["name"] == "cpu"
        && metric["resource"]["target"]["type"] == "Utilization"
}

fn hpa_v1_to_v2(object: &mut Value) {
    object["apiVersion"] = json!("autoscaling/v2");
    let mut metrics = take_annotation(object, METRICS)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let spec = object
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .and_then(|spec| spec.remove("targetCPUUtilizationPercentage"));
    if let Some(target) = spec {
        metrics.insert(
            0,
            json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}),
        );
    }
    if !metrics.is_empty() {
        object["spec"]["metrics"] = Value::Array(metrics);
    }
    if let Some(behavior) = take_annotation(object, BEHAVIOR) {
        object["spec"]["behavior"] = behavior;
    }
    let mut current = take_annotation(object, CURRENT_METRICS)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let cpu = object
        .get_mut("status")
        .and_then(Value::as_object_mut)
        .and_then(|status| status.remove("currentCPUUtilizationPercentage"));
    if let Some(cpu) = cpu {
        current.insert(
            0,
            json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}),
        );
    }
    if !current.is_empty() {
        object["status"]["currentMetrics"] = Value::Array(current);
    }
    if let Some(conditions) = take_annotation(object, CONDITIONS) {
        object["status"]["conditions"] = conditions;
    }
}

fn hpa_v2_to_v1(object: &mut Value) {
    object["apiVersion"] = json!("autoscaling/v1");
    let metrics = object
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .and_then(|spec| spec.remove("metrics"))
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let (cpu, others): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_cpu_utilization);
    if let Some(cpu) = cpu.first() {
        object["spec"]["targetCPUUtilizationPercentage"] =
            cpu["resource"]["target"]["averageUtilization"].clone();
    }
    let behavior = object
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .and_then(|spec| spec.remove("behavior"));
    let status = object.get_mut("status").and_then(Value::as_object_mut);
    let (current, conditions) = match status {
        Some(status) => (
            status
                .remove("currentMetrics")
                .and_then(|m| m.as_array().cloned())
                .unwrap_or_default(),
            status.remove("conditions"),
        ),
        None => (Vec::new(), None),
    };
    let (current_cpu, current_others): (Vec<Value>, Vec<Value>) = current
        .into_iter()
        .partition(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu");
    if let Some(cpu) = current_cpu
        .first()
        .and_then(|m| m["resource"]["current"]["averageUtilization"].as_i64())
    {
        object["status"]["currentCPUUtilizationPercentage"] = json!(cpu);
    }
    let mut carried = Vec::new();
    if !others.is_empty() {
        carried.push((METRICS, Value::Array(others)));
    }
    if !current_others.is_empty() {
        carried.push((CURRENT_METRICS, Value::Array(current_others)));
    }
    if let Some(conditions) = conditions.filter(|c| c.as_array().is_some_and(|c| !c.is_empty())) {
        carried.push((CONDITIONS, conditions));
    }
    if let Some(behavior) = behavior {
        carried.push((BEHAVIOR, behavior));
    }
    if !carried.is_empty()
        && let Some(annotations) = annotations(object)
    {
        for (key, value) in carried {
            annotations.insert(key.into(), json!(value.to_string()));
        }
    }
}

/// `events.k8s.io/v1` field ↔ core `v1` field.
const EVENT_FIELDS: &[(&[&str], &[&str])] = &[
    (&["regarding"], &["involvedObject"]),
    (&["note"], &["message"]),
    (&["reportingController"], &["reportingComponent"]),
    (&["deprecatedSource"], &["source"]),
    (&["deprecatedFirstTimestamp"], &["firstTimestamp"]),
    (&["deprecatedLastTimestamp"], &["lastTimestamp"]),
    (&["deprecatedCount"], &["count"]),
];

/// Renames event fields to the core form (`to_core`) or back.
fn event_rename(object: &mut Value, fields: &[(&[&str], &[&str])], to_core: bool) {
    object["apiVersion"] = json!(if to_core { "v1" } else { "events.k8s.io/v1" });
    let Some(map) = object.as_object_mut() else {
        return;
    };
    for (new_style, core) in fields {
        let (from, to) = if to_core {
            (new_style[0], core[0])
        } else {
            (core[0], new_style[0])
        };
        if let Some(value) = map.remove(from) {
            map.insert(to.to_owned(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_v1_round_trips_through_v2() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80},
            "status": {"currentCPUUtilizationPercentage": 20, "currentReplicas": 1}});
        let mut stored = v1.clone();
        to_storage(Conversion::HpaV1, &mut stored);
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        assert!(
            stored["spec"]
                .get("targetCPUUtilizationPercentage")
                .is_none()
        );
        let mut back = stored.clone();
        from_storage(Conversion::HpaV1, &mut back);
        assert_eq!(back, v1);
    }

    #[test]
    fn what_v1_cannot_say_travels_in_annotations() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"maxReplicas": 5, "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let mut v1 = v2.clone();
        from_storage(Conversion::HpaV1, &mut v1);
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(
            v1["metadata"]["annotations"][METRICS]
                .as_str()
                .is_some_and(|m| m.contains("memory"))
        );
        let mut again = v1.clone();
        to_storage(Conversion::HpaV1, &mut again);
        assert_eq!(again, v2);
    }

    #[test]
    fn events_v1_are_core_events_in_storage() {
        let new_style = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reason": "Started", "type": "Normal",
            "reportingController": "keelson", "reportingInstance": "n1", "action": "Start", "eventTime": "2026-01-01T00:00:00.000000Z"});
        let mut stored = new_style.clone();
        to_storage(Conversion::EventsV1, &mut stored);
        assert_eq!(
            (
                &stored["apiVersion"],
                &stored["involvedObject"]["name"],
                &stored["message"],
                &stored["reportingComponent"]
            ),
            (
                &json!("v1"),
                &json!("p"),
                &json!("hello"),
                &json!("keelson")
            )
        );
        let mut back = stored;
        from_storage(Conversion::EventsV1, &mut back);
        assert_eq!(back, new_style);
    }
}
