//! The replicated metadata and the one function that changes it: [`MetadataState::apply`].
//!
//! Pure code: no openraft types, no clock, no I/O. Every node applies the same [`Command`]s in the
//! same order with the same timestamps (taken from the log entry, see [`crate::types::Request`]) and
//! must end in the same state, so everything here is deterministic: ordered maps only, time only
//! from the caller, and a command that fails changes nothing.
//!
//! One module per concept, each lent only the part of the state it changes:
//! - [`commands`]: [`Command`] and [`Response`], the log entry's vocabulary;
//! - [`governance`]: topics and consumer groups, requested, approved or rejected, changed and
//!   deleted, sharing one approval record and flow ([`approval`]);
//! - [`brokers`]: broker groups, their members, elections and fencing;
//! - [`idc`]: the IDC map and failover drills;
//! - [`sdk`]: the client SDK version policy;
//! - [`users`]: users and their SCRAM verifiers; [`audit`]: the log of admin actions;
//! - [`acl`]: authorization rules, super users and users' teams;
//! - [`continuity`]: data centers the nameservers declared lost;
//! - [`error`]: why a command is refused.
//!
//! The layering, bottom up: `approval` < `error` < `governance`, `brokers`, `sdk` < `idc` <
//! `commands` < this module. No module of the state names anything outside it, so the rest of
//! the crate (`types`, `error`, the Raft storage) builds on it without a circle.

pub mod acl;
pub mod alerts;
pub mod approval;
pub mod audit;
pub mod brokers;
pub mod commands;
pub mod continuity;
pub mod error;
pub mod governance;
pub mod idc;
pub mod sdk;
pub mod users;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use alerts::{Alert, AlertStatus, AlertUpdate};
pub use approval::{Approval, ApprovalStatus, Decision, DecisionAction, Subject, format_time_ms};
pub use audit::{AuditEntry, AuditLog, Origin};
pub use brokers::{
    BrokerGroup, BrokerMember, BrokerRegistration, BrokerRole, EPOCH_HISTORY_LEN, EpochAction, EpochChange,
    validate_broker_identity, validate_broker_topics,
};
pub use commands::{Command, Response};
pub use continuity::{Continuity, ContinuityEvent, LostIdc};
pub use error::{CommandError, SdkVersionError};
pub use governance::{
    ConsumeMode, ConsumerGroup, DEFAULT_MAX_RETRIES, GroupRequest, PERM_READ, PERM_READ_WRITE, PERM_WRITE,
    ProduceLimitChange, Topic, TopicChanges, TopicRequest,
};
pub use idc::{DRILL_HISTORY_LEN, Drill, DrillAction, DrillStep, IdcRule, parse_cidr};
pub use sdk::{SdkPolicy, SdkPolicyRules, parse_version};
pub use users::{StoredVerifier, User, UserView};

use brokers::Brokers;
use governance::Governance;
use idc::DrillSteps;

/// Everything the nameservers agree on. Start with [`MetadataState::default`], change only with
/// [`MetadataState::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataState {
    broker_groups: BTreeMap<String, BrokerGroup>,
    topics: BTreeMap<String, Topic>,
    consumer_groups: BTreeMap<String, ConsumerGroup>,
    // A list, not a map: the order breaks ties between rules of the same prefix length.
    idc_rules: Vec<IdcRule>,
    sdk_policy: SdkPolicy,
    topic_history: BTreeMap<String, Vec<Decision>>,
    group_history: BTreeMap<String, Vec<Decision>>,
    // Time of the last applied command. Decision times never go backwards, even when a new leader's
    // clock is behind the old one's.
    clock_ms: u64,
    // Bumped by every change to topics and consumer groups: brokers refetch what they may serve
    // when it moves.
    #[serde(default)]
    metadata_version: u64,
    #[serde(default)]
    drill: Drill,
    // Alerts by de-duplication key (rule/subject), firing and resolved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    alerts: BTreeMap<String, Alert>,
    // Left out while empty, so a state that never lost a data center is written as before.
    #[serde(default, skip_serializing_if = "Continuity::is_empty")]
    continuity: Continuity,
    // Left out while empty, like the two below: a state without users or admin actions is
    // written as before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    users: BTreeMap<String, User>,
    #[serde(default, skip_serializing_if = "AuditLog::is_empty")]
    audit: AuditLog,
    #[serde(default, skip_serializing_if = "acl::AclState::is_empty")]
    acl: acl::AclState,
}

