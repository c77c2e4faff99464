//! watch: a chunked stream of newline-delimited JSON events, served from the watch cache
//! (a start older than the cache's history is served from the store's).
//!
//! Start points, as Kubernetes defines them:
//! * `resourceVersion=N` — every change after N (410 `Expired` as an `ERROR` event when N is
//!   compacted);
//! * no `resourceVersion`, or `0` — `ADDED` for every current object, then changes;
//! * `sendInitialEvents=true` (WatchList, with `resourceVersionMatch=NotOlderThan`) — the
//!   current objects as `ADDED`, then a `BOOKMARK` annotated `k8s.io/initial-events-end`,
//!   then changes.
//!
//! With `allowWatchBookmarks`, a `BOOKMARK` carrying the revision the watch is complete up
//! to is sent every bookmark interval (kube-apiserver: about a minute).
//!
//! Selectors apply to both sides of a change: an object that stops matching is sent as
//! `DELETED`, one that starts matching as `ADDED`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use keelson_api::table;
use keelson_store::{EventKind, StoreError, WatchEvent};
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::mpsc;

use super::object::{self, bad_request, decode, expired};
use super::read::{Freshness, Selectors, too_large_resource_version};
use super::target::resource_prefix;
use super::{Query, Rest, Target};
use crate::cache::{Cached, Change, ChangeKind, ResourceCache, Subscription, WatchCache};
use crate::status::ApiError;
use keelson_api::conversion::Conversion;

/// How long a watch lasts without `timeoutSeconds` (kube-apiserver picks 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How one event is written: whole objects, or `Table` rows for `kubectl get -w`.
struct Encoder {
    kind: &'static str,
    api_version: String,
    /// Set when the watched version is stored in another form.
    conversion: Option<Conversion>,
    table: Option<table::IncludeObject>,
    sent_columns: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, object: &Value) -> Bytes {
        let converted;
        let object = match self.conversion {
            Some(conversion) if kind != "BOOKMARK" && kind != "ERROR" => {
                let mut copy = object.clone();
                keelson_api::conversion::from_storage(conversion, &mut copy);
                converted = copy;
                &converted
            }
            _ => object,
        };
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

    /// The event for a cached object: its JSON is copied as it is, never re-encoded.
    fn cached(&mut self, kind: &str, object: &Cached) -> Bytes {
        if self.table.is_some() || self.conversion.is_some() {
            return match object.value() {
                Ok(value) => self.event(kind, &value),
                Err(error) => self.event(
                    "ERROR",
                    &error_event(&ApiError::internal(error.to_string())),
                ),
            };
        }
        let mut line = Vec::with_capacity(object.json.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(&object.json);
        line.extend_from_slice(b"}\n");
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
    let encoder = Encoder {
        kind: target.resource.kind,
        api_version: target.resource.group_version(),
        conversion: target.resource.conversion(),
        table: table::wants_table(accept)
            .then(|| table::IncludeObject::parse(query.get("includeObject"))),
        sent_columns: false,
    };

    let content_type = if encoder.table.is_some() {
        table::TABLE_CONTENT_TYPE
    } else {
        "application/json"
    };
    let cache = rest
        .cache
        .resource(&resource_prefix(&target.resource))
        .ok_or_else(|| ApiError::internal("resource has no watch cache"))?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let mut watch = CachedWatch {
        cache,
        caches: rest.cache.clone(),
        prefix: target.collection_prefix(),
        selectors,
        encoder,
        tx,
        last: 0,
        bookmarks: query.flag("allowWatchBookmarks"),
    };
    match rv {
        Some(rv) if rv != "0" && !initial_events => {
            let after = rv
                .parse::<i64>()
                .map_err(|_| bad_request(format!("invalid resourceVersion {rv:?}")))?;
            match watch.cache.watch_from(after) {
                Some(subscription) => {
                    rest.cache.metrics().read_from("cache");
                    watch.last = after;
                    tokio::spawn(watch.run(Vec::new(), subscription, timeout));
                }
                // Older than the cache's history: the store still has it (or says 410).
                None => {
                    rest.cache.metrics().read_from("store");
                    let CachedWatch {
                        selectors,
                        encoder,
                        tx,
                        ..
                    } = watch;
                    watch_store(rest, target, after + 1, selectors, encoder, tx, timeout).await?;
                }
            }
        }
        _ => {
            // The current objects as ADDED, then the changes after them.
            let freshness = match (rv, initial_events) {
                (None, _) => Freshness::Latest,
                (Some(rv), true) if rv != "0" => Freshness::of(query)?,
                _ => Freshness::Any,
            };
            let at_least = match freshness.reach(&rest.cache).await? {
                Some(revision) => revision,
                None => {
                    return Err(too_large_resource_version(
                        rest.store
                            .current_revision()
                            .await
                            .map_err(object::internal)?,
                        rest.cache.revision(),
                    ));
                }
            };
            rest.cache.metrics().read_from("cache");
            let selectors = &watch.selectors;
            let (snapshot, subscription) = watch
                .cache
                .watch_now(&watch.prefix, at_least, |o| selectors.matches_cached(o));
            let mut opening = Vec::with_capacity(snapshot.objects.len() + 1);
            for object in &snapshot.objects {
                opening.push(watch.encoder.cached("ADDED", object));
            }
            if initial_events {
                let bookmark = watch.bookmark(snapshot.revision, true);
                opening.push(watch.encoder.event("BOOKMARK", &bookmark));
            }
            watch.last = snapshot.revision;
            tokio::spawn(watch.run(opening, subscription, timeout));
        }
    }
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|item| item.map(Ok::<_, std::convert::Infallible>))
    }));
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// A watch served from the cache.
struct CachedWatch {
    cache: Arc<ResourceCache>,
    caches: Arc<WatchCache>,
    /// The collection watched: a namespace's, or all.
    prefix: String,
    selectors: Selectors,
    encoder: Encoder,
    tx: mpsc::Sender<Bytes>,
    /// Every change up to this revision has been sent or passed over.
    last: i64,
    bookmarks: bool,
}

