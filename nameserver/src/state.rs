//! The replicated metadata and the one function that changes it: [`MetadataState::apply`].
//!
//! Pure code: no openraft types, no clock, no I/O. Every node applies the same [`Command`]s in the
//! same order with the same timestamps (taken from the log entry, see [`crate::types::Request`]) and
//! must end in the same state, so everything here is deterministic: ordered maps only, time only
//! from the caller, and a command that fails changes nothing.
//!
//! Governance: auto-create is off. A topic or consumer group is requested with an owner, then
//! approved or rejected; each step is appended to its history (who, when, what, why), which is
//! never rewritten, even when the topic or group is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use meridian_proto::validate::{validate_group, validate_queue_count, validate_topic};
use serde::{Deserialize, Serialize};

use crate::error::{CommandError, SdkVersionError, Subject};

/// Permission bit: consumers may read the topic.
pub const PERM_READ: u8 = 1;
/// Permission bit: producers may write the topic.
pub const PERM_WRITE: u8 = 2;
/// Read and write: the default permission of a new topic.
pub const PERM_READ_WRITE: u8 = PERM_READ | PERM_WRITE;
/// Deliveries of one message to a consumer group before it goes to the dead-letter queue.
pub const DEFAULT_MAX_RETRIES: u32 = 16;

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

/// Role of a broker within its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerRole {
    /// Accepts writes and replicates them to the slaves.
    Master,
    /// Holds a replica of the master's commitlog.
    Slave,
}

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

/// One broker process of a broker group, as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMember {
    /// Name of the broker, unique within its group.
    pub name: String,
    /// Framed-protocol address clients connect to.
    pub addr: String,
    /// Data center of the broker (empty: unknown).
    pub idc: String,
    /// Role the broker last reported.
    pub role: BrokerRole,
    /// Epoch the broker last reported.
    pub epoch: u64,
    /// Greatest commitlog offset the broker holds.
    pub max_offset: u64,
    /// When the broker last registered, in ms since the Unix epoch (time of the log entry).
    /// Heartbeats between registrations are not replicated (see [`crate::liveness`]).
    pub last_heartbeat_ms: u64,
    /// Topics the broker reported serving, with their queue counts.
    pub topics: BTreeMap<String, u32>,
    /// Digest of the registration ([`meridian_proto::messages::registration_digest`]): a
    /// heartbeat carrying the same digest needs no new registration.
    #[serde(default)]
    pub registration_digest: u64,
}

/// A master and its slaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerGroup {
    /// Name of the group.
    pub name: String,
    /// Highest epoch seen in the group; brokers obey the highest epoch they have seen.
    pub epoch: u64,
    /// Members by name.
    pub members: BTreeMap<String, BrokerMember>,
}

impl BrokerGroup {
    /// The member that is master at the group's epoch, if any.
    pub fn master(&self) -> Option<&BrokerMember> {
        self.members
            .values()
            .find(|member| member.role == BrokerRole::Master && member.epoch == self.epoch)
    }
}

/// What a broker says about itself when it registers (and, later, on each heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// Name of the broker, unique within its group.
    pub name: String,
    /// Framed-protocol address clients connect to.
    pub addr: String,
    /// Data center of the broker (empty: unknown).
    pub idc: String,
    /// Role the broker believes it has.
    pub role: BrokerRole,
    /// Highest epoch the broker has seen.
    pub epoch: u64,
    /// Greatest commitlog offset the broker holds.
    pub max_offset: u64,
    /// Digest of everything registered ([`meridian_proto::messages::registration_digest`]).
    #[serde(default)]
    pub registration_digest: u64,
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
    /// Approval status.
    pub status: ApprovalStatus,
    /// Who requested it.
    pub requested_by: String,
    /// When it was requested, in ms since the Unix epoch.
    pub requested_at_ms: u64,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When it was approved or rejected.
    pub decided_at_ms: Option<u64>,
    /// Why it was approved or rejected.
    pub decision_reason: Option<String>,
    /// Deliveries of one message before it goes to the dead-letter queue.
    pub max_retries: u32,
    /// Clustering or broadcasting.
    pub consume_mode: ConsumeMode,
}

/// One rule of the IDC map: addresses in `network/prefix_len` are in data center `idc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdcRule {
    /// Network address with the host bits zero.
    pub network: IpAddr,
    /// Prefix length in bits.
    pub prefix_len: u8,
    /// Data center name.
    pub idc: String,
}

impl IdcRule {
    /// The rule's CIDR in canonical form, e.g. `10.1.0.0/16`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix_len)
    }

    fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => prefix_matches(
                u128::from(network.to_bits()),
                u128::from(address.to_bits()),
                32,
                self.prefix_len,
            ),
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                prefix_matches(network.to_bits(), address.to_bits(), 128, self.prefix_len)
            }
            _ => false,
        }
    }
}

fn prefix_matches(network: u128, address: u128, width: u8, prefix_len: u8) -> bool {
    let host_bits = u32::from(width - prefix_len);
    network.checked_shr(host_bits).unwrap_or(0) == address.checked_shr(host_bits).unwrap_or(0)
}

/// Parses a CIDR such as `10.1.0.0/16` or `fd00::/8` with std's address parser. Host bits must be
/// zero: `10.1.2.3/16` is refused with the network it probably meant.
pub fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8), CommandError> {
    let invalid = |why: String| CommandError::Invalid {
        message: format!("IDC rule {cidr:?} is invalid: {why}"),
    };
    let Some((address, prefix)) = cidr.trim().split_once('/') else {
        return Err(invalid(
            "write it as ADDRESS/PREFIX, e.g. 10.1.0.0/16 or fd00::/8".into(),
        ));
    };
    let network: IpAddr = address
        .parse()
        .map_err(|_| invalid(format!("{address:?} is not an IPv4 or IPv6 address")))?;
    let width: u8 = if network.is_ipv4() { 32 } else { 128 };
    let prefix_len: u8 = prefix
        .parse()
        .ok()
        .filter(|prefix_len| *prefix_len <= width)
        .ok_or_else(|| invalid(format!("prefix {prefix:?} must be a number from 0 to {width}")))?;
    let bits = match network {
        IpAddr::V4(network) => u128::from(network.to_bits()),
        IpAddr::V6(network) => network.to_bits(),
    };
    let host_bits = u32::from(width - prefix_len);
    let network_bits = bits
        .checked_shr(host_bits)
        .unwrap_or(0)
        .checked_shl(host_bits)
        .unwrap_or(0);
    if network_bits != bits {
        let meant = match network {
            IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from_bits(network_bits as u32)),
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from_bits(network_bits)),
        };
        return Err(invalid(format!(
            "host bits are set; did you mean {meant}/{prefix_len}?"
        )));
    }
    Ok((network, prefix_len))
}