impl MetadataState {
    /// Broker groups by name.
    pub fn broker_groups(&self) -> &BTreeMap<String, BrokerGroup> {
        &self.broker_groups
    }

    /// Topics by name, whatever their status.
    pub fn topics(&self) -> &BTreeMap<String, Topic> {
        &self.topics
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// Consumer groups by name, whatever their status.
    pub fn consumer_groups(&self) -> &BTreeMap<String, ConsumerGroup> {
        &self.consumer_groups
    }

    /// One consumer group.
    pub fn consumer_group(&self, name: &str) -> Option<&ConsumerGroup> {
        self.consumer_groups.get(name)
    }

    /// IDC rules in the order they were added.
    pub fn idc_rules(&self) -> &[IdcRule] {
        &self.idc_rules
    }

    /// Failover drills: what is evacuated now, and the steps taken.
    pub fn drill(&self) -> &Drill {
        &self.drill
    }

    /// Data centers evacuated by a drill, for routes and brokers.
    pub fn evacuated_idcs(&self) -> Vec<String> {
        self.drill.evacuated.iter().cloned().collect()
    }

    /// Data centers declared lost, and the recent declarations and clearances.
    pub fn continuity(&self) -> &Continuity {
        &self.continuity
    }

    /// Data centers declared lost, sorted, for routes.
    pub fn lost_idcs(&self) -> Vec<String> {
        self.continuity.lost.keys().cloned().collect()
    }

    /// Every data center the cluster knows: of its brokers and its IDC rules, sorted.
    pub fn known_idcs(&self) -> BTreeSet<String> {
        idc::known_idcs(&self.broker_groups, &self.idc_rules)
    }

    /// The data center a broker group serves from: its master's; while it has none, that of its
    /// last elected master (so its queues do not change sides during a failover); empty when
    /// neither is known.
    pub fn group_idc(&self, group: &str) -> &str {
        self.broker_groups.get(group).map_or("", BrokerGroup::idc)
    }

    /// The client SDK version policy.
    pub fn sdk_policy(&self) -> &SdkPolicy {
        &self.sdk_policy
    }

    /// Version of the topics and consumer groups: moves with every change to them, so brokers
    /// know when to fetch what they may serve again.
    pub fn metadata_version(&self) -> u64 {
        self.metadata_version
    }

    /// Alerts by de-duplication key (`rule/subject`), firing and resolved.
    pub fn alerts(&self) -> &BTreeMap<String, Alert> {
        &self.alerts
    }

    /// Users by name, with their verifiers.
    pub fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    /// The authorization model as nodes decide with it ([`meridian_proto::acl`]): rules, super
    /// users, teams, and the owners of approved topics and groups.
    pub fn acl(&self) -> meridian_proto::acl::Acl {
        acl::snapshot(&self.acl, &self.topics, &self.consumer_groups)
    }

    /// Whether `user` is a super user (without building the whole model).
    pub fn is_super_user(&self, user: &str) -> bool {
        self.acl.super_users.contains(user)
    }

    /// The audit log of admin actions.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Time of the last applied command, in ms since the Unix epoch.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The decisions about a topic, oldest first (empty for a name never requested).
    pub fn topic_history(&self, name: &str) -> &[Decision] {
        self.topic_history.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// The decisions about a consumer group, oldest first.
    pub fn group_history(&self, name: &str) -> &[Decision] {
        self.group_history.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// The data center of an address: the rule with the longest matching prefix; among rules of
    /// the same length, the one added first. IPv4-mapped IPv6 addresses match IPv4 rules.
    pub fn idc_for(&self, address: IpAddr) -> Option<&str> {
        self.idc_rule_for(address).map(|rule| rule.idc.as_str())
    }

    /// The rule [`MetadataState::idc_for`] goes by.
    pub fn idc_rule_for(&self, address: IpAddr) -> Option<&IdcRule> {
        idc::rule_for(&self.idc_rules, address)
    }

    /// Applies one command at `now_ms` (the time recorded in its log entry). Deterministic: the
    /// same commands at the same times give the same state on every node. On error the state is
    /// unchanged.
    pub fn apply(&mut self, command: Command, now_ms: u64) -> Result<Response, CommandError> {
        let now_ms = now_ms.max(self.clock_ms);
        let governance = command.is_governance();
        let (origin, command) = match command {
            Command::Audited { origin, command } => (Some(origin), *command),
            command => (None, command),
        };
        let audited = audit::describe(&command);
        let response = match command {
            Command::RequestTopic(request) => Response::Topic(self.governance().request_topic(now_ms, request)?),
            Command::ApproveTopic {
                name,
                decided_by,
                reason,
            } => self.decide(
                now_ms,
                Subject::Topic,
                name,
                decided_by,
                DecisionAction::Approved,
                reason,
            )?,
            Command::RejectTopic {
                name,
                decided_by,
                reason,
            } => self.decide(
                now_ms,
                Subject::Topic,
                name,
                decided_by,
                DecisionAction::Rejected,
                Some(reason),
            )?,
            Command::UpdateTopic {
                name,
                updated_by,
                reason,
                changes,
            } => Response::Topic(
                self.governance()
                    .update_topic(now_ms, name, updated_by, reason, changes)?,
            ),
            Command::DeleteTopic {
                name,
                deleted_by,
                reason,
            } => {
                self.governance().delete_topic(now_ms, name, deleted_by, reason)?;
                Response::Done
            }
            Command::RequestGroup(request) => Response::Group(self.governance().request_group(now_ms, request)?),
            Command::ApproveGroup {
                name,
                decided_by,
                reason,
            } => self.decide(
                now_ms,
                Subject::Group,
                name,
                decided_by,
                DecisionAction::Approved,
                reason,
            )?,
            Command::RejectGroup {
                name,
                decided_by,
                reason,
            } => self.decide(
                now_ms,
                Subject::Group,
                name,
                decided_by,
                DecisionAction::Rejected,
                Some(reason),
            )?,
            Command::DeleteGroup {
                name,
                deleted_by,
                reason,
            } => {
                self.governance().delete_group(now_ms, name, deleted_by, reason)?;
                Response::Done
            }
            Command::RegisterBroker { group, member, topics } => {
                let epoch = self.brokers().register(now_ms, group.clone(), member, topics)?;
                Response::Broker { group, epoch }
            }
            Command::ElectMaster {
                group,
                member,
                epoch,
                reason,
            } => {
                let change = self
                    .brokers()
                    .elect_master(now_ms, group.clone(), member, epoch, reason)?;
                Response::EpochChange { group, change }
            }
            Command::FenceMaster {
                group,
                preferred,
                by,
                reason,
            } => {
                let change = self
                    .brokers()
                    .fence_master(now_ms, group.clone(), preferred, by, reason)?;
                Response::EpochChange { group, change }
            }
            Command::UnregisterBroker { group, member } => {
                self.brokers().unregister(group, member)?;
                Response::Done
            }
            Command::SetIdcRule { cidr, idc } => {
                let (rule, overlaps) = idc::set_rule(&mut self.idc_rules, cidr, idc)?;
                Response::IdcRule { rule, overlaps }
            }
            Command::RemoveIdcRule { cidr } => {
                idc::remove_rule(&mut self.idc_rules, cidr)?;
                Response::Done
            }
            Command::Evacuate { idc, by, reason } => {
                self.drill
                    .evacuate(now_ms, idc, by, reason, &self.broker_groups, &self.idc_rules)?;
                Response::Done
            }
            Command::Restore { by, reason } => {
                self.drill.restore(now_ms, by, reason)?;
                Response::Done
            }
            Command::DeclareIdcLost { idc, reason } => {
                self.continuity.declare_lost(now_ms, idc, reason)?;
                Response::Done
            }
            Command::ClearIdcLost { idc, reason } => {
                self.continuity.clear_lost(now_ms, idc, reason)?;
                Response::Done
            }
            Command::SetSdkPolicy {
                min_version,
                blocked_versions,
                refuse,
                language_min_versions,
            } => {
                self.sdk_policy = SdkPolicy::validated(SdkPolicy {
                    min_version,
                    blocked_versions,
                    refuse,
                    language_min_versions,
                })?;
                Response::Done
            }
            Command::RecordAlert(update) => Response::Alert(alerts::record(&mut self.alerts, now_ms, update)?),
            Command::CreateUser {
                name,
                verifier,
                by,
                rocketmq,
            } => {
                self.user_store().create(now_ms, name, verifier, by, rocketmq)?;
                Response::Done
            }
            Command::RotateUser {
                name,
                verifier,
                by,
                rocketmq,
            } => {
                self.user_store().rotate(now_ms, name, verifier, by, rocketmq)?;
                Response::Done
            }
            Command::DeleteUser { name, by } => {
                self.user_store().delete(name.clone(), by)?;
                self.acl_store().forget_user(&name);
                Response::Done
            }
            Command::AclAdd { rule, by } => {
                self.acl_store().add(rule, &by)?;
                Response::Done
            }
            Command::AclRevoke {
                subject,
                actions,
                resource,
                by,
            } => {
                self.acl_store().revoke(&subject, &actions, &resource, &by)?;
                Response::Done
            }
            Command::SetUserTeams { name, teams, by } => {
                self.acl_store().set_teams(name, teams, &by)?;
                Response::Done
            }
            Command::SetSuperUser { name, super_user, by } => {
                self.acl_store().set_super_user(name, super_user, &by)?;
                Response::Done
            }
            Command::Audited { .. } => {
                return Err(CommandError::Invalid {
                    message: "an audited command cannot wrap another one".into(),
                });
            }
        };
        if let Some(action) = audited {
            self.audit.record(now_ms, origin.as_ref(), action);
        }
        self.clock_ms = now_ms;
        if governance {
            self.metadata_version += 1;
        }
        Ok(response)
    }

    /// Approves or rejects a topic or group, answering with it as decided.
    fn decide(
        &mut self,
        now_ms: u64,
        subject: Subject,
        name: String,
        decided_by: String,
        action: DecisionAction,
        reason: Option<String>,
    ) -> Result<Response, CommandError> {
        self.governance()
            .decide(now_ms, subject, name.clone(), decided_by, action, reason)?;
        Ok(match subject {
            Subject::Topic => Response::Topic(self.topics[&name].clone()),
            Subject::Group => Response::Group(self.consumer_groups[&name].clone()),
        })
    }

    fn governance(&mut self) -> Governance<'_> {
        Governance {
            topics: &mut self.topics,
            consumer_groups: &mut self.consumer_groups,
            topic_history: &mut self.topic_history,
            group_history: &mut self.group_history,
        }
    }

    fn user_store(&mut self) -> users::Users<'_> {
        users::Users { users: &mut self.users }
    }

    fn acl_store(&mut self) -> acl::AclStore<'_> {
        acl::AclStore {
            acl: &mut self.acl,
            users: &self.users,
        }
    }

    fn brokers(&mut self) -> Brokers<'_> {
        Brokers {
            groups: &mut self.broker_groups,
        }
    }
}
