//! Nameserver configuration: one TOML file (the `meridian nameserver --config` file), every field
//! with a default that runs a single-node cluster on a laptop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meridian_proto::validate::Limits;
use serde::{Deserialize, Serialize};

use crate::error::NameserverError;
use crate::raft::RaftConfig;
use crate::types::{Node, NodeId};

/// Requests one connection may have running at once by default (`max_inflight_per_connection`);
/// more wait for a slot.
pub const MAX_INFLIGHT_PER_CONNECTION: usize = 256;

/// One node of the initial cluster (a `[[members]]` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Its node id.
    pub id: NodeId,
    /// Its framed-protocol address, as the other nodes reach it.
    pub addr: String,
    /// Its HTTP address.
    #[serde(default)]
    pub http_addr: String,
    /// Its data center.
    #[serde(default)]
    pub idc: String,
}

/// Everything a nameserver needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NameserverConfig {
    /// This node's Raft id, unique in the cluster and stable for the life of its data dir.
    pub node_id: NodeId,
    /// Address to listen on for brokers, clients and peers (default 127.0.0.1:7800).
    pub listen: SocketAddr,
    /// Address the others reach this node at (default: the bound address).
    pub advertise_addr: Option<String>,
    /// HTTP listener for the admin API and `/metrics` (`meridian nameserver`; `meridian dev`
    /// serves everything on one listener instead).
    pub http_listen: Option<SocketAddr>,
    /// HTTP address the others are told (default: the bound HTTP address).
    pub http_advertise_addr: Option<String>,
    /// Data center of this node. Empty: `MERIDIAN_IDC` or the IDC file decide
    /// ([`meridian_proto::idc`]); `MERIDIAN_IDC` wins over this setting.
    pub idc: String,
    /// The IDC file written at provisioning (default `/etc/meridian/idc`).
    pub idc_file: Option<PathBuf>,
    /// Data center a client is told when no IDC rule matches its address (empty: none, and the
    /// client warns that it knows no data center). `meridian dev` sets it to `local`.
    pub client_idc: String,
    /// HTTP address of the tracer (`host:port`), told to clients (`meridian trace`, `meridian
    /// env`) so that they need only the nameservers; empty: none. `meridian cluster up` sets it
    /// from the cluster spec.
    pub tracer_http: String,
    /// HTTP address of the query service, told to clients like `tracer_http` (`meridian sql`).
    pub query_http: String,
    /// Where the Raft log and snapshots live.
    pub data_dir: PathBuf,
    /// The initial cluster. Empty: a cluster of this node alone. Every node of a new cluster lists
    /// the same members; forming the cluster is idempotent, so restarts are safe.
    pub members: Vec<MemberConfig>,
    /// Start without forming a cluster and wait to be added (`meridian nameserver add-node`).
    pub join: bool,
    /// A broker whose last heartbeat is older than this is down in routes, in ms; a master silent
    /// this long is replaced by the failover controller, and a master's lease (how long it may
    /// accept writes after a heartbeat the leader answered) is half of it. The default, 3000,
    /// keeps failover within 5 s with brokers heartbeating every 500 ms.
    pub broker_timeout_ms: u64,
    /// Longest a write waits to commit, in ms.
    pub write_timeout_ms: u64,
    /// Largest frame in bytes (and largest uncompressed broker registration).
    pub max_frame_size: usize,
    /// Raft settings.
    pub raft: RaftConfig,
    /// The RocketMQ 4.x remoting listener (the `[remoting]` table; off by default, on in
    /// `meridian dev`): RocketMQ clients look up routes here.
    pub remoting: crate::remoting::RemotingConfig,
    /// The alert rules, webhooks and evaluation interval (the `[alerts]` table; see
    /// [`crate::alerts`]).
    pub alerts: crate::alerts::AlertsConfig,
    /// Losing a data center (the `[continuity]` table).
    pub continuity: ContinuityConfig,
    /// Authentication (the `[auth]` table; off by default): see [`crate::auth`].
    pub auth: crate::auth::AuthConfig,
    /// TLS for this node's listeners and its connections to the other nameservers (the `[tls]`
    /// table; off by default): see [`meridian_proto::tls`].
    pub tls: meridian_proto::tls::TlsSettings,
    /// Limits on clients' connections (the `[connections]` table): per address, handshake and
    /// idle timeouts.
    pub connections: meridian_proto::serve::ConnectionLimits,
    /// Requests one connection may have running at once; more wait for a slot.
    pub max_inflight_per_connection: usize,
    /// The client side of `tls`, loaded at start from `ca_file`: connections this node opens.
    #[serde(skip)]
    pub tls_client: Option<std::sync::Arc<meridian_proto::tls::TlsClient>>,
}

