//! create, update, delete, deletecollection.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use keelson_api::Resource;
use keelson_api::body::{self, Decoded};
use keelson_api::meta::{format_timestamp, name_problem};
use keelson_store::StoreError;
use serde_json::{Value, json};

use super::object::{
    self, already_exists, bad_request, conflict, decode, encode, invalid, metadata_mut,
    method_not_allowed, new_uid, not_found, now, set_resource_version, str_field, unknown_format,
    unsupported_media_type,
};
use super::part::{Part, has_subresource};
use super::read::{Selectors, collect};
use super::target::object_key;
use super::{Query, Rest, Target, object_response};
use crate::status::{ApiError, StatusDetails};

/// Retries of an unconditional update or delete that lost a race.
pub(super) const RETRIES: usize = 16;

/// Reads a JSON request body (the Python client sends no `Content-Type`).
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<Option<Value>, ApiError> {
    Ok(read_object(headers, body)
        .await?
        .map(|decoded| decoded.value))
}

/// The body as an object (JSON, YAML, or protobuf), with the fields it gave twice.
async fn read_object(headers: &HeaderMap, body: Body) -> Result<Option<Decoded>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let protobuf = media == keelson_api::protobuf::CONTENT_TYPE;
    let yaml = media == "application/yaml";
    if !protobuf && !yaml && !matches!(media, "application/json" | "" | "*/*") {
        return Err(unknown_format(
            "application/json, application/yaml, application/vnd.kubernetes.protobuf",
            media,
        ));
    }
    let bytes = axum::body::to_bytes(body, object::MAX_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!(
                    "the request body is larger than the limit of {} bytes",
                    object::MAX_BODY
                ),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if protobuf {
        use keelson_api::protobuf::{ProtobufError, decode};
        return match decode(&bytes) {
            Ok(value) => Ok(Some(Decoded {
                value,
                duplicates: Vec::new(),
            })),
            Err(error @ ProtobufError::Malformed(_)) => Err(bad_request(error.to_string())),
            Err(error @ ProtobufError::Unsupported(_)) => {
                Err(unsupported_media_type(error.to_string()))
            }
        };
    }
    if yaml {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| bad_request("the request body is not valid UTF-8 YAML"))?;
        return body::from_yaml(text)
            .map(Some)
            .map_err(|e| bad_request(format!("the request body is not valid YAML: {e}")));
    }
    body::from_json(&bytes)
        .map(Some)
        .map_err(|e| bad_request(format!("the request body is not valid JSON: {e}")))
}

/// Checks `kind`/`apiVersion` of a body against the URL's resource, filling them in when absent.
fn check_type(resource: &Resource, object: &mut Value) -> Result<(), ApiError> {
    let expected_version = resource.group_version();
    let root = object
        .as_object_mut()
        .ok_or_else(|| bad_request("the body must be a JSON object"))?;
    match root.get("apiVersion").and_then(Value::as_str) {
        Some(version) if version != expected_version => {
            return Err(bad_request(format!(
                "the API version in the data ({version}) does not match the expected API version ({expected_version})"
            )));
        }
        Some(_) => {}
        None => {
            root.insert("apiVersion".into(), json!(expected_version));
        }
    }
    match root.get("kind").and_then(Value::as_str) {
        Some(kind) if kind != resource.kind => Err(bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({}) of {}",
            resource.kind,
            resource.qualified_name()
        ))),
        Some(_) => Ok(()),
        None => {
            root.insert("kind".into(), json!(resource.kind));
            Ok(())
        }
    }
}

/// Puts the URL's namespace into the object (refusing a different one in the body).
fn check_namespace(target: &Target, object: &mut Value) -> Result<(), ApiError> {
    let metadata = metadata_mut(object)?;
    match (&target.namespace, target.resource.namespaced()) {
        (Some(ns), true) => {
            match metadata.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
            metadata.insert("namespace".into(), json!(ns));
        }
        (None, true) => {
            return Err(method_not_allowed("a namespace is required"));
        }
        (_, false) => {
            metadata.remove("namespace");
        }
    }
    Ok(())
}

/// Fails with 404 unless the namespace of a namespaced target exists, and with 403 when it
/// is being deleted (kube-apiserver's NamespaceLifecycle admission): nothing new may be
/// created in a namespace whose contents the namespace controller is removing.
async fn require_namespace(rest: &Rest, target: &Target, name: &str) -> Result<(), ApiError> {
    let Some(ns) = &target.namespace else {
        return Ok(());
    };
    let namespaces = rest
        .registry
        .find("", "v1", "namespaces")
        .cloned()
        .ok_or_else(|| ApiError::internal("no namespaces resource"))?;
    let namespace = match rest
        .store
        .get(&object_key(&namespaces, None, ns), None)
        .await
    {
        Ok(Some(kv)) => decode(&kv)?,
        Ok(None) => return Err(not_found(&namespaces, ns)),
        Err(error) => return Err(object::internal(error)),
    };
    if str_field(&namespace, &["status", "phase"]) == Some("Terminating") {
        return Err(namespace_terminating(&target.resource, name, ns));
    }
    Ok(())
}

