//! Prometheus metrics of the tracer, registered under `meridian_tracer_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of skipped events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    /// `replayed`, `duplicate` or `expired`.
    pub reason: &'static str,
}

/// Labels of lookups.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// `msg_id`, `offset_id` or `key`.
    pub by: &'static str,
}

/// Every metric the tracer exports.
#[derive(Debug)]
pub struct TracerMetrics {
    /// Events indexed.
    pub events_indexed: Counter,
    /// Events not indexed, by reason.
    pub events_skipped: Family<SkipLabels, Counter>,
    /// Trace-topic records that failed the check and were skipped.
    pub malformed_records: Counter,
    /// Trace-topic records read.
    pub records_read: Counter,
    /// Index commits.
    pub commits: Counter,
    /// Duration of an index commit.
    pub commit_seconds: Histogram,
    /// Documents in the index as of the last commit.
    pub indexed_documents: Gauge,
    /// Day partitions held.
    pub partitions: Gauge,
    /// Lookups answered, by kind.
    pub lookups: Family<LookupLabels, Counter>,
    /// Duration of a lookup.
    pub lookup_seconds: Histogram,
    /// Failed pulls or offset commits on brokers.
    pub broker_errors: Counter,
}

impl Default for TracerMetrics {
    fn default() -> TracerMetrics {
        TracerMetrics {
            events_indexed: Counter::default(),
            events_skipped: Family::default(),
            malformed_records: Counter::default(),
            records_read: Counter::default(),
            commits: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            indexed_documents: Gauge::default(),
            partitions: Gauge::default(),
            lookups: Family::default(),
            lookup_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            broker_errors: Counter::default(),
        }
    }
}

impl TracerMetrics {
    /// Creates the metrics and registers them under `meridian_tracer_`.
    pub fn register(registry: &mut Registry) -> TracerMetrics {
        let metrics = TracerMetrics::default();
        let registry = registry.sub_registry_with_prefix("meridian_tracer");
        registry.register("events_indexed", "Trace events indexed", metrics.events_indexed.clone());
        registry.register(
            "events_skipped",
            "Trace events not indexed: replayed (already committed), duplicate (same event id) or expired (older than the retention)",
            metrics.events_skipped.clone(),
        );
        registry.register(
            "malformed_records",
            "Trace-topic records that failed the check and were skipped",
            metrics.malformed_records.clone(),
        );
        registry.register("records_read", "Trace-topic records read", metrics.records_read.clone());
        registry.register("commits", "Index commits", metrics.commits.clone());
        registry.register(
            "commit_seconds",
            "Duration of index commits",
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "indexed_documents",
            "Documents in the index as of the last commit",
            metrics.indexed_documents.clone(),
        );
        registry.register("partitions", "Day partitions held", metrics.partitions.clone());
        registry.register("lookups", "Lookups answered, by kind", metrics.lookups.clone());
        registry.register("lookup_seconds", "Duration of lookups", metrics.lookup_seconds.clone());
        registry.register(
            "broker_errors",
            "Failed pulls or offset commits on brokers",
            metrics.broker_errors.clone(),
        );
        metrics
    }
}