/// When the nameservers' majority declares a data center lost (the `[continuity]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContinuityConfig {
    /// A data center none of whose brokers the Raft leader heard for this long, in ms, is
    /// declared lost (in the Raft log, routes, `meridian cluster status`, `/api/cluster` and the
    /// `meridian_nameserver_idc_lost` metric); it is cleared as soon as one of them is heard
    /// again. At least `broker_timeout_ms`. The default, 6000, is two default broker timeouts:
    /// long enough that one failover inside a data center is not mistaken for its loss.
    pub idc_lost_after_ms: u64,
}

impl Default for ContinuityConfig {
    fn default() -> ContinuityConfig {
        ContinuityConfig {
            idc_lost_after_ms: 6_000,
        }
    }
}

impl Default for NameserverConfig {
    fn default() -> NameserverConfig {
        NameserverConfig {
            node_id: 1,
            listen: "127.0.0.1:7800".parse().expect("valid address"),
            advertise_addr: None,
            http_listen: Some("127.0.0.1:8082".parse().expect("valid address")),
            http_advertise_addr: None,
            idc: String::new(),
            idc_file: None,
            client_idc: String::new(),
            tracer_http: String::new(),
            query_http: String::new(),
            data_dir: PathBuf::from("meridian-data/nameserver"),
            members: Vec::new(),
            join: false,
            broker_timeout_ms: 3_000,
            write_timeout_ms: 5_000,
            max_frame_size: Limits::default().max_frame_size,
            raft: RaftConfig::default(),
            remoting: crate::remoting::RemotingConfig::default(),
            alerts: crate::alerts::AlertsConfig::default(),
            continuity: ContinuityConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            tls: meridian_proto::tls::TlsSettings::default(),
            connections: meridian_proto::serve::ConnectionLimits::default(),
            max_inflight_per_connection: MAX_INFLIGHT_PER_CONNECTION,
            tls_client: None,
        }
    }
}