/// 403 for a create in a namespace being deleted, worded as kube-apiserver's
/// NamespaceLifecycle admission words it.
pub(super) fn namespace_terminating(resource: &Resource, name: &str, ns: &str) -> ApiError {
    let reason =
        format!("unable to create new content in namespace {ns} because it is being terminated");
    let message = if name.is_empty() {
        format!("{} is forbidden: {reason}", resource.qualified_name())
    } else {
        format!(
            "{} \"{name}\" is forbidden: {reason}",
            resource.qualified_name()
        )
    };
    let mut error = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message);
    error.details = object::details(resource, name);
    if let Some(details) = error.details.as_mut() {
        details.causes = vec![json!({"reason": "NamespaceTerminating",
            "message": format!("namespace {ns} is being terminated"),
            "field": "metadata.namespace"})];
    }
    error
}

/// Applies `fieldValidation` (Strict, Warn — the default —, or Ignore) to `object`: fields
/// given twice in the body (`duplicates`) and unknown fields fail a Strict request and
/// become warnings otherwise.
fn check_fields(
    rest: &Rest,
    resource: &Resource,
    query: &Query,
    object: &Value,
    duplicates: &[String],
) -> Result<Vec<String>, ApiError> {
    let mode = query.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(bad_request(format!(
            "fieldValidation: Unsupported value: \"{mode}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        )));
    }
    let problems = rest
        .openapi
        .inspect(resource.group, resource.version, resource.kind, object);
    // A value of the wrong type cannot be decoded at all, whatever the mode.
    if let Some(wrong) = problems.wrong_types.first() {
        return Err(bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: json: cannot unmarshal {found} into Go struct field {kind}.{path} of type {expected}",
            kind = resource.kind,
            version = resource.version,
            found = wrong.found,
            path = wrong.path,
            expected = wrong.expected,
        )));
    }
    if mode == "Ignore" {
        return Ok(Vec::new());
    }
    let unknown: Vec<String> = duplicates
        .iter()
        .map(|field| format!("duplicate field \"{field}\""))
        .chain(
            problems
                .unknown
                .into_iter()
                .map(|field| format!("unknown field \"{field}\"")),
        )
        .collect();
    if mode == "Strict" && !unknown.is_empty() {
        return Err(bad_request(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        )));
    }
    Ok(unknown)
}

/// Adds `Warning` headers, which kubectl prints as `Warning: ...`.
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// Status a new object starts with, for kinds whose status only the system writes (as
/// kube-apiserver's create strategies do); `None` keeps what the client sent.
fn initial_status(resource: &Resource) -> Option<Value> {
    if !has_subresource(resource, "status") {
        return None;
    }
    match resource.kind {
        "Pod" | "PersistentVolumeClaim" | "PersistentVolume" => Some(json!({"phase": "Pending"})),
        "Node" | "Namespace" | "APIService" => None,
        _ => Some(json!({})),
    }
}

/// Defaults every object of a kind gets on create.
fn apply_defaults(resource: &Resource, name: &str, object: &mut Value) {
    if let Some(status) = initial_status(resource) {
        object["status"] = status;
    }
    if resource.kind == "Namespace" && resource.group.is_empty() {
        object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        if object["spec"]["finalizers"].is_null() {
            object["spec"]["finalizers"] = json!(["kubernetes"]);
        }
        object["status"]["phase"] = json!("Active");
    }
    if resource.kind == "Job" && resource.group == "batch" {
        keelson_api::defaults::job_selector(object);
    }
}

pub async fn create(
    rest: &Rest,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Decoded { value, duplicates } = read_object(headers, body)
        .await?
        .ok_or_else(|| bad_request("the request body is empty"))?;
    create_object(rest, target, query, value, &duplicates).await
}

