//! Kubernetes protobuf request bodies, as kubectl's imperative `create` commands send them,
//! turned into the JSON model the server works with.
//!
//! The wire format is the magic `k8s\0`, then a `runtime.Unknown` whose `typeMeta` names the
//! kind and whose `raw` is the object encoded per the upstream `generated.proto` (decoded
//! with k8s-pb's prost types). Each converter *takes* the fields it understands out of the
//! decoded message; anything left over is refused (never silently dropped), so a kind or
//! field not handled here yet fails with a clear error and the client can send JSON.

mod more;

use std::collections::BTreeMap;
use std::fmt::Debug;

use base64::Engine;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};

/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8] = b"k8s\0";

/// The media type of protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why a protobuf body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtobufError {
    /// Not a Kubernetes protobuf message at all.
    Malformed(String),
    /// A kind, or a field of one, this server does not read from protobuf yet.
    Unsupported(String),
}

impl std::fmt::Display for ProtobufError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtobufError::Malformed(m) => write!(f, "the protobuf body is malformed: {m}"),
            ProtobufError::Unsupported(m) => write!(f, "{m}; send the object as JSON instead"),
        }
    }
}

type Result<T> = std::result::Result<T, ProtobufError>;

fn malformed(error: prost::DecodeError) -> ProtobufError {
    ProtobufError::Malformed(error.to_string())
}

