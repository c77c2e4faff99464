//! Expectations, as upstream's controllers keep them: the pods a controller has just
//! created or deleted that its pod cache may not show yet, remembered per owner (for a
//! while) so a quick second reconcile neither creates nor deletes twice. A created pod is
//! forgotten once the cache has it, a deleted one once the cache shows it gone or
//! inactive; either after `EXPECTATION_TTL` in any case.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tokio::time::Instant;

use crate::workload::is_active;

/// How long a create or delete is remembered while the cache catches up.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// One owner's outstanding creates (pod name, a tag the controller keeps with it, when)
/// and deletes (pod name, when).
struct Outstanding<T> {
    created: Vec<(String, T, Instant)>,
    deleted: Vec<(String, Instant)>,
}

impl<T> Default for Outstanding<T> {
    fn default() -> Self {
        Outstanding {
            created: Vec::new(),
            deleted: Vec::new(),
        }
    }
}

/// Every owner's outstanding creates and deletes, by owner uid.
pub struct Expectations<T> {
    owners: Mutex<HashMap<String, Outstanding<T>>>,
}

impl<T: Clone> Expectations<T> {
    pub fn new() -> Self {
        Expectations {
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, owner: &str, f: impl FnOnce(&mut Outstanding<T>) -> R) -> R {
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        f(owners.entry(owner.to_owned()).or_default())
    }

    pub fn created(&self, owner: &str, pod: String, tag: T) {
        self.with(owner, |o| o.created.push((pod, tag, Instant::now())));
    }

    pub fn deleted(&self, owner: &str, pod: String) {
        self.with(owner, |o| o.deleted.push((pod, Instant::now())));
    }

    /// Forgets what `owned` (the owner's pods in the cache) now shows, and returns the
    /// tags of the creates and the names of the deletes still outstanding.
    pub fn outstanding(&self, owner: &str, owned: &[Arc<Pod>]) -> (Vec<T>, Vec<String>) {
        let now = Instant::now();
        let in_cache = |n: &str| owned.iter().any(|p| p.name_any() == n);
        let gone = |n: &str| {
            owned
                .iter()
                .find(|p| p.name_any() == n)
                .is_none_or(|p| !is_active(p))
        };
        self.with(owner, |o| {
            o.created
                .retain(|(n, _, at)| !in_cache(n) && now.duration_since(*at) < EXPECTATION_TTL);
            o.deleted
                .retain(|(n, at)| !gone(n) && now.duration_since(*at) < EXPECTATION_TTL);
            (
                o.created.iter().map(|(_, tag, _)| tag.clone()).collect(),
                o.deleted.iter().map(|(n, _)| n.clone()).collect(),
            )
        })
    }

    /// The names of the owner's outstanding deletes, as last pruned.
    pub fn deleting(&self, owner: &str) -> Vec<String> {
        self.with(owner, |o| {
            o.deleted.iter().map(|(n, _)| n.clone()).collect()
        })
    }
}