/// Creates `object` (as read from a body, or built by server-side apply).
async fn create_object(
    rest: &Rest,
    target: &Target,
    query: &Query,
    mut object: Value,
    duplicates: &[String],
) -> Result<Response, ApiError> {
    let resource = &target.resource;
    check_type(resource, &mut object)?;
    check_namespace(target, &mut object)?;
    let warnings = check_fields(rest, resource, query, &object, duplicates)?;
    if let Some(conversion) = resource.conversion() {
        keelson_api::conversion::to_storage(conversion, &mut object);
    }
    let metadata = metadata_mut(&mut object)?;
    let given_name = metadata
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let generate = metadata
        .get("generateName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if given_name.is_none() && generate.is_none() {
        return Err(invalid(
            resource,
            "",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    }
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        metadata.remove(field);
    }
    metadata.insert("uid".into(), json!(new_uid()));
    metadata.insert("creationTimestamp".into(), json!(format_timestamp(now())));
    if object.get("spec").is_some() {
        object["metadata"]["generation"] = json!(1);
    }
    require_namespace(rest, target, given_name.as_deref().unwrap_or_default()).await?;

    // A generated name that is taken is drawn again, as kube-apiserver does.
    let attempts = if given_name.is_some() { 1 } else { 3 };
    for attempt in 1..=attempts {
        let name = match (&given_name, &generate) {
            (Some(name), _) => name.clone(),
            (None, prefix) => format!(
                "{}{}",
                prefix.as_deref().unwrap_or_default(),
                object::name_suffix()
            ),
        };
        let dns_label = resource.kind == "Namespace" && resource.group.is_empty();
        if let Some(problem) = name_problem(&name, dns_label) {
            return Err(invalid(
                resource,
                &name,
                "metadata.name",
                &format!("Invalid value: \"{name}\": {problem}"),
            ));
        }
        object["metadata"]["name"] = json!(name);
        apply_defaults(resource, &name, &mut object);
        keelson_api::defaults::apply(resource.kind, &mut object);
        if resource.kind == "Pod" && resource.group.is_empty() {
            super::admission::admit_pod(rest, &mut object).await?;
        }
        let problems = keelson_api::validation::validate(resource.kind, &object);
        if !problems.is_empty() {
            return Err(object::invalid_fields(resource, &name, &problems));
        }
        if query.dry_run() {
            return Ok(with_warnings(
                object_response(StatusCode::CREATED, &served(resource, object)),
                &warnings,
            ));
        }
        match rest.store.create(&target.key(&name), encode(&object)).await {
            Ok(revision) => {
                set_resource_version(&mut object, revision);
                return Ok(with_warnings(
                    object_response(StatusCode::CREATED, &served(resource, object)),
                    &warnings,
                ));
            }
            Err(StoreError::AlreadyExists { .. }) if attempt < attempts => continue,
            Err(StoreError::AlreadyExists { .. }) => return Err(already_exists(resource, &name)),
            Err(error) => return Err(object::internal(error)),
        }
    }
    Err(ApiError::internal("generated names kept colliding"))
}

/// The parts of an object only the server writes, carried over from the stored one.
fn keep_server_fields(old: &Value, new: &mut Value) {
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old["metadata"].get(field) {
            Some(value) => new["metadata"][field] = value.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    // generation counts changes of the spec.
    let generation = old["metadata"]["generation"].as_i64();
    match (generation, old.get("spec") != new.get("spec")) {
        (Some(g), true) => new["metadata"]["generation"] = json!(g + 1),
        (Some(g), false) => new["metadata"]["generation"] = json!(g),
        (None, _) if new.get("spec").is_some() => new["metadata"]["generation"] = json!(1),
        (None, _) => {
            if let Some(m) = new["metadata"].as_object_mut() {
                m.remove("generation");
            }
        }
    }
}

pub async fn update(
    rest: &Rest,
    target: &Target,
    part: Part,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Decoded {
        value: object,
        duplicates,
    } = read_object(headers, body)
        .await?
        .ok_or_else(|| bad_request("the request body is empty"))?;
    // A resourceVersion in the body is a precondition; without one the update is
    // unconditional.
    let precondition = resource_version(&object)?;
    guaranteed_update(rest, target, query, part, &duplicates, |_| {
        Ok((object.clone(), precondition))
    })
    .await
}

fn resource_version(object: &Value) -> Result<Option<i64>, ApiError> {
    match str_field(object, &["metadata", "resourceVersion"]).filter(|v| !v.is_empty()) {
        Some(rv) => rv
            .parse::<i64>()
            .map(Some)
            .map_err(|_| bad_request(format!("invalid resourceVersion {rv:?}"))),
        None => Ok(None),
    }
}

/// The kinds of PATCH body.
enum PatchKind {
    Json,
    Merge,
    Strategic,
}

pub async fn patch(
    rest: &Rest,
    target: &Target,
    part: Part,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let kind = match content_type.split(';').next().unwrap_or_default().trim() {
        "application/json-patch+json" => PatchKind::Json,
        "application/merge-patch+json" => PatchKind::Merge,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        "application/apply-patch+yaml" => {
            return server_side_apply(rest, target, part, query, body).await;
        }
        other => {
            return Err(unknown_format(
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml",
                &format!("{other:?}"),
            ));
        }
    };
    let json_headers = HeaderMap::new();
    let patch = read_body(&json_headers, body)
        .await?
        .ok_or_else(|| bad_request("the patch is empty"))?;
    let operations: Option<json_patch::Patch> = match kind {
        PatchKind::Json => Some(
            serde_json::from_value(patch.clone())
                .map_err(|e| bad_request(format!("the JSON patch is not valid: {e}")))?,
        ),
        _ => None,
    };
    let resource_kind = target.resource.kind;
    let name = target.name.clone().unwrap_or_default();
    let resource = target.resource.clone();
    // A Scale has no strategic metadata of its own: it merges as a plain object.
    let resource_kind = if part == Part::Scale {
        "Scale"
    } else {
        resource_kind
    };
    guaranteed_update(rest, target, query, part, &[], |old| {
        let new = match kind {
            PatchKind::Json => {
                let mut new = old.clone();
                let ops = operations
                    .as_ref()
                    .map(|p| p.0.as_slice())
                    .unwrap_or_default();
                json_patch::patch(&mut new, ops).map_err(|e| match e.kind {
                    // A failed `test` is a stale read: clients retry on Conflict.
                    json_patch::PatchErrorKind::TestFailed => {
                        let mut error = conflict(&resource, &name);
                        error.message = format!(
                            "the server rejected our request due to an error in our request: {e}"
                        );
                        error
                    }
                    _ => invalid(&resource, &name, "patch", &e.to_string()),
                })?;
                new
            }
            PatchKind::Merge => {
                let mut new = old.clone();
                json_patch::merge(&mut new, &patch);
                new
            }
            PatchKind::Strategic => keelson_api::strategic::apply(resource_kind, old, &patch)
                .map_err(|e| bad_request(e.to_string()))?,
        };
        // A patch that changes resourceVersion asks for that version.
        let precondition =
            if new["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"] {
                None
            } else {
                Some(resource_version(&new)?.unwrap_or(-1))
            };
        Ok((new, precondition))
    })
    .await
}

/// `POST pods/{name}/binding`: assigns the pod to the Binding's node (once), with its
/// `PodScheduled` condition, as kube-apiserver's binding storage does.
pub async fn bind(
    rest: &Rest,
    target: &Target,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let resource = &target.resource;
    let name = target.name.clone().unwrap_or_default();
    let binding = read_body(headers, body)
        .await?
        .ok_or_else(|| bad_request("the request body is empty"))?;
    if let Some(given) = str_field(&binding, &["metadata", "name"])
        && given != name
    {
        return Err(bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let node = str_field(&binding, &["target", "name"])
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let kind = str_field(&binding, &["target", "kind"]).unwrap_or("Node");
    let Some(node) = node.filter(|_| kind == "Node" || kind.is_empty()) else {
        return Err(invalid(
            resource,
            &name,
            "target",
            "Invalid value: a Binding's target must name a Node",
        ));
    };
    let key = target.key(&name);
    for _ in 0..RETRIES {
        let current = match rest.store.get(&key, None).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return Err(not_found(resource, &name)),
            Err(error) => return Err(object::internal(error)),
        };
        let mut pod = decode(&current)?;
        if pod["metadata"].get("deletionTimestamp").is_some() {
            let mut error = conflict(resource, &name);
            error.message = format!("pod {name} is being deleted, cannot be assigned to a host");
            return Err(error);
        }
        if let Some(assigned) = str_field(&pod, &["spec", "nodeName"]).filter(|n| !n.is_empty()) {
            let mut error = conflict(resource, &name);
            error.message = format!("pod {name} is already assigned to node \"{assigned}\"");
            return Err(error);
        }
        pod["spec"]["nodeName"] = json!(node);
        if let Some(annotations) = binding["metadata"]["annotations"].as_object() {
            for (key, value) in annotations {
                pod["metadata"]["annotations"][key] = value.clone();
            }
        }
        let scheduled = json!({"type": "PodScheduled", "status": "True",
            "lastProbeTime": null, "lastTransitionTime": format_timestamp(now())});
        let conditions = pod["status"]
            .as_object_mut()
            .map(|status| status.entry("conditions").or_insert_with(|| json!([])));
        if let Some(Value::Array(conditions)) = conditions {
            conditions.retain(|c| c["type"] != "PodScheduled");
            conditions.push(scheduled);
        }
        match rest
            .store
            .update(&key, encode(&pod), current.mod_revision)
            .await
        {
            Ok(_) => {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "code": 201});
                return Ok(object_response(StatusCode::CREATED, &status));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Err(not_found(resource, &name)),
            Err(error) => return Err(object::internal(error)),
        }
    }
    Err(conflict(resource, &name))
}

/// A stored object in the version the client asked for.
pub fn served(resource: &Resource, mut object: Value) -> Value {
    if let Some(conversion) = resource.conversion() {
        keelson_api::conversion::from_storage(conversion, &mut object);
    }
    object
}

/// Server-side apply: the applier's configuration merged into the object (created when
/// missing), its fields recorded in `managedFields` (see `keelson_api::apply`).
async fn server_side_apply(
    rest: &Rest,
    target: &Target,
    part: Part,
    query: &Query,
    body: Body,
) -> Result<Response, ApiError> {
    let resource = target.resource.clone();
    let name = target.name.clone().unwrap_or_default();
    let manager = query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad_request("fieldManager: Required value: is required for apply patch"))?
        .to_owned();
    let mut yaml = HeaderMap::new();
    yaml.insert(
        header::CONTENT_TYPE,
        "application/yaml"
            .parse()
            .map_err(|_| ApiError::internal("header"))?,
    );
    let Decoded {
        mut value,
        duplicates,
    } = read_object(&yaml, body)
        .await?
        .ok_or_else(|| bad_request("the applied configuration is empty"))?;
    check_type(&resource, &mut value)?;
    match str_field(&value, &["metadata", "name"]) {
        Some(given) if given != name => {
            return Err(bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        Some(_) => {}
        None => {
            metadata_mut(&mut value)?.insert("name".into(), json!(name));
        }
    }
    let time = format_timestamp(now());
    let version = resource.group_version();
    let applier = |force| keelson_api::apply::Applier {
        manager: &manager,
        api_version: &version,
        force,
        time: &time,
    };
    let force = query.flag("force");
    let to_error = |error: keelson_api::apply::ApplyError| match error {
        keelson_api::apply::ApplyError::Invalid(message) => bad_request(message),
        keelson_api::apply::ApplyError::Conflicts(conflicts) => {
            apply_conflicts(&resource, &name, &conflicts)
        }
    };
    let exists = match rest.store.get(&target.key(&name), None).await {
        Ok(found) => found.is_some(),
        Err(error) => return Err(object::internal(error)),
    };
    if !exists && part == Part::Main {
        let object = keelson_api::apply::apply(resource.kind, None, &value, &applier(force))
            .map_err(to_error)?;
        return create_object(rest, target, query, object, &duplicates).await;
    }
    guaranteed_update(rest, target, query, part, &duplicates, |old| {
        let new = keelson_api::apply::apply(resource.kind, Some(old), &value, &applier(force))
            .map_err(to_error)?;
        Ok((new, None))
    })
    .await
}

/// 409 for fields another manager owns: `Apply failed with N conflicts: ...`.
fn apply_conflicts(
    resource: &Resource,
    name: &str,
    conflicts: &[keelson_api::apply::Conflict],
) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\" using {}: {}",
                c.manager, c.api_version, c.field
            )
        })
        .collect();
    let noun = if conflicts.len() == 1 {
        "conflict"
    } else {
        "conflicts"
    };
    let mut error = conflict(resource, name);
    error.message = format!(
        "Apply failed with {} {noun}: {}",
        conflicts.len(),
        lines.join("\n")
    );
    if let Some(details) = error.details.as_mut() {
        details.causes = conflicts
            .iter()
            .map(|c| {
                json!({"reason": "FieldManagerConflict",
                    "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                    "field": c.field})
            })
            .collect();
    }
    error
}

/// Reads the object, computes the new state of `part` of it with `desired` (which may name
/// a `resourceVersion` precondition), and writes it guarded by the revision it read; a lost
/// race is retried when there is no precondition. Answers with `part`'s view.
async fn guaranteed_update(
    rest: &Rest,
    target: &Target,
    query: &Query,
    part: Part,
    duplicates: &[String],
    desired: impl Fn(&Value) -> Result<(Value, Option<i64>), ApiError>,
) -> Result<Response, ApiError> {
    let resource = &target.resource;
    let name = target.name.clone().unwrap_or_default();
    let key = target.key(&name);
    for _ in 0..RETRIES {
        let current = match rest.store.get(&key, None).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return Err(not_found(resource, &name)),
            Err(error) => return Err(object::internal(error)),
        };
        let stored_old = decode(&current)?;
        // The client works on the version it asked for; the store keeps the stored form.
        let old = served(resource, stored_old.clone());
        let (new_view, precondition) = desired(&part.view(&old))?;
        let mut new = part.fold(resource, &old, new_view)?;
        // An update that leaves managedFields out keeps them, as kube-apiserver does.
        if new["metadata"].get("managedFields").is_none()
            && let Some(managed) = old["metadata"].get("managedFields")
        {
            new["metadata"]["managedFields"] = managed.clone();
        }
        check_type(resource, &mut new)?;
        check_namespace(target, &mut new)?;
        let warnings = check_fields(rest, resource, query, &new, duplicates)?;
        match str_field(&new, &["metadata", "name"]) {
            Some(given) if given != name => {
                return Err(bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
            None => new["metadata"]["name"] = json!(name),
        }
        if let Some(conversion) = resource.conversion() {
            keelson_api::conversion::to_storage(conversion, &mut new);
        }
        keelson_api::defaults::apply(resource.kind, &mut new);
        let problems = keelson_api::validation::validate(resource.kind, &new);
        if !problems.is_empty() {
            return Err(object::invalid_fields(resource, &name, &problems));
        }
        if precondition.is_some_and(|rv| rv != current.mod_revision) {
            return Err(conflict(resource, &name));
        }
        set_resource_version(&mut new, current.mod_revision);
        keep_server_fields(&stored_old, &mut new);
        let finalized = new["metadata"].get("deletionTimestamp").is_some()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
            && !holds_namespace(resource, &new);
        let write = if finalized && !query.dry_run() {
            // Marked for deletion and no finalizer left: the update completes the delete.
            rest.store
                .delete(&key, current.mod_revision)
                .await
                .map(|_| None)
        } else if new == stored_old || query.dry_run() {
            // Nothing changed (or nothing may): no write, no new resourceVersion.
            return Ok(with_warnings(
                object_response(StatusCode::OK, &part.view(&served(resource, new))),
                &warnings,
            ));
        } else {
            rest.store
                .update(&key, encode(&new), current.mod_revision)
                .await
                .map(Some)
        };
        match write {
            Ok(revision) => {
                if let Some(revision) = revision {
                    set_resource_version(&mut new, revision);
                }
                return Ok(with_warnings(
                    object_response(StatusCode::OK, &part.view(&served(resource, new))),
                    &warnings,
                ));
            }
            Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
            Err(StoreError::Conflict { .. }) => return Err(conflict(resource, &name)),
            Err(StoreError::NotFound { .. }) => return Err(not_found(resource, &name)),
            Err(error) => return Err(object::internal(error)),
        }
    }
    Err(conflict(resource, &name))
}

/// `DeleteOptions` from the body and the query.
/// What happens to an object's dependents (`propagationPolicy`): the garbage collector acts
/// on the finalizer each one leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    /// The finalizer that records the policy on the object, if any.
    fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Orphan => Some("orphan"),
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Background => None,
        }
    }
}

