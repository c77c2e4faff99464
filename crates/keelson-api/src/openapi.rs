//! OpenAPI v3 documents generated from the Rust types (k8s-openapi's JSON schemas), with
//! Kubernetes' own extensions added, and the unknown-field check they make possible.
//!
//! `kubectl apply|create|replace -f` reads `/openapi/v3`, then the document of the object's
//! group version, and looks for a PATCH operation tagged with the object's
//! `x-kubernetes-group-version-kind` that takes a `fieldValidation` query parameter; finding
//! one, it leaves validation to the server (`fieldValidation=Strict`). `kubectl explain`
//! reads `components.schemas` (kinds carry `x-kubernetes-group-version-kind`). List fields
//! that merge by key carry `x-kubernetes-patch-merge-key`/`-strategy` (from
//! [`crate::strategic::SCHEMA_MERGE_KEYS`]), so client-side apply builds the same patches
//! the server merges.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::registry::{Registry, Resource};
use crate::strategic::SCHEMA_MERGE_KEYS;

/// What a walk of an object against its schema found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// Paths of fields the schema does not have.
    pub unknown: Vec<String>,
    pub wrong_types: Vec<WrongType>,
}

/// A value whose JSON type the schema does not allow.
#[derive(Debug, PartialEq, Eq)]
pub struct WrongType {
    pub path: String,
    /// The Go type kube-apiserver would name (`int32`, `string`, `bool`, ...).
    pub expected: String,
    /// The JSON type given (`string`, `number`, `bool`, `array`, `object`).
    pub found: &'static str,
}

/// The generated documents and the schemas behind them.
pub struct OpenApi {
    /// Definitions by name (`io.k8s.api.apps.v1.Deployment`).
    definitions: Map<String, Value>,
    /// (group, version, kind) → definition name.
    kinds: BTreeMap<(String, String, String), String>,
    /// Group-version path (`apis/apps/v1`) → (document, content hash).
    documents: BTreeMap<String, (String, String)>,
}

macro_rules! kind_schemas {
    ($generator:ident, $group:ident, $version:ident, $kind:ident; $( ($g:literal, $v:literal, $k:literal) => $ty:ty, )*) => {
        match ($group, $version, $kind) {
            $( ($g, $v, $k) => Some($generator.subschema_for::<$ty>()), )*
            _ => None,
        }
    };
}

/// Registers the schema of a kind, returning its `$ref`; `None` for a kind without one.
fn register(
    generator: &mut SchemaGenerator,
    group: &str,
    version: &str,
    kind: &str,
) -> Option<schemars::Schema> {
    use k8s_openapi::api::{
        apps, autoscaling, batch, coordination, core, discovery, events, networking, policy, rbac,
        scheduling, storage,
    };
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration;
    kind_schemas! { generator, group, version, kind;
        ("", "v1", "Namespace") => core::v1::Namespace,
        ("", "v1", "Pod") => core::v1::Pod,
        ("", "v1", "Service") => core::v1::Service,
        ("", "v1", "Endpoints") => core::v1::Endpoints,
        ("", "v1", "ConfigMap") => core::v1::ConfigMap,
        ("", "v1", "Secret") => core::v1::Secret,
        ("", "v1", "ServiceAccount") => core::v1::ServiceAccount,
        ("", "v1", "Node") => core::v1::Node,
        ("", "v1", "Event") => core::v1::Event,
        ("", "v1", "PersistentVolume") => core::v1::PersistentVolume,
        ("", "v1", "PersistentVolumeClaim") => core::v1::PersistentVolumeClaim,
        ("", "v1", "ResourceQuota") => core::v1::ResourceQuota,
        ("", "v1", "LimitRange") => core::v1::LimitRange,
        ("", "v1", "ReplicationController") => core::v1::ReplicationController,
        ("apps", "v1", "Deployment") => apps::v1::Deployment,
        ("apps", "v1", "ReplicaSet") => apps::v1::ReplicaSet,
        ("apps", "v1", "StatefulSet") => apps::v1::StatefulSet,
        ("apps", "v1", "DaemonSet") => apps::v1::DaemonSet,
        ("apps", "v1", "ControllerRevision") => apps::v1::ControllerRevision,
        ("batch", "v1", "Job") => batch::v1::Job,
        ("batch", "v1", "CronJob") => batch::v1::CronJob,
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => autoscaling::v2::HorizontalPodAutoscaler,
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => autoscaling::v1::HorizontalPodAutoscaler,
        ("policy", "v1", "PodDisruptionBudget") => policy::v1::PodDisruptionBudget,
        ("networking.k8s.io", "v1", "NetworkPolicy") => networking::v1::NetworkPolicy,
        ("networking.k8s.io", "v1", "Ingress") => networking::v1::Ingress,
        ("networking.k8s.io", "v1", "IngressClass") => networking::v1::IngressClass,
        ("rbac.authorization.k8s.io", "v1", "Role") => rbac::v1::Role,
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => rbac::v1::RoleBinding,
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => rbac::v1::ClusterRole,
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => rbac::v1::ClusterRoleBinding,
        ("storage.k8s.io", "v1", "StorageClass") => storage::v1::StorageClass,
        ("coordination.k8s.io", "v1", "Lease") => coordination::v1::Lease,
        ("discovery.k8s.io", "v1", "EndpointSlice") => discovery::v1::EndpointSlice,
        ("events.k8s.io", "v1", "Event") => events::v1::Event,
        ("scheduling.k8s.io", "v1", "PriorityClass") => scheduling::v1::PriorityClass,
        ("apiregistration.k8s.io", "v1", "APIService") => apiregistration::v1::APIService,
    }
}

