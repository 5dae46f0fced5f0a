//! The read side of the nameservers' admin contract: the questions a client asks
//! ([`Query`], sent as `NameserverRead` or over HTTP), the views they are answered with
//! ([`TopicDetail`], [`GroupDetail`], [`BrokerGroupView`], [`ClusterView`], [`Services`]), and
//! [`Response`], what a write answers. The cli, the console and other clients name these, never
//! the nameserver's internals; the nameserver builds the views from its state.
//!
//! The JSON of these types is what clients and nameservers of different builds exchange: never
//! rename a field or a variant.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::records::{Alert, BrokerRole, EpochChange, IdcRule, LostIdc};
use super::{ApprovalStatus, ConsumerGroup, Decision, Topic};

/// A question about the metadata ([`crate::RequestCode::NameserverRead`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "query")]
pub enum Query {
    /// One topic and its history ([`TopicDetail`]).
    Topic {
        /// Its name.
        name: String,
    },
    /// All topics, or those with one status (`Vec<Topic>`).
    Topics {
        /// Only this status.
        #[serde(default)]
        status: Option<ApprovalStatus>,
    },
    /// One consumer group and its history ([`GroupDetail`]).
    Group {
        /// Its name.
        name: String,
    },
    /// All consumer groups, or those with one status (`Vec<ConsumerGroup>`).
    Groups {
        /// Only this status.
        #[serde(default)]
        status: Option<ApprovalStatus>,
    },
    /// Broker groups, their members and their liveness as this node sees it (`Vec<BrokerGroupView>`).
    Brokers,
    /// The Raft cluster as this node sees it ([`ClusterView`]).
    Cluster,
    /// The IDC map (`Vec<IdcRule>`).
    IdcRules,
    /// The client SDK version policy ([`super::SdkPolicy`]).
    SdkPolicy,
    /// Failover drills: what is evacuated and every step taken ([`super::Drill`]).
    Drill,
    /// Where the tracer and the query service are ([`Services`]).
    Services,
    /// Users, without credentials (`Vec<UserView>`).
    Users,
    /// Audit log entries after `after`, oldest first, at most `limit` (`Vec<AuditEntry>`).
    Audit {
        /// Entries with a greater sequence number.
        #[serde(default)]
        after: u64,
        /// Most entries.
        limit: usize,
    },
    /// The authorization model: rules, super users, teams, owners ([`crate::acl::Acl`]).
    Acl,
}

/// A topic and its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDetail {
    /// The topic; `None` when it was deleted (its history stays).
    pub topic: Option<Topic>,
    /// Every decision about it, oldest first.
    pub history: Vec<Decision>,
}

/// A consumer group and its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDetail {
    /// The group; `None` when it was deleted (its history stays).
    pub group: Option<ConsumerGroup>,
    /// Every decision about it, oldest first.
    pub history: Vec<Decision>,
}

/// A broker group as a nameserver sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerGroupView {
    /// Group name.
    pub name: String,
    /// The group's epoch.
    pub epoch: u64,
    /// Name of the master elected at that epoch; `None` before the first election and during a
    /// switchover.
    pub master: Option<String>,
    /// The slaves the master reports in sync: the candidates when it fails.
    #[serde(default)]
    pub in_sync: Vec<String>,
    /// Target of a switchover in progress.
    #[serde(default)]
    pub preferred: Option<String>,
    /// The latest elections and fencings, oldest first.
    #[serde(default)]
    pub history: Vec<EpochChange>,
    /// Members by name.
    pub members: Vec<BrokerMemberView>,
    /// The greatest confirmed offset its masters reported to this node: a replica is promoted
    /// only if it holds it. `None`: none reported since this node started.
    #[serde(default)]
    pub confirmed_offset: Option<u64>,
    /// Why its master acknowledges in degraded mode (replicas in a lost data center left out),
    /// as its last heartbeat to this node said; `None` under its full ack policy.
    #[serde(default)]
    pub degraded: Option<String>,
    /// Why the group takes no writes: it needs a master and none can be promoted without losing
    /// acknowledged messages, or none is alive (from the failover controller; only the Raft
    /// leader's answer has it). `None`: it has a master, or one is being elected.
    #[serde(default)]
    pub read_only: Option<String>,
}

/// One broker as a nameserver sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMemberView {
    /// Broker name.
    pub name: String,
    /// Address clients connect to.
    pub addr: String,
    /// Data center.
    pub idc: String,
    /// Its role in the group: master if it is the one elected at the group's epoch.
    pub role: BrokerRole,
    /// Epoch it registered with.
    pub epoch: u64,
    /// When it last registered (ms since the Unix epoch).
    pub registered_at_ms: u64,
    /// Topics it registered.
    pub topics: usize,
    /// Whether its last heartbeat to this node is within the heartbeat timeout.
    pub alive: bool,
    /// How long ago this node heard its last heartbeat, in ms; `None`: not since this node started.
    pub last_heartbeat_ago_ms: Option<u64>,
    /// Max commitlog offset it last reported.
    pub max_offset: u64,
}

/// The Raft cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The answering node.
    pub node_id: u64,
    /// Its Raft role: `Leader`, `Follower`, `Candidate` or `Learner`.
    pub role: String,
    /// The leader it knows.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Index of the last log entry it holds.
    pub last_log_index: Option<u64>,
    /// Index of the last entry it applied.
    pub last_applied: Option<u64>,
    /// Index covered by its latest snapshot.
    pub snapshot: Option<u64>,
    /// Index up to which its log was compacted.
    pub purged: Option<u64>,
    /// Every node of the membership.
    pub nodes: Vec<ClusterNode>,
    /// Data centers the nameservers declared lost (none of their brokers heard for
    /// `continuity.idc_lost_after_ms`), by name, as this node applied it.
    #[serde(default)]
    pub lost_idcs: BTreeMap<String, LostIdc>,
}

/// One node of the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Its id.
    pub id: u64,
    /// Framed-protocol address.
    pub addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// Data center.
    pub idc: String,
    /// Voter, or learner.
    pub voter: bool,
}

/// Where clients find the services beside the brokers, as this nameserver's config says
/// (`tracer_http`, `query_http`), so a client needs only `MERIDIAN_NAMESERVER`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    /// HTTP address of the tracer.
    pub tracer_http: Option<String>,
    /// HTTP address of the query service.
    pub query_http: Option<String>,
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
    /// An alert as recorded.
    Alert(Alert),
}