#[derive(Clone)]
pub(super) struct DeleteOptions {
    pub(super) uid: Option<String>,
    pub(super) resource_version: Option<i64>,
    pub(super) dry_run: bool,
    /// `gracePeriodSeconds`: `None` for the object's own default.
    grace_period: Option<i64>,
    propagation: Option<Propagation>,
}

/// 422 for bad `DeleteOptions`, as kube-apiserver words it.
fn invalid_delete_options(field: &str, reason: &str, problem: String) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("DeleteOptions.meta.k8s.io \"\" is invalid: {field}: {problem}"),
    );
    error.details = Some(Box::new(StatusDetails {
        name: String::new(),
        group: "meta.k8s.io".into(),
        kind: "DeleteOptions".into(),
        causes: vec![json!({"reason": reason, "message": problem, "field": field})],
        ..Default::default()
    }));
    error
}

pub(super) fn delete_options(
    query: &Query,
    body: Option<Value>,
) -> Result<DeleteOptions, ApiError> {
    let body = body.unwrap_or(Value::Null);
    let uid = str_field(&body, &["preconditions", "uid"]).map(str::to_owned);
    let resource_version = match str_field(&body, &["preconditions", "resourceVersion"]) {
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| bad_request(format!("invalid precondition resourceVersion {rv:?}")))?,
        ),
        None => None,
    };
    let dry_run = query.dry_run()
        || body["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    // The body wins over the query, as in kube-apiserver (the query only fills in).
    let grace_period = match (&body["gracePeriodSeconds"], query.get("gracePeriodSeconds")) {
        (Value::Number(n), _) => Some(
            n.as_i64()
                .ok_or_else(|| bad_request(format!("invalid gracePeriodSeconds {n}")))?,
        ),
        (Value::Null, Some(text)) if !text.is_empty() => Some(
            text.parse::<i64>()
                .map_err(|_| bad_request(format!("invalid gracePeriodSeconds {text:?}")))?,
        ),
        (Value::Null, _) => None,
        (other, _) => return Err(bad_request(format!("invalid gracePeriodSeconds {other}"))),
    };
    let policy = body["propagationPolicy"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            query
                .get("propagationPolicy")
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
        });
    let orphan = match (&body["orphanDependents"], query.get("orphanDependents")) {
        (Value::Bool(b), _) => Some(*b),
        (Value::Null, Some("true")) => Some(true),
        (Value::Null, Some("false")) => Some(false),
        _ => None,
    };
    let propagation = match (policy.as_deref(), orphan) {
        (Some(_), Some(orphan)) => {
            return Err(invalid_delete_options(
                "orphanDependents",
                "FieldValueInvalid",
                format!(
                    "Invalid value: {orphan}: orphanDependents and deletionPropagation cannot be both set"
                ),
            ));
        }
        (Some("Orphan"), None) => Some(Propagation::Orphan),
        (Some("Background"), None) => Some(Propagation::Background),
        (Some("Foreground"), None) => Some(Propagation::Foreground),
        (Some(other), None) => {
            return Err(invalid_delete_options(
                "propagationPolicy",
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
            ));
        }
        (None, Some(true)) => Some(Propagation::Orphan),
        (None, Some(false)) => Some(Propagation::Background),
        (None, None) => None,
    };
    Ok(DeleteOptions {
        uid,
        resource_version,
        dry_run,
        grace_period,
        propagation,
    })
}

