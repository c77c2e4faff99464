//! get and list: lists from the watch cache (later pages of a paged list, and reads at an
//! exact past revision, from the store); gets from the store.

use std::sync::Arc;

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
use super::target::resource_prefix;
use super::write::served;
use super::{Query, Rest, Target, object_response};
use crate::cache::{Cached, WatchCache};
use crate::status::ApiError;

pub async fn get(
    rest: &Rest,
    target: &Target,
    part: Part,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    match rest.store.get(&target.key(name), None).await {
        Ok(Some(kv)) => {
            let object = part.view(&served(&target.resource, decode(&kv)?));
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            // `kubectl get kind name` asks for a one-row Table, as it does for lists.
            if part == Part::Main && table::wants_table(accept) {
                let include = table::IncludeObject::parse(query.get("includeObject"));
                let row = table::row(target.resource.kind, &object, include, object::now());
                let metadata = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                let body = table::table(target.resource.kind, vec![row], metadata, true);
                return Ok((
                    [(header::CONTENT_TYPE, table::TABLE_CONTENT_TYPE)],
                    body.to_string(),
                )
                    .into_response());
            }
            Ok(object_response(StatusCode::OK, &object))
        }
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

    /// [`Selectors::matches`] for a cached object, from the values the cache keeps.
    pub fn matches_cached(&self, object: &Cached) -> bool {
        self.labels.matches(&object.labels) && self.fields.matches_set(&object.fields)
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
    let limit = parse_limit(query)?;
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

/// `limit`: `None` for all.
fn parse_limit(query: &Query) -> Result<Option<usize>, ApiError> {
    match query.get("limit") {
        None | Some("") | Some("0") => Ok(None),
        Some(text) => text
            .parse::<usize>()
            .map(Some)
            .map_err(|_| bad_request(format!("invalid limit {text:?}"))),
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

/// How fresh a list or watch served from the cache must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// `resourceVersion` unset: as fresh as the store (a consistent read).
    Latest,
    /// `resourceVersion=0`: whatever the cache has.
    Any,
    /// `resourceVersion=N`: not older than N.
    NotOlderThan(i64),
}

impl Freshness {
    pub fn of(query: &Query) -> Result<Self, ApiError> {
        match query.get("resourceVersion").filter(|v| !v.is_empty()) {
            None => Ok(Freshness::Latest),
            Some("0") => Ok(Freshness::Any),
            Some(rv) => rv
                .parse()
                .map(Freshness::NotOlderThan)
                .map_err(|_| bad_request(format!("invalid resourceVersion {rv:?}"))),
        }
    }

    /// The revision the cache is at once it is fresh enough. `None` when a consistent read
    /// cannot be had from the cache in time (the caller reads the store instead).
    pub async fn reach(self, cache: &WatchCache) -> Result<Option<i64>, ApiError> {
        match self {
            Freshness::Any => Ok(Some(cache.revision())),
            Freshness::Latest => match cache.wait_fresh().await {
                Ok(revision) => Ok(Some(revision)),
                Err(error) => {
                    tracing::warn!(%error, "watch cache behind; reading the store");
                    Ok(None)
                }
            },
            Freshness::NotOlderThan(wanted) => match cache.wait_for(wanted).await {
                Ok(revision) => Ok(Some(revision)),
                Err(_) => Err(too_large_resource_version(wanted, cache.revision())),
            },
        }
    }
}

/// kube-apiserver's answer when a read asks for a revision the server has not reached.
pub fn too_large_resource_version(wanted: i64, current: i64) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "Timeout",
        format!("Too large resource version: {wanted}, current: {current}"),
    )
}

/// The items of a list response, as read from the cache or the store.
enum Items {
    Cached(Vec<Arc<Cached>>),
    Stored(Vec<Value>),
}

impl Items {
    fn values(self) -> Result<Vec<Value>, ApiError> {
        match self {
            Items::Stored(values) => Ok(values),
            Items::Cached(objects) => objects
                .iter()
                .map(|o| o.value().map_err(|e| ApiError::internal(e.to_string())))
                .collect(),
        }
    }

    /// `[item,item,...]`: cached items are copied as they are, never re-encoded.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        match self {
            Items::Cached(objects) => {
                for (i, object) in objects.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&object.json);
                }
            }
            Items::Stored(values) => {
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(value.to_string().as_bytes());
                }
            }
        }
        out.push(b']');
    }
}

/// The first page of a list, from the cache; `None` when the store must answer instead.
async fn list_from_cache(
    rest: &Rest,
    target: &Target,
    query: &Query,
    selectors: &Selectors,
) -> Result<Option<(Items, i64, Option<String>)>, ApiError> {
    if query.get("continue").is_some_and(|c| !c.is_empty()) || exact_revision(query)?.is_some() {
        return Ok(None);
    }
    let Some(cache) = rest.cache.resource(&resource_prefix(&target.resource)) else {
        return Ok(None);
    };
    let Some(at_least) = Freshness::of(query)?.reach(&rest.cache).await? else {
        return Ok(None);
    };
    let prefix = target.collection_prefix();
    let snapshot = cache.list(&prefix, None, parse_limit(query)?, at_least, |o| {
        selectors.matches_cached(o)
    });
    // Later pages come from the store, at this snapshot's revision.
    let token = snapshot
        .more
        .then(|| snapshot.objects.last())
        .flatten()
        .map(|last| encode_continue(snapshot.revision, &last.key));
    Ok(Some((
        Items::Cached(snapshot.objects),
        snapshot.revision,
        token,
    )))
}

pub async fn list(
    rest: &Rest,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let selectors = Selectors::parse(query, target.resource.kind)?;
    let (items, revision, continue_token) =
        match list_from_cache(rest, target, query, &selectors).await? {
            Some(listed) => {
                rest.cache.metrics().read_from("cache");
                listed
            }
            None => {
                rest.cache.metrics().read_from("store");
                let listed = collect(rest, target, query, &selectors).await?;
                (
                    Items::Stored(listed.items),
                    listed.revision,
                    listed.continue_token,
                )
            }
        };
    // A version stored in another form is converted item by item.
    let items = if target.resource.conversion().is_some() {
        Items::Stored(
            items
                .values()?
                .into_iter()
                .map(|item| served(&target.resource, item))
                .collect(),
        )
    } else {
        items
    };
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = &continue_token {
        metadata["continue"] = json!(token);
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if table::wants_table(accept) {
        let include = table::IncludeObject::parse(query.get("includeObject"));
        let now = object::now();
        let rows = items
            .values()?
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
    let head = json!({
        "kind": format!("{}List", target.resource.kind),
        "apiVersion": target.resource.group_version(),
        "metadata": metadata,
    })
    .to_string();
    // `{...head...,"items":[...]}` followed by a newline.
    let mut body = Vec::with_capacity(head.len() + 64);
    body.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    body.extend_from_slice(b",\"items\":");
    items.write_json(&mut body);
    body.extend_from_slice(b"}\n");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
