//! Broker configuration: one TOML file, every field with a default that works on a laptop.
//!
//! A leaf: every table of the file is defined here ([`StoreConfig`], [`ReplicationConfig`],
//! [`TraceConfig`], [`TransactionConfig`], [`RemotingConfig`], [`LimitsConfig`]) with the small
//! types they name ([`FlushMode`], [`AckPolicy`]), and the subsystems read from it (their modules
//! re-export their table), so config imports no other part of the broker but [`crate::error`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meridian_proto::validate::{self, Limits};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{BrokerError, Result};

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

/// When a send counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FlushMode {
    /// Acknowledge once the record is in the page cache; sync every `flush_interval_ms`.
    /// Survives a crash of the broker process, not of the machine.
    #[default]
    Async,
    /// Acknowledge only after the record is synced to disk. Concurrent sends share one sync.
    Sync,
}

/// Storage settings (the `[store]` table of the broker config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Bytes per commitlog segment (default 1 GiB).
    pub segment_size: u64,
    /// Entries per consume queue file (default 300,000: 6 MB).
    pub cq_entries_per_file: u64,
    /// When a send counts as stored.
    pub flush_mode: FlushMode,
    /// How often async mode syncs, in ms.
    pub flush_interval_ms: u64,
    /// How long a sync-mode send waits for its sync before failing with `FlushTimeout`, in ms.
    pub sync_flush_timeout_ms: u64,
    /// How often consume queues, offsets and the checkpoint are made durable, in ms.
    pub checkpoint_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            segment_size: 1 << 30,
            cq_entries_per_file: 300_000,
            flush_mode: FlushMode::Async,
            flush_interval_ms: 500,
            sync_flush_timeout_ms: 5_000,
            checkpoint_interval_ms: 1_000,
        }
    }
}

impl StoreConfig {
    /// Checks values that would make the store unusable.
    pub fn validate(&self, max_record_size: usize) -> Result<()> {
        if self.segment_size < max_record_size as u64 + 64 {
            return Err(BrokerError::Config(format!(
                "store.segment_size = {} cannot hold the largest allowed message record ({max_record_size} bytes); raise it or lower limits.max_body_size",
                self.segment_size
            )));
        }
        if self.cq_entries_per_file == 0 || self.flush_interval_ms == 0 || self.checkpoint_interval_ms == 0 {
            return Err(BrokerError::Config(
                "store.cq_entries_per_file, flush_interval_ms and checkpoint_interval_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

pub use meridian_proto::ack::AckPolicy;

/// What a master does when the nameservers declare a data center holding some of its group's
/// replicas lost (`replication.on_idc_lost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnIdcLost {
    /// Go on in a declared degraded mode: acknowledge with a majority of the replicas outside
    /// the lost data centers (the master alone when it is the only one), without `idc_safe`'s
    /// remote replica, until the lost data center is cleared and its replicas caught up.
    #[default]
    Degrade,
    /// Keep the full ack policy: sends fail until the lost replicas return.
    Stop,
}

impl OnIdcLost {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnIdcLost::Degrade => "degrade",
            OnIdcLost::Stop => "stop",
        }
    }
}

/// Authentication settings (the `[auth]` table). Off by default (and in `meridian dev` unless
/// `--auth`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Every connection to the framed listener must log in first (a user made with
    /// `meridian user create`, or a node with the node secret); replica fetches and other
    /// node-only requests are refused from users.
    pub enabled: bool,
    /// The cluster's node secret, shared by every broker and nameserver (at least 32
    /// characters; `meridian user node-secret` makes one). Required with `enabled`.
    pub node_secret_file: Option<PathBuf>,
    /// With `enabled`: every request is also checked against the cluster's ACL (`meridian acl`,
    /// docs/security.md "Authorization"): PUB to send, SUB to consume, ADMIN for offset resets and
    /// dead-letter resends. `false` lets every logged-in user do everything. Default `true`.
    #[serde(default = "default_true")]
    pub authorization: bool,
    /// The node credential read from `node_secret_file` by [`AuthConfig::load`]; never written
    /// back, and `Debug` hides the secret.
    #[serde(skip)]
    pub node_credentials: Option<meridian_proto::auth::Credentials>,
}

fn default_true() -> bool {
    true
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            enabled: false,
            node_secret_file: None,
            authorization: true,
            node_credentials: None,
        }
    }
}