/// How long a pod takes to go (kube-apiserver's graceful deletion of pods): `None` means at
/// once. Pods not on a node, or already finished, go at once; others get the asked grace
/// period or their `terminationGracePeriodSeconds`, and their node's agent deletes them.
fn pod_grace_period(resource: &Resource, pod: &Value, options: &DeleteOptions) -> Option<i64> {
    if resource.kind != "Pod" || !resource.group.is_empty() {
        return None;
    }
    let unscheduled = str_field(pod, &["spec", "nodeName"]).is_none_or(str::is_empty);
    let finished = matches!(
        str_field(pod, &["status", "phase"]),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || finished {
        return None;
    }
    let grace = options.grace_period.unwrap_or_else(|| {
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30)
    });
    // Negative periods are read as one second, as upstream does.
    Some(grace.max(1)).filter(|_| grace != 0)
}

/// Marks `object` as being deleted, `grace` seconds from now, with the finalizer of
/// `propagation`. Returns whether anything changed (a second delete may only shorten the
/// grace period).
fn mark_deleting(object: &mut Value, grace: i64, propagation: Option<Propagation>) -> bool {
    let mut changed = false;
    let metadata = &mut object["metadata"];
    let current_grace = metadata["deletionGracePeriodSeconds"].as_i64();
    if metadata.get("deletionTimestamp").is_none() || current_grace.is_some_and(|g| grace < g) {
        metadata["deletionTimestamp"] = json!(format_timestamp(now() + grace));
        metadata["deletionGracePeriodSeconds"] = json!(grace);
        changed = true;
    }
    if let Some(finalizer) = propagation.and_then(Propagation::finalizer) {
        let finalizers = metadata
            .as_object_mut()
            .map(|m| m.entry("finalizers").or_insert_with(|| json!([])));
        if let Some(Value::Array(list)) = finalizers
            && !list.iter().any(|f| f == finalizer)
        {
            list.push(json!(finalizer));
            changed = true;
        }
    }
    changed
}

