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

use meridian_proto::validate::{validate_group, validate_idc, validate_queue_count, validate_topic};
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
///
/// Who is master is decided by the failover controller ([`crate::controller`]) through
/// [`Command::ElectMaster`], never by what a broker registers: each election raises the epoch by
/// one, and brokers obey the highest epoch they have seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerGroup {
    /// Name of the group.
    pub name: String,
    /// The group's epoch: raised by one by each election and each fencing.
    pub epoch: u64,
    /// Members by name.
    pub members: BTreeMap<String, BrokerMember>,
    /// Name of the member elected master at `epoch`; `None` before the first election and
    /// between fencing a master and electing the next.
    #[serde(default)]
    pub master: Option<String>,
    /// The slaves the master reports in sync with it, sorted: only these may replace it when it
    /// fails.
    #[serde(default)]
    pub in_sync: Vec<String>,
    /// Target of a switchover in progress ([`Command::FenceMaster`]): elected once the fenced
    /// master's lease surely lapsed.
    #[serde(default)]
    pub preferred: Option<String>,
    /// The latest elections and fencings, oldest first, at most [`EPOCH_HISTORY_LEN`].
    #[serde(default)]
    pub history: Vec<EpochChange>,
}

impl BrokerGroup {
    /// The member elected master at the group's epoch, if any.
    pub fn master(&self) -> Option<&BrokerMember> {
        self.members.get(self.master.as_deref()?)
    }
}

/// Epoch changes kept per broker group; older ones are dropped.
pub const EPOCH_HISTORY_LEN: usize = 32;

/// What raised a broker group's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochAction {
    /// A master was elected ([`Command::ElectMaster`]).
    Elected,
    /// The master was fenced for a switchover ([`Command::FenceMaster`]).
    Fenced,
}

/// One raise of a broker group's epoch: who became master, or who was fenced and for whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochChange {
    /// The new epoch.
    pub epoch: u64,
    /// When, in ms since the Unix epoch (time of the log entry).
    pub at_ms: u64,
    /// Elected or fenced.
    pub action: EpochAction,
    /// Master at the new epoch (`None` after a fencing).
    pub master: Option<String>,
    /// Master at the epoch before, if there was one.
    pub previous_master: Option<String>,
    /// Fenced: the switchover target.
    pub preferred: Option<String>,
    /// Who: `controller` for elections, the person for a switchover.
    pub by: String,
    /// Why.
    pub reason: Option<String>,
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
    /// Sent by a master: the slaves it holds in sync. Replaces the group's in-sync set when the
    /// registrant is the group's master at the group's epoch; ignored otherwise.
    #[serde(default)]
    pub in_sync: Vec<String>,
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

/// Failover drills: which data center is evacuated now, and every step taken, with who and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drill {
    /// The data center evacuated now; `None`: both serve (dual-center).
    pub evacuated: Option<String>,
    /// Every step, oldest first, at most [`DRILL_HISTORY_LEN`].
    pub steps: Vec<DrillStep>,
}

/// Drill steps kept; older ones are dropped.
pub const DRILL_HISTORY_LEN: usize = 256;

/// What a drill step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillAction {
    /// Traffic moved out of a data center.
    Evacuate,
    /// Traffic returned to both data centers.
    Restore,
}