impl AuthConfig {
    /// Whether requests are checked against the ACL: `[auth] enabled` and `authorization`.
    pub fn authorizes(&self) -> bool {
        self.enabled && self.authorization
    }

    /// Reads the node secret file, when set. With `enabled`, the file is required.
    pub fn load(&mut self) -> Result<()> {
        match &self.node_secret_file {
            Some(path) => {
                let secret = meridian_proto::auth::read_node_secret(path).map_err(BrokerError::Config)?;
                self.node_credentials = Some(meridian_proto::auth::Credentials::node(secret));
            }
            None if self.enabled => {
                return Err(BrokerError::Config(
                    "[auth] enabled needs node_secret_file: the cluster's node secret, the same file on every broker and nameserver (`meridian user node-secret > node.secret`)".into(),
                ));
            }
            None => {}
        }
        Ok(())
    }
}

/// Replication settings (the `[replication]` table of the broker config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// When a send counts: `async` (the master holds it), `quorum` (a majority of the group's
    /// replicas, counting the master), `all`, or `idc_safe` (a quorum including a replica outside
    /// the master's IDC). Combined with `store.flush_mode`: under `sync`, a replica counts only
    /// once it has synced the message to disk.
    pub ack_policy: AckPolicy,
    /// Replicas in the group, counting the master (1 for a lone broker, 3 for master + 2 slaves).
    pub replicas: u32,
    /// How long a send waits for its ack policy before failing with `ReplicationTimeout`, in ms.
    /// Below the clients' request timeout (3 s by default), so they get this answer rather than
    /// time out themselves.
    pub ack_timeout_ms: u64,
    /// A slave is in sync while it is at most this many bytes behind the master...
    pub in_sync_lag_bytes: u64,
    /// ...and fetched within this many ms. Only in-sync slaves may be promoted.
    pub in_sync_timeout_ms: u64,
    /// Most bytes one fetch carries.
    pub fetch_max_bytes: u32,
    /// What a master does when the nameservers declare lost a data center holding some of the
    /// group's replicas: `degrade` (default: acknowledge with a majority of the surviving
    /// replicas, without `idc_safe`'s remote one, reported as degraded, until the data center
    /// is cleared and its replicas caught up) or `stop` (keep the full policy: sends fail).
    pub on_idc_lost: OnIdcLost,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            ack_policy: AckPolicy::Quorum,
            replicas: 1,
            ack_timeout_ms: 2_000,
            in_sync_lag_bytes: 4 << 20,
            in_sync_timeout_ms: 3_000,
            fetch_max_bytes: 4 << 20,
            on_idc_lost: OnIdcLost::Degrade,
        }
    }
}

impl ReplicationConfig {
    /// Checks the settings against the rest of the config; the message names the field and the fix.
    pub fn validate(&self, idc: &str, max_frame_size: usize) -> Result<()> {
        if self.replicas == 0 || self.replicas > 7 {
            return Err(BrokerError::Config(format!(
                "replication.replicas = {} must be 1-7 (replicas in the group, counting the master)",
                self.replicas
            )));
        }
        if self.ack_policy == AckPolicy::IdcSafe && idc.is_empty() {
            return Err(BrokerError::Config(
                "replication.ack_policy = \"idc_safe\" needs this broker's `idc` set, to tell which replicas are in another data center".into(),
            ));
        }
        if self.ack_policy == AckPolicy::IdcSafe && self.replicas < 2 {
            return Err(BrokerError::Config(
                "replication.ack_policy = \"idc_safe\" needs replication.replicas of at least 2 (a replica in another data center)".into(),
            ));
        }
        if self.ack_timeout_ms == 0 || self.in_sync_timeout_ms == 0 {
            return Err(BrokerError::Config(
                "replication.ack_timeout_ms and in_sync_timeout_ms must be at least 1".into(),
            ));
        }
        if self.fetch_max_bytes < 64 << 10 || self.fetch_max_bytes as usize + 4096 > max_frame_size {
            return Err(BrokerError::Config(format!(
                "replication.fetch_max_bytes = {} must be at least 65536 and leave 4096 bytes of limits.max_frame_size ({max_frame_size})",
                self.fetch_max_bytes
            )));
        }
        Ok(())
    }
}

