//! The plan: [`plan`] checks a [`ClusterSpec`] and turns it into one [`Node`] per process, each
//! with the config it will run with, built as the service's own typed config and checked by the
//! service's own validation (duplicate addresses, unknown IDCs, a group without exactly one
//! master are found here, all at once, before anything starts).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use meridian_broker::BrokerConfig;
use meridian_broker::replication::{AckPolicy, OnIdcLost};
use meridian_broker::store::FlushMode;
use meridian_nameserver::NameserverConfig;
use meridian_proto::validate::validate_group;
use meridian_tracer::TracerConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::spec::{ClusterSpec, GroupSpec, MemberRole, MemberSpec, parse_spec};
use meridian_query::QueryServiceConfig;

/// The file under the cluster dir that holds the node secret (`auth = true`).
pub const NODE_SECRET_FILE: &str = "node.secret";
/// The file under the cluster dir that holds the administrator's secret (`auth = true`).
pub const ADMIN_SECRET_FILE: &str = "admin.secret";

/// The file under the cluster dir that holds the spec the cluster was made from.
pub(crate) const SPEC_FILE: &str = "cluster.toml";

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
    pub(crate) fn word(self) -> &'static str {
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
    pub(crate) config: Option<toml::Table>,
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

    pub(crate) fn args(&self) -> Vec<std::ffi::OsString> {
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
    /// The node secret file, when the spec turns authentication on.
    pub node_secret_file: Option<PathBuf>,
}

impl Plan {
    /// The HTTP address of the first node of `kind` (the tracer, the query service), if any.
    pub(crate) fn service_http(&self, kind: Kind) -> Option<String> {
        self.nodes
            .iter()
            .find(|node| node.kind == kind)
            .and_then(|node| node.http)
            .map(|http| http.to_string())
    }

    pub(crate) fn node(&self, name: &str) -> Result<&Node> {
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

pub(crate) fn merge(base: &mut toml::Table, overrides: &toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(more)) => merge(inner, more),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

pub(crate) fn table(value: Value) -> toml::Table {
    // The values built here are all representable in TOML (no nulls).
    match toml::Value::try_from(value) {
        Ok(toml::Value::Table(table)) => table,
        other => unreachable!("a JSON object of strings, numbers, lists and tables: {other:?}"),
    }
}

/// Parses a broker setting's config spelling (`quorum`, `sync`) into the broker's own type.
fn broker_setting<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, toml::de::Error> {
    T::deserialize(toml::Value::String(text.to_owned()))
}

/// Two bound addresses that cannot both be listened on.
pub(crate) fn clash(one: SocketAddr, other: SocketAddr) -> bool {
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
        // The broker's own rule for `broker_name` (its config is checked again below).
        if let Err(error) = validate_group(&group.name) {
            problems.push(format!("{who}: {error}"));
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
        // The broker's own types decide which spellings exist; the spec keeps the text so that a
        // wrong one is reported here with every other problem, not as a parse error alone.
        let ack_policy = broker_setting::<AckPolicy>(&group.ack_policy);
        if let Err(error) = &ack_policy {
            problems.push(format!(
                "{who}: ack_policy {:?} is not one of the broker's ack policies: {error}",
                group.ack_policy
            ));
        }
        if let Err(error) = broker_setting::<FlushMode>(&group.flush_mode) {
            problems.push(format!(
                "{who}: flush_mode {:?} is not one of the broker's flush modes: {error}",
                group.flush_mode
            ));
        }
        if let Err(error) = broker_setting::<OnIdcLost>(&group.on_idc_lost) {
            problems.push(format!(
                "{who}: on_idc_lost {:?} is not one of the broker's choices (degrade, stop): {error}",
                group.on_idc_lost
            ));
        }
        if ack_policy.is_ok_and(|policy| policy == AckPolicy::IdcSafe)
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
    let node_secret_file = spec.auth.then(|| dir.join(NODE_SECRET_FILE));
    if spec.auth {
        // Their HTTP APIs cannot check users yet (they learn none), and the console's sessions
        // belong to the nameserver that made them: refuse rather than leave them open.
        for (present, what) in [
            (spec.tracer.is_some(), "[tracer]"),
            (spec.query.is_some(), "[query]"),
            (spec.ui.is_some(), "[ui]"),
        ] {
            if present {
                problems.push(format!(
                    "auth = true with {what}: its HTTP API cannot check users yet, so it would serve anyone; remove {what} from the spec or set auth = false (docs/security.md)"
                ));
            }
        }
    }
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
        if let Some(path) = &node_secret_file {
            config.insert(
                "auth".into(),
                table(json!({"enabled": true, "node_secret_file": path})).into(),
            );
        }
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
        if let Some(path) = &node_secret_file {
            config.insert(
                "auth".into(),
                table(json!({"enabled": true, "node_secret_file": path})).into(),
            );
        }
        merge(&mut config, &spec.overrides.broker);
        merge(&mut config, &group.overrides);
        merge(&mut config, &member.overrides);
        let who = format!("broker {:?} of group {:?}", member.name, group.name);
        // The member name is also its node's folder: the broker's `member_name` rule (checked
        // by `BrokerConfig::validate` below) keeps it a safe path component.
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
        node_secret_file,
    })
}

pub(crate) fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        Ok(dir.to_owned())
    } else {
        Ok(std::env::current_dir().context("reading the current dir")?.join(dir))
    }
}

/// The plan of the cluster kept in `dir`.
pub(crate) fn load(dir: &Path) -> Result<Plan> {
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
