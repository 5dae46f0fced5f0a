//! The cluster spec: the TOML file `meridian cluster up --config` reads ([`ClusterSpec`]), as
//! written by a person; [`super::plan`] checks it and turns it into processes.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// A cluster spec: the `--config` file of `meridian cluster up`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// A name for the cluster, shown by `status`.
    #[serde(default)]
    pub name: String,
    /// Every data center a node may be in.
    pub idcs: Vec<String>,
    /// The nameservers (the Raft cluster).
    pub nameservers: Vec<NameserverSpec>,
    /// Broker groups: each one master and its slaves.
    #[serde(default)]
    pub broker_groups: Vec<GroupSpec>,
    /// The tracer (absent: none).
    pub tracer: Option<ServiceSpec>,
    /// The query service (`meridian query`) over the archivers' store, when given.
    pub query: Option<ServiceSpec>,
    /// The web console (`meridian ui`), reading every other node's HTTP API, when given.
    pub ui: Option<ServiceSpec>,
    /// One archiver process beside every broker.
    #[serde(default)]
    pub archiver: ArchiverSpec,
    /// Settings merged into every generated config of a kind (`[overrides.broker.store]`...).
    #[serde(default)]
    pub overrides: Overrides,
    /// Authentication on (`[auth]` of every nameserver and broker, the tracer logs in as a node):
    /// `cluster up` makes the node secret file and the user `admin` (docs/security.md).
    #[serde(default)]
    pub auth: bool,
}

/// One nameserver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameserverSpec {
    /// Raft node id (1, 2, 3...); the node is named `ns-<id>`.
    pub id: u64,
    /// Its data center.
    pub idc: String,
    /// Framed-protocol address (brokers, clients, Raft peers).
    pub listen: SocketAddr,
    /// HTTP address (admin API, health, metrics).
    pub http: SocketAddr,
    /// Settings merged into this node's config only.
    #[serde(default)]
    pub overrides: toml::Table,
}

/// One broker group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// The group's name (`broker_name` of its members; topics place queues on it).
    pub name: String,
    /// `async`, `quorum`, `all` or `idc_safe`.
    #[serde(default = "default_ack_policy")]
    pub ack_policy: String,
    /// `async` or `sync`.
    #[serde(default = "default_flush_mode")]
    pub flush_mode: String,
    /// `degrade` or `stop`: whether the group goes on acknowledging with the replicas it has when
    /// a data center holding some of them is declared lost (`replication.on_idc_lost`).
    #[serde(default = "default_on_idc_lost")]
    pub on_idc_lost: String,
    /// Its members; exactly one with `role = "master"`.
    pub members: Vec<MemberSpec>,
    /// Settings merged into the configs of this group's members.
    #[serde(default)]
    pub overrides: toml::Table,
}

fn default_ack_policy() -> String {
    "quorum".into()
}

fn default_flush_mode() -> String {
    "async".into()
}

fn default_on_idc_lost() -> String {
    "degrade".into()
}

/// The role a member starts in: the master is started (and elected) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Started first, so the nameservers elect it.
    Master,
    /// Started once the master serves, replicating from it.
    Slave,
}

/// One broker of a group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// Its name, unique in the cluster (the node name for `kill`/`restart`).
    pub name: String,
    /// `master` or `slave`.
    pub role: MemberRole,
    /// Its data center.
    pub idc: String,
    /// Where it listens for clients and slaves.
    pub listen: SocketAddr,
    /// HTTP address (health, metrics).
    pub http: SocketAddr,
    /// Settings merged into this member's config only (e.g. `advertise_addr`).
    #[serde(default)]
    pub overrides: toml::Table,
}

/// A service of its own process: the tracer, the query service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Its data center.
    pub idc: String,
    /// HTTP address (lookups or SQL, metrics).
    pub http: SocketAddr,
    /// Settings merged into its config.
    #[serde(default)]
    pub overrides: toml::Table,
}

/// The archivers: one per broker process, archiving into one store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiverSpec {
    /// Run them (and let brokers serve archived offsets and delete archived segments).
    pub enabled: bool,
    /// The archive store; empty: the folder `archive` in the cluster dir.
    pub store: String,
}

impl Default for ArchiverSpec {
    fn default() -> ArchiverSpec {
        ArchiverSpec {
            enabled: true,
            store: String::new(),
        }
    }
}

/// Settings merged into every generated config of one kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overrides {
    /// Into every nameserver's config.
    pub nameserver: toml::Table,
    /// Into every broker's config.
    pub broker: toml::Table,
    /// Into the tracer's config.
    pub tracer: toml::Table,
    /// Into the query service's config.
    pub query: toml::Table,
    /// Into the console's config.
    pub ui: toml::Table,
}

/// Parses a spec's text; `source` names it in errors.
pub fn parse_spec(text: &str, source: &str) -> Result<ClusterSpec> {
    toml::from_str(text).with_context(|| format!("{source} is not a valid cluster spec (see examples/two-idc.toml)"))
}