fn is_namespace(resource: &Resource) -> bool {
    resource.kind == "Namespace" && resource.group.is_empty()
}

/// Whether `object` is a namespace its `spec.finalizers` still hold (it may not be removed
/// until they are gone, whatever `metadata.finalizers` says).
fn holds_namespace(resource: &Resource, object: &Value) -> bool {
    is_namespace(resource)
        && object["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
}

/// Deletes one object; returns it as it was (or as it now is, when finalizers hold it).
pub(super) async fn delete_one(
    rest: &Rest,
    resource: &Resource,
    namespace: Option<&str>,
    name: &str,
    options: &DeleteOptions,
) -> Result<Value, ApiError> {
    let key = object_key(resource, namespace, name);
    for _ in 0..RETRIES {
        let current = match rest.store.get(&key, None).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return Err(not_found(resource, name)),
            Err(error) => return Err(object::internal(error)),
        };
        let mut object = decode(&current)?;
        if let Some(uid) = &options.uid {
            let actual = str_field(&object, &["metadata", "uid"]).unwrap_or_default();
            if uid != actual {
                let mut error = conflict(resource, name);
                error.message = format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                );
                return Err(error);
            }
        }
        if options
            .resource_version
            .is_some_and(|rv| rv != current.mod_revision)
        {
            let mut error = conflict(resource, name);
            error.message = format!(
                "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                options.resource_version.unwrap_or_default(),
                current.mod_revision
            );
            return Err(error);
        }
        if options.dry_run {
            return Ok(object);
        }
        if is_namespace(resource) {
            // The first delete of a namespace only starts its termination; the namespace
            // controller empties it and removes its `kubernetes` finalizer (spec), after
            // which a delete (or that finalize) removes it — as kube-apiserver does.
            if object["metadata"].get("deletionTimestamp").is_none() {
                mark_deleting(&mut object, 0, options.propagation);
                object["status"]["phase"] = json!("Terminating");
                match rest
                    .store
                    .update(&key, encode(&object), current.mod_revision)
                    .await
                {
                    Ok(revision) => {
                        set_resource_version(&mut object, revision);
                        return Ok(object);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound { .. }) => return Err(not_found(resource, name)),
                    Err(error) => return Err(object::internal(error)),
                }
            }
            if holds_namespace(resource, &object) {
                return Ok(object);
            }
        }
        let grace = pod_grace_period(resource, &object, options);
        let finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
            || options
                .propagation
                .and_then(Propagation::finalizer)
                .is_some();
        if grace.is_some() || finalizers {
            // Deferred: marked now; the pod's node, or whoever owns a finalizer (the garbage
            // collector for the propagation ones), finishes it.
            if !mark_deleting(&mut object, grace.unwrap_or(0), options.propagation) {
                return Ok(object);
            }
            match rest
                .store
                .update(&key, encode(&object), current.mod_revision)
                .await
            {
                Ok(revision) => {
                    set_resource_version(&mut object, revision);
                    return Ok(object);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Err(not_found(resource, name)),
                Err(error) => return Err(object::internal(error)),
            }
        }
        match rest.store.delete(&key, current.mod_revision).await {
            Ok(_) => return Ok(object),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Err(not_found(resource, name)),
            Err(error) => return Err(object::internal(error)),
        }
    }
    Err(conflict(resource, name))
}