/// Which client SDK versions may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdkPolicy {
    /// Oldest version allowed (`MAJOR.MINOR.PATCH`); `None`: any.
    pub min_version: Option<String>,
    /// Versions refused whatever `min_version` says (known-bad releases), compared as written.
    pub blocked_versions: BTreeSet<String>,
}

impl SdkPolicy {
    /// Whether a client reporting `version` may connect.
    pub fn check(&self, version: &str) -> Result<(), SdkVersionError> {
        if self.blocked_versions.contains(version) {
            return Err(SdkVersionError::Blocked {
                version: version.to_owned(),
            });
        }
        let Some(min_version) = &self.min_version else {
            return Ok(());
        };
        let parsed = parse_version(version).ok_or_else(|| SdkVersionError::Unparsable {
            version: version.to_owned(),
        })?;
        // The policy was validated when it was set, so its minimum parses.
        let min = parse_version(min_version).unwrap_or([0; 3]);
        if parsed < min {
            return Err(SdkVersionError::TooOld {
                version: version.to_owned(),
                min_version: min_version.clone(),
            });
        }
        Ok(())
    }
}

/// `MAJOR[.MINOR[.PATCH]]`, ignoring a `-pre-release` or `+build` suffix for ordering.
pub fn parse_version(version: &str) -> Option<[u64; 3]> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let mut parts = [0_u64; 3];
    let mut split = core.split('.');
    for (slot, part) in parts.iter_mut().zip(split.by_ref()) {
        if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    if split.next().is_some() {
        return None;
    }
    Some(parts)
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
    /// Replace the client SDK version policy.
    SetSdkPolicy {
        /// Oldest version allowed; `None`: any.
        min_version: Option<String>,
        /// Versions refused.
        blocked_versions: BTreeSet<String>,
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
        )
    }
}

