//! watch: a chunked stream of newline-delimited JSON events.
//!
//! Start points, as Kubernetes defines them:
//! * `resourceVersion=N` — every change after N (410 `Expired` as an `ERROR` event when N is
//!   compacted);
//! * no `resourceVersion`, or `0` — `ADDED` for every current object, then changes;
//! * `sendInitialEvents=true` (WatchList, with `resourceVersionMatch=NotOlderThan`) — the
//!   current objects as `ADDED`, then a `BOOKMARK` annotated `k8s.io/initial-events-end`,
//!   then changes.
//!
//! Selectors apply to both sides of a change: an object that stops matching is sent as
//! `DELETED`, one that starts matching as `ADDED`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use keelson_api::table;
use keelson_store::{EventKind, StoreError, WatchEvent};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::object::{self, bad_request, decode, expired};
use super::read::{Selectors, collect};
use super::{Query, Rest, Target};
use crate::status::ApiError;

/// How long a watch lasts without `timeoutSeconds` (kube-apiserver picks 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How one event is written: whole objects, or `Table` rows for `kubectl get -w`.
struct Encoder {
    kind: &'static str,
    table: Option<table::IncludeObject>,
    sent_columns: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, object: &Value) -> Bytes {
        let object = match self.table {
            Some(include) if kind != "BOOKMARK" && kind != "ERROR" => {
                let row = table::row(self.kind, object, include, object::now());
                let metadata = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                let with_columns = !self.sent_columns;
                self.sent_columns = true;
                table::table(self.kind, vec![row], metadata, with_columns)
            }
            _ => object.clone(),
        };
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }
}

fn error_event(error: &ApiError) -> Value {
    serde_json::from_str(error.body().trim_end()).unwrap_or(Value::Null)
}

/// The object of a delete event: the last state, at the revision of the delete.
fn deleted_object(event: &WatchEvent) -> Result<Option<Value>, ApiError> {
    let Some(prev) = &event.prev else {
        return Ok(None);
    };
    let mut object = decode(prev)?;
    object::set_resource_version(&mut object, event.revision());
    Ok(Some(object))
}

pub async fn watch(rest: &Rest, target: &Target, query: &Query, headers: &HeaderMap) -> Response {
    match start(rest, target, query, headers).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn start(
    rest: &Rest,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let selectors = Selectors::parse(query, target.resource.kind)?;
    let initial_events = query.flag("sendInitialEvents");
    let rv = query.get("resourceVersion").filter(|v| !v.is_empty());
    if initial_events && query.get("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "resourceVersionMatch: Invalid value: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut encoder = Encoder {
        kind: target.resource.kind,
        table: table::wants_table(accept)
            .then(|| table::IncludeObject::parse(query.get("includeObject"))),
        sent_columns: false,
    };

    // What comes before the changes: current objects, when asked for.
    let mut opening = Vec::new();
    let start_revision = match rv {
        Some(rv) if rv != "0" && !initial_events => {
            rv.parse::<i64>()
                .map_err(|_| bad_request(format!("invalid resourceVersion {rv:?}")))?
                + 1
        }
        _ => {
            let listed = collect(rest, target, &Query::parse(None), &selectors).await?;
            for object in &listed.items {
                opening.push(encoder.event("ADDED", object));
            }
            if initial_events {
                let bookmark = json!({
                    "kind": target.resource.kind,
                    "apiVersion": target.resource.group_version(),
                    "metadata": {
                        "resourceVersion": listed.revision.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                });
                opening.push(encoder.event("BOOKMARK", &bookmark));
            }
            listed.revision + 1
        }
    };
    let content_type = if encoder.table.is_some() {
        table::TABLE_CONTENT_TYPE
    } else {
        "application/json"
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    match rest
        .store
        .watch(&target.collection_prefix(), start_revision)
        .await
    {
        Ok(stream) => {
            tokio::spawn(forward(stream, selectors, encoder, opening, tx, timeout));
        }
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            // kube-apiserver reports this inside the stream, as an ERROR event.
            let error = expired(format!(
                "too old resource version: {} ({compacted})",
                requested - 1
            ));
            let _ = tx.send(encoder.event("ERROR", &error_event(&error))).await;
        }
        Err(error) => return Err(object::internal(error)),
    }
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|item| item.map(Ok::<_, std::convert::Infallible>))
    }));
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Sends the opening events, then store events as Kubernetes watch events, until the
/// client goes away, the store watch ends, or the timeout.
async fn forward(
    mut stream: keelson_store::WatchStream,
    selectors: Selectors,
    mut encoder: Encoder,
    opening: Vec<Bytes>,
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
) {
    for line in opening {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = &mut deadline => return,
            () = tx.closed() => return,
        };
        let line = match item {
            None => return,
            Some(Err(StoreError::Compacted {
                requested,
                compacted,
            })) => {
                let error = expired(format!(
                    "too old resource version: {requested} ({compacted})"
                ));
                encoder.event("ERROR", &error_event(&error))
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "watch ended");
                return;
            }
            Some(Ok(event)) => match translate(&event, &selectors) {
                Ok(Some((kind, object))) => encoder.event(kind, &object),
                Ok(None) => continue,
                Err(error) => encoder.event("ERROR", &error_event(&error)),
            },
        };
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

/// The Kubernetes event for a store event, seen through the selectors.
fn translate(
    event: &WatchEvent,
    selectors: &Selectors,
) -> Result<Option<(&'static str, Value)>, ApiError> {
    let before = match &event.prev {
        Some(prev) => Some(decode(prev)?),
        None => None,
    };
    let matched_before = before.as_ref().is_some_and(|o| selectors.matches(o));
    if event.kind == EventKind::Delete {
        return Ok(if matched_before {
            deleted_object(event)?.map(|o| ("DELETED", o))
        } else {
            None
        });
    }
    let after = decode(&event.kv)?;
    let matches_now = selectors.matches(&after);
    Ok(match (matched_before, matches_now) {
        // Created, or changed into the selection.
        (false, true) => Some(("ADDED", after)),
        (true, true) => Some(("MODIFIED", after)),
        // Changed out of the selection: gone, as far as this watch is concerned.
        (true, false) => Some(("DELETED", after)),
        (false, false) => None,
    })
}