/// The `[trace]` table of the broker config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Emit trace events (default true: every message is traced unless its topic opts out).
    pub enabled: bool,
    /// Topics whose messages are not traced (per-topic opt-out).
    pub exclude_topics: Vec<String>,
    /// Most events waiting to be written; more are dropped and counted (default 262144).
    pub buffer_events: usize,
    /// How often waiting events are written to the trace topic, in ms (default 100).
    pub flush_interval_ms: u64,
    /// Most events in one trace-topic message (default 64). Small records are cheaper than their
    /// size says: appending 512-event records (about 140 KB each) cost producers 10% of their
    /// throughput, 64-event ones about 1% (docs/benchmarks.md).
    pub batch_events: usize,
}

impl Default for TraceConfig {
    fn default() -> TraceConfig {
        TraceConfig {
            enabled: true,
            exclude_topics: Vec::new(),
            buffer_events: 256 * 1024,
            flush_interval_ms: 100,
            batch_events: 64,
        }
    }
}

impl TraceConfig {
    /// Checks the table; the message names the field and the fix.
    pub fn validate(&self) -> Result<()> {
        if self.buffer_events == 0 || self.batch_events == 0 || self.flush_interval_ms == 0 {
            return Err(BrokerError::Config(
                "trace.buffer_events, trace.batch_events and trace.flush_interval_ms must be at least 1 (set trace.enabled = false to turn tracing off)".into(),
            ));
        }
        for topic in &self.exclude_topics {
            meridian_proto::validate::validate_topic(topic)
                .map_err(|error| BrokerError::Config(format!("trace.exclude_topics: {error}")))?;
        }
        Ok(())
    }
}

/// The `[transaction]` table of the broker config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionConfig {
    /// A half message without an outcome this long after it was stored (or last checked) is
    /// checked back with its producer group, in ms (default 60000; at least 100).
    pub check_interval_ms: u64,
    /// Check-backs before an undecided transaction is rolled back (default 15; at least 1).
    pub check_max: u32,
}

impl Default for TransactionConfig {
    fn default() -> TransactionConfig {
        TransactionConfig {
            check_interval_ms: 60_000,
            check_max: 15,
        }
    }
}

impl TransactionConfig {
    /// Checks the table; the message names the field and the fix.
    pub fn validate(&self) -> Result<()> {
        if self.check_interval_ms < 100 {
            return Err(BrokerError::Config(format!(
                "transaction.check_interval_ms ({}) must be at least 100: producers need time to answer (default 60000)",
                self.check_interval_ms
            )));
        }
        if self.check_max == 0 {
            return Err(BrokerError::Config(
                "transaction.check_max must be at least 1: an undecided transaction is asked about at least once before it is rolled back (default 15)".into(),
            ));
        }
        Ok(())
    }

    /// How often the check-back walk runs: a quarter of the interval, between 100 ms and 1 s.
    pub(crate) fn tick(&self) -> Duration {
        Duration::from_millis((self.check_interval_ms / 4).clamp(100, 1000))
    }
}

