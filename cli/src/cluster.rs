//! `meridian cluster up|down|kill|restart` and the process view of `meridian cluster status`: a
//! whole cluster (nameservers, broker groups, archivers, tracer, query service, console) as separate `meridian` processes
//! on this machine, described by one TOML file (`examples/two-idc.toml`).
//!
//! [`plan`] turns a [`ClusterSpec`] into one [`Node`] per process and checks it before anything
//! starts (duplicate addresses, unknown IDCs, a group without exactly one master, and every
//! generated config through its service's own validation). `up` writes each node's config, data
//! dir, log and pid file under the cluster dir (`DIR/<node>/`), keeps a copy of the spec as
//! `DIR/cluster.toml` (what `down`, `kill`, `restart` and `status` read), starts the processes
//! detached (their own session, so they outlive the CLI) and waits for each to be healthy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use meridian_broker::BrokerConfig;
use meridian_nameserver::NameserverConfig;
use meridian_tracer::TracerConfig;

use crate::sql_cmds::QueryServiceConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The file under the cluster dir that holds the spec the cluster was made from.
const SPEC_FILE: &str = "cluster.toml";

/// Where the cluster lives, for every `cluster` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DirArgs {
    /// The cluster dir: each node's config, data, log and pid file, and the spec it was made from.
    #[arg(long, env = "MERIDIAN_CLUSTER_DIR", default_value = "meridian-cluster")]
    pub dir: PathBuf,
}

/// Arguments of `meridian cluster up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The cluster spec (TOML): IDCs, nameservers, broker groups, tracer, archivers
    /// (examples/one-node.toml, one-idc.toml, two-idc.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Check the spec and print what would run, starting nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `meridian cluster down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Also delete the cluster dir (data, logs, configs) once every process is gone.
    #[arg(long)]
    pub purge: bool,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `meridian cluster kill`.
#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The node (as `cluster status` names it: ns-1, a-0, tracer, archiver-a-0, ...).
    pub node: String,
    /// `kill` (SIGKILL, a crash: no flush, no goodbye) or `term` (SIGTERM, a clean stop).
    #[arg(long, default_value = "kill", value_parser = ["kill", "term"])]
    pub signal: String,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Arguments of `meridian cluster restart`.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// The node to stop (if running, with SIGTERM) and start again with the same config and data.
    pub node: String,
    #[command(flatten)]
    pub dir: DirArgs,
}

// ---------------------------------------------------------------------------------------------
// The spec

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

// ---------------------------------------------------------------------------------------------
// The plan

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `meridian nameserver`.
    Nameserver,
    /// `meridian broker`.
    Broker,
    /// `meridian archiver` (reads its broker's config).
    Archiver,
    /// `meridian tracer`.
    Tracer,
    /// `meridian query` (SQL over the archive).
    Query,
    /// `meridian ui` (the web console).
    Ui,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Nameserver => "nameserver",
            Kind::Broker => "broker",
            Kind::Archiver => "archiver",
            Kind::Tracer => "tracer",
            Kind::Query => "query",
            Kind::Ui => "ui",
        }
    }
}

/// One process of the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its name (`ns-1`, `a-0`, `archiver-a-0`, `tracer`).
    pub name: String,
    /// What it runs.
    pub kind: Kind,
    /// Its data center.
    pub idc: String,
    /// Its broker group (brokers and archivers).
    pub group: Option<String>,
    /// Started as its group's master.
    pub master: bool,
    /// Framed-protocol address (nameservers, brokers).
    pub listen: Option<SocketAddr>,
    /// HTTP address (everything but archivers).
    pub http: Option<SocketAddr>,
    /// `DIR/<name>`.
    pub dir: PathBuf,
    /// The config file passed with `--config` (an archiver's is its broker's).
    pub config_path: PathBuf,
    /// The config written to `config_path` (None for archivers).
    config: Option<toml::Table>,
}

impl Node {
    /// Where its stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("meridian.log")
    }

    /// Its pid file.
    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("meridian.pid")
    }

    fn args(&self) -> Vec<std::ffi::OsString> {
        vec![
            self.kind.word().into(),
            "--config".into(),
            self.config_path.clone().into_os_string(),
        ]
    }
}

/// Every process of a cluster, in start order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The cluster's name.
    pub name: String,
    /// The (absolute) cluster dir.
    pub dir: PathBuf,
    /// Its processes.
    pub nodes: Vec<Node>,
    /// The nameservers' framed-protocol addresses.
    pub nameservers: Vec<String>,
}

impl Plan {
    /// The HTTP address of the first node of `kind` (the tracer, the query service), if any.
    fn service_http(&self, kind: Kind) -> Option<String> {
        self.nodes
            .iter()
            .find(|node| node.kind == kind)
            .and_then(|node| node.http)
            .map(|http| http.to_string())
    }

