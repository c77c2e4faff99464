//! Protobuf converters for the kinds kubectl's other imperative commands create: `create
//! job|cronjob|role|rolebinding|clusterrole|clusterrolebinding|quota|priorityclass|
//! poddisruptionbudget|ingress|service`, and `autoscale`. Same rules as the rest: take what is
//! understood, refuse what is left unless it is all zeros.

use k8s_pb::api::autoscaling::v2 as autoscaling;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::networking::v1 as networking;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::api::scheduling::v1 as scheduling;
use serde_json::{Map, Value, json};

use super::{
    Result, done, int_or_string, label_selector, metadata, pod_template, put_int, put_list,
    put_map, put_str, put_true, quantities,
};

fn job_spec(mut spec: batch::JobSpec) -> Result<Value> {
    let mut s = Map::new();
    put_int(&mut s, "parallelism", spec.parallelism.take());
    put_int(&mut s, "completions", spec.completions.take());
    put_int(
        &mut s,
        "activeDeadlineSeconds",
        spec.active_deadline_seconds.take(),
    );
    put_int(&mut s, "backoffLimit", spec.backoff_limit.take());
    put_int(
        &mut s,
        "backoffLimitPerIndex",
        spec.backoff_limit_per_index.take(),
    );
    put_int(&mut s, "maxFailedIndexes", spec.max_failed_indexes.take());
    if let Some(manual) = spec.manual_selector.take() {
        s.insert("manualSelector".into(), json!(manual));
    }
    if let Some(selector) = spec.selector.take() {
        s.insert("selector".into(), label_selector(selector)?);
    }
    if let Some(template) = spec.template.take() {
        s.insert("template".into(), pod_template(template)?);
    }
    put_int(
        &mut s,
        "ttlSecondsAfterFinished",
        spec.ttl_seconds_after_finished.take(),
    );
    put_str(&mut s, "completionMode", spec.completion_mode.take());
    if let Some(suspend) = spec.suspend.take() {
        s.insert("suspend".into(), json!(suspend));
    }
    put_str(
        &mut s,
        "podReplacementPolicy",
        spec.pod_replacement_policy.take(),
    );
    put_str(&mut s, "managedBy", spec.managed_by.take());
    done(spec, "JobSpec")?;
    Ok(Value::Object(s))
}

pub(super) fn job(mut j: batch::Job) -> Result<Value> {
    let mut out = json!({"metadata": metadata(j.metadata.take())?});
    if let Some(spec) = j.spec.take() {
        out["spec"] = job_spec(spec)?;
    }
    j.status = None;
    done(j, "Job")?;
    Ok(out)
}

pub(super) fn cron_job(mut c: batch::CronJob) -> Result<Value> {
    let mut out = json!({"metadata": metadata(c.metadata.take())?});
    if let Some(mut spec) = c.spec.take() {
        let mut s = Map::new();
        put_str(&mut s, "schedule", spec.schedule.take());
        put_str(&mut s, "timeZone", spec.time_zone.take());
        put_int(
            &mut s,
            "startingDeadlineSeconds",
            spec.starting_deadline_seconds.take(),
        );
        put_str(&mut s, "concurrencyPolicy", spec.concurrency_policy.take());
        if let Some(suspend) = spec.suspend.take() {
            s.insert("suspend".into(), json!(suspend));
        }
        if let Some(mut template) = spec.job_template.take() {
            let mut t = json!({"metadata": metadata(template.metadata.take())?});
            if let Some(job) = template.spec.take() {
                t["spec"] = job_spec(job)?;
            }
            done(template, "JobTemplateSpec")?;
            s.insert("jobTemplate".into(), t);
        }
        put_int(
            &mut s,
            "successfulJobsHistoryLimit",
            spec.successful_jobs_history_limit.take(),
        );
        put_int(
            &mut s,
            "failedJobsHistoryLimit",
            spec.failed_jobs_history_limit.take(),
        );
        done(spec, "CronJobSpec")?;
        out["spec"] = Value::Object(s);
    }
    c.status = None;
    done(c, "CronJob")?;
    Ok(out)
}