/// Counts a cached watch while it runs.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl CachedWatch {
    /// Sends the opening events and the replayed changes, then live changes (and bookmarks,
    /// when allowed), until the client goes away, the timeout, or the cache is reloaded.
    async fn run(mut self, opening: Vec<Bytes>, subscription: Subscription, timeout: Duration) {
        let gauge = self.caches.metrics().watchers.clone();
        gauge.inc();
        let _open = Open(gauge);
        for line in opening {
            if self.tx.send(line).await.is_err() {
                return;
            }
        }
        let Subscription { replay, mut live } = subscription;
        for change in replay {
            if !self.handle(&change).await {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let period = self.caches.config().bookmark_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(change) => {
                        if !self.handle(&change).await {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => match self.catch_up().await {
                        Some(resubscribed) => live = resubscribed,
                        None => return,
                    },
                    Err(RecvError::Closed) => return,
                },
                _ = ticker.tick(), if self.bookmarks => {
                    // Everything up to `seen` is already in the channel: take it first, so
                    // the bookmark never runs ahead of a change not yet sent.
                    let seen = self.caches.revision();
                    loop {
                        match live.try_recv() {
                            Ok(change) => {
                                if !self.handle(&change).await {
                                    return;
                                }
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Lagged(_)) => match self.catch_up().await {
                                Some(resubscribed) => live = resubscribed,
                                None => return,
                            },
                            Err(TryRecvError::Closed) => return,
                        }
                    }
                    if seen > self.last {
                        self.last = seen;
                    }
                    let bookmark = self.bookmark(self.last, false);
                    let line = self.encoder.event("BOOKMARK", &bookmark);
                    if self.tx.send(line).await.is_err() {
                        return;
                    }
                }
                () = &mut deadline => return,
                () = self.tx.closed() => return,
            }
        }
    }

    /// After falling behind the live channel: the missed changes from the history, and a
    /// new subscription. `None` when the history no longer reaches back (the watch ends and
    /// the client starts again from its last revision).
    async fn catch_up(&mut self) -> Option<broadcast::Receiver<Arc<Change>>> {
        let Subscription { replay, live } = self.cache.watch_from(self.last)?;
        for change in replay {
            if !self.handle(&change).await {
                return None;
            }
        }
        Some(live)
    }

    /// Sends one change as this watch sees it; `false` when the client is gone.
    async fn handle(&mut self, change: &Change) -> bool {
        if change.revision <= self.last {
            return true;
        }
        self.last = change.revision;
        if !change.object.key.starts_with(&self.prefix) {
            return true;
        }
        match translate(change, &self.selectors) {
            Some((kind, object)) => {
                let line = self.encoder.cached(kind, object);
                self.tx.send(line).await.is_ok()
            }
            None => true,
        }
    }

    fn bookmark(&self, revision: i64, initial_events_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({
            "kind": self.encoder.kind,
            "apiVersion": self.encoder.api_version,
            "metadata": metadata,
        })
    }
}

/// The watch event for a cached change, seen through the selectors.
fn translate<'a>(change: &'a Change, selectors: &Selectors) -> Option<(&'static str, &'a Cached)> {
    let matched_before = change
        .prev
        .as_ref()
        .is_some_and(|o| selectors.matches_cached(o));
    if change.kind == ChangeKind::Deleted {
        return matched_before.then_some(("DELETED", change.object.as_ref()));
    }
    let object = change.object.as_ref();
    match (matched_before, selectors.matches_cached(object)) {
        // Created, or changed into the selection.
        (false, true) => Some(("ADDED", object)),
        (true, true) => Some(("MODIFIED", object)),
        // Changed out of the selection: gone, as far as this watch is concerned.
        (true, false) => Some(("DELETED", object)),
        (false, false) => None,
    }
}

/// A watch from a revision older than the cache's history, read from the store.
async fn watch_store(
    rest: &Rest,
    target: &Target,
    start_revision: i64,
    selectors: Selectors,
    mut encoder: Encoder,
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
) -> Result<(), ApiError> {
    match rest
        .store
        .watch(&target.collection_prefix(), start_revision)
        .await
    {
        Ok(stream) => {
            tokio::spawn(forward(stream, selectors, encoder, tx, timeout));
            Ok(())
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
            Ok(())
        }
        Err(error) => Err(object::internal(error)),
    }
}

/// Sends store events as Kubernetes watch events, until the
/// client goes away, the store watch ends, or the timeout.
async fn forward(
    mut stream: keelson_store::WatchStream,
    selectors: Selectors,
    mut encoder: Encoder,
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
) {
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
            Some(Ok(event)) => match translate_stored(&event, &selectors) {
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
fn translate_stored(
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
