//! `meridian inspect health`: one report of the cluster's health, one line per check with PASS,
//! WARN or FAIL and the figure against its threshold; the command exits non-zero on any FAIL.
//!
//! It reads only the services' HTTP APIs: a nameserver's `GET /api/cluster` (the Raft view and
//! every nameserver's HTTP address, each then asked `GET /api/nameserver/health`), its
//! `GET /api/brokers` (broker groups, members, roles, data centers, liveness and offsets), and
//! every broker's `GET /api/health` and `GET /api/broker/stats` (rates and disk). With
//! `--canary` it also sends one probe message through every broker group of the canary topic and
//! consumes it back ([`canary`]). Start reading at [`health`]; the threshold rules are the pure
//! functions under "Checks", unit-tested at the bottom.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::nameservers::NameserverAddrs;

/// `meridian inspect`.
#[derive(Debug, clap::Subcommand)]
pub enum InspectCommand {
    /// Check the cluster: nameservers and Raft, node counts by role and data center, every
    /// broker group's master, write and read TPS, disk free, replication lag, and with --canary
    /// a probe message through every broker group. Exits 1 when any check FAILs.
    Health(HealthArgs),
}

/// `meridian inspect health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// A nameserver's HTTP address (`meridian dev` prints it as `http`).
    #[arg(long, env = "MERIDIAN_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Every broker's HTTP API (health, stats), comma-separated. Default: the --http address
    /// (`meridian dev` serves its broker there).
    #[arg(long = "broker-http", env = "MERIDIAN_BROKER_HTTP", value_delimiter = ',')]
    brokers_http: Vec<SocketAddr>,
    /// Nameservers expected to answer. Default: every member of the Raft membership.
    #[arg(long)]
    expect_nameservers: Option<usize>,
    /// Broker groups expected, each with a live master. Default: the groups registered.
    #[arg(long)]
    expect_groups: Option<usize>,
    /// Alive slaves expected across all groups. Default: the slaves registered.
    #[arg(long)]
    expect_slaves: Option<usize>,
    /// Alive brokers expected in a data center, as IDC=COUNT (repeat or comma-separate).
    /// Default: the brokers registered in each data center.
    #[arg(long = "expect-idc", value_delimiter = ',', value_parser = parse_idc_count)]
    expect_idc: Vec<(String, usize)>,
    /// FAIL a broker whose filesystem has less than this share free, in percent.
    #[arg(long, default_value_t = 10.0)]
    min_disk_free_pct: f64,
    /// WARN a broker whose filesystem has less than this share free, in percent.
    #[arg(long, default_value_t = 20.0)]
    warn_disk_free_pct: f64,
    /// FAIL a slave this many commitlog bytes or more behind its master.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    max_replication_lag_bytes: u64,
    /// WARN a slave this many commitlog bytes or more behind its master.
    #[arg(long, default_value_t = 1024 * 1024)]
    warn_replication_lag_bytes: u64,
    /// WARN a broker storing more messages per second than this over the last minute (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    max_write_tps: f64,
    /// WARN a broker returning more messages per second than this over the last minute (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    max_read_tps: f64,
    /// Also send a probe message through every broker group of the canary topic and consume it
    /// back, timing each round trip.
    #[arg(long)]
    canary: bool,
    /// The topic the canary probes (an approved topic placed on every broker group).
    #[arg(long, default_value = CANARY_TOPIC)]
    canary_topic: String,
    /// FAIL a broker group whose probe is not consumed back within this many milliseconds.
    #[arg(long, default_value_t = 5_000)]
    canary_timeout_ms: u64,
    #[command(flatten)]
    nameservers: NameserverAddrs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The canary's default topic.
pub const CANARY_TOPIC: &str = "meridian-canary";

fn parse_idc_count(text: &str) -> Result<(String, usize), String> {
    let (idc, count) = text
        .split_once('=')
        .ok_or_else(|| format!("--expect-idc {text:?}: write IDC=COUNT, e.g. dc1=3"))?;
    let count = count
        .parse()
        .map_err(|_| format!("--expect-idc {text:?}: the count {count:?} is not a whole number"))?;
    Ok((idc.to_owned(), count))
}