    fn node(&self, name: &str) -> Result<&Node> {
        self.nodes.iter().find(|node| node.name == name).ok_or_else(|| {
            anyhow!(
                "no node {name:?} in the cluster at {}; its nodes are: {}",
                self.dir.display(),
                self.nodes
                    .iter()
                    .map(|node| node.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

fn merge(base: &mut toml::Table, overrides: &toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(more)) => merge(inner, more),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

fn table(value: Value) -> toml::Table {
    // The values built here are all representable in TOML (no nulls).
    match toml::Value::try_from(value) {
        Ok(toml::Value::Table(table)) => table,
        other => unreachable!("a JSON object of strings, numbers, lists and tables: {other:?}"),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Two bound addresses that cannot both be listened on.
fn clash(one: SocketAddr, other: SocketAddr) -> bool {
    one.port() == other.port() && (one.ip() == other.ip() || one.ip().is_unspecified() || other.ip().is_unspecified())
}

/// Checks `spec` and turns it into the processes to run under `dir`. Every problem found is
/// reported at once, each naming the node, what is wrong and what to do.
pub fn plan(spec: &ClusterSpec, dir: &Path) -> Result<Plan> {
    let mut problems: Vec<String> = Vec::new();
    let idcs: BTreeSet<&str> = spec.idcs.iter().map(String::as_str).collect();
    if spec.idcs.is_empty() {
        problems.push("idcs is empty: list the data centers (e.g. idcs = [\"dc1\", \"dc2\", \"witness\"])".into());
    }
    for idc in &spec.idcs {
        if meridian_proto::validate::validate_idc(idc).is_err() {
            problems.push(format!(
                "idcs: {idc:?} is not a valid IDC name: 1-64 chars of [A-Za-z0-9_-]"
            ));
        }
    }
    let check_idc = |who: &str, idc: &str, problems: &mut Vec<String>| {
        if !idcs.contains(idc) {
            problems.push(format!(
                "{who} is in IDC {idc:?}, which is not in idcs {:?}: add it to idcs or fix the node's idc",
                spec.idcs
            ));
        }
    };
    if spec.nameservers.is_empty() {
        problems.push(
            "no [[nameservers]]: a cluster needs at least one (three, one per site, to survive losing a data center)"
                .into(),
        );
    } else if spec.nameservers.len().is_multiple_of(2) {
        problems.push(format!(
            "{} nameservers: a Raft cluster of an even size tolerates no more failures than one node fewer; use 1, 3 or 5",
            spec.nameservers.len()
        ));
    }
    let mut ids = BTreeSet::new();
    for nameserver in &spec.nameservers {
        if nameserver.id == 0 || !ids.insert(nameserver.id) {
            problems.push(format!(
                "nameserver id {} is {}: ids are unique and start at 1",
                nameserver.id,
                if nameserver.id == 0 { "0" } else { "used twice" }
            ));
        }
        check_idc(
            &format!("nameserver ns-{}", nameserver.id),
            &nameserver.idc,
            &mut problems,
        );
    }
    if spec.broker_groups.is_empty() {
        problems.push("no [[broker_groups]]: a cluster needs at least one broker group".into());
    }
    let mut group_names = BTreeSet::new();
    for group in &spec.broker_groups {
        let who = format!("broker group {:?}", group.name);
        if !valid_name(&group.name) {
            problems.push(format!("{who}: the name must be 1-64 chars of [A-Za-z0-9_-]"));
        }
        if !group_names.insert(group.name.as_str()) {
            problems.push(format!("{who} is defined twice"));
        }
        let masters: Vec<&MemberSpec> = group
            .members
            .iter()
            .filter(|member| member.role == MemberRole::Master)
            .collect();
        match masters.len() {
            1 => {}
            0 => problems.push(format!(
                "{who} has no master: give exactly one member role = \"master\" (it is started first and elected)"
            )),
            _ => problems.push(format!(
                "{who} has {} masters ({}): exactly one member has role = \"master\", the others \"slave\"",
                masters.len(),
                masters
                    .iter()
                    .map(|member| member.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        if !["async", "quorum", "all", "idc_safe"].contains(&group.ack_policy.as_str()) {
            problems.push(format!(
                "{who}: ack_policy {:?} is not one of async, quorum, all, idc_safe",
                group.ack_policy
            ));
        }
        if !["degrade", "stop"].contains(&group.on_idc_lost.as_str()) {
            problems.push(format!(
                "{who}: on_idc_lost {:?} is not degrade or stop",
                group.on_idc_lost
            ));
        }
        if !["async", "sync"].contains(&group.flush_mode.as_str()) {
            problems.push(format!("{who}: flush_mode {:?} is not async or sync", group.flush_mode));
        }
        if group.ack_policy == "idc_safe"
            && let [master] = masters[..]
            && group.members.iter().all(|member| member.idc == master.idc)
        {
            problems.push(format!(
                "{who} acknowledges with idc_safe, but no member is outside the master's IDC {:?}: no send could ever be acknowledged; add a slave in another IDC or use quorum",
                master.idc
            ));
        }
        for member in &group.members {
            check_idc(
                &format!("broker {:?} of {who}", member.name),
                &member.idc,
                &mut problems,
            );
        }
    }
    if let Some(tracer) = &spec.tracer {
        check_idc("the tracer", &tracer.idc, &mut problems);
    }
    if let Some(query) = &spec.query {
        check_idc("the query service", &query.idc, &mut problems);
    }

    let dir = absolute(dir)?;
    let nameserver_addrs: Vec<String> = spec.nameservers.iter().map(|ns| ns.listen.to_string()).collect();
    let members: Vec<Value> = spec
        .nameservers
        .iter()
        .map(|ns| json!({"id": ns.id, "addr": ns.listen.to_string(), "http_addr": ns.http.to_string(), "idc": ns.idc}))
        .collect();
    let mut nodes = Vec::new();
    for nameserver in &spec.nameservers {
        let name = format!("ns-{}", nameserver.id);
        let node_dir = dir.join(&name);
        let mut config = table(json!({
            "node_id": nameserver.id,
            "listen": nameserver.listen.to_string(),
            "http_listen": nameserver.http.to_string(),
            "idc": nameserver.idc,
            "data_dir": node_dir.join("data"),
            "members": if spec.nameservers.len() > 1 { members.clone() } else { Vec::new() },
            // Clients find the tracer and the query service through the nameservers.
            "tracer_http": spec.tracer.as_ref().map(|tracer| tracer.http.to_string()).unwrap_or_default(),
            "query_http": spec.query.as_ref().map(|query| query.http.to_string()).unwrap_or_default(),
        }));
        merge(&mut config, &spec.overrides.nameserver);
        merge(&mut config, &nameserver.overrides);
        match NameserverConfig::deserialize(toml::Value::Table(config.clone())) {
            Ok(parsed) => {
                if let Err(error) = parsed.validate() {
                    problems.push(format!("nameserver {name}: {error}"));
                }
            }
            Err(error) => problems.push(format!("nameserver {name}: invalid config: {error}")),
        }
        nodes.push(Node {
            name,
            kind: Kind::Nameserver,
            idc: nameserver.idc.clone(),
            group: None,
            master: false,
            listen: Some(nameserver.listen),
            http: Some(nameserver.http),
            config_path: node_dir.join("config.toml"),
            dir: node_dir,
            config: Some(config),
        });
    }
    let archive_store = if spec.archiver.store.is_empty() {
        dir.join("archive").display().to_string()
    } else {
        spec.archiver.store.clone()
    };
    // Masters first: the first member of a group to register is elected.
    let mut brokers: Vec<(&GroupSpec, &MemberSpec)> = spec
        .broker_groups
        .iter()
        .flat_map(|group| group.members.iter().map(move |member| (group, member)))
        .collect();
    brokers.sort_by_key(|(_, member)| member.role != MemberRole::Master);
    let mut archivers = Vec::new();
    for (group, member) in brokers {
        let node_dir = dir.join(&member.name);
        let mut config = table(json!({
            "broker_name": group.name,
            "member_name": member.name,
            "listen": member.listen.to_string(),
            "http_listen": member.http.to_string(),
            "data_dir": node_dir.join("data"),
            "idc": member.idc,
            "nameservers": nameserver_addrs,
            "store": {"flush_mode": group.flush_mode},
            "replication": {"ack_policy": group.ack_policy, "replicas": group.members.len(), "on_idc_lost": group.on_idc_lost},
            "archive": {"enabled": spec.archiver.enabled, "store": archive_store},
        }));
        merge(&mut config, &spec.overrides.broker);
        merge(&mut config, &group.overrides);
        merge(&mut config, &member.overrides);
        let who = format!("broker {:?} of group {:?}", member.name, group.name);
        if !valid_name(&member.name) {
            problems.push(format!("{who}: the name must be 1-64 chars of [A-Za-z0-9_-]"));
        }
        match BrokerConfig::deserialize(toml::Value::Table(config.clone())) {
            Ok(parsed) => {
                if let Err(error) = parsed.validate() {
                    problems.push(format!("{who}: {error}"));
                }
            }
            Err(error) => problems.push(format!("{who}: invalid config: {error}")),
        }
        let node = Node {
            name: member.name.clone(),
            kind: Kind::Broker,
            idc: member.idc.clone(),
            group: Some(group.name.clone()),
            master: member.role == MemberRole::Master,
            listen: Some(member.listen),
            http: Some(member.http),
            config_path: node_dir.join("config.toml"),
            dir: node_dir,
            config: Some(config),
        };
        if spec.archiver.enabled {
            archivers.push(Node {
                name: format!("archiver-{}", member.name),
                kind: Kind::Archiver,
                idc: member.idc.clone(),
                group: Some(group.name.clone()),
                master: false,
                listen: None,
                http: None,
                config_path: node.config_path.clone(),
                dir: dir.join(format!("archiver-{}", member.name)),
                config: None,
            });
        }
        nodes.push(node);
    }
    nodes.extend(archivers);
    if let Some(tracer) = &spec.tracer {
        let node_dir = dir.join("tracer");
        let mut config = table(json!({
            "nameservers": nameserver_addrs,
            "data_dir": node_dir.join("data"),
            "http_listen": tracer.http.to_string(),
        }));
        if spec.archiver.enabled {
            // Timelines show archive steps from the archivers' manifests.
            config.insert("archive".into(), table(json!({"store": archive_store})).into());
        }
        merge(&mut config, &spec.overrides.tracer);
        merge(&mut config, &tracer.overrides);
        let mut tracer_keys = config.clone();
        if let Some(archive) = tracer_keys.remove("archive")
            && let Err(error) = archive.try_into::<meridian_archive::store::ArchiveConfig>()
        {
            problems.push(format!("the tracer: invalid [archive] table: {error}"));
        }
        match TracerConfig::deserialize(toml::Value::Table(tracer_keys)) {
            Ok(parsed) => {
                if let Err(error) = parsed.validate() {
                    problems.push(format!("the tracer: {error}"));
                }
            }
            Err(error) => problems.push(format!("the tracer: invalid config: {error}")),
        }
        nodes.push(Node {
            name: "tracer".into(),
            kind: Kind::Tracer,
            idc: tracer.idc.clone(),
            group: None,
            master: false,
            listen: None,
            http: Some(tracer.http),
            config_path: node_dir.join("config.toml"),
            dir: node_dir,
            config: Some(config),
        });
    }

    if let Some(query) = &spec.query {
        let node_dir = dir.join("query");
        let mut config = table(json!({
            "http_listen": query.http.to_string(),
            "archive": {"store": archive_store},
        }));
        merge(&mut config, &spec.overrides.query);
        merge(&mut config, &query.overrides);
        match QueryServiceConfig::deserialize(toml::Value::Table(config.clone())) {
            Ok(parsed) => {
                if let Err(error) = parsed.query.validate() {
                    problems.push(format!("the query service: {error}"));
                }
            }
            Err(error) => problems.push(format!("the query service: invalid config: {error}")),
        }
        nodes.push(Node {
            name: "query".into(),
            kind: Kind::Query,
            idc: query.idc.clone(),
            group: None,
            master: false,
            listen: None,
            http: Some(query.http),
            config_path: node_dir.join("config.toml"),
            dir: node_dir,
            config: Some(config),
        });
    }

    if let Some(ui) = &spec.ui {
        let node_dir = dir.join("ui");
        let http_of = |kind: Kind| -> Vec<String> {
            nodes
                .iter()
                .filter(|node| node.kind == kind)
                .filter_map(|node| node.http.map(|http| http.to_string()))
                .collect()
        };
        let console = crate::ui_cmd::UiConfig {
            listen: Some(ui.http),
            nameserver_http: http_of(Kind::Nameserver).into_iter().next(),
            broker_http: Some(http_of(Kind::Broker)),
            tracer_http: http_of(Kind::Tracer).into_iter().next(),
            query_http: http_of(Kind::Query).into_iter().next(),
            timeout_ms: None,
        };
        let mut config = match toml::Value::try_from(&console) {
            Ok(toml::Value::Table(table)) => table,
            _ => toml::Table::new(),
        };
        merge(&mut config, &spec.overrides.ui);
        merge(&mut config, &ui.overrides);
        match crate::ui_cmd::UiConfig::deserialize(toml::Value::Table(config.clone())) {
            Ok(parsed) => {
                if let Err(error) = parsed.validate() {
                    problems.push(format!("the console: {error}"));
                }
            }
            Err(error) => problems.push(format!("the console: invalid config: {error}")),
        }
        nodes.push(Node {
            name: "ui".into(),
            kind: Kind::Ui,
            idc: ui.idc.clone(),
            group: None,
            master: false,
            listen: None,
            http: Some(ui.http),
            config_path: node_dir.join("config.toml"),
            dir: node_dir,
            config: Some(config),
        });
    }

    // Names and addresses, across every node.
    let mut names = BTreeSet::new();
    for node in &nodes {
        if !names.insert(node.name.as_str()) {
            problems.push(format!(
                "node name {:?} is used twice: broker member names are unique across the cluster",
                node.name
            ));
        }
    }
    let mut bound: Vec<(SocketAddr, String)> = Vec::new();
    for node in &nodes {
        for (addr, what) in [(node.listen, "listen"), (node.http, "http")] {
            let Some(addr) = addr else { continue };
            let who = format!("{} {what}", node.name);
            if addr.port() == 0 {
                problems.push(format!(
                    "{who} has port 0: give every address a fixed port, so a restarted node keeps it"
                ));
                continue;
            }
            if let Some((_, other)) = bound.iter().find(|(other_addr, _)| clash(addr, *other_addr)) {
                problems.push(format!(
                    "duplicate port: {who} and {other} both use {addr}: give each its own port (or its own 127.0.0.x address)"
                ));
            }
            bound.push((addr, who));
        }
    }
    if !problems.is_empty() {
        bail!(
            "the cluster spec has {} problem(s); nothing was started:\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        );
    }
    Ok(Plan {
        name: spec.name.clone(),
        dir,
        nodes,
        nameservers: nameserver_addrs,
    })
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        Ok(dir.to_owned())
    } else {
        Ok(std::env::current_dir().context("reading the current dir")?.join(dir))
    }
}

/// Parses a spec's text; `source` names it in errors.
pub fn parse_spec(text: &str, source: &str) -> Result<ClusterSpec> {
    toml::from_str(text).with_context(|| format!("{source} is not a valid cluster spec (see examples/two-idc.toml)"))
}

/// The plan of the cluster kept in `dir`.
fn load(dir: &Path) -> Result<Plan> {
    let path = dir.join(SPEC_FILE);
    let text = std::fs::read_to_string(&path).map_err(|error| {
        anyhow!(
            "no cluster in {} ({}: {error}): start one with `meridian cluster up --config SPEC --dir {}`",
            dir.display(),
            path.display(),
            dir.display()
        )
    })?;
    plan(&parse_spec(&text, &path.display().to_string())?, dir)
}

/// Whether `dir` holds a cluster made by `cluster up`.
pub fn exists(dir: &Path) -> bool {
    dir.join(SPEC_FILE).is_file()
}

// ---------------------------------------------------------------------------------------------
// Processes

/// The pid in `node`'s pid file, if that process is still running (and is that node: the pid
/// was not reused by another program). A zombie counts as gone.
pub fn running_pid(node: &Node) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(node.pid_path()).ok()?.trim().parse().ok()?;
    is_alive(pid, &node.config_path).then_some(pid)
}

fn is_alive(pid: u32, config_path: &Path) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('Z' | 'X') | None) {
            return false;
        }
        let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        let needle = config_path.as_os_str().as_encoded_bytes();
        return cmdline.windows(needle.len()).any(|window| window == needle);
    }
    // No /proc (not Linux): trust the pid.
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: a plain syscall on a pid we started and just checked.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Starts `node` detached: its own session (so a Ctrl-C or hang-up of the terminal does not
/// reach it), stdout and stderr appended to its log, its pid in its pid file.
fn spawn(node: &Node) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(&node.dir).with_context(|| format!("creating {}", node.dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.log_path())
        .with_context(|| format!("opening {}", node.log_path().display()))?;
    let exe = std::env::current_exe().context("finding the meridian binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .args(node.args())
        .current_dir(&node.dir)
        // The spec says where each node is; an IDC from the environment would put every node in one.
        .env_remove("MERIDIAN_IDC")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().with_context(|| format!("starting {}", node.name))?;
    let pid = child.id();
    // The child is not waited for: it outlives this command. Dropping `Child` leaves it running.
    drop(child);
    std::fs::write(node.pid_path(), format!("{pid}\n"))
        .with_context(|| format!("writing {}", node.pid_path().display()))?;
    Ok(pid)
}

/// Waits up to `timeout` for `pid` (of `node`) to be gone, then SIGKILLs it; whether it went by
/// itself.
async fn wait_gone(node: &Node, pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid, &node.config_path) {
        if Instant::now() >= deadline {
            signal(pid, libc::SIGKILL);
            while is_alive(pid, &node.config_path) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Sends `sig` to `node` and waits up to `timeout` for it to be gone; SIGKILL after that.
/// Returns the pid it stopped and whether it went by itself, or None if it was not running.
async fn stop(node: &Node, sig: libc::c_int, timeout: Duration) -> Option<(u32, bool)> {
    let pid = running_pid(node)?;
    signal(pid, sig);
    Some((pid, wait_gone(node, pid, timeout).await))
}

/// Prints `line` above the progress bar, or plainly when the bar is hidden (not a terminal).
fn say(progress: &ProgressBar, line: String) {
    if progress.is_hidden() {
        println!("{line}");
    } else {
        progress.println(line);
    }
}

fn log_tail(node: &Node, lines: usize) -> String {
    let text = std::fs::read_to_string(node.log_path()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n    ")
}

// ---------------------------------------------------------------------------------------------
// Health

/// `GET path` over HTTP/1.0: the status and the body. None when it cannot be reached in time.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), fetch).await.ok().flatten()
}

pub(crate) async fn http_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let (status, body) = http_get(addr, path).await?;
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// What `status` shows of one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// What it runs.
    pub kind: Kind,
    /// Its data center.
    pub idc: String,
    /// Its broker group.
    pub group: Option<String>,
    /// Its pid while it runs.
    pub pid: Option<u32>,
    /// Running and answering its health check.
    pub healthy: bool,
    /// master / slave / waiting (brokers), leader / follower / candidate (nameservers).
    pub role: Option<String>,
    /// The Raft leader as this nameserver sees it.
    pub leader: Option<u64>,
    /// Writable master (brokers).
    pub writable: Option<bool>,
    /// The broker's committed commitlog offset.
    pub committed_offset: Option<u64>,
    /// Bytes a slave is behind its group's master.
    pub lag_bytes: Option<u64>,
    /// Epoch of the broker's group.
    pub epoch: Option<u64>,
    /// Framed-protocol address.
    pub listen: Option<SocketAddr>,
    /// HTTP address.
    pub http: Option<SocketAddr>,
    /// Its log file.
    pub log: PathBuf,
    /// The slaves a master holds in sync.
    pub in_sync: Vec<String>,
}

async fn probe(node: &Node) -> NodeStatus {
    let pid = running_pid(node);
    let mut status = NodeStatus {
        name: node.name.clone(),
        kind: node.kind,
        idc: node.idc.clone(),
        group: node.group.clone(),
        pid,
        healthy: false,
        role: None,
        leader: None,
        writable: None,
        committed_offset: None,
        lag_bytes: None,
        epoch: None,
        listen: node.listen,
        http: node.http,
        log: node.log_path(),
        in_sync: Vec::new(),
    };
    if pid.is_none() {
        return status;
    }
    match (node.kind, node.http) {
        (Kind::Nameserver, Some(http)) => {
            if let Some((code, body)) = http_get(http, "/api/nameserver/health").await {
                let health: Value = serde_json::from_str(&body).unwrap_or_default();
                status.healthy = code == 200;
                status.role = health["role"].as_str().map(str::to_lowercase);
                status.leader = health["leader"].as_u64();
            }
        }
        (Kind::Broker, Some(http)) => {
            if let Some(health) = http_json(http, "/api/health").await {
                let replication = &health["replication"];
                status.role = replication["role"].as_str().map(str::to_owned);
                status.writable = replication["writable"].as_bool();
                status.epoch = replication["epoch"].as_u64();
                status.committed_offset = health["broker"]["committed_offset"].as_u64();
                status.in_sync = replication["in_sync"]
                    .as_array()
                    .map(|names| {
                        names
                            .iter()
                            .filter_map(|name| name.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                status.healthy = match status.role.as_deref() {
                    Some("master") => status.writable == Some(true),
                    Some("slave") => true,
                    _ => false,
                };
            }
        }
        (Kind::Tracer | Kind::Query, Some(http)) => {
            status.healthy = http_get(http, "/metrics").await.is_some_and(|(code, _)| code == 200);
        }
        // The console serves its assets without calling any service, so this does not depend on
        // the others being up.
        (Kind::Ui, Some(http)) => {
            status.healthy = http_get(http, "/assets/console.css")
                .await
                .is_some_and(|(code, _)| code == 200);
        }
        // An archiver has no listener: running, and past its start-up line, is healthy.
        _ => {
            status.healthy =
                std::fs::read_to_string(node.log_path()).is_ok_and(|log| log.contains("meridian archiver for broker"));
        }
    }
    status
}

/// Every node's status, with slaves' lag behind their group's master.
pub async fn probe_all(plan: &Plan) -> Vec<NodeStatus> {
    let mut statuses = Vec::new();
    for node in &plan.nodes {
        statuses.push(probe(node).await);
    }
    let masters: BTreeMap<String, u64> = statuses
        .iter()
        .filter(|status| status.role.as_deref() == Some("master") && status.kind == Kind::Broker)
        .filter_map(|status| Some((status.group.clone()?, status.committed_offset?)))
        .collect();
    for status in &mut statuses {
        if status.role.as_deref() == Some("slave")
            && let (Some(group), Some(held)) = (&status.group, status.committed_offset)
            && let Some(master) = masters.get(group)
        {
            status.lag_bytes = Some(master.saturating_sub(held));
        }
    }
    statuses
}

fn print_table(statuses: &[NodeStatus]) {
    let leaders: BTreeSet<u64> = statuses.iter().filter_map(|status| status.leader).collect();
    let leader = match leaders.len() {
        0 => "none (no nameserver knows a leader: is a majority running?)".to_owned(),
        1 => {
            let id = leaders.first().expect("one");
            format!("ns-{id} (as every running nameserver sees it)")
        }
        _ => format!("nameservers disagree: {leaders:?} (an election is under way)"),
    };
    println!("raft leader: {leader}");
    println!(
        "{:<16} {:<10} {:<8} {:<9} {:<8} {:<9} {:<10} {:<22} LOG",
        "NODE", "KIND", "IDC", "PID", "HEALTH", "ROLE", "LAG", "ADDR"
    );
    for status in statuses {
        let role = status.role.clone().unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:<10} {:<8} {:<9} {:<8} {:<9} {:<10} {:<22} {}",
            status.name,
            status.kind.word(),
            status.idc,
            status.pid.map_or("-".into(), |pid| pid.to_string()),
            match (status.pid, status.healthy) {
                (None, _) => "DOWN",
                (Some(_), true) => "ok",
                (Some(_), false) => "starting",
            },
            role,
            status.lag_bytes.map_or("-".into(), |lag| lag.to_string()),
            status
                .listen
                .or(status.http)
                .map_or("-".into(), |addr| addr.to_string()),
            status.log.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

fn bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} nodes healthy  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Waits until `ready` holds for `node`'s status (up to `timeout`), failing at once if it exits.
async fn wait_until(
    node: &Node,
    what: &str,
    timeout: Duration,
    progress: &ProgressBar,
    ready: impl Fn(&NodeStatus) -> bool,
) -> Result<NodeStatus> {
    progress.set_message(format!("waiting for {} ({what})", node.name));
    let deadline = Instant::now() + timeout;
    loop {
        let status = probe(node).await;
        if ready(&status) {
            return Ok(status);
        }
        if status.pid.is_none() {
            bail!(
                "{} exited while starting; last lines of {}:\n    {}",
                node.name,
                node.log_path().display(),
                log_tail(node, 15)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} is not {what} after {} s; last lines of {}:\n    {}",
                node.name,
                timeout.as_secs(),
                node.log_path().display(),
                log_tail(node, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `meridian cluster up`.
pub async fn up(args: UpArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading the cluster spec {}", args.config.display()))?;
    let spec = parse_spec(&text, &args.config.display().to_string())?;
    let plan = plan(&spec, &args.dir.dir)?;
    if args.dry_run {
        println!(
            "cluster spec {} is valid: {} processes under {}",
            args.config.display(),
            plan.nodes.len(),
            plan.dir.display()
        );
        for node in &plan.nodes {
            println!(
                "  {:<16} {:<10} idc {:<8} {}",
                node.name,
                node.kind.word(),
                node.idc,
                node.listen.or(node.http).map_or("-".into(), |addr| addr.to_string())
            );
        }
        return Ok(());
    }
    // A cluster dir is for one spec: restarting a stopped cluster is fine, a different spec over
    // its data is not.
    if exists(&plan.dir) {
        let kept = std::fs::read_to_string(plan.dir.join(SPEC_FILE))?;
        let running: Vec<&str> = plan
            .nodes
            .iter()
            .filter(|node| running_pid(node).is_some())
            .map(|node| node.name.as_str())
            .collect();
        if !running.is_empty() {
            bail!(
                "the cluster in {} is already running ({} of {} processes: {}): stop it first with `meridian cluster down --dir {}`, or use another --dir",
                plan.dir.display(),
                running.len(),
                plan.nodes.len(),
                running.join(", "),
                plan.dir.display()
            );
        }
        if kept != text {
            bail!(
                "{} holds a cluster made from another spec: use another --dir, or remove it first with `meridian cluster down --purge --dir {}`",
                plan.dir.display(),
                plan.dir.display()
            );
        }
    }
    // Every port must be free before anything starts.
    let mut taken = Vec::new();
    for node in &plan.nodes {
        for (addr, what) in [(node.listen, "listen"), (node.http, "http")] {
            if let Some(addr) = addr
                && let Err(error) = std::net::TcpListener::bind(addr)
            {
                taken.push(format!("{} {what} {addr}: {error}", node.name));
            }
        }
    }
    if !taken.is_empty() {
        bail!(
            "{} address(es) of the spec cannot be listened on; nothing was started (stop what uses them, or change the spec; every process runs on this machine, so use its addresses, e.g. 127.0.0.x):\n  - {}",
            taken.len(),
            taken.join("\n  - ")
        );
    }
    std::fs::create_dir_all(&plan.dir).with_context(|| format!("creating {}", plan.dir.display()))?;
    std::fs::write(plan.dir.join(SPEC_FILE), &text)?;
    for node in &plan.nodes {
        std::fs::create_dir_all(&node.dir).with_context(|| format!("creating {}", node.dir.display()))?;
        if let Some(config) = &node.config {
            let header = format!(
                "# Written by `meridian cluster up` from {}; edit the spec, not this file.\n",
                args.config.display()
            );
            std::fs::write(&node.config_path, header + &toml::to_string(config)?)
                .with_context(|| format!("writing {}", node.config_path.display()))?;
        }
    }
    println!(
        "starting cluster {}{} processes in {}",
        if plan.name.is_empty() {
            String::new()
        } else {
            format!("{}: ", plan.name)
        },
        plan.nodes.len(),
        plan.dir.display()
    );
    let progress = bar(plan.nodes.len());
    let started = Instant::now();
    let result = start_all(&plan, &progress).await;
    progress.finish_and_clear();
    if let Err(error) = result {
        eprintln!(
            "cluster up failed; stopping what it started (logs stay in {})",
            plan.dir.display()
        );
        for node in plan.nodes.iter().rev() {
            stop(node, libc::SIGTERM, Duration::from_secs(10)).await;
            let _ = std::fs::remove_file(node.pid_path());
        }
        return Err(error);
    }
    println!("cluster up in {:.1} s", started.elapsed().as_secs_f64());
    print_table(&probe_all(&plan).await);
    let services = meridian_nameserver::service::Services {
        tracer_http: plan.service_http(Kind::Tracer),
        query_http: plan.service_http(Kind::Query),
    };
    println!(
        "clients (or `eval \"$(meridian env --nameserver {})\"`):",
        plan.nameservers[0]
    );
    for line in crate::env_cmds::client_variables(&plan.nameservers, &services) {
        println!("  export {line}");
    }
    if let Some(console) = plan.service_http(Kind::Ui) {
        println!("console: http://{console}/");
    }
    println!("ready");
    Ok(())
}

async fn start_all(plan: &Plan, progress: &ProgressBar) -> Result<()> {
    let announce = |node: &Node, pid: u32| {
        say(
            progress,
            format!(
                "  started {:<16} {:<10} idc {:<8} pid {pid}",
                node.name,
                node.kind.word(),
                node.idc
            ),
        );
    };
    // Nameservers together: none elects a leader alone.
    let nameservers: Vec<&Node> = plan.nodes.iter().filter(|node| node.kind == Kind::Nameserver).collect();
    for node in &nameservers {
        announce(node, spawn(node)?);
    }
    for node in &nameservers {
        wait_until(
            node,
            "in a Raft cluster with a leader",
            START_TIMEOUT,
            progress,
            |status| status.healthy,
        )
        .await?;
        progress.inc(1);
    }
    // Broker groups: on a fresh cluster the master first (the first member to register is
    // elected), then its slaves; on a restart every member at once, and whoever the nameservers
    // elect is master.
    let brokers: Vec<&Node> = plan.nodes.iter().filter(|node| node.kind == Kind::Broker).collect();
    let groups: BTreeSet<&str> = brokers.iter().filter_map(|node| node.group.as_deref()).collect();
    let fresh = |group: &str| {
        !brokers
            .iter()
            .any(|node| node.group.as_deref() == Some(group) && node.dir.join("data").exists())
    };
    let fresh_groups: BTreeSet<&str> = groups.iter().copied().filter(|group| fresh(group)).collect();
    for node in brokers
        .iter()
        .filter(|node| node.master && fresh_groups.contains(node.group.as_deref().unwrap_or("")))
    {
        announce(node, spawn(node)?);
    }
    for node in brokers
        .iter()
        .filter(|node| node.master && fresh_groups.contains(node.group.as_deref().unwrap_or("")))
    {
        wait_until(
            node,
            "the writable master of its group",
            START_TIMEOUT,
            progress,
            |status| status.role.as_deref() == Some("master") && status.writable == Some(true),
        )
        .await?;
    }
    for node in &brokers {
        if running_pid(node).is_none() {
            announce(node, spawn(node)?);
        }
    }
    for group in &groups {
        let members: Vec<&&Node> = brokers
            .iter()
            .filter(|node| node.group.as_deref() == Some(*group))
            .collect();
        let deadline = Instant::now() + START_TIMEOUT;
        // Every member up, one writable master holding every other member in sync.
        loop {
            let mut statuses = Vec::new();
            for node in &members {
                statuses.push(probe(node).await);
            }
            if let Some(dead) = statuses.iter().position(|status| status.pid.is_none()) {
                let node = members[dead];
                bail!(
                    "{} exited while starting; last lines of {}:\n    {}",
                    node.name,
                    node.log_path().display(),
                    log_tail(node, 15)
                );
            }
            let master = statuses
                .iter()
                .find(|status| status.role.as_deref() == Some("master") && status.writable == Some(true));
            let slaves = statuses
                .iter()
                .filter(|status| status.role.as_deref() == Some("slave"))
                .count();
            progress.set_message(format!(
                "waiting for group {group}: {} master, {slaves} of {} slaves, {} in sync",
                master.map_or("no".into(), |status| status.name.clone()),
                members.len() - 1,
                master.map_or(0, |status| status.in_sync.len())
            ));
            if let Some(master) = master
                && slaves + 1 == members.len()
                && master.in_sync.len() + 1 == members.len()
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "broker group {group} is not serving after {} s (a master holding every slave in sync): {}; see the logs under {}",
                    START_TIMEOUT.as_secs(),
                    statuses
                        .iter()
                        .map(|status| format!("{} {}", status.name, status.role.as_deref().unwrap_or("no answer")))
                        .collect::<Vec<_>>()
                        .join(", "),
                    plan.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        progress.inc(members.len() as u64);
    }
    for node in plan
        .nodes
        .iter()
        .filter(|node| matches!(node.kind, Kind::Archiver | Kind::Tracer | Kind::Query))
    {
        announce(node, spawn(node)?);
    }
    for node in plan
        .nodes
        .iter()
        .filter(|node| matches!(node.kind, Kind::Archiver | Kind::Tracer | Kind::Query))
    {
        wait_until(node, "serving", START_TIMEOUT, progress, |status| status.healthy).await?;
        progress.inc(1);
    }
    // The console last: it reads everything above.
    for node in plan.nodes.iter().filter(|node| node.kind == Kind::Ui) {
        announce(node, spawn(node)?);
        wait_until(node, "serving", START_TIMEOUT, progress, |status| status.healthy).await?;
        progress.inc(1);
    }
    Ok(())
}

/// `meridian cluster down`.
pub async fn down(args: DownArgs) -> Result<()> {
    let plan = load(&args.dir.dir)?;
    // Clients of others first, the nameservers last so brokers' last heartbeats find them.
    let waves: [&[Kind]; 3] = [
        &[Kind::Ui, Kind::Query, Kind::Tracer, Kind::Archiver],
        &[Kind::Broker],
        &[Kind::Nameserver],
    ];
    let mut stopped = 0;
    let progress = bar(plan.nodes.len());
    for wave in waves {
        let running: Vec<(&Node, u32)> = plan
            .nodes
            .iter()
            .filter(|node| wave.contains(&node.kind))
            .filter_map(|node| Some((node, running_pid(node)?)))
            .collect();
        for (_, pid) in &running {
            signal(*pid, libc::SIGTERM);
        }
        for (node, pid) in running {
            progress.set_message(format!("stopping {}", node.name));
            if wait_gone(node, pid, Duration::from_secs(30)).await {
                say(&progress, format!("  stopped {:<16} pid {pid}", node.name));
            } else {
                say(
                    &progress,
                    format!(
                        "  killed  {:<16} pid {pid} (no exit within 30 s of SIGTERM; see {})",
                        node.name,
                        node.log_path().display()
                    ),
                );
            }
            stopped += 1;
            progress.inc(1);
        }
        for node in plan.nodes.iter().filter(|node| wave.contains(&node.kind)) {
            let _ = std::fs::remove_file(node.pid_path());
        }
    }
    progress.finish_and_clear();
    // Nothing may be left listening.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let held: Vec<String> = plan
            .nodes
            .iter()
            .flat_map(|node| {
                [node.listen, node.http]
                    .into_iter()
                    .flatten()
                    .map(move |addr| (node, addr))
            })
            .filter(|(_, addr)| std::net::TcpListener::bind(addr).is_err())
            .map(|(node, addr)| format!("{} {addr}", node.name))
            .collect();
        if held.is_empty() || Instant::now() >= deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !held.is_empty() {
        bail!(
            "every process is stopped but these addresses are still taken (by something else?): {}",
            held.join(", ")
        );
    }
    println!(
        "cluster in {} is down: {stopped} process(es) stopped, every port free",
        plan.dir.display()
    );
    if args.purge {
        std::fs::remove_dir_all(&plan.dir).with_context(|| format!("removing {}", plan.dir.display()))?;
        println!("removed {}", plan.dir.display());
    } else {
        println!(
            "data and logs stay in {}; `meridian cluster up` with the same spec and --dir starts it again",
            plan.dir.display()
        );
    }
    Ok(())
}

/// `meridian cluster kill NODE`.
pub async fn kill(args: KillArgs) -> Result<()> {
    let plan = load(&args.dir.dir)?;
    let node = plan.node(&args.node)?;
    let (sig, name) = if args.signal == "term" {
        (libc::SIGTERM, "SIGTERM")
    } else {
        (libc::SIGKILL, "SIGKILL")
    };
    match stop(node, sig, Duration::from_secs(30)).await {
        Some((pid, _)) => println!("{} (pid {pid}) stopped with {name}", node.name),
        None => bail!(
            "{} is not running; `meridian cluster restart {} --dir {}` starts it",
            node.name,
            node.name,
            plan.dir.display()
        ),
    }
    Ok(())
}

/// `meridian cluster restart NODE`.
pub async fn restart(args: RestartArgs) -> Result<()> {
    let plan = load(&args.dir.dir)?;
    let node = plan.node(&args.node)?;
    if let Some((pid, clean)) = stop(node, libc::SIGTERM, Duration::from_secs(30)).await {
        println!(
            "{} (pid {pid}) stopped{}",
            node.name,
            if clean {
                ""
            } else {
                " (killed: no exit within 30 s of SIGTERM)"
            }
        );
    }
    let pid = spawn(node)?;
    let progress = bar(1);
    let status = wait_until(node, "healthy", START_TIMEOUT, &progress, |status| status.healthy).await;
    progress.finish_and_clear();
    let status = status?;
    println!(
        "{} started again, pid {pid}{}",
        node.name,
        status.role.map_or(String::new(), |role| format!(", {role}"))
    );
    Ok(())
}

/// The process view of `meridian cluster status` when `dir` holds a cluster: prints the table
/// (or returns the statuses as JSON) and the nameservers to ask for the Raft view.
pub async fn process_view(dir: &Path, json: bool) -> Result<(Vec<String>, Option<Value>)> {
    let plan = load(dir)?;
    let statuses = probe_all(&plan).await;
    if json {
        return Ok((plan.nameservers.clone(), Some(serde_json::to_value(&statuses)?)));
    }
    let running = statuses.iter().filter(|status| status.pid.is_some()).count();
    let healthy = statuses.iter().filter(|status| status.healthy).count();
    println!(
        "cluster {}in {}: {running} of {} processes running, {healthy} healthy",
        if plan.name.is_empty() {
            String::new()
        } else {
            format!("{} ", plan.name)
        },
        plan.dir.display(),
        statuses.len()
    );
    print_table(&statuses);
    println!();
    Ok((plan.nameservers.clone(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
    }

    fn example_plan(name: &str) -> Plan {
        let path = examples().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        plan(
            &parse_spec(&text, name).unwrap(),
            Path::new("/tmp/meridian-cluster-test"),
        )
        .unwrap()
    }

    #[test]
    fn the_example_specs_plan_valid_clusters() {
        let one = example_plan("one-node.toml");
        let kinds: Vec<Kind> = one.nodes.iter().map(|node| node.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Nameserver,
                Kind::Broker,
                Kind::Archiver,
                Kind::Tracer,
                Kind::Query,
                Kind::Ui
            ]
        );

        let one_idc = example_plan("one-idc.toml");
        assert_eq!(one_idc.nodes.iter().filter(|node| node.kind == Kind::Broker).count(), 3);

        let two = example_plan("two-idc.toml");
        let count = |kind: Kind| two.nodes.iter().filter(|node| node.kind == kind).count();
        assert_eq!(
            (
                count(Kind::Nameserver),
                count(Kind::Broker),
                count(Kind::Archiver),
                count(Kind::Tracer),
                count(Kind::Query),
                count(Kind::Ui)
            ),
            (3, 6, 6, 1, 1, 1)
        );
        // The console reads every nameserver-, broker-, tracer- and query-HTTP address of the plan.
        let ui = two.nodes.iter().find(|node| node.kind == Kind::Ui).unwrap();
        let console: crate::ui_cmd::UiConfig = toml::Value::Table(ui.config.clone().unwrap()).try_into().unwrap();
        assert_eq!(console.nameserver_http.as_deref(), Some("127.0.0.11:8080"));
        assert_eq!(console.broker_http.as_ref().map(Vec::len), Some(6));
        assert_eq!(console.tracer_http.as_deref(), Some("127.0.0.41:8090"));
        assert_eq!(console.query_http.as_deref(), Some("127.0.0.51:8095"));
        assert_eq!(console.listen, Some("127.0.0.61:8088".parse().unwrap()));
        let idcs: BTreeSet<&str> = two.nodes.iter().map(|node| node.idc.as_str()).collect();
        assert_eq!(idcs, BTreeSet::from(["dc1", "dc2", "witness"]));
        // Each group: the master and a slave in one IDC, a slave in the other.
        for group in ["broker-a", "broker-b"] {
            let members: Vec<&Node> = two
                .nodes
                .iter()
                .filter(|node| node.kind == Kind::Broker && node.group.as_deref() == Some(group))
                .collect();
            let master = members.iter().find(|node| node.master).unwrap();
            let beside = members.iter().filter(|node| node.idc == master.idc).count();
            assert_eq!((members.len(), beside), (3, 2), "{group}");
        }
        // Masters start before any slave.
        let first_slave = two
            .nodes
            .iter()
            .position(|node| node.kind == Kind::Broker && !node.master)
            .unwrap();
        assert!(
            two.nodes[..first_slave]
                .iter()
                .filter(|node| node.kind == Kind::Broker)
                .all(|node| node.master)
        );
        // The generated configs are what the services load.
        let broker = two.nodes.iter().find(|node| node.name == "a-0").unwrap();
        let config = BrokerConfig::deserialize(toml::Value::Table(broker.config.clone().unwrap())).unwrap();
        assert_eq!(config.nameservers.len(), 3);
        assert_eq!(config.replication.replicas, 3);
        assert_eq!(config.data_dir, Path::new("/tmp/meridian-cluster-test/a-0/data"));
    }

    #[test]
    fn the_deploy_configs_load_and_validate_as_each_services_config() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        for dir in ["k8s", "systemd"] {
            for entry in std::fs::read_dir(deploy.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.ends_with(".toml") {
                    continue;
                }
                let result = if name.starts_with("nameserver") {
                    crate::config::load::<NameserverConfig>("deploy", Some(&path))
                        .and_then(|config| Ok(config.validate()?))
                } else if name.starts_with("broker") {
                    crate::config::load::<BrokerConfig>("deploy", Some(&path)).and_then(|config| Ok(config.validate()?))
                } else if name.starts_with("tracer") {
                    crate::config::load::<TracerConfig>("deploy", Some(&path)).and_then(|config| Ok(config.validate()?))
                } else if name.starts_with("query") {
                    crate::config::load::<QueryServiceConfig>("deploy", Some(&path))
                        .and_then(|config| config.query.validate().map_err(anyhow::Error::msg))
                } else if name.starts_with("ui") {
                    std::fs::read_to_string(&path)
                        .map_err(anyhow::Error::from)
                        .and_then(|text| Ok(toml::from_str::<crate::ui_cmd::UiConfig>(&text)?))
                        .and_then(|config| config.validate())
                } else {
                    panic!("deploy/{dir}/{name}: no service config of that name");
                };
                result.unwrap_or_else(|error| panic!("deploy/{dir}/{name}: {error:#}"));
            }
        }
    }

    const GOOD: &str = r#"
idcs = ["dc1", "dc2"]
[[nameservers]]
id = 1
idc = "dc1"
listen = "127.0.0.11:7800"
http = "127.0.0.11:8080"
[[broker_groups]]
name = "broker-a"
ack_policy = "idc_safe"
[[broker_groups.members]]
name = "a-0"
role = "master"
idc = "dc1"
listen = "127.0.0.21:7911"
http = "127.0.0.21:8081"
[[broker_groups.members]]
name = "a-1"
role = "slave"
idc = "dc2"
listen = "127.0.0.22:7911"
http = "127.0.0.22:8081"
"#;

    fn problems(text: &str) -> String {
        let spec = parse_spec(text, "test").unwrap();
        plan(&spec, Path::new("/tmp/x")).unwrap_err().to_string()
    }

    #[test]
    fn bad_specs_are_refused_with_every_reason() {
        plan(&parse_spec(GOOD, "good").unwrap(), Path::new("/tmp/x")).unwrap();

        let duplicate = GOOD.replace("127.0.0.22:8081", "127.0.0.21:7911");
        let error = problems(&duplicate);
        assert!(
            error.contains("duplicate port: a-1 http and a-0 listen both use 127.0.0.21:7911"),
            "{error}"
        );
        assert!(error.contains("nothing was started"), "{error}");
        let any_ip = GOOD.replace("127.0.0.22:8081", "0.0.0.0:8080");
        assert!(
            problems(&any_ip).contains("duplicate port"),
            "0.0.0.0 clashes with every address"
        );

        let unknown = GOOD.replace("idc = \"dc2\"", "idc = \"dc3\"");
        let error = problems(&unknown);
        assert!(
            error.contains("broker \"a-1\" of broker group \"broker-a\" is in IDC \"dc3\", which is not in idcs"),
            "{error}"
        );

        let masterless = GOOD.replace("role = \"master\"", "role = \"slave\"");
        let error = problems(&masterless);
        assert!(error.contains("broker group \"broker-a\" has no master"), "{error}");

        let two_masters = GOOD.replace("role = \"slave\"", "role = \"master\"");
        assert!(problems(&two_masters).contains("has 2 masters (a-0, a-1)"));

        let one_idc = GOOD.replace("idc = \"dc2\"\nlisten", "idc = \"dc1\"\nlisten");
        assert!(problems(&one_idc).contains("no member is outside the master's IDC"));

        let bad_policy = GOOD.replace("idc_safe", "most");
        assert!(problems(&bad_policy).contains("ack_policy \"most\" is not one of"));

        // A typo in an override is caught by the service's own config.
        let typo = format!("{GOOD}\n[overrides.broker.store]\nflush_mod = \"sync\"\n");
        let error = problems(&typo);
        assert!(error.contains("flush_mod"), "{error}");

        // Several problems are reported together.
        let both = unknown.replace("127.0.0.22:8081", "127.0.0.21:7911");
        assert!(problems(&both).contains("2 problem(s)"));

        let unknown_key = format!("{GOOD}\nbrokers = 3\n");
        let error = format!("{:#}", parse_spec(&unknown_key, "typo.toml").unwrap_err());
        assert!(error.contains("brokers"), "{error}");
    }

    #[test]
    fn overrides_merge_into_tables_from_the_cluster_to_the_member() {
        let text = format!(
            "{}\n[overrides.broker]\nheartbeat_interval_ms = 200\n[overrides.broker.store]\nsegment_size = 67108864\n",
            GOOD.replace(
                "http = \"127.0.0.22:8081\"",
                "http = \"127.0.0.22:8081\"\noverrides = { advertise_addr = \"127.0.0.99:1\", store = { flush_mode = \"sync\" } }"
            )
        );
        let plan = plan(&parse_spec(&text, "test").unwrap(), Path::new("/tmp/x")).unwrap();
        let config = |name: &str| {
            let node = plan.nodes.iter().find(|node| node.name == name).unwrap();
            BrokerConfig::deserialize(toml::Value::Table(node.config.clone().unwrap())).unwrap()
        };
        let (a0, a1) = (config("a-0"), config("a-1"));
        assert_eq!((a0.heartbeat_interval_ms, a0.store.segment_size), (200, 64 << 20));
        assert_eq!(a1.advertise_addr.as_deref(), Some("127.0.0.99:1"));
        assert_eq!(
            a1.store.segment_size,
            64 << 20,
            "a member's table merges, it does not replace"
        );
        assert_ne!(a0.store.flush_mode, a1.store.flush_mode);
    }
}
