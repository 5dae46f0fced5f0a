//! The alert evaluator: one for the cluster, on the Raft leader. Every `evaluation_interval_ms`
//! the leader gathers its inputs (its own broker liveness, the brokers' lag reports from
//! `GET /api/broker/lag` and their client reports from `GET /api/broker/clients` on the
//! `broker_http` addresses), asks every rule which subjects break it
//! ([`conditions`]), keeps how long each has (a rule's `for_ms`), and writes a
//! [`Command::RecordAlert`] for each alert that starts firing or resolves ([`Pending::step`]). The
//! replicated alerts ([`crate::state::alerts`]) de-duplicate: a new leader reads what already
//! fires and neither fires it again nor forgets to resolve it. Each committed change goes to the
//! log and, as one JSON POST, to every webhook, retried with back-off (at least once while this
//! node runs).
//!
//! Start reading at [`AlertsConfig`] (the `[alerts]` table and its default rules), then [`run`].
//! Everything between the inputs and the commands is pure ([`conditions`], [`Pending`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::NameserverError;
use crate::service::NameserverService;
use crate::state::alerts::alert_key;
use crate::state::{Alert, AlertStatus, AlertUpdate, Command, MetadataState};

/// Severities a rule may have.
pub const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "condition")]
pub enum Condition {
    /// A registered broker this leader has not heard a heartbeat from within the broker timeout.
    BrokerDown,
    /// A consumer group's Burrow-style lag status on a topic is one of `statuses`.
    GroupLagStatus {
        /// E.g. `["STOP", "STALL"]`.
        statuses: Vec<String>,
    },
    /// A consumer group's oldest unconsumed message on a topic is older than `threshold_ms`.
    GroupTimeLag {
        /// In ms.
        threshold_ms: u64,
    },
    /// A consumer group is more than `threshold` messages behind on a topic.
    GroupLagMessages {
        /// In messages.
        threshold: u64,
    },
    /// A consumer went away without leaving (its process was killed or crashed, or it stopped
    /// heartbeating) and has not come back; resolves when it does, or when the brokers forget it
    /// (10 minutes).
    ConsumerOffline,
    /// A consumer heartbeats, but a queue it pulled has a backlog and it has neither pulled on nor
    /// committed for `threshold_ms` (RocketMQ's "maybe blocked").
    ConsumerUnresponsive {
        /// In ms.
        threshold_ms: u64,
    },
    /// Live members of one consumer group subscribe to different topics or tags, so some
    /// messages go to a member that filters them out.
    SubscriptionsDiffer,
    /// A producer sent messages over its large-message threshold (10 KB by default, set in the
    /// SDK) within the last `window_ms`; resolves once it has sent none for that long.
    LargeMessages {
        /// In ms.
        window_ms: u64,
    },
    /// A data center the nameservers declared lost (none of its brokers heard for
    /// `continuity.idc_lost_after_ms`); resolves when it is cleared.
    IdcLost,
    /// A broker group left without a master because no live replica provably holds every
    /// acknowledged message: it takes no writes (its slaves still serve reads); resolves once a
    /// master is elected.
    GroupReadOnly,
    /// A broker group's master acknowledging in degraded mode (replicas in a lost data center left
    /// out of its ack policy); resolves when it is back on its full policy.
    GroupDegraded,
}

/// Lag statuses a [`Condition::GroupLagStatus`] rule may name (`docs/governance.md`).
pub const LAG_STATUSES: [&str; 5] = ["OK", "WARN", "STALL", "STOP", "REWIND"];

/// One rule: a condition that must hold `for_ms` before its alert fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    /// Unique name, part of each alert's de-duplication key.
    pub name: String,
    /// What it watches (the `condition` key and its parameters, flattened).
    #[serde(flatten)]
    pub condition: Condition,
    /// How long the condition must hold before the alert fires, in ms (0: at once).
    #[serde(default)]
    pub for_ms: u64,
    /// `info`, `warning` or `critical`.
    pub severity: String,
}

// A rule as written: serde cannot refuse unknown fields of a flattened enum, so a rule is read
// flat, every field known, and its condition built from it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    condition: String,
    #[serde(default)]
    for_ms: u64,
    severity: String,
    statuses: Option<Vec<String>>,
    threshold_ms: Option<u64>,
    threshold: Option<u64>,
    window_ms: Option<u64>,
}

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Rule, String> {
        let name = &raw.name;
        let needs = |field: &str| format!("rule {name:?}: condition {:?} needs {field}", raw.condition);
        let condition = match raw.condition.as_str() {
            "broker_down" => Condition::BrokerDown,
            "group_lag_status" => Condition::GroupLagStatus {
                statuses: raw
                    .statuses
                    .clone()
                    .ok_or_else(|| needs("statuses (e.g. [\"STOP\", \"STALL\"])"))?,
            },
            "group_time_lag" => Condition::GroupTimeLag {
                threshold_ms: raw.threshold_ms.ok_or_else(|| needs("threshold_ms"))?,
            },
            "group_lag_messages" => Condition::GroupLagMessages {
                threshold: raw.threshold.ok_or_else(|| needs("threshold"))?,
            },
            "consumer_offline" => Condition::ConsumerOffline,
            "consumer_unresponsive" => Condition::ConsumerUnresponsive {
                threshold_ms: raw.threshold_ms.ok_or_else(|| needs("threshold_ms"))?,
            },
            "subscriptions_differ" => Condition::SubscriptionsDiffer,
            "large_messages" => Condition::LargeMessages {
                window_ms: raw.window_ms.ok_or_else(|| needs("window_ms"))?,
            },
            "idc_lost" => Condition::IdcLost,
            "group_read_only" => Condition::GroupReadOnly,
            "group_degraded" => Condition::GroupDegraded,
            other => {
                return Err(format!(
                    "rule {name:?}: condition {other:?} is unknown; use broker_down, group_lag_status, group_time_lag, group_lag_messages, consumer_offline, consumer_unresponsive, subscriptions_differ or large_messages"
                ));
            }
        };
        Ok(Rule {
            name: raw.name,
            condition,
            for_ms: raw.for_ms,
            severity: raw.severity,
        })
    }
}

