//! The resource REST API: every resource of the registry, stored as JSON in the store.
//!
//! Verbs: get, list, watch, create, update, delete, deletecollection, following kube-apiserver's
//! semantics for what clients rely on: server-set metadata (`uid`, `creationTimestamp`,
//! `generation`, `resourceVersion` = the store's `mod_revision`), optimistic concurrency,
//! `generateName`, `dryRun=All`, finalizers, label and field selectors, `limit`/`continue`
//! over one snapshot, watches from a revision and WatchList (`sendInitialEvents`), `Table`
//! output, and `Status` errors for everything that fails.

mod admission;
mod eviction;
mod object;
mod part;
mod read;
mod target;
mod watch;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keelson_api::Registry;
use keelson_store::Store;
use serde_json::Value;

pub use target::{Target, resource_prefix};

use crate::cache::WatchCache;
use crate::status::ApiError;

/// What the REST handlers work with.
pub struct Rest {
    pub store: Arc<dyn Store>,
    /// Every resource's objects and recent changes: lists and watches read here.
    pub cache: Arc<WatchCache>,
    pub registry: Registry,
    /// The schemas, for `/openapi/v3` and `fieldValidation`.
    pub openapi: keelson_api::openapi::OpenApi,
}

/// Query parameters, percent-decoded (last value wins).
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut params = HashMap::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(percent_decode(k), percent_decode(v));
        }
        Query(params)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `true`/`1` (as Kubernetes reads booleans in queries).
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }

    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON object response.
pub fn object_response(code: StatusCode, object: &Value) -> Response {
    let mut body = object.to_string();
    body.push('\n');
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The Kubernetes verb and resource of a request, for metrics; the server's middleware
/// reads them from the response.
#[derive(Clone, Debug)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub resource: &'static str,
}

/// Handles one request to `/api/v1/...` or `/apis/{group}/{version}/...`.
#[allow(clippy::too_many_arguments)]
pub async fn handle(
    rest: &Rest,
    method: Method,
    group: &str,
    version: &str,
    path: &str,
    query: Query,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let target = match Target::resolve(&rest.registry, group, version, &segments) {
        Ok(target) => target,
        Err(error) => return error.into_response(),
    };
    // pods/binding: the scheduler's one write, a create on the pod's subresource.
    if target.subresource.as_deref() == Some("binding")
        && part::has_subresource(&target.resource, "binding")
    {
        let result = if method == Method::POST {
            write::bind(rest, &target, &headers, body).await
        } else {
            Err(object::method_not_allowed(&method))
        };
        let mut response = result.unwrap_or_else(IntoResponse::into_response);
        response.extensions_mut().insert(RequestLabels {
            verb: "create",
            resource: target.resource.plural,
        });
        return response;
    }
    // pods/eviction: a create that deletes the pod if its disruption budget allows.
    if target.subresource.as_deref() == Some("eviction")
        && part::has_subresource(&target.resource, "eviction")
    {
        let result = if method == Method::POST {
            eviction::evict(rest, &target, &query, &headers, body).await
        } else {
            Err(object::method_not_allowed(&method))
        };
        let mut response = result.unwrap_or_else(IntoResponse::into_response);
        response.extensions_mut().insert(RequestLabels {
            verb: "create",
            resource: target.resource.plural,
        });
        return response;
    }
    let Some(part) = part::Part::of(&target) else {
        return ApiError::no_such_path().into_response();
    };
    let named = target.name.is_some();
    let allowed = match part {
        part::Part::Main => true,
        // `namespaces/finalize` is written with PUT only.
        part::Part::Finalize => method == Method::PUT,
        _ => matches!(method, Method::GET | Method::PUT | Method::PATCH),
    };
    if !allowed {
        return object::method_not_allowed(&method).into_response();
    }
    let (verb, result) = match (&method, named) {
        (&Method::GET, true) => (
            "get",
            read::get(rest, &target, part, &query, &headers).await,
        ),
        (&Method::GET, false) if query.flag("watch") => (
            "watch",
            Ok(watch::watch(rest, &target, &query, &headers).await),
        ),
        (&Method::GET, false) => ("list", read::list(rest, &target, &query, &headers).await),
        (&Method::POST, false) => (
            "create",
            write::create(rest, &target, &query, &headers, body).await,
        ),
        (&Method::PUT, true) => (
            "update",
            write::update(rest, &target, part, &query, &headers, body).await,
        ),
        (&Method::PATCH, true) => (
            "patch",
            write::patch(rest, &target, part, &query, &headers, body).await,
        ),
        (&Method::DELETE, true) => ("delete", write::delete(rest, &target, &query, body).await),
        (&Method::DELETE, false) => (
            "deletecollection",
            write::delete_collection(rest, &target, &query, body).await,
        ),
        _ => ("unsupported", Err(object::method_not_allowed(&method))),
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RequestLabels {
        verb,
        resource: target.resource.plural,
    });
    response
}

pub use admission::ensure_priority_classes;
pub use write::ensure_namespaces;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Cenv+in+(a)&watch=1&limit=5&x",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,env in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("limit"), Some("5"));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(Query::parse(Some("a=%zz%4")).get("a"), Some("%zz%4"));
        assert_eq!(
            Query::parse(Some("a=%é%")).get("a"),
            Some("%é%"),
            "never splits a character"
        );
    }
}
