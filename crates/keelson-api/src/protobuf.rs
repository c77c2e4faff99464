//! Kubernetes protobuf request bodies, as kubectl's imperative `create` commands send them,
//! turned into the JSON model the server works with.
//!
//! The wire format is the magic `k8s\0`, then a `runtime.Unknown` whose `typeMeta` names the
//! kind and whose `raw` is the object encoded per the upstream `generated.proto` (decoded
//! with k8s-pb's prost types). Each converter *takes* the fields it understands out of the
//! decoded message; anything left over is refused (never silently dropped), so a kind or
//! field not handled here yet fails with a clear error and the client can send JSON.

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

/// Fails unless everything was taken out of `rest`.
fn done<T: Default + PartialEq + Debug>(rest: T, what: &str) -> Result<()> {
    if rest == T::default() {
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
        ("v1", "ServiceAccount") => {
            service_account(core::ServiceAccount::decode(raw.as_slice()).map_err(malformed)?)?
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
