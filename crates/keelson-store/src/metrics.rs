//! Prometheus metrics for any store: an [`Instrumented`] layer that counts and times every
//! operation, whatever the backend.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::{KeyValue, ListOptions, ListPage, Result, Store, StoreError, WatchStream};

type OpLabels = [(&'static str, &'static str); 3];
type LatencyLabels = [(&'static str, &'static str); 2];

/// The store's metrics. Cheap to clone; clones share the same series.
#[derive(Clone)]
pub struct StoreMetrics {
    operations: Family<OpLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    revision: Gauge,
    watches: Gauge,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            operations: Family::default(),
            latency: Family::new_with_constructor(|| {
                // 50 µs .. ~6.5 s
                Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
            }),
            revision: Gauge::default(),
            watches: Gauge::default(),
        }
    }
}

impl StoreMetrics {
    /// Adds the series to `registry` (names start with `keelson_store_`).
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("keelson_store");
        registry.register(
            "operations",
            "Store operations by backend, operation and outcome",
            self.operations.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Store operation latency by backend and operation",
            self.latency.clone(),
        );
        registry.register(
            "revision",
            "Latest revision written through this process",
            self.revision.clone(),
        );
        registry.register("watches", "Open watch streams", self.watches.clone());
    }

    fn observe<T>(
        &self,
        backend: &'static str,
        op: &'static str,
        started: Instant,
        result: &Result<T>,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(StoreError::NotFound { .. }) => "not_found",
            Err(StoreError::AlreadyExists { .. }) => "already_exists",
            Err(StoreError::Conflict { .. }) => "conflict",
            Err(StoreError::Compacted { .. }) => "compacted",
            Err(StoreError::FutureRevision { .. }) => "future_revision",
            Err(StoreError::InvalidArgument(_)) => "invalid",
            Err(_) => "error",
        };
        self.operations
            .get_or_create(&[("backend", backend), ("op", op), ("outcome", outcome)])
            .inc();
        self.latency
            .get_or_create(&[("backend", backend), ("op", op)])
            .observe(started.elapsed().as_secs_f64());
    }

    fn written(&self, revision: i64) {
        self.revision.set(revision);
    }
}

/// A store layer that records [`StoreMetrics`] for every call to the inner store.
pub struct Instrumented {
    inner: Arc<dyn Store>,
    metrics: StoreMetrics,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Store>, metrics: StoreMetrics) -> Self {
        Instrumented { inner, metrics }
    }
}

/// Times one call and records its outcome.
macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self
            .metrics
            .observe($self.inner.backend(), $op, started, &result);
        result
    }};
}

#[async_trait]
impl Store for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn current_revision(&self) -> Result<i64> {
        timed!(self, "current_revision", self.inner.current_revision())
    }

    async fn compacted_revision(&self) -> Result<i64> {
        timed!(self, "compacted_revision", self.inner.compacted_revision())
    }

    async fn get(&self, key: &str, revision: Option<i64>) -> Result<Option<KeyValue>> {
        timed!(self, "get", self.inner.get(key, revision))
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage> {
        timed!(self, "list", self.inner.list(prefix, options))
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        timed!(self, "count", self.inner.count(prefix))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<i64> {
        let result = timed!(self, "create", self.inner.create(key, value));
        if let Ok(revision) = result {
            self.metrics.written(revision);
        }
        result
    }

    async fn update(&self, key: &str, value: Bytes, expected: i64) -> Result<i64> {
        let result = timed!(self, "update", self.inner.update(key, value, expected));
        if let Ok(revision) = result {
            self.metrics.written(revision);
        }
        result
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<i64> {
        let result = timed!(self, "delete", self.inner.delete(key, expected));
        if let Ok(revision) = result {
            self.metrics.written(revision);
        }
        result
    }

    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream> {
        let stream = timed!(self, "watch", self.inner.watch(prefix, start_revision))?;
        let open = WatchGauge::new(self.metrics.watches.clone());
        // The gauge guard lives as long as the stream does.
        Ok(Box::pin(futures::StreamExt::map(stream, move |item| {
            let _open = &open;
            item
        })))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        timed!(self, "compact", self.inner.compact(revision))
    }
}

/// Counts an open watch for as long as it is alive.
struct WatchGauge(Gauge);

impl WatchGauge {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        WatchGauge(gauge)
    }
}

impl Drop for WatchGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn outcomes_are_labelled() {
        let metrics = StoreMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.observe::<()>("sqlite", "create", Instant::now(), &Ok(()));
        metrics.observe::<()>(
            "sqlite",
            "update",
            Instant::now(),
            &Err(StoreError::Conflict {
                key: "k".into(),
                expected: 1,
                current: 2,
            }),
        );
        let mut text = String::new();
        encode(&mut text, &registry).expect("encoding to a String cannot fail");
        assert!(text.contains(
            r#"keelson_store_operations_total{backend="sqlite",op="create",outcome="ok"} 1"#
        ));
        assert!(text.contains(
            r#"keelson_store_operations_total{backend="sqlite",op="update",outcome="conflict"} 1"#
        ));
        assert!(text.contains("keelson_store_operation_duration_seconds_bucket"));
    }
}