fn ref_name(schema: &schemars::Schema) -> Option<String> {
    schema
        .get("$ref")?
        .as_str()?
        .rsplit('/')
        .next()
        .map(str::to_owned)
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

/// The write parameters every create, update and patch takes.
fn write_params(with_force: bool) -> Vec<Value> {
    let mut params = vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
        ),
        query_param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query_param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
        ),
    ];
    if with_force {
        params.push(json!({"name": "force", "in": "query", "description": "Force is going to force Apply requests.", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    params
}

fn operation(
    action: &str,
    resource: &Resource,
    params: Vec<Value>,
    body: Option<Value>,
    schema_ref: &str,
) -> Value {
    let gvk = json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
    let mut op = json!({
        "description": format!("{action} {}", resource.kind),
        "operationId": format!("{action}{}{}", resource.kind, resource.version),
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    if let Some(body) = body {
        op["requestBody"] = body;
    }
    op
}

/// `paths` for one resource.
fn resource_paths(resource: &Resource, schema_ref: &str) -> Vec<(String, Value)> {
    let base = if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    let (collection, params) = if resource.namespaced() {
        (
            format!("{base}/namespaces/{{namespace}}/{}", resource.plural),
            vec![path_param("namespace")],
        )
    } else {
        (format!("{base}/{}", resource.plural), Vec::new())
    };
    let object_body = json!({"content": {"application/json": {"schema": {"$ref": schema_ref}}}, "required": true});
    let patch_body = json!({"content": {
        "application/json-patch+json": {"schema": {"type": "object"}},
        "application/merge-patch+json": {"schema": {"type": "object"}},
        "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
    }, "required": true});
    let mut item_params = params.clone();
    item_params.push(path_param("name"));
    vec![
        (
            collection.clone(),
            json!({
                "get": operation("list", resource, vec![], None, schema_ref),
                "post": operation("post", resource, write_params(false), Some(object_body.clone()), schema_ref),
                "delete": operation("deletecollection", resource, vec![], None, schema_ref),
                "parameters": params,
            }),
        ),
        (
            format!("{collection}/{{name}}"),
            json!({
                "get": operation("get", resource, vec![], None, schema_ref),
                "put": operation("put", resource, write_params(false), Some(object_body), schema_ref),
                "patch": operation("patch", resource, write_params(true), Some(patch_body), schema_ref),
                "delete": operation("delete", resource, vec![], None, schema_ref),
                "parameters": item_params,
            }),
        ),
    ]
}

/// The definitions a schema refers to, transitively.
fn referenced(definitions: &Map<String, Value>, roots: &[String]) -> Vec<String> {
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref")
                    && let Some(name) = r.rsplit('/').next()
                {
                    out.push(name.to_owned());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut seen: Vec<String> = Vec::new();
    let mut queue: Vec<String> = roots.to_vec();
    while let Some(name) = queue.pop() {
        if seen.contains(&name) {
            continue;
        }
        if let Some(def) = definitions.get(&name) {
            refs(def, &mut queue);
        }
        seen.push(name);
    }
    seen.sort();
    seen
}

impl OpenApi {
    /// Generates every document for the registry's resources.
    pub fn generate(registry: &Registry, kubernetes_version: &str) -> Self {
        let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
        let mut kinds = BTreeMap::new();
        for r in registry.resources() {
            if let Some(name) = register(&mut generator, r.group, r.version, r.kind)
                .as_ref()
                .and_then(ref_name)
            {
                kinds.insert(
                    (r.group.to_owned(), r.version.to_owned(), r.kind.to_owned()),
                    name,
                );
            }
        }
        let mut definitions = generator.take_definitions(true);
        for ((group, version, kind), name) in &kinds {
            if let Some(Value::Object(def)) = definitions.get_mut(name) {
                let gvks = def
                    .entry("x-kubernetes-group-version-kind")
                    .or_insert_with(|| json!([]));
                if let Value::Array(list) = gvks {
                    list.push(json!({"group": group, "version": version, "kind": kind}));
                }
            }
        }
        for entry in SCHEMA_MERGE_KEYS {
            let property = definitions
                .get_mut(entry.definition)
                .and_then(|d| d.get_mut("properties"))
                .and_then(|p| p.get_mut(entry.property));
            if let Some(Value::Object(prop)) = property {
                prop.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
                if let Some(key) = entry.key {
                    prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                    prop.insert("x-kubernetes-list-type".into(), json!("map"));
                    prop.insert("x-kubernetes-list-map-keys".into(), json!([key]));
                }
            }
        }

        let mut documents = BTreeMap::new();
        let mut group_versions: Vec<(&str, &str)> = registry
            .resources()
            .iter()
            .map(|r| (r.group, r.version))
            .collect();
        group_versions.dedup();
        group_versions.sort();
        group_versions.dedup();
        for (group, version) in group_versions {
            let mut paths = Map::new();
            let mut roots = Vec::new();
            for r in registry.group_version(group, version) {
                let Some(name) =
                    kinds.get(&(r.group.to_owned(), r.version.to_owned(), r.kind.to_owned()))
                else {
                    continue;
                };
                roots.push(name.clone());
                for (path, item) in resource_paths(r, &format!("#/components/schemas/{name}")) {
                    paths.insert(path, item);
                }
            }
            let schemas: Map<String, Value> = referenced(&definitions, &roots)
                .into_iter()
                .filter_map(|name| definitions.get(&name).map(|d| (name, d.clone())))
                .collect();
            let document = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": kubernetes_version},
                "paths": paths,
                "components": {"schemas": schemas},
            })
            .to_string();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            document.hash(&mut hasher);
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            documents.insert(key, (document, format!("{:016X}", hasher.finish())));
        }
        OpenApi {
            definitions,
            kinds,
            documents,
        }
    }

    /// `GET /openapi/v3`: where each group version's document is.
    pub fn index(&self) -> Value {
        let paths: Map<String, Value> = self
            .documents
            .iter()
            .map(|(key, (_, hash))| {
                (
                    key.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
                )
            })
            .collect();
        json!({"paths": paths})
    }

    /// The document of `api/v1` or `apis/{group}/{version}`.
    pub fn document(&self, key: &str) -> Option<&str> {
        self.documents
            .get(key)
            .map(|(document, _)| document.as_str())
    }

    /// The fields of `object` (a `group/version` `kind`) that its schema does not know, as
    /// paths like `spec.template.spec.containers[0].imagePullPolcy`. Unknown kinds have none.
    pub fn unknown_fields(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        object: &Value,
    ) -> Vec<String> {
        self.inspect(group, version, kind, object).unknown
    }

    /// Unknown fields and values of the wrong JSON type in `object`, per the kind's schema.
    pub fn inspect(&self, group: &str, version: &str, kind: &str, object: &Value) -> Problems {
        let mut problems = Problems::default();
        let Some(name) = self
            .kinds
            .get(&(group.to_owned(), version.to_owned(), kind.to_owned()))
        else {
            return problems;
        };
        if let Some(schema) = self.definitions.get(name) {
            self.walk(object, schema, String::new(), &mut problems);
        }
        problems
    }

    /// Follows `$ref` (directly or through a one-element `allOf`).
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let target = schema.get("$ref").or_else(|| {
            schema
                .get("allOf")
                .and_then(|a| a.get(0))
                .and_then(|s| s.get("$ref"))
        });
        match target
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
            .and_then(|n| self.definitions.get(n))
        {
            Some(def) => self.resolve(def),
            None => schema,
        }
    }

    fn walk(&self, value: &Value, schema: &Value, path: String, problems: &mut Problems) {
        let schema = self.resolve(schema);
        if let Some(expected) = schema.get("type").and_then(Value::as_str) {
            let fits = match (expected, value) {
                (_, Value::Null) => true,
                ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
                ("number", Value::Number(_))
                | ("string", Value::String(_))
                | ("boolean", Value::Bool(_))
                | ("object", Value::Object(_))
                | ("array", Value::Array(_)) => true,
                _ => false,
            };
            if !fits {
                let go_type = match (expected, schema.get("format").and_then(Value::as_str)) {
                    ("integer", Some(format)) => format.to_owned(),
                    ("integer", None) => "int64".to_owned(),
                    ("number", _) => "float64".to_owned(),
                    ("boolean", _) => "bool".to_owned(),
                    (other, _) => other.to_owned(),
                };
                let found = match value {
                    Value::String(_) => "string",
                    Value::Number(_) => "number",
                    Value::Bool(_) => "bool",
                    Value::Array(_) => "array",
                    _ => "object",
                };
                problems.wrong_types.push(WrongType {
                    path,
                    expected: go_type,
                    found,
                });
                return;
            }
        }
        match value {
            Value::Object(map) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                if properties.is_none() && additional.is_none() {
                    // Free-form (quantities, int-or-string, raw extensions): nothing to check.
                    return;
                }
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match properties.and_then(|p| p.get(key)).or(additional) {
                        Some(child_schema) => self.walk(child, child_schema, child_path, problems),
                        None => problems.unknown.push(child_path),
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(item, item_schema, format!("{path}[{i}]"), problems);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openapi() -> OpenApi {
        OpenApi::generate(&Registry::builtin(), "v1.37.0")
    }

    #[test]
    fn the_index_lists_every_group_version() {
        let api = openapi();
        let index = api.index();
        for key in [
            "api/v1",
            "apis/apps/v1",
            "apis/autoscaling/v2",
            "apis/rbac.authorization.k8s.io/v1",
        ] {
            let url = index["paths"][key]["serverRelativeURL"]
                .as_str()
                .unwrap_or_default();
            assert!(
                url.starts_with(&format!("/openapi/v3/{key}?hash=")),
                "{key}: {url}"
            );
            assert!(api.document(key).is_some());
        }
    }

    #[test]
    fn patch_operations_advertise_field_validation_for_their_kind() {
        let api = openapi();
        let doc: Value =
            serde_json::from_str(api.document("apis/apps/v1").unwrap_or("{}")).unwrap_or_default();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        let params: Vec<&str> = patch["parameters"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            params.contains(&"fieldValidation") && params.contains(&"dryRun"),
            "{params:?}"
        );
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert!(
            schemas.get("io.k8s.api.core.v1.Container").is_some(),
            "referenced schemas are included"
        );
    }

    #[test]
    fn unknown_fields_are_found_wherever_they_are() {
        let api = openapi();
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"any": "label"}, "bogus": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {
                "containers": [{"name": "app", "image": "nginx", "imagePullPolcy": "Always", "resources": {"limits": {"cpu": "1"}}}]}}},
        });
        let unknown = api.unknown_fields("apps", "v1", "Deployment", &deploy);
        assert_eq!(
            unknown,
            vec![
                "metadata.bogus",
                "spec.template.spec.containers[0].imagePullPolcy"
            ]
        );
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"any": "key"}});
        assert!(api.unknown_fields("", "v1", "ConfigMap", &ok).is_empty());
    }
}
