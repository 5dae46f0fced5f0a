//! The query service's config file ([`QueryServiceConfig`]: where it listens, where the archive
//! is) and its `[query]` table of limits ([`QueryConfig`]).

use std::net::SocketAddr;

use meridian_archive::store::ArchiveConfig;
use serde::{Deserialize, Serialize};

/// The query service's config file (`MERIDIAN_QUERY__*` variables override it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryServiceConfig {
    /// HTTP listen address (`POST /api/sql`, `/metrics`).
    pub http_listen: SocketAddr,
    /// Where the archive is: `store` and `[archive.s3]`, `[archive.gcs]` or `[archive.azure]` as in
    /// the broker's `[archive]` table (the other keys of that table are ignored here).
    pub archive: ArchiveConfig,
    /// Limits.
    pub query: QueryConfig,
}

impl Default for QueryServiceConfig {
    fn default() -> QueryServiceConfig {
        QueryServiceConfig {
            http_listen: "127.0.0.1:8090".parse().expect("address"),
            archive: ArchiveConfig::default(),
            query: QueryConfig::default(),
        }
    }
}

/// Limits and settings of the query service. Every field has a default that works on a laptop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Memory all running queries may use together, in MiB (default 1024). Sorts, joins and
    /// aggregations spill to `spill_dir` past it; what cannot spill fails with a clear error.
    pub memory_limit_mb: u64,
    /// A query running longer than this is cancelled, in seconds (default 60).
    pub timeout_secs: f64,
    /// Most rows one answer returns (default 1,000,000); more is an error asking for a LIMIT.
    pub max_result_rows: usize,
    /// Where spill files go; empty: the OS temporary folder.
    pub spill_dir: String,
    /// Most bytes of spill files at once, in MiB (default 10240).
    pub max_spill_mb: u64,
    /// Queries running at once; more wait (default 4).
    pub max_concurrent_queries: usize,
    /// Partitions (threads) one query uses; 0: the number of CPUs.
    pub target_partitions: usize,
    /// The manifests are read again at most this often, in seconds (default 2): a segment
    /// committed by the archiver is queryable this long after its commit.
    pub refresh_secs: f64,
}

impl Default for QueryConfig {
    fn default() -> QueryConfig {
        QueryConfig {
            memory_limit_mb: 1024,
            timeout_secs: 60.0,
            max_result_rows: 1_000_000,
            spill_dir: String::new(),
            max_spill_mb: 10 * 1024,
            max_concurrent_queries: 4,
            target_partitions: 0,
            refresh_secs: 2.0,
        }
    }
}

impl QueryConfig {
    /// Checks values that would make the service unusable.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_limit_mb < 16 {
            return Err(format!(
                "query.memory_limit_mb = {} is too small: at least 16",
                self.memory_limit_mb
            ));
        }
        if self.timeout_secs.is_nan() || self.timeout_secs <= 0.0 {
            return Err(format!("query.timeout_secs = {} must be above 0", self.timeout_secs));
        }
        if self.max_result_rows == 0 || self.max_concurrent_queries == 0 {
            return Err("query.max_result_rows and query.max_concurrent_queries must be at least 1".into());
        }
        if self.refresh_secs < 0.0 {
            return Err(format!(
                "query.refresh_secs = {} must not be negative",
                self.refresh_secs
            ));
        }
        Ok(())
    }
}
