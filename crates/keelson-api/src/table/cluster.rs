//! Columns of the configuration, storage, networking, policy, access-control and event
//! kinds, as `kubectl get` shows them on Kubernetes. Each kind here has its whole layout
//! (some put AGE elsewhere, or show CREATED AT, or no NAME first at all).

use serde_json::{Value, json};

use super::{AGE, Column, NAME, age, col, format_selector, int, or_none, s};
use crate::meta::{human_duration, parse_timestamp};

/// The whole column layout of `kind`, when this file has it.
pub(super) fn columns(kind: &str) -> Option<Vec<Column>> {
    Some(match kind {
        "Event" => event_columns(),
        "Endpoints" => vec![
            NAME,
            col(
                "Endpoints",
                "string",
                0,
                "Endpoints of the service.",
                endpoints,
            ),
            AGE,
        ],
        "EndpointSlice" => vec![
            NAME,
            col(
                "AddressType",
                "string",
                0,
                "The IP protocol of the addresses.",
                |o, _| json!(s(&o["addressType"])),
            ),
            col("Ports", "string", 0, "The ports of the slice.", |o, _| {
                let ports: Vec<String> = list(&o["ports"])
                    .iter()
                    .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
                    .collect();
                json!(if ports.is_empty() {
                    "<unset>".to_owned()
                } else {
                    ports.join(",")
                })
            }),
            col(
                "Endpoints",
                "string",
                0,
                "The addresses of the endpoints.",
                |o, _| {
                    let addresses: Vec<String> = list(&o["endpoints"])
                        .iter()
                        .flat_map(|e| list(&e["addresses"]).iter())
                        .filter_map(|a| a.as_str().map(str::to_owned))
                        .collect();
                    match at_most(addresses, 3) {
                        text if text.is_empty() => json!("<unset>"),
                        text => json!(text),
                    }
                },
            ),
            AGE,
        ],
        "ServiceAccount" => vec![
            NAME,
            col(
                "Secrets",
                "integer",
                0,
                "The secrets of the service account.",
                |o, _| json!(list(&o["secrets"]).len()),
            ),
            AGE,
        ],
        "ControllerRevision" => vec![
            NAME,
            col(
                "Controller",
                "string",
                0,
                "The controller of the revision.",
                controller_of,
            ),
            col("Revision", "integer", 0, "The revision number.", |o, _| {
                json!(int(&o["revision"]))
            }),
            AGE,
        ],
        "PersistentVolume" => vec![
            NAME,
            col(
                "Capacity",
                "string",
                0,
                "The capacity of the volume.",
                |o, _| json!(s(&o["spec"]["capacity"]["storage"])),
            ),
            col(
                "Access Modes",
                "string",
                0,
                "The ways the volume can be mounted.",
                |o, _| access_modes(&o["spec"]["accessModes"]),
            ),
            col(
                "Reclaim Policy",
                "string",
                0,
                "What happens to the volume when released from its claim.",
                |o, _| {
                    json!(
                        o["spec"]["persistentVolumeReclaimPolicy"]
                            .as_str()
                            .unwrap_or("Retain")
                    )
                },
            ),
            col("Status", "string", 0, "The phase of the volume.", |o, _| {
                json!(s(&o["status"]["phase"]))
            }),
            col(
                "Claim",
                "string",
                0,
                "The claim bound to the volume.",
                |o, _| {
                    let claim = &o["spec"]["claimRef"];
                    json!(if claim.is_object() {
                        format!("{}/{}", s(&claim["namespace"]), s(&claim["name"]))
                    } else {
                        String::new()
                    })
                },
            ),
            col(
                "StorageClass",
                "string",
                0,
                "The storage class of the volume.",
                |o, _| json!(s(&o["spec"]["storageClassName"])),
            ),
            col(
                "VolumeAttributesClass",
                "string",
                0,
                "The volume attributes class of the volume.",
                |o, _| unset(&o["spec"]["volumeAttributesClassName"]),
            ),
            col(
                "Reason",
                "string",
                0,
                "Why the volume is in its phase.",
                |o, _| json!(s(&o["status"]["reason"])),
            ),
            AGE,
            col(
                "VolumeMode",
                "string",
                1,
                "Whether the volume is a filesystem or a block device.",
                |o, _| json!(o["spec"]["volumeMode"].as_str().unwrap_or("Filesystem")),
            ),
        ],
        "PersistentVolumeClaim" => vec![
            NAME,
            col("Status", "string", 0, "The phase of the claim.", |o, _| {
                json!(s(&o["status"]["phase"]))
            }),
            col("Volume", "string", 0, "The bound volume.", |o, _| {
                json!(s(&o["spec"]["volumeName"]))
            }),
            col(
                "Capacity",
                "string",
                0,
                "The capacity of the bound volume.",
                |o, _| json!(s(&o["status"]["capacity"]["storage"])),
            ),
            col(
                "Access Modes",
                "string",
                0,
                "The ways the bound volume can be mounted.",
                |o, _| access_modes(&o["status"]["accessModes"]),
            ),
            col(
                "StorageClass",
                "string",
                0,
                "The storage class of the claim.",
                |o, _| json!(s(&o["spec"]["storageClassName"])),
            ),
            col(
                "VolumeAttributesClass",
                "string",
                0,
                "The volume attributes class of the claim.",
                |o, _| unset(&o["status"]["currentVolumeAttributesClassName"]),
            ),
            AGE,
            col(
                "VolumeMode",
                "string",
                1,
                "Whether the claim is for a filesystem or a block device.",
                |o, _| json!(o["spec"]["volumeMode"].as_str().unwrap_or("Filesystem")),
            ),
        ],
        "StorageClass" => vec![
            col(
                "Name",
                "string",
                0,
                "Name must be unique within a namespace.",
                |o, _| {
                    let default = o["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                        == "true";
                    let name = s(&o["metadata"]["name"]);
                    json!(if default {
                        format!("{name} (default)")
                    } else {
                        name.to_owned()
                    })
                },
            ),
            col(
                "Provisioner",
                "string",
                0,
                "The provisioner of the class.",
                |o, _| json!(s(&o["provisioner"])),
            ),
            col(
                "ReclaimPolicy",
                "string",
                0,
                "What happens to volumes of the class when released.",
                |o, _| json!(o["reclaimPolicy"].as_str().unwrap_or("Delete")),
            ),
            col(
                "VolumeBindingMode",
                "string",
                0,
                "When volumes of the class are bound.",
                |o, _| json!(o["volumeBindingMode"].as_str().unwrap_or("Immediate")),
            ),
            col(
                "AllowVolumeExpansion",
                "string",
                0,
                "Whether volumes of the class can grow.",
                |o, _| json!(o["allowVolumeExpansion"] == true),
            ),
            AGE,
        ],
        "ResourceQuota" => vec![
            NAME,
            AGE,
            col(
                "Request",
                "string",
                0,
                "Used and hard request quotas.",
                |o, _| quota(o, false),
            ),
            col(
                "Limit",
                "string",
                0,
                "Used and hard limit quotas.",
                |o, _| quota(o, true),
            ),
        ],
        "LimitRange" | "Role" | "ClusterRole" => vec![NAME, CREATED_AT],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            NAME,
            col("Role", "string", 0, "The role bound.", |o, _| {
                json!(format!(
                    "{}/{}",
                    s(&o["roleRef"]["kind"]),
                    s(&o["roleRef"]["name"])
                ))
            }),
            AGE,
            col("Users", "string", 1, "The users bound.", |o, _| {
                subjects(o, "User")
            }),
            col("Groups", "string", 1, "The groups bound.", |o, _| {
                subjects(o, "Group")
            }),
            col(
                "ServiceAccounts",
                "string",
                1,
                "The service accounts bound.",
                |o, _| subjects(o, "ServiceAccount"),
            ),
        ],
        "NetworkPolicy" => vec![
            NAME,
            col(
                "Pod-Selector",
                "string",
                0,
                "The pods the policy applies to.",
                |o, _| format_selector(&o["spec"]["podSelector"]),
            ),
            AGE,
        ],
        "Ingress" => vec![
            NAME,
            col(
                "Class",
                "string",
                0,
                "The ingress class of the ingress.",
                |o, _| or_none(s(&o["spec"]["ingressClassName"]).to_owned()),
            ),
            col(
                "Hosts",
                "string",
                0,
                "The hosts of the rules.",
                ingress_hosts,
            ),
            col(
                "Address",
                "string",
                0,
                "Where the ingress is reachable.",
                |o, _| {
                    let addresses: Vec<&str> = list(&o["status"]["loadBalancer"]["ingress"])
                        .iter()
                        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                        .collect();
                    json!(addresses.join(","))
                },
            ),
            col("Ports", "string", 0, "The ports served.", |o, _| {
                json!(if list(&o["spec"]["tls"]).is_empty() {
                    "80"
                } else {
                    "80, 443"
                })
            }),
            AGE,
        ],
        "IngressClass" => vec![
            NAME,
            col(
                "Controller",
                "string",
                0,
                "The controller that implements the class.",
                |o, _| json!(s(&o["spec"]["controller"])),
            ),
            col(
                "Parameters",
                "string",
                0,
                "The object with the class's parameters.",
                |o, _| {
                    let p = &o["spec"]["parameters"];
                    if !p.is_object() {
                        return json!("<none>");
                    }
                    let kind = match p["apiGroup"].as_str() {
                        Some(group) if !group.is_empty() => format!("{}.{group}", s(&p["kind"])),
                        _ => s(&p["kind"]).to_owned(),
                    };
                    json!(format!("{kind}/{}", s(&p["name"])))
                },
            ),
            AGE,
        ],
        "Lease" => vec![
            NAME,
            col("Holder", "string", 0, "The holder of the lease.", |o, _| {
                json!(s(&o["spec"]["holderIdentity"]))
            }),
            AGE,
        ],
        "PriorityClass" => vec![
            NAME,
            col(
                "Value",
                "integer",
                0,
                "The priority of pods of the class.",
                |o, _| json!(int(&o["value"])),
            ),
            col(
                "Global-Default",
                "boolean",
                0,
                "Whether pods without a class get this one.",
                |o, _| json!(o["globalDefault"] == true),
            ),
            AGE,
            col(
                "PreemptionPolicy",
                "string",
                0,
                "Whether pods of the class may preempt others.",
                |o, _| {
                    json!(
                        o["preemptionPolicy"]
                            .as_str()
                            .unwrap_or("PreemptLowerPriority")
                    )
                },
            ),
        ],
        "PodDisruptionBudget" => vec![
            NAME,
            col(
                "Min Available",
                "string",
                0,
                "The pods that must stay available.",
                |o, _| not_applicable(&o["spec"]["minAvailable"]),
            ),
            col(
                "Max Unavailable",
                "string",
                0,
                "The pods that may be unavailable.",
                |o, _| not_applicable(&o["spec"]["maxUnavailable"]),
            ),
            col(
                "Allowed Disruptions",
                "integer",
                0,
                "How many pods may be disrupted now.",
                |o, _| json!(int(&o["status"]["disruptionsAllowed"])),
            ),
            AGE,
        ],
        "APIService" => vec![
            NAME,
            col(
                "Service",
                "string",
                0,
                "The service that serves the API.",
                |o, _| {
                    let service = &o["spec"]["service"];
                    json!(if service.is_object() {
                        format!("{}/{}", s(&service["namespace"]), s(&service["name"]))
                    } else {
                        "Local".to_owned()
                    })
                },
            ),
            col(
                "Available",
                "string",
                0,
                "Whether the API is available.",
                |o, _| {
                    let available = list(&o["status"]["conditions"])
                        .iter()
                        .find(|c| c["type"] == "Available");
                    json!(match available {
                        None => "Unknown".to_owned(),
                        Some(c) if c["status"] == "True" => "True".to_owned(),
                        Some(c) => format!("{} ({})", s(&c["status"]), s(&c["reason"])),
                    })
                },
            ),
            AGE,
        ],
        _ => return None,
    })
}

