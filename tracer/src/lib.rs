//! The tracer: consumes the system trace topic as a consumer group and indexes trace events in
//! tantivy, so a message's whole timeline can be looked up by msgId, key or offset id.
//!
//! - [`index::TraceIndex`]: day-partitioned tantivy indexes, commits that carry the trace-topic
//!   position (so a crash and replay neither loses nor doubles an event), retention by whole days.
//!   Start reading here.
//! - [`ingest`]: reads every queue of the trace topic on every broker group, checks each record
//!   ([`meridian_proto::trace::decode_batch`]; malformed ones are counted and skipped), indexes,
//!   commits every `commit_interval_ms`, then commits the group's offsets on the brokers.
//! - [`timeline`]: a message's events in order with the latency of each hop.
//! - [`http`]: `GET /api/traces/{msgId or offset id}` and `GET /api/traces?key=K`.
//!
//! Run it with [`Tracer::open`] then [`Tracer::run`]; serve [`Tracer::router`] on any listener.

pub mod config;
pub mod error;
pub mod http;
pub mod index;
pub mod ingest;
pub mod metrics;
pub mod timeline;
pub mod worker;

#[cfg(test)]
mod bench_tests;

use std::future::Future;
use std::sync::Arc;

use meridian_client::{ClientConfig, ConnectionPool, NameserverRoute};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::TracerConfig;
pub use error::{Result, TracerError};
pub use metrics::TracerMetrics;

/// A tracer with its index open, ready to [`Tracer::run`].
pub struct Tracer {
    config: TracerConfig,
    index: Arc<index::TraceIndex>,
    metrics: Arc<TracerMetrics>,
    archive: Option<Arc<dyn timeline::ArchiveSteps>>,
    acl: Option<Arc<dyn meridian_proto::acl::AclSource>>,
}

impl Tracer {
    /// Validates the config and opens the index under `data_dir/index`.
    pub fn open(config: TracerConfig, metrics: Arc<TracerMetrics>) -> Result<Tracer> {
        config.validate()?;
        let index = Arc::new(index::TraceIndex::open(
            &config.data_dir.join("index"),
            config.writer_heap_bytes,
        )?);
        metrics.partitions.set(index.days().len() as i64);
        metrics.indexed_documents.set(index.num_docs() as i64);
        Ok(Tracer {
            config,
            index,
            metrics,
            archive: None,
            acl: None,
        })
    }

    /// Shows archive steps in timelines, found by `archive` (from the archive's manifests).
    pub fn with_archive(mut self, archive: Arc<dyn timeline::ArchiveSteps>) -> Tracer {
        self.archive = Some(archive);
        self
    }

    /// Answers authenticated HTTP callers only about topics `acl` lets them TRACE.
    pub fn with_acl(mut self, acl: Arc<dyn meridian_proto::acl::AclSource>) -> Tracer {
        self.acl = Some(acl);
        self
    }

    /// The lookup API over this tracer's index.
    pub fn router(&self) -> axum::Router {
        http::router_with_acl(
            self.index.clone(),
            self.metrics.clone(),
            self.archive.clone(),
            self.acl.clone(),
        )
    }

    /// The index, for lookups in the same process and for tests.
    pub fn index(&self) -> Arc<index::TraceIndex> {
        self.index.clone()
    }

    /// Reads the trace topic until `shutdown` completes, then commits what it indexed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let pool = ConnectionPool::new(ClientConfig {
            credentials: self.config.credentials.clone(),
            tls: self.config.tls.clone(),
            ..ClientConfig::default()
        });
        let route = Arc::new(NameserverRoute::new(self.config.nameservers.clone(), pool.clone()));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tracing::info!(group = self.config.group, dir = %self.config.data_dir.display(), "tracer reading the trace topic");
        tasks.spawn(ingest::run(
            self.index.clone(),
            route,
            pool.clone(),
            self.config.clone(),
            self.metrics.clone(),
            stop.clone(),
        ));
        tasks.close();
        shutdown.await;
        stop.cancel();
        tasks.wait().await;
        pool.shutdown().await;
        tracing::info!("tracer stopped");
        Ok(())
    }
}
