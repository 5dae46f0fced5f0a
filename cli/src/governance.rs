//! Governance commands: `topic`, `group`, `cluster` and `broker switchover`. They talk to any
//! nameserver over the framed protocol (`NameserverWrite`, `NameserverRead`); a node that is not
//! the Raft leader forwards writes to it. With several `--nameserver` addresses, the next is tried when one is
//! down.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use meridian_proto::admin::BrokerRole;
use meridian_proto::admin::read::{BrokerGroupView, ClusterView, GroupDetail, Query, Response, TopicDetail};
use meridian_proto::admin::{
    AdminCommand, AdminWrite, ApprovalStatus, ConsumeMode, ConsumerGroup, GroupRequest, Node, PERM_READ,
    PERM_READ_WRITE, PERM_WRITE, ProduceLimitChange, Topic, TopicChanges, TopicRequest, format_time_ms,
};
use meridian_proto::messages::{QueryOffsetRequest, QueryOffsetResponse, role};
use meridian_proto::transport::TransportError;
use meridian_proto::{ErrorCode, RequestCode};

pub use crate::nameservers::{NameserverAddrs, NameserverClient, Who};
use crate::printer;

/// A decision that may say why: `approve NAME [--reason TEXT]`.
#[derive(Debug, clap::Args)]
pub struct Decide {
    /// Name of the topic or group.
    name: String,
    /// Why (kept in the history).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    who: Who,
    #[command(flatten)]
    addrs: NameserverAddrs,
}

/// A decision that must say why: `reject|delete NAME --reason TEXT`.
#[derive(Debug, clap::Args)]
pub struct DecideWithReason {
    /// Name of the topic or group.
    name: String,
    /// Why (required, kept in the history).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    who: Who,
    #[command(flatten)]
    addrs: NameserverAddrs,
}

/// `list [--status S]`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only those with this status.
    #[arg(long, value_parser = ["requested", "approved", "rejected"])]
    status: Option<String>,
    #[command(flatten)]
    addrs: NameserverAddrs,
}

/// `describe|history NAME`.
#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// Name of the topic or group.
    name: String,
    #[command(flatten)]
    addrs: NameserverAddrs,
}