/// The `[alerts]` table of the nameserver config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Run the evaluator (on the leader only).
    pub enabled: bool,
    /// How often the leader evaluates every rule, in ms.
    pub evaluation_interval_ms: u64,
    /// HTTP addresses (`host:port`) of the brokers whose lag and client reports the group and
    /// consumer rules read;
    /// `meridian dev` sets its own listener.
    pub broker_http: Vec<String>,
    /// Webhook URLs (`http://host:port/path`): each alert state change is POSTed to each as JSON.
    pub webhooks: Vec<String>,
    /// Delivery attempts per webhook and change (back-off doubling from 500 ms, at most 30 s).
    pub webhook_attempts: u32,
    /// The rules; empty: [`default_rules`].
    pub rules: Vec<Rule>,
    /// The node credential the brokers' reports are read with when `[auth]` is on (copied from
    /// `[auth]` at start; never sent to webhooks). `Debug` hides the secret.
    #[serde(skip)]
    pub node_credentials: Option<meridian_proto::auth::Credentials>,
    /// TLS to the brokers' HTTP APIs (the node's `[tls] ca_file`); `None`: plaintext.
    #[serde(skip)]
    pub tls: Option<std::sync::Arc<meridian_proto::tls::TlsClient>>,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            enabled: true,
            evaluation_interval_ms: 10_000,
            broker_http: Vec::new(),
            webhooks: Vec::new(),
            webhook_attempts: 8,
            rules: Vec::new(),
            node_credentials: None,
            tls: None,
        }
    }
}

/// The rules used when the config lists none.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule {
            name: "broker_down".into(),
            condition: Condition::BrokerDown,
            for_ms: 0,
            severity: "critical".into(),
        },
        Rule {
            name: "group_stopped".into(),
            condition: Condition::GroupLagStatus {
                statuses: vec!["STOP".into(), "STALL".into()],
            },
            for_ms: 60_000,
            severity: "warning".into(),
        },
        Rule {
            name: "group_time_lag".into(),
            condition: Condition::GroupTimeLag { threshold_ms: 300_000 },
            for_ms: 60_000,
            severity: "warning".into(),
        },
        Rule {
            name: "consumer_offline".into(),
            condition: Condition::ConsumerOffline,
            for_ms: 0,
            severity: "warning".into(),
        },
        Rule {
            name: "consumer_unresponsive".into(),
            condition: Condition::ConsumerUnresponsive { threshold_ms: 60_000 },
            for_ms: 0,
            severity: "warning".into(),
        },
        Rule {
            name: "subscriptions_differ".into(),
            // A rolling deploy that changes a subscription differs for a moment.
            condition: Condition::SubscriptionsDiffer,
            for_ms: 60_000,
            severity: "warning".into(),
        },
        Rule {
            name: "large_messages".into(),
            condition: Condition::LargeMessages { window_ms: 600_000 },
            for_ms: 0,
            severity: "info".into(),
        },
        Rule {
            name: "idc_lost".into(),
            condition: Condition::IdcLost,
            for_ms: 0,
            severity: "critical".into(),
        },
        Rule {
            name: "group_read_only".into(),
            condition: Condition::GroupReadOnly,
            for_ms: 0,
            severity: "critical".into(),
        },
        Rule {
            name: "group_degraded".into(),
            condition: Condition::GroupDegraded,
            for_ms: 0,
            severity: "warning".into(),
        },
    ]
}

impl AlertsConfig {
    /// The rules in force: the configured ones, or [`default_rules`].
    pub fn rules(&self) -> Vec<Rule> {
        if self.rules.is_empty() {
            default_rules()
        } else {
            self.rules.clone()
        }
    }

    /// Checks every setting; the error names the field, the value and the fix.
    pub fn validate(&self) -> Result<(), NameserverError> {
        let invalid = |message: String| Err(NameserverError::Config { message });
        if self.evaluation_interval_ms < 100 {
            return invalid(format!(
                "alerts.evaluation_interval_ms ({}) must be at least 100",
                self.evaluation_interval_ms
            ));
        }
        if self.webhook_attempts == 0 {
            return invalid("alerts.webhook_attempts must be at least 1".into());
        }
        for address in &self.broker_http {
            if address.parse::<SocketAddr>().is_err() {
                return invalid(format!(
                    "alerts.broker_http: {address:?} is not a host:port address (e.g. 127.0.0.1:8081)"
                ));
            }
        }
        for url in &self.webhooks {
            parse_webhook(url).map_err(|message| NameserverError::Config {
                message: format!("alerts.webhooks: {message}"),
            })?;
        }
        let mut names = BTreeSet::new();
        for (index, rule) in self.rules.iter().enumerate() {
            validate_rule(rule).map_err(|message| NameserverError::Config {
                message: format!("alerts.rules[{index}] ({:?}): {message}", rule.name),
            })?;
            if !names.insert(rule.name.as_str()) {
                return invalid(format!(
                    "alerts.rules[{index}]: the name {:?} is used twice; rule names must be unique",
                    rule.name
                ));
            }
        }
        Ok(())
    }
}

/// Checks one rule; the message names the field.
pub fn validate_rule(rule: &Rule) -> Result<(), String> {
    let name_ok = !rule.name.is_empty()
        && rule.name.len() <= 64
        && rule
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !name_ok {
        return Err(format!(
            "name {:?} must be 1 to 64 letters, digits, '_' or '-'",
            rule.name
        ));
    }
    if !SEVERITIES.contains(&rule.severity.as_str()) {
        return Err(format!(
            "severity {:?} must be one of {}",
            rule.severity,
            SEVERITIES.join(", ")
        ));
    }
    match &rule.condition {
        Condition::BrokerDown
        | Condition::ConsumerOffline
        | Condition::SubscriptionsDiffer
        | Condition::IdcLost
        | Condition::GroupReadOnly
        | Condition::GroupDegraded => {}
        Condition::ConsumerUnresponsive { threshold_ms } => {
            if *threshold_ms == 0 {
                return Err("threshold_ms must be at least 1".into());
            }
        }
        Condition::LargeMessages { window_ms } => {
            if *window_ms == 0 {
                return Err("window_ms must be at least 1".into());
            }
        }
        Condition::GroupLagStatus { statuses } => {
            if statuses.is_empty() {
                return Err("statuses is empty: name at least one of STOP, STALL, WARN, REWIND".into());
            }
            if let Some(status) = statuses.iter().find(|status| !LAG_STATUSES.contains(&status.as_str())) {
                return Err(format!(
                    "statuses: {status:?} is not a lag status; use {}",
                    LAG_STATUSES.join(", ")
                ));
            }
        }
        Condition::GroupTimeLag { threshold_ms } => {
            if *threshold_ms == 0 {
                return Err("threshold_ms must be at least 1".into());
            }
        }
        Condition::GroupLagMessages { threshold } => {
            if *threshold == 0 {
                return Err("threshold must be at least 1".into());
            }
        }
    }
    Ok(())
}