const CREATED_AT: Column = col(
    "Created At",
    "date",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
    |o, _| json!(s(&o["metadata"]["creationTimestamp"])),
);

fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The first `max` entries joined with commas, and how many more there are.
fn at_most(entries: Vec<String>, max: usize) -> String {
    let more = entries.len().saturating_sub(max);
    let mut text = entries.into_iter().take(max).collect::<Vec<_>>().join(",");
    if more > 0 {
        text.push_str(&format!(" + {more} more..."));
    }
    text
}

fn unset(value: &Value) -> Value {
    json!(
        value
            .as_str()
            .filter(|v| !v.is_empty())
            .unwrap_or("<unset>")
    )
}

fn not_applicable(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.to_string()),
        Value::String(text) => json!(text),
        _ => json!("N/A"),
    }
}

/// Access modes as kubectl abbreviates them.
fn access_modes(modes: &Value) -> Value {
    let short: Vec<&str> = list(modes)
        .iter()
        .filter_map(|m| match m.as_str()? {
            "ReadWriteOnce" => Some("RWO"),
            "ReadOnlyMany" => Some("ROX"),
            "ReadWriteMany" => Some("RWX"),
            "ReadWriteOncePod" => Some("RWOP"),
            _ => None,
        })
        .collect();
    json!(short.join(","))
}

