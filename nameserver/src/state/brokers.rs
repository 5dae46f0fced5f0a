//! Broker groups: their members as they last registered, and who is master. Who is master is
//! decided by the failover controller ([`crate::controller`]) through
//! [`super::Command::ElectMaster`], and a switchover fences the master first
//! ([`super::Command::FenceMaster`]); each raises the group's epoch by one, recorded in its history.
//! Pure code, over the broker groups [`super::MetadataState`] lends it for one command.

use std::collections::BTreeMap;

use meridian_proto::ack::AckPolicy;
use meridian_proto::validate::{validate_group, validate_queue_count, validate_topic};
use serde::{Deserialize, Serialize};

use super::error::{CommandError, require_person};

/// Records clients read as they are, defined in the admin contract.
pub use meridian_proto::admin::{BrokerRole, EpochAction, EpochChange};

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
/// [`super::Command::ElectMaster`], never by what a broker registers: each election raises the epoch by
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
    /// Target of a switchover in progress ([`super::Command::FenceMaster`]): elected once the fenced
    /// master's lease surely lapsed.
    #[serde(default)]
    pub preferred: Option<String>,
    /// The latest elections and fencings, oldest first, at most [`EPOCH_HISTORY_LEN`].
    #[serde(default)]
    pub history: Vec<EpochChange>,
    /// The ack policy its master registered (`None`: not known yet, or a master older than the
    /// field): which survivors provably hold every acknowledged message when the master fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_policy: Option<AckPolicy>,
    /// The replicas that policy counts, the master included (0: not known).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ack_replicas: u32,
}

impl BrokerGroup {
    /// The member elected master at the group's epoch, if any.
    pub fn master(&self) -> Option<&BrokerMember> {
        self.members.get(self.master.as_deref()?)
    }

    /// The data center the group serves from: its master's; while it has none, that of its last
    /// elected master (so its queues do not change sides during a failover); empty when neither
    /// is known.
    pub fn idc(&self) -> &str {
        if let Some(master) = self.master() {
            return &master.idc;
        }
        self.history
            .iter()
            .rev()
            .find_map(|change| change.master.as_deref())
            .and_then(|name| self.members.get(name))
            .map_or("", |member| member.idc.as_str())
    }
}

/// Whether a count is 0 (not written: snapshots and log entries of earlier versions stay the same).
fn is_zero(count: &u32) -> bool {
    *count == 0
}

/// Epoch changes kept per broker group; older ones are dropped.
pub const EPOCH_HISTORY_LEN: usize = 32;

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
    /// Sent by a master: its ack policy, and the replicas it counts. Recorded like `in_sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_policy: Option<AckPolicy>,
    /// See `ack_policy`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ack_replicas: u32,
}

/// The broker groups, lent by [`super::MetadataState::apply`] for one command. A command that
/// fails changes nothing.
pub(super) struct Brokers<'a> {
    pub(super) groups: &'a mut BTreeMap<String, BrokerGroup>,
}

impl Brokers<'_> {
    /// Records what a broker reports about itself. It decides nothing about who is master: the
    /// controller does ([`super::Command::ElectMaster`]). Only the group's master, reporting the group's
    /// epoch, replaces the in-sync set.
    pub(super) fn register(
        &mut self,
        now_ms: u64,
        group_name: String,
        registration: BrokerRegistration,
        topics: BTreeMap<String, u32>,
    ) -> Result<u64, CommandError> {
        validate_broker_identity(&group_name, &registration.name, &registration.addr)?;
        validate_broker_topics(&topics)?;
        for slave in &registration.in_sync {
            validate_group(slave)?;
        }
        let group = self.groups.entry(group_name.clone()).or_insert_with(|| BrokerGroup {
            name: group_name.clone(),
            epoch: 0,
            members: BTreeMap::new(),
            master: None,
            in_sync: Vec::new(),
            preferred: None,
            history: Vec::new(),
            ack_policy: None,
            ack_replicas: 0,
        });
        if group.master.as_deref() == Some(registration.name.as_str()) && registration.epoch == group.epoch {
            if registration.ack_policy.is_some() {
                group.ack_policy = registration.ack_policy;
                group.ack_replicas = registration.ack_replicas;
            }
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
        Ok(group.epoch)
    }

    pub(super) fn elect_master(
        &mut self,
        now_ms: u64,
        group_name: String,
        member: String,
        epoch: u64,
        reason: String,
    ) -> Result<EpochChange, CommandError> {
        let group = broker_group(self.groups, &group_name, &member)?;
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
        Ok(change)
    }

    pub(super) fn fence_master(
        &mut self,
        now_ms: u64,
        group_name: String,
        preferred: String,
        by: String,
        reason: Option<String>,
    ) -> Result<EpochChange, CommandError> {
        require_person("by", &by)?;
        let group = broker_group(self.groups, &group_name, &preferred)?;
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
        Ok(change)
    }

    pub(super) fn unregister(&mut self, group_name: String, member: String) -> Result<(), CommandError> {
        let Some(group) = self.groups.get_mut(&group_name) else {
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
            self.groups.remove(&group_name);
            return Ok(());
        }
        // The epoch stays: the controller elects a replacement at the next one.
        if group.master.as_deref() == Some(member.as_str()) {
            group.master = None;
        }
        if group.preferred.as_deref() == Some(member.as_str()) {
            group.preferred = None;
        }
        group.in_sync.retain(|slave| *slave != member);
        Ok(())
    }
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
