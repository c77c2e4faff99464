//! The watch cache: every resource's objects and recent changes in memory, so lists and
//! watches are served without reading the store; only writes (and reads the cache cannot
//! answer: exact past revisions, later pages of a paged list) go to it.
//!
//! It is fed by one store watch over the whole keyspace. Loading lists `/registry/` at one
//! revision R, then the watch starts at R+1. Every store revision is an event of that watch
//! (a whole-keyspace watch sees every write), so once the event of revision N is applied,
//! the cache holds the state at N for every resource: [`WatchCache::revision`] is exact, and
//! a read that must be as fresh as the store waits until the cache reaches the store's
//! current revision ([`WatchCache::wait_fresh`]).
//!
//! When the watch fails for good (compaction overtook it), the cache loads again and every
//! open watch is ended; clients resume from their last revision, as they do after a
//! kube-apiserver restart.

mod resource;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use keelson_store::{ListOptions, Store, StoreError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use resource::{Cached, Change, ChangeKind, ResourceCache, Subscription};

/// Objects read per store page while loading.
const LOAD_PAGE: usize = 5_000;

/// How the cache behaves.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Changes kept per resource, for watches that start at a past revision. Older starts
    /// are served from the store's history instead.
    pub history: usize,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// How long a read waits for the cache to reach the revision it needs.
    pub freshness_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            history: 1024,
            bookmark_interval: Duration::from_secs(60),
            freshness_timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("loading the watch cache: {0}")]
    Load(#[from] StoreError),
    #[error("the watch cache has not reached revision {wanted} (it is at {current})")]
    Behind { wanted: i64, current: i64 },
}

/// The cache's metrics (`keelson_apiserver_watch_cache_*`).
#[derive(Clone, Default)]
pub struct CacheMetrics {
    /// Store events applied.
    pub events: Counter,
    /// Stored values that are not JSON objects (left out of the cache).
    pub bad_objects: Counter,
    /// Full loads after the first.
    pub reloads: Counter,
    /// Reads by where they were served from: `cache` or `store`.
    pub reads: Family<[(&'static str, &'static str); 1], Counter>,
    /// Open watches served from the cache.
    pub watchers: Gauge,
    /// The revision the cache has applied everything up to.
    pub revision: Gauge,
}

impl CacheMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = CacheMetrics::default();
        let registry = registry.sub_registry_with_prefix("keelson_apiserver_watch_cache");
        registry.register("events", "Store events applied", metrics.events.clone());
        registry.register(
            "bad_objects",
            "Stored values left out because they are not JSON",
            metrics.bad_objects.clone(),
        );
        registry.register(
            "reloads",
            "Full loads after the watch fell behind",
            metrics.reloads.clone(),
        );
        registry.register(
            "reads",
            "List and watch starts by where they were served from",
            metrics.reads.clone(),
        );
        registry.register(
            "watchers",
            "Watches served from the cache",
            metrics.watchers.clone(),
        );
        registry.register(
            "revision",
            "Revision the cache is complete up to",
            metrics.revision.clone(),
        );
        metrics
    }

    /// Counts one read served from `source`.
    pub fn read_from(&self, source: &'static str) {
        self.reads.get_or_create(&[("source", source)]).inc();
    }
}

type Resources = Arc<HashMap<String, Arc<ResourceCache>>>;