/// `ip:port` of the ready addresses of an `Endpoints`, at most three.
fn endpoints(o: &Value, _: i64) -> Value {
    let mut entries = Vec::new();
    for subset in list(&o["subsets"]) {
        for address in list(&subset["addresses"]) {
            let ip = s(&address["ip"]);
            let ports = list(&subset["ports"]);
            if ports.is_empty() {
                entries.push(ip.to_owned());
            }
            for port in ports {
                entries.push(format!("{ip}:{}", int(&port["port"])));
            }
        }
    }
    or_none(at_most(entries, 3))
}

/// The controlling owner as `kind.group/name`, lower-case kind and group.
fn controller_of(o: &Value, _: i64) -> Value {
    let owner = list(&o["metadata"]["ownerReferences"])
        .iter()
        .find(|r| r["controller"] == true);
    match owner {
        None => json!("<none>"),
        Some(owner) => {
            let api_version = s(&owner["apiVersion"]);
            let group = api_version.split_once('/').map_or("", |(group, _)| group);
            let kind = if group.is_empty() {
                s(&owner["kind"]).to_owned()
            } else {
                format!("{}.{group}", s(&owner["kind"]))
            };
            json!(format!("{}/{}", kind.to_lowercase(), s(&owner["name"])))
        }
    }
}

