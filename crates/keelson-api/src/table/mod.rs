//! Server-side printing: `meta.k8s.io/v1` `Table` responses for `kubectl get`.
//!
//! Every kind gets the columns `kubectl get` shows for it on Kubernetes (NAME and AGE at
//! least), with the `-o wide` ones at priority 1. This file has the framework and the
//! workload kinds; `cluster.rs` the configuration, storage, networking, policy, access
//! control and event kinds.

mod cluster;

use serde_json::{Value, json};

use crate::meta::{human_duration, parse_timestamp};

/// Whether an `Accept` header asks for a `Table`.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

/// Content type of a `Table` response.
pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// What each row carries besides its cells (`includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// One column: its definition and how a cell is computed.
pub(super) struct Column {
    name: &'static str,
    kind: &'static str,
    /// 0 always; 1 only with `-o wide`.
    priority: u8,
    description: &'static str,
    cell: fn(&Value, i64) -> Value,
}

pub(super) const fn col(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
    cell: fn(&Value, i64) -> Value,
) -> Column {
    Column {
        name,
        kind,
        priority,
        description,
        cell,
    }
}

pub(super) fn s(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

pub(super) fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn name(o: &Value, _: i64) -> Value {
    json!(s(&o["metadata"]["name"]))
}

pub(super) fn age(o: &Value, now: i64) -> Value {
    json!(
        o["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(parse_timestamp)
            .map_or_else(|| "<unknown>".to_owned(), |t| human_duration(now - t))
    )
}

pub(super) fn or_none(text: String) -> Value {
    json!(if text.is_empty() {
        "<none>".to_owned()
    } else {
        text
    })
}

/// The containers of a workload's pod template (a cron job's through its job template).
fn containers(o: &Value) -> &[Value] {
    let template = if o["spec"]["jobTemplate"].is_object() {
        &o["spec"]["jobTemplate"]["spec"]["template"]
    } else {
        &o["spec"]["template"]
    };
    template["spec"]["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn container_names(o: &Value, _: i64) -> Value {
    json!(
        containers(o)
            .iter()
            .map(|c| s(&c["name"]))
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn container_images(o: &Value, _: i64) -> Value {
    json!(
        containers(o)
            .iter()
            .map(|c| s(&c["image"]))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// A workload's label selector as `kubectl get -o wide` prints it.
fn selector(o: &Value, _: i64) -> Value {
    if o["spec"]["jobTemplate"].is_object() {
        return format_selector(&o["spec"]["jobTemplate"]["spec"]["selector"]);
    }
    format_selector(&o["spec"]["selector"])
}

/// A `LabelSelector` object in the selector grammar; `<none>` when it is empty.
pub(super) fn format_selector(sel: &Value) -> Value {
    let mut terms: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match s(&e["operator"]) {
            "In" => format!("{} in ({})", s(&e["key"]), values.join(",")),
            "NotIn" => format!("{} notin ({})", s(&e["key"]), values.join(",")),
            "DoesNotExist" => format!("!{}", s(&e["key"])),
            "Exists" => s(&e["key"]).to_owned(),
            _ => s(&e["key"]).to_owned(),
        });
    }
    or_none(terms.join(","))
}

/// A plain map selector (services, replication controllers).
fn map_selector(o: &Value, _: i64) -> Value {
    or_none(
        o["spec"]["selector"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", s(v)))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn data_count(o: &Value, _: i64) -> Value {
    let count = |f: &str| o[f].as_object().map_or(0, |m| m.len());
    json!(count("data") + count("binaryData"))
}

/// The STATUS kubectl shows for a pod: the most telling container reason, else the phase.
fn pod_status(o: &Value, _: i64) -> Value {
    if o["metadata"].get("deletionTimestamp").is_some() {
        return json!("Terminating");
    }
    let mut reason = s(&o["status"]["reason"]).to_owned();
    if reason.is_empty() {
        reason = s(&o["status"]["phase"]).to_owned();
    }
    let init = o["status"]["initContainerStatuses"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let init_total = o["spec"]["initContainers"].as_array().map_or(0, Vec::len);
    for (i, c) in init.iter().enumerate() {
        let terminated = &c["state"]["terminated"];
        if terminated.is_object() && int(&terminated["exitCode"]) == 0 {
            continue;
        }
        if terminated.is_object() {
            let r = s(&terminated["reason"]);
            return json!(if r.is_empty() {
                format!("Init:ExitCode:{}", int(&terminated["exitCode"]))
            } else {
                format!("Init:{r}")
            });
        }
        let waiting = s(&c["state"]["waiting"]["reason"]);
        if !waiting.is_empty() && waiting != "PodInitializing" {
            return json!(format!("Init:{waiting}"));
        }
        return json!(format!("Init:{i}/{init_total}"));
    }
    for c in o["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
    {
        let waiting = s(&c["state"]["waiting"]["reason"]);
        let terminated = &c["state"]["terminated"];
        if !waiting.is_empty() {
            reason = waiting.to_owned();
        } else if terminated.is_object() {
            let r = s(&terminated["reason"]);
            reason = if r.is_empty() {
                format!("ExitCode:{}", int(&terminated["exitCode"]))
            } else {
                r.to_owned()
            };
        }
    }
    json!(reason)
}

fn pod_ready(o: &Value, _: i64) -> Value {
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = o["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ready"] == true)
        .count();
    json!(format!("{ready}/{total}"))
}

fn pod_restarts(o: &Value, _: i64) -> Value {
    json!(
        o["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| int(&c["restartCount"]))
            .sum::<i64>()
    )
}

/// How long a job ran (or has been running).
fn job_duration(o: &Value, now: i64) -> Value {
    let Some(start) = o["status"]["startTime"].as_str().and_then(parse_timestamp) else {
        return json!("");
    };
    let end = o["status"]["completionTime"]
        .as_str()
        .and_then(parse_timestamp)
        .unwrap_or(now);
    json!(human_duration(end - start))
}

/// `current/target` per metric of an autoscaler (`autoscaling/v2`; `v1` has only CPU).
fn hpa_targets(o: &Value, _: i64) -> Value {
    let specs: Vec<Value> = match o["spec"]["metrics"].as_array() {
        Some(metrics) => metrics.clone(),
        None => match o["spec"]["targetCPUUtilizationPercentage"].as_i64() {
            Some(target) => vec![json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": target}}})],
            None => vec![],
        },
    };
    if specs.is_empty() {
        return json!("<none>");
    }
    let current_v1 = o["status"]["currentCPUUtilizationPercentage"].as_i64();
    let mut shown = Vec::new();
    for (i, spec) in specs.iter().enumerate().take(3) {
        let kind = s(&spec["type"]);
        let field = match kind {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => "",
        };
        let metric = &spec[field];
        let target = &metric["target"];
        let current = &o["status"]["currentMetrics"][i][field]["current"];
        let label = match kind {
            "Resource" | "ContainerResource" => s(&metric["name"]).to_owned(),
            _ => s(&metric["metric"]["name"]).to_owned(),
        };
        let text = |v: &Value| match v {
            Value::String(t) => Some(t.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let (now_text, target_text) = match s(&target["type"]) {
            "Utilization" => (
                text(&current["averageUtilization"])
                    .or_else(|| current_v1.map(|c| c.to_string()))
                    .map(|c| format!("{c}%")),
                format!("{}%", int(&target["averageUtilization"])),
            ),
            "AverageValue" => (
                text(&current["averageValue"]),
                text(&target["averageValue"]).unwrap_or_default(),
            ),
            _ => (
                text(&current["value"]),
                text(&target["value"]).unwrap_or_default(),
            ),
        };
        let now_text = now_text.unwrap_or_else(|| "<unknown>".to_owned());
        shown.push(format!("{label}: {now_text}/{target_text}"));
    }
    let mut targets = shown.join(", ");
    if specs.len() > 3 {
        targets.push_str(&format!(" + {} more...", specs.len() - 3));
    }
    json!(targets)
}

fn service_ports(o: &Value, _: i64) -> Value {
    let ports: Vec<String> = o["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(node) => format!("{}:{node}/{protocol}", int(&p["port"])),
                None => format!("{}/{protocol}", int(&p["port"])),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn service_external(o: &Value, _: i64) -> Value {
    let mut ips: Vec<String> = o["spec"]["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    ips.extend(
        o["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                i["ip"]
                    .as_str()
                    .or(i["hostname"].as_str())
                    .map(str::to_owned)
            }),
    );
    match (s(&o["spec"]["type"]), ips.is_empty()) {
        ("LoadBalancer", true) => json!("<pending>"),
        ("ExternalName", _) => json!(s(&o["spec"]["externalName"])),
        (_, true) => json!("<none>"),
        _ => json!(ips.join(",")),
    }
}

fn node_status(o: &Value, _: i64) -> Value {
    let ready = o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let mut status = match ready.map(|c| s(&c["status"])) {
        Some("True") => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if o["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    json!(status)
}

fn node_roles(o: &Value, _: i64) -> Value {
    or_none(
        o["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn node_address(kind: &'static str) -> impl Fn(&Value) -> Value {
    move |o| {
        or_none(
            o["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["type"] == kind)
                .filter_map(|a| a["address"].as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

pub(super) const NAME: Column = col(
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
    name,
);
pub(super) const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
    age,
);

/// The columns of `kind`, in order.
fn kind_columns(kind: &str) -> Vec<Column> {
    if let Some(columns) = cluster::columns(kind) {
        return columns;
    }
    let mut columns = vec![NAME];
    match kind {
        "Namespace" => columns.push(col(
            "Status",
            "string",
            0,
            "The status of the namespace",
            |o, _| json!(s(&o["status"]["phase"])),
        )),
        "Pod" => {
            columns.push(col(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
                pod_ready,
            ));
            columns.push(col(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
                pod_status,
            ));
            columns.push(col(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted.",
                pod_restarts,
            ));
        }
        "Deployment" => {
            columns.push(col(
                "Ready",
                "string",
                0,
                "Number of the pod with ready state",
                |o, _| {
                    json!(format!(
                        "{}/{}",
                        int(&o["status"]["readyReplicas"]),
                        int(&o["spec"]["replicas"])
                    ))
                },
            ));
            columns.push(col("Up-to-date", "integer", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", |o, _| json!(int(&o["status"]["updatedReplicas"]))));
            columns.push(col("Available", "integer", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", |o, _| json!(int(&o["status"]["availableReplicas"]))));
        }
        "ReplicaSet" | "ReplicationController" => {
            columns.push(col(
                "Desired",
                "integer",
                0,
                "Number of desired pods.",
                |o, _| json!(int(&o["spec"]["replicas"])),
            ));
            columns.push(col(
                "Current",
                "integer",
                0,
                "Number of actual replicas.",
                |o, _| json!(int(&o["status"]["replicas"])),
            ));
            columns.push(col(
                "Ready",
                "integer",
                0,
                "Number of ready replicas.",
                |o, _| json!(int(&o["status"]["readyReplicas"])),
            ));
        }
        "StatefulSet" => columns.push(col(
            "Ready",
            "string",
            0,
            "Number of the pod with ready state",
            |o, _| {
                json!(format!(
                    "{}/{}",
                    int(&o["status"]["readyReplicas"]),
                    int(&o["spec"]["replicas"])
                ))
            },
        )),
        "DaemonSet" => {
            columns.push(col(
                "Desired",
                "integer",
                0,
                "The desired number of nodes that should be running the daemon pod.",
                |o, _| json!(int(&o["status"]["desiredNumberScheduled"])),
            ));
            columns.push(col(
                "Current",
                "integer",
                0,
                "The number of nodes that are running at least 1 daemon pod.",
                |o, _| json!(int(&o["status"]["currentNumberScheduled"])),
            ));
            columns.push(col(
                "Ready",
                "integer",
                0,
                "The number of nodes running a ready daemon pod.",
                |o, _| json!(int(&o["status"]["numberReady"])),
            ));
            columns.push(col(
                "Up-to-date",
                "integer",
                0,
                "The number of nodes running an updated daemon pod.",
                |o, _| json!(int(&o["status"]["updatedNumberScheduled"])),
            ));
            columns.push(col(
                "Available",
                "integer",
                0,
                "The number of nodes running an available daemon pod.",
                |o, _| json!(int(&o["status"]["numberAvailable"])),
            ));
            columns.push(col(
                "Node Selector",
                "string",
                0,
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
                |o, _| {
                    or_none(
                        o["spec"]["template"]["spec"]["nodeSelector"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| format!("{k}={}", s(v)))
                            .collect::<Vec<_>>()
                            .join(","),
                    )
                },
            ));
        }
        "Service" => {
            columns.push(col(
                "Type",
                "string",
                0,
                "The type of the service.",
                |o, _| json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP")),
            ));
            columns.push(col(
                "Cluster-IP",
                "string",
                0,
                "The IP address of the service.",
                |o, _| or_none(s(&o["spec"]["clusterIP"]).to_owned()),
            ));
            columns.push(col(
                "External-IP",
                "string",
                0,
                "The external IP address of the service.",
                service_external,
            ));
            columns.push(col(
                "Port(s)",
                "string",
                0,
                "The ports of the service.",
                service_ports,
            ));
        }
        "ConfigMap" => columns.push(col(
            "Data",
            "integer",
            0,
            "Number of entries in data and binaryData.",
            data_count,
        )),
        "Secret" => {
            columns.push(col(
                "Type",
                "string",
                0,
                "The type of the secret.",
                |o, _| json!(o["type"].as_str().unwrap_or("Opaque")),
            ));
            columns.push(col(
                "Data",
                "integer",
                0,
                "Number of entries in data.",
                data_count,
            ));
        }
        "Node" => {
            columns.push(col(
                "Status",
                "string",
                0,
                "The status of the node.",
                node_status,
            ));
            columns.push(col(
                "Roles",
                "string",
                0,
                "The roles of the node.",
                node_roles,
            ));
        }
        "Job" => {
            columns.push(col("Status", "string", 0, "Status of the job.", |o, _| {
                let has = |kind: &str| {
                    o["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["status"] == "True" && c["type"] == kind)
                };
                // In kubectl's order.
                let status = if has("Complete") {
                    "Complete"
                } else if has("Failed") {
                    "Failed"
                } else if o["metadata"]["deletionTimestamp"].is_string() {
                    "Terminating"
                } else if has("Suspended") {
                    "Suspended"
                } else if has("FailureTarget") {
                    "FailureTarget"
                } else if has("SuccessCriteriaMet") {
                    "SuccessCriteriaMet"
                } else {
                    "Running"
                };
                json!(status)
            }));
            columns.push(col(
                "Completions",
                "string",
                0,
                "The desired number of successfully finished pods the job should be run with.",
                |o, _| {
                    let succeeded = int(&o["status"]["succeeded"]);
                    // Without completions (a work queue), kubectl shows `n/1`, with its
                    // parallelism when above one.
                    let parallelism = o["spec"]["parallelism"].as_i64().unwrap_or(0);
                    json!(match o["spec"]["completions"].as_i64() {
                        Some(completions) => format!("{succeeded}/{completions}"),
                        None if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
                        None => format!("{succeeded}/1"),
                    })
                },
            ));
            columns.push(col(
                "Duration",
                "string",
                0,
                "Time required to complete the job.",
                job_duration,
            ));
        }
        "CronJob" => {
            columns.push(col(
                "Schedule",
                "string",
                0,
                "The schedule in Cron format.",
                |o, _| json!(s(&o["spec"]["schedule"])),
            ));
            columns.push(col(
                "Timezone",
                "string",
                0,
                "The time zone the schedule is read in.",
                |o, _| or_none(s(&o["spec"]["timeZone"]).to_owned()),
            ));
            columns.push(col(
                "Suspend",
                "boolean",
                0,
                "Whether the cron job is suspended.",
                |o, _| json!(o["spec"]["suspend"] == true),
            ));
            columns.push(col(
                "Active",
                "integer",
                0,
                "The number of running jobs.",
                |o, _| json!(o["status"]["active"].as_array().map_or(0, Vec::len)),
            ));
            columns.push(col(
                "Last Schedule",
                "string",
                0,
                "When the job was last scheduled.",
                |o, now| match o["status"]["lastScheduleTime"]
                    .as_str()
                    .and_then(parse_timestamp)
                {
                    Some(t) => json!(human_duration(now - t)),
                    None => json!("<none>"),
                },
            ));
        }
        "HorizontalPodAutoscaler" => {
            columns.push(col(
                "Reference",
                "string",
                0,
                "The scale target.",
                |o, _| {
                    json!(format!(
                        "{}/{}",
                        s(&o["spec"]["scaleTargetRef"]["kind"]),
                        s(&o["spec"]["scaleTargetRef"]["name"])
                    ))
                },
            ));
            columns.push(col(
                "Targets",
                "string",
                0,
                "The current and target values of the metrics.",
                hpa_targets,
            ));
            columns.push(col(
                "MinPods",
                "string",
                0,
                "Lower limit of replicas.",
                |o, _| json!(o["spec"]["minReplicas"].as_i64().unwrap_or(1)),
            ));
            columns.push(col(
                "MaxPods",
                "integer",
                0,
                "Upper limit of replicas.",
                |o, _| json!(int(&o["spec"]["maxReplicas"])),
            ));
            columns.push(col(
                "Replicas",
                "integer",
                0,
                "Current number of replicas.",
                |o, _| json!(int(&o["status"]["currentReplicas"])),
            ));
        }
        _ => {}
    }
    columns.push(AGE);
    // Wide columns.
    match kind {
        "Pod" => {
            columns.push(col(
                "IP",
                "string",
                1,
                "The IP address of the pod.",
                |o, _| or_none(s(&o["status"]["podIP"]).to_owned()),
            ));
            columns.push(col(
                "Node",
                "string",
                1,
                "The node the pod runs on.",
                |o, _| or_none(s(&o["spec"]["nodeName"]).to_owned()),
            ));
            columns.push(col(
                "Nominated Node",
                "string",
                1,
                "The node the pod is nominated to by preemption.",
                |o, _| or_none(s(&o["status"]["nominatedNodeName"]).to_owned()),
            ));
            columns.push(col(
                "Readiness Gates",
                "string",
                1,
                "The readiness gates of the pod.",
                |o, _| {
                    or_none(
                        o["spec"]["readinessGates"]
                            .as_array()
                            .map_or(String::new(), |g| format!("0/{}", g.len())),
                    )
                },
            ));
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" => {
            columns.push(col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
                container_names,
            ));
            columns.push(col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
                container_images,
            ));
            if kind != "StatefulSet" {
                columns.push(col(
                    "Selector",
                    "string",
                    1,
                    "Label selector for pods.",
                    selector,
                ));
            }
        }
        "ReplicationController" => {
            columns.push(col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
                container_names,
            ));
            columns.push(col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
                container_images,
            ));
            columns.push(col(
                "Selector",
                "string",
                1,
                "Label selector for pods.",
                map_selector,
            ));
        }
        "Service" => columns.push(col(
            "Selector",
            "string",
            1,
            "The selector of the service.",
            map_selector,
        )),
        "Node" => {
            columns.push(col("Version", "string", 0, "Kubelet version.", |o, _| {
                json!(s(&o["status"]["nodeInfo"]["kubeletVersion"]))
            }));
            columns.push(col(
                "Internal-IP",
                "string",
                1,
                "Internal addresses.",
                |o, _| node_address("InternalIP")(o),
            ));
            columns.push(col(
                "External-IP",
                "string",
                1,
                "External addresses.",
                |o, _| node_address("ExternalIP")(o),
            ));
            columns.push(col("OS-Image", "string", 1, "The OS image.", |o, _| {
                json!(s(&o["status"]["nodeInfo"]["osImage"]))
            }));
            columns.push(col(
                "Kernel-Version",
                "string",
                1,
                "The kernel version.",
                |o, _| json!(s(&o["status"]["nodeInfo"]["kernelVersion"])),
            ));
            columns.push(col(
                "Container-Runtime",
                "string",
                1,
                "The container runtime.",
                |o, _| json!(s(&o["status"]["nodeInfo"]["containerRuntimeVersion"])),
            ));
        }
        _ => {}
    }
    columns
}

/// The column definitions for `kind`.
pub fn columns(kind: &str) -> Vec<Value> {
    kind_columns(kind)
        .iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            json!({"name": c.name, "type": c.kind, "format": format, "description": c.description, "priority": c.priority})
        })
        .collect()
}

/// The cells of one row, matching [`columns`].
fn cells(kind: &str, object: &Value, now: i64) -> Vec<Value> {
    kind_columns(kind)
        .iter()
        .map(|c| (c.cell)(object, now))
        .collect()
}

/// One row for `object`.
pub fn row(kind: &str, object: &Value, include: IncludeObject, now: i64) -> Value {
    let mut row = json!({"cells": cells(kind, object, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = object.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object["metadata"].clone(),
            });
        }
    }
    row
}

/// A whole `Table`; `with_columns` is false for the watch events after the first.
pub fn table(kind: &str, rows: Vec<Value>, metadata: Value, with_columns: bool) -> Value {
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "rows": rows,
    });
    if with_columns {
        table["columnDefinitions"] = json!(columns(kind));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_requests_are_recognized() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }

    #[test]
    fn rows_match_the_columns() {
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Active"}});
        let now = parse_timestamp("2024-01-01T00:05:00Z").expect("timestamp");
        let row = row("Namespace", &ns, IncludeObject::Metadata, now);
        assert_eq!(row["cells"], json!(["default", "Active", "5m"]));
        assert_eq!(columns("Namespace").len(), 3);
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["name"], "default");
        let cm = json!({"metadata": {"name": "c"}});
        assert_eq!(
            super::row("ConfigMap", &cm, IncludeObject::None, now)["cells"],
            json!(["c", 0, "<unknown>"])
        );
    }

    fn cells_of(kind: &str, object: Value) -> Vec<Value> {
        let now = parse_timestamp("2024-01-01T01:00:00Z").unwrap_or(0);
        row(kind, &object, IncludeObject::None, now)["cells"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn pods_show_readiness_status_and_restarts() {
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(
            cells_of("Pod", pod),
            vec![
                json!("web"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!(3),
                json!("60m"),
                json!("10.0.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
        assert_eq!(cells_of("Pod", pending)[2], "Pending");
        let init = json!({"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i"}, {"name": "j"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"state": {"terminated": {"exitCode": 0}}}, {"state": {"running": {}}}]}});
        assert_eq!(cells_of("Pod", init)[2], "Init:1/2");
        let deleting = json!({"metadata": {"name": "p", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Running"}});
        assert_eq!(cells_of("Pod", deleting)[2], "Terminating");
    }

    #[test]
    fn workload_and_service_columns() {
        let deploy = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1"}, {"name": "log", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            cells_of("Deployment", deploy),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("<unknown>"),
                json!("app,log"),
                json!("nginx:1,busybox"),
                json!("app=web")
            ]
        );
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}});
        assert_eq!(
            cells_of("Service", svc),
            vec![
                json!("s"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("<unknown>"),
                json!("app=web")
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}});
        assert_eq!(cells_of("Service", lb)[3], "<pending>");
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}}, "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.37.0"}}});
        let cells = cells_of("Node", node);
        assert_eq!(
            &cells[..5],
            &[
                json!("n"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane"),
                json!("<unknown>"),
                json!("v1.37.0")
            ]
        );
    }

    #[test]
    fn jobs_cron_jobs_and_autoscalers() {
        let job = json!({"metadata": {"name": "j"}, "spec": {"completions": 2, "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            "status": {"succeeded": 2, "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:00:42Z",
                "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(
            cells_of("Job", job)[..5],
            [
                json!("j"),
                json!("Complete"),
                json!("2/2"),
                json!("42s"),
                json!("<unknown>")
            ]
        );
        let queue = json!({"metadata": {"name": "q"}, "spec": {"parallelism": 3, "template": {}},
            "status": {"succeeded": 1, "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]}});
        assert_eq!(
            cells_of("Job", queue)[1..3],
            [json!("SuccessCriteriaMet"), json!("1/1 of 3")]
        );
        let single = json!({"metadata": {"name": "s", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"parallelism": 1, "template": {}}});
        assert_eq!(
            cells_of("Job", single)[1..3],
            [json!("Terminating"), json!("0/1")]
        );
        let cron = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/5 * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "hello", "image": "busybox"}]}}}}},
            "status": {"lastScheduleTime": "2024-01-01T00:55:00Z"}});
        assert_eq!(
            cells_of("CronJob", cron),
            vec![
                json!("c"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!(false),
                json!(0),
                json!("5m"),
                json!("<unknown>"),
                json!("hello"),
                json!("busybox"),
                json!("<none>")
            ]
        );
        let hpa = json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5, "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]},
            "status": {"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 20}}}]}});
        assert_eq!(
            cells_of("HorizontalPodAutoscaler", hpa)[..3],
            [
                json!("h"),
                json!("Deployment/web"),
                json!("cpu: 20%/50%, memory: <unknown>/100Mi")
            ]
        );
        let v1 = json!({"metadata": {"name": "h"}, "spec": {"targetCPUUtilizationPercentage": 80}});
        assert_eq!(
            cells_of("HorizontalPodAutoscaler", v1)[2],
            "cpu: <unknown>/80%"
        );
    }

    #[test]
    fn every_served_kind_has_its_own_columns() {
        for resource in crate::Registry::builtin().resources() {
            let names: Vec<String> = columns(resource.kind)
                .iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect();
            assert_ne!(names, ["Name", "Age"], "{}", resource.kind);
        }
    }

    #[test]
    fn wide_columns_have_priority_one() {
        let pod = columns("Pod");
        let names: Vec<&str> = pod
            .iter()
            .filter(|c| c["priority"] == 0)
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert!(
            pod.iter()
                .any(|c| c["name"] == "Node" && c["priority"] == 1)
        );
        let cm = columns("ConfigMap");
        assert_eq!(
            cm.iter()
                .filter_map(|c| c["name"].as_str())
                .collect::<Vec<_>>(),
            ["Name", "Data", "Age"]
        );
    }
}