/// A webhook URL split into its address and path; only plain `http://` on an IP address.
pub fn parse_webhook(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} must start with http:// (https is not supported; use a local relay)"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let addr = authority
        .parse::<SocketAddr>()
        .map_err(|_| format!("{url:?}: {authority:?} must be an ip:port address"))?;
    Ok((addr, path.to_owned()))
}

/// One group's lag on one topic, as a broker's `GET /api/broker/lag` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LagInput {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Burrow-style status.
    pub status: String,
    /// Messages behind.
    pub lag_messages: u64,
    /// Age of the oldest unconsumed message, in ms.
    pub lag_ms: u64,
}

/// The queue a consumer holds up, as a broker's client report says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockedInput {
    /// Topic of the queue.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// Messages waiting.
    pub lag_messages: u64,
    /// Since when neither its pull offset nor the group's commit moved, in ms.
    pub idle_ms: u64,
}

/// One client, as a broker's `GET /api/broker/clients` reports it (consumers only are read).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConsumerInput {
    /// `consumer` or `producer`.
    pub kind: String,
    /// Consumer group.
    pub group: String,
    /// Client id.
    pub client_id: String,
    /// IP address it connects from.
    #[serde(default)]
    pub host: String,
    /// Data center; empty when unknown.
    #[serde(default)]
    pub idc: String,
    /// Topics it subscribes to, sorted.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Tag filter; empty: every message.
    #[serde(default)]
    pub subscription: String,
    /// The queue it holds up, if any.
    #[serde(default)]
    pub blocked: Option<BlockedInput>,
}

/// A consumer that went away without leaving, as a broker's client report says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DepartedInput {
    /// Consumer group.
    pub group: String,
    /// Client id.
    pub client_id: String,
    /// IP address it connected from.
    pub host: String,
    /// Data center; empty when unknown.
    #[serde(default)]
    pub idc: String,
    /// `connection closed` or `heartbeat expired`.
    pub reason: String,
    /// When it was last heard, ms since the Unix epoch.
    pub last_heartbeat_ms: u64,
}

/// A producer's own report, as a broker's client report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProducerInput {
    /// Client id.
    pub client_id: String,
    /// IP address it connects from.
    pub host: String,
    /// Data center; empty when unknown.
    #[serde(default)]
    pub idc: String,
    /// Topics it sent to.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Its large-message threshold, in bytes.
    pub large_threshold_bytes: u64,
    /// Large messages since it started.
    pub large_messages: u64,
    /// Its largest message, in bytes.
    pub largest_message_bytes: u64,
    /// Time since its count of large messages last grew, in ms.
    pub last_large_ago_ms: Option<u64>,
}

/// Every broker's client report, together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClientsInput {
    /// Producers reporting latency and sizes.
    #[serde(default)]
    pub producers: Vec<ProducerInput>,
    /// Live clients (consumers and flagged producers).
    pub clients: Vec<ConsumerInput>,
    /// Consumers gone without leaving.
    #[serde(default)]
    pub departed: Vec<DepartedInput>,
}

/// A broker this leader has not heard within the broker timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownBroker {
    /// Broker group.
    pub group: String,
    /// Broker name.
    pub member: String,
    /// Its data center.
    pub idc: String,
    /// Its address.
    pub addr: String,
}

/// What one evaluation sees.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Brokers silent for a broker timeout; `None`: not known yet (a new leader waits a broker
    /// timeout), so broker alerts neither fire nor resolve.
    pub down_brokers: Option<Vec<DownBroker>>,
    /// Lag of every group on every topic; `None`: a broker's report could not be read, so lag
    /// alerts neither fire from partial figures nor resolve.
    pub lag: Option<Vec<LagInput>>,
    /// Clients of every broker; `None`: a broker's report could not be read, so consumer alerts
    /// neither fire nor resolve.
    pub clients: Option<ClientsInput>,
    /// Owner of each consumer group (from its approval record).
    pub group_owners: BTreeMap<String, String>,
    /// Owner of each topic (from its approval record).
    pub topic_owners: BTreeMap<String, String>,
    /// Lost data centers and the groups they affect; `None`: not known yet (a new leader waits a
    /// broker timeout), so these alerts neither fire nor resolve.
    pub continuity: Option<ContinuityInput>,
}

/// What the leader knows of lost data centers and the broker groups they affect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContinuityInput {
    /// Lost data centers, with why they were declared lost.
    pub lost_idcs: BTreeMap<String, String>,
    /// Groups without a master, with the controller's reason.
    pub read_only: BTreeMap<String, String>,
    /// Groups whose master acknowledges in degraded mode, with its reason.
    pub degraded: BTreeMap<String, String>,
}

/// A rule's condition holding for one subject now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// Rule name.
    pub rule: String,
    /// What it is about.
    pub subject: String,
    /// Owner to tell.
    pub owner: String,
    /// The rule's severity.
    pub severity: String,
    /// What was seen.
    pub message: String,
}