/// `name: used/hard` for each quota of one sort (limits, or requests and counts).
fn quota(o: &Value, limits: bool) -> Value {
    let mut entries: Vec<(&String, &Value)> = o["spec"]["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.starts_with("limits.") == limits)
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let text = |v: &Value| match v {
        Value::String(t) => t.clone(),
        Value::Number(n) => n.to_string(),
        _ => "0".to_owned(),
    };
    json!(
        entries
            .into_iter()
            .map(|(name, hard)| format!(
                "{name}: {}/{}",
                text(&o["status"]["used"][name.as_str()]),
                text(hard)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The subjects of one kind of a binding (service accounts as `namespace/name`).
fn subjects(o: &Value, kind: &str) -> Value {
    json!(
        list(&o["subjects"])
            .iter()
            .filter(|subject| subject["kind"] == kind)
            .map(|subject| if kind == "ServiceAccount" {
                format!("{}/{}", s(&subject["namespace"]), s(&subject["name"]))
            } else {
                s(&subject["name"]).to_owned()
            })
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn ingress_hosts(o: &Value, _: i64) -> Value {
    let hosts: Vec<String> = list(&o["spec"]["rules"])
        .iter()
        .map(|rule| match s(&rule["host"]) {
            "" => "*".to_owned(),
            host => host.to_owned(),
        })
        .collect();
    let shown = at_most(hosts, 4);
    json!(if shown.is_empty() {
        "*".to_owned()
    } else {
        shown
    })
}

/// Events, core (`v1`) or `events.k8s.io/v1`: the fields differ in name only.
fn event_columns() -> Vec<Column> {
    fn involved(o: &Value) -> &Value {
        if o["involvedObject"].is_object() {
            &o["involvedObject"]
        } else {
            &o["regarding"]
        }
    }
    fn seen(o: &Value, now: i64, fields: &[&str]) -> Value {
        let at = fields.iter().find_map(|field| {
            let value = field.split('.').fold(o, |v, part| &v[part]);
            value.as_str().and_then(parse_timestamp)
        });
        match at {
            Some(t) => json!(human_duration(now - t)),
            None => age(o, now),
        }
    }
    vec![
        col(
            "Last Seen",
            "string",
            0,
            "The last time the event was seen.",
            |o, now| {
                seen(
                    o,
                    now,
                    &[
                        "series.lastObservedTime",
                        "lastTimestamp",
                        "deprecatedLastTimestamp",
                        "eventTime",
                    ],
                )
            },
        ),
        col("Type", "string", 0, "The type of the event.", |o, _| {
            json!(s(&o["type"]))
        }),
        col("Reason", "string", 0, "Why the event happened.", |o, _| {
            json!(s(&o["reason"]))
        }),
        col(
            "Object",
            "string",
            0,
            "The object the event is about.",
            |o, _| {
                let object = involved(o);
                json!(format!(
                    "{}/{}",
                    s(&object["kind"]).to_lowercase(),
                    s(&object["name"])
                ))
            },
        ),
        col(
            "Subobject",
            "string",
            1,
            "The part of the object the event is about.",
            |o, _| json!(s(&involved(o)["fieldPath"])),
        ),
        col("Source", "string", 1, "Who reported the event.", |o, _| {
            let component = o["source"]["component"]
                .as_str()
                .or(o["reportingController"].as_str())
                .or(o["reportingComponent"].as_str())
                .unwrap_or_default();
            let host = o["source"]["host"].as_str().unwrap_or_default();
            json!(if host.is_empty() {
                component.to_owned()
            } else {
                format!("{component}, {host}")
            })
        }),
        col("Message", "string", 0, "What happened.", |o, _| {
            json!(
                o["message"]
                    .as_str()
                    .or(o["note"].as_str())
                    .unwrap_or_default()
                    .trim()
            )
        }),
        col(
            "First Seen",
            "string",
            1,
            "The first time the event was seen.",
            |o, now| {
                seen(
                    o,
                    now,
                    &["firstTimestamp", "deprecatedFirstTimestamp", "eventTime"],
                )
            },
        ),
        col(
            "Count",
            "string",
            1,
            "How often the event happened.",
            |o, _| {
                let count = o["series"]["count"]
                    .as_i64()
                    .or(o["count"].as_i64())
                    .or(o["deprecatedCount"].as_i64())
                    .unwrap_or(1);
                json!(count)
            },
        ),
        col("Name", "string", 1, "The name of the event.", |o, _| {
            json!(s(&o["metadata"]["name"]))
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::{IncludeObject, columns as definitions, row};
    use super::*;

    fn cells(kind: &str, object: Value) -> Vec<Value> {
        let now = parse_timestamp("2024-01-01T01:00:00Z").unwrap_or(0);
        row(kind, &object, IncludeObject::None, now)["cells"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn names(kind: &str, priority: u8) -> Vec<String> {
        definitions(kind)
            .iter()
            .filter(|c| c["priority"] == priority)
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn events_lead_with_when_and_what() {
        assert_eq!(
            names("Event", 0),
            ["Last Seen", "Type", "Reason", "Object", "Message"]
        );
        let core = json!({"metadata": {"name": "web.1"}, "type": "Normal", "reason": "Scheduled",
            "involvedObject": {"kind": "Pod", "name": "web"}, "message": " Assigned ",
            "lastTimestamp": "2024-01-01T00:58:00Z", "firstTimestamp": "2024-01-01T00:00:00Z",
            "count": 3, "source": {"component": "scheduler"}});
        assert_eq!(
            cells("Event", core),
            vec![
                json!("2m"),
                json!("Normal"),
                json!("Scheduled"),
                json!("pod/web"),
                json!(""),
                json!("scheduler"),
                json!("Assigned"),
                json!("60m"),
                json!(3),
                json!("web.1")
            ]
        );
        let new_style = json!({"metadata": {"name": "e"}, "type": "Warning", "reason": "Failed",
            "regarding": {"kind": "Deployment", "name": "d"}, "note": "boom",
            "eventTime": "2024-01-01T00:59:00Z", "reportingController": "keelson"});
        let cells = cells("Event", new_style);
        assert_eq!(
            (&cells[0], &cells[3], &cells[5], &cells[6], &cells[8]),
            (
                &json!("60s"),
                &json!("deployment/d"),
                &json!("keelson"),
                &json!("boom"),
                &json!(1)
            )
        );
    }

    #[test]
    fn storage_columns() {
        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany"], "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "local-path"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            cells("PersistentVolume", pv),
            vec![
                json!("pv1"),
                json!("1Gi"),
                json!("RWO,ROX"),
                json!("Delete"),
                json!("Bound"),
                json!("default/data"),
                json!("local-path"),
                json!("<unset>"),
                json!(""),
                json!("<unknown>"),
                json!("Filesystem")
            ]
        );
        let pending = json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "local-path"}, "status": {"phase": "Pending"}});
        assert_eq!(
            cells("PersistentVolumeClaim", pending)[..7],
            [
                json!("data"),
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("local-path"),
                json!("<unset>")
            ]
        );
        let class = json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "keelson.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            cells("StorageClass", class)[..5],
            [
                json!("local-path (default)"),
                json!("keelson.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false)
            ]
        );
    }

    #[test]
    fn access_control_and_policy_columns() {
        assert_eq!(names("Role", 0), ["Name", "Created At"]);
        let binding = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"},
                         {"kind": "Group", "name": "devs"}, {"kind": "User", "name": "joe"}]});
        assert_eq!(
            cells("RoleBinding", binding),
            vec![
                json!("b"),
                json!("ClusterRole/view"),
                json!("<unknown>"),
                json!("jane, joe"),
                json!("devs"),
                json!("ns/sa")
            ]
        );
        let quota = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10", "requests.cpu": "1", "limits.memory": "2Gi"}},
            "status": {"used": {"pods": "2", "requests.cpu": "100m"}}});
        assert_eq!(
            cells("ResourceQuota", quota)[2..],
            [
                json!("pods: 2/10, requests.cpu: 100m/1"),
                json!("limits.memory: 0/2Gi")
            ]
        );
        let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            cells("PodDisruptionBudget", pdb)[1..4],
            [json!("50%"), json!("N/A"), json!(1)]
        );
        let priority = json!({"metadata": {"name": "high"}, "value": 1000});
        assert_eq!(
            cells("PriorityClass", priority),
            vec![
                json!("high"),
                json!(1000),
                json!(false),
                json!("<unknown>"),
                json!("PreemptLowerPriority")
            ]
        );
    }

    #[test]
    fn networking_and_discovery_columns() {
        let endpoints = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [
            {"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}], "ports": [{"port": 80}]}]});
        assert_eq!(
            cells("Endpoints", endpoints)[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
        );
        assert_eq!(
            cells("Endpoints", json!({"metadata": {"name": "e"}}))[1],
            "<none>"
        );
        let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4", "ports": [{"port": 80}, {"port": 443}],
            "endpoints": [{"addresses": ["10.0.0.1"]}]});
        assert_eq!(
            cells("EndpointSlice", slice)[1..4],
            [json!("IPv4"), json!("80,443"), json!("10.0.0.1")]
        );
        let ingress = json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": "nginx", "tls": [{}],
            "rules": [{"host": "a.example"}, {}]}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}});
        assert_eq!(
            cells("Ingress", ingress)[1..5],
            [
                json!("nginx"),
                json!("a.example,*"),
                json!("1.2.3.4"),
                json!("80, 443")
            ]
        );
        let policy = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        assert_eq!(cells("NetworkPolicy", policy)[1], "<none>");
        let revision = json!({"metadata": {"name": "web-1", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 1});
        assert_eq!(
            cells("ControllerRevision", revision)[1..3],
            [json!("statefulset.apps/web"), json!(1)]
        );
    }
}
