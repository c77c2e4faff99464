//! One resource's part of the watch cache: its current objects in key order, its recent
//! changes, and the broadcast that carries new changes to watchers.
//!
//! Every read takes the state under one lock, so what it returns (objects, replayed
//! changes, a live subscription) is one consistent cut: a change is either in the snapshot
//! or arrives on the subscription, never both and never neither.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use keelson_api::fields::FieldSet;
use keelson_api::meta;
use keelson_store::{EventKind, WatchEvent};
use serde_json::Value;
use tokio::sync::broadcast;

/// One object as the API serves it.
#[derive(Debug)]
pub struct Cached {
    pub key: String,
    /// The served JSON, `resourceVersion` included.
    pub json: Bytes,
    pub labels: BTreeMap<String, String>,
    pub fields: FieldSet,
}

impl Cached {
    /// The object stored under `key` at `revision`, as served.
    pub fn from_stored(
        kind: &str,
        key: &str,
        revision: i64,
        stored: &[u8],
    ) -> Result<Self, serde_json::Error> {
        let object: Value = serde_json::from_slice(stored)?;
        Self::from_value(kind, key, revision, object)
    }

    fn from_value(
        kind: &str,
        key: &str,
        revision: i64,
        mut object: Value,
    ) -> Result<Self, serde_json::Error> {
        meta::set_resource_version(&mut object, revision);
        Ok(Cached {
            key: key.to_owned(),
            json: Bytes::from(serde_json::to_vec(&object)?),
            labels: meta::labels(&object),
            fields: FieldSet::of(kind, &object),
        })
    }

    /// The same object at another revision (a deletion's).
    fn at_revision(&self, kind: &str, revision: i64) -> Result<Self, serde_json::Error> {
        Self::from_value(kind, &self.key, revision, self.value()?)
    }

    /// The object as JSON, to work on.
    pub fn value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One change to one object.
#[derive(Debug)]
pub struct Change {
    pub kind: ChangeKind,
    pub revision: i64,
    /// The object after the change; for a deletion, its last state at the deletion's
    /// revision (what a `DELETED` watch event carries).
    pub object: Arc<Cached>,
    /// The object before the change (modifications and deletions).
    pub prev: Option<Arc<Cached>>,
}

/// Objects of one list read, and the revision they are exactly the state at.
pub struct Snapshot {
    pub objects: Vec<Arc<Cached>>,
    pub revision: i64,
    /// More matching objects follow the last one (a `limit` was reached).
    pub more: bool,
}

/// A watch's start: the changes after its revision that the cache still has, then the live
/// ones.
pub struct Subscription {
    pub replay: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
}

struct State {
    objects: BTreeMap<String, Arc<Cached>>,
    changes: VecDeque<Arc<Change>>,
    /// `changes` holds every change with a revision above this.
    complete_after: i64,
    /// The revision of the last change applied.
    last_applied: i64,
    live: broadcast::Sender<Arc<Change>>,
}

/// The cache of one resource (one store prefix, all namespaces).
pub struct ResourceCache {
    kind: &'static str,
    history: usize,
    state: RwLock<State>,
}

impl ResourceCache {
    /// An empty cache for objects of `kind`, keeping `history` recent changes.
    pub fn new(kind: &'static str, history: usize) -> Self {
        let history = history.max(1);
        ResourceCache {
            kind,
            history,
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                changes: VecDeque::new(),
                complete_after: 0,
                last_applied: 0,
                live: broadcast::channel(history).0,
            }),
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the contents with `objects`, the state at `revision`. Watchers of the old
    /// contents are ended (their subscriptions close): they cannot know what changed.
    pub fn reset(&self, objects: BTreeMap<String, Arc<Cached>>, revision: i64) {
        let mut state = self.write();
        state.objects = objects;
        state.changes.clear();
        state.complete_after = revision;
        state.last_applied = revision;
        state.live = broadcast::channel(self.history).0;
    }