/// Which subjects break which rules now, and which rules could be judged at all (a rule whose
/// inputs are missing neither fires nor resolves).
pub fn conditions(rules: &[Rule], inputs: &Inputs) -> (Vec<Holding>, BTreeSet<String>) {
    let mut holding = Vec::new();
    let mut judged = BTreeSet::new();
    for rule in rules {
        let hold = |subject: String, owner: String, message: String| Holding {
            rule: rule.name.clone(),
            subject,
            owner,
            severity: rule.severity.clone(),
            message,
        };
        match &rule.condition {
            Condition::BrokerDown => {
                let Some(down) = &inputs.down_brokers else { continue };
                judged.insert(rule.name.clone());
                for broker in down {
                    holding.push(hold(
                        format!("broker={}/{}", broker.group, broker.member),
                        String::new(),
                        format!(
                            "broker {} of group {} at {} (data center {}) sent no heartbeat within the broker timeout",
                            broker.member,
                            broker.group,
                            broker.addr,
                            if broker.idc.is_empty() { "unknown" } else { &broker.idc }
                        ),
                    ));
                }
            }
            Condition::IdcLost | Condition::GroupReadOnly | Condition::GroupDegraded => {
                let Some(continuity) = &inputs.continuity else { continue };
                judged.insert(rule.name.clone());
                let (subject, listed) = match rule.condition {
                    Condition::IdcLost => ("idc", &continuity.lost_idcs),
                    Condition::GroupReadOnly => ("group", &continuity.read_only),
                    _ => ("group", &continuity.degraded),
                };
                for (name, why) in listed {
                    let message = match rule.condition {
                        Condition::IdcLost => {
                            format!("data center {name} is lost, its broker groups go on without it: {why}")
                        }
                        Condition::GroupReadOnly => format!(
                            "broker group {name} has no master and takes no writes (its slaves still serve reads): {why}"
                        ),
                        _ => format!("broker group {name} is degraded, {why}"),
                    };
                    holding.push(hold(format!("{subject}={name}"), String::new(), message));
                }
            }
            Condition::LargeMessages { window_ms } => {
                let Some(clients) = &inputs.clients else { continue };
                judged.insert(rule.name.clone());
                let mut seen = BTreeSet::new();
                for producer in &clients.producers {
                    let recent = producer.last_large_ago_ms.is_some_and(|ago| ago <= *window_ms);
                    if !recent || !seen.insert(producer.client_id.as_str()) {
                        continue;
                    }
                    let owner = producer
                        .topics
                        .iter()
                        .find_map(|topic| inputs.topic_owners.get(topic).filter(|owner| !owner.is_empty()))
                        .cloned()
                        .unwrap_or_default();
                    holding.push(hold(
                        format!("producer={}", producer.client_id),
                        owner,
                        format!(
                            "producer {} ({}) sent {} messages over {} bytes (largest {} bytes) to topics [{}]; compress the bodies in the application (gzip, zstd) or store the payload elsewhere and send a reference",
                            producer.client_id,
                            place(&producer.host, &producer.idc),
                            producer.large_messages,
                            producer.large_threshold_bytes,
                            producer.largest_message_bytes,
                            producer.topics.join(", ")
                        ),
                    ));
                }
            }
            Condition::ConsumerOffline | Condition::ConsumerUnresponsive { .. } | Condition::SubscriptionsDiffer => {
                let Some(clients) = &inputs.clients else { continue };
                judged.insert(rule.name.clone());
                for (subject, group, message) in consumer_conditions(&rule.condition, clients) {
                    let owner = inputs.group_owners.get(&group).cloned().unwrap_or_default();
                    holding.push(hold(subject, owner, message));
                }
            }
            condition => {
                let Some(lags) = &inputs.lag else { continue };
                judged.insert(rule.name.clone());
                for lag in lags {
                    let message = match condition {
                        Condition::GroupLagStatus { statuses } if statuses.contains(&lag.status) => format!(
                            "group {} on topic {} is {} with {} messages behind, the oldest {} ms old",
                            lag.group, lag.topic, lag.status, lag.lag_messages, lag.lag_ms
                        ),
                        Condition::GroupTimeLag { threshold_ms } if lag.lag_ms > *threshold_ms => format!(
                            "group {} on topic {}: the oldest unconsumed message is {} ms old (threshold {threshold_ms} ms), {} messages behind",
                            lag.group, lag.topic, lag.lag_ms, lag.lag_messages
                        ),
                        Condition::GroupLagMessages { threshold } if lag.lag_messages > *threshold => format!(
                            "group {} on topic {} is {} messages behind (threshold {threshold})",
                            lag.group, lag.topic, lag.lag_messages
                        ),
                        _ => continue,
                    };
                    let owner = inputs.group_owners.get(&lag.group).cloned().unwrap_or_default();
                    holding.push(hold(format!("group={} topic={}", lag.group, lag.topic), owner, message));
                }
            }
        }
    }
    (holding, judged)
}

fn place(host: &str, idc: &str) -> String {
    format!(
        "host {}, data center {}",
        if host.is_empty() { "unknown" } else { host },
        if idc.is_empty() { "unknown" } else { idc }
    )
}

