//! The admin contract of the nameservers: the records a client reads and the requests it sends
//! about topics and consumer groups (request, approve, reject, change, delete), in the JSON the
//! nameservers speak on `NameserverRead`/`NameserverWrite` and their HTTP API. The nameserver
//! keeps these records in its replicated state as they are; the cli, the console and any other
//! client name them from here, never the nameserver's internals.
//!
//! - Approvals: [`Approval`] (where a topic or group stands, who moved it there), [`Decision`] (one
//!   entry of a history), [`ApprovalStatus`], [`DecisionAction`], [`Subject`].
//! - Topics and groups: [`Topic`], [`ConsumerGroup`], what a request carries ([`TopicRequest`],
//!   [`GroupRequest`]) and what an update changes ([`TopicChanges`]).
//!
//! - Reads ([`read`], named by that path: it builds on the records here): [`read::Query`] and
//!   the views it is answered with; [`read::Response`], what a write answers.
//! - The other records of the metadata ([`records`]): broker roles and epoch changes, the IDC map
//!   and drills, the SDK policy, lost data centers, alerts, the audit log, users as listed.
//!
//! Field and variant names are part of the nameservers' Raft log and snapshots: never rename one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

pub mod read;
pub mod records;

pub use records::{
    Alert, AlertChange, AlertStatus, AuditEntry, BrokerRole, Drill, DrillAction, DrillStep, EpochAction, EpochChange,
    IdcRule, LostIdc, SdkPolicy, UserView,
};

/// What a governance error or decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
}

impl fmt::Display for Subject {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Subject::Topic => "topic",
            Subject::Group => "consumer group",
        })
    }
}

/// Where a topic or consumer group stands in the approval workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Requested by its owner; not usable yet.
    Requested,
    /// Approved: brokers serve it.
    Approved,
    /// Rejected; may be requested again.
    Rejected,
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            ApprovalStatus::Requested => "requested",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
        })
    }
}

/// Where a topic or consumer group stands in governance, and who put it there. Topics and
/// consumer groups embed it flattened, so its fields sit in their JSON (snapshots, Raft log
/// entries, the HTTP API) exactly where the fields of each used to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Approval status.
    pub status: ApprovalStatus,
    /// Who requested it (the latest request when it was requested again after a rejection).
    pub requested_by: String,
    /// When it was requested, in ms since the Unix epoch.
    pub requested_at_ms: u64,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When it was approved or rejected.
    pub decided_at_ms: Option<u64>,
    /// Why it was approved or rejected.
    pub decision_reason: Option<String>,
}

impl Approval {
    /// A new request by `by` at `at_ms`, not decided yet.
    pub fn requested(by: String, at_ms: u64) -> Approval {
        Approval {
            status: ApprovalStatus::Requested,
            requested_by: by,
            requested_at_ms: at_ms,
            decided_by: None,
            decided_at_ms: None,
            decision_reason: None,
        }
    }

    /// Whether it blocks a new request of the same name: everything but a rejection does.
    pub fn blocks_request(&self) -> bool {
        self.status != ApprovalStatus::Rejected
    }

    /// Records an approval or rejection.
    pub fn decide(&mut self, status: ApprovalStatus, by: String, at_ms: u64, reason: Option<String>) {
        self.status = status;
        self.decided_by = Some(by);
        self.decided_at_ms = Some(at_ms);
        self.decision_reason = reason;
    }
}

/// A step in the life of a topic or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionAction {
    /// Requested by its owner.
    Requested,
    /// Approved.
    Approved,
    /// Rejected.
    Rejected,
    /// Settings changed.
    Updated,
    /// Deleted.
    Deleted,
}

impl DecisionAction {
    /// The verb, as in "cannot approve topic ...".
    pub fn verb(self) -> &'static str {
        match self {
            DecisionAction::Requested => "request",
            DecisionAction::Approved => "approve",
            DecisionAction::Rejected => "reject",
            DecisionAction::Updated => "update",
            DecisionAction::Deleted => "delete",
        }
    }
}

impl fmt::Display for DecisionAction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            DecisionAction::Requested => "requested",
            DecisionAction::Approved => "approved",
            DecisionAction::Rejected => "rejected",
            DecisionAction::Updated => "updated",
            DecisionAction::Deleted => "deleted",
        })
    }
}