/// The `[remoting]` table of the broker config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemotingConfig {
    /// Serve the RocketMQ remoting protocol.
    pub enabled: bool,
    /// Address to listen on (default 127.0.0.1:10911).
    pub listen: SocketAddr,
    /// Address RocketMQ clients are told to connect to (default: the bound address).
    pub advertise_addr: Option<String>,
    /// A second address serving the same protocol: the "VIP channel" (10909 by default in RocketMQ,
    /// the main port − 2) that Java clients older than 4.5.1 send to with `vipChannelEnabled`.
    /// Off unless set; route answers always name `listen`/`advertise_addr`, never this one.
    pub vip_listen: Option<SocketAddr>,
}

impl Default for RemotingConfig {
    fn default() -> RemotingConfig {
        RemotingConfig {
            enabled: false,
            listen: "127.0.0.1:10911".parse().expect("valid address"),
            advertise_addr: None,
            vip_listen: None,
        }
    }
}

/// Smallest `heartbeat_interval_ms`: more often only loads the nameservers.
pub const MIN_HEARTBEAT_INTERVAL_MS: u64 = 100;

/// Everything a broker needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Name of the broker group this broker belongs to; queues are named by it, so every member
    /// of a group (master and slaves) shares it.
    pub broker_name: String,
    /// This broker's name within its group (default: `broker_name`); unique within the group.
    pub member_name: Option<String>,
    /// Address to listen on for clients (default 127.0.0.1:7911).
    pub listen: SocketAddr,
    /// Address clients are told to connect to (default: the bound address).
    pub advertise_addr: Option<String>,
    /// Where the broker keeps its data.
    pub data_dir: PathBuf,
    /// Data center of this broker. Empty: decided at start from `MERIDIAN_IDC`, the IDC file, or
    /// the nameservers' IDC map by the advertised address ([`meridian_proto::idc`]);
    /// `MERIDIAN_IDC` wins over this setting.
    pub idc: String,
    /// The IDC file written at provisioning (default `/etc/meridian/idc`).
    pub idc_file: Option<PathBuf>,
    /// HTTP listener for `/metrics` and the admin API when the broker runs as its own process
    /// (`meridian broker`); `meridian dev` serves everything on one listener instead.
    pub http_listen: Option<SocketAddr>,
    /// Storage settings.
    pub store: StoreConfig,
    /// Size limits.
    pub limits: LimitsConfig,
    /// Broker group replication: ack policy, group size, in-sync rules.
    pub replication: ReplicationConfig,
    /// A consumer not heard from for this long leaves its group, in ms.
    pub consumer_expiry_ms: u64,
    /// An orderly consumer's queue lock lapses after this long without renewal, in ms (it is
    /// released at once when the consumer leaves or its connection closes).
    pub queue_lock_expiry_ms: u64,
    /// Requests one connection may have in flight; more wait, so one client cannot take all memory.
    pub max_inflight_per_connection: usize,
    /// Longest long-poll a pull may ask for, in ms.
    pub max_long_poll_ms: u64,
    /// Bytes of answers one connection may have waiting to be written; a client that stops
    /// reading stalls only itself and holds at most this much broker memory.
    pub max_pending_response_bytes: usize,
    /// Addresses (`host:port`) of the nameservers this broker heartbeats, every one of them. Empty:
    /// a standalone broker, which creates topics when asked and serves any topic and group. Set:
    /// a governed broker, which serves only the topics and consumer groups its nameservers approved.
    /// A TOML list, or one comma-separated string (as an environment override reads).
    #[serde(deserialize_with = "nameserver_list")]
    pub nameservers: Vec<String>,
    /// How often the broker heartbeats each nameserver, in ms (at least 100).
    pub heartbeat_interval_ms: u64,
    /// Trace emission (the `[trace]` table): on by default, per-topic opt-out.
    pub trace: TraceConfig,
    /// Archiving to Parquet on object storage (the `[archive]` table; off by default). With it
    /// on, offsets below the local commitlog are read from the archive, and archived segments
    /// are deleted locally after `local_retention_secs`.
    pub archive: meridian_archive::store::ArchiveConfig,
    /// Transactional messages (the `[transaction]` table): when undecided transactions are checked
    /// back with their producers, and how many times before they are rolled back.
    pub transaction: TransactionConfig,
    /// The RocketMQ 4.x remoting listener (the `[remoting]` table; off by default, on in
    /// `meridian dev`): unmodified RocketMQ clients produce and consume through it.
    pub remoting: RemotingConfig,
    /// Authentication (the `[auth]` table; off by default): see [`crate::auth`].
    pub auth: AuthConfig,
    /// TLS for the broker's listeners and its connections to nameservers and masters (the
    /// `[tls]` table; off by default): see [`meridian_proto::tls`].
    pub tls: meridian_proto::tls::TlsSettings,
    /// Limits on clients' connections (the `[connections]` table): per address, handshake and
    /// idle timeouts.
    pub connections: meridian_proto::serve::ConnectionLimits,
    /// The client side of `tls`, loaded at start from `ca_file`: connections this broker opens.
    #[serde(skip)]
    pub tls_client: Option<std::sync::Arc<meridian_proto::tls::TlsClient>>,
}