/// The consumers breaking one consumer-health condition as `(subject, group, message)`: brokers
/// each report their own view, so a consumer live on any broker is not offline, and each consumer
/// or group is reported once.
fn consumer_conditions(condition: &Condition, clients: &ClientsInput) -> Vec<(String, String, String)> {
    let consumers = || clients.clients.iter().filter(|client| client.kind == "consumer");
    let mut found = BTreeMap::new();
    match condition {
        Condition::ConsumerOffline => {
            let live: BTreeSet<(&str, &str)> = consumers()
                .map(|client| (client.group.as_str(), client.client_id.as_str()))
                .collect();
            for gone in &clients.departed {
                if live.contains(&(gone.group.as_str(), gone.client_id.as_str())) {
                    continue;
                }
                found.entry(format!("group={} client={}", gone.group, gone.client_id)).or_insert_with(|| {
                    (
                        gone.group.clone(),
                        format!(
                            "consumer {} of group {} ({}) is offline: {} and it has not come back since its last heartbeat at {} ms",
                            gone.client_id,
                            gone.group,
                            place(&gone.host, &gone.idc),
                            gone.reason,
                            gone.last_heartbeat_ms
                        ),
                    )
                });
            }
        }
        Condition::ConsumerUnresponsive { threshold_ms } => {
            for client in consumers() {
                let Some(blocked) = client
                    .blocked
                    .as_ref()
                    .filter(|blocked| blocked.idle_ms >= *threshold_ms)
                else {
                    continue;
                };
                found.entry(format!("group={} client={}", client.group, client.client_id)).or_insert_with(|| {
                    (
                        client.group.clone(),
                        format!(
                            "consumer {} of group {} ({}) is unresponsive (maybe blocked): it heartbeats, but has neither pulled nor committed queue {} of topic {} for {} ms (threshold {threshold_ms} ms) while {} messages wait; check its consume handler (a thread dump shows where it hangs)",
                            client.client_id,
                            client.group,
                            place(&client.host, &client.idc),
                            blocked.queue_id,
                            blocked.topic,
                            blocked.idle_ms,
                            blocked.lag_messages
                        ),
                    )
                });
            }
        }
        Condition::SubscriptionsDiffer => {
            // group → (topics, tags) → members as "client (host …, data center …)".
            type Subscription<'a> = (Vec<String>, &'a str);
            let mut groups: BTreeMap<&str, BTreeMap<Subscription, BTreeSet<String>>> = BTreeMap::new();
            let mut seen = BTreeSet::new();
            for client in consumers() {
                if !seen.insert((client.group.as_str(), client.client_id.as_str())) {
                    continue;
                }
                let mut topics = client.topics.clone();
                topics.sort();
                let tags = if client.subscription.is_empty() {
                    "*"
                } else {
                    client.subscription.as_str()
                };
                groups
                    .entry(&client.group)
                    .or_default()
                    .entry((topics, tags))
                    .or_default()
                    .insert(format!("{} ({})", client.client_id, place(&client.host, &client.idc)));
            }
            for (group, subscriptions) in groups {
                if subscriptions.len() < 2 {
                    continue;
                }
                let described: Vec<String> = subscriptions
                    .iter()
                    .map(|((topics, tags), members)| {
                        format!(
                            "topics [{}] tags {tags:?}: {}",
                            topics.join(", "),
                            members.iter().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect();
                found.insert(
                    format!("group={group}"),
                    (
                        group.to_owned(),
                        format!(
                            "members of group {group} subscribe differently, so messages reach members that drop them; give every member the same topics and tags: {}",
                            described.join("; ")
                        ),
                    ),
                );
            }
        }
        _ => {}
    }
    found
        .into_iter()
        .map(|(subject, (group, message))| (subject, group, message))
        .collect()
}

/// How long each condition has held: the evaluator's memory between rounds (of this leadership
/// only; a new leader starts counting again, which delays a firing, never repeats one).
#[derive(Debug, Default)]
pub struct Pending {
    since_ms: BTreeMap<String, u64>,
}

impl Pending {
    /// The state changes due at `now_ms`: alerts whose condition held `for_ms` and that do not
    /// fire yet, and firing alerts (in `recorded`) of a judged rule whose condition is gone.
    pub fn step(
        &mut self,
        rules: &[Rule],
        now_ms: u64,
        holding: Vec<Holding>,
        judged: &BTreeSet<String>,
        recorded: &BTreeMap<String, Alert>,
    ) -> Vec<AlertUpdate> {
        let for_ms: BTreeMap<&str, u64> = rules.iter().map(|rule| (rule.name.as_str(), rule.for_ms)).collect();
        let mut updates = Vec::new();
        let mut held = BTreeSet::new();
        for holding in holding {
            let key = alert_key(&holding.rule, &holding.subject);
            let since = *self.since_ms.entry(key.clone()).or_insert(now_ms);
            held.insert(key.clone());
            let firing = recorded
                .get(&key)
                .is_some_and(|alert| alert.status == AlertStatus::Firing);
            let due = now_ms.saturating_sub(since) >= for_ms.get(holding.rule.as_str()).copied().unwrap_or(0);
            if !firing && due {
                updates.push(AlertUpdate {
                    rule: holding.rule,
                    subject: holding.subject,
                    severity: holding.severity,
                    owner: holding.owner,
                    status: AlertStatus::Firing,
                    message: holding.message,
                });
            }
        }
        self.since_ms
            .retain(|key, _| held.contains(key) || !judged.iter().any(|rule| key.starts_with(&format!("{rule}/"))));
        for alert in recorded.values() {
            if alert.status == AlertStatus::Firing && judged.contains(&alert.rule) && !held.contains(&alert.key) {
                updates.push(AlertUpdate {
                    rule: alert.rule.clone(),
                    subject: alert.subject.clone(),
                    severity: alert.severity.clone(),
                    owner: alert.owner.clone(),
                    status: AlertStatus::Resolved,
                    message: format!("resolved: no longer true ({})", alert.message),
                });
            }
        }
        updates
    }
}

/// Runs the evaluator until `stop`: evaluates while this node leads, idles otherwise.
pub async fn run(service: Arc<NameserverService>, config: AlertsConfig, stop: CancellationToken) {
    if !config.enabled {
        return;
    }
    let rules = config.rules();
    let deliveries = TaskTracker::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(config.evaluation_interval_ms));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pending = Pending::default();
    let mut leading_since: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let (leading, term) = {
            let metrics = service.raft().raft().metrics();
            let metrics = metrics.borrow();
            (
                metrics.state == ServerState::Leader && metrics.current_leader == Some(metrics.id),
                metrics.current_term,
            )
        };
        if !leading {
            leading_since = None;
            pending = Pending::default();
            continue;
        }
        let since = match leading_since {
            Some((leader_term, since)) if leader_term == term => since,
            _ => {
                pending = Pending::default();
                let now = Instant::now();
                leading_since = Some((term, now));
                now
            }
        };
        let settled = since.elapsed() >= service.liveness().timeout();
        let inputs = gather(&service, &config, settled, &stop).await;
        let (holding, judged) = conditions(&rules, &inputs);
        let now_ms = meridian_proto::time::now_millis().max(0) as u64;
        let recorded = service.raft().read_state(|state| state.alerts().clone());
        for update in pending.step(&rules, now_ms, holding, &judged, &recorded) {
            match service.write_as_leader(Command::RecordAlert(update.clone())).await {
                Ok(crate::state::Response::Alert(alert)) => {
                    announce(&alert);
                    for url in &config.webhooks {
                        deliveries.spawn(deliver(
                            url.clone(),
                            alert.clone(),
                            config.webhook_attempts,
                            stop.clone(),
                        ));
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(rule = %update.rule, subject = %update.subject, %error, "recording an alert failed")
                }
            }
        }
    }
    deliveries.close();
    deliveries.wait().await;
}

fn announce(alert: &Alert) {
    match alert.status {
        AlertStatus::Firing => tracing::warn!(
            rule = %alert.rule, subject = %alert.subject, severity = %alert.severity,
            owner = %alert.owner, message = %alert.message, "alert firing"
        ),
        AlertStatus::Resolved => tracing::info!(
            rule = %alert.rule, subject = %alert.subject, owner = %alert.owner, "alert resolved"
        ),
    }
}

/// Reads the inputs: liveness once `settled` (leading for a broker timeout), lag from every
/// broker in `broker_http` (all or nothing), group and topic owners from the state.
async fn gather(service: &NameserverService, config: &AlertsConfig, settled: bool, stop: &CancellationToken) -> Inputs {
    let (down_brokers, group_owners, topic_owners, continuity) = service.raft().read_state(|state: &MetadataState| {
        let owners = state
            .consumer_groups()
            .iter()
            .map(|(name, group)| (name.clone(), group.owner.clone()))
            .collect();
        let topic_owners = state
            .topics()
            .iter()
            .map(|(name, topic)| (name.clone(), topic.owner.clone()))
            .collect();
        let down = settled.then(|| {
            service.liveness().with(|view| {
                state
                    .broker_groups()
                    .values()
                    .flat_map(|group| group.members.values().map(move |member| (group, member)))
                    .filter(|(group, member)| !view.get(&group.name, &member.name).is_some_and(|(_, alive)| alive))
                    .map(|(group, member)| DownBroker {
                        group: group.name.clone(),
                        member: member.name.clone(),
                        idc: member.idc.clone(),
                        addr: member.addr.clone(),
                    })
                    .collect()
            })
        });
        let continuity = settled.then(|| ContinuityInput {
            lost_idcs: state
                .continuity()
                .lost
                .iter()
                .map(|(idc, lost)| (idc.clone(), lost.reason.clone()))
                .collect(),
            read_only: service.read_only_groups(),
            degraded: service.liveness().with(|view| {
                state
                    .broker_groups()
                    .keys()
                    .filter_map(|group| Some((group.clone(), view.report(group)?.degraded.clone()?)))
                    .collect()
            }),
        });
        (down, owners, topic_owners, continuity)
    });
    // With `[auth]` on, brokers' HTTP APIs want a login: the node's own.
    let node_authorization = config.node_credentials.as_ref().map(|credentials| {
        format!(
            "Authorization: {}\r\n",
            meridian_proto::http_auth::basic_authorization(&credentials.user, &credentials.secret)
        )
    });
    let node_authorization = node_authorization.as_deref();
    let mut lag = Some(Vec::new());
    for address in &config.broker_http {
        let Ok(addr) = address.parse::<SocketAddr>() else {
            lag = None;
            break;
        };
        let report = tokio::select! {
            _ = stop.cancelled() => None,
            report = http_request(config.tls.as_deref(), addr, "GET", "/api/broker/lag", None, node_authorization) => report,
        };
        #[derive(Deserialize)]
        struct Report {
            groups: Vec<LagInput>,
        }
        match report.and_then(|(status, body)| (status == 200).then(|| serde_json::from_str::<Report>(&body).ok())?) {
            Some(report) => {
                if let Some(lag) = lag.as_mut() {
                    lag.extend(report.groups);
                }
            }
            None => {
                tracing::warn!(broker_http = %address, "reading a broker's lag report failed; lag alerts wait for the next round");
                lag = None;
                break;
            }
        }
    }
    let mut clients = Some(ClientsInput::default());
    for address in &config.broker_http {
        let Ok(addr) = address.parse::<SocketAddr>() else {
            clients = None;
            break;
        };
        let report = tokio::select! {
            _ = stop.cancelled() => None,
            report = http_request(config.tls.as_deref(), addr, "GET", "/api/broker/clients", None, node_authorization) => report,
        };
        match report
            .and_then(|(status, body)| (status == 200).then(|| serde_json::from_str::<ClientsInput>(&body).ok())?)
        {
            Some(report) => {
                if let Some(clients) = clients.as_mut() {
                    clients.clients.extend(report.clients);
                    clients.departed.extend(report.departed);
                    clients.producers.extend(report.producers);
                }
            }
            None => {
                tracing::warn!(broker_http = %address, "reading a broker's client report failed; consumer alerts wait for the next round");
                clients = None;
                break;
            }
        }
    }
    Inputs {
        down_brokers,
        lag,
        clients,
        group_owners,
        topic_owners,
        continuity,
    }
}

/// The JSON a webhook receives for one state change.
pub fn webhook_body(alert: &Alert) -> serde_json::Value {
    serde_json::json!({
        "key": alert.key,
        "rule": alert.rule,
        "subject": alert.subject,
        "severity": alert.severity,
        "owner": alert.owner,
        "status": alert.status,
        "message": alert.message,
        "first_fired_ms": alert.first_fired_ms,
        "changed_ms": alert.last_change_ms,
    })
}

/// POSTs one change to one webhook until it answers 2xx or the attempts run out.
async fn deliver(url: String, alert: Alert, attempts: u32, stop: CancellationToken) {
    let Ok((addr, path)) = parse_webhook(&url) else { return };
    let body = webhook_body(&alert).to_string();
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=attempts {
        match http_request(None, addr, "POST", &path, Some(&body), None).await {
            Some((status, _)) if (200..300).contains(&status) => return,
            answer => tracing::warn!(
                webhook = %url, key = %alert.key, attempt, status = answer.map(|(status, _)| status),
                "webhook delivery failed"
            ),
        }
        if attempt == attempts {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    tracing::error!(webhook = %url, key = %alert.key, attempts, "webhook delivery gave up");
}

/// One HTTP/1.0 request with an optional JSON body and an optional `Authorization` line (CRLF
/// included), over TLS when `tls` is set: the status and the body, `None` when the server cannot
/// be reached or answer within 5 s.
async fn http_request(
    tls: Option<&meridian_proto::tls::TlsClient>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    authorization: Option<&str>,
) -> Option<(u16, String)> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut stream = meridian_proto::tls::connect_maybe_tls(tls, &addr.to_string(), stream)
            .await
            .ok()?;
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            authorization.unwrap_or_default(),
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        meridian_proto::tls::read_to_close(&mut stream, &mut response)
            .await
            .ok()?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(group: &str, status: &str, lag_messages: u64, lag_ms: u64) -> LagInput {
        LagInput {
            group: group.into(),
            topic: "orders".into(),
            status: status.into(),
            lag_messages,
            lag_ms,
        }
    }

    #[test]
    fn rules_parse_from_the_config_and_mistakes_name_the_field() {
        let config: AlertsConfig = serde_json::from_str(
            r#"{"evaluation_interval_ms": 500, "webhooks": ["http://127.0.0.1:9000/hook"],
                "rules": [{"name": "stuck", "condition": "group_lag_status", "statuses": ["STOP"], "for_ms": 1000, "severity": "critical"},
                          {"name": "down", "condition": "broker_down", "severity": "critical"}]}"#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.rules()[0].condition,
            Condition::GroupLagStatus {
                statuses: vec!["STOP".into()]
            }
        );
        AlertsConfig::default().validate().unwrap();
        assert_eq!(AlertsConfig::default().rules(), default_rules());

        let broken = |json: &str| -> String {
            let config: AlertsConfig = serde_json::from_str(json).unwrap();
            config.validate().unwrap_err().to_string()
        };
        let message = broken(r#"{"rules": [{"name": "x", "condition": "broker_down", "severity": "loud"}]}"#);
        assert!(
            message.contains("alerts.rules[0] (\"x\"): severity \"loud\" must be one of"),
            "{message}"
        );
        let message = broken(
            r#"{"rules": [{"name": "x", "condition": "group_lag_status", "statuses": ["LATE"], "severity": "info"}]}"#,
        );
        assert!(message.contains("\"LATE\" is not a lag status"), "{message}");
        let message = broken(r#"{"webhooks": ["https://example.com/hook"]}"#);
        assert!(
            message.contains("alerts.webhooks") && message.contains("http://"),
            "{message}"
        );
        let message = broken(
            r#"{"rules": [{"name": "a", "condition": "broker_down", "severity": "info"}, {"name": "a", "condition": "broker_down", "severity": "info"}]}"#,
        );
        assert!(message.contains("used twice"), "{message}");
        let message = broken(r#"{"evaluation_interval_ms": 5}"#);
        assert!(message.contains("alerts.evaluation_interval_ms (5)"), "{message}");
        let unknown = serde_json::from_str::<AlertsConfig>(
            r#"{"rules": [{"name": "x", "condition": "disk_full", "severity": "info"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("condition \"disk_full\" is unknown"), "{unknown}");
        let typo = serde_json::from_str::<AlertsConfig>(
            r#"{"rules": [{"name": "x", "condition": "broker_down", "severity": "info", "for": 5}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(typo.contains("unknown field `for`"), "{typo}");
        let missing = serde_json::from_str::<AlertsConfig>(
            r#"{"rules": [{"name": "x", "condition": "group_time_lag", "severity": "info"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("needs threshold_ms"), "{missing}");
    }

    #[test]
    fn a_condition_fires_after_its_for_duration_once_and_resolves_when_gone() {
        let rules = vec![Rule {
            name: "stuck".into(),
            condition: Condition::GroupLagStatus {
                statuses: vec!["STOP".into()],
            },
            for_ms: 1_000,
            severity: "warning".into(),
        }];
        let mut inputs = Inputs {
            lag: Some(vec![lag("billing", "STOP", 12, 5_000), lag("audit", "OK", 0, 0)]),
            group_owners: BTreeMap::from([("billing".into(), "alice".into())]),
            ..Inputs::default()
        };
        let mut recorded = BTreeMap::new();
        let mut pending = Pending::default();
        let mut round = |now_ms: u64, inputs: &Inputs, recorded: &mut BTreeMap<String, Alert>| {
            let (holding, judged) = conditions(&rules, inputs);
            let updates = pending.step(&rules, now_ms, holding, &judged, recorded);
            for update in &updates {
                crate::state::alerts::record(recorded, now_ms, update.clone()).unwrap();
            }
            updates
        };
        assert!(round(0, &inputs, &mut recorded).is_empty(), "not yet held for 1 s");
        let fired = round(1_000, &inputs, &mut recorded);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].subject, "group=billing topic=orders");
        assert_eq!(fired[0].owner, "alice");
        assert_eq!(fired[0].status, AlertStatus::Firing);
        assert!(round(2_000, &inputs, &mut recorded).is_empty(), "fires once");
        // A broker that cannot be read: nothing resolves from missing figures.
        let unknown = Inputs {
            lag: None,
            ..inputs.clone()
        };
        assert!(round(3_000, &unknown, &mut recorded).is_empty());
        inputs.lag = Some(vec![lag("billing", "OK", 0, 0)]);
        let resolved = round(4_000, &inputs, &mut recorded);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert!(round(5_000, &inputs, &mut recorded).is_empty());
    }

    #[test]
    fn thresholds_and_down_brokers_are_judged() {
        let rules = vec![
            Rule {
                name: "late".into(),
                condition: Condition::GroupTimeLag { threshold_ms: 1_000 },
                for_ms: 0,
                severity: "warning".into(),
            },
            Rule {
                name: "deep".into(),
                condition: Condition::GroupLagMessages { threshold: 100 },
                for_ms: 0,
                severity: "warning".into(),
            },
            Rule {
                name: "down".into(),
                condition: Condition::BrokerDown,
                for_ms: 0,
                severity: "critical".into(),
            },
        ];
        let inputs = Inputs {
            lag: Some(vec![lag("a", "OK", 101, 999), lag("b", "OK", 100, 1_001)]),
            down_brokers: Some(vec![DownBroker {
                group: "broker-a".into(),
                member: "b1".into(),
                idc: "dc2".into(),
                addr: "10.0.0.2:7911".into(),
            }]),
            ..Inputs::default()
        };
        let (holding, judged) = conditions(&rules, &inputs);
        let keys: Vec<String> = holding
            .iter()
            .map(|holding| alert_key(&holding.rule, &holding.subject))
            .collect();
        assert_eq!(
            keys,
            [
                "late/group=b topic=orders",
                "deep/group=a topic=orders",
                "down/broker=broker-a/b1"
            ]
        );
        assert!(holding[2].message.contains("dc2"), "{}", holding[2].message);
        assert_eq!(judged.len(), 3);
        let (_, judged) = conditions(&rules, &Inputs::default());
        assert!(judged.is_empty(), "without inputs no rule is judged");

        // Losing a data center: the data center, the groups left without a master and those
        // acknowledging degraded each fire their own alert, with the reason.
        let continuity = ContinuityInput {
            lost_idcs: BTreeMap::from([("dc1".into(), "none of its 3 brokers heard for 2500 ms".into())]),
            read_only: BTreeMap::from([("broker-a".into(), "a-2: not in sync".into())]),
            degraded: BTreeMap::from([("broker-b".into(), "acknowledging with 2 of 2 surviving replicas".into())]),
        };
        let inputs = Inputs {
            continuity: Some(continuity),
            ..Inputs::default()
        };
        let (holding, judged) = conditions(&default_rules(), &inputs);
        let fired: Vec<(String, &str, &str)> = holding
            .iter()
            .map(|holding| {
                (
                    alert_key(&holding.rule, &holding.subject),
                    holding.severity.as_str(),
                    holding.message.as_str(),
                )
            })
            .collect();
        assert_eq!(
            fired,
            [
                (
                    "idc_lost/idc=dc1".to_owned(),
                    "critical",
                    "data center dc1 is lost, its broker groups go on without it: none of its 3 brokers heard for 2500 ms"
                ),
                (
                    "group_read_only/group=broker-a".to_owned(),
                    "critical",
                    "broker group broker-a has no master and takes no writes (its slaves still serve reads): a-2: not in sync"
                ),
                (
                    "group_degraded/group=broker-b".to_owned(),
                    "warning",
                    "broker group broker-b is degraded, acknowledging with 2 of 2 surviving replicas"
                ),
            ]
        );
        assert_eq!(judged.len(), 3, "only the continuity rules had their input");
    }

    fn consumer(group: &str, client_id: &str, host: &str, topics: &[&str], tags: &str) -> ConsumerInput {
        ConsumerInput {
            kind: "consumer".into(),
            group: group.into(),
            client_id: client_id.into(),
            host: host.into(),
            idc: "dc1".into(),
            topics: topics.iter().map(|topic| topic.to_string()).collect(),
            subscription: tags.into(),
            blocked: None,
        }
    }

    #[test]
    fn consumer_health_names_the_client_host_data_center_group_and_owner() {
        let rules: Vec<Rule> = default_rules()
            .into_iter()
            .filter(|rule| rule.name.starts_with("consumer") || rule.name == "subscriptions_differ")
            .collect();
        assert_eq!(rules.len(), 3);
        let mut blocked = consumer("billing", "c2", "10.0.0.2", &["orders"], "");
        blocked.blocked = Some(BlockedInput {
            topic: "orders".into(),
            queue_id: 3,
            lag_messages: 40,
            idle_ms: 61_000,
        });
        let mut slow_but_fine = consumer("billing", "c3", "10.0.0.3", &["orders"], "");
        slow_but_fine.blocked = Some(BlockedInput {
            idle_ms: 59_000,
            ..blocked.blocked.clone().unwrap()
        });
        let departed = |group: &str, client_id: &str| DepartedInput {
            group: group.into(),
            client_id: client_id.into(),
            host: "10.0.0.9".into(),
            idc: "dc2".into(),
            reason: "connection closed".into(),
            last_heartbeat_ms: 1_000,
        };
        let inputs = Inputs {
            clients: Some(ClientsInput {
                clients: vec![
                    consumer("billing", "c1", "10.0.0.1", &["orders"], ""),
                    blocked,
                    slow_but_fine,
                    consumer("audit", "a1", "10.0.0.4", &["orders"], "TagA"),
                    consumer("audit", "a2", "10.0.0.5", &["orders"], "TagB"),
                    // The same member seen by a second broker counts once.
                    consumer("audit", "a2", "10.0.0.5", &["orders"], "TagB"),
                    ConsumerInput {
                        kind: "producer".into(),
                        ..consumer("", "10.0.0.7:5000", "10.0.0.7", &[], "")
                    },
                ],
                // "c1" is gone from one broker but live on another: not offline.
                departed: vec![
                    departed("billing", "killed"),
                    departed("billing", "killed"),
                    departed("billing", "c1"),
                ],
                producers: Vec::new(),
            }),
            group_owners: BTreeMap::from([("billing".into(), "alice".into()), ("audit".into(), "bob".into())]),
            ..Inputs::default()
        };
        let (holding, judged) = conditions(&rules, &inputs);
        assert_eq!(judged.len(), 3);
        let found: Vec<(String, &str)> = holding
            .iter()
            .map(|holding| (alert_key(&holding.rule, &holding.subject), holding.owner.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("consumer_offline/group=billing client=killed".to_string(), "alice"),
                ("consumer_unresponsive/group=billing client=c2".to_string(), "alice"),
                ("subscriptions_differ/group=audit".to_string(), "bob"),
            ]
        );
        for expected in ["killed", "10.0.0.9", "dc2", "billing", "connection closed"] {
            assert!(holding[0].message.contains(expected), "{}", holding[0].message);
        }
        for expected in [
            "c2",
            "10.0.0.2",
            "dc1",
            "queue 3 of topic orders",
            "61000 ms",
            "40 messages",
        ] {
            assert!(holding[1].message.contains(expected), "{}", holding[1].message);
        }
        for expected in [
            "a1 (host 10.0.0.4, data center dc1)",
            "\"TagA\"",
            "a2 (host 10.0.0.5",
            "\"TagB\"",
        ] {
            assert!(holding[2].message.contains(expected), "{}", holding[2].message);
        }
        // Without the brokers' client reports nothing is judged (nothing resolves).
        let (holding, judged) = conditions(&rules, &Inputs::default());
        assert!(holding.is_empty() && judged.is_empty());

        let config: AlertsConfig = serde_json::from_str(
            r#"{"rules": [{"name": "stuck", "condition": "consumer_unresponsive", "threshold_ms": 0, "severity": "info"}]}"#,
        )
        .unwrap();
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("threshold_ms must be at least 1"), "{message}");
        let missing = serde_json::from_str::<AlertsConfig>(
            r#"{"rules": [{"name": "x", "condition": "consumer_unresponsive", "severity": "info"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("needs threshold_ms"), "{missing}");
    }

    #[test]
    fn a_broker_client_report_reads_as_consumer_inputs() {
        let report: ClientsInput = serde_json::from_str(
            r#"{"refuse": false, "truncated": false,
                "clients": [{"kind": "consumer", "group": "g", "client_id": "c", "idc": "", "sdk_language": "rust",
                             "sdk_version": "0.1.0", "sdk_violation": null, "host": "127.0.0.1", "topics": ["t"],
                             "subscription": "", "heartbeat_age_ms": 5,
                             "blocked": {"topic": "t", "queue_id": 0, "lag_messages": 3, "idle_ms": 9}}],
                "departed": [{"group": "g", "client_id": "d", "host": "127.0.0.1", "idc": "", "reason": "heartbeat expired",
                              "departed_ms": 10, "last_heartbeat_ms": 2}]}"#,
        )
        .unwrap();
        assert_eq!(report.clients[0].blocked.as_ref().unwrap().idle_ms, 9);
        assert_eq!(report.departed[0].reason, "heartbeat expired");
    }

    #[test]
    fn a_producer_of_large_messages_fires_with_its_topic_owner_until_the_window_passes() {
        let rules = vec![Rule {
            name: "large".into(),
            condition: Condition::LargeMessages { window_ms: 60_000 },
            for_ms: 0,
            severity: "info".into(),
        }];
        let producer = |client_id: &str, last_large_ago_ms: Option<u64>| ProducerInput {
            client_id: client_id.into(),
            host: "10.0.0.8".into(),
            idc: "dc3".into(),
            topics: vec!["logs".into(), "videos".into()],
            large_threshold_bytes: 10_240,
            large_messages: 7,
            largest_message_bytes: 20_480,
            last_large_ago_ms,
        };
        let inputs = Inputs {
            clients: Some(ClientsInput {
                producers: vec![
                    producer("recent", Some(1_000)),
                    producer("recent", Some(1_000)),
                    producer("long-ago", Some(61_000)),
                    producer("never", None),
                ],
                ..ClientsInput::default()
            }),
            topic_owners: BTreeMap::from([("logs".into(), String::new()), ("videos".into(), "media".into())]),
            ..Inputs::default()
        };
        let (holding, judged) = conditions(&rules, &inputs);
        assert!(judged.contains("large"));
        assert_eq!(holding.len(), 1, "{holding:?}");
        assert_eq!(holding[0].subject, "producer=recent");
        assert_eq!(holding[0].owner, "media", "the first topic with an owner");
        for expected in [
            "host 10.0.0.8",
            "data center dc3",
            "7 messages over 10240 bytes",
            "compress",
        ] {
            assert!(holding[0].message.contains(expected), "{}", holding[0].message);
        }
    }
}