/// One step of a failover drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillStep {
    /// When, in ms since the Unix epoch (time of the log entry).
    pub at_ms: u64,
    /// Evacuate or restore.
    pub action: DrillAction,
    /// The data center evacuated, or restored.
    pub idc: String,
    /// Who ran it.
    pub by: String,
    /// Why.
    pub reason: Option<String>,
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

    /// Whether the two rules share addresses: one's network lies inside the other.
    pub fn overlaps(&self, other: &IdcRule) -> bool {
        self.contains(other.network) || other.contains(self.network)
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
    /// Brokers refuse offenders' requests; otherwise they only flag them.
    #[serde(default)]
    pub refuse: bool,
    /// Oldest version allowed per SDK language (lowercase), instead of `min_version`.
    #[serde(default)]
    pub language_min_versions: BTreeMap<String, String>,
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
    /// Replace the client SDK version policy.
    SetSdkPolicy {
        /// Oldest version allowed; `None`: any.
        min_version: Option<String>,
        /// Versions refused.
        blocked_versions: BTreeSet<String>,
        /// Refuse offenders instead of only flagging them.
        #[serde(default)]
        refuse: bool,
        /// Minimum per SDK language.
        #[serde(default)]
        language_min_versions: BTreeMap<String, String>,
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
    /// An IDC rule as set, with the rules of other data centers whose addresses it shares (the
    /// longest prefix decides between them; overlaps are usually a mistake worth a warning).
    IdcRule {
        /// The rule as set.
        rule: IdcRule,
        /// Overlapping rules that name another data center.
        overlaps: Vec<IdcRule>,
    },
    /// An election or a fencing, as recorded in the group's history.
    EpochChange {
        /// Broker group name.
        group: String,
        /// What changed.
        change: EpochChange,
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
    #[serde(default)]
    drill: Drill,
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

    /// Every data center the cluster knows: of its brokers and its IDC rules, sorted.
    pub fn known_idcs(&self) -> BTreeSet<String> {
        self.broker_groups
            .values()
            .flat_map(|group| group.members.values().map(|member| member.idc.clone()))
            .chain(self.idc_rules.iter().map(|rule| rule.idc.clone()))
            .filter(|idc| !idc.is_empty())
            .collect()
    }

    /// The data center a broker group serves from: its master's; while it has none, that of its
    /// last elected master (so its queues do not change sides during a failover); empty when
    /// neither is known.
    pub fn group_idc(&self, group: &str) -> &str {
        let Some(group) = self.broker_groups.get(group) else {
            return "";
        };
        if let Some(master) = group.master() {
            return &master.idc;
        }
        group
            .history
            .iter()
            .rev()
            .find_map(|change| change.master.as_deref())
            .and_then(|name| group.members.get(name))
            .map_or("", |member| member.idc.as_str())
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
        self.idc_rule_for(address).map(|rule| rule.idc.as_str())
    }

    /// The rule [`MetadataState::idc_for`] goes by.
    pub fn idc_rule_for(&self, address: IpAddr) -> Option<&IdcRule> {
        let address = address.to_canonical();
        let mut best: Option<&IdcRule> = None;
        for rule in self.idc_rules.iter().filter(|rule| rule.contains(address)) {
            if best.is_none_or(|best| rule.prefix_len > best.prefix_len) {
                best = Some(rule);
            }
        }
        best
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
            Command::ElectMaster {
                group,
                member,
                epoch,
                reason,
            } => self.elect_master(now_ms, group, member, epoch, reason)?,
            Command::FenceMaster {
                group,
                preferred,
                by,
                reason,
            } => self.fence_master(now_ms, group, preferred, by, reason)?,
            Command::UnregisterBroker { group, member } => self.unregister_broker(group, member)?,
            Command::SetIdcRule { cidr, idc } => self.set_idc_rule(cidr, idc)?,
            Command::RemoveIdcRule { cidr } => self.remove_idc_rule(cidr)?,
            Command::Evacuate { idc, by, reason } => self.evacuate(now_ms, idc, by, reason)?,
            Command::Restore { by, reason } => self.restore(now_ms, by, reason)?,
            Command::SetSdkPolicy {
                min_version,
                blocked_versions,
                refuse,
                language_min_versions,
            } => self.set_sdk_policy(SdkPolicy {
                min_version,
                blocked_versions,
                refuse,
                language_min_versions,
            })?,
        };
        self.clock_ms = now_ms;
        if governance {
            self.metadata_version += 1;
        }
        Ok(response)
    }

    fn request_topic(&mut self, now_ms: u64, request: TopicRequest) -> Result<Response, CommandError> {
        validate_topic(&request.name)?;
        if meridian_proto::topics::is_system(&request.name) {
            return Err(CommandError::Invalid {
                message: format!(
                    "topic name {:?} is reserved for a system topic (trace, delay or transaction), which every broker creates by itself and needs no approval; choose another name",
                    request.name
                ),
            });
        }
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

    /// Records what a broker reports about itself. It decides nothing about who is master: the
    /// controller does ([`Command::ElectMaster`]). Only the group's master, reporting the group's
    /// epoch, replaces the in-sync set.
    fn register_broker(
        &mut self,
        now_ms: u64,
        group_name: String,
        registration: BrokerRegistration,
        topics: BTreeMap<String, u32>,
    ) -> Result<Response, CommandError> {
        validate_broker_identity(&group_name, &registration.name, &registration.addr)?;
        validate_broker_topics(&topics)?;
        for slave in &registration.in_sync {
            validate_group(slave)?;
        }
        let group = self
            .broker_groups
            .entry(group_name.clone())
            .or_insert_with(|| BrokerGroup {
                name: group_name.clone(),
                epoch: 0,
                members: BTreeMap::new(),
                master: None,
                in_sync: Vec::new(),
                preferred: None,
                history: Vec::new(),
            });
        if group.master.as_deref() == Some(registration.name.as_str()) && registration.epoch == group.epoch {
            let mut in_sync: Vec<String> = registration
                .in_sync
                .into_iter()
                .filter(|slave| *slave != registration.name)
                .collect();
            in_sync.sort();
            in_sync.dedup();
            group.in_sync = in_sync;
        }
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

    fn elect_master(
        &mut self,
        now_ms: u64,
        group_name: String,
        member: String,
        epoch: u64,
        reason: String,
    ) -> Result<Response, CommandError> {
        let group = broker_group(&mut self.broker_groups, &group_name, &member)?;
        // A group's first master may start above epochs its brokers remember (the nameservers
        // were rebuilt from scratch while the brokers kept their data); every later election is
        // exactly one epoch up, so a stale controller decision is refused rather than applied twice.
        let first_election = group.epoch == 0 && group.master.is_none() && epoch > 0;
        if epoch != group.epoch + 1 && !first_election {
            return Err(CommandError::StaleElection {
                group: group_name,
                member,
                epoch,
                group_epoch: group.epoch,
                master: group.master.clone(),
            });
        }
        let previous_master = group.master.take();
        for (name, broker) in &mut group.members {
            if *name == member {
                broker.role = BrokerRole::Master;
                broker.epoch = epoch;
            } else {
                broker.role = BrokerRole::Slave;
            }
        }
        group.epoch = epoch;
        group.master = Some(member.clone());
        group.in_sync.retain(|slave| *slave != member);
        group.preferred = None;
        let change = EpochChange {
            epoch,
            at_ms: now_ms,
            action: EpochAction::Elected,
            master: Some(member),
            previous_master,
            preferred: None,
            by: "controller".to_owned(),
            reason: Some(reason),
        };
        push_epoch_change(group, change.clone());
        Ok(Response::EpochChange {
            group: group_name,
            change,
        })
    }

    fn fence_master(
        &mut self,
        now_ms: u64,
        group_name: String,
        preferred: String,
        by: String,
        reason: Option<String>,
    ) -> Result<Response, CommandError> {
        require_person("by", &by)?;
        let group = broker_group(&mut self.broker_groups, &group_name, &preferred)?;
        if let Some(master) = &group.master {
            if *master == preferred {
                return Err(CommandError::Invalid {
                    message: format!(
                        "broker {preferred:?} is already the master of broker group {group_name:?} at epoch {}: nothing to switch over",
                        group.epoch
                    ),
                });
            }
            if !group.in_sync.contains(&preferred) {
                return Err(CommandError::NotInSync {
                    group: group_name,
                    member: preferred,
                    master: master.clone(),
                    in_sync: group.in_sync.clone(),
                });
            }
        }
        let previous_master = group.master.take();
        for broker in group.members.values_mut() {
            broker.role = BrokerRole::Slave;
        }
        group.epoch += 1;
        group.preferred = Some(preferred.clone());
        let change = EpochChange {
            epoch: group.epoch,
            at_ms: now_ms,
            action: EpochAction::Fenced,
            master: None,
            previous_master,
            preferred: Some(preferred),
            by,
            reason: reason.filter(|reason| !reason.trim().is_empty()),
        };
        push_epoch_change(group, change.clone());
        Ok(Response::EpochChange {
            group: group_name,
            change,
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
            return Ok(Response::Done);
        }
        // The epoch stays: the controller elects a replacement at the next one.
        if group.master.as_deref() == Some(member.as_str()) {
            group.master = None;
        }
        if group.preferred.as_deref() == Some(member.as_str()) {
            group.preferred = None;
        }
        group.in_sync.retain(|slave| *slave != member);
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
        validate_idc(&idc)?;
        let rule = IdcRule {
            network,
            prefix_len,
            idc,
        };
        let overlaps: Vec<IdcRule> = self
            .idc_rules
            .iter()
            .filter(|other| other.overlaps(&rule) && other.idc != rule.idc)
            .filter(|other| !(other.network == network && other.prefix_len == prefix_len))
            .cloned()
            .collect();
        match self
            .idc_rules
            .iter_mut()
            .find(|existing| existing.network == network && existing.prefix_len == prefix_len)
        {
            Some(existing) => existing.idc.clone_from(&rule.idc),
            None => self.idc_rules.push(rule.clone()),
        }
        Ok(Response::IdcRule { rule, overlaps })
    }

    fn evacuate(
        &mut self,
        now_ms: u64,
        idc: String,
        by: String,
        reason: Option<String>,
    ) -> Result<Response, CommandError> {
        validate_idc(&idc)?;
        require_person("by", &by)?;
        match &self.drill.evacuated {
            Some(evacuated) if *evacuated == idc => {
                return Err(CommandError::Drill {
                    message: format!(
                        "data center {idc:?} is already evacuated: `meridian drill restore` ends the drill"
                    ),
                });
            }
            Some(evacuated) => {
                return Err(CommandError::Drill {
                    message: format!(
                        "data center {evacuated:?} is evacuated: evacuating {idc:?} too would leave no data center serving; run `meridian drill restore` first"
                    ),
                });
            }
            None => {}
        }
        let known = self.known_idcs();
        if !known.contains(&idc) {
            return Err(CommandError::Drill {
                message: format!(
                    "no broker or IDC rule is in data center {idc:?}; the cluster knows {}",
                    if known.is_empty() {
                        "no data centers (brokers register theirs)".to_owned()
                    } else {
                        known
                            .iter()
                            .map(|idc| format!("{idc:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            });
        }
        let elsewhere: Vec<&str> = self
            .broker_groups
            .values()
            .filter(|group| group.master.is_some() && self.group_idc(&group.name) != idc)
            .map(|group| group.name.as_str())
            .collect();
        if elsewhere.is_empty() {
            return Err(CommandError::Drill {
                message: format!(
                    "evacuating {idc:?} would leave no broker group taking writes: no group has a master outside {idc:?} (see `meridian cluster status`)"
                ),
            });
        }
        self.drill.evacuated = Some(idc.clone());
        self.record_drill_step(now_ms, DrillAction::Evacuate, idc, by, reason);
        Ok(Response::Done)
    }

    fn restore(&mut self, now_ms: u64, by: String, reason: Option<String>) -> Result<Response, CommandError> {
        require_person("by", &by)?;
        let Some(idc) = self.drill.evacuated.take() else {
            return Err(CommandError::Drill {
                message:
                    "no data center is evacuated: nothing to restore (`meridian drill status` shows the drill history)"
                        .to_owned(),
            });
        };
        self.record_drill_step(now_ms, DrillAction::Restore, idc, by, reason);
        Ok(Response::Done)
    }

    fn record_drill_step(&mut self, at_ms: u64, action: DrillAction, idc: String, by: String, reason: Option<String>) {
        self.drill.steps.push(DrillStep {
            at_ms,
            action,
            idc,
            by,
            reason,
        });
        let excess = self.drill.steps.len().saturating_sub(DRILL_HISTORY_LEN);
        self.drill.steps.drain(..excess);
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

    fn set_sdk_policy(&mut self, mut policy: SdkPolicy) -> Result<Response, CommandError> {
        policy.language_min_versions = std::mem::take(&mut policy.language_min_versions)
            .into_iter()
            .map(|(language, version)| (language.to_ascii_lowercase(), version))
            .collect();
        let versions = policy.min_version.iter().chain(&policy.blocked_versions);
        for version in versions.chain(policy.language_min_versions.values()) {
            if parse_version(version).is_none() {
                return Err(CommandError::Invalid {
                    message: format!("SDK version {version:?} is invalid: write it as MAJOR.MINOR.PATCH, e.g. 1.4.2"),
                });
            }
        }
        self.sdk_policy = policy;
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

fn push_epoch_change(group: &mut BrokerGroup, change: EpochChange) {
    if group.history.len() >= EPOCH_HISTORY_LEN {
        group.history.remove(0);
    }
    group.history.push(change);
}

/// The broker group `group`, which must have a member `member`.
fn broker_group<'a>(
    groups: &'a mut BTreeMap<String, BrokerGroup>,
    group: &str,
    member: &str,
) -> Result<&'a mut BrokerGroup, CommandError> {
    let not_found = |members: Vec<String>| CommandError::MemberNotFound {
        group: group.to_owned(),
        member: member.to_owned(),
        members,
    };
    let Some(found) = groups.get_mut(group) else {
        return Err(not_found(Vec::new()));
    };
    if !found.members.contains_key(member) {
        return Err(not_found(found.members.keys().cloned().collect()));
    }
    Ok(found)
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
    meridian_proto::quota::validate_produce_limit(limit, None).map_err(|error| CommandError::Invalid {
        message: error.to_string(),
    })
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
                in_sync: Vec::new(),
            },
            topics: BTreeMap::from([("orders".to_owned(), 4)]),
        }
    }

    fn elect(group: &str, member: &str, epoch: u64) -> Command {
        Command::ElectMaster {
            group: group.into(),
            member: member.into(),
            epoch,
            reason: "test".into(),
        }
    }

    fn fence(group: &str, preferred: &str) -> Command {
        Command::FenceMaster {
            group: group.into(),
            preferred: preferred.into(),
            by: "admin".into(),
            reason: Some("maintenance".into()),
        }
    }

    /// A group whose three members registered as slaves, then `a-0` elected at epoch 1 and
    /// reporting `a-1` in sync.
    fn group_with_master() -> MetadataState {
        let mut state = MetadataState::default();
        for member in ["a-0", "a-1", "a-2"] {
            state
                .apply(register("broker-a", member, BrokerRole::Slave, 0), T0)
                .unwrap();
        }
        state.apply(elect("broker-a", "a-0", 1), T0).unwrap();
        let mut report = register("broker-a", "a-0", BrokerRole::Master, 1);
        if let Command::RegisterBroker { member, .. } = &mut report {
            member.in_sync = vec!["a-1".into(), "a-0".into(), "a-1".into()];
        }
        state.apply(report, T0).unwrap();
        state
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

    fn register_in(group: &str, member: &str, idc: &str) -> Command {
        let mut command = register(group, member, BrokerRole::Slave, 0);
        if let Command::RegisterBroker { member, .. } = &mut command {
            member.idc = idc.into();
        }
        command
    }

    #[test]
    fn drills_evacuate_one_known_idc_at_a_time_and_record_every_step() {
        let mut state = MetadataState::default();
        state.apply(register_in("a", "a-0", "dc1"), T0).unwrap();
        state.apply(register_in("b", "b-0", "dc2"), T0).unwrap();
        state.apply(elect("a", "a-0", 1), T0).unwrap();
        let evacuate = |idc: &str, by: &str| Command::Evacuate {
            idc: idc.into(),
            by: by.into(),
            reason: Some("drill".into()),
        };
        let restore = |by: &str| Command::Restore {
            by: by.into(),
            reason: None,
        };
        let refusal = |state: &mut MetadataState, command| state.apply(command, T0).unwrap_err().to_string();
        assert!(refusal(&mut state, evacuate("dc1", "ops")).contains("no group has a master outside \"dc1\""));
        state.apply(elect("b", "b-0", 1), T0).unwrap();
        assert!(refusal(&mut state, evacuate("dc9", "ops")).contains("the cluster knows \"dc1\", \"dc2\""));
        assert!(refusal(&mut state, evacuate("dc 1", "ops")).contains("IDC name \"dc 1\" is invalid"));
        assert!(refusal(&mut state, evacuate("dc1", " ")).contains("by is empty"));
        assert!(refusal(&mut state, restore("ops")).contains("nothing to restore"));

        state.apply(evacuate("dc1", "ops"), T0 + 1).unwrap();
        assert_eq!(state.evacuated_idcs(), ["dc1"]);
        assert!(refusal(&mut state, evacuate("dc1", "ops")).contains("already evacuated"));
        assert!(refusal(&mut state, evacuate("dc2", "ops")).contains("restore` first"));
        state.apply(restore("sre"), T0 + 2).unwrap();
        assert!(state.evacuated_idcs().is_empty());
        let steps: Vec<_> = state
            .drill()
            .steps
            .iter()
            .map(|step| (step.at_ms, step.action, step.idc.as_str(), step.by.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                (T0 + 1, DrillAction::Evacuate, "dc1", "ops"),
                (T0 + 2, DrillAction::Restore, "dc1", "sre")
            ]
        );
    }

    #[test]
    fn a_group_keeps_its_idc_while_it_has_no_master() {
        let mut state = MetadataState::default();
        state.apply(register_in("a", "a-0", "dc1"), T0).unwrap();
        state.apply(register_in("a", "a-1", "dc2"), T0).unwrap();
        assert_eq!(state.group_idc("a"), "", "never had a master");
        state.apply(elect("a", "a-0", 1), T0).unwrap();
        assert_eq!(state.group_idc("a"), "dc1");
        let mut report = register_in("a", "a-0", "dc1");
        if let Command::RegisterBroker { member, .. } = &mut report {
            member.role = BrokerRole::Master;
            member.epoch = 1;
            member.in_sync = vec!["a-1".into()];
        }
        state.apply(report, T0).unwrap();
        state.apply(fence("a", "a-1"), T0).unwrap();
        assert_eq!(state.group_idc("a"), "dc1", "between fencing and the next election");
        state.apply(elect("a", "a-1", 3), T0).unwrap();
        assert_eq!(state.group_idc("a"), "dc2");
    }

    #[test]
    fn overlapping_idc_rules_of_other_idcs_are_reported() {
        let mut state = MetadataState::default();
        let set = |cidr: &str, idc: &str| Command::SetIdcRule {
            cidr: cidr.into(),
            idc: idc.into(),
        };
        state.apply(set("10.0.0.0/8", "dc1"), T0).unwrap();
        let Response::IdcRule { overlaps, .. } = state.apply(set("10.1.0.0/16", "dc2"), T0).unwrap() else {
            panic!("an IDC rule answer");
        };
        assert_eq!(overlaps.iter().map(IdcRule::cidr).collect::<Vec<_>>(), ["10.0.0.0/8"]);
        let Response::IdcRule { overlaps, .. } = state.apply(set("10.2.0.0/16", "dc1"), T0).unwrap() else {
            panic!("an IDC rule answer");
        };
        assert!(overlaps.is_empty(), "same IDC: no conflict");
        assert!(state.apply(set("11.0.0.0/8", "bad idc"), T0).is_err());
    }

    #[test]
    fn registrations_report_but_only_elections_make_a_master() {
        let mut state = MetadataState::default();
        // A broker claiming to be master at any epoch is recorded, but neither becomes master
        // nor moves the group's epoch.
        let response = state
            .apply(register("broker-a", "a-0", BrokerRole::Master, 7), T0)
            .unwrap();
        assert_eq!(
            response,
            Response::Broker {
                group: "broker-a".into(),
                epoch: 0
            }
        );
        state
            .apply(register("broker-a", "a-1", BrokerRole::Master, 7), T0)
            .unwrap();
        let group = &state.broker_groups()["broker-a"];
        assert_eq!((group.epoch, group.master(), group.master.as_deref()), (0, None, None));
        assert_eq!(group.members["a-1"].role, BrokerRole::Master, "as reported");
        assert_eq!(group.members["a-0"].last_heartbeat_ms, T0);

        // A slave's in-sync list, or a master's at another epoch, is ignored.
        let mut state = group_with_master();
        assert_eq!(
            state.broker_groups()["broker-a"].in_sync,
            ["a-1"],
            "sorted, deduplicated, without the master"
        );
        let mut stale = register("broker-a", "a-0", BrokerRole::Master, 0);
        let mut slave = register("broker-a", "a-2", BrokerRole::Slave, 1);
        for command in [&mut stale, &mut slave] {
            if let Command::RegisterBroker { member, .. } = command {
                member.in_sync = vec!["a-2".into()];
            }
        }
        state.apply(stale, T0).unwrap();
        state.apply(slave, T0).unwrap();
        let group = &state.broker_groups()["broker-a"];
        assert_eq!(group.in_sync, ["a-1"]);
        assert_eq!(
            group.master().unwrap().name,
            "a-0",
            "a registration does not unseat the master"
        );

        // Unregistering the master leaves the group masterless at its epoch.
        for member in ["a-0", "a-1"] {
            state
                .apply(
                    Command::UnregisterBroker {
                        group: "broker-a".into(),
                        member: member.into(),
                    },
                    T0,
                )
                .unwrap();
        }
        let group = &state.broker_groups()["broker-a"];
        assert_eq!((group.epoch, group.master.as_deref()), (1, None));
        assert!(group.in_sync.is_empty());
        state
            .apply(
                Command::UnregisterBroker {
                    group: "broker-a".into(),
                    member: "a-2".into(),
                },
                T0,
            )
            .unwrap();
        assert!(state.broker_groups().is_empty());
    }

    #[test]
    fn an_election_applies_once_at_the_next_epoch() {
        let mut state = group_with_master();
        // The controller's decision, applied twice (a stale tick): the second is refused.
        let response = state.apply(elect("broker-a", "a-1", 2), T0 + 1).unwrap();
        let Response::EpochChange { change, .. } = response else {
            panic!("an election answers with the epoch change");
        };
        assert_eq!(
            (
                change.epoch,
                change.master.as_deref(),
                change.previous_master.as_deref()
            ),
            (2, Some("a-1"), Some("a-0"))
        );
        let before = state.clone();
        let error = state.apply(elect("broker-a", "a-2", 2), T0 + 2).unwrap_err();
        assert!(matches!(error, CommandError::StaleElection { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            "cannot elect \"a-2\" master of broker group \"broker-a\" at epoch 2: the group is at epoch 2 with master \"a-1\", \
             so the next election is at epoch 3; read the group again before deciding"
        );
        assert_eq!(error.code(), meridian_proto::ErrorCode::FailedPrecondition);
        assert_eq!(state, before);
        // Skipping an epoch is refused too; so is an unknown member.
        assert!(state.apply(elect("broker-a", "a-2", 4), T0).is_err());
        let error = state.apply(elect("broker-a", "a-9", 3), T0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "broker group \"broker-a\" has no member \"a-9\": its members are \"a-0\", \"a-1\", \"a-2\""
        );
        assert!(state.apply(elect("broker-z", "a-0", 1), T0).is_err());
        assert_eq!(state, before);

        let group = &state.broker_groups()["broker-a"];
        assert_eq!((group.epoch, group.master().unwrap().name.as_str()), (2, "a-1"));
        let roles: Vec<_> = group
            .members
            .values()
            .map(|member| (member.role, member.epoch))
            .collect();
        assert_eq!(
            roles,
            [(BrokerRole::Slave, 1), (BrokerRole::Master, 2), (BrokerRole::Slave, 0)],
            "the new master takes the epoch; every other member is a slave"
        );
        assert!(group.in_sync.is_empty(), "the old in-sync set minus the new master");
        assert_eq!(group.history.len(), 2);
    }

    #[test]
    fn a_first_election_may_start_above_the_epochs_brokers_remember() {
        let mut state = MetadataState::default();
        state
            .apply(register("broker-a", "a-0", BrokerRole::Slave, 5), T0)
            .unwrap();
        state.apply(elect("broker-a", "a-0", 6), T0).unwrap();
        assert_eq!(state.broker_groups()["broker-a"].epoch, 6);
        // Only the first: from then on, one epoch at a time.
        assert!(state.apply(elect("broker-a", "a-0", 6), T0).is_err());
        assert!(state.apply(elect("broker-a", "a-0", 9), T0).is_err());
        state.apply(elect("broker-a", "a-0", 7), T0).unwrap();
        assert!(state.apply(elect("broker-a", "a-0", 0), T0).is_err());
    }

    #[test]
    fn a_switchover_fences_the_master_then_elects_the_target() {
        let mut state = group_with_master();
        let error = state.apply(fence("broker-a", "a-2"), T0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot switch broker group \"broker-a\" over to \"a-2\": it is not in sync with master \"a-0\" (in sync: \"a-1\"); \
             wait until it has caught up, or pick one of those"
        );
        assert_eq!(error.code(), meridian_proto::ErrorCode::FailedPrecondition);
        let error = state.apply(fence("broker-a", "a-0"), T0).unwrap_err();
        assert!(error.to_string().contains("already the master"), "{error}");
        assert!(state.apply(fence("broker-a", "a-7"), T0).is_err());

        let Response::EpochChange { change, .. } = state.apply(fence("broker-a", "a-1"), T0 + 5).unwrap() else {
            panic!("a fencing answers with the epoch change");
        };
        assert_eq!(change.action, EpochAction::Fenced);
        assert_eq!(
            (
                change.epoch,
                change.master,
                change.previous_master.as_deref(),
                change.preferred.as_deref()
            ),
            (2, None, Some("a-0"), Some("a-1"))
        );
        let group = &state.broker_groups()["broker-a"];
        assert_eq!(
            (group.epoch, group.master(), group.preferred.as_deref()),
            (2, None, Some("a-1"))
        );
        assert!(group.members.values().all(|member| member.role == BrokerRole::Slave));
        // Masterless: any member may be named now (how an operator unsticks a group).
        state.apply(fence("broker-a", "a-2"), T0 + 6).unwrap();
        state.apply(fence("broker-a", "a-1"), T0 + 7).unwrap();
        assert_eq!(state.broker_groups()["broker-a"].epoch, 4);

        // The controller elects the target at the next epoch; the switchover is over.
        state.apply(elect("broker-a", "a-1", 5), T0 + 8).unwrap();
        let group = &state.broker_groups()["broker-a"];
        assert_eq!(
            (group.epoch, group.master.as_deref(), group.preferred.as_deref()),
            (5, Some("a-1"), None)
        );
        let actions: Vec<_> = group
            .history
            .iter()
            .map(|change| (change.epoch, change.action))
            .collect();
        assert_eq!(
            actions,
            [
                (1, EpochAction::Elected),
                (2, EpochAction::Fenced),
                (3, EpochAction::Fenced),
                (4, EpochAction::Fenced),
                (5, EpochAction::Elected)
            ]
        );
        assert_eq!(group.history[1].by, "admin");
        assert_eq!(group.history[1].reason.as_deref(), Some("maintenance"));
    }

    #[test]
    fn epoch_history_is_short() {
        let mut state = group_with_master();
        for epoch in 2..=(EPOCH_HISTORY_LEN as u64 + 10) {
            state.apply(elect("broker-a", "a-1", epoch), T0).unwrap();
        }
        let history = &state.broker_groups()["broker-a"].history;
        assert_eq!(history.len(), EPOCH_HISTORY_LEN);
        assert_eq!(history.last().unwrap().epoch, EPOCH_HISTORY_LEN as u64 + 10);
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
                    refuse: false,
                    language_min_versions: BTreeMap::new(),
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
                    refuse: false,
                    language_min_versions: BTreeMap::new(),
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
                        in_sync: if master {
                            vec!["g1".into(), "broker-a".into()]
                        } else {
                            Vec::new()
                        },
                    },
                    topics,
                }),
            (name(), name(), 0_u64..4).prop_map(|(group, member, epoch)| Command::ElectMaster {
                group,
                member,
                epoch,
                reason: "test".into(),
            }),
            (name(), name(), person()).prop_map(|(group, preferred, by)| Command::FenceMaster {
                group,
                preferred,
                by,
                reason: None,
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
                prop::sample::select(vec!["dc1", "dc2", "bad idc"]),
                prop::sample::select(vec!["ops", ""])
            )
                .prop_map(|(idc, by)| Command::Evacuate {
                    idc: idc.into(),
                    by: by.into(),
                    reason: None,
                }),
            prop::sample::select(vec!["ops", ""]).prop_map(|by| Command::Restore {
                by: by.into(),
                reason: None,
            }),
            (
                prop::option::of(prop::sample::select(vec!["1.0.0", "2.1", "x"])),
                prop::collection::btree_set(prop::sample::select(vec!["1.0.1".to_owned(), "bad".to_owned()]), 0..2)
            )
                .prop_map(|(min_version, blocked_versions)| Command::SetSdkPolicy {
                    min_version: min_version.map(str::to_owned),
                    blocked_versions,
                    refuse: false,
                    language_min_versions: BTreeMap::new(),
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