/// `nameservers` as a TOML list or as one comma-separated string:
/// `MERIDIAN_BROKER__NAMESERVERS=10.0.0.1:7800,10.0.0.2:7800` arrives as a string.
fn nameserver_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Joined(String),
        Each(Vec<String>),
    }
    Ok(match List::deserialize(deserializer)? {
        List::Joined(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|addr| !addr.is_empty())
            .map(str::to_owned)
            .collect(),
        List::Each(addrs) => addrs,
    })
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            broker_name: "broker-a".into(),
            listen: "127.0.0.1:7911".parse().expect("valid address"),
            advertise_addr: None,
            data_dir: PathBuf::from("meridian-data/broker"),
            idc: String::new(),
            idc_file: None,
            http_listen: Some("127.0.0.1:8081".parse().expect("valid address")),
            store: StoreConfig::default(),
            limits: LimitsConfig::default(),
            replication: ReplicationConfig::default(),
            consumer_expiry_ms: 10_000,
            queue_lock_expiry_ms: 30_000,
            max_inflight_per_connection: 1024,
            max_long_poll_ms: 30_000,
            max_pending_response_bytes: 64 << 20,
            member_name: None,
            nameservers: Vec::new(),
            heartbeat_interval_ms: 500,
            trace: TraceConfig::default(),
            archive: meridian_archive::store::ArchiveConfig::default(),
            transaction: TransactionConfig::default(),
            remoting: RemotingConfig::default(),
            auth: AuthConfig::default(),
            tls: meridian_proto::tls::TlsSettings::default(),
            connections: meridian_proto::serve::ConnectionLimits::default(),
            tls_client: None,
        }
    }
}

impl BrokerConfig {
    /// This broker's name within its group: `member_name`, or `broker_name` when unset.
    pub fn member_name(&self) -> &str {
        self.member_name.as_deref().unwrap_or(&self.broker_name)
    }

    /// Whether nameservers govern this broker (`nameservers` is not empty).
    pub fn is_governed(&self) -> bool {
        !self.nameservers.is_empty()
    }