impl NameserverConfig {
    /// Checks that the settings fit together; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), NameserverError> {
        let invalid = |message: String| Err(NameserverError::Config { message });
        if let Err(error) = self.tls.validate() {
            return invalid(error.to_string());
        }
        if self.max_inflight_per_connection == 0 {
            return invalid("max_inflight_per_connection must be at least 1".into());
        }
        if self.node_id == 0 {
            return invalid("node_id must be at least 1".into());
        }
        self.raft.to_openraft()?;
        self.alerts.validate()?;
        if self.broker_timeout_ms < 1000 {
            return invalid(format!(
                "broker_timeout_ms ({}) must be at least 1000: a few broker heartbeat intervals",
                self.broker_timeout_ms
            ));
        }
        if self.write_timeout_ms <= self.raft.election_timeout_max_ms {
            return invalid(format!(
                "write_timeout_ms ({}) must exceed raft.election_timeout_max_ms ({}), or writes fail during every election",
                self.write_timeout_ms, self.raft.election_timeout_max_ms
            ));
        }
        if self.continuity.idc_lost_after_ms < self.broker_timeout_ms {
            return invalid(format!(
                "continuity.idc_lost_after_ms ({}) must be at least broker_timeout_ms ({}): a data center is lost only once its brokers are down",
                self.continuity.idc_lost_after_ms, self.broker_timeout_ms
            ));
        }
        if self.max_frame_size < 64 * 1024 {
            return invalid(format!(
                "max_frame_size ({}) must be at least 65536",
                self.max_frame_size
            ));
        }
        let mut ids = BTreeMap::new();
        for member in &self.members {
            if member.id == 0 || member.addr.trim().is_empty() {
                return invalid(format!(
                    "members: every member needs an id of at least 1 and an addr; got id {} addr {:?}",
                    member.id, member.addr
                ));
            }
            if ids.insert(member.id, ()).is_some() {
                return invalid(format!("members: node id {} is listed twice", member.id));
            }
        }
        if !self.members.is_empty() && !ids.contains_key(&self.node_id) {
            return invalid(format!(
                "members does not list this node (node_id {}): list every node of the initial cluster, this one included, or set join = true to be added later",
                self.node_id
            ));
        }
        if self.join && !self.members.is_empty() {
            return invalid(
                "join = true and members are exclusive: a joining node is added by the cluster, it does not form one"
                    .into(),
            );
        }
        Ok(())
    }

    /// The initial membership, given this node's advertised addresses.
    pub fn initial_members(&self, this: &Node) -> BTreeMap<NodeId, Node> {
        if self.members.is_empty() {
            return BTreeMap::from([(self.node_id, this.clone())]);
        }
        self.members
            .iter()
            .map(|member| {
                let node = if member.id == self.node_id {
                    this.clone()
                } else {
                    Node {
                        addr: member.addr.clone(),
                        http_addr: member.http_addr.clone(),
                        idc: member.idc.clone(),
                    }
                };
                (member.id, node)
            })
            .collect()
    }

    /// `broker_timeout_ms` as a duration.
    pub fn broker_timeout(&self) -> Duration {
        Duration::from_millis(self.broker_timeout_ms)
    }

    /// `write_timeout_ms` as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_mistakes_are_named() {
        NameserverConfig::default().validate().unwrap();
        assert_eq!(
            NameserverConfig::default().broker_timeout(),
            Duration::from_secs(3),
            "failover within 5 s: a 3 s timeout, then an election"
        );
        let config = NameserverConfig {
            broker_timeout_ms: 999,
            ..NameserverConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("broker_timeout_ms (999) must be at least 1000")
        );
        let three = |node_id| NameserverConfig {
            node_id,
            members: (1..=3)
                .map(|id| MemberConfig {
                    id,
                    addr: format!("10.0.0.{id}:7800"),
                    http_addr: String::new(),
                    idc: format!("dc{id}"),
                })
                .collect(),
            ..NameserverConfig::default()
        };
        three(2).validate().unwrap();
        let message = three(4).validate().unwrap_err().to_string();
        assert!(
            message.contains("members does not list this node (node_id 4)"),
            "{message}"
        );
        let config = NameserverConfig {
            write_timeout_ms: 500,
            ..NameserverConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("write_timeout_ms (500)")
        );
        let this = Node {
            addr: "127.0.0.1:7800".into(),
            http_addr: String::new(),
            idc: "dc2".into(),
        };
        let members = three(2).initial_members(&this);
        assert_eq!(members.len(), 3);
        assert_eq!(members[&2], this);
        assert_eq!(members[&3].addr, "10.0.0.3:7800");
        assert_eq!(
            NameserverConfig::default().initial_members(&this),
            BTreeMap::from([(1, this.clone())])
        );
        let parsed: NameserverConfig = toml_like(r#"{"node_id": 3, "members": [{"id": 3, "addr": "a:1"}]}"#);
        parsed.validate().unwrap();
    }

    fn toml_like(json: &str) -> NameserverConfig {
        serde_json::from_str(json).unwrap()
    }
}