/// One entry of a topic's or group's history: who did what, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// When, in ms since the Unix epoch (time of the log entry).
    pub at_ms: u64,
    /// Who.
    pub by: String,
    /// What.
    pub action: DecisionAction,
    /// Why, as the person said it.
    pub reason: Option<String>,
    /// What changed, for updates; the owner, for requests.
    pub detail: Option<String>,
}

/// The time format of every admin record (it lives with the clock).
pub use crate::time::format_time_ms;

/// Permission bit: consumers may read the topic.
pub const PERM_READ: u8 = 1;
/// Permission bit: producers may write the topic.
pub const PERM_WRITE: u8 = 2;
/// Read and write: the default permission of a new topic.
pub const PERM_READ_WRITE: u8 = PERM_READ | PERM_WRITE;
/// Deliveries of one message to a consumer group before it goes to the dead-letter queue.
pub const DEFAULT_MAX_RETRIES: u32 = 16;

/// How a consumer group shares a topic's messages among its members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumeMode {
    /// Each message goes to one member of the group.
    #[default]
    Clustering,
    /// Each message goes to every member of the group.
    Broadcasting,
}

/// A topic and where it stands in governance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Name (proto's topic rule).
    pub name: String,
    /// Queues per broker group.
    pub queues: BTreeMap<String, u32>,
    /// Permission bits: [`PERM_READ`], [`PERM_WRITE`].
    pub perm: u8,
    /// Team that owns the topic.
    pub owner: String,
    /// What the topic carries.
    pub description: String,
    /// Where it stands in the approval workflow.
    #[serde(flatten)]
    pub approval: Approval,
    /// Most messages per second producers may send to it; `None`: no limit.
    pub produce_limit: Option<u32>,
}

/// A consumer group and where it stands in governance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    /// Name (proto's group rule).
    pub name: String,
    /// Team that owns the group.
    pub owner: String,
    /// What the group does.
    pub description: String,
    /// Topics the group subscribes to.
    pub topics: BTreeSet<String>,
    /// Where it stands in the approval workflow.
    #[serde(flatten)]
    pub approval: Approval,
    /// Deliveries of one message before it goes to the dead-letter queue.
    pub max_retries: u32,
    /// Clustering or broadcasting.
    pub consume_mode: ConsumeMode,
}

/// A change to a topic's produce limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProduceLimitChange {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Limit producers to this many messages per second.
    Set(u32),
    /// No limit.
    Remove,
}

/// A request for a topic (the nameserver's `RequestTopic` command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRequest {
    /// Topic name.
    pub name: String,
    /// Owning team.
    pub owner: String,
    /// What the topic carries.
    pub description: String,
    /// Queues per broker group; may be empty until an admin places the topic.
    pub queues: BTreeMap<String, u32>,
    /// Permission bits.
    pub perm: u8,
    /// Messages per second; `None`: no limit.
    pub produce_limit: Option<u32>,
    /// Who asks.
    pub requested_by: String,
}

/// What an update changes in a topic (the nameserver's `UpdateTopic` command); `None` keeps a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicChanges {
    /// New queues per broker group.
    pub queues: Option<BTreeMap<String, u32>>,
    /// New permission bits.
    pub perm: Option<u8>,
    /// Produce limit change.
    pub produce_limit: ProduceLimitChange,
    /// New owner.
    pub owner: Option<String>,
    /// New description.
    pub description: Option<String>,
}

/// A request for a consumer group (the nameserver's `RequestGroup` command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRequest {
    /// Group name.
    pub name: String,
    /// Owning team.
    pub owner: String,
    /// What the group does.
    pub description: String,
    /// Topics it subscribes to; each must exist and not be rejected.
    pub topics: BTreeSet<String>,
    /// Deliveries before dead-lettering; `None`: [`DEFAULT_MAX_RETRIES`].
    pub max_retries: Option<u32>,
    /// Clustering or broadcasting.
    pub consume_mode: ConsumeMode,
    /// Who asks.
    pub requested_by: String,
}

/// How to reach a nameserver: what `cluster add-node` sends and the Raft membership stores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Framed-protocol address (Raft RPCs, broker heartbeats, client route lookups).
    pub addr: String,
    /// HTTP address (admin API).
    pub http_addr: String,
    /// Data center of the node.
    pub idc: String,
}