    /// Checks the config as a whole; the message names the field and the fix.
    pub fn validate(&self) -> Result<()> {
        validate::validate_group(&self.broker_name).map_err(|_| {
            BrokerError::Config(format!(
                "broker_name {:?} must be 1-255 chars of [A-Za-z0-9_-]",
                self.broker_name
            ))
        })?;
        if let Some(member_name) = &self.member_name {
            validate::validate_group(member_name).map_err(|_| {
                BrokerError::Config(format!(
                    "member_name {member_name:?} must be 1-255 chars of [A-Za-z0-9_-]; leave it out to use broker_name"
                ))
            })?;
        }
        for (index, addr) in self.nameservers.iter().enumerate() {
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port != 0));
            if !port_ok || addr.chars().any(char::is_whitespace) {
                return Err(BrokerError::Config(format!(
                    "nameservers entry {addr:?} must be host:port, e.g. \"127.0.0.1:7800\""
                )));
            }
            if self.nameservers[..index].contains(addr) {
                return Err(BrokerError::Config(format!(
                    "nameservers lists {addr:?} twice; list each nameserver once"
                )));
            }
        }
        self.archive
            .validate()
            .map_err(|error| BrokerError::Config(error.to_string()))?;
        if self.heartbeat_interval_ms < MIN_HEARTBEAT_INTERVAL_MS {
            return Err(BrokerError::Config(format!(
                "heartbeat_interval_ms ({}) must be at least {MIN_HEARTBEAT_INTERVAL_MS}: heartbeats more often only load the nameservers (default 500)",
                self.heartbeat_interval_ms
            )));
        }
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
        self.replication.validate(&self.idc, limits.max_frame_size)?;
        self.trace.validate()?;
        self.transaction.validate()?;
        if self.replication.replicas > 1 && !self.is_governed() {
            return Err(BrokerError::Config(format!(
                "replication.replicas = {} needs nameservers: a group's master is elected by the nameservers; set `nameservers` or use replicas = 1",
                self.replication.replicas
            )));
        }
        self.tls
            .validate()
            .map_err(|error| BrokerError::Config(error.to_string()))?;
        if self.max_inflight_per_connection == 0 {
            return Err(BrokerError::Config(
                "max_inflight_per_connection must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(config: &BrokerConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_standalone_broker_is_the_default() {
        let config = BrokerConfig::default();
        config.validate().unwrap();
        assert!(!config.is_governed());
        assert_eq!(config.heartbeat_interval_ms, 500);
        assert_eq!(config.member_name(), "broker-a");
    }

    #[test]
    fn governance_fields_are_validated_with_a_message_naming_the_field() {
        let governed = BrokerConfig {
            nameservers: vec!["127.0.0.1:7800".into(), "ns-2.example:7800".into()],
            member_name: Some("a-1".into()),
            ..BrokerConfig::default()
        };
        governed.validate().unwrap();
        assert!(governed.is_governed());
        assert_eq!(governed.member_name(), "a-1");

        let too_often = BrokerConfig {
            heartbeat_interval_ms: 99,
            ..governed.clone()
        };
        let error = config_error(&too_often);
        assert!(
            error.contains("heartbeat_interval_ms (99) must be at least 100"),
            "{error}"
        );

        let bad_member = BrokerConfig {
            member_name: Some("a 1".into()),
            ..governed.clone()
        };
        assert!(config_error(&bad_member).contains("member_name \"a 1\""));

        for bad in ["", "7800", "host:", ":7800", "host:port", "host:0", "ho st:7800"] {
            let config = BrokerConfig {
                nameservers: vec![bad.into()],
                ..governed.clone()
            };
            let error = config_error(&config);
            assert!(
                error.contains("nameservers entry") && error.contains("host:port"),
                "{bad}: {error}"
            );
        }
        let twice = BrokerConfig {
            nameservers: vec!["127.0.0.1:7800".into(), "127.0.0.1:7800".into()],
            ..governed
        };
        assert!(config_error(&twice).contains("twice"));
    }

    #[test]
    fn nameservers_read_as_a_list_or_as_one_comma_separated_string() {
        let parse = |text: &str| serde_json::from_str::<BrokerConfig>(text).map(|config| config.nameservers);
        assert_eq!(
            parse(r#"{"nameservers": ["a:7800", "b:7800"]}"#).unwrap(),
            ["a:7800", "b:7800"]
        );
        assert_eq!(
            parse(r#"{"nameservers": "a:7800, b:7800,"}"#).unwrap(),
            ["a:7800", "b:7800"]
        );
        assert!(parse(r#"{}"#).unwrap().is_empty());
        assert!(parse(r#"{"nameservers": 7}"#).is_err());
    }
}