/// What a successful command returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Nothing to report (also the answer to Raft's own blank and membership entries).
    Done,
    /// The topic as it is after the command.
    Topic(Topic),
    /// The consumer group as it is after the command.
    Group(ConsumerGroup),
    /// The broker's group and its epoch after the registration.
    Broker {
        /// Broker group name.
        group: String,
        /// The group's epoch, which the broker must obey.
        epoch: u64,
    },
}

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

    /// The client SDK version policy.
    pub fn sdk_policy(&self) -> &SdkPolicy {
        &self.sdk_policy
    }

    /// Version of the topics and consumer groups: moves with every change to them, so brokers
    /// know when to fetch what they may serve again.
    pub fn metadata_version(&self) -> u64 {
        self.metadata_version
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
        let address = address.to_canonical();
        let mut best: Option<&IdcRule> = None;
        for rule in self.idc_rules.iter().filter(|rule| rule.contains(address)) {
            if best.is_none_or(|best| rule.prefix_len > best.prefix_len) {
                best = Some(rule);
            }
        }
        best.map(|rule| rule.idc.as_str())
    }

    /// Applies one command at `now_ms` (the time recorded in its log entry). Deterministic: the
    /// same commands at the same times give the same state on every node. On error the state is
    /// unchanged.
    pub fn apply(&mut self, command: Command, now_ms: u64) -> Result<Response, CommandError> {
        let now_ms = now_ms.max(self.clock_ms);
        let governance = command.is_governance();
        let response = match command {
            Command::RequestTopic(request) => self.request_topic(now_ms, request)?,
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
            } => self.update_topic(now_ms, name, updated_by, reason, changes)?,
            Command::DeleteTopic {
                name,
                deleted_by,
                reason,
            } => self.delete_topic(now_ms, name, deleted_by, reason)?,
            Command::RequestGroup(request) => self.request_group(now_ms, request)?,
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
            } => self.delete_group(now_ms, name, deleted_by, reason)?,
            Command::RegisterBroker { group, member, topics } => self.register_broker(now_ms, group, member, topics)?,
            Command::UnregisterBroker { group, member } => self.unregister_broker(group, member)?,
            Command::SetIdcRule { cidr, idc } => self.set_idc_rule(cidr, idc)?,
            Command::RemoveIdcRule { cidr } => self.remove_idc_rule(cidr)?,
            Command::SetSdkPolicy {
                min_version,
                blocked_versions,
            } => self.set_sdk_policy(min_version, blocked_versions)?,
        };
        self.clock_ms = now_ms;
        if governance {
            self.metadata_version += 1;
        }
        Ok(response)
    }

    fn request_topic(&mut self, now_ms: u64, request: TopicRequest) -> Result<Response, CommandError> {
        validate_topic(&request.name)?;
        require_person("owner", &request.owner)?;
        require_person("requested_by", &request.requested_by)?;
        validate_queues(&request.queues)?;
        validate_perm(request.perm)?;
        validate_produce_limit(request.produce_limit)?;
        if let Some(existing) = self.topics.get(&request.name)
            && existing.status != ApprovalStatus::Rejected
        {
            return Err(CommandError::AlreadyRequested {
                subject: Subject::Topic,
                name: request.name,
                requested_by: existing.requested_by.clone(),
                requested_at_ms: existing.requested_at_ms,
                status: existing.status,
            });
        }
        let topic = Topic {
            name: request.name.clone(),
            queues: request.queues,
            perm: request.perm,
            owner: request.owner.clone(),
            description: request.description,
            status: ApprovalStatus::Requested,
            requested_by: request.requested_by.clone(),
            requested_at_ms: now_ms,
            decided_by: None,
            decided_at_ms: None,
            decision_reason: None,
            produce_limit: request.produce_limit,
        };
        self.topics.insert(request.name.clone(), topic.clone());
        push_history(
            &mut self.topic_history,
            request.name,
            Decision {
                at_ms: now_ms,
                by: request.requested_by,
                action: DecisionAction::Requested,
                reason: None,
                detail: Some(format!("owner {}", request.owner)),
            },
        );
        Ok(Response::Topic(topic))
    }

    fn request_group(&mut self, now_ms: u64, request: GroupRequest) -> Result<Response, CommandError> {
        validate_group(&request.name)?;
        require_person("owner", &request.owner)?;
        require_person("requested_by", &request.requested_by)?;
        if request.topics.is_empty() {
            return Err(CommandError::Invalid {
                message: format!(
                    "consumer group {:?} subscribes to no topic: name at least one topic",
                    request.name
                ),
            });
        }
        for topic in &request.topics {
            validate_topic(topic)?;
            match self.topics.get(topic) {
                None => {
                    return Err(CommandError::NotFound {
                        subject: Subject::Topic,
                        name: topic.clone(),
                    });
                }
                Some(existing) if existing.status == ApprovalStatus::Rejected => {
                    return Err(CommandError::TopicNotApproved {
                        group: request.name,
                        topic: topic.clone(),
                        status: existing.status,
                    });
                }
                Some(_) => {}
            }
        }
        if let Some(existing) = self.consumer_groups.get(&request.name)
            && existing.status != ApprovalStatus::Rejected
        {
            return Err(CommandError::AlreadyRequested {
                subject: Subject::Group,
                name: request.name,
                requested_by: existing.requested_by.clone(),
                requested_at_ms: existing.requested_at_ms,
                status: existing.status,
            });
        }
        let group = ConsumerGroup {
            name: request.name.clone(),
            owner: request.owner.clone(),
            description: request.description,
            topics: request.topics,
            status: ApprovalStatus::Requested,
            requested_by: request.requested_by.clone(),
            requested_at_ms: now_ms,
            decided_by: None,
            decided_at_ms: None,
            decision_reason: None,
            max_retries: request.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            consume_mode: request.consume_mode,
        };
        self.consumer_groups.insert(request.name.clone(), group.clone());
        push_history(
            &mut self.group_history,
            request.name,
            Decision {
                at_ms: now_ms,
                by: request.requested_by,
                action: DecisionAction::Requested,
                reason: None,
                detail: Some(format!("owner {}", request.owner)),
            },
        );
        Ok(Response::Group(group))
    }

    /// Approves or rejects a requested topic or group.
    fn decide(
        &mut self,
        now_ms: u64,
        subject: Subject,
        name: String,
        decided_by: String,
        action: DecisionAction,
        reason: Option<String>,
    ) -> Result<Response, CommandError> {
        require_person("decided_by", &decided_by)?;
        let reason = reason.filter(|reason| !reason.trim().is_empty());
        if action == DecisionAction::Rejected && reason.is_none() {
            return Err(CommandError::Invalid {
                message: format!("rejecting {subject} {name:?} needs a reason: say why, so its owner can act on it"),
            });
        }
        let status = match action {
            DecisionAction::Approved => ApprovalStatus::Approved,
            _ => ApprovalStatus::Rejected,
        };
        let record = self.record(subject, &name)?;
        if record.status != ApprovalStatus::Requested {
            return Err(CommandError::AlreadyDecided {
                subject,
                name,
                status: record.status,
                decided_by: record.decided_by.clone().unwrap_or_default(),
                decided_at_ms: record.decided_at_ms.unwrap_or_default(),
                reason: record.decision_reason.clone(),
                attempted: action,
            });
        }
        if action == DecisionAction::Approved {
            match subject {
                Subject::Topic => {
                    if self.topics.get(&name).is_some_and(|topic| topic.queues.is_empty()) {
                        return Err(CommandError::NoQueues { name });
                    }
                }
                Subject::Group => {
                    let group = &self.consumer_groups[&name];
                    for topic in &group.topics {
                        match self.topics.get(topic) {
                            None => {
                                return Err(CommandError::NotFound {
                                    subject: Subject::Topic,
                                    name: topic.clone(),
                                });
                            }
                            Some(existing) if existing.status != ApprovalStatus::Approved => {
                                return Err(CommandError::TopicNotApproved {
                                    group: name,
                                    topic: topic.clone(),
                                    status: existing.status,
                                });
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        let decision = Decision {
            at_ms: now_ms,
            by: decided_by.clone(),
            action,
            reason: reason.clone(),
            detail: None,
        };
        let response = match subject {
            Subject::Topic => {
                let topic = self.topics.get_mut(&name).expect("checked above");
                topic.status = status;
                topic.decided_by = Some(decided_by);
                topic.decided_at_ms = Some(now_ms);
                topic.decision_reason = reason;
                let response = Response::Topic(topic.clone());
                push_history(&mut self.topic_history, name, decision);
                response
            }
            Subject::Group => {
                let group = self.consumer_groups.get_mut(&name).expect("checked above");
                group.status = status;
                group.decided_by = Some(decided_by);
                group.decided_at_ms = Some(now_ms);
                group.decision_reason = reason;
                let response = Response::Group(group.clone());
                push_history(&mut self.group_history, name, decision);
                response
            }
        };
        Ok(response)
    }

    fn record(&self, subject: Subject, name: &str) -> Result<DecisionRecord<'_>, CommandError> {
        let not_found = || CommandError::NotFound {
            subject,
            name: name.to_owned(),
        };
        Ok(match subject {
            Subject::Topic => {
                let topic = self.topics.get(name).ok_or_else(not_found)?;
                DecisionRecord {
                    status: topic.status,
                    decided_by: &topic.decided_by,
                    decided_at_ms: topic.decided_at_ms,
                    decision_reason: &topic.decision_reason,
                }
            }
            Subject::Group => {
                let group = self.consumer_groups.get(name).ok_or_else(not_found)?;
                DecisionRecord {
                    status: group.status,
                    decided_by: &group.decided_by,
                    decided_at_ms: group.decided_at_ms,
                    decision_reason: &group.decision_reason,
                }
            }
        })
    }

    fn update_topic(
        &mut self,
        now_ms: u64,
        name: String,
        updated_by: String,
        reason: Option<String>,
        changes: TopicChanges,
    ) -> Result<Response, CommandError> {
        require_person("updated_by", &updated_by)?;
        let topic = self.topics.get(&name).ok_or_else(|| CommandError::NotFound {
            subject: Subject::Topic,
            name: name.clone(),
        })?;
        if let Some(queues) = &changes.queues {
            validate_queues(queues)?;
            if queues.is_empty() && topic.status == ApprovalStatus::Approved {
                return Err(CommandError::Invalid {
                    message: format!(
                        "topic {name:?} is approved and needs queues on at least one broker group; delete it to take it out of service"
                    ),
                });
            }
        }
        if let Some(perm) = changes.perm {
            validate_perm(perm)?;
        }
        if let ProduceLimitChange::Set(limit) = changes.produce_limit {
            validate_produce_limit(Some(limit))?;
        }
        if let Some(owner) = &changes.owner {
            require_person("owner", owner)?;
        }

        let mut detail = Vec::new();
        let topic = self.topics.get_mut(&name).expect("checked above");
        if let Some(queues) = changes.queues
            && queues != topic.queues
        {
            let placement: Vec<String> = queues.iter().map(|(group, count)| format!("{group}={count}")).collect();
            detail.push(format!("queues {}", placement.join(",")));
            topic.queues = queues;
        }
        if let Some(perm) = changes.perm
            && perm != topic.perm
        {
            detail.push(format!("perm {}->{}", topic.perm, perm));
            topic.perm = perm;
        }
        let produce_limit = match changes.produce_limit {
            ProduceLimitChange::Keep => topic.produce_limit,
            ProduceLimitChange::Set(limit) => Some(limit),
            ProduceLimitChange::Remove => None,
        };
        if produce_limit != topic.produce_limit {
            detail.push(match produce_limit {
                Some(limit) => format!("produce limit {limit} msgs/s"),
                None => "no produce limit".to_owned(),
            });
            topic.produce_limit = produce_limit;
        }
        if let Some(owner) = changes.owner
            && owner != topic.owner
        {
            detail.push(format!("owner {}->{}", topic.owner, owner));
            topic.owner = owner;
        }
        if let Some(description) = changes.description
            && description != topic.description
        {
            detail.push("description".to_owned());
            topic.description = description;
        }
        let response = Response::Topic(topic.clone());
        push_history(
            &mut self.topic_history,
            name,
            Decision {
                at_ms: now_ms,
                by: updated_by,
                action: DecisionAction::Updated,
                reason: reason.filter(|reason| !reason.trim().is_empty()),
                detail: Some(if detail.is_empty() {
                    "no change".to_owned()
                } else {
                    detail.join("; ")
                }),
            },
        );
        Ok(response)
    }

    fn delete_topic(
        &mut self,
        now_ms: u64,
        name: String,
        deleted_by: String,
        reason: String,
    ) -> Result<Response, CommandError> {
        require_person("deleted_by", &deleted_by)?;
        require_reason(Subject::Topic, &name, "deleting", &reason)?;
        if !self.topics.contains_key(&name) {
            return Err(CommandError::NotFound {
                subject: Subject::Topic,
                name,
            });
        }
        let users: Vec<String> = self
            .consumer_groups
            .values()
            .filter(|group| group.status != ApprovalStatus::Rejected && group.topics.contains(&name))
            .map(|group| group.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(CommandError::TopicInUse { name, groups: users });
        }
        self.topics.remove(&name);
        push_history(
            &mut self.topic_history,
            name,
            Decision {
                at_ms: now_ms,
                by: deleted_by,
                action: DecisionAction::Deleted,
                reason: Some(reason),
                detail: None,
            },
        );
        Ok(Response::Done)
    }

    fn delete_group(
        &mut self,
        now_ms: u64,
        name: String,
        deleted_by: String,
        reason: String,
    ) -> Result<Response, CommandError> {
        require_person("deleted_by", &deleted_by)?;
        require_reason(Subject::Group, &name, "deleting", &reason)?;
        if self.consumer_groups.remove(&name).is_none() {
            return Err(CommandError::NotFound {
                subject: Subject::Group,
                name,
            });
        }
        push_history(
            &mut self.group_history,
            name,
            Decision {
                at_ms: now_ms,
                by: deleted_by,
                action: DecisionAction::Deleted,
                reason: Some(reason),
                detail: None,
            },
        );
        Ok(Response::Done)
    }

    fn register_broker(
        &mut self,
        now_ms: u64,
        group_name: String,
        registration: BrokerRegistration,
        topics: BTreeMap<String, u32>,
    ) -> Result<Response, CommandError> {
        validate_broker_identity(&group_name, &registration.name, &registration.addr)?;
        validate_broker_topics(&topics)?;
        if let Some(group) = self.broker_groups.get(&group_name)
            && registration.role == BrokerRole::Master
        {
            if registration.epoch < group.epoch {
                return Err(CommandError::StaleEpoch {
                    group: group_name,
                    member: registration.name,
                    epoch: registration.epoch,
                    group_epoch: group.epoch,
                });
            }
            if let Some(master) = group.master()
                && master.name != registration.name
                && registration.epoch == group.epoch
            {
                return Err(CommandError::MasterConflict {
                    group: group_name,
                    member: registration.name,
                    master: master.name.clone(),
                    epoch: registration.epoch,
                });
            }
        }
        let group = self
            .broker_groups
            .entry(group_name.clone())
            .or_insert_with(|| BrokerGroup {
                name: group_name.clone(),
                epoch: 0,
                members: BTreeMap::new(),
            });
        group.epoch = group.epoch.max(registration.epoch);
        group.members.insert(
            registration.name.clone(),
            BrokerMember {
                name: registration.name,
                addr: registration.addr,
                idc: registration.idc,
                role: registration.role,
                epoch: registration.epoch,
                max_offset: registration.max_offset,
                last_heartbeat_ms: now_ms,
                topics,
                registration_digest: registration.registration_digest,
            },
        );
        Ok(Response::Broker {
            group: group_name,
            epoch: group.epoch,
        })
    }

    fn unregister_broker(&mut self, group_name: String, member: String) -> Result<Response, CommandError> {
        let Some(group) = self.broker_groups.get_mut(&group_name) else {
            return Err(CommandError::BrokerNotFound {
                group: group_name,
                member,
            });
        };
        if group.members.remove(&member).is_none() {
            return Err(CommandError::BrokerNotFound {
                group: group_name,
                member,
            });
        }
        if group.members.is_empty() {
            self.broker_groups.remove(&group_name);
        }
        Ok(Response::Done)
    }

    fn set_idc_rule(&mut self, cidr: String, idc: String) -> Result<Response, CommandError> {
        let (network, prefix_len) = parse_cidr(&cidr)?;
        let idc = idc.trim().to_owned();
        if idc.is_empty() {
            return Err(CommandError::Invalid {
                message: format!("IDC rule for {cidr:?} names no data center: give the IDC name"),
            });
        }
        match self
            .idc_rules
            .iter_mut()
            .find(|rule| rule.network == network && rule.prefix_len == prefix_len)
        {
            Some(rule) => rule.idc = idc,
            None => self.idc_rules.push(IdcRule {
                network,
                prefix_len,
                idc,
            }),
        }
        Ok(Response::Done)
    }

    fn remove_idc_rule(&mut self, cidr: String) -> Result<Response, CommandError> {
        let (network, prefix_len) = parse_cidr(&cidr)?;
        let before = self.idc_rules.len();
        self.idc_rules
            .retain(|rule| !(rule.network == network && rule.prefix_len == prefix_len));
        if self.idc_rules.len() == before {
            return Err(CommandError::IdcRuleNotFound {
                cidr: format!("{network}/{prefix_len}"),
            });
        }
        Ok(Response::Done)
    }

    fn set_sdk_policy(
        &mut self,
        min_version: Option<String>,
        blocked_versions: BTreeSet<String>,
    ) -> Result<Response, CommandError> {
        for version in min_version.iter().chain(&blocked_versions) {
            if parse_version(version).is_none() {
                return Err(CommandError::Invalid {
                    message: format!("SDK version {version:?} is invalid: write it as MAJOR.MINOR.PATCH, e.g. 1.4.2"),
                });
            }
        }
        self.sdk_policy = SdkPolicy {
            min_version,
            blocked_versions,
        };
        Ok(Response::Done)
    }
}

/// A request for a topic ([`Command::RequestTopic`]).
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

/// What an update changes in a topic ([`Command::UpdateTopic`]); `None` keeps a field.
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

/// A request for a consumer group ([`Command::RequestGroup`]).
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

struct DecisionRecord<'a> {
    status: ApprovalStatus,
    decided_by: &'a Option<String>,
    decided_at_ms: Option<u64>,
    decision_reason: &'a Option<String>,
}

fn push_history(history: &mut BTreeMap<String, Vec<Decision>>, name: String, decision: Decision) {
    history.entry(name).or_default().push(decision);
}

fn require_person(field: &str, value: &str) -> Result<(), CommandError> {
    if value.trim().is_empty() {
        return Err(CommandError::Invalid {
            message: format!("{field} is empty: every request and decision names who made it"),
        });
    }
    Ok(())
}

fn require_reason(subject: Subject, name: &str, doing: &str, reason: &str) -> Result<(), CommandError> {
    if reason.trim().is_empty() {
        return Err(CommandError::Invalid {
            message: format!("{doing} {subject} {name:?} needs a reason: say why, it is kept in the history"),
        });
    }
    Ok(())
}

/// Who a broker says it is: its group and name follow the group-name rule (as in the broker's
/// own config), and it gives the address clients connect to. Checked on heartbeats before they
/// touch anything, and again when a registration is applied.
pub fn validate_broker_identity(group: &str, name: &str, addr: &str) -> Result<(), CommandError> {
    validate_group(group)?;
    validate_group(name)?;
    if addr.trim().is_empty() {
        return Err(CommandError::Invalid {
            message: format!(
                "broker {name:?} of group {group:?} has no address: set advertise_addr in its config to the address clients connect to"
            ),
        });
    }
    Ok(())
}

/// The topics a broker registers: valid names and queue counts.
pub fn validate_broker_topics(topics: &BTreeMap<String, u32>) -> Result<(), CommandError> {
    for (topic, queues) in topics {
        validate_topic(topic)?;
        validate_queue_count(*queues)?;
    }
    Ok(())
}

fn validate_queues(queues: &BTreeMap<String, u32>) -> Result<(), CommandError> {
    for (broker_group, count) in queues {
        validate_group(broker_group)?;
        validate_queue_count(*count)?;
    }
    Ok(())
}

fn validate_perm(perm: u8) -> Result<(), CommandError> {
    if perm & !PERM_READ_WRITE != 0 {
        return Err(CommandError::Invalid {
            message: format!("topic permission {perm} is invalid: 1 (read), 2 (write) or 3 (read and write)"),
        });
    }
    Ok(())
}

fn validate_produce_limit(limit: Option<u32>) -> Result<(), CommandError> {
    if limit == Some(0) {
        return Err(CommandError::Invalid {
            message:
                "produce limit 0 is invalid: give at least 1 msg/s, or remove the write permission to stop producers"
                    .to_owned(),
        });
    }
    Ok(())
}

/// Formats ms since the Unix epoch as UTC RFC 3339 to the second, e.g. `2026-11-25T09:30:00Z`.
pub fn format_time_ms(ms: u64) -> String {
    meridian_proto::time::format_seconds(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_764_064_800_000; // 2025-11-25T10:00:00Z

    fn request_topic(name: &str, by: &str) -> Command {
        Command::RequestTopic(TopicRequest {
            name: name.into(),
            owner: "team-a".into(),
            description: "orders of the shop".into(),
            queues: BTreeMap::from([("broker-a".to_owned(), 8)]),
            perm: PERM_READ_WRITE,
            produce_limit: None,
            requested_by: by.into(),
        })
    }

    fn approve_topic(name: &str) -> Command {
        Command::ApproveTopic {
            name: name.into(),
            decided_by: "admin".into(),
            reason: Some("looks fine".into()),
        }
    }

    fn reject_topic(name: &str) -> Command {
        Command::RejectTopic {
            name: name.into(),
            decided_by: "admin".into(),
            reason: "use the existing payments topic".into(),
        }
    }

    fn request_group(name: &str, topic: &str) -> Command {
        Command::RequestGroup(GroupRequest {
            name: name.into(),
            owner: "team-b".into(),
            description: String::new(),
            topics: BTreeSet::from([topic.to_owned()]),
            max_retries: None,
            consume_mode: ConsumeMode::Clustering,
            requested_by: "bob".into(),
        })
    }

    fn register(group: &str, member: &str, role: BrokerRole, epoch: u64) -> Command {
        Command::RegisterBroker {
            group: group.into(),
            member: BrokerRegistration {
                name: member.into(),
                addr: format!("{member}:7911"),
                idc: "dc1".into(),
                role,
                epoch,
                max_offset: 100,
                registration_digest: epoch,
            },
            topics: BTreeMap::from([("orders".to_owned(), 4)]),
        }
    }

    #[test]
    fn time_format_is_utc_rfc3339() {
        assert_eq!(format_time_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time_ms(T0), "2025-11-25T10:00:00Z");
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn topic_lifecycle_is_recorded_in_history() {
        let mut state = MetadataState::default();
        state.apply(request_topic("orders", "alice"), T0).unwrap();
        assert_eq!(state.topic("orders").unwrap().status, ApprovalStatus::Requested);
        let Response::Topic(topic) = state.apply(approve_topic("orders"), T0 + 1000).unwrap() else {
            panic!("approval answers with the topic");
        };
        assert_eq!(topic.status, ApprovalStatus::Approved);
        assert_eq!(topic.decided_by.as_deref(), Some("admin"));
        assert_eq!(topic.decided_at_ms, Some(T0 + 1000));
        let history = state.topic_history("orders");
        let actions: Vec<_> = history.iter().map(|decision| decision.action).collect();
        assert_eq!(actions, [DecisionAction::Requested, DecisionAction::Approved]);
        assert_eq!(history[0].by, "alice");
        assert_eq!(history[1].reason.as_deref(), Some("looks fine"));
    }

    #[test]
    fn requesting_an_existing_topic_names_who_and_when() {
        let mut state = MetadataState::default();
        state.apply(request_topic("orders", "team-a"), T0).unwrap();
        let before = state.clone();
        let error = state.apply(request_topic("orders", "team-b"), T0 + 5).unwrap_err();
        assert_eq!(
            error.to_string(),
            "topic \"orders\" was already requested by team-a at 2025-11-25T10:00:00Z and is requested: \
             wait for an admin to approve or reject it, or pick another name"
        );
        assert_eq!(error.code(), meridian_proto::ErrorCode::AlreadyExists);
        assert_eq!(state, before, "a failed command changes nothing");
        assert_eq!(state.topic_history("orders").len(), 1);
    }

    #[test]
    fn approving_unknown_or_rejected_topics_is_refused() {
        let mut state = MetadataState::default();
        let error = state.apply(approve_topic("ghost"), T0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "topic \"ghost\" does not exist: request it first, with an owner"
        );
        state.apply(request_topic("orders", "alice"), T0).unwrap();
        state.apply(reject_topic("orders"), T0 + 1).unwrap();
        let error = state.apply(approve_topic("orders"), T0 + 2).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("cannot approve topic \"orders\": it was rejected by admin at "),
            "{message}"
        );
        assert!(message.contains("use the existing payments topic"), "{message}");
        assert!(message.ends_with("request it again to reopen it"), "{message}");
        // A rejected topic may be requested again; history keeps every step.
        state.apply(request_topic("orders", "alice"), T0 + 3).unwrap();
        state.apply(approve_topic("orders"), T0 + 4).unwrap();
        let error = state.apply(reject_topic("orders"), T0 + 5).unwrap_err();
        assert!(error.to_string().ends_with("delete it instead"), "{error}");
        assert_eq!(state.topic_history("orders").len(), 4);
    }

    #[test]
    fn names_and_sizes_use_proto_rules() {
        let mut state = MetadataState::default();
        let error = state.apply(request_topic("a b", "alice"), T0).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"topic name "a b" is invalid: only [A-Za-z0-9_-], at most 127 chars"#
        );
        let mut command = request_topic("orders", "alice");
        if let Command::RequestTopic(TopicRequest { queues, .. }) = &mut command {
            queues.insert("broker-b".into(), 0);
        }
        let error = state.apply(command, T0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "queue count 0 is invalid: 1 to 1024 queues per topic"
        );
        let error = state.apply(request_group("bad group", "orders"), T0).unwrap_err();
        assert!(
            error.to_string().starts_with("group name \"bad group\" is invalid"),
            "{error}"
        );
        assert_eq!(state, MetadataState::default());
    }

    #[test]
    fn rejection_needs_a_reason_and_approval_needs_queues() {
        let mut state = MetadataState::default();
        let mut command = request_topic("orders", "alice");
        if let Command::RequestTopic(TopicRequest { queues, .. }) = &mut command {
            queues.clear();
        }
        state.apply(command, T0).unwrap();
        let error = state
            .apply(
                Command::RejectTopic {
                    name: "orders".into(),
                    decided_by: "admin".into(),
                    reason: " ".into(),
                },
                T0,
            )
            .unwrap_err();
        assert!(error.to_string().contains("needs a reason"), "{error}");
        let error = state.apply(approve_topic("orders"), T0).unwrap_err();
        assert!(error.to_string().contains("has no queues"), "{error}");
        state
            .apply(
                Command::UpdateTopic {
                    name: "orders".into(),
                    updated_by: "admin".into(),
                    reason: Some("place it".into()),
                    changes: TopicChanges {
                        queues: Some(BTreeMap::from([("broker-a".to_owned(), 4)])),
                        perm: Some(PERM_READ),
                        produce_limit: ProduceLimitChange::Set(500),
                        owner: None,
                        description: None,
                    },
                },
                T0 + 1,
            )
            .unwrap();
        let topic = state.topic("orders").unwrap();
        assert_eq!(topic.perm, PERM_READ);
        assert_eq!(topic.produce_limit, Some(500));
        let update = &state.topic_history("orders")[1];
        assert_eq!(
            update.detail.as_deref(),
            Some("queues broker-a=4; perm 3->1; produce limit 500 msgs/s")
        );
        state.apply(approve_topic("orders"), T0 + 2).unwrap();
    }

    #[test]
    fn groups_need_existing_then_approved_topics() {
        let mut state = MetadataState::default();
        let error = state.apply(request_group("g1", "orders"), T0).unwrap_err();
        assert_eq!(error.code(), meridian_proto::ErrorCode::TopicNotFound);
        state.apply(request_topic("orders", "alice"), T0).unwrap();
        state.apply(request_group("g1", "orders"), T0).unwrap();
        assert_eq!(state.consumer_group("g1").unwrap().max_retries, DEFAULT_MAX_RETRIES);
        let approve_group = Command::ApproveGroup {
            name: "g1".into(),
            decided_by: "admin".into(),
            reason: None,
        };
        let error = state.apply(approve_group.clone(), T0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "consumer group \"g1\" subscribes to topic \"orders\", which is requested: approve the topic first"
        );
        state.apply(approve_topic("orders"), T0).unwrap();
        state.apply(approve_group, T0).unwrap();
        let delete = Command::DeleteTopic {
            name: "orders".into(),
            deleted_by: "admin".into(),
            reason: "retired".into(),
        };
        let error = state.apply(delete.clone(), T0).unwrap_err();
        assert!(error.to_string().contains("used by consumer groups \"g1\""), "{error}");
        state
            .apply(
                Command::DeleteGroup {
                    name: "g1".into(),
                    deleted_by: "admin".into(),
                    reason: "retired".into(),
                },
                T0,
            )
            .unwrap();
        state.apply(delete, T0).unwrap();
        assert!(state.topic("orders").is_none());
        assert_eq!(state.topic_history("orders").len(), 3, "history outlives the topic");
        assert_eq!(state.group_history("g1").len(), 3);
    }

    #[test]
    fn broker_epochs_guard_the_master_role() {
        let mut state = MetadataState::default();
        state
            .apply(register("broker-a", "a-0", BrokerRole::Master, 1), T0)
            .unwrap();
        state
            .apply(register("broker-a", "a-1", BrokerRole::Slave, 1), T0)
            .unwrap();
        let error = state
            .apply(register("broker-a", "a-1", BrokerRole::Master, 1), T0)
            .unwrap_err();
        assert!(matches!(error, CommandError::MasterConflict { .. }), "{error}");
        // Failover: a-1 becomes master at epoch 2; the old master may not come back as master at 1.
        let response = state
            .apply(register("broker-a", "a-1", BrokerRole::Master, 2), T0)
            .unwrap();
        assert_eq!(
            response,
            Response::Broker {
                group: "broker-a".into(),
                epoch: 2
            }
        );
        let error = state
            .apply(register("broker-a", "a-0", BrokerRole::Master, 1), T0)
            .unwrap_err();
        assert!(error.to_string().contains("must rejoin as a slave"), "{error}");
        let group = &state.broker_groups()["broker-a"];
        assert_eq!(group.master().unwrap().name, "a-1");
        assert_eq!(group.members["a-0"].last_heartbeat_ms, T0);
        state
            .apply(
                Command::UnregisterBroker {
                    group: "broker-a".into(),
                    member: "a-0".into(),
                },
                T0,
            )
            .unwrap();
        state
            .apply(
                Command::UnregisterBroker {
                    group: "broker-a".into(),
                    member: "a-1".into(),
                },
                T0,
            )
            .unwrap();
        assert!(state.broker_groups().is_empty());
    }

    #[test]
    fn idc_lookup_takes_the_longest_prefix() {
        let mut state = MetadataState::default();
        for (cidr, idc) in [
            ("10.0.0.0/8", "dc-wide"),
            ("10.1.0.0/16", "dc1"),
            ("10.1.2.0/24", "dc1-rack"),
            ("fd00::/8", "dc-v6"),
        ] {
            state
                .apply(
                    Command::SetIdcRule {
                        cidr: cidr.into(),
                        idc: idc.into(),
                    },
                    T0,
                )
                .unwrap();
        }
        let idc = |address: &str| state.idc_for(address.parse().unwrap()).map(str::to_owned);
        assert_eq!(idc("10.1.2.3").as_deref(), Some("dc1-rack"));
        assert_eq!(idc("10.1.9.9").as_deref(), Some("dc1"));
        assert_eq!(idc("10.200.0.1").as_deref(), Some("dc-wide"));
        assert_eq!(idc("::ffff:10.1.9.9").as_deref(), Some("dc1"), "IPv4-mapped");
        assert_eq!(idc("fd12::1").as_deref(), Some("dc-v6"));
        assert_eq!(idc("192.168.0.1"), None);

        let error = state
            .apply(
                Command::SetIdcRule {
                    cidr: "10.1.2.3/16".into(),
                    idc: "dc1".into(),
                },
                T0,
            )
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "IDC rule \"10.1.2.3/16\" is invalid: host bits are set; did you mean 10.1.0.0/16?"
        );
        for bad in ["10.0.0.0", "10.0.0.0/33", "fd00::/129", "nope/8", "10.0.0.0/x"] {
            assert!(parse_cidr(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().1, 0);
        state
            .apply(
                Command::SetIdcRule {
                    cidr: "0.0.0.0/0".into(),
                    idc: "default".into(),
                },
                T0,
            )
            .unwrap();
        assert_eq!(
            state.idc_for("192.168.0.1".parse().unwrap()),
            Some("default"),
            "a /0 rule matches every IPv4 address"
        );
        state
            .apply(
                Command::RemoveIdcRule {
                    cidr: "10.1.2.0/24".into(),
                },
                T0,
            )
            .unwrap();
        assert_eq!(state.idc_for("10.1.2.3".parse().unwrap()), Some("dc1"));
    }

    #[test]
    fn idc_ties_go_to_the_first_rule() {
        let state = MetadataState {
            idc_rules: vec![
                IdcRule {
                    network: "10.0.0.0".parse().unwrap(),
                    prefix_len: 8,
                    idc: "first".into(),
                },
                IdcRule {
                    network: "10.0.0.0".parse().unwrap(),
                    prefix_len: 8,
                    idc: "second".into(),
                },
            ],
            ..MetadataState::default()
        };
        assert_eq!(state.idc_for("10.0.0.1".parse().unwrap()), Some("first"));
    }

    #[test]
    fn sdk_policy_blocks_old_and_bad_versions() {
        let mut state = MetadataState::default();
        assert!(state.sdk_policy().check("0.0.1").is_ok());
        state
            .apply(
                Command::SetSdkPolicy {
                    min_version: Some("1.2.0".into()),
                    blocked_versions: BTreeSet::from(["1.3.1".to_owned()]),
                },
                T0,
            )
            .unwrap();
        let policy = state.sdk_policy();
        assert!(policy.check("1.2.0").is_ok());
        assert!(policy.check("1.10.0-rc1").is_ok());
        assert!(matches!(policy.check("1.1.9"), Err(SdkVersionError::TooOld { .. })));
        assert!(matches!(policy.check("1.3.1"), Err(SdkVersionError::Blocked { .. })));
        assert!(matches!(
            policy.check("latest"),
            Err(SdkVersionError::Unparsable { .. })
        ));
        let error = state
            .apply(
                Command::SetSdkPolicy {
                    min_version: Some("one".into()),
                    blocked_versions: BTreeSet::new(),
                },
                T0,
            )
            .unwrap_err();
        assert!(error.to_string().contains("MAJOR.MINOR.PATCH"), "{error}");
    }

    #[test]
    fn decision_times_never_go_backwards() {
        let mut state = MetadataState::default();
        state.apply(request_topic("orders", "alice"), T0).unwrap();
        // A new leader whose clock is behind.
        state.apply(approve_topic("orders"), T0 - 60_000).unwrap();
        assert_eq!(state.topic("orders").unwrap().decided_at_ms, Some(T0));
    }

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["orders", "payments", "bad name", "g1", "broker-a"]).prop_map(str::to_owned)
    }

    fn person() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["alice", "admin", ""]).prop_map(str::to_owned)
    }

    fn queues() -> impl Strategy<Value = BTreeMap<String, u32>> {
        prop::collection::btree_map(name(), prop::sample::select(vec![0_u32, 1, 8, 2000]), 0..3)
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (
                name(),
                person(),
                queues(),
                0_u8..5,
                prop::option::of(0_u32..3),
                person()
            )
                .prop_map(|(name, owner, queues, perm, produce_limit, requested_by)| {
                    Command::RequestTopic(TopicRequest {
                        name,
                        owner,
                        description: "d".into(),
                        queues,
                        perm,
                        produce_limit,
                        requested_by,
                    })
                }),
            (name(), person(), prop::option::of(person())).prop_map(|(name, decided_by, reason)| {
                Command::ApproveTopic {
                    name,
                    decided_by,
                    reason,
                }
            }),
            (name(), person(), person()).prop_map(|(name, decided_by, reason)| Command::RejectTopic {
                name,
                decided_by,
                reason,
            }),
            (name(), person(), prop::option::of(queues()), prop::option::of(0_u8..5)).prop_map(
                |(name, updated_by, queues, perm)| Command::UpdateTopic {
                    name,
                    updated_by,
                    reason: None,
                    changes: TopicChanges {
                        queues,
                        perm,
                        produce_limit: ProduceLimitChange::Remove,
                        owner: None,
                        description: Some("new".into()),
                    },
                }
            ),
            (name(), person(), person()).prop_map(|(name, deleted_by, reason)| Command::DeleteTopic {
                name,
                deleted_by,
                reason,
            }),
            (
                name(),
                prop::collection::btree_set(name(), 0..3),
                prop::option::of(0_u32..20)
            )
                .prop_map(|(name, topics, max_retries)| Command::RequestGroup(GroupRequest {
                    name,
                    owner: "team".into(),
                    description: String::new(),
                    topics,
                    max_retries,
                    consume_mode: ConsumeMode::Broadcasting,
                    requested_by: "bob".into(),
                })),
            (name(), person()).prop_map(|(name, decided_by)| Command::ApproveGroup {
                name,
                decided_by,
                reason: None,
            }),
            (name(), person()).prop_map(|(name, decided_by)| Command::RejectGroup {
                name,
                decided_by,
                reason: "no".into(),
            }),
            (name(), person()).prop_map(|(name, deleted_by)| Command::DeleteGroup {
                name,
                deleted_by,
                reason: "gone".into(),
            }),
            (
                name(),
                name(),
                any::<bool>(),
                0_u64..4,
                prop::collection::btree_map(name(), 1_u32..8, 0..3)
            )
                .prop_map(|(group, member, master, epoch, topics)| Command::RegisterBroker {
                    group,
                    member: BrokerRegistration {
                        name: member,
                        addr: "127.0.0.1:7911".into(),
                        idc: "dc1".into(),
                        role: if master { BrokerRole::Master } else { BrokerRole::Slave },
                        epoch,
                        max_offset: epoch * 10,
                        registration_digest: epoch,
                    },
                    topics,
                }),
            (name(), name()).prop_map(|(group, member)| Command::UnregisterBroker { group, member }),
            (
                prop::sample::select(vec!["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/16", "fd00::/8", "x"]),
                prop::sample::select(vec!["dc1", "dc2", ""])
            )
                .prop_map(|(cidr, idc)| Command::SetIdcRule {
                    cidr: cidr.into(),
                    idc: idc.into(),
                }),
            prop::sample::select(vec!["10.0.0.0/8", "fd00::/8"])
                .prop_map(|cidr| Command::RemoveIdcRule { cidr: cidr.into() }),
            (
                prop::option::of(prop::sample::select(vec!["1.0.0", "2.1", "x"])),
                prop::collection::btree_set(prop::sample::select(vec!["1.0.1".to_owned(), "bad".to_owned()]), 0..2)
            )
                .prop_map(|(min_version, blocked_versions)| Command::SetSdkPolicy {
                    min_version: min_version.map(str::to_owned),
                    blocked_versions,
                }),
        ]
    }

    fn commands() -> impl Strategy<Value = Vec<(Command, u64)>> {
        prop::collection::vec((command(), T0..T0 + 100_000), 0..60)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn apply_is_deterministic(commands in commands()) {
            let mut first = MetadataState::default();
            let mut second = MetadataState::default();
            for (command, now_ms) in commands {
                let first_result = first.apply(command.clone(), now_ms);
                let second_result = second.apply(command, now_ms);
                prop_assert_eq!(first_result, second_result);
            }
            prop_assert_eq!(first, second);
        }

        #[test]
        fn failed_commands_change_nothing_and_history_only_grows(commands in commands()) {
            let mut state = MetadataState::default();
            for (command, now_ms) in commands {
                let before = state.clone();
                match state.apply(command, now_ms) {
                    Err(_) => prop_assert_eq!(&state, &before),
                    Ok(_) => {
                        for (name, old) in &before.topic_history {
                            prop_assert!(state.topic_history(name).starts_with(old));
                        }
                        for (name, old) in &before.group_history {
                            prop_assert!(state.group_history(name).starts_with(old));
                        }
                    }
                }
            }
        }

        #[test]
        fn state_and_commands_round_trip_through_json(commands in commands(), split in 0_usize..60) {
            let mut straight = MetadataState::default();
            let mut restored = MetadataState::default();
            for (index, (command, now_ms)) in commands.into_iter().enumerate() {
                let encoded = serde_json::to_vec(&command).unwrap();
                prop_assert_eq!(&serde_json::from_slice::<Command>(&encoded).unwrap(), &command);
                if index == split {
                    // As if a snapshot was taken here and a node restored from it.
                    restored = serde_json::from_slice(&serde_json::to_vec(&restored).unwrap()).unwrap();
                }
                let straight_result = straight.apply(command.clone(), now_ms);
                let restored_result = restored.apply(command, now_ms);
                prop_assert_eq!(straight_result, restored_result);
            }
            let decoded: MetadataState = serde_json::from_slice(&serde_json::to_vec(&straight).unwrap()).unwrap();
            prop_assert_eq!(&decoded, &straight);
            prop_assert_eq!(&restored, &straight);
        }
    }
}
