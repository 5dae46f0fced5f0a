//! Prometheus metrics of the query service, registered under `meridian_query_`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::QueryError;

/// Labels of finished queries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, or the error kind (`read_only`, `sql`, `timeout`, `memory_limit`, ...).
    pub outcome: &'static str,
}

/// Every metric the query service exports.
#[derive(Debug)]
pub struct QueryMetrics {
    /// Queries finished, by outcome.
    pub queries: Family<OutcomeLabels, Counter>,
    /// Duration of queries (answered or not).
    pub query_seconds: Histogram,
    /// Rows returned.
    pub rows_returned: Counter,
}

impl Default for QueryMetrics {
    fn default() -> QueryMetrics {
        QueryMetrics {
            queries: Family::default(),
            query_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            rows_returned: Counter::default(),
        }
    }
}

impl QueryMetrics {
    /// Creates the metrics and registers them under `meridian_query_`.
    pub fn register(registry: &mut Registry) -> QueryMetrics {
        let metrics = QueryMetrics::default();
        let registry = registry.sub_registry_with_prefix("meridian_query");
        registry.register("queries", "Queries finished, by outcome", metrics.queries.clone());
        registry.register("query_seconds", "Duration of queries", metrics.query_seconds.clone());
        registry.register(
            "rows_returned",
            "Rows returned by queries",
            metrics.rows_returned.clone(),
        );
        metrics
    }

    /// Records a finished query.
    pub fn observe<T: RowCount>(&self, outcome: &Result<T, QueryError>, elapsed: Duration) {
        let label = match outcome {
            Ok(answer) => {
                self.rows_returned.inc_by(answer.row_count() as u64);
                "ok"
            }
            Err(error) => error.kind(),
        };
        self.queries.get_or_create(&OutcomeLabels { outcome: label }).inc();
        self.query_seconds.observe(elapsed.as_secs_f64());
    }
}

/// Something with a number of rows.
pub trait RowCount {
    /// The rows.
    fn row_count(&self) -> usize;
}
