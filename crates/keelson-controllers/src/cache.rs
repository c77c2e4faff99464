//! Watched caches of what a controller reads but does not reconcile: a reflector store kept
//! current by its own watch, optionally waking the controller on every change.

use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

pub fn watched<K>(api: Api<K>, wake: Option<Arc<Notify>>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    tokio::spawn(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(move |_| {
                if let Some(wake) = &wake {
                    wake.notify_one();
                }
                futures::future::ready(())
            }),
    );
    store
}
