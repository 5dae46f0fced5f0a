//! Broker configuration: one TOML file, every field with a default that works on a laptop.

use std::net::SocketAddr;
use std::path::PathBuf;

use meridian_proto::validate::{self, Limits};
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};
use crate::store::StoreConfig;

/// Size limits (the `[limits]` table). The same defaults as the client's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message body in bytes (default 4 MiB).
    pub max_body_size: usize,
    /// Largest encoded properties of one message in bytes (default 32 KiB).
    pub max_properties_size: usize,
    /// Largest frame in bytes (default 16 MiB).
    pub max_frame_size: usize,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        let limits = Limits::default();
        LimitsConfig {
            max_body_size: limits.max_body_size,
            max_properties_size: limits.max_properties_size,
            max_frame_size: limits.max_frame_size,
        }
    }
}

impl LimitsConfig {
    /// As the shared limits type.
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_size: self.max_body_size,
            max_properties_size: self.max_properties_size,
            max_frame_size: self.max_frame_size,
        }
    }
}

/// Everything a broker needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Name of the broker (its group's name once replication lands).
    pub broker_name: String,
    /// Address to listen on for clients (default 127.0.0.1:7911).
    pub listen: SocketAddr,
    /// Address clients are told to connect to (default: the bound address).
    pub advertise_addr: Option<String>,
    /// Where the broker keeps its data.
    pub data_dir: PathBuf,
    /// Data center of this broker (empty: unknown).
    pub idc: String,
    /// HTTP listener for `/metrics` and the admin API when the broker runs as its own process
    /// (`meridian broker`); `meridian dev` serves everything on one listener instead.
    pub http_listen: Option<SocketAddr>,
    /// Storage settings.
    pub store: StoreConfig,
    /// Size limits.
    pub limits: LimitsConfig,
    /// A consumer not heard from for this long leaves its group, in ms.
    pub consumer_expiry_ms: u64,
    /// Requests one connection may have in flight; more wait, so one client cannot take all memory.
    pub max_inflight_per_connection: usize,
    /// Longest long-poll a pull may ask for, in ms.
    pub max_long_poll_ms: u64,
    /// Bytes of answers one connection may have waiting to be written; a client that stops
    /// reading stalls only itself and holds at most this much broker memory.
    pub max_pending_response_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            broker_name: "broker-a".into(),
            listen: "127.0.0.1:7911".parse().expect("valid address"),
            advertise_addr: None,
            data_dir: PathBuf::from("meridian-data/broker"),
            idc: String::new(),
            http_listen: Some("127.0.0.1:8081".parse().expect("valid address")),
            store: StoreConfig::default(),
            limits: LimitsConfig::default(),
            consumer_expiry_ms: 10_000,
            max_inflight_per_connection: 1024,
            max_long_poll_ms: 30_000,
            max_pending_response_bytes: 64 << 20,
        }
    }
}

impl BrokerConfig {
    /// Checks the config as a whole; the message names the field and the fix.
    pub fn validate(&self) -> Result<()> {
        validate::validate_group(&self.broker_name).map_err(|_| {
            BrokerError::Config(format!(
                "broker_name {:?} must be 1-255 chars of [A-Za-z0-9_-]",
                self.broker_name
            ))
        })?;
        let limits = &self.limits;
        if limits.max_body_size == 0 || limits.max_frame_size < limits.max_body_size + limits.max_properties_size + 4096
        {
            return Err(BrokerError::Config(format!(
                "limits.max_frame_size ({}) must exceed limits.max_body_size ({}) + limits.max_properties_size ({}) + 4096",
                limits.max_frame_size, limits.max_body_size, limits.max_properties_size
            )));
        }
        let largest_record = meridian_proto::record::encoded_len(
            validate::MAX_TOPIC_LEN,
            limits.max_properties_size,
            limits.max_body_size,
        );
        self.store.validate(largest_record)?;
        if self.max_inflight_per_connection == 0 {
            return Err(BrokerError::Config(
                "max_inflight_per_connection must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