/// Reads one varint off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Whether an encoded message carries nothing but zero values: `0`, `false`, empty
/// strings, and (recursively) messages of zeros. Go writes those for every non-pointer
/// field, so what a converter did not take may hold them, and nothing else.
fn only_zeros(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let Some(key) = varint(&mut bytes) else {
            return false;
        };
        let ok = match key & 7 {
            0 => varint(&mut bytes) == Some(0),
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                let zero = bytes.len() >= width && bytes[..width].iter().all(|b| *b == 0);
                bytes = bytes.get(width..).unwrap_or_default();
                zero
            }
            2 => match varint(&mut bytes).and_then(|len| usize::try_from(len).ok()) {
                Some(len) if len <= bytes.len() => {
                    let (inner, rest) = bytes.split_at(len);
                    bytes = rest;
                    inner.is_empty() || only_zeros(inner)
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Fails unless what is left of a message after conversion is only zero values.
fn done<T: Message + Debug>(rest: T, what: &str) -> Result<()> {
    if only_zeros(&rest.encode_to_vec()) {
        Ok(())
    } else {
        Err(ProtobufError::Unsupported(format!(
            "fields of {what} are not read from protobuf yet: {rest:?}"
        )))
    }
}

/// Inserts a string unless it is empty (Go writes empty strings; JSON omits them).
fn put_str(out: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        out.insert(key.to_owned(), json!(value));
    }
}

fn put_map(out: &mut Map<String, Value>, key: &str, value: BTreeMap<String, String>) {
    if !value.is_empty() {
        out.insert(key.to_owned(), json!(value));
    }
}

fn put_bytes_map(out: &mut Map<String, Value>, key: &str, value: BTreeMap<String, Vec<u8>>) {
    if !value.is_empty() {
        let encoded: Map<String, Value> = value
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        out.insert(key.to_owned(), Value::Object(encoded));
    }
}

fn object_meta(mut m: meta::ObjectMeta) -> Result<Value> {
    let mut out = Map::new();
    put_str(&mut out, "name", m.name.take());
    put_str(&mut out, "generateName", m.generate_name.take());
    put_str(&mut out, "namespace", m.namespace.take());
    put_map(&mut out, "labels", std::mem::take(&mut m.labels));
    put_map(&mut out, "annotations", std::mem::take(&mut m.annotations));
    if !m.finalizers.is_empty() {
        out.insert(
            "finalizers".into(),
            json!(std::mem::take(&mut m.finalizers)),
        );
    }
    let owners: Vec<Value> = std::mem::take(&mut m.owner_references)
        .into_iter()
        .map(|mut o| {
            let mut owner = Map::new();
            put_str(&mut owner, "apiVersion", o.api_version.take());
            put_str(&mut owner, "kind", o.kind.take());
            put_str(&mut owner, "name", o.name.take());
            put_str(&mut owner, "uid", o.uid.take());
            if let Some(c) = o.controller.take() {
                owner.insert("controller".into(), json!(c));
            }
            if let Some(b) = o.block_owner_deletion.take() {
                owner.insert("blockOwnerDeletion".into(), json!(b));
            }
            done(o, "OwnerReference").map(|()| Value::Object(owner))
        })
        .collect::<Result<_>>()?;
    if !owners.is_empty() {
        out.insert("ownerReferences".into(), Value::Array(owners));
    }
    // Server-owned fields: whatever a client sends there is not kept on create.
    m.self_link = None;
    m.uid = None;
    m.resource_version = None;
    m.generation = None;
    m.creation_timestamp = None;
    m.deletion_timestamp = None;
    m.deletion_grace_period_seconds = None;
    m.managed_fields.clear();
    done(m, "ObjectMeta")?;
    Ok(Value::Object(out))
}

fn metadata(m: Option<meta::ObjectMeta>) -> Result<Value> {
    object_meta(m.unwrap_or_default())
}

fn namespace(mut n: core::Namespace) -> Result<Value> {
    let mut out = json!({"metadata": metadata(n.metadata.take())?});
    if let Some(mut spec) = n.spec.take() {
        if !spec.finalizers.is_empty() {
            out["spec"] = json!({"finalizers": std::mem::take(&mut spec.finalizers)});
        }
        done(spec, "NamespaceSpec")?;
    }
    // The status is the server's to set.
    n.status = None;
    done(n, "Namespace")?;
    Ok(out)
}

fn config_map(mut c: core::ConfigMap) -> Result<Value> {
    let mut out = Map::new();
    out.insert("metadata".into(), metadata(c.metadata.take())?);
    put_map(&mut out, "data", std::mem::take(&mut c.data));
    put_bytes_map(&mut out, "binaryData", std::mem::take(&mut c.binary_data));
    if let Some(i) = c.immutable.take() {
        out.insert("immutable".into(), json!(i));
    }
    done(c, "ConfigMap")?;
    Ok(Value::Object(out))
}

fn secret(mut s: core::Secret) -> Result<Value> {
    let mut out = Map::new();
    out.insert("metadata".into(), metadata(s.metadata.take())?);
    put_bytes_map(&mut out, "data", std::mem::take(&mut s.data));
    put_map(&mut out, "stringData", std::mem::take(&mut s.string_data));
    put_str(&mut out, "type", s.r#type.take());
    if let Some(i) = s.immutable.take() {
        out.insert("immutable".into(), json!(i));
    }
    done(s, "Secret")?;
    Ok(Value::Object(out))
}

fn service_account(mut a: core::ServiceAccount) -> Result<Value> {
    let mut out = Map::new();
    out.insert("metadata".into(), metadata(a.metadata.take())?);
    let pull: Vec<Value> = std::mem::take(&mut a.image_pull_secrets)
        .into_iter()
        .map(|mut r| {
            let name = r.name.take();
            done(r, "LocalObjectReference").map(|()| json!({"name": name.unwrap_or_default()}))
        })
        .collect::<Result<_>>()?;
    if !pull.is_empty() {
        out.insert("imagePullSecrets".into(), Value::Array(pull));
    }
    if let Some(a) = a.automount_service_account_token.take() {
        out.insert("automountServiceAccountToken".into(), json!(a));
    }
    if !a.secrets.is_empty() {
        return Err(ProtobufError::Unsupported(
            "ServiceAccount.secrets is not read from protobuf yet".into(),
        ));
    }
    done(a, "ServiceAccount")?;
    Ok(Value::Object(out))
}

fn put_int<T: Into<i64>>(out: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        out.insert(key.to_owned(), json!(value.into()));
    }
}

fn put_list(out: &mut Map<String, Value>, key: &str, value: Vec<String>) {
    if !value.is_empty() {
        out.insert(key.to_owned(), json!(value));
    }
}

fn put_true(out: &mut Map<String, Value>, key: &str, value: Option<bool>) {
    if value == Some(true) {
        out.insert(key.to_owned(), json!(true));
    }
}

fn int_or_string(v: k8s_pb::apimachinery::pkg::util::intstr::IntOrString) -> Value {
    match v.r#type {
        Some(1) => json!(v.str_val.unwrap_or_default()),
        _ => json!(v.int_val.unwrap_or(0)),
    }
}

fn label_selector(mut s: meta::LabelSelector) -> Result<Value> {
    let mut out = Map::new();
    put_map(&mut out, "matchLabels", std::mem::take(&mut s.match_labels));
    let expressions: Vec<Value> = std::mem::take(&mut s.match_expressions)
        .into_iter()
        .map(|mut e| {
            let mut expression = Map::new();
            put_str(&mut expression, "key", e.key.take());
            put_str(&mut expression, "operator", e.operator.take());
            put_list(&mut expression, "values", std::mem::take(&mut e.values));
            done(e, "LabelSelectorRequirement").map(|()| Value::Object(expression))
        })
        .collect::<Result<_>>()?;
    if !expressions.is_empty() {
        out.insert("matchExpressions".into(), Value::Array(expressions));
    }
    done(s, "LabelSelector")?;
    Ok(Value::Object(out))
}

fn quantities(map: BTreeMap<String, k8s_pb::apimachinery::pkg::api::resource::Quantity>) -> Value {
    Value::Object(
        map.into_iter()
            .map(|(k, q)| (k, json!(q.string.unwrap_or_default())))
            .collect(),
    )
}

fn container(mut c: core::Container) -> Result<Value> {
    let mut out = Map::new();
    put_str(&mut out, "name", c.name.take());
    put_str(&mut out, "image", c.image.take());
    put_list(&mut out, "command", std::mem::take(&mut c.command));
    put_list(&mut out, "args", std::mem::take(&mut c.args));
    put_str(&mut out, "workingDir", c.working_dir.take());
    let ports: Vec<Value> = std::mem::take(&mut c.ports)
        .into_iter()
        .map(|mut p| {
            let mut port = Map::new();
            put_str(&mut port, "name", p.name.take());
            put_int(&mut port, "containerPort", p.container_port.take());
            put_int(
                &mut port,
                "hostPort",
                p.host_port.take().filter(|h| *h != 0),
            );
            put_str(&mut port, "protocol", p.protocol.take());
            put_str(&mut port, "hostIP", p.host_ip.take());
            done(p, "ContainerPort").map(|()| Value::Object(port))
        })
        .collect::<Result<_>>()?;
    if !ports.is_empty() {
        out.insert("ports".into(), Value::Array(ports));
    }
    let env: Vec<Value> = std::mem::take(&mut c.env)
        .into_iter()
        .map(|mut e| {
            let mut var = Map::new();
            put_str(&mut var, "name", e.name.take());
            if let Some(value) = e.value.take() {
                var.insert("value".into(), json!(value));
            }
            done(e, "EnvVar").map(|()| Value::Object(var))
        })
        .collect::<Result<_>>()?;
    if !env.is_empty() {
        out.insert("env".into(), Value::Array(env));
    }
    if let Some(mut r) = c.resources.take() {
        let mut resources = Map::new();
        if !r.limits.is_empty() {
            resources.insert("limits".into(), quantities(std::mem::take(&mut r.limits)));
        }
        if !r.requests.is_empty() {
            resources.insert(
                "requests".into(),
                quantities(std::mem::take(&mut r.requests)),
            );
        }
        done(r, "ResourceRequirements")?;
        out.insert("resources".into(), Value::Object(resources));
    }
    put_str(&mut out, "imagePullPolicy", c.image_pull_policy.take());
    put_str(
        &mut out,
        "terminationMessagePath",
        c.termination_message_path.take(),
    );
    put_str(
        &mut out,
        "terminationMessagePolicy",
        c.termination_message_policy.take(),
    );
    put_true(&mut out, "stdin", c.stdin.take());
    put_true(&mut out, "stdinOnce", c.stdin_once.take());
    put_true(&mut out, "tty", c.tty.take());
    done(c, "Container")?;
    Ok(Value::Object(out))
}

fn pod_spec(mut p: core::PodSpec) -> Result<Value> {
    let mut out = Map::new();
    let containers: Vec<Value> = std::mem::take(&mut p.containers)
        .into_iter()
        .map(container)
        .collect::<Result<_>>()?;
    out.insert("containers".into(), Value::Array(containers));
    let init: Vec<Value> = std::mem::take(&mut p.init_containers)
        .into_iter()
        .map(container)
        .collect::<Result<_>>()?;
    if !init.is_empty() {
        out.insert("initContainers".into(), Value::Array(init));
    }
    put_str(&mut out, "restartPolicy", p.restart_policy.take());
    put_int(
        &mut out,
        "terminationGracePeriodSeconds",
        p.termination_grace_period_seconds.take(),
    );
    put_int(
        &mut out,
        "activeDeadlineSeconds",
        p.active_deadline_seconds.take(),
    );
    put_str(&mut out, "dnsPolicy", p.dns_policy.take());
    put_map(
        &mut out,
        "nodeSelector",
        std::mem::take(&mut p.node_selector),
    );
    put_str(
        &mut out,
        "serviceAccountName",
        p.service_account_name.take(),
    );
    put_str(&mut out, "serviceAccount", p.service_account.take());
    put_str(&mut out, "nodeName", p.node_name.take());
    put_true(&mut out, "hostNetwork", p.host_network.take());
    put_true(&mut out, "hostPID", p.host_pid.take());
    put_true(&mut out, "hostIPC", p.host_ipc.take());
    // A pointer in Go: written only when set, and false means something.
    if let Some(links) = p.enable_service_links.take() {
        out.insert("enableServiceLinks".into(), json!(links));
    }
    put_str(&mut out, "hostname", p.hostname.take());
    put_str(&mut out, "subdomain", p.subdomain.take());
    put_str(&mut out, "schedulerName", p.scheduler_name.take());
    put_str(&mut out, "priorityClassName", p.priority_class_name.take());
    // An empty security context is what Go writes for none.
    if p.security_context
        .as_ref()
        .is_some_and(|c| only_zeros(&c.encode_to_vec()))
    {
        p.security_context = None;
    }
    done(p, "PodSpec")?;
    Ok(Value::Object(out))
}

fn pod_template(mut t: core::PodTemplateSpec) -> Result<Value> {
    let mut out = json!({"metadata": metadata(t.metadata.take())?});
    out["spec"] = pod_spec(t.spec.take().unwrap_or_default())?;
    done(t, "PodTemplateSpec")?;
    Ok(out)
}

fn deployment(mut d: k8s_pb::api::apps::v1::Deployment) -> Result<Value> {
    let mut out = json!({"metadata": metadata(d.metadata.take())?});
    if let Some(mut spec) = d.spec.take() {
        let mut s = Map::new();
        put_int(&mut s, "replicas", spec.replicas.take());
        if let Some(selector) = spec.selector.take() {
            s.insert("selector".into(), label_selector(selector)?);
        }
        if let Some(template) = spec.template.take() {
            s.insert("template".into(), pod_template(template)?);
        }
        if let Some(mut strategy) = spec.strategy.take() {
            let mut st = Map::new();
            put_str(&mut st, "type", strategy.r#type.take());
            if let Some(mut rolling) = strategy.rolling_update.take() {
                let mut ru = Map::new();
                if let Some(v) = rolling.max_surge.take() {
                    ru.insert("maxSurge".into(), int_or_string(v));
                }
                if let Some(v) = rolling.max_unavailable.take() {
                    ru.insert("maxUnavailable".into(), int_or_string(v));
                }
                done(rolling, "RollingUpdateDeployment")?;
                st.insert("rollingUpdate".into(), Value::Object(ru));
            }
            done(strategy, "DeploymentStrategy")?;
            if !st.is_empty() {
                s.insert("strategy".into(), Value::Object(st));
            }
        }
        put_int(
            &mut s,
            "minReadySeconds",
            spec.min_ready_seconds.take().filter(|v| *v != 0),
        );
        put_int(
            &mut s,
            "revisionHistoryLimit",
            spec.revision_history_limit.take(),
        );
        put_true(&mut s, "paused", spec.paused.take());
        put_int(
            &mut s,
            "progressDeadlineSeconds",
            spec.progress_deadline_seconds.take(),
        );
        done(spec, "DeploymentSpec")?;
        out["spec"] = Value::Object(s);
    }
    // The status is the server's to set.
    d.status = None;
    done(d, "Deployment")?;
    Ok(out)
}

fn decode_raw<T: Message + Default>(raw: &[u8]) -> Result<T> {
    T::decode(raw).map_err(malformed)
}

/// Decodes a protobuf request body into the object's JSON form.
pub fn decode(body: &[u8]) -> Result<Value> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| {
        ProtobufError::Malformed("it does not start with the k8s magic bytes".into())
    })?;
    let envelope = Unknown::decode(rest).map_err(malformed)?;
    let type_meta = envelope.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if envelope
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(ProtobufError::Unsupported(
            "encoded (compressed) protobuf bodies".into(),
        ));
    }
    let raw = envelope.raw.unwrap_or_default();
    let mut object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            namespace(core::Namespace::decode(raw.as_slice()).map_err(malformed)?)?
        }
        ("v1", "ConfigMap") => {
            config_map(core::ConfigMap::decode(raw.as_slice()).map_err(malformed)?)?
        }
        ("v1", "Secret") => secret(core::Secret::decode(raw.as_slice()).map_err(malformed)?)?,
        ("apps/v1", "Deployment") => deployment(
            k8s_pb::api::apps::v1::Deployment::decode(raw.as_slice()).map_err(malformed)?,
        )?,
        ("v1", "ServiceAccount") => {
            service_account(core::ServiceAccount::decode(raw.as_slice()).map_err(malformed)?)?
        }
        ("v1", "Service") => more::service(decode_raw(&raw)?)?,
        ("v1", "ResourceQuota") => more::resource_quota(decode_raw(&raw)?)?,
        ("batch/v1", "Job") => more::job(decode_raw(&raw)?)?,
        ("batch/v1", "CronJob") => more::cron_job(decode_raw(&raw)?)?,
        ("rbac.authorization.k8s.io/v1", "Role") => more::role(decode_raw(&raw)?)?,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => more::cluster_role(decode_raw(&raw)?)?,
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => more::role_binding(decode_raw(&raw)?)?,
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            more::cluster_role_binding(decode_raw(&raw)?)?
        }
        ("scheduling.k8s.io/v1", "PriorityClass") => more::priority_class(decode_raw(&raw)?)?,
        ("policy/v1", "PodDisruptionBudget") => more::pod_disruption_budget(decode_raw(&raw)?)?,
        ("networking.k8s.io/v1", "Ingress") => more::ingress(decode_raw(&raw)?)?,
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            more::horizontal_pod_autoscaler(decode_raw(&raw)?)?
        }
        _ => {
            return Err(ProtobufError::Unsupported(format!(
                "protobuf bodies for {api_version} {kind} are not supported yet"
            )));
        }
    };
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
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

    fn meta_named(name: &str) -> Option<meta::ObjectMeta> {
        Some(meta::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(String::new()),
            creation_timestamp: Some(meta::Time {
                seconds: Some(0),
                nanos: Some(0),
            }),
            ..Default::default()
        })
    }

    #[test]
    fn secrets_keep_their_bytes_as_base64() {
        let secret = core::Secret {
            metadata: meta_named("creds"),
            data: BTreeMap::from([("password".to_owned(), b"s3cr\xffet".to_vec())]),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let object = decode(&envelope("v1", "Secret", secret.encode_to_vec())).expect("decodes");
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
            "data": {"password": "czNjcv9ldA=="}, "type": "Opaque"})
        );
    }

    #[test]
    fn namespaces_and_config_maps() {
        let ns = core::Namespace {
            metadata: meta_named("team"),
            spec: Some(Default::default()),
            status: Some(Default::default()),
        };
        assert_eq!(
            decode(&envelope("v1", "Namespace", ns.encode_to_vec())).expect("ns"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
        );
        let cm = core::ConfigMap {
            metadata: meta_named("c"),
            data: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            ..Default::default()
        };
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).expect("cm")["data"],
            json!({"k": "v"})
        );
    }

    #[test]
    fn deployments_as_kubectl_create_deployment_sends_them() {
        use k8s_pb::api::apps::v1 as apps;
        let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let deploy = apps::Deployment {
            metadata: Some(meta::ObjectMeta {
                name: Some("web".into()),
                labels: labels.clone(),
                ..Default::default()
            }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                selector: Some(meta::LabelSelector {
                    match_labels: labels.clone(),
                    ..Default::default()
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(meta::ObjectMeta {
                        labels,
                        ..Default::default()
                    }),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("nginx".into()),
                            image: Some("nginx".into()),
                            ports: vec![core::ContainerPort {
                                container_port: Some(80),
                                host_port: Some(0),
                                ..Default::default()
                            }],
                            resources: Some(Default::default()),
                            stdin: Some(false),
                            ..Default::default()
                        }],
                        // Zero values Go writes for fields nobody set.
                        restart_policy: Some(String::new()),
                        host_network: Some(false),
                        host_pid: Some(false),
                        host_ipc: Some(false),
                        security_context: Some(Default::default()),
                        // Set (as kubectl create job --from=cronjob copies it).
                        enable_service_links: Some(true),
                        ..Default::default()
                    }),
                }),
                strategy: Some(Default::default()),
                min_ready_seconds: Some(0),
                ..Default::default()
            }),
            status: Some(Default::default()),
        };
        let object =
            decode(&envelope("apps/v1", "Deployment", deploy.encode_to_vec())).expect("decodes");
        assert_eq!(
            object,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}], "resources": {}}],
                        "enableServiceLinks": true}}}})
        );
    }

    #[test]
    fn meaningful_leftovers_are_refused() {
        use k8s_pb::api::apps::v1 as apps;
        // A probe is not read from protobuf yet: it must not vanish.
        let deploy = apps::Deployment {
            metadata: meta_named("p"),
            spec: Some(apps::DeploymentSpec {
                template: Some(core::PodTemplateSpec {
                    metadata: None,
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("c".into()),
                            liveness_probe: Some(core::Probe {
                                period_seconds: Some(5),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        };
        assert!(matches!(
            decode(&envelope("apps/v1", "Deployment", deploy.encode_to_vec())),
            Err(ProtobufError::Unsupported(_))
        ));
        assert!(
            only_zeros(&[0x08, 0x00, 0x12, 0x00])
                && !only_zeros(&[0x08, 0x01])
                && !only_zeros(&[0x12, 0x01, 0x41])
        );
    }

    #[test]
    fn what_is_not_understood_is_refused() {
        assert!(matches!(
            decode(b"{\"json\": true}"),
            Err(ProtobufError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"k8s\0\xff\xff\xff"),
            Err(ProtobufError::Malformed(_))
        ));
        let pod = k8s_pb::api::core::v1::Pod {
            metadata: meta_named("p"),
            ..Default::default()
        };
        assert!(matches!(
            decode(&envelope("v1", "Pod", pod.encode_to_vec())),
            Err(ProtobufError::Unsupported(_))
        ));
        // A field this converter does not take is an error, not silently lost.
        let mut meta = meta_named("x").unwrap_or_default();
        meta.managed_fields.clear();
        let cm = core::ConfigMap {
            metadata: Some(meta::ObjectMeta {
                owner_references: vec![meta::OwnerReference {
                    name: Some("o".into()),
                    ..Default::default()
                }],
                ..meta
            }),
            ..Default::default()
        };
        assert!(
            decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).is_ok(),
            "owner references are read"
        );
    }
}
