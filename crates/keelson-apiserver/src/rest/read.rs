//! get and list.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use keelson_api::fields::FieldSelector;
use keelson_api::selector::LabelSelector;
use keelson_api::table;
use keelson_store::{ListOptions, StoreError};
use serde_json::{Value, json};

use super::object::{self, bad_request, decode, expired, not_found};
use super::part::Part;
use super::{Query, Rest, Target, object_response};
use crate::status::ApiError;

pub async fn get(rest: &Rest, target: &Target, part: Part) -> Result<Response, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    match rest.store.get(&target.key(name), None).await {
        Ok(Some(kv)) => Ok(object_response(StatusCode::OK, &part.view(&decode(&kv)?))),
        Ok(None) => Err(not_found(&target.resource, name)),
        Err(error) => Err(object::internal(error)),
    }
}

/// The selectors of a list or watch request.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(query: &Query, kind: &str) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), kind)
            .map_err(bad_request)?;
        Ok(Selectors { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(&object::labels(object)) && self.fields.matches(object)
    }
}

/// Where a paged list continues: the snapshot revision and the last key returned.
fn encode_continue(revision: i64, key: &str) -> String {
    let token = json!({"rv": revision, "start": key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(i64, String), ApiError> {
    let bad = || bad_request("continue key is not valid: it was not returned by this server");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let revision = value["rv"].as_i64().ok_or_else(bad)?;
    let key = value["start"].as_str().ok_or_else(bad)?;
    if !key.starts_with(prefix) {
        return Err(bad());
    }
    Ok((revision, key.to_owned()))
}

/// A list page: matching objects, the revision read at, and where to continue.
pub struct Listed {
    pub items: Vec<Value>,
    pub revision: i64,
    pub continue_token: Option<String>,
}

/// Reads matching objects under the target's prefix at one revision.
pub async fn collect(
    rest: &Rest,
    target: &Target,
    query: &Query,
    selectors: &Selectors,
) -> Result<Listed, ApiError> {
    let prefix = target.collection_prefix();
    let limit = match query.get("limit") {
        None | Some("") | Some("0") => None,
        Some(text) => Some(
            text.parse::<usize>()
                .map_err(|_| bad_request(format!("invalid limit {text:?}")))?,
        ),
    };
    let (mut revision, mut start_after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (revision, key) = decode_continue(token, &prefix)?;
            (Some(revision), Some(key))
        }
        None => (exact_revision(query)?, None),
    };
    // With a field selector on the name, only that key can match (when the namespace is
    // fixed, or there is none).
    let name_fixed = target.namespace.is_some() || !target.resource.namespaced();
    let name_key = selectors
        .fields
        .exact_name()
        .filter(|_| name_fixed)
        .map(|name| format!("{prefix}{name}"));
    let mut items = Vec::new();
    loop {
        let page_size = limit.map(|n| (n - items.len()).max(1));
        let page = rest
            .store
            .list(&prefix, ListOptions { revision, limit: page_size, start_after: start_after.clone() })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } if start_after.is_some() => expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                StoreError::Compacted { requested, compacted } => {
                    expired(format!("too old resource version: {requested} ({compacted})"))
                }
                StoreError::FutureRevision { requested, .. } => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Timeout",
                    format!("Too large resource version: {requested}"),
                ),
                other => object::internal(other),
            })?;
        revision = Some(page.revision);
        let mut stopped_at = None;
        for (index, kv) in page.kvs.iter().enumerate() {
            if name_key.as_deref().is_some_and(|n| kv.key != n) {
                continue;
            }
            let object = decode(kv)?;
            if selectors.matches(&object) {
                items.push(object);
                if limit.is_some_and(|n| items.len() >= n) {
                    stopped_at = Some(index);
                    break;
                }
            }
        }
        match stopped_at {
            Some(index) => {
                let more = index + 1 < page.kvs.len() || page.more;
                let token = more.then(|| encode_continue(page.revision, &page.kvs[index].key));
                return Ok(Listed {
                    items,
                    revision: page.revision,
                    continue_token: token,
                });
            }
            None if page.more => start_after = page.kvs.last().map(|kv| kv.key.clone()),
            None => {
                return Ok(Listed {
                    items,
                    revision: page.revision,
                    continue_token: None,
                });
            }
        }
    }
}

/// The revision a list must be read at: only `resourceVersionMatch=Exact` pins one; other
/// forms are served from the latest state (which is never older than what was asked).
fn exact_revision(query: &Query) -> Result<Option<i64>, ApiError> {
    let rv = query.get("resourceVersion").filter(|v| !v.is_empty());
    match (query.get("resourceVersionMatch"), rv) {
        (Some("Exact"), Some(rv)) => rv
            .parse()
            .map(Some)
            .map_err(|_| bad_request(format!("invalid resourceVersion {rv:?}"))),
        (Some("Exact" | "NotOlderThan"), None) => Err(bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )),
        (Some(other), _) if !matches!(other, "Exact" | "NotOlderThan" | "") => Err(bad_request(
            format!("unsupported resourceVersionMatch {other:?}"),
        )),
        (_, Some(rv)) if rv != "0" && rv.parse::<i64>().is_err() => {
            Err(bad_request(format!("invalid resourceVersion {rv:?}")))
        }
        _ => Ok(None),
    }
}

pub async fn list(
    rest: &Rest,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let selectors = Selectors::parse(query, target.resource.kind)?;
    let listed = collect(rest, target, query, &selectors).await?;
    let mut metadata = json!({"resourceVersion": listed.revision.to_string()});
    if let Some(token) = &listed.continue_token {
        metadata["continue"] = json!(token);
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if table::wants_table(accept) {
        let include = table::IncludeObject::parse(query.get("includeObject"));
        let now = object::now();
        let rows = listed
            .items
            .iter()
            .map(|o| table::row(target.resource.kind, o, include, now))
            .collect();
        let body = table::table(target.resource.kind, rows, metadata, true);
        return Ok((
            [(header::CONTENT_TYPE, table::TABLE_CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response());
    }
    let list = json!({
        "kind": format!("{}List", target.resource.kind),
        "apiVersion": target.resource.group_version(),
        "metadata": metadata,
        "items": listed.items,
    });
    Ok(object_response(StatusCode::OK, &list))
}
