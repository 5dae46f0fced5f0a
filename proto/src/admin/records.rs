//! The records of the nameservers' replicated metadata that clients read as they are: broker
//! roles and epoch changes, the IDC map and failover drills, the SDK version policy, lost data
//! centers, alerts, the audit log and users as listed (never their credentials). The nameserver keeps them in its state (`meridian_nameserver::
//! state` re-exports them) and changes them only through its Raft log; the rules that change them
//! live there, not here.
//!
//! Field and variant names are part of the nameservers' Raft log and snapshots: never rename one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Role of a broker within its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerRole {
    /// Accepts writes and replicates them to the slaves.
    Master,
    /// Holds a replica of the master's commitlog.
    Slave,
}

/// What raised a broker group's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochAction {
    /// A master was elected (`ElectMaster`).
    Elected,
    /// The master was fenced for a switchover (`FenceMaster`).
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

/// Failover drills: which data center is evacuated now, and every step taken, with who and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drill {
    /// The data center evacuated now; `None`: both serve (dual-center).
    pub evacuated: Option<String>,
    /// Every step, oldest first, at most the nameserver's `DRILL_HISTORY_LEN`.
    pub steps: Vec<DrillStep>,
}

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

    /// Whether `address` lies inside the rule's network.
    pub fn contains(&self, address: IpAddr) -> bool {
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

/// Which client SDK versions may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdkPolicy {
    /// Oldest version allowed (`MAJOR.MINOR.PATCH`); `None`: any.
    pub min_version: Option<String>,
    /// Versions refused whatever `min_version` says (known-bad releases), compared as written.
    pub blocked_versions: BTreeSet<String>,
    /// Brokers refuse offenders' requests; otherwise they only flag them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refuse: bool,
    /// Oldest version allowed per SDK language (lowercase), instead of `min_version`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub language_min_versions: BTreeMap<String, String>,
}

/// A data center the nameservers declared lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostIdc {
    /// When it was declared lost (ms since the Unix epoch, from the log entry).
    pub since_ms: u64,
    /// Why, in words (which nodes were silent and for how long).
    pub reason: String,
}

/// Whether an alert's condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition held for the rule's `for` duration.
    Firing,
    /// The condition no longer holds.
    Resolved,
}

impl AlertStatus {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One state change of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertChange {
    /// When, in ms since the Unix epoch (time of the log entry).
    pub at_ms: u64,
    /// The new status.
    pub status: AlertStatus,
    /// What the evaluator saw.
    pub message: String,
}

/// An alert as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// De-duplication key: `rule/subject`.
    pub key: String,
    /// Rule name.
    pub rule: String,
    /// What it is about.
    pub subject: String,
    /// The rule's severity.
    pub severity: String,
    /// Owner of the topic or group it is about (empty: none).
    pub owner: String,
    /// Current status.
    pub status: AlertStatus,
    /// The latest message.
    pub message: String,
    /// When it first fired.
    pub first_fired_ms: u64,
    /// When its status last changed.
    pub last_change_ms: u64,
    /// Its state changes, oldest first, at most the nameserver's `ALERT_HISTORY_LEN`.
    pub history: Vec<AlertChange>,
}

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 1, never reused.
    pub seq: u64,
    /// When it was applied, ms since the Unix epoch.
    pub at_ms: u64,
    /// Who: the authenticated user, or the declared person.
    pub who: String,
    /// Whether `who` was authenticated (false: self-declared with `--by`).
    pub authenticated: bool,
    /// The client's address; empty when unknown (a request over the framed protocol).
    pub from: String,
    /// What was done, e.g. `approve_topic`.
    pub action: String,
    /// What it was done to, e.g. `topic orders`.
    pub subject: String,
    /// The reason or the change, when there is one.
    pub detail: String,
}

/// A user as listed: no credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// User name.
    pub name: String,
    /// When it was created.
    pub created_ms: u64,
    /// Who created it.
    pub created_by: String,
    /// When its secret last changed.
    pub rotated_ms: u64,
    /// Whether RocketMQ clients may sign requests as this user.
    #[serde(default)]
    pub rocketmq: bool,
}
