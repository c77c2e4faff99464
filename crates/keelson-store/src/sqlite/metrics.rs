//! Metrics only the SQLite backend has: commit groups, compaction, watch catch-ups.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub(super) struct SqliteMetrics {
    pub commit_seconds: Histogram,
    pub group_size: Histogram,
    pub compaction_seconds: Histogram,
    pub compacted_rows: Counter,
    pub compacted: Gauge,
    pub watch_catchups: Counter,
}

impl Default for SqliteMetrics {
    fn default() -> Self {
        SqliteMetrics {
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            compaction_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            compacted_rows: Counter::default(),
            compacted: Gauge::default(),
            watch_catchups: Counter::default(),
        }
    }
}

impl SqliteMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("keelson_sqlite");
        registry.register(
            "commit_duration_seconds",
            "Time to apply and fsync one commit group",
            self.commit_seconds.clone(),
        );
        registry.register(
            "commit_group_size",
            "Writes committed together in one transaction",
            self.group_size.clone(),
        );
        registry.register(
            "compaction_batch_duration_seconds",
            "Time of one compaction batch (writers wait at most this long)",
            self.compaction_seconds.clone(),
        );
        registry.register(
            "compacted_rows",
            "History rows removed by compaction",
            self.compacted_rows.clone(),
        );
        registry.register(
            "compact_revision",
            "Revision below which history is gone",
            self.compacted.clone(),
        );
        registry.register(
            "watch_catchups",
            "Times a watch fell behind the live event buffer and caught up from the log",
            self.watch_catchups.clone(),
        );
    }
}