    /// Applies one store event and sends the change to the watchers.
    pub fn apply(&self, event: &WatchEvent) -> Result<(), serde_json::Error> {
        let revision = event.revision();
        let key = &event.kv.key;
        let mut state = self.write();
        state.last_applied = revision;
        let change = if event.kind == EventKind::Delete {
            let Some(prev) = state.objects.remove(key) else {
                return Ok(());
            };
            Change {
                kind: ChangeKind::Deleted,
                revision,
                object: Arc::new(prev.at_revision(self.kind, revision)?),
                prev: Some(prev),
            }
        } else {
            let object = Arc::new(Cached::from_stored(
                self.kind,
                key,
                revision,
                &event.kv.value,
            )?);
            let prev = state.objects.insert(key.clone(), object.clone());
            Change {
                kind: if prev.is_some() {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                },
                revision,
                object,
                prev,
            }
        };
        let change = Arc::new(change);
        if state.changes.len() == self.history
            && let Some(oldest) = state.changes.pop_front()
        {
            state.complete_after = oldest.revision;
        }
        state.changes.push_back(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = state.live.send(change);
        Ok(())
    }

    /// Objects under `prefix` after `start_after`, in key order, that pass `filter`; at most
    /// `limit`. The snapshot's revision is `at_least` (what the whole cache has seen) or this
    /// resource's last change, whichever is later.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        at_least: i64,
        filter: impl Fn(&Cached) -> bool,
    ) -> Snapshot {
        let state = self.read();
        let (objects, more) = select(&state, prefix, start_after, limit, filter);
        Snapshot {
            objects,
            revision: at_least.max(state.last_applied),
            more,
        }
    }

    /// The current objects under `prefix` that pass `filter`, and the changes after them.
    pub fn watch_now(
        &self,
        prefix: &str,
        at_least: i64,
        filter: impl Fn(&Cached) -> bool,
    ) -> (Snapshot, Subscription) {
        let state = self.read();
        let (objects, _) = select(&state, prefix, None, None, filter);
        let snapshot = Snapshot {
            objects,
            revision: at_least.max(state.last_applied),
            more: false,
        };
        let subscription = Subscription {
            replay: Vec::new(),
            live: state.live.subscribe(),
        };
        (snapshot, subscription)
    }