fn rules(rules: Vec<rbac::PolicyRule>) -> Result<Value> {
    rules
        .into_iter()
        .map(|mut r| {
            let mut rule = Map::new();
            put_list(&mut rule, "verbs", std::mem::take(&mut r.verbs));
            put_list(&mut rule, "apiGroups", std::mem::take(&mut r.api_groups));
            put_list(&mut rule, "resources", std::mem::take(&mut r.resources));
            put_list(
                &mut rule,
                "resourceNames",
                std::mem::take(&mut r.resource_names),
            );
            put_list(
                &mut rule,
                "nonResourceURLs",
                std::mem::take(&mut r.non_resource_ur_ls),
            );
            done(r, "PolicyRule").map(|()| Value::Object(rule))
        })
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

pub(super) fn role(mut r: rbac::Role) -> Result<Value> {
    let out = json!({"metadata": metadata(r.metadata.take())?, "rules": rules(std::mem::take(&mut r.rules))?});
    done(r, "Role")?;
    Ok(out)
}

pub(super) fn cluster_role(mut r: rbac::ClusterRole) -> Result<Value> {
    let mut out = json!({"metadata": metadata(r.metadata.take())?, "rules": rules(std::mem::take(&mut r.rules))?});
    if let Some(mut aggregation) = r.aggregation_rule.take() {
        let selectors = std::mem::take(&mut aggregation.cluster_role_selectors)
            .into_iter()
            .map(label_selector)
            .collect::<Result<Vec<_>>>()?;
        done(aggregation, "AggregationRule")?;
        out["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
    }
    done(r, "ClusterRole")?;
    Ok(out)
}

fn binding(
    meta: Option<k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    subjects: Vec<rbac::Subject>,
    role_ref: Option<rbac::RoleRef>,
) -> Result<Value> {
    let mut out = json!({"metadata": metadata(meta)?});
    let subjects = subjects
        .into_iter()
        .map(|mut s| {
            let mut subject = Map::new();
            put_str(&mut subject, "kind", s.kind.take());
            put_str(&mut subject, "apiGroup", s.api_group.take());
            put_str(&mut subject, "name", s.name.take());
            put_str(&mut subject, "namespace", s.namespace.take());
            done(s, "Subject").map(|()| Value::Object(subject))
        })
        .collect::<Result<Vec<_>>>()?;
    if !subjects.is_empty() {
        out["subjects"] = Value::Array(subjects);
    }
    if let Some(mut r) = role_ref {
        let mut role = Map::new();
        put_str(&mut role, "apiGroup", r.api_group.take());
        put_str(&mut role, "kind", r.kind.take());
        put_str(&mut role, "name", r.name.take());
        done(r, "RoleRef")?;
        out["roleRef"] = Value::Object(role);
    }
    Ok(out)
}

pub(super) fn role_binding(mut b: rbac::RoleBinding) -> Result<Value> {
    let out = binding(
        b.metadata.take(),
        std::mem::take(&mut b.subjects),
        b.role_ref.take(),
    )?;
    done(b, "RoleBinding")?;
    Ok(out)
}

pub(super) fn cluster_role_binding(mut b: rbac::ClusterRoleBinding) -> Result<Value> {
    let out = binding(
        b.metadata.take(),
        std::mem::take(&mut b.subjects),
        b.role_ref.take(),
    )?;
    done(b, "ClusterRoleBinding")?;
    Ok(out)
}

pub(super) fn resource_quota(mut q: core::ResourceQuota) -> Result<Value> {
    let mut out = json!({"metadata": metadata(q.metadata.take())?});
    if let Some(mut spec) = q.spec.take() {
        let mut s = Map::new();
        if !spec.hard.is_empty() {
            s.insert("hard".into(), quantities(std::mem::take(&mut spec.hard)));
        }
        put_list(&mut s, "scopes", std::mem::take(&mut spec.scopes));
        if let Some(mut selector) = spec.scope_selector.take() {
            let expressions = std::mem::take(&mut selector.match_expressions)
                .into_iter()
                .map(|mut e| {
                    let mut expression = Map::new();
                    put_str(&mut expression, "scopeName", e.scope_name.take());
                    put_str(&mut expression, "operator", e.operator.take());
                    put_list(&mut expression, "values", std::mem::take(&mut e.values));
                    done(e, "ScopedResourceSelectorRequirement").map(|()| Value::Object(expression))
                })
                .collect::<Result<Vec<_>>>()?;
            done(selector, "ScopeSelector")?;
            s.insert(
                "scopeSelector".into(),
                json!({"matchExpressions": expressions}),
            );
        }
        done(spec, "ResourceQuotaSpec")?;
        out["spec"] = Value::Object(s);
    }
    q.status = None;
    done(q, "ResourceQuota")?;
    Ok(out)
}

pub(super) fn priority_class(mut p: scheduling::PriorityClass) -> Result<Value> {
    let mut out = Map::new();
    out.insert("metadata".into(), metadata(p.metadata.take())?);
    out.insert("value".into(), json!(p.value.take().unwrap_or(0)));
    put_true(&mut out, "globalDefault", p.global_default.take());
    put_str(&mut out, "description", p.description.take());
    put_str(&mut out, "preemptionPolicy", p.preemption_policy.take());
    done(p, "PriorityClass")?;
    Ok(Value::Object(out))
}

pub(super) fn pod_disruption_budget(mut b: policy::PodDisruptionBudget) -> Result<Value> {
    let mut out = json!({"metadata": metadata(b.metadata.take())?});
    if let Some(mut spec) = b.spec.take() {
        let mut s = Map::new();
        if let Some(v) = spec.min_available.take() {
            s.insert("minAvailable".into(), int_or_string(v));
        }
        if let Some(v) = spec.max_unavailable.take() {
            s.insert("maxUnavailable".into(), int_or_string(v));
        }
        if let Some(selector) = spec.selector.take() {
            s.insert("selector".into(), label_selector(selector)?);
        }
        put_str(
            &mut s,
            "unhealthyPodEvictionPolicy",
            spec.unhealthy_pod_eviction_policy.take(),
        );
        done(spec, "PodDisruptionBudgetSpec")?;
        out["spec"] = Value::Object(s);
    }
    b.status = None;
    done(b, "PodDisruptionBudget")?;
    Ok(out)
}

fn ingress_backend(mut b: networking::IngressBackend) -> Result<Value> {
    let mut out = Map::new();
    if let Some(mut service) = b.service.take() {
        let mut s = Map::new();
        put_str(&mut s, "name", service.name.take());
        if let Some(mut port) = service.port.take() {
            let mut p = Map::new();
            put_str(&mut p, "name", port.name.take());
            put_int(&mut p, "number", port.number.take().filter(|n| *n != 0));
            done(port, "ServiceBackendPort")?;
            s.insert("port".into(), Value::Object(p));
        }
        done(service, "IngressServiceBackend")?;
        out.insert("service".into(), Value::Object(s));
    }
    done(b, "IngressBackend")?;
    Ok(Value::Object(out))
}

pub(super) fn ingress(mut i: networking::Ingress) -> Result<Value> {
    let mut out = json!({"metadata": metadata(i.metadata.take())?});
    if let Some(mut spec) = i.spec.take() {
        let mut s = Map::new();
        put_str(&mut s, "ingressClassName", spec.ingress_class_name.take());
        if let Some(backend) = spec.default_backend.take() {
            s.insert("defaultBackend".into(), ingress_backend(backend)?);
        }
        let tls = std::mem::take(&mut spec.tls)
            .into_iter()
            .map(|mut t| {
                let mut entry = Map::new();
                put_list(&mut entry, "hosts", std::mem::take(&mut t.hosts));
                put_str(&mut entry, "secretName", t.secret_name.take());
                done(t, "IngressTLS").map(|()| Value::Object(entry))
            })
            .collect::<Result<Vec<_>>>()?;
        if !tls.is_empty() {
            s.insert("tls".into(), Value::Array(tls));
        }
        let rules = std::mem::take(&mut spec.rules)
            .into_iter()
            .map(|mut r| {
                let mut rule = Map::new();
                put_str(&mut rule, "host", r.host.take());
                if let Some(mut value) = r.ingress_rule_value.take()
                    && let Some(mut http) = value.http.take()
                {
                    let paths = std::mem::take(&mut http.paths)
                        .into_iter()
                        .map(|mut p| {
                            let mut path = Map::new();
                            put_str(&mut path, "path", p.path.take());
                            put_str(&mut path, "pathType", p.path_type.take());
                            if let Some(backend) = p.backend.take() {
                                path.insert("backend".into(), ingress_backend(backend)?);
                            }
                            done(p, "HTTPIngressPath").map(|()| Value::Object(path))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    done(http, "HTTPIngressRuleValue")?;
                    done(value, "IngressRuleValue")?;
                    rule.insert("http".into(), json!({"paths": paths}));
                }
                done(r, "IngressRule").map(|()| Value::Object(rule))
            })
            .collect::<Result<Vec<_>>>()?;
        if !rules.is_empty() {
            s.insert("rules".into(), Value::Array(rules));
        }
        done(spec, "IngressSpec")?;
        out["spec"] = Value::Object(s);
    }
    i.status = None;
    done(i, "Ingress")?;
    Ok(out)
}

pub(super) fn service(mut svc: core::Service) -> Result<Value> {
    let mut out = json!({"metadata": metadata(svc.metadata.take())?});
    if let Some(mut spec) = svc.spec.take() {
        let mut s = Map::new();
        let ports = std::mem::take(&mut spec.ports)
            .into_iter()
            .map(|mut p| {
                let mut port = Map::new();
                put_str(&mut port, "name", p.name.take());
                put_str(&mut port, "protocol", p.protocol.take());
                put_str(&mut port, "appProtocol", p.app_protocol.take());
                put_int(&mut port, "port", p.port.take());
                if let Some(target) = p.target_port.take() {
                    let target = int_or_string(target);
                    if target != json!(0) {
                        port.insert("targetPort".into(), target);
                    }
                }
                put_int(
                    &mut port,
                    "nodePort",
                    p.node_port.take().filter(|n| *n != 0),
                );
                done(p, "ServicePort").map(|()| Value::Object(port))
            })
            .collect::<Result<Vec<_>>>()?;
        if !ports.is_empty() {
            s.insert("ports".into(), Value::Array(ports));
        }
        put_map(&mut s, "selector", std::mem::take(&mut spec.selector));
        put_str(&mut s, "clusterIP", spec.cluster_ip.take());
        put_list(&mut s, "clusterIPs", std::mem::take(&mut spec.cluster_ips));
        put_str(&mut s, "type", spec.r#type.take());
        put_list(
            &mut s,
            "externalIPs",
            std::mem::take(&mut spec.external_ips),
        );
        put_str(&mut s, "sessionAffinity", spec.session_affinity.take());
        put_str(&mut s, "loadBalancerIP", spec.load_balancer_ip.take());
        put_list(
            &mut s,
            "loadBalancerSourceRanges",
            std::mem::take(&mut spec.load_balancer_source_ranges),
        );
        put_str(&mut s, "externalName", spec.external_name.take());
        put_str(
            &mut s,
            "externalTrafficPolicy",
            spec.external_traffic_policy.take(),
        );
        put_int(
            &mut s,
            "healthCheckNodePort",
            spec.health_check_node_port.take().filter(|n| *n != 0),
        );
        put_true(
            &mut s,
            "publishNotReadyAddresses",
            spec.publish_not_ready_addresses.take(),
        );
        put_list(&mut s, "ipFamilies", std::mem::take(&mut spec.ip_families));
        put_str(&mut s, "ipFamilyPolicy", spec.ip_family_policy.take());
        if let Some(allocate) = spec.allocate_load_balancer_node_ports.take() {
            s.insert("allocateLoadBalancerNodePorts".into(), json!(allocate));
        }
        put_str(&mut s, "loadBalancerClass", spec.load_balancer_class.take());
        put_str(
            &mut s,
            "internalTrafficPolicy",
            spec.internal_traffic_policy.take(),
        );
        put_str(
            &mut s,
            "trafficDistribution",
            spec.traffic_distribution.take(),
        );
        done(spec, "ServiceSpec")?;
        out["spec"] = Value::Object(s);
    }
    svc.status = None;
    done(svc, "Service")?;
    Ok(out)
}

fn metric_target(mut t: autoscaling::MetricTarget) -> Result<Value> {
    let mut out = Map::new();
    put_str(&mut out, "type", t.r#type.take());
    if let Some(value) = t.value.take() {
        out.insert("value".into(), json!(value.string.unwrap_or_default()));
    }
    if let Some(value) = t.average_value.take() {
        out.insert(
            "averageValue".into(),
            json!(value.string.unwrap_or_default()),
        );
    }
    put_int(&mut out, "averageUtilization", t.average_utilization.take());
    done(t, "MetricTarget")?;
    Ok(Value::Object(out))
}

pub(super) fn horizontal_pod_autoscaler(
    mut h: autoscaling::HorizontalPodAutoscaler,
) -> Result<Value> {
    let mut out = json!({"metadata": metadata(h.metadata.take())?});
    if let Some(mut spec) = h.spec.take() {
        let mut s = Map::new();
        if let Some(mut target) = spec.scale_target_ref.take() {
            let mut t = Map::new();
            put_str(&mut t, "kind", target.kind.take());
            put_str(&mut t, "name", target.name.take());
            put_str(&mut t, "apiVersion", target.api_version.take());
            done(target, "CrossVersionObjectReference")?;
            s.insert("scaleTargetRef".into(), Value::Object(t));
        }
        put_int(&mut s, "minReplicas", spec.min_replicas.take());
        put_int(&mut s, "maxReplicas", spec.max_replicas.take());
        let metrics = std::mem::take(&mut spec.metrics)
            .into_iter()
            .map(|mut m| {
                let mut metric = Map::new();
                put_str(&mut metric, "type", m.r#type.take());
                if let Some(mut resource) = m.resource.take() {
                    let mut r = Map::new();
                    put_str(&mut r, "name", resource.name.take());
                    if let Some(target) = resource.target.take() {
                        r.insert("target".into(), metric_target(target)?);
                    }
                    done(resource, "ResourceMetricSource")?;
                    metric.insert("resource".into(), Value::Object(r));
                }
                done(m, "MetricSpec").map(|()| Value::Object(metric))
            })
            .collect::<Result<Vec<_>>>()?;
        if !metrics.is_empty() {
            s.insert("metrics".into(), Value::Array(metrics));
        }
        done(spec, "HorizontalPodAutoscalerSpec")?;
        out["spec"] = Value::Object(s);
    }
    h.status = None;
    done(h, "HorizontalPodAutoscaler")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{MAGIC, decode};
    use super::*;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use prost::Message;

    fn body(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn named(name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        })
    }

    #[test]
    fn jobs_as_kubectl_create_job_sends_them() {
        let job = batch::Job {
            metadata: named("once"),
            spec: Some(batch::JobSpec {
                template: Some(core::PodTemplateSpec {
                    metadata: Some(Default::default()),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("once".into()),
                            image: Some("busybox".into()),
                            command: vec!["echo".into(), "hi".into()],
                            resources: Some(Default::default()),
                            ..Default::default()
                        }],
                        restart_policy: Some("Never".into()),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: Some(Default::default()),
        };
        let object = decode(&body("batch/v1", "Job", job.encode_to_vec())).expect("job");
        assert_eq!(
            object["spec"]["template"]["spec"],
            json!({"containers": [{"name": "once", "image": "busybox", "command": ["echo", "hi"], "resources": {}}], "restartPolicy": "Never"})
        );
        assert_eq!(object["kind"], "Job");
    }

    #[test]
    fn bindings_services_and_autoscalers() {
        let binding = rbac::RoleBinding {
            metadata: named("viewers"),
            subjects: vec![rbac::Subject {
                kind: Some("User".into()),
                api_group: Some("rbac.authorization.k8s.io".into()),
                name: Some("jane".into()),
                namespace: Some(String::new()),
            }],
            role_ref: Some(rbac::RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: Some("ClusterRole".into()),
                name: Some("view".into()),
            }),
        };
        let object = decode(&body(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            binding.encode_to_vec(),
        ))
        .expect("binding");
        assert_eq!(
            (&object["subjects"], &object["roleRef"]["name"]),
            (
                &json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"}]),
                &json!("view")
            )
        );
        let service = core::Service {
            metadata: named("web"),
            spec: Some(core::ServiceSpec {
                ports: vec![core::ServicePort {
                    name: Some("80-8080".into()),
                    protocol: Some("TCP".into()),
                    port: Some(80),
                    target_port: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: Some(String::new()),
                    }),
                    node_port: Some(0),
                    ..Default::default()
                }],
                selector: [("app".to_owned(), "web".to_owned())].into(),
                r#type: Some("ClusterIP".into()),
                ..Default::default()
            }),
            status: Some(Default::default()),
        };
        let object = decode(&body("v1", "Service", service.encode_to_vec())).expect("service");
        assert_eq!(
            object["spec"],
            json!({"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                "selector": {"app": "web"}, "type": "ClusterIP"})
        );
        let hpa = autoscaling::HorizontalPodAutoscaler {
            metadata: named("web"),
            spec: Some(autoscaling::HorizontalPodAutoscalerSpec {
                scale_target_ref: Some(autoscaling::CrossVersionObjectReference {
                    kind: Some("Deployment".into()),
                    name: Some("web".into()),
                    api_version: Some("apps/v1".into()),
                }),
                min_replicas: Some(2),
                max_replicas: Some(5),
                metrics: vec![autoscaling::MetricSpec {
                    r#type: Some("Resource".into()),
                    resource: Some(autoscaling::ResourceMetricSource {
                        name: Some("cpu".into()),
                        target: Some(autoscaling::MetricTarget {
                            r#type: Some("Utilization".into()),
                            average_utilization: Some(80),
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }],
                behavior: None,
            }),
            status: Some(Default::default()),
        };
        let object = decode(&body(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            hpa.encode_to_vec(),
        ))
        .expect("hpa");
        assert_eq!(
            object["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        // A behaviour section is not read yet: refused, not dropped.
        let mut with_behavior = hpa.clone();
        if let Some(spec) = with_behavior.spec.as_mut() {
            spec.behavior = Some(autoscaling::HorizontalPodAutoscalerBehavior {
                scale_down: Some(autoscaling::HpaScalingRules {
                    stabilization_window_seconds: Some(60),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        assert!(
            decode(&body(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                with_behavior.encode_to_vec()
            ))
            .is_err()
        );
    }
}
