//! Objects as stored JSON: what the server sets, what it strips, how store errors read.

use bytes::Bytes;
use keelson_api::Resource;
use keelson_store::{KeyValue, StoreError};
use serde_json::{Map, Value, json};

use crate::status::{ApiError, StatusDetails};
use axum::http::StatusCode;

/// Largest request body accepted (etcd's default value limit is 1.5 MiB; kube-apiserver
/// accepts up to 3 MiB of request).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A random RFC 4122 version-4 UUID.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Five characters Kubernetes appends to a `generateName`.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `details` naming an object of `resource`.
pub fn details(resource: &Resource, name: &str) -> Option<Box<StatusDetails>> {
    Some(Box::new(StatusDetails {
        name: name.to_owned(),
        group: resource.group.to_owned(),
        kind: resource.plural.to_owned(),
        ..Default::default()
    }))
}

pub fn not_found(resource: &Resource, name: &str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", resource.qualified_name()),
    );
    error.details = details(resource, name);
    error
}

pub fn already_exists(resource: &Resource, name: &str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::CONFLICT,
        "AlreadyExists",
        format!("{} \"{name}\" already exists", resource.qualified_name()),
    );
    error.details = details(resource, name);
    error
}

pub fn conflict(resource: &Resource, name: &str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            resource.qualified_name()
        ),
    );
    error.details = details(resource, name);
    error
}

pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// 422 for a field the object may not have as it is: `Kind "name" is invalid: field: ...`.
pub fn invalid(resource: &Resource, name: &str, field: &str, problem: &str) -> ApiError {
    let message = format!(
        "{}{} \"{name}\" is invalid: {field}: {problem}",
        resource.kind,
        if resource.group.is_empty() {
            String::new()
        } else {
            format!(".{}", resource.group)
        }
    );
    let mut error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
    error.details = invalid_details(resource, name);
    if let Some(details) = error.details.as_mut() {
        details.causes =
            vec![json!({"reason": "FieldValueInvalid", "message": problem, "field": field})];
    }
    error
}

/// `details` of a 422: kube-apiserver names the kind there (`Deployment`), where other
/// errors name the resource (`deployments`).
fn invalid_details(resource: &Resource, name: &str) -> Option<Box<StatusDetails>> {
    let mut details = details(resource, name)?;
    details.kind = resource.kind.to_owned();
    Some(details)
}

/// 422 for every field `validation` found wrong: `Kind.group "name" is invalid: [a, b]`
/// (no brackets for one), one cause per field.
pub fn invalid_fields(
    resource: &Resource,
    name: &str,
    problems: &[keelson_api::validation::FieldError],
) -> ApiError {
    let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let summary = match listed.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let group = if resource.group.is_empty() {
        String::new()
    } else {
        format!(".{}", resource.group)
    };
    let mut error = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{}{group} \"{name}\" is invalid: {summary}", resource.kind),
    );
    error.details = invalid_details(resource, name);
    if let Some(details) = error.details.as_mut() {
        details.causes = problems
            .iter()
            .map(|p| json!({"reason": p.reason, "message": p.detail, "field": p.field}))
            .collect();
    }
    error
}

/// 405: `detail` says which method (and why, when it is not obvious).
pub fn method_not_allowed(detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource ({detail})"),
    )
}

/// 415 with a message of its own.
pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        message,
    )
}

/// 415 for a body in a media type the request does not take.
pub fn unknown_format(accepted: &str, got: &str) -> ApiError {
    unsupported_media_type(format!(
        "the body of the request was in an unknown format - accepted media types include: {accepted} (got {got})"
    ))
}

pub fn expired(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::GONE, "Expired", message)
}

/// A store failure that is not about the request: 500, logged.
pub fn internal(error: StoreError) -> ApiError {
    tracing::error!(%error, "store failure");
    ApiError::internal(error.to_string())
}

/// The object a stored value holds, with its `resourceVersion`.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    set_resource_version(&mut object, kv.mod_revision);
    Ok(object)
}

pub use keelson_api::meta::{labels, set_resource_version};

/// The stored form: everything but `resourceVersion` (which is the key's revision).
pub fn encode(object: &Value) -> Bytes {
    let mut stored = object.clone();
    if let Some(metadata) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
    }
    Bytes::from(serde_json::to_vec(&stored).unwrap_or_default())
}

/// `metadata` of an object, created if missing.
pub fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let root = object
        .as_object_mut()
        .ok_or_else(|| bad_request("the body must be a JSON object"))?;
    let metadata = root.entry("metadata").or_insert_with(|| json!({}));
    metadata
        .as_object_mut()
        .ok_or_else(|| bad_request("metadata must be an object"))
}

pub fn str_field<'a>(object: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(object, |v, k| v.get(k))?.as_str()
}