/// Runs `meridian inspect`.
pub async fn inspect(command: InspectCommand) -> Result<()> {
    match command {
        InspectCommand::Health(args) => health(args).await,
    }
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub status: Status,
    /// What was checked (`nameservers`, `raft`, `master`, `disk`, ...).
    pub check: String,
    /// Of what: a nameserver, a broker group, a member, a broker's HTTP address.
    pub subject: String,
    /// The figure and its threshold, or why it could not be measured.
    pub detail: String,
}

fn check(status: Status, check: &str, subject: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        status,
        check: check.to_owned(),
        subject: subject.into(),
        detail: detail.into(),
    }
}

/// Runs `meridian inspect health`.
pub async fn health(args: HealthArgs) -> Result<()> {
    let mut checks = Vec::new();
    let http = args.http;
    let Some(cluster) = crate::probe::http_json(http, "/api/cluster").await else {
        bail!("nameserver HTTP API at {http} did not answer GET /api/cluster: pass a nameserver's --http address");
    };
    checks.extend(nameserver_checks(&args, &cluster).await);
    match crate::probe::http_json(http, "/api/brokers").await {
        Some(Value::Array(groups)) => {
            checks.extend(topology_checks(&args, &groups));
            checks.extend(replication_checks(&args, &groups));
        }
        _ => checks.push(check(
            Status::Fail,
            "brokers",
            http.to_string(),
            "GET /api/brokers did not answer: the broker groups cannot be checked",
        )),
    }
    let brokers_http = if args.brokers_http.is_empty() {
        vec![http]
    } else {
        args.brokers_http.clone()
    };
    for addr in brokers_http {
        checks.extend(broker_checks(&args, addr).await);
    }
    if args.canary {
        checks.extend(canary(&args).await);
    }
    report(&checks, args.json)
}

