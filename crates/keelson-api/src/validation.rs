//! Per-kind validation: the checks kube-apiserver makes before it stores an object, as
//! errors that name the field the way it does (`spec.replicas: Invalid value: -1: must be
//! greater than or equal to 0`). Metadata (labels, annotations), pod specs wherever they
//! appear (pods, workload templates, cron job templates), workload selectors and replica
//! counts, job restart policies, services' ports and types, and config keys.

use serde_json::Value;

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`.
    pub reason: &'static str,
    /// What is wrong, as it follows `field: ` in the message.
    pub detail: String,
}

impl FieldError {
    fn required(field: String) -> Self {
        FieldError {
            field,
            reason: "FieldValueRequired",
            detail: "Required value".into(),
        }
    }

    fn invalid(field: String, value: &Value, why: &str) -> Self {
        FieldError {
            field,
            reason: "FieldValueInvalid",
            detail: format!("Invalid value: {}: {why}", show(value)),
        }
    }

    fn not_supported(field: String, value: &Value, supported: &[&str]) -> Self {
        let supported: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        FieldError {
            field,
            reason: "FieldValueNotSupported",
            detail: format!(
                "Unsupported value: {}: supported values: {}",
                show(value),
                supported.join(", ")
            ),
        }
    }

    fn duplicate(field: String, value: &Value) -> Self {
        FieldError {
            field,
            reason: "FieldValueDuplicate",
            detail: format!("Duplicate value: {}", show(value)),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

/// A value as Go's `%#v` prints it in these messages.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k:?}:{}", show(v)))
                .collect();
            format!("map[string]string{{{}}}", entries.join(", "))
        }
        other => other.to_string(),
    }
}

/// Every problem with `object` of `kind` (empty when it may be stored).
pub fn validate(kind: &str, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    metadata(&object["metadata"], "metadata", &mut errors);
    let spec = &object["spec"];
    match kind {
        "Pod" => pod_spec(spec, "spec", &mut errors),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            workload(kind, object, &mut errors);
        }
        "ReplicationController" => {
            replicas(spec, &mut errors);
            template(&spec["template"], "spec.template", &["Always"], &mut errors);
        }
        "Job" => job(spec, "spec", &mut errors),
        "CronJob" => {
            // Its jobs are named `<name>-<minutes>`: 11 more characters.
            if object["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.len() > 52)
            {
                errors.push(FieldError::invalid(
                    "metadata.name".into(),
                    &object["metadata"]["name"],
                    "must be no more than 52 characters",
                ));
            }
            match spec["schedule"].as_str().filter(|s| !s.is_empty()) {
                None => errors.push(FieldError::required("spec.schedule".into())),
                Some(schedule) => {
                    if let Err(e) = crate::cron::Schedule::parse(schedule) {
                        errors.push(FieldError::invalid(
                            "spec.schedule".into(),
                            &spec["schedule"],
                            &e.to_string(),
                        ));
                    }
                }
            }
            if let Some(zone) = spec["timeZone"].as_str()
                && let Err(e) = crate::cron::time_zone(Some(zone))
            {
                errors.push(FieldError::invalid(
                    "spec.timeZone".into(),
                    &spec["timeZone"],
                    &e.to_string(),
                ));
            }
            let job_spec = &spec["jobTemplate"]["spec"];
            job(job_spec, "spec.jobTemplate.spec", &mut errors);
        }
        "Service" => service(spec, &mut errors),
        "ConfigMap" => {
            config_keys(&object["data"], "data", &mut errors);
            config_keys(&object["binaryData"], "binaryData", &mut errors);
        }
        "Secret" => {
            config_keys(&object["data"], "data", &mut errors);
            config_keys(&object["stringData"], "stringData", &mut errors);
        }
        _ => {}
    }
    errors
}