    /// Every change after `revision`, or `None` when the cache no longer has them all.
    pub fn watch_from(&self, revision: i64) -> Option<Subscription> {
        let state = self.read();
        if revision < state.complete_after {
            return None;
        }
        let first = state.changes.partition_point(|c| c.revision <= revision);
        Some(Subscription {
            replay: state.changes.range(first..).cloned().collect(),
            live: state.live.subscribe(),
        })
    }
}

fn select(
    state: &State,
    prefix: &str,
    start_after: Option<&str>,
    limit: Option<usize>,
    filter: impl Fn(&Cached) -> bool,
) -> (Vec<Arc<Cached>>, bool) {
    let lower = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    let mut objects = Vec::new();
    let mut matching = state
        .objects
        .range::<str, _>((lower, Bound::Unbounded))
        .take_while(|(key, _)| key.starts_with(prefix))
        .map(|(_, object)| object)
        .filter(|object| filter(object));
    for object in matching.by_ref() {
        if limit.is_some_and(|n| objects.len() >= n) {
            return (objects, true);
        }
        objects.push(object.clone());
    }
    (objects, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_store::KeyValue;

    fn put(key: &str, revision: i64, labels: &str) -> WatchEvent {
        let value = format!(
            r#"{{"metadata":{{"name":"{}","labels":{labels}}}}}"#,
            key.rsplit('/').next().unwrap_or_default()
        );
        WatchEvent {
            kind: EventKind::Modify,
            kv: KeyValue {
                key: key.into(),
                value: value.into(),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
            },
            prev: None,
        }
    }

    fn delete(key: &str, revision: i64) -> WatchEvent {
        WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.into(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
            },
            prev: None,
        }
    }

    fn names(snapshot: &Snapshot) -> Vec<&str> {
        snapshot.objects.iter().map(|o| o.key.as_str()).collect()
    }

    #[test]
    fn lists_by_prefix_in_key_order_with_revisions_served() {
        let cache = ResourceCache::new("Pod", 16);
        cache.reset(BTreeMap::new(), 10);
        for (key, rev) in [("/p/b/x", 11), ("/p/a/y", 12), ("/p/a/x", 13)] {
            cache.apply(&put(key, rev, "{}")).expect("json");
        }
        let all = cache.list("/p/", None, None, 13, |_| true);
        assert_eq!(names(&all), ["/p/a/x", "/p/a/y", "/p/b/x"]);
        assert_eq!(all.revision, 13);
        let value = all.objects[0].value().expect("json");
        assert_eq!(value["metadata"]["resourceVersion"], "13");
        assert_eq!(
            names(&cache.list("/p/a/", None, None, 0, |_| true)),
            ["/p/a/x", "/p/a/y"]
        );
        let page = cache.list("/p/", Some("/p/a/x"), Some(1), 0, |_| true);
        assert_eq!((names(&page), page.more), (vec!["/p/a/y"], true));
        let last = cache.list("/p/", Some("/p/a/y"), Some(1), 0, |_| true);
        assert_eq!((names(&last), last.more), (vec!["/p/b/x"], false));
        // A snapshot is never older than what the caller knows the whole cache has seen.
        assert_eq!(cache.list("/p/", None, None, 20, |_| true).revision, 20);
    }

    #[test]
    fn changes_carry_kinds_previous_states_and_deletion_revisions() {
        let cache = ResourceCache::new("Pod", 16);
        cache.reset(BTreeMap::new(), 1);
        let (_, mut sub) = cache.watch_now("/p/", 1, |_| true);
        cache.apply(&put("/p/a", 2, r#"{"v":"1"}"#)).expect("json");
        cache.apply(&put("/p/a", 3, r#"{"v":"2"}"#)).expect("json");
        cache.apply(&delete("/p/a", 4)).expect("json");
        let added = sub.live.try_recv().expect("added");
        assert_eq!((added.kind, added.revision), (ChangeKind::Added, 2));
        let modified = sub.live.try_recv().expect("modified");
        assert_eq!(modified.kind, ChangeKind::Modified);
        assert_eq!(
            modified.prev.as_ref().map(|p| p.labels["v"].as_str()),
            Some("1")
        );
        let deleted = sub.live.try_recv().expect("deleted");
        assert_eq!(deleted.kind, ChangeKind::Deleted);
        assert_eq!(deleted.object.labels["v"], "2");
        let value = deleted.object.value().expect("json");
        assert_eq!(value["metadata"]["resourceVersion"], "4");
        assert!(
            cache
                .list("/p/", None, None, 0, |_| true)
                .objects
                .is_empty()
        );
    }

    #[test]
    fn watches_replay_what_the_history_still_holds() {
        let cache = ResourceCache::new("Pod", 3);
        cache.reset(BTreeMap::new(), 5);
        for rev in 6..=9 {
            cache
                .apply(&put(&format!("/p/{rev}"), rev, "{}"))
                .expect("json");
        }
        // History keeps 7, 8, 9: complete after 6.
        assert!(cache.watch_from(5).is_none(), "6 was dropped");
        let sub = cache.watch_from(6).expect("in history");
        let replayed: Vec<i64> = sub.replay.iter().map(|c| c.revision).collect();
        assert_eq!(replayed, [7, 8, 9]);
        let sub = cache.watch_from(8).expect("in history");
        assert_eq!(sub.replay.len(), 1);
        assert!(cache.watch_from(9).expect("current").replay.is_empty());
    }

    #[test]
    fn reset_ends_live_subscriptions() {
        let cache = ResourceCache::new("Pod", 4);
        cache.reset(BTreeMap::new(), 1);
        let mut sub = cache.watch_from(1).expect("current");
        cache.reset(BTreeMap::new(), 50);
        assert!(matches!(
            sub.live.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert!(
            cache.watch_from(10).is_none(),
            "history restarts at the reset"
        );
    }

    #[test]
    fn bad_json_is_an_error_and_leaves_the_state() {
        let cache = ResourceCache::new("Pod", 4);
        cache.reset(BTreeMap::new(), 1);
        cache.apply(&put("/p/a", 2, "{}")).expect("json");
        let mut bad = put("/p/a", 3, "{}");
        bad.kv.value = Bytes::from_static(b"not json");
        assert!(cache.apply(&bad).is_err());
        let listed = cache.list("/p/", None, None, 0, |_| true);
        let value = listed.objects[0].value().expect("json");
        assert_eq!(value["metadata"]["resourceVersion"], "2");
    }
}