/// A change an operator asks of the metadata (the `command` of an [`AdminWrite::Command`]). The
/// nameserver turns it into the Raft command of the same name; only the commands a person may
/// give are here (brokers register, the controller elects and the alert evaluator records
/// through the nameserver's own commands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminCommand {
    /// Ask for a new topic (or ask again for a rejected one).
    RequestTopic(TopicRequest),
    /// Approve a requested topic.
    ApproveTopic {
        /// Topic name.
        name: String,
        /// Who approves.
        decided_by: String,
        /// Why (optional).
        reason: Option<String>,
    },
    /// Reject a requested topic.
    RejectTopic {
        /// Topic name.
        name: String,
        /// Who rejects.
        decided_by: String,
        /// Why (required).
        reason: String,
    },
    /// Change a topic's placement, permissions, limit, owner or description.
    UpdateTopic {
        /// Topic name.
        name: String,
        /// Who changes it.
        updated_by: String,
        /// Why (optional).
        reason: Option<String>,
        /// What changes.
        #[serde(flatten)]
        changes: TopicChanges,
    },
    /// Delete a topic; its history stays.
    DeleteTopic {
        /// Topic name.
        name: String,
        /// Who deletes it.
        deleted_by: String,
        /// Why (required).
        reason: String,
    },
    /// Ask for a new consumer group (or ask again for a rejected one).
    RequestGroup(GroupRequest),
    /// Approve a requested consumer group; its topics must be approved.
    ApproveGroup {
        /// Group name.
        name: String,
        /// Who approves.
        decided_by: String,
        /// Why (optional).
        reason: Option<String>,
    },
    /// Reject a requested consumer group.
    RejectGroup {
        /// Group name.
        name: String,
        /// Who rejects.
        decided_by: String,
        /// Why (required).
        reason: String,
    },
    /// Delete a consumer group; its history stays.
    DeleteGroup {
        /// Group name.
        name: String,
        /// Who deletes it.
        deleted_by: String,
        /// Why (required).
        reason: String,
    },
    /// A switchover: fence the master of `group` and make `preferred` the next one.
    FenceMaster {
        /// Broker group name.
        group: String,
        /// Broker name: the target. While the group has a master, it must be in sync with it.
        preferred: String,
        /// Who asks.
        by: String,
        /// Why (optional).
        #[serde(default)]
        reason: Option<String>,
    },
    /// Map a CIDR to a data center (replaces the IDC of an existing rule for the same CIDR).
    SetIdcRule {
        /// E.g. `10.1.0.0/16`.
        cidr: String,
        /// Data center name.
        idc: String,
    },
    /// Remove the rule for a CIDR.
    RemoveIdcRule {
        /// E.g. `10.1.0.0/16`.
        cidr: String,
    },
    /// A failover drill: move all production and consumption out of data center `idc`.
    Evacuate {
        /// The data center to empty.
        idc: String,
        /// Who runs the drill.
        by: String,
        /// Why (optional).
        #[serde(default)]
        reason: Option<String>,
    },
    /// End a failover drill: both data centers serve again.
    Restore {
        /// Who runs the drill.
        by: String,
        /// Why (optional).
        #[serde(default)]
        reason: Option<String>,
    },
    /// Replace the client SDK version policy.
    SetSdkPolicy {
        /// Oldest version allowed; `None`: any.
        min_version: Option<String>,
        /// Versions refused.
        blocked_versions: BTreeSet<String>,
        /// Refuse offenders instead of only flagging them.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        refuse: bool,
        /// Minimum per SDK language.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        language_min_versions: BTreeMap<String, String>,
    },
    /// Create a user with the verifier of a secret the client made (never the secret, unless
    /// the user is given RocketMQ access: see [`RocketmqSecret`]).
    CreateUser {
        /// User name.
        name: String,
        /// The secret's SCRAM verifier.
        verifier: StoredVerifier,
        /// Who creates it.
        by: String,
        /// RocketMQ 4.x access (AccessKey = the name, SecretKey = the secret): the secret, sealed
        /// by the nameserver that receives it before it enters the log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rocketmq: Option<RocketmqSecret>,
    },
    /// Replace a user's verifier (a new secret). Its RocketMQ access ends unless `rocketmq`
    /// carries the new secret.
    RotateUser {
        /// User name.
        name: String,
        /// The new secret's SCRAM verifier.
        verifier: StoredVerifier,
        /// Who rotates it.
        by: String,
        /// RocketMQ access with the new secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rocketmq: Option<RocketmqSecret>,
    },
    /// Delete a user.
    DeleteUser {
        /// User name.
        name: String,
        /// Who deletes it.
        by: String,
    },
    /// Add an allow or deny rule (its actions join those of the rule with the same subject,
    /// effect and resource).
    AclAdd {
        /// The rule.
        rule: crate::acl::Rule,
        /// Who adds it.
        by: String,
    },
    /// Remove actions from the allow and deny rules of a subject on a resource.
    AclRevoke {
        /// Whom the rules are about.
        subject: crate::acl::Subject,
        /// The actions to remove.
        actions: BTreeSet<crate::acl::Action>,
        /// The resource pattern, as granted.
        resource: crate::acl::ResourcePattern,
        /// Who revokes.
        by: String,
    },
    /// Replace a user's teams (rules about `team:<name>` and the teams owning topics and groups).
    SetUserTeams {
        /// User name.
        name: String,
        /// The teams; empty: none.
        teams: BTreeSet<String>,
        /// Who sets them.
        by: String,
    },
    /// Make a user a super user (may do everything), or no longer.
    SetSuperUser {
        /// User name.
        name: String,
        /// Whether the user is a super user.
        super_user: bool,
        /// Who decides.
        by: String,
    },
}

