//! Defaulting: the values Kubernetes fills in when a client leaves them out, for the
//! fields users see in `kubectl get -o yaml` and `describe` (pod template settings, rollout
//! strategies, history limits, service types, …). Applied on every write; a value the
//! client set is never changed.

use serde_json::{Value, json};

/// Sets `object[key]` to `value` when it is missing or null.
fn default(object: &mut Value, key: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        let slot = map.entry(key.to_owned()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// The `imagePullPolicy` Kubernetes picks: `Always` for `:latest` or untagged images.
fn pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    let tagged = name.split('@').next().is_some_and(|n| n.contains(':'));
    if image.contains('@') || (tagged && !name.ends_with(":latest")) {
        "IfNotPresent"
    } else {
        "Always"
    }
}

fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or_default().to_owned();
    default(c, "imagePullPolicy", json!(pull_policy(&image)));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    // (`get_mut`: indexing mutably would insert a null `ports`.)
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            default(port, "protocol", json!("TCP"));
        }
    }
}

/// Pod spec defaults; `restart` is the default restart policy (none for job templates,
/// which must choose).
fn pod_spec(spec: &mut Value, restart: Option<&str>) {
    if !spec.is_object() {
        return;
    }
    if let Some(restart) = restart {
        default(spec, "restartPolicy", json!(restart));
    }
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            containers.iter_mut().for_each(container);
        }
    }
}

fn template(spec: &mut Value, restart: Option<&str>) {
    if let Some(template_spec) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        pod_spec(template_spec, restart);
    }
}

/// Fills in the defaults of `object`, of `kind`.
pub fn apply(kind: &str, object: &mut Value) {
    let Some(spec) = object.get_mut("spec").filter(|s| s.is_object()) else {
        if kind == "Secret" {
            default(object, "type", json!("Opaque"));
        }
        return;
    };
    match kind {
        "Pod" => pod_spec(spec, Some("Always")),
        "Deployment" => {
            default(spec, "replicas", json!(1));
            default(spec, "strategy", json!({"type": "RollingUpdate"}));
            if spec["strategy"]["type"] == "RollingUpdate" {
                default(&mut spec["strategy"], "rollingUpdate", json!({}));
                default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
                default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
            }
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            template(spec, Some("Always"));
        }
        "ReplicaSet" | "ReplicationController" => {
            default(spec, "replicas", json!(1));
            template(spec, Some("Always"));
        }
        "StatefulSet" => {
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            template(spec, Some("Always"));
        }
        "DaemonSet" => {
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
            template(spec, Some("Always"));
        }
        "Job" => job_spec(spec),
        "CronJob" => {
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(job) = spec.get_mut("jobTemplate").and_then(|t| t.get_mut("spec")) {
                job_spec(job);
            }
        }
        "Service" => {
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports {
                    default(port, "protocol", json!("TCP"));
                    let number = port["port"].clone();
                    default(port, "targetPort", number);
                }
            }
        }
        _ => {}
    }
}

/// What kube-apiserver adds to a Job it creates, unless `spec.manualSelector` is true:
/// labels naming the Job (`batch.kubernetes.io/job-name`, `job-name`) and its UID
/// (`batch.kubernetes.io/controller-uid`, `controller-uid`) on its pod template, and a
/// selector of the UID label, so that its pods are its own. Labels the template already
/// has are kept. Needs the Job's name and UID, so it runs once they are set.
pub fn job_selector(object: &mut Value) {
    if object["spec"]["manualSelector"] == true || !object["spec"].is_object() {
        return;
    }
    let name = object["metadata"]["name"].clone();
    let uid = object["metadata"]["uid"].clone();
    let spec = &mut object["spec"];
    // (Indexing a null makes it an object; the last level must be made one.)
    let labels = &mut spec["template"]["metadata"]["labels"];
    if labels.is_null() {
        *labels = json!({});
    }
    let match_labels = &mut spec["selector"]["matchLabels"];
    if match_labels.is_null() {
        *match_labels = json!({});
    }
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        default(
            &mut spec["template"]["metadata"]["labels"],
            key,
            value.clone(),
        );
    }
    default(
        &mut spec["selector"]["matchLabels"],
        "batch.kubernetes.io/controller-uid",
        uid,
    );
}

fn job_spec(spec: &mut Value) {
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    let completions_unset = spec["completions"].is_null() && spec["parallelism"].is_null();
    if completions_unset {
        spec["completions"] = json!(1);
    }
    default(spec, "parallelism", json!(1));
    template(spec, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_get_the_defaults_kubectl_shows() {
        let mut deploy = json!({"spec": {"selector": {}, "template": {"spec": {"containers": [
            {"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx:1.27", "ports": [{"containerPort": 80}]},
            {"name": "c", "image": "reg:5000/app:latest", "imagePullPolicy": "Never"}]}}}});
        apply("Deployment", &mut deploy);
        let spec = &deploy["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(
            (
                spec["revisionHistoryLimit"].clone(),
                spec["progressDeadlineSeconds"].clone()
            ),
            (json!(10), json!(600))
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(
            (pod["restartPolicy"].as_str(), pod["dnsPolicy"].as_str()),
            (Some("Always"), Some("ClusterFirst"))
        );
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        let containers = &pod["containers"];
        assert_eq!(
            containers[0]["imagePullPolicy"], "Always",
            "untagged means latest"
        );
        assert_eq!(containers[1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(containers[1]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            containers[2]["imagePullPolicy"], "Never",
            "what the client set stays"
        );
    }

    #[test]
    fn other_kinds() {
        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply("Deployment", &mut recreate);
        assert!(recreate["spec"]["strategy"].get("rollingUpdate").is_none());
        let mut job = json!({"spec": {"template": {"spec": {"containers": [{"name": "j", "image": "busybox"}]}}}});
        apply("Job", &mut job);
        assert_eq!(
            (
                job["spec"]["backoffLimit"].clone(),
                job["spec"]["completions"].clone()
            ),
            (json!(6), json!(1))
        );
        assert!(
            job["spec"]["template"]["spec"]
                .get("restartPolicy")
                .is_none(),
            "jobs must choose their restart policy"
        );
        let mut named = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {
            "template": {"metadata": {"labels": {"job-name": "mine"}}, "spec": {}}}});
        job_selector(&mut named);
        assert_eq!(
            named["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(
            named["spec"]["template"]["metadata"]["labels"],
            json!({"batch.kubernetes.io/controller-uid": "u-1", "batch.kubernetes.io/job-name": "pi",
                "controller-uid": "u-1", "job-name": "mine"})
        );
        let mut manual = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"manualSelector": true,
            "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}});
        let before = manual.clone();
        job_selector(&mut manual);
        assert_eq!(manual, before, "a manual selector is the user's");
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        apply("Service", &mut svc);
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        let mut secret = json!({"data": {}});
        apply("Secret", &mut secret);
        assert_eq!(secret["type"], "Opaque");
        let mut again = svc.clone();
        apply("Service", &mut again);
        assert_eq!(again, svc, "defaulting is idempotent");
    }
}