/// Every resource's cache, and the task that keeps them current.
pub struct WatchCache {
    store: Arc<dyn Store>,
    resources: Resources,
    revision: watch::Receiver<i64>,
    config: CacheConfig,
    metrics: CacheMetrics,
    follower: JoinHandle<()>,
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl WatchCache {
    /// Loads every resource under its store prefix (`/registry/{group}/{plural}/`, given
    /// with the resource's kind) and starts following the store.
    pub async fn start(
        store: Arc<dyn Store>,
        resources: impl IntoIterator<Item = (String, &'static str)>,
        config: CacheConfig,
        registry: &mut Registry,
    ) -> Result<Self, CacheError> {
        let metrics = CacheMetrics::register(registry);
        let resources: Resources = Arc::new(
            resources
                .into_iter()
                .map(|(prefix, kind)| (prefix, Arc::new(ResourceCache::new(kind, config.history))))
                .collect(),
        );
        let revision = load(store.as_ref(), &resources, &metrics).await?;
        metrics.revision.set(revision);
        let (sender, receiver) = watch::channel(revision);
        let follower = tokio::spawn(follow(
            store.clone(),
            resources.clone(),
            sender,
            revision,
            metrics.clone(),
        ));
        Ok(WatchCache {
            store,
            resources,
            revision: receiver,
            config,
            metrics,
            follower,
        })
    }

    /// The cache of the resource stored under `prefix`.
    pub fn resource(&self, prefix: &str) -> Option<Arc<ResourceCache>> {
        self.resources.get(prefix).cloned()
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// The revision every resource's cache is complete up to.
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Waits (up to the freshness timeout) until the cache is complete up to `wanted`.
    pub async fn wait_for(&self, wanted: i64) -> Result<i64, CacheError> {
        let mut receiver = self.revision.clone();
        let reached = tokio::time::timeout(
            self.config.freshness_timeout,
            receiver.wait_for(|revision| *revision >= wanted),
        )
        .await;
        match reached {
            Ok(Ok(revision)) => Ok(*revision),
            _ => Err(CacheError::Behind {
                wanted,
                current: self.revision(),
            }),
        }
    }

    /// Waits until the cache has every write the store had when called: the cache then
    /// answers as a read of the store would (a consistent read).
    pub async fn wait_fresh(&self) -> Result<i64, CacheError> {
        let current = self.store.current_revision().await?;
        self.wait_for(current).await
    }
}

/// `/registry/{group}/{plural}/` of a key below it.
fn resource_prefix_of(key: &str) -> Option<&str> {
    let (end, _) = key.match_indices('/').nth(3)?;
    Some(&key[..=end])
}

/// Reads every object at one revision into the caches; returns that revision.
async fn load(
    store: &dyn Store,
    resources: &Resources,
    metrics: &CacheMetrics,
) -> Result<i64, StoreError> {
    let mut loaded: HashMap<&str, BTreeMap<String, Arc<Cached>>> = HashMap::new();
    let mut options = ListOptions {
        revision: None,
        limit: Some(LOAD_PAGE),
        start_after: None,
    };
    let revision = loop {
        let page = store.list("/registry/", options.clone()).await?;
        for kv in &page.kvs {
            let Some((prefix, cache)) =
                resource_prefix_of(&kv.key).and_then(|p| resources.get_key_value(p))
            else {
                continue;
            };
            match Cached::from_stored(cache.kind(), &kv.key, kv.mod_revision, &kv.value) {
                Ok(object) => {
                    loaded
                        .entry(prefix.as_str())
                        .or_default()
                        .insert(kv.key.clone(), Arc::new(object));
                }
                Err(error) => {
                    metrics.bad_objects.inc();
                    tracing::warn!(key = %kv.key, %error, "stored object is not JSON; not cached");
                }
            }
        }
        if !page.more {
            break page.revision;
        }
        options.revision = Some(page.revision);
        options.start_after = page.kvs.last().map(|kv| kv.key.clone());
    };
    for (prefix, cache) in resources.iter() {
        cache.reset(loaded.remove(prefix.as_str()).unwrap_or_default(), revision);
    }
    Ok(revision)
}

/// Applies the store's changes as they happen; loads again when the watch cannot go on.
async fn follow(
    store: Arc<dyn Store>,
    resources: Resources,
    sender: watch::Sender<i64>,
    mut revision: i64,
    metrics: CacheMetrics,
) {
    let retry = Duration::from_millis(200);
    loop {
        let reload = match store.watch("", revision + 1).await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Some(Ok(event)) => {
                        let applied = resource_prefix_of(&event.kv.key)
                            .and_then(|prefix| resources.get(prefix))
                            .map(|cache| cache.apply(&event));
                        if let Some(Err(error)) = applied {
                            metrics.bad_objects.inc();
                            tracing::warn!(key = %event.kv.key, %error, "stored object is not JSON; not cached");
                        }
                        metrics.events.inc();
                        revision = event.revision();
                        metrics.revision.set(revision);
                        sender.send_replace(revision);
                    }
                    Some(Err(StoreError::Closed)) => return,
                    Some(Err(StoreError::Compacted { .. })) => break true,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "watch cache: store watch failed; resuming");
                        break false;
                    }
                    None => break false,
                }
            },
            Err(StoreError::Closed) => return,
            Err(StoreError::Compacted { .. }) => true,
            Err(error) => {
                tracing::warn!(%error, "watch cache: cannot watch the store; retrying");
                false
            }
        };
        tokio::time::sleep(retry).await;
        if !reload {
            continue;
        }
        loop {
            match load(store.as_ref(), &resources, &metrics).await {
                Ok(loaded) => {
                    metrics.reloads.inc();
                    revision = loaded;
                    metrics.revision.set(revision);
                    sender.send_replace(revision);
                    break;
                }
                Err(StoreError::Closed) => return,
                Err(error) => {
                    tracing::warn!(%error, "watch cache: loading failed; retrying");
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_resource_prefix() {
        assert_eq!(
            resource_prefix_of("/registry/core/pods/default/web"),
            Some("/registry/core/pods/")
        );
        assert_eq!(
            resource_prefix_of("/registry/core/nodes/n1"),
            Some("/registry/core/nodes/")
        );
        assert_eq!(resource_prefix_of("compact_rev_key"), None);
        assert_eq!(resource_prefix_of("/registry/core"), None);
    }
}