/// A write an admin client sends (`NameserverWrite`): a change to the metadata, or to the
/// nameservers' own Raft membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum AdminWrite {
    /// A change to the metadata.
    Command {
        /// The change.
        command: AdminCommand,
    },
    /// Adds a nameserver to the cluster: as a learner until it caught up, then as a voter.
    AddNode {
        /// Its Raft node id.
        id: u64,
        /// Its addresses and IDC.
        node: Node,
    },
    /// Removes a nameserver from the cluster.
    RemoveNode {
        /// Its Raft node id.
        id: u64,
    },
}

/// The body of a `NameserverWrite` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminWriteRequest {
    /// The change.
    pub op: AdminWrite,
    /// Set by a nameserver forwarding the write to the leader, so it is forwarded at most once;
    /// clients leave it false.
    #[serde(default)]
    pub forwarded: bool,
}

/// A user's secret for RocketMQ AccessKey signatures, which need the secret itself
/// ([`crate::remoting::acl`]). An admin client sends it `Plain` over its authenticated connection;
/// the nameserver that receives it seals it ([`crate::remoting::acl::AccessKeySealer`]) before
/// the command enters the Raft log, which only ever holds `Sealed`. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "form")]
pub enum RocketmqSecret {
    /// As the admin client sends it.
    Plain {
        /// The secret.
        secret: String,
    },
    /// Sealed with the cluster's node secret, bound to the user name.
    Sealed {
        /// `v1:` and hex.
        sealed: String,
    },
}

impl std::fmt::Debug for RocketmqSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RocketmqSecret::Plain { .. } => formatter.write_str("RocketmqSecret::Plain(<redacted>)"),
            RocketmqSecret::Sealed { .. } => formatter.write_str("RocketmqSecret::Sealed(<sealed>)"),
        }
    }
}

/// A SCRAM verifier ([`crate::auth::Verifier`]) as stored and sent in JSON: hex fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredVerifier {
    /// Salt, hex.
    pub salt: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `StoredKey`, hex.
    pub stored_key: String,
    /// `ServerKey`, hex.
    pub server_key: String,
}

impl StoredVerifier {
    /// The hex form of a verifier.
    pub fn from_verifier(verifier: &crate::auth::Verifier) -> StoredVerifier {
        use crate::auth::to_hex;
        StoredVerifier {
            salt: to_hex(&verifier.salt),
            iterations: verifier.iterations,
            stored_key: to_hex(&verifier.stored_key),
            server_key: to_hex(&verifier.server_key),
        }
    }

    /// The verifier, checked to be well formed; the error names the field that is not.
    pub fn to_verifier(&self) -> Result<crate::auth::Verifier, String> {
        use crate::auth::from_hex;
        let verifier = crate::auth::Verifier {
            salt: from_hex(&self.salt).ok_or("salt is not hex")?,
            iterations: self.iterations,
            stored_key: from_hex(&self.stored_key).ok_or("stored_key is not hex")?,
            server_key: from_hex(&self.server_key).ok_or("server_key is not hex")?,
        };
        verifier.check().map_err(|error| error.to_string())?;
        Ok(verifier)
    }
}