pub async fn delete(
    rest: &Rest,
    target: &Target,
    query: &Query,
    body: Body,
) -> Result<Response, ApiError> {
    let options = delete_options(query, read_body(&HeaderMap::new(), body).await?)?;
    let name = target.name.as_deref().unwrap_or_default();
    let object = delete_one(
        rest,
        &target.resource,
        target.namespace.as_deref(),
        name,
        &options,
    )
    .await?;
    Ok(object_response(
        StatusCode::OK,
        &served(&target.resource, object),
    ))
}

pub async fn delete_collection(
    rest: &Rest,
    target: &Target,
    query: &Query,
    body: Body,
) -> Result<Response, ApiError> {
    let options = delete_options(query, read_body(&HeaderMap::new(), body).await?)?;
    let selectors = Selectors::parse(query, target.resource.kind)?;
    let listed = collect(rest, target, &Query::parse(None), &selectors).await?;
    let mut deleted = Vec::new();
    for object in listed.items {
        let name = str_field(&object, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned();
        let namespace = str_field(&object, &["metadata", "namespace"]).map(str::to_owned);
        match delete_one(
            rest,
            &target.resource,
            namespace.as_deref(),
            &name,
            &options,
        )
        .await
        {
            Ok(object) => deleted.push(served(&target.resource, object)),
            // Gone meanwhile: nothing to do.
            Err(error) if error.code == StatusCode::NOT_FOUND => {}
            Err(error) => return Err(error),
        }
    }
    let list = json!({
        "kind": format!("{}List", target.resource.kind),
        "apiVersion": target.resource.group_version(),
        "metadata": {"resourceVersion": listed.revision.to_string()},
        "items": deleted,
    });
    Ok(object_response(StatusCode::OK, &list))
}

/// Creates the namespaces every cluster starts with, if missing.
pub async fn ensure_namespaces(rest: &Rest, names: &[&str]) -> Result<(), ApiError> {
    let resource = rest
        .registry
        .find("", "v1", "namespaces")
        .cloned()
        .ok_or_else(|| ApiError::internal("no namespaces resource"))?;
    for name in names {
        let mut object = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "uid": new_uid(), "creationTimestamp": format_timestamp(now())},
            "spec": {},
        });
        apply_defaults(&resource, name, &mut object);
        match rest
            .store
            .create(&object_key(&resource, None, name), encode(&object))
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(error) => return Err(object::internal(error)),
        }
    }
    Ok(())
}
