//! Tracer configuration: one TOML file (`meridian tracer --config FILE`), every field with a
//! default that works on a laptop.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TracerError};

/// Everything a tracer needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracerConfig {
    /// Nameservers to find the trace topic's brokers through (`host:port` each).
    pub nameservers: Vec<String>,
    /// Consumer group the tracer reads the trace topic as; it must start with `MERIDIAN_TRACER`
    /// (such groups need no approval). Give each tracer with its own index its own group.
    pub group: String,
    /// Where the day partitions live.
    pub data_dir: PathBuf,
    /// HTTP listener for the lookup API and `/metrics` when the tracer runs as its own process.
    pub http_listen: Option<SocketAddr>,
    /// Days of traces kept; older days are deleted whole (default 7).
    pub retention_days: u32,
    /// How often indexed events are committed (made searchable and durable), in ms (default 500).
    /// Under load the interval stretches so that commits take about a tenth of the indexing
    /// thread's time, up to 4 × this.
    pub commit_interval_ms: u64,
    /// Memory of the index writer of each day being written, in bytes (default 64 MiB).
    pub writer_heap_bytes: usize,
    /// Trace-topic messages one pull fetches (default 256; each holds up to `trace.batch_events`
    /// of its broker, 64 by default).
    pub pull_batch: u32,
    /// How much lower than the rest of the process the indexing thread (and the tantivy threads
    /// it starts) runs, as a nice increment from 0 (unchanged) to 19 (default 10): a tracer
    /// sharing cores with a broker, as in `meridian dev`, yields to it under load and catches up
    /// from the trace topic after.
    pub index_nice: i32,
    /// What the tracer logs in with where `[auth]` is on (`meridian dev --auth` gives it the node
    /// credential); never read from or written to the file, and `Debug` hides the secret.
    #[serde(skip)]
    pub credentials: Option<meridian_proto::auth::Credentials>,
    /// TLS to the nameservers and brokers (`meridian dev --tls` sets it); `None`: plaintext.
    #[serde(skip)]
    pub tls: Option<std::sync::Arc<meridian_proto::tls::TlsClient>>,
}

impl Default for TracerConfig {
    fn default() -> TracerConfig {
        TracerConfig {
            nameservers: vec!["127.0.0.1:7800".into()],
            group: meridian_proto::trace::DEFAULT_TRACER_GROUP.into(),
            data_dir: PathBuf::from("meridian-data/tracer"),
            http_listen: Some("127.0.0.1:8083".parse().expect("valid address")),
            retention_days: 7,
            commit_interval_ms: 500,
            writer_heap_bytes: 64 << 20,
            pull_batch: 256,
            index_nice: 10,
            credentials: None,
            tls: None,
        }
    }
}

impl TracerConfig {
    /// Checks the config; the message names the field and the fix.
    pub fn validate(&self) -> Result<()> {
        if !meridian_proto::trace::is_tracer_group(&self.group)
            || meridian_proto::validate::validate_group(&self.group).is_err()
        {
            return Err(TracerError::Config(format!(
                "group {:?} must start with {} and be 1-255 chars of [A-Za-z0-9_-]",
                self.group,
                meridian_proto::trace::TRACER_GROUP_PREFIX
            )));
        }
        if self.nameservers.is_empty() {
            return Err(TracerError::Config(
                "nameservers is empty: list the nameservers (host:port) the brokers register with".into(),
            ));
        }
        if self.retention_days == 0 || self.commit_interval_ms == 0 || self.pull_batch == 0 {
            return Err(TracerError::Config(
                "retention_days, commit_interval_ms and pull_batch must be at least 1".into(),
            ));
        }
        if !(0..=19).contains(&self.index_nice) {
            return Err(TracerError::Config(format!(
                "index_nice ({}) must be from 0 (the process's priority) to 19 (the lowest)",
                self.index_nice
            )));
        }
        if self.writer_heap_bytes < 15_000_000 {
            return Err(TracerError::Config(format!(
                "writer_heap_bytes ({}) must be at least 15000000 (tantivy's minimum per writer)",
                self.writer_heap_bytes
            )));
        }
        Ok(())
    }
}