/// `meridian topic ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Ask for a new topic; an admin approves or rejects it.
    Request {
        /// Topic name: 1-127 chars of [A-Za-z0-9_-].
        name: String,
        /// Team that owns it.
        #[arg(long)]
        owner: String,
        /// Queues on each broker group.
        #[arg(long, default_value_t = 4)]
        queues: u32,
        /// Broker groups to place it on, comma-separated (default: every registered group).
        #[arg(long = "on", value_delimiter = ',')]
        on: Vec<String>,
        /// What it carries.
        #[arg(long, default_value = "")]
        description: String,
        /// Most messages per second producers may send.
        #[arg(long)]
        produce_limit: Option<u32>,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Approve a requested topic.
    Approve(Decide),
    /// Reject a requested topic.
    Reject(DecideWithReason),
    /// Admin shortcut: request and approve a topic in one step, then wait until its brokers serve it.
    Create {
        /// Topic name: 1-127 chars of [A-Za-z0-9_-].
        name: String,
        /// Queues on each broker group.
        #[arg(long, default_value_t = 4)]
        queues: u32,
        /// Broker groups to place it on, comma-separated (default: every registered group).
        #[arg(long = "on", value_delimiter = ',')]
        on: Vec<String>,
        /// Team that owns it.
        #[arg(long, default_value = "admin")]
        owner: String,
        /// Create it on this standalone broker (started without nameservers) instead: no
        /// request or approval, the broker serves it at once.
        #[arg(long = "broker", conflicts_with = "on")]
        broker: Option<String>,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Change a topic's queues, permissions or produce limit.
    Update {
        /// Topic name.
        name: String,
        /// New queue count on each broker group of `--on` (default: the groups it is on).
        #[arg(long)]
        queues: Option<u32>,
        /// Broker groups for `--queues`, comma-separated.
        #[arg(long = "on", value_delimiter = ',')]
        on: Vec<String>,
        /// Permissions: `rw`, `r` (no producing) or `w`.
        #[arg(long, value_parser = ["rw", "r", "w"])]
        perm: Option<String>,
        /// Most messages per second producers may send.
        #[arg(long, conflicts_with = "no_produce_limit")]
        produce_limit: Option<u32>,
        /// Remove the produce limit.
        #[arg(long)]
        no_produce_limit: bool,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Set or remove a topic's produce limit. Every master of the topic enforces its share (by its
    /// queue count); sends over it are answered THROTTLED with how long to wait.
    Limit {
        /// Topic name.
        name: String,
        /// Most messages per second producers may send to the whole topic (1 to 10000000).
        #[arg(long, required_unless_present = "remove", conflicts_with = "remove")]
        messages: Option<u32>,
        /// Remove the limit.
        #[arg(long)]
        remove: bool,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Delete a topic (its history stays).
    Delete(DecideWithReason),
    /// List topics.
    List(ListArgs),
    /// Show a topic: status, owner, placement and its route with broker liveness.
    Describe(NameArgs),
    /// Every decision about a topic: who, when, what and why.
    History(NameArgs),
}

/// `meridian group ...`.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Ask for a new consumer group; an admin approves or rejects it.
    Request {
        /// Group name: 1-255 chars of [A-Za-z0-9_-].
        name: String,
        /// Team that owns it.
        #[arg(long)]
        owner: String,
        /// Topics it consumes, comma-separated; each must exist and not be rejected.
        #[arg(long, value_delimiter = ',', required = true)]
        topics: Vec<String>,
        /// Deliveries of one message before it is dead-lettered (default 16).
        #[arg(long)]
        max_retries: Option<u32>,
        /// Every member gets every message (default: members share the queues).
        #[arg(long)]
        broadcasting: bool,
        /// What the group does.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Approve a requested group; its topics must be approved.
    Approve(Decide),
    /// Reject a requested group.
    Reject(DecideWithReason),
    /// Admin shortcut: request and approve a group in one step, then wait until brokers know it.
    Create {
        /// Group name.
        name: String,
        /// Topics it consumes, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        topics: Vec<String>,
        /// Team that owns it.
        #[arg(long, default_value = "admin")]
        owner: String,
        /// Deliveries of one message before it is dead-lettered (default 16).
        #[arg(long)]
        max_retries: Option<u32>,
        /// Every member gets every message (default: members share the queues).
        #[arg(long)]
        broadcasting: bool,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Move the group's offsets of a topic to a time, the earliest or the latest message, while
    /// its consumers run: they continue from there at their next pull.
    ResetOffset(crate::messaging_cmds::ResetOffsetArgs),
    /// Delete a group (its history stays).
    Delete(DecideWithReason),
    /// List consumer groups.
    List(ListArgs),
    /// Show a consumer group.
    Describe(NameArgs),
    /// Every decision about a group.
    History(NameArgs),
}

/// `meridian cluster ...`: a local cluster of processes (`up`, `down`, `kill`, `restart`), the
/// nameservers' Raft cluster and the brokers they know.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Start a whole cluster on this machine from a spec (examples/two-idc.toml): every
    /// nameserver, broker, archiver and the tracer as its own process under the cluster dir.
    Up(crate::cluster::UpArgs),
    /// Stop every process of the local cluster (SIGTERM; SIGKILL after 30 s) and check that no
    /// port stays taken.
    Down(crate::cluster::DownArgs),
    /// Kill one process of the local cluster (kill -9 by default), for experiments.
    Kill(crate::cluster::KillArgs),
    /// Stop (if running) and start again one process of the local cluster, and wait until it is healthy.
    Restart(crate::cluster::RestartArgs),
    /// Compare every replica of every broker group of the local cluster record by record, below
    /// its master's confirmed offset (after a failover or a data center's return: every replica
    /// must hold the same confirmed history). Fails naming the groups whose replicas differ.
    Verify(crate::cluster::VerifyArgs),
    /// The local cluster's processes (when the cluster dir exists: pid, role, IDC, health,
    /// leader, lag), then the Raft cluster as one nameserver sees it and the broker groups.
    Status {
        /// Print the cluster and broker views as one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        addrs: NameserverAddrs,
        #[command(flatten)]
        dir: crate::cluster::DirArgs,
    },
    /// Add a nameserver (started with `join = true`): it catches up as a learner, then votes.
    AddNode {
        /// Its node id.
        id: u64,
        /// Its framed-protocol address.
        #[arg(long)]
        addr: String,
        /// Its HTTP address.
        #[arg(long, default_value = "")]
        http_addr: String,
        /// Its data center.
        #[arg(long, default_value = "")]
        idc: String,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
    /// Remove a nameserver from the cluster.
    RemoveNode {
        /// Its node id.
        id: u64,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
}

/// `meridian broker`: runs a broker from its config, or, with a subcommand, acts on a broker group
/// through the nameservers.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BrokerCli {
    /// What to do to a broker group instead of running a broker.
    #[command(subcommand)]
    pub command: Option<BrokerCommand>,
    #[command(flatten)]
    pub run: crate::serve::BrokerArgs,
}

/// `meridian broker ...` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BrokerCommand {
    /// Make another member master of a broker group (planned maintenance): the master is fenced at
    /// a new epoch, then the target, which must be in sync, is elected once the old master's lease
    /// lapsed (within the nameservers' broker_timeout_ms).
    Switchover {
        /// Broker group.
        #[arg(long)]
        group: String,
        /// Member to promote.
        #[arg(long)]
        to: String,
        /// Why (kept in the group's history).
        #[arg(long)]
        reason: Option<String>,
        /// Wait until a master is elected, and say which.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        addrs: NameserverAddrs,
    },
}

fn parse_status(status: Option<&str>) -> Option<ApprovalStatus> {
    match status? {
        "requested" => Some(ApprovalStatus::Requested),
        "approved" => Some(ApprovalStatus::Approved),
        _ => Some(ApprovalStatus::Rejected),
    }
}

/// Queues per broker group: on `on`, or on every registered broker group.
async fn placement(client: &NameserverClient, on: &[String], queues: u32) -> Result<BTreeMap<String, u32>> {
    let groups: Vec<String> = if on.is_empty() {
        let brokers: Vec<BrokerGroupView> = client.read(&Query::Brokers).await?;
        if brokers.is_empty() {
            bail!(
                "no broker group has registered with the nameservers yet: start a broker, or name the groups with --on GROUP"
            );
        }
        brokers.into_iter().map(|group| group.name).collect()
    } else {
        on.to_vec()
    };
    Ok(groups.into_iter().map(|group| (group, queues)).collect())
}

/// `meridian topic ...`.
pub async fn topic(command: TopicCommand) -> Result<()> {
    if let TopicCommand::Create {
        name,
        queues,
        broker: Some(broker),
        ..
    } = &command
    {
        return create_on_standalone_broker(broker, name, *queues).await;
    }
    let addrs = match &command {
        TopicCommand::Request { addrs, .. }
        | TopicCommand::Create { addrs, .. }
        | TopicCommand::Update { addrs, .. }
        | TopicCommand::Limit { addrs, .. } => addrs.clone(),
        TopicCommand::Approve(args) => args.addrs.clone(),
        TopicCommand::Reject(args) | TopicCommand::Delete(args) => args.addrs.clone(),
        TopicCommand::List(args) => args.addrs.clone(),
        TopicCommand::Describe(args) | TopicCommand::History(args) => args.addrs.clone(),
    };
    NameserverClient::with(&addrs, command, run_topic).await
}

async fn run_topic(client: &NameserverClient, command: TopicCommand) -> Result<()> {
    match command {
        TopicCommand::Request {
            name,
            owner,
            queues,
            on,
            description,
            produce_limit,
            who,
            ..
        } => {
            let request = TopicRequest {
                name: name.clone(),
                owner,
                description,
                queues: placement(client, &on, queues).await?,
                perm: PERM_READ_WRITE,
                produce_limit,
                requested_by: who.name()?,
            };
            client.command(AdminCommand::RequestTopic(request)).await?;
            println!("topic {name} requested; an admin approves it with `meridian topic approve {name}`");
        }
        TopicCommand::Approve(Decide { name, reason, who, .. }) => {
            client
                .command(AdminCommand::ApproveTopic {
                    name: name.clone(),
                    decided_by: who.name()?,
                    reason,
                })
                .await?;
            wait_until_served(client, &name).await?;
            println!("topic {name} approved");
        }
        TopicCommand::Reject(DecideWithReason { name, reason, who, .. }) => {
            client
                .command(AdminCommand::RejectTopic {
                    name: name.clone(),
                    decided_by: who.name()?,
                    reason,
                })
                .await?;
            println!("topic {name} rejected");
        }
        TopicCommand::Create {
            name,
            queues,
            on,
            owner,
            who,
            ..
        } => {
            let placed = create_topic(client, &name, queues, &on, owner, who.name()?).await?;
            println!("topic {name} ready with {queues} queues on {}", placed.join(", "));
        }
        TopicCommand::Update {
            name,
            queues,
            on,
            perm,
            produce_limit,
            no_produce_limit,
            reason,
            who,
            ..
        } => {
            let queues = match queues {
                None => None,
                Some(queues) if on.is_empty() => {
                    let detail: TopicDetail = client.read(&Query::Topic { name: name.clone() }).await?;
                    let topic = detail.topic.ok_or_else(|| anyhow!("topic {name:?} was deleted"))?;
                    let mut placed: BTreeMap<String, u32> =
                        topic.queues.keys().map(|group| (group.clone(), queues)).collect();
                    if placed.is_empty() {
                        placed = placement(client, &[], queues).await?;
                    }
                    Some(placed)
                }
                Some(queues) => Some(on.iter().map(|group| (group.clone(), queues)).collect()),
            };
            let changes = TopicChanges {
                queues,
                perm: perm.map(|perm| match perm.as_str() {
                    "r" => PERM_READ,
                    "w" => PERM_WRITE,
                    _ => PERM_READ_WRITE,
                }),
                produce_limit: match (produce_limit, no_produce_limit) {
                    (Some(limit), _) => ProduceLimitChange::Set(limit),
                    (None, true) => ProduceLimitChange::Remove,
                    (None, false) => ProduceLimitChange::Keep,
                },
                owner: None,
                description: None,
            };
            client
                .command(AdminCommand::UpdateTopic {
                    name: name.clone(),
                    updated_by: who.name()?,
                    reason,
                    changes,
                })
                .await?;
            println!("topic {name} updated");
        }
        TopicCommand::Limit {
            name,
            messages,
            remove,
            reason,
            who,
            ..
        } => {
            meridian_proto::quota::validate_produce_limit(messages, None)?;
            let changes = TopicChanges {
                queues: None,
                perm: None,
                produce_limit: match messages {
                    Some(limit) if !remove => ProduceLimitChange::Set(limit),
                    _ => ProduceLimitChange::Remove,
                },
                owner: None,
                description: None,
            };
            client
                .command(AdminCommand::UpdateTopic {
                    name: name.clone(),
                    updated_by: who.name()?,
                    reason,
                    changes,
                })
                .await?;
            match messages {
                Some(limit) if !remove => {
                    println!("topic {name} limited to {limit} msg/s; each master enforces its share by queue count")
                }
                _ => println!("topic {name} has no produce limit"),
            }
        }
        TopicCommand::Delete(DecideWithReason { name, reason, who, .. }) => {
            client
                .command(AdminCommand::DeleteTopic {
                    name: name.clone(),
                    deleted_by: who.name()?,
                    reason,
                })
                .await?;
            println!("topic {name} deleted");
        }
        TopicCommand::List(ListArgs { status, .. }) => {
            let topics: Vec<Topic> = client
                .read(&Query::Topics {
                    status: parse_status(status.as_deref()),
                })
                .await?;
            printer::print_list(
                "TOPIC",
                "QUEUES",
                topics.iter().map(|topic| {
                    (
                        &topic.name,
                        &topic.approval,
                        &topic.owner,
                        placement_text(&topic.queues),
                    )
                }),
            );
        }
        TopicCommand::Describe(NameArgs { name, .. }) => {
            let detail: TopicDetail = client.read(&Query::Topic { name: name.clone() }).await?;
            let Some(topic) = detail.topic else {
                println!("topic {name} was deleted; `meridian topic history {name}` shows when and why");
                return Ok(());
            };
            printer::print_approval_head("topic", &topic.name, &topic.approval, &topic.owner, &topic.description);
            println!("perm         {}", perm_text(topic.perm));
            println!(
                "limit        {}",
                topic
                    .produce_limit
                    .map_or("none".to_owned(), |limit| format!("{limit} msg/s"))
            );
            println!("queues       {}", placement_text(&topic.queues));
            if topic.approval.status == ApprovalStatus::Approved {
                let route = client.route(&name).await?;
                println!("route");
                for broker in route.brokers {
                    println!(
                        "  {:<20} master {}  queues {}",
                        broker.broker_name,
                        if broker.addr.is_empty() {
                            "none alive"
                        } else {
                            broker.addr.as_str()
                        },
                        broker.queues
                    );
                    for replica in broker.replicas {
                        println!(
                            "    {:<18} {:<6} {:<22} idc {:<8} {} max_offset {}",
                            replica.name,
                            role::name(replica.role),
                            replica.addr,
                            if replica.idc.is_empty() {
                                "-"
                            } else {
                                replica.idc.as_str()
                            },
                            if replica.alive { "alive" } else { "DOWN" },
                            replica.max_offset
                        );
                    }
                }
            }
        }
        TopicCommand::History(NameArgs { name, .. }) => {
            let detail: TopicDetail = client.read(&Query::Topic { name: name.clone() }).await?;
            printer::print_history(&detail.history);
        }
    }
    Ok(())
}

fn placement_text(queues: &BTreeMap<String, u32>) -> String {
    if queues.is_empty() {
        return "not placed".to_owned();
    }
    queues
        .iter()
        .map(|(group, count)| format!("{group}={count}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn perm_text(perm: u8) -> &'static str {
    match perm {
        PERM_READ_WRITE => "read, write",
        PERM_READ => "read only",
        PERM_WRITE => "write only",
        _ => "none",
    }
}

/// `topic create --broker ADDR`: a standalone broker keeps its own topics, created at once.
async fn create_on_standalone_broker(broker: &str, name: &str, queues: u32) -> Result<()> {
    let pool = meridian_client::ConnectionPool::new(crate::credentials::client_config());
    let route = std::sync::Arc::new(meridian_client::StaticRoute::new(broker.to_owned(), pool.clone()));
    let admin = meridian_client::Admin::new(route, crate::credentials::client_config());
    let created = admin
        .create_topic(broker, name, queues)
        .await
        .with_context(|| format!("creating topic {name:?} on the standalone broker at {broker}"));
    admin.shutdown().await;
    pool.shutdown().await;
    created?;
    println!("topic {name} ready with {queues} queues on the standalone broker at {broker}");
    Ok(())
}

/// The admin shortcut: requests and approves a topic as `by`, then waits until its brokers serve
/// it. Returns the broker groups it was placed on.
async fn create_topic(
    client: &NameserverClient,
    name: &str,
    queues: u32,
    on: &[String],
    owner: String,
    by: String,
) -> Result<Vec<String>> {
    let placed = placement(client, on, queues).await?;
    let request = TopicRequest {
        name: name.to_owned(),
        owner,
        description: String::new(),
        queues: placed.clone(),
        perm: PERM_READ_WRITE,
        produce_limit: None,
        requested_by: by.clone(),
    };
    client.command(AdminCommand::RequestTopic(request)).await?;
    client
        .command(AdminCommand::ApproveTopic {
            name: name.to_owned(),
            decided_by: by,
            reason: Some("created by an admin (topic create)".into()),
        })
        .await?;
    wait_until_served(client, name).await?;
    Ok(placed.into_keys().collect())
}

/// The admin shortcut for consumer groups: request and approve as `by`, then wait until the
/// brokers of its topics accept it.
/// How a group created in one step consumes.
#[derive(Debug, Clone, Copy, Default)]
struct GroupSettings {
    max_retries: Option<u32>,
    broadcasting: bool,
}

async fn create_group(
    client: &NameserverClient,
    name: &str,
    topics: &[String],
    owner: String,
    by: String,
    settings: GroupSettings,
) -> Result<()> {
    client
        .command(AdminCommand::RequestGroup(GroupRequest {
            name: name.to_owned(),
            owner,
            description: String::new(),
            topics: topics.iter().cloned().collect(),
            max_retries: settings.max_retries,
            consume_mode: if settings.broadcasting {
                ConsumeMode::Broadcasting
            } else {
                ConsumeMode::Clustering
            },
            requested_by: by.clone(),
        }))
        .await?;
    client
        .command(AdminCommand::ApproveGroup {
            name: name.to_owned(),
            decided_by: by,
            reason: Some("created by an admin (group create)".into()),
        })
        .await?;
    wait_until_known(client, name, topics).await
}

/// Makes sure `topic` exists and is served, for tools that need one (benchmarks): requested and
/// approved in one step unless it already exists, then waited for.
pub async fn ensure_topic(addrs: &NameserverAddrs, topic: &str, queues: u32) -> Result<()> {
    let client = NameserverClient::new(addrs)?;
    let result = async {
        let exists = client
            .read::<TopicDetail>(&Query::Topic { name: topic.to_owned() })
            .await
            .is_ok_and(|detail| detail.topic.is_some());
        if !exists {
            create_topic(&client, topic, queues, &[], "admin".into(), "meridian-bench".into()).await?;
        }
        wait_until_served(&client, topic).await
    }
    .await;
    client.shutdown().await;
    result
}

/// Makes sure consumer group `group` exists for `topic` and its brokers accept it.
pub async fn ensure_group(addrs: &NameserverAddrs, group: &str, topic: &str) -> Result<()> {
    let client = NameserverClient::new(addrs)?;
    let result = async {
        let exists = client
            .read::<GroupDetail>(&Query::Group { name: group.to_owned() })
            .await
            .is_ok_and(|detail| detail.group.is_some());
        if !exists {
            create_group(
                &client,
                group,
                &[topic.to_owned()],
                "admin".into(),
                "meridian-bench".into(),
                GroupSettings::default(),
            )
            .await?;
        }
        wait_until_known(&client, group, &[topic.to_owned()]).await
    }
    .await;
    client.shutdown().await;
    result
}

/// How long `create` and `approve` wait for brokers to apply an approval (they do on their next
/// heartbeat).
const SERVE_WAIT: Duration = Duration::from_secs(30);

/// Waits until every broker group of the topic's route has a live master that serves it.
async fn wait_until_served(client: &NameserverClient, topic: &str) -> Result<()> {
    Ok(client.admin().wait_until_served(topic, SERVE_WAIT).await?)
}

/// Waits until the masters of the group's topics accept the group for each topic (brokers learn
/// approvals on their next heartbeat).
async fn wait_until_known(client: &NameserverClient, group: &str, topics: &[String]) -> Result<()> {
    let deadline = Instant::now() + SERVE_WAIT;
    let mut probes = Vec::new();
    for topic in topics {
        for broker in client.route(topic).await?.brokers {
            if !broker.addr.is_empty() {
                probes.push((broker.broker_name, broker.addr, topic.clone()));
            }
        }
    }
    let mut last_problem = String::new();
    while Instant::now() < deadline {
        let mut pending = Vec::new();
        for (broker_name, master, topic) in &probes {
            let request = QueryOffsetRequest {
                group: group.to_owned(),
                topic: topic.clone(),
                queue_id: 0,
                ..Default::default()
            };
            let answer: Result<QueryOffsetResponse, _> = client
                .pool()
                .call(master, RequestCode::QueryOffset, &request, Duration::from_secs(3))
                .await;
            match answer {
                // Any answer but a refusal of the group means the broker knows it.
                Ok(_) => {}
                Err(TransportError::Remote {
                    code: ErrorCode::NotApproved | ErrorCode::FailedPrecondition | ErrorCode::Unavailable,
                    message,
                    ..
                }) => pending.push(format!("broker {broker_name} ({master}): {message}")),
                Err(TransportError::Remote { .. }) => {}
                Err(error) => pending.push(format!("broker {broker_name} ({master}): {error}")),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        last_problem = pending.join("; ");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "consumer group {group:?} is approved in the nameservers, but not every broker applied it within {SERVE_WAIT:?}: {last_problem}; brokers apply approvals on their next heartbeat: check that the broker named runs with these nameservers configured (`meridian cluster status`)"
    )
}

/// `meridian group ...`.
pub async fn group(command: GroupCommand) -> Result<()> {
    // Offsets live on the brokers: this one talks to them, not to the nameservers' metadata.
    let command = match command {
        GroupCommand::ResetOffset(args) => return crate::messaging_cmds::reset_offset(args).await,
        other => other,
    };
    let addrs = match &command {
        GroupCommand::ResetOffset(_) => unreachable!("handled above"),
        GroupCommand::Request { addrs, .. } | GroupCommand::Create { addrs, .. } => addrs.clone(),
        GroupCommand::Approve(args) => args.addrs.clone(),
        GroupCommand::Reject(args) | GroupCommand::Delete(args) => args.addrs.clone(),
        GroupCommand::List(args) => args.addrs.clone(),
        GroupCommand::Describe(args) | GroupCommand::History(args) => args.addrs.clone(),
    };
    NameserverClient::with(&addrs, command, run_group).await
}

async fn run_group(client: &NameserverClient, command: GroupCommand) -> Result<()> {
    match command {
        GroupCommand::Request {
            name,
            owner,
            topics,
            max_retries,
            broadcasting,
            description,
            who,
            ..
        } => {
            client
                .command(AdminCommand::RequestGroup(GroupRequest {
                    name: name.clone(),
                    owner,
                    description,
                    topics: topics.into_iter().collect(),
                    max_retries,
                    consume_mode: if broadcasting {
                        ConsumeMode::Broadcasting
                    } else {
                        ConsumeMode::Clustering
                    },
                    requested_by: who.name()?,
                }))
                .await?;
            println!("consumer group {name} requested; an admin approves it with `meridian group approve {name}`");
        }
        GroupCommand::ResetOffset(_) => unreachable!("handled in group()"),
        GroupCommand::Approve(Decide { name, reason, who, .. }) => {
            client
                .command(AdminCommand::ApproveGroup {
                    name: name.clone(),
                    decided_by: who.name()?,
                    reason,
                })
                .await?;
            let detail: GroupDetail = client.read(&Query::Group { name: name.clone() }).await?;
            let topics: Vec<String> = detail
                .group
                .map(|group| group.topics.into_iter().collect())
                .unwrap_or_default();
            wait_until_known(client, &name, &topics).await?;
            println!("consumer group {name} approved");
        }
        GroupCommand::Reject(DecideWithReason { name, reason, who, .. }) => {
            client
                .command(AdminCommand::RejectGroup {
                    name: name.clone(),
                    decided_by: who.name()?,
                    reason,
                })
                .await?;
            println!("consumer group {name} rejected");
        }
        GroupCommand::Create {
            name,
            topics,
            owner,
            max_retries,
            broadcasting,
            who,
            ..
        } => {
            let settings = GroupSettings {
                max_retries,
                broadcasting,
            };
            create_group(client, &name, &topics, owner, who.name()?, settings).await?;
            println!("consumer group {name} ready on {}", topics.join(", "));
        }
        GroupCommand::Delete(DecideWithReason { name, reason, who, .. }) => {
            client
                .command(AdminCommand::DeleteGroup {
                    name: name.clone(),
                    deleted_by: who.name()?,
                    reason,
                })
                .await?;
            println!("consumer group {name} deleted");
        }
        GroupCommand::List(ListArgs { status, .. }) => {
            let groups: Vec<ConsumerGroup> = client
                .read(&Query::Groups {
                    status: parse_status(status.as_deref()),
                })
                .await?;
            printer::print_list(
                "GROUP",
                "TOPICS",
                groups.iter().map(|group| {
                    let topics = group.topics.iter().cloned().collect::<Vec<_>>().join(",");
                    (&group.name, &group.approval, &group.owner, topics)
                }),
            );
        }
        GroupCommand::Describe(NameArgs { name, .. }) => {
            let detail: GroupDetail = client.read(&Query::Group { name: name.clone() }).await?;
            let Some(group) = detail.group else {
                println!("consumer group {name} was deleted; `meridian group history {name}` shows when and why");
                return Ok(());
            };
            printer::print_approval_head("group", &group.name, &group.approval, &group.owner, &group.description);
            println!(
                "topics       {}",
                group.topics.iter().cloned().collect::<Vec<_>>().join(", ")
            );
            println!(
                "mode         {}",
                match group.consume_mode {
                    ConsumeMode::Clustering => "clustering",
                    ConsumeMode::Broadcasting => "broadcasting",
                }
            );
            println!("max retries  {}", group.max_retries);
        }
        GroupCommand::History(NameArgs { name, .. }) => {
            let detail: GroupDetail = client.read(&Query::Group { name: name.clone() }).await?;
            printer::print_history(&detail.history);
        }
    }
    Ok(())
}

/// `meridian broker ...` subcommands.
pub async fn broker(command: BrokerCommand) -> Result<()> {
    let BrokerCommand::Switchover { addrs, .. } = &command;
    let addrs = addrs.clone();
    NameserverClient::with(&addrs, command, run_broker).await
}

/// Longest `broker switchover --wait` waits for the election.
const SWITCHOVER_WAIT: Duration = Duration::from_secs(30);

async fn run_broker(client: &NameserverClient, command: BrokerCommand) -> Result<()> {
    let BrokerCommand::Switchover {
        group,
        to,
        reason,
        wait,
        who,
        ..
    } = command;
    let command = AdminCommand::FenceMaster {
        group: group.clone(),
        preferred: to.clone(),
        by: who.name()?,
        reason,
    };
    let response = client.command(command).await?;
    let Response::EpochChange { change, .. } = response else {
        bail!("the nameserver answered {response:?} to a switchover; is it the same version?");
    };
    let fenced = change.epoch;
    match &change.previous_master {
        Some(old) => {
            println!("broker group {group}: epoch {fenced} committed, without a master");
            println!(
                "  {old} is fenced: it takes no writes once its lease lapsed (half the nameservers' broker_timeout_ms)"
            );
            println!(
                "  {to} is promoted at epoch {} once {old}'s lease surely lapsed: within broker_timeout_ms (3 s by default)",
                fenced + 1
            );
        }
        None => {
            println!("broker group {group}: epoch {fenced} committed; it had no master");
            println!(
                "  {to} is promoted at epoch {} within broker_timeout_ms (3 s by default)",
                fenced + 1
            );
        }
    }
    if !wait {
        println!("  follow it with `meridian cluster status`");
        return Ok(());
    }
    let deadline = Instant::now() + SWITCHOVER_WAIT;
    loop {
        let brokers: Vec<BrokerGroupView> = client.read(&Query::Brokers).await?;
        let view = brokers.into_iter().find(|view| view.name == group);
        if let Some(view) = &view
            && view.epoch > fenced
            && let Some(master) = &view.master
        {
            if *master == to {
                println!("{to} is master of broker group {group} at epoch {}", view.epoch);
                return Ok(());
            }
            let why = view
                .history
                .last()
                .and_then(|change| change.reason.clone())
                .unwrap_or_default();
            bail!(
                "the controller elected {master} instead of {to}, at epoch {} ({why})",
                view.epoch
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "no master was elected within {SWITCHOVER_WAIT:?}: the nameserver leader's log says why (is {to} alive and caught up?); `meridian cluster status` shows the group"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `meridian cluster ...`.
pub async fn cluster(command: ClusterCommand) -> Result<()> {
    let mut processes = None;
    let addrs = match command {
        ClusterCommand::Up(args) => return crate::cluster::up(args).await,
        ClusterCommand::Down(args) => return crate::cluster::down(args).await,
        ClusterCommand::Kill(args) => return crate::cluster::kill(args).await,
        ClusterCommand::Restart(args) => return crate::cluster::restart(args).await,
        ClusterCommand::Verify(args) => return crate::cluster::verify(args).await,
        // With a local cluster, its processes first, and its nameservers unless others were named.
        ClusterCommand::Status {
            ref addrs,
            ref dir,
            json,
            ..
        } if crate::cluster::exists(&dir.dir) => {
            let (nameservers, view) = crate::cluster::process_view(&dir.dir, json).await?;
            processes = view;
            let default = addrs.nameservers == ["127.0.0.1:7800"] && std::env::var_os("MERIDIAN_NAMESERVER").is_none();
            if default {
                NameserverAddrs { nameservers }
            } else {
                addrs.clone()
            }
        }
        ClusterCommand::Status { ref addrs, .. }
        | ClusterCommand::AddNode { ref addrs, .. }
        | ClusterCommand::RemoveNode { ref addrs, .. } => addrs.clone(),
    };
    let json_processes = match &command {
        ClusterCommand::Status { json: true, .. } => processes.clone(),
        _ => None,
    };
    let answer = NameserverClient::with(&addrs, command, async |client, command| {
        run_cluster(client, command, processes).await
    })
    .await;
    if let (Err(error), Some(processes)) = (&answer, json_processes) {
        // Scripts still get the process view when no nameserver answers, beside why.
        let view = serde_json::json!({"processes": processes, "error": format!("{error:#}")});
        println!("{view}");
    }
    answer
}

async fn run_cluster(
    client: &NameserverClient,
    command: ClusterCommand,
    processes: Option<serde_json::Value>,
) -> Result<()> {
    match command {
        ClusterCommand::Up(_)
        | ClusterCommand::Down(_)
        | ClusterCommand::Kill(_)
        | ClusterCommand::Restart(_)
        | ClusterCommand::Verify(_) => {
            unreachable!("handled by crate::cluster")
        }
        ClusterCommand::Status { json, .. } => {
            let cluster: ClusterView = client.read(&Query::Cluster).await?;
            let brokers: Vec<BrokerGroupView> = client.read(&Query::Brokers).await?;
            if json {
                let mut view = serde_json::json!({"cluster": cluster, "brokers": brokers});
                if let Some(processes) = processes {
                    view["processes"] = processes;
                }
                println!("{view}");
                return Ok(());
            }
            println!(
                "nameserver node {} is {} in term {}; leader: {}",
                cluster.node_id,
                cluster.role.to_lowercase(),
                cluster.term,
                cluster
                    .leader
                    .map_or("unknown".to_owned(), |leader| format!("node {leader}"))
            );
            println!("{:<6} {:<24} {:<24} {:<8} ROLE", "NODE", "ADDR", "HTTP", "IDC");
            for node in &cluster.nodes {
                println!(
                    "{:<6} {:<24} {:<24} {:<8} {}{}",
                    node.id,
                    node.addr,
                    if node.http_addr.is_empty() {
                        "-"
                    } else {
                        node.http_addr.as_str()
                    },
                    if node.idc.is_empty() { "-" } else { node.idc.as_str() },
                    if node.voter { "voter" } else { "learner" },
                    if cluster.leader == Some(node.id) {
                        ", leader"
                    } else {
                        ""
                    }
                );
            }
            println!(
                "log: last index {}, applied {}, snapshot {}, purged {}",
                opt(cluster.last_log_index),
                opt(cluster.last_applied),
                opt(cluster.snapshot),
                opt(cluster.purged)
            );
            if cluster.lost_idcs.is_empty() {
                println!("lost data centers: none");
            }
            for (idc, lost) in &cluster.lost_idcs {
                println!(
                    "LOST data center {idc} since {}: {}",
                    format_time_ms(lost.since_ms),
                    lost.reason
                );
            }
            println!("broker groups: {}", brokers.len());
            for group in brokers {
                let in_sync = if group.in_sync.is_empty() {
                    "none".to_owned()
                } else {
                    group.in_sync.join(", ")
                };
                match (&group.master, &group.preferred) {
                    (Some(master), _) => println!(
                        "  {} epoch {}, master {master}, in sync: {in_sync}",
                        group.name, group.epoch
                    ),
                    (None, Some(preferred)) => println!(
                        "  {} epoch {}, no master: switching over to {preferred}, in sync: {in_sync}",
                        group.name, group.epoch
                    ),
                    (None, None) => println!(
                        "  {} epoch {}, no master elected yet, in sync: {in_sync}",
                        group.name, group.epoch
                    ),
                }
                if let Some(why) = &group.read_only {
                    println!("    READ-ONLY: {why}");
                }
                if let Some(why) = &group.degraded {
                    println!("    DEGRADED: {why}");
                }
                for member in group.members {
                    println!(
                        "    {:<18} {:<6} {:<22} idc {:<8} {} topics {} max_offset {}",
                        member.name,
                        if member.role == BrokerRole::Master {
                            "master"
                        } else {
                            "slave"
                        },
                        member.addr,
                        if member.idc.is_empty() {
                            "-"
                        } else {
                            member.idc.as_str()
                        },
                        if member.alive { "alive" } else { "DOWN" },
                        member.topics,
                        member.max_offset
                    );
                }
            }
        }
        ClusterCommand::AddNode {
            id,
            addr,
            http_addr,
            idc,
            ..
        } => {
            client
                .write(AdminWrite::AddNode {
                    id,
                    node: Node { addr, http_addr, idc },
                })
                .await?;
            println!("nameserver node {id} added: it caught up and votes");
        }
        ClusterCommand::RemoveNode { id, .. } => {
            client.write(AdminWrite::RemoveNode { id }).await?;
            println!("nameserver node {id} removed");
        }
    }
    Ok(())
}

fn opt(value: Option<u64>) -> String {
    value.map_or("-".to_owned(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::{Cli, Command as CliCommand};

    #[test]
    fn broker_runs_from_a_config_or_switches_a_group_over() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["meridian", "broker", "--config", "broker.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            CliCommand::Broker(BrokerCli { command: None, .. })
        ));
        let cli = Cli::try_parse_from([
            "meridian",
            "broker",
            "switchover",
            "--group",
            "broker-a",
            "--to",
            "a-1",
            "--nameserver",
            "10.0.0.1:7800",
        ])
        .unwrap();
        let CliCommand::Broker(BrokerCli {
            command: Some(BrokerCommand::Switchover {
                group, to, wait, addrs, ..
            }),
            ..
        }) = cli.command
        else {
            panic!("expected a switchover");
        };
        assert_eq!(
            (group.as_str(), to.as_str(), wait, addrs.nameservers),
            ("broker-a", "a-1", false, vec!["10.0.0.1:7800".to_owned()])
        );
        let both = Cli::try_parse_from([
            "meridian",
            "broker",
            "--config",
            "broker.toml",
            "switchover",
            "--group",
            "g",
            "--to",
            "a",
        ]);
        assert!(both.is_err(), "running a broker and switching over are exclusive");
    }
}