const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const NAME_PART: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most `max` long.
fn name_part(text: &str, max: usize) -> bool {
    let bytes = text.as_bytes();
    !text.is_empty()
        && text.len() <= max
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why `key` is not a qualified name (`[prefix/]name`), if it is not.
fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if let Some(problem) = crate::meta::name_problem(prefix, false) {
            return Some(format!("prefix part {problem}"));
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    (!name_part(name, 63)).then(|| NAME_PART.to_owned())
}

fn metadata(meta: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(labels) = meta["labels"].as_object() {
        for (key, value) in labels {
            if let Some(problem) = qualified_name_problem(key) {
                errors.push(FieldError::invalid(
                    format!("{path}.labels"),
                    &Value::String(key.clone()),
                    &problem,
                ));
            }
            let text = value.as_str().unwrap_or_default();
            if !text.is_empty() && !name_part(text, 63) {
                let why = if text.len() > 63 {
                    "must be no more than 63 characters"
                } else {
                    LABEL_VALUE
                };
                errors.push(FieldError::invalid(format!("{path}.labels"), value, why));
            }
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        for key in annotations.keys() {
            if let Some(problem) = qualified_name_problem(key) {
                errors.push(FieldError::invalid(
                    format!("{path}.annotations"),
                    &Value::String(key.clone()),
                    &problem,
                ));
            }
        }
    }
}

fn one_of(value: &Value, field: String, allowed: &[&str], errors: &mut Vec<FieldError>) {
    if let Some(text) = value.as_str()
        && !allowed.contains(&text)
    {
        errors.push(FieldError::not_supported(field, value, allowed));
    }
}

fn port_in_range(value: &Value, field: String, errors: &mut Vec<FieldError>) {
    if let Some(port) = value.as_i64()
        && !(1..=65535).contains(&port)
    {
        errors.push(FieldError::invalid(
            field,
            value,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

fn containers(list: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let mut names = Vec::new();
    for (i, c) in list.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        match c["name"].as_str().filter(|n| !n.is_empty()) {
            None => errors.push(FieldError::required(format!("{at}.name"))),
            Some(name) => {
                if let Some(problem) = crate::meta::name_problem(name, true) {
                    errors.push(FieldError::invalid(
                        format!("{at}.name"),
                        &c["name"],
                        &problem,
                    ));
                } else if names.contains(&name) {
                    errors.push(FieldError::duplicate(format!("{at}.name"), &c["name"]));
                }
                names.push(name);
            }
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            errors.push(FieldError::required(format!("{at}.image")));
        }
        one_of(
            &c["imagePullPolicy"],
            format!("{at}.imagePullPolicy"),
            &["Always", "IfNotPresent", "Never"],
            errors,
        );
        for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
            let port_at = format!("{at}.ports[{j}]");
            if p["containerPort"].is_null() {
                errors.push(FieldError::required(format!("{port_at}.containerPort")));
            }
            port_in_range(
                &p["containerPort"],
                format!("{port_at}.containerPort"),
                errors,
            );
            if p["hostPort"].as_i64().is_some_and(|h| h != 0) {
                port_in_range(&p["hostPort"], format!("{port_at}.hostPort"), errors);
            }
            one_of(
                &p["protocol"],
                format!("{port_at}.protocol"),
                &["SCTP", "TCP", "UDP"],
                errors,
            );
        }
    }
}

fn pod_spec(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if spec["containers"].as_array().is_none_or(Vec::is_empty) {
        errors.push(FieldError::required(format!("{path}.containers")));
    }
    containers(&spec["containers"], &format!("{path}.containers"), errors);
    containers(
        &spec["initContainers"],
        &format!("{path}.initContainers"),
        errors,
    );
    one_of(
        &spec["restartPolicy"],
        format!("{path}.restartPolicy"),
        &["Always", "OnFailure", "Never"],
        errors,
    );
    one_of(
        &spec["dnsPolicy"],
        format!("{path}.dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        errors,
    );
}

/// A pod template whose restart policy must be one of `restart`.
fn template(template: &Value, path: &str, restart: &[&str], errors: &mut Vec<FieldError>) {
    metadata(&template["metadata"], &format!("{path}.metadata"), errors);
    let spec = &template["spec"];
    pod_spec(spec, &format!("{path}.spec"), errors);
    let policy = &spec["restartPolicy"];
    if policy.is_null() {
        if !restart.contains(&"Always") {
            errors.push(FieldError {
                field: format!("{path}.spec.restartPolicy"),
                reason: "FieldValueRequired",
                detail: format!(
                    "Required value: valid values: {}",
                    restart
                        .iter()
                        .map(|r| format!("\"{r}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    } else if policy
        .as_str()
        .is_some_and(|p| ["Always", "OnFailure", "Never"].contains(&p) && !restart.contains(&p))
    {
        errors.push(FieldError::not_supported(
            format!("{path}.spec.restartPolicy"),
            policy,
            restart,
        ));
    }
}

fn replicas(spec: &Value, errors: &mut Vec<FieldError>) {
    if spec["replicas"].as_i64().is_some_and(|r| r < 0) {
        errors.push(FieldError::invalid(
            "spec.replicas".into(),
            &spec["replicas"],
            "must be greater than or equal to 0",
        ));
    }
}

/// Whether `labels` satisfy a `LabelSelector` object (one that does not decode matches
/// nothing).
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let labels = crate::meta::labels(&serde_json::json!({"metadata": {"labels": labels}}));
    serde_json::from_value(selector.clone())
        .ok()
        .and_then(|s| crate::selector::LabelSelector::from_object(&s))
        .is_some_and(|s| s.matches(&labels))
}

fn workload(kind: &str, object: &Value, errors: &mut Vec<FieldError>) {
    let spec = &object["spec"];
    if kind != "DaemonSet" {
        replicas(spec, errors);
    }
    let selector = &spec["selector"];
    let empty = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.is_empty())
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty);
    if empty {
        errors.push(FieldError::required("spec.selector".into()));
    } else {
        let labels = &spec["template"]["metadata"]["labels"];
        if !selector_matches(selector, labels) {
            errors.push(FieldError::invalid(
                "spec.template.metadata.labels".into(),
                labels,
                "`selector` does not match template `labels`",
            ));
        }
    }
    template(&spec["template"], "spec.template", &["Always"], errors);
    if kind == "Deployment" {
        one_of(
            &spec["strategy"]["type"],
            "spec.strategy.type".into(),
            &["Recreate", "RollingUpdate"],
            errors,
        );
    }
}

fn job(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
    ] {
        if spec[field].as_i64().is_some_and(|v| v < 0) {
            errors.push(FieldError::invalid(
                format!("{path}.{field}"),
                &spec[field],
                "must be greater than or equal to 0",
            ));
        }
    }
    template(
        &spec["template"],
        &format!("{path}.template"),
        &["OnFailure", "Never"],
        errors,
    );
}

fn service(spec: &Value, errors: &mut Vec<FieldError>) {
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    one_of(
        &spec["type"],
        "spec.type".into(),
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        errors,
    );
    let ports = spec["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let headless = spec["clusterIP"] == "None";
    if ports.is_empty() && kind != "ExternalName" && !headless {
        errors.push(FieldError::required("spec.ports".into()));
    }
    let mut names = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match p["name"].as_str().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => errors.push(FieldError::required(format!("{at}.name"))),
            None => {}
            Some(name) => {
                if names.contains(&name) {
                    errors.push(FieldError::duplicate(format!("{at}.name"), &p["name"]));
                }
                names.push(name);
            }
        }
        if p["port"].is_null() {
            errors.push(FieldError::required(format!("{at}.port")));
        }
        port_in_range(&p["port"], format!("{at}.port"), errors);
        if p["targetPort"].is_i64() {
            port_in_range(&p["targetPort"], format!("{at}.targetPort"), errors);
        }
        one_of(
            &p["protocol"],
            format!("{at}.protocol"),
            &["SCTP", "TCP", "UDP"],
            errors,
        );
    }
}

fn config_keys(data: &Value, path: &str, errors: &mut Vec<FieldError>) {
    for key in data.as_object().into_iter().flatten().map(|(k, _)| k) {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            errors.push(FieldError::invalid(
                format!("{path}[{key}]"),
                &Value::String(key.clone()),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(kind: &str, object: Value) -> Vec<String> {
        validate(kind, &object)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn deployment() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}})
    }

    #[test]
    fn valid_objects_pass() {
        assert!(validate("Deployment", &deployment()).is_empty());
        let job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
        assert!(validate("Job", &job).is_empty());
        let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}});
        assert!(validate("Service", &svc).is_empty());
    }

    #[test]
    fn cron_jobs_need_a_schedule_and_zone_that_parse() {
        let template = json!({"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
            "containers": [{"name": "c", "image": "busybox"}]}}}});
        let good = json!({"metadata": {"name": "tick"}, "spec": {"schedule": "@hourly",
            "timeZone": "Europe/Paris", "jobTemplate": template}});
        assert!(validate("CronJob", &good).is_empty());
        let bad = json!({"metadata": {"name": "x".repeat(53)}, "spec": {"schedule": "61 * * * *",
            "timeZone": "Nowhere/Land", "jobTemplate": template}});
        assert_eq!(
            lines("CronJob", bad),
            [
                "metadata.name: Invalid value: \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\": must be no more than 52 characters",
                "spec.schedule: Invalid value: \"61 * * * *\": minute 61 is out of range 0-59",
                "spec.timeZone: Invalid value: \"Nowhere/Land\": unknown time zone Nowhere/Land",
            ]
        );
    }

    #[test]
    fn workloads_name_each_bad_field() {
        let mut bad = deployment();
        bad["spec"]["replicas"] = json!(-1);
        bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        bad["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "app", "image": "nginx", "ports": [{"containerPort": 0}]},
            {"name": "app"},
        ]);
        bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(
            lines("Deployment", bad),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`",
                "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.template.spec.containers[1].name: Duplicate value: \"app\"",
                "spec.template.spec.containers[1].image: Required value",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
        let mut no_selector = deployment();
        no_selector["spec"]["selector"] = json!({});
        assert_eq!(
            lines("Deployment", no_selector),
            ["spec.selector: Required value"]
        );
        let job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        assert_eq!(
            lines("Job", job),
            [
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""
            ]
        );
    }

    #[test]
    fn metadata_services_and_keys() {
        let pod = json!({"metadata": {"name": "p", "labels": {"ok": "yes", "bad key!": "x", "k": "bad value!"}},
            "spec": {"containers": [{"name": "Web", "image": "i"}], "restartPolicy": "Sometimes"}});
        let errors = lines("Pod", pod);
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0].starts_with(
                "metadata.labels: Invalid value: \"bad key!\": name part must consist"
            )
        );
        assert!(
            errors[1].starts_with(
                "metadata.labels: Invalid value: \"bad value!\": a valid label must be"
            )
        );
        assert!(errors[2].starts_with(
            "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label"
        ));
        assert_eq!(
            errors[3],
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "Weird", "ports": [{"port": 0}, {"port": 81}]}});
        assert_eq!(
            lines("Service", svc),
            [
                "spec.type: Unsupported value: \"Weird\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "spec.ports[0].name: Required value",
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].name: Required value",
            ]
        );
        let headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        assert!(validate("Service", &headless).is_empty());
        let cm = json!({"metadata": {"name": "c"}, "data": {"good.key": "1", "bad/key": "2"}});
        assert_eq!(lines("ConfigMap", cm).len(), 1);
    }
}