fn report(checks: &[Check], json: bool) -> Result<()> {
    let count = |status| checks.iter().filter(|check| check.status == status).count();
    let (pass, warn, fail) = (count(Status::Pass), count(Status::Warn), count(Status::Fail));
    if json {
        let report = serde_json::json!({"checks": checks, "pass": pass, "warn": warn, "fail": fail});
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{:<6} {:<16} {:<34} DETAIL", "STATUS", "CHECK", "SUBJECT");
        for check in checks {
            println!(
                "{:<6} {:<16} {:<34} {}",
                check.status.to_string(),
                check.check,
                check.subject,
                check.detail
            );
        }
        println!("{pass} passed, {warn} warned, {fail} failed");
    }
    if fail > 0 {
        let failed: Vec<String> = checks
            .iter()
            .filter(|check| check.status == Status::Fail)
            .map(|check| format!("{} {}", check.check, check.subject))
            .collect();
        bail!("{fail} health check(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Nameservers and Raft

async fn nameserver_checks(args: &HealthArgs, cluster: &Value) -> Vec<Check> {
    let mut checks = Vec::new();
    let nodes = cluster["nodes"].as_array().cloned().unwrap_or_default();
    let answering = cluster["node_id"].as_u64();
    let mut up = 0;
    let mut voters = 0;
    let mut voters_up = 0;
    for node in &nodes {
        let id = node["id"].as_u64().unwrap_or(0);
        let voter = node["voter"].as_bool().unwrap_or(false);
        voters += usize::from(voter);
        let subject = format!("node {id} {}", node["addr"].as_str().unwrap_or(""));
        let http_addr = node["http_addr"].as_str().unwrap_or("");
        // The node that answered /api/cluster is up; it may not know its own advertised address.
        let addr = if Some(id) == answering {
            Some(args.http)
        } else {
            http_addr.parse::<SocketAddr>().ok()
        };
        let Some(addr) = addr else {
            checks.push(check(
                Status::Warn,
                "nameserver",
                subject,
                format!("no HTTP address registered ({http_addr:?}): cannot ask it"),
            ));
            continue;
        };
        match crate::probe::http_get(addr, "/api/nameserver/health").await {
            Some((status, body)) => {
                let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let role = answer["role"].as_str().unwrap_or("?").to_owned();
                up += 1;
                voters_up += usize::from(voter);
                let (verdict, detail) = if status == 200 {
                    (Status::Pass, format!("up at {addr}, {role}"))
                } else if let Some(cut_off) = answer["cut_off"].as_str() {
                    (Status::Warn, format!("up at {addr}, {role}, but {cut_off}"))
                } else {
                    (
                        Status::Warn,
                        format!("up at {addr}, {role}, but knows no leader (HTTP {status})"),
                    )
                };
                checks.push(check(verdict, "nameserver", subject, detail));
            }
            None => checks.push(check(
                Status::Fail,
                "nameserver",
                subject,
                format!("no answer at {addr} within 2 s: is the nameserver running?"),
            )),
        }
    }
    let expected = args.expect_nameservers.unwrap_or(nodes.len());
    checks.push(count_check("nameservers", "cluster", up, expected));
    checks.push(raft_check(
        cluster["leader"].as_u64(),
        cluster["term"].as_u64().unwrap_or(0),
        voters_up,
        voters,
    ));
    checks
}

/// A Raft leader and a quorum of voters answering: FAIL without either.
pub fn raft_check(leader: Option<u64>, term: u64, voters_up: usize, voters: usize) -> Check {
    let quorum = voters / 2 + 1;
    let figure = format!("{voters_up} of {voters} voters up, quorum {quorum}, term {term}");
    match leader {
        None => check(Status::Fail, "raft", "leader", format!("no leader; {figure}")),
        Some(_) if voters_up < quorum => check(Status::Fail, "raft", "quorum", format!("below quorum: {figure}")),
        Some(leader) => check(Status::Pass, "raft", "leader", format!("node {leader} leads; {figure}")),
    }
}

/// `found` alive against `expected`: FAIL below it, PASS at or above.
pub fn count_check(what: &str, subject: &str, found: usize, expected: usize) -> Check {
    let status = if found < expected { Status::Fail } else { Status::Pass };
    check(status, what, subject, format!("{found} alive, expected {expected}"))
}

// ---------------------------------------------------------------------------------------------
// Broker groups: masters, members, counts by role and data center, replication lag

fn members(group: &Value) -> Vec<Value> {
    group["members"].as_array().cloned().unwrap_or_default()
}

fn topology_checks(args: &HealthArgs, groups: &[Value]) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut groups_with_master = 0;
    let mut slaves_registered = 0;
    let mut slaves_alive = 0;
    let mut idcs: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for group in groups {
        let name = group["name"].as_str().unwrap_or("?");
        let master = group["master"].as_str();
        let master_alive = master.is_some_and(|master| {
            members(group)
                .iter()
                .any(|member| member["name"].as_str() == Some(master) && member["alive"].as_bool() == Some(true))
        });
        checks.push(master_check(name, master, master_alive));
        groups_with_master += usize::from(master_alive);
        for member in members(group) {
            let member_name = member["name"].as_str().unwrap_or("?");
            let alive = member["alive"].as_bool() == Some(true);
            let role = member["role"].as_str().unwrap_or("?");
            let idc = member["idc"].as_str().unwrap_or("").to_owned();
            let idc = if idc.is_empty() { "(none)".to_owned() } else { idc };
            let entry = idcs.entry(idc.clone()).or_default();
            entry.0 += 1;
            entry.1 += usize::from(alive);
            if role != "master" {
                slaves_registered += 1;
                slaves_alive += usize::from(alive);
            }
            let heard = member["last_heartbeat_ago_ms"]
                .as_u64()
                .map_or("never heard".to_owned(), |ms| format!("last heartbeat {ms} ms ago"));
            let subject = format!("{name}/{member_name}");
            let addr = member["addr"].as_str().unwrap_or("");
            checks.push(if alive {
                check(
                    Status::Pass,
                    "broker",
                    subject,
                    format!("{role} in {idc} at {addr}, {heard}"),
                )
            } else {
                check(
                    Status::Fail,
                    "broker",
                    subject,
                    format!("{role} in {idc} at {addr} is down: {heard}"),
                )
            });
        }
    }
    checks.push(count_check(
        "groups",
        "with a live master",
        groups_with_master,
        args.expect_groups.unwrap_or(groups.len()),
    ));
    checks.push(count_check(
        "slaves",
        "all groups",
        slaves_alive,
        args.expect_slaves.unwrap_or(slaves_registered),
    ));
    let expected_idcs: BTreeMap<&str, usize> = args.expect_idc.iter().map(|(idc, n)| (idc.as_str(), *n)).collect();
    for (idc, expected) in &expected_idcs {
        if !idcs.contains_key(*idc) {
            checks.push(count_check("idc", idc, 0, *expected));
        }
    }
    for (idc, (registered, alive)) in &idcs {
        let expected = expected_idcs.get(idc.as_str()).copied().unwrap_or(*registered);
        checks.push(count_check("idc", idc, *alive, expected));
    }
    checks
}

/// A broker group with a live master passes; one without (none elected, or the elected one
/// silent) fails, naming the group.
pub fn master_check(group: &str, master: Option<&str>, master_alive: bool) -> Check {
    match (master, master_alive) {
        (Some(master), true) => check(Status::Pass, "master", group, format!("{master} is master and alive")),
        (Some(master), false) => check(
            Status::Fail,
            "master",
            group,
            format!("master {master} is not alive: the group takes no writes until the controller elects another"),
        ),
        (None, _) => check(
            Status::Fail,
            "master",
            group,
            "no master elected: the group takes no writes (see `meridian cluster status`)",
        ),
    }
}

fn replication_checks(args: &HealthArgs, groups: &[Value]) -> Vec<Check> {
    let mut checks = Vec::new();
    for group in groups {
        let name = group["name"].as_str().unwrap_or("?");
        let all = members(group);
        let Some(master) = all.iter().find(|member| member["role"].as_str() == Some("master")) else {
            continue;
        };
        let master_offset = master["max_offset"].as_u64().unwrap_or(0);
        for slave in all.iter().filter(|member| member["role"].as_str() != Some("master")) {
            let subject = format!("{name}/{}", slave["name"].as_str().unwrap_or("?"));
            let slave_offset = slave["max_offset"].as_u64().unwrap_or(0);
            checks.push(lag_check(
                &subject,
                master_offset.saturating_sub(slave_offset),
                args.warn_replication_lag_bytes,
                args.max_replication_lag_bytes,
            ));
        }
    }
    checks
}

/// A slave's bytes behind its master: WARN at `warn` or more, FAIL at `fail` or more.
pub fn lag_check(subject: &str, behind: u64, warn: u64, fail: u64) -> Check {
    let status = if behind >= fail {
        Status::Fail
    } else if behind >= warn {
        Status::Warn
    } else {
        Status::Pass
    };
    check(
        status,
        "replication lag",
        subject,
        format!("{behind} bytes behind its master (warn at {warn}, fail at {fail})"),
    )
}

// ---------------------------------------------------------------------------------------------
// Brokers' own figures: health, TPS, disk

async fn broker_checks(args: &HealthArgs, addr: SocketAddr) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some((status, body)) = crate::probe::http_get(addr, "/api/health").await else {
        checks.push(check(
            Status::Fail,
            "broker health",
            addr.to_string(),
            "no answer within 2 s: is the broker running, and is this its --http address?",
        ));
        return checks;
    };
    let health: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let name = health["broker"]["name"].as_str().unwrap_or("?");
    let role = health["replication"]["role"].as_str().unwrap_or("?");
    let subject = format!("{name} {role} {addr}");
    if status == 200 && health["status"] == "ok" {
        checks.push(check(Status::Pass, "broker health", &subject, "status ok"));
    } else {
        let why = health["store_failure"]
            .as_str()
            .unwrap_or("its health answer is not ok");
        checks.push(check(
            Status::Fail,
            "broker health",
            &subject,
            format!("HTTP {status}: {why} (restart the broker once the disk is fixed)"),
        ));
    }
    let Some(stats) = crate::probe::http_json(addr, "/api/broker/stats").await else {
        checks.push(check(
            Status::Fail,
            "broker stats",
            &subject,
            "GET /api/broker/stats did not answer",
        ));
        return checks;
    };
    checks.push(tps_check(
        "write tps",
        &subject,
        stats["put_tps_1m"].as_f64(),
        args.max_write_tps,
    ));
    checks.push(tps_check(
        "read tps",
        &subject,
        stats["get_tps_1m"].as_f64(),
        args.max_read_tps,
    ));
    let disk = &stats["disk"];
    checks.push(disk_check(
        &subject,
        disk["free_bytes"].as_u64(),
        disk["total_bytes"].as_u64(),
        args.warn_disk_free_pct,
        args.min_disk_free_pct,
    ));
    checks
}

/// A rate over the last minute against its ceiling (`max` 0: none). A broker sampled fewer than
/// twice has no rate yet: WARN.
pub fn tps_check(what: &str, subject: &str, rate: Option<f64>, max: f64) -> Check {
    let limit = if max > 0.0 {
        format!("limit {max:.1}")
    } else {
        "no limit".to_owned()
    };
    match rate {
        None => check(
            Status::Warn,
            what,
            subject,
            "no rate yet: the broker has sampled fewer than two times",
        ),
        Some(rate) if max > 0.0 && rate > max => check(
            Status::Warn,
            what,
            subject,
            format!("{rate:.1} msg/s over the last minute, {limit}"),
        ),
        Some(rate) => check(
            Status::Pass,
            what,
            subject,
            format!("{rate:.1} msg/s over the last minute, {limit}"),
        ),
    }
}

/// The share of the broker's filesystem free: FAIL under `fail_pct`, WARN under `warn_pct`.
pub fn disk_check(subject: &str, free: Option<u64>, total: Option<u64>, warn_pct: f64, fail_pct: f64) -> Check {
    let (Some(free), Some(total)) = (free, total) else {
        return check(
            Status::Warn,
            "disk free",
            subject,
            "not measured yet (the broker measures once a minute)",
        );
    };
    if total == 0 {
        return check(Status::Warn, "disk free", subject, "the filesystem reports a size of 0");
    }
    let pct = free as f64 * 100.0 / total as f64;
    let status = if pct < fail_pct {
        Status::Fail
    } else if pct < warn_pct {
        Status::Warn
    } else {
        Status::Pass
    };
    let gib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0 * 1024.0);
    check(
        status,
        "disk free",
        subject,
        format!(
            "{pct:.1}% free ({:.1} of {:.1} GiB; warn under {warn_pct}%, fail under {fail_pct}%)",
            gib(free),
            gib(total)
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Canary

/// The consumer group the canary pulls its probes back with (approved for the canary topic).
pub const CANARY_GROUP: &str = "meridian-canary";

/// Sends one probe message through every broker group and consumes it back, one check per
/// group with the round trip's latency. Each group is probed at its live master directly (a
/// route from that broker alone), so a group the others could cover for still fails by name.
async fn canary(args: &HealthArgs) -> Vec<Check> {
    let Some(Value::Array(groups)) = crate::probe::http_json(args.http, "/api/brokers").await else {
        return vec![check(
            Status::Fail,
            "canary",
            "brokers",
            "GET /api/brokers did not answer: nothing to probe",
        )];
    };
    let timeout = Duration::from_millis(args.canary_timeout_ms);
    let mut checks = Vec::new();
    for group in &groups {
        let name = group["name"].as_str().unwrap_or("?");
        let master = group["master"].as_str();
        let addr = members(group)
            .into_iter()
            .find(|member| {
                master.is_some() && member["name"].as_str() == master && member["alive"].as_bool() == Some(true)
            })
            .and_then(|member| member["addr"].as_str().map(str::to_owned));
        let Some(addr) = addr else {
            checks.push(check(
                Status::Fail,
                "canary",
                name,
                "no live master to send the probe to: the group takes no writes",
            ));
            continue;
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(timeout, probe(&addr, &args.canary_topic, name)).await;
        let elapsed = started.elapsed();
        checks.push(canary_check(
            name,
            &addr,
            outcome.unwrap_or_else(|_| Err(format!("not consumed back within {} ms", timeout.as_millis()))),
            elapsed,
            timeout,
        ));
    }
    checks
}

/// A probe's verdict: consumed back within `timeout` passes with its latency; otherwise FAIL
/// naming the group and why.
pub fn canary_check(
    group: &str,
    addr: &str,
    outcome: std::result::Result<(), String>,
    elapsed: Duration,
    timeout: Duration,
) -> Check {
    let ms = elapsed.as_secs_f64() * 1000.0;
    match outcome {
        Ok(()) if elapsed <= timeout => check(
            Status::Pass,
            "canary",
            group,
            format!(
                "probe sent to {addr} and consumed back in {ms:.1} ms (timeout {} ms)",
                timeout.as_millis()
            ),
        ),
        Ok(()) => check(
            Status::Fail,
            "canary",
            group,
            format!(
                "probe came back from {addr} in {ms:.1} ms, over the timeout of {} ms",
                timeout.as_millis()
            ),
        ),
        Err(why) => check(
            Status::Fail,
            "canary",
            group,
            format!("probe through {addr} failed: {why}"),
        ),
    }
}

/// Sends one probe to `topic` at the broker at `addr` and pulls it back from where it was stored.
async fn probe(addr: &str, topic: &str, group: &str) -> std::result::Result<(), String> {
    use meridian_client::{ConnectionPool, Message, ProducerConfig, PullConsumer, PullStatus, StaticRoute};
    let config = crate::credentials::client_config();
    let pool = ConnectionPool::new(config.clone());
    let route: std::sync::Arc<dyn meridian_client::RouteSource> =
        std::sync::Arc::new(StaticRoute::new(addr.to_owned(), pool.clone()));
    let producer = meridian_client::Producer::new(
        route.clone(),
        ProducerConfig {
            group: CANARY_GROUP.to_owned(),
            client: config.clone(),
            retries: 0,
            ..ProducerConfig::default()
        },
    );
    let consumer = PullConsumer::new(route, config, CANARY_GROUP);
    let result = async {
        let body = format!(
            "meridian canary probe of {group} at {}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis())
        );
        let sent = producer
            .send(Message::new(topic, body).with_key(group))
            .await
            .map_err(|error| format!("send to {topic}: {error}"))?;
        if sent.broker_name != group {
            return Err(format!("stored by broker group {} instead", sent.broker_name));
        }
        let mut offset = sent.queue_offset;
        loop {
            let pulled = consumer
                .pull(topic, sent.queue_id, offset, 32, Duration::from_millis(500))
                .await
                .map_err(|error| format!("pull from {topic} queue {}: {error}", sent.queue_id))?;
            if pulled.messages.iter().any(|message| message.msg_id() == sent.msg_id) {
                return Ok(());
            }
            if pulled.status == PullStatus::Found || pulled.status == PullStatus::OffsetMoved {
                offset = pulled.next_offset.max(offset);
            }
        }
    }
    .await;
    producer.shutdown().await;
    consumer.shutdown().await;
    pool.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_fails_under_the_threshold_and_warns_under_the_warning() {
        let gib = 1024 * 1024 * 1024;
        assert_eq!(
            disk_check("b", Some(50 * gib), Some(100 * gib), 20.0, 10.0).status,
            Status::Pass
        );
        assert_eq!(
            disk_check("b", Some(15 * gib), Some(100 * gib), 20.0, 10.0).status,
            Status::Warn
        );
        let failed = disk_check("b", Some(9 * gib), Some(100 * gib), 20.0, 10.0);
        assert_eq!(failed.status, Status::Fail);
        assert!(failed.detail.contains("9.0% free"), "{}", failed.detail);
        assert!(failed.detail.contains("fail under 10%"), "{}", failed.detail);
        assert_eq!(disk_check("b", None, None, 20.0, 10.0).status, Status::Warn);
        assert_eq!(disk_check("b", Some(0), Some(0), 20.0, 10.0).status, Status::Warn);
    }

    #[test]
    fn replication_lag_warns_then_fails_at_its_thresholds() {
        assert_eq!(lag_check("g/s", 0, 100, 1000).status, Status::Pass);
        assert_eq!(lag_check("g/s", 99, 100, 1000).status, Status::Pass);
        assert_eq!(lag_check("g/s", 100, 100, 1000).status, Status::Warn);
        let failed = lag_check("g/s", 1000, 100, 1000);
        assert_eq!(failed.status, Status::Fail);
        assert!(failed.detail.contains("1000 bytes behind"), "{}", failed.detail);
    }

    #[test]
    fn raft_needs_a_leader_and_a_quorum() {
        assert_eq!(raft_check(Some(1), 3, 3, 3).status, Status::Pass);
        assert_eq!(raft_check(Some(1), 3, 2, 3).status, Status::Pass);
        assert_eq!(raft_check(Some(1), 3, 1, 3).status, Status::Fail);
        assert_eq!(raft_check(None, 3, 3, 3).status, Status::Fail);
        assert_eq!(raft_check(Some(1), 1, 1, 1).status, Status::Pass);
        assert_eq!(raft_check(Some(1), 1, 2, 4).status, Status::Fail);
    }

    #[test]
    fn counts_fail_below_the_expected_topology() {
        assert_eq!(count_check("idc", "dc1", 3, 3).status, Status::Pass);
        assert_eq!(count_check("idc", "dc1", 4, 3).status, Status::Pass);
        let failed = count_check("idc", "dc1", 2, 3);
        assert_eq!(failed.status, Status::Fail);
        assert_eq!(failed.detail, "2 alive, expected 3");
    }

    #[test]
    fn a_group_without_a_live_master_fails_naming_it() {
        assert_eq!(master_check("broker-a", Some("a-0"), true).status, Status::Pass);
        let dead = master_check("broker-b", Some("b-0"), false);
        assert_eq!((dead.status, dead.subject.as_str()), (Status::Fail, "broker-b"));
        assert_eq!(master_check("broker-c", None, false).status, Status::Fail);
    }

    #[test]
    fn rates_warn_over_their_ceiling_and_before_the_first_samples() {
        assert_eq!(tps_check("write tps", "b", Some(10.0), 0.0).status, Status::Pass);
        assert_eq!(tps_check("write tps", "b", Some(10.0), 5.0).status, Status::Warn);
        assert_eq!(tps_check("write tps", "b", None, 0.0).status, Status::Warn);
    }

    #[test]
    fn a_probe_not_back_in_time_fails_naming_its_group() {
        let timeout = Duration::from_millis(100);
        let passed = canary_check("broker-a", "127.0.0.1:1", Ok(()), Duration::from_millis(5), timeout);
        assert_eq!(passed.status, Status::Pass);
        assert!(passed.detail.contains("5.0 ms"), "{}", passed.detail);
        let slow = canary_check("broker-a", "127.0.0.1:1", Ok(()), Duration::from_millis(150), timeout);
        assert_eq!(slow.status, Status::Fail);
        let lost = canary_check(
            "broker-b",
            "127.0.0.1:1",
            Err("not consumed back within 100 ms".into()),
            timeout,
            timeout,
        );
        assert_eq!((lost.status, lost.subject.as_str()), (Status::Fail, "broker-b"));
        assert!(lost.detail.contains("not consumed back"), "{}", lost.detail);
    }

    #[test]
    fn idc_counts_parse_and_refuse_what_is_not_one() {
        assert_eq!(parse_idc_count("dc1=3"), Ok(("dc1".to_owned(), 3)));
        assert!(parse_idc_count("dc1").unwrap_err().contains("IDC=COUNT"));
        assert!(parse_idc_count("dc1=x").unwrap_err().contains("not a whole number"));
    }
}
