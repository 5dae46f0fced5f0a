//! What `meridian cluster status` shows of each process: [`probe`] asks a node's health endpoint
//! (role, leader, epoch, committed offset), [`probe_all`] adds each slave's lag behind its master,
//! and [`process_view`] prints the table.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::plan::{Kind, Node, Plan, load};
use super::processes::running_pid;
use crate::probe::{http_get, http_json};

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

pub(crate) async fn probe(node: &Node) -> NodeStatus {
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

pub(crate) fn print_table(statuses: &[NodeStatus]) {
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
