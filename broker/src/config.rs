//! Broker configuration: one TOML file, every field with a default that works on a laptop.

use std::net::SocketAddr;
use std::path::PathBuf;

use meridian_proto::validate::{self, Limits};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{BrokerError, Result};
use crate::replication::ReplicationConfig;
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
    pub trace: crate::trace::TraceConfig,
    /// Archiving to Parquet on object storage (the `[archive]` table; off by default). With it
    /// on, offsets below the local commitlog are read from the archive, and archived segments
    /// are deleted locally after `local_retention_secs`.
    pub archive: meridian_archive::store::ArchiveConfig,
    /// Transactional messages (the `[transaction]` table): when undecided transactions are checked
    /// back with their producers, and how many times before they are rolled back.
    pub transaction: crate::transaction::TransactionConfig,
    /// The RocketMQ 4.x remoting listener (the `[remoting]` table; off by default, on in
    /// `meridian dev`): unmodified RocketMQ clients produce and consume through it.
    pub remoting: crate::remoting::RemotingConfig,
    /// Authentication (the `[auth]` table; off by default): see [`crate::auth`].
    pub auth: crate::auth::AuthConfig,
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
            trace: crate::trace::TraceConfig::default(),
            archive: meridian_archive::store::ArchiveConfig::default(),
            transaction: crate::transaction::TransactionConfig::default(),
            remoting: crate::remoting::RemotingConfig::default(),
            auth: crate::auth::AuthConfig::default(),
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
