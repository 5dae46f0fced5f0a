//! [`Command`], every change to the metadata (one Raft log entry each), and [`Response`], what
//! applying one returns. Their JSON is what the Raft log and forwarded writes carry: variant and
//! field names are part of the on-disk format.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::alerts::AlertUpdate;
use super::brokers::BrokerRegistration;
use super::governance::{GroupRequest, TopicChanges, TopicRequest};
use super::users::{RocketmqSecret, StoredVerifier};

/// What a successful command returns, as clients read it (defined in the admin contract).
pub use meridian_proto::admin::read::Response;

/// Every change to the metadata. Each is one Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
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
    /// A broker joins its group or reports itself again.
    RegisterBroker {
        /// Broker group name.
        group: String,
        /// The broker.
        member: BrokerRegistration,
        /// Topics it serves, with their queue counts.
        topics: BTreeMap<String, u32>,
    },
    /// The failover controller makes `member` the master of `group` at `epoch`. Applied only at
    /// the group's next epoch (`group.epoch + 1`), so a stale or repeated decision cannot elect
    /// twice; the one exception is a group's first master (epoch 0, never had one), which may
    /// start above the epochs its brokers remember from an older nameserver cluster.
    ElectMaster {
        /// Broker group name.
        group: String,
        /// Broker name: the new master.
        member: String,
        /// The new epoch.
        epoch: u64,
        /// Why, for logs and the group's history.
        reason: String,
    },
    /// A switchover: raises the epoch with no master (the master is fenced: it stops accepting
    /// writes once its lease lapsed) and names `preferred` as the next master, which the
    /// controller elects once the fenced master's lease surely lapsed.
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
    /// A broker leaves its group.
    UnregisterBroker {
        /// Broker group name.
        group: String,
        /// Broker name.
        member: String,
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
    /// A failover drill: move all production and consumption out of data center `idc`. Its
    /// brokers stop taking writes; consumers there hand their queues to consumers elsewhere.
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
    /// The Raft leader declares data center `idc` lost: none of its brokers was heard for the
    /// configured time (`[continuity] idc_lost_after_ms`). Repeating it changes nothing.
    DeclareIdcLost {
        /// The data center.
        idc: String,
        /// Why: which nodes were silent, and for how long.
        reason: String,
    },
    /// The Raft leader clears a lost data center: its brokers are heard again.
    ClearIdcLost {
        /// The data center.
        idc: String,
        /// Why: which nodes came back.
        reason: String,
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
    /// An alert changes state (written by the alert evaluator on the leader only).
    RecordAlert(AlertUpdate),
    /// Create a user with the verifier of a secret the client made (never the secret).
    CreateUser {
        /// User name.
        name: String,
        /// The secret's SCRAM verifier.
        verifier: StoredVerifier,
        /// Who creates it.
        by: String,
        /// RocketMQ access: always `Sealed` in the log (the service seals `Plain` before writing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rocketmq: Option<RocketmqSecret>,
    },
    /// Replace a user's verifier: the old secret stops working for new connections.
    RotateUser {
        /// User name.
        name: String,
        /// The new secret's SCRAM verifier.
        verifier: StoredVerifier,
        /// Who rotates it.
        by: String,
        /// RocketMQ access with the new secret (`Sealed`); `None` ends RocketMQ access.
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
    /// Add an allow or deny rule ([`super::acl`]).
    AclAdd {
        /// The rule.
        rule: meridian_proto::acl::Rule,
        /// Who adds it.
        by: String,
    },
    /// Remove actions from the allow and deny rules of a subject on a resource.
    AclRevoke {
        /// Whom the rules are about.
        subject: meridian_proto::acl::Subject,
        /// The actions to remove.
        actions: BTreeSet<meridian_proto::acl::Action>,
        /// The resource pattern, as granted.
        resource: meridian_proto::acl::ResourcePattern,
        /// Who revokes.
        by: String,
    },
    /// Replace a user's teams.
    SetUserTeams {
        /// User name.
        name: String,
        /// The teams; empty: none.
        teams: BTreeSet<String>,
        /// Who sets them.
        by: String,
    },
    /// Make a user a super user, or no longer.
    SetSuperUser {
        /// User name.
        name: String,
        /// Whether the user is a super user.
        super_user: bool,
        /// Who decides.
        by: String,
    },
    /// An admin command with where it came from, for the audit log ([`super::audit`]).
    Audited {
        /// Who sent it, from where.
        origin: Origin,
        /// The command.
        command: Box<Command>,
    },
}

impl Command {
    /// Whether the command changes topics or consumer groups (what brokers serve).
    pub fn is_governance(&self) -> bool {
        matches!(
            self,
            Command::RequestTopic(_)
                | Command::ApproveTopic { .. }
                | Command::RejectTopic { .. }
                | Command::UpdateTopic { .. }
                | Command::DeleteTopic { .. }
                | Command::RequestGroup(_)
                | Command::ApproveGroup { .. }
                | Command::RejectGroup { .. }
                | Command::DeleteGroup { .. }
                // Brokers enforce the SDK policy, so they fetch it like approvals.
                | Command::SetSdkPolicy { .. }
                // Brokers authenticate users with the verifiers they fetch with their metadata.
                | Command::CreateUser { .. }
                | Command::RotateUser { .. }
                | Command::DeleteUser { .. }
                // Brokers authorize requests with the ACL they fetch with their metadata.
                | Command::AclAdd { .. }
                | Command::AclRevoke { .. }
                | Command::SetUserTeams { .. }
                | Command::SetSuperUser { .. }
        ) || matches!(self, Command::Audited { command, .. } if command.is_governance())
    }
}

/// Where an admin request came from, recorded by the node that received it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// The client's address (`ip:port`), as the receiving node saw it.
    #[serde(default)]
    pub from: String,
    /// The authenticated user; `None` when the channel was not authenticated.
    #[serde(default)]
    pub user: Option<String>,
}
