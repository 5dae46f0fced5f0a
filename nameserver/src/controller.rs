//! The failover controller: while this node is the Raft leader, it elects each broker group's
//! master ([`Command::ElectMaster`]) when the group has none, or when its master went silent.
//!
//! It ticks every [`TICK`] and judges each group from the replicated state and this node's
//! [`Liveness`] (which brokers it heard within the broker timeout, and the offsets they reported):
//!
//! - **master alive**: nothing to do.
//! - **master silent** for a broker timeout: elect, at the next epoch, the in-sync slave with the
//!   greatest offset among those alive whose last heartbeat came after the master's lease lapsed
//!   (so their offsets include everything the old master could still have written). Ties go to the
//!   switchover target, then to name order.
//! - **never had a master** (epoch 0): elect the alive member with the greatest offset; at once
//!   when every member is alive and empty (a fresh group, e.g. `meridian dev`), else after a broker
//!   timeout of leadership, so every broker holding data has reported its offset.
//! - **fenced** (no master at an epoch above 0: a switchover, or an unregistered master): wait a
//!   broker timeout so the fenced master's lease surely lapsed, then elect the switchover target if
//!   it is at least as far as every other live member (or is the only live in-sync one), else the
//!   best in-sync candidate as above.
//!
//! Every promotion, failover or switchover, also needs the candidate to provably hold every
//! acknowledged message, by two rules. First, every set of replicas that could have acknowledged
//! a send under the group's registered ack policy (and under its degraded rule while members are
//! left out) includes one of the members compared, so the furthest of them holds everything
//! ([`unproven`], over [`meridian_proto::ack::every_ack_includes`]). Second, it holds the group's
//! last confirmed offset as its masters reported it in their heartbeats
//! ([`LivenessView::confirmed_offset`]). The second alone is not enough: a heartbeat lags the
//! master by up to an interval, in which a `quorum` master can acknowledge with a slave of its own
//! data center alone. A group that fails either stays without a master (read-only: its slaves
//! still serve reads) and says why in `/api/brokers` (`read_only`) and a `group_read_only`
//! warning, until a member that settles both is back. That is what makes taking over a lost data
//! center's groups safe: under `idc_safe` the surviving data center's replica is in every
//! acknowledgement; under `quorum` the master's data center alone may make one, and then the
//! group waits.
//!
//! Why this is safe: a master accepts writes only for `lease = broker_timeout / 2` after sending a
//! heartbeat that the confirmed leader answered. This leader declares a master dead only a whole
//! broker timeout after its last heartbeat arrived; a new leader, whose liveness map starts empty,
//! waits a broker timeout of its own leadership first (the previous leader confirmed its leadership
//! with a quorum before renewing any lease, so every lease it granted was sent before this node was
//! elected). Elections are only valid at the group's next epoch, so a stale or repeated decision
//! is refused by the state rather than applied twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::ack::{Replica, every_ack_includes, requirement};
use openraft::ServerState;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::error::{CommandError, NameserverError};
use crate::liveness::{LivenessView, Seen};
use crate::metrics::ElectionLabels;
use crate::service::NameserverService;
use crate::state::{BrokerGroup, Command, Continuity, MetadataState};
use crate::types::NodeId;

#[cfg(doc)]
use crate::liveness::Liveness;

/// How often the controller judges every broker group.
pub const TICK: Duration = Duration::from_millis(200);

/// Why a master is elected (the `reason` label of the elections metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionKind {
    /// The master went silent.
    Failover,
    /// The group's first master.
    Bootstrap,
    /// An operator fenced the master ([`Command::FenceMaster`]).
    Switchover,
}

impl ElectionKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ElectionKind::Failover => "failover",
            ElectionKind::Bootstrap => "bootstrap",
            ElectionKind::Switchover => "switchover",
        }
    }
}

/// What the controller concluded about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Elect `member` at `epoch`.
    Elect {
        /// The new master.
        member: String,
        /// The epoch to elect it at.
        epoch: u64,
        /// Why, as the metric label.
        kind: ElectionKind,
        /// Why, in words (recorded in the group's history).
        reason: String,
    },
    /// The group needs a master and none can be elected now.
    Stuck {
        /// Why not, member by member.
        why: String,
    },
}

/// The controller's memory between ticks. Everything in it is about this node's current term of
/// leadership and is forgotten when the term ends.
#[derive(Debug)]
pub struct Controller {
    node_id: NodeId,
    timeout: Duration,
    lease: Duration,
    leadership: Option<Leadership>,
    // When this leader first saw each group without a master.
    masterless_since: HashMap<String, Instant>,
    // The epoch at which each group's "stuck" warning was last logged: once per group and epoch.
    warned: HashMap<String, u64>,
}

#[derive(Debug, Clone, Copy)]
struct Leadership {
    term: u64,
    since: Instant,
}

impl Controller {
    /// A controller for node `node_id`, judging liveness with `timeout` (the broker timeout) and
    /// masters' leases of `lease`.
    pub fn new(node_id: NodeId, timeout: Duration, lease: Duration) -> Controller {
        Controller {
            node_id,
            timeout,
            lease,
            leadership: None,
            masterless_since: HashMap::new(),
            warned: HashMap::new(),
        }
    }

    /// Records whether this node leads in `term`, now; a new term starts a new leadership.
    pub fn observe_leadership(&mut self, leading: bool, term: u64, now: Instant) {
        match self.leadership {
            Some(leadership) if leading && leadership.term == term => {}
            _ if leading => {
                tracing::info!(
                    node_id = self.node_id,
                    term,
                    "failover controller active: this node leads"
                );
                self.forget();
                self.leadership = Some(Leadership { term, since: now });
            }
            Some(_) => {
                tracing::info!(
                    node_id = self.node_id,
                    "failover controller idle: this node no longer leads"
                );
                self.forget();
            }
            None => {}
        }
    }

    fn forget(&mut self) {
        self.leadership = None;
        self.masterless_since.clear();
        self.warned.clear();
    }

    /// Judges every group, if this node leads.
    pub fn judge_all(&mut self, state: &MetadataState, view: &LivenessView<'_>) -> Vec<(String, Verdict)> {
        let Some(leadership) = self.leadership else {
            return Vec::new();
        };
        self.masterless_since.retain(|group, _| {
            state
                .broker_groups()
                .get(group)
                .is_some_and(|group| group.master().is_none())
        });
        state
            .broker_groups()
            .values()
            .filter_map(|group| {
                self.judge(group, state.continuity(), view, leadership.since)
                    .map(|verdict| (group.name.clone(), verdict))
            })
            .collect()
    }

    /// What to do about `group`, judged at `view.now()` by a leader since `leader_since`; `None`:
    /// nothing, or not yet.
    pub fn judge(
        &mut self,
        group: &BrokerGroup,
        continuity: &Continuity,
        view: &LivenessView<'_>,
        leader_since: Instant,
    ) -> Option<Verdict> {
        let now = view.now();
        let settled = now.saturating_duration_since(leader_since) >= self.timeout;
        let seen = |member: &str| view.get(&group.name, member);
        if let Some(master) = group.master() {
            self.masterless_since.remove(&group.name);
            let master_seen = seen(&master.name);
            if master_seen.is_some_and(|(_, alive)| alive) || !settled {
                return None;
            }
            let last_heard = master_seen.map_or(leader_since, |(seen, _)| seen.at);
            let silent_ms = now.saturating_duration_since(last_heard).as_millis();
            let reason = match master_seen {
                Some(_) => format!("master {} silent for {silent_ms} ms", master.name),
                None => format!(
                    "master {} not heard from in the {silent_ms} ms since this nameserver became leader",
                    master.name
                ),
            };
            return self.best_in_sync(
                group,
                continuity,
                view,
                last_heard + self.lease,
                ElectionKind::Failover,
                reason,
            );
        }
        if group.epoch == 0 && group.master.is_none() {
            return self.bootstrap(group, view, settled);
        }
        // Fenced, or the master unregistered: wait until any lease the old master held has lapsed.
        let since = *self.masterless_since.entry(group.name.clone()).or_insert(now);
        if now.saturating_duration_since(since) < self.timeout {
            return None;
        }
        let fresh_after = since + self.lease;
        let alive: Vec<(&str, Seen)> = group
            .members
            .keys()
            .filter_map(|name| match seen(name) {
                Some((seen, true)) => Some((name.as_str(), seen)),
                _ => None,
            })
            .collect();
        // Compare offsets only once every live member reported one written after the old
        // master surely stopped.
        if alive.iter().any(|(_, seen)| seen.at <= fresh_after) {
            return None;
        }
        let mut not_preferred = None;
        if let Some(preferred) = group.preferred.as_deref() {
            match alive.iter().find(|(name, _)| *name == preferred) {
                Some((_, preferred_seen)) => {
                    let furthest = alive
                        .iter()
                        .filter(|(name, _)| *name != preferred)
                        .all(|(_, seen)| preferred_seen.max_offset >= seen.max_offset);
                    let only_in_sync = alive
                        .iter()
                        .filter(|(name, _)| group.in_sync.iter().any(|slave| slave == name))
                        .all(|(name, _)| *name == preferred);
                    let confirmed = view.confirmed_offset(&group.name).unwrap_or(0);
                    let holds_confirmed = preferred_seen.max_offset >= confirmed;
                    // What the target is compared with: every live member when it is the furthest,
                    // else the live in-sync ones (of which it is the only one).
                    let compared: Vec<&str> = alive
                        .iter()
                        .map(|(name, _)| *name)
                        .filter(|name| furthest || *name == preferred)
                        .collect();
                    let unproven = unproven(group, continuity, view, &compared);
                    if (furthest || only_in_sync) && holds_confirmed && unproven.is_none() {
                        return Some(Verdict::Elect {
                            member: preferred.to_owned(),
                            epoch: group.epoch + 1,
                            kind: ElectionKind::Switchover,
                            reason: format!("switchover to {preferred} fenced at epoch {}", group.epoch),
                        });
                    }
                    not_preferred = Some(if let Some(why) = unproven.filter(|_| holds_confirmed) {
                        format!("switchover target {preferred}: {why}")
                    } else if holds_confirmed {
                        format!(
                            "switchover target {preferred} is behind another live member (offset {})",
                            preferred_seen.max_offset
                        )
                    } else {
                        format!(
                            "switchover target {preferred} holds up to offset {}, below the group's last confirmed offset {confirmed}",
                            preferred_seen.max_offset
                        )
                    });
                }
                None => not_preferred = Some(format!("switchover target {preferred} is not alive")),
            }
        }
        let (kind, reason) = match not_preferred {
            Some(why) => (ElectionKind::Switchover, format!("{why}; best in-sync member")),
            None => (
                ElectionKind::Failover,
                format!("group without master since epoch {}", group.epoch),
            ),
        };
        self.best_in_sync(group, continuity, view, fresh_after, kind, reason)
    }

    /// The group's first master.
    fn bootstrap(&self, group: &BrokerGroup, view: &LivenessView<'_>, settled: bool) -> Option<Verdict> {
        let seen: Vec<(&str, Option<(Seen, bool)>)> = group
            .members
            .keys()
            .map(|name| (name.as_str(), view.get(&group.name, name)))
            .collect();
        let fresh_group = seen
            .iter()
            .all(|(_, seen)| seen.is_some_and(|(seen, alive)| alive && seen.max_offset == 0));
        if !fresh_group && !settled {
            return None;
        }
        let best = seen
            .iter()
            .filter_map(|(name, seen)| match seen {
                Some((seen, true)) => Some((*name, seen.max_offset)),
                _ => None,
            })
            // Greatest offset; among equals, the first name.
            .max_by(|(name, offset), (other_name, other_offset)| {
                offset.cmp(other_offset).then_with(|| other_name.cmp(name))
            });
        let Some((member, max_offset)) = best else {
            return Some(Verdict::Stuck {
                why: "no member is alive".to_owned(),
            });
        };
        // Above any epoch the brokers remember, in case the nameservers were rebuilt from scratch
        // while the brokers kept their data (the state accepts this for a first election only).
        let remembered = group.members.values().map(|member| member.epoch).max().unwrap_or(0);
        let reason = if fresh_group {
            "first master of a new group".to_owned()
        } else {
            format!("first master: greatest offset {max_offset} among the live members")
        };
        Some(Verdict::Elect {
            member: member.to_owned(),
            epoch: group.epoch.max(remembered) + 1,
            kind: ElectionKind::Bootstrap,
            reason,
        })
    }

    /// The in-sync member, alive, heard after `fresh_after`, with the greatest offset (ties: the
    /// switchover target, then name order); or why there is none; `None` while a live in-sync
    /// member has yet to send a heartbeat after `fresh_after`.
    fn best_in_sync(
        &self,
        group: &BrokerGroup,
        continuity: &Continuity,
        view: &LivenessView<'_>,
        fresh_after: Instant,
        kind: ElectionKind,
        reason: String,
    ) -> Option<Verdict> {
        let now = view.now();
        let confirmed = view.confirmed_offset(&group.name);
        let mut best: Option<(&str, u64)> = None;
        // Every live in-sync member with a fresh offset: the members the best is compared with.
        let mut compared: Vec<&str> = Vec::new();
        let mut refusals = Vec::new();
        let mut waiting = false;
        for name in group.members.keys() {
            if group.master.as_deref() == Some(name.as_str()) {
                continue;
            }
            let refusal = match view.get(&group.name, name) {
                _ if !group.in_sync.contains(name) => "not in sync".to_owned(),
                None => "never heard from by this nameserver".to_owned(),
                Some((seen, false)) => format!(
                    "not alive (silent for {} ms)",
                    now.saturating_duration_since(seen.at).as_millis()
                ),
                Some((seen, true)) if seen.at <= fresh_after => {
                    waiting = true;
                    continue;
                }
                Some((seen, true)) if confirmed.is_some_and(|confirmed| seen.max_offset < confirmed) => {
                    compared.push(name);
                    format!(
                        "holds up to offset {}, below the group's last confirmed offset {}: promoting it would lose acknowledged messages",
                        seen.max_offset,
                        confirmed.unwrap_or(0)
                    )
                }
                Some((seen, true)) => {
                    compared.push(name);
                    let preferred = |candidate: &str| group.preferred.as_deref() == Some(candidate);
                    let better = best.is_none_or(|(best_name, best_offset)| {
                        (seen.max_offset, preferred(name)) > (best_offset, preferred(best_name))
                    });
                    if better {
                        best = Some((name.as_str(), seen.max_offset));
                    }
                    continue;
                }
            };
            refusals.push(format!("{name}: {refusal}"));
        }
        // Wait for every fresh offset: the furthest member may be the one yet to report.
        if waiting {
            return None;
        }
        if best.is_some()
            && let Some(why) = unproven(group, continuity, view, &compared)
        {
            return Some(Verdict::Stuck { why });
        }
        Some(match best {
            Some((member, _)) => Verdict::Elect {
                member: member.to_owned(),
                epoch: group.epoch + 1,
                kind,
                reason,
            },
            None if refusals.is_empty() => Verdict::Stuck {
                why: "the group has no other member".to_owned(),
            },
            None => Verdict::Stuck {
                why: refusals.join("; "),
            },
        })
    }

    /// Whether `group`'s "stuck" warning at `epoch` is still to be logged; records that it is.
    fn first_warning(&mut self, group: &str, epoch: u64) -> bool {
        self.warned.insert(group.to_owned(), epoch) != Some(epoch)
    }
}

/// The master whose acknowledgements count: the group's, or while it has none the last one
/// elected.
fn last_master(group: &BrokerGroup) -> Option<&str> {
    group
        .master
        .as_deref()
        .or_else(|| group.history.iter().rev().find_map(|change| change.master.as_deref()))
}

/// Why the live members in `compared` (the furthest of which would be promoted) might not hold
/// every message the group acknowledged; `None` when they provably do: every set of replicas
/// that could have acknowledged a send, under the full ack policy and under the degraded one
/// while members are left out, includes one of them ([`every_ack_includes`]).
///
/// An `async` group promises nothing beyond its master, and a group whose master never reported
/// its policy is judged by the confirmed offset alone: neither is checked here.
fn unproven(
    group: &BrokerGroup,
    continuity: &Continuity,
    view: &LivenessView<'_>,
    compared: &[&str],
) -> Option<String> {
    let policy = group.ack_policy.filter(|policy| policy.replicates())?;
    let master = last_master(group)?;
    let master_idc = group.members.get(master).map_or("", |member| member.idc.as_str());
    let members: Vec<Replica<'_>> = group
        .members
        .values()
        .map(|member| Replica {
            name: &member.name,
            idc: &member.idc,
        })
        .collect();
    let replicas = (group.ack_replicas as usize).max(members.len());
    // Who the master may leave out: members of other lost data centers (it is told so with its
    // next heartbeat's answer), and whoever its last heartbeat said it leaves out. A master whose
    // own data center is lost holds no lease, so it acknowledges nothing more.
    let mut left_out: BTreeSet<&str> = group
        .members
        .values()
        .filter(|member| member.idc != master_idc && continuity.is_lost(&member.idc))
        .map(|member| member.name.as_str())
        .collect();
    if let Some(report) = view.report(&group.name) {
        left_out.extend(report.left_out.iter().map(String::as_str));
    }
    left_out.remove(master);
    let mut rules = vec![(requirement(policy, replicas, 0), false)];
    if !left_out.is_empty() {
        rules.push((requirement(policy, replicas, left_out.len()), true));
    }
    let (rule, degraded) = rules
        .into_iter()
        .find(|(rule, _)| !every_ack_includes(*rule, replicas, &members, master, master_idc, compared))?;
    let others: Vec<&str> = group
        .members
        .keys()
        .map(String::as_str)
        .filter(|name| !compared.contains(name))
        .collect();
    let remote = if rule.remote {
        format!(", one outside data center {master_idc:?}")
    } else {
        String::new()
    };
    let mode = if degraded { " (degraded)" } else { "" };
    let live = if compared.is_empty() {
        "no live in-sync member".to_owned()
    } else {
        format!("none of {}", compared.join(", "))
    };
    Some(format!(
        "ack policy {policy}{mode} acknowledges with {} of {replicas} replicas{remote}: {} could have acknowledged sends {live} holds, so promoting would risk losing them; waiting for one of them to return",
        rule.needed,
        others.join(", ")
    ))
}

/// Runs the controller of `service`'s node until `stop` is cancelled.
pub async fn run(service: Arc<NameserverService>, stop: CancellationToken) {
    let mut controller = Controller::new(service.raft().node_id(), service.liveness().timeout(), service.lease());
    let mut watch = crate::continuity::Watch::default();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = async {
                ticks.tick().await;
                tick(&mut controller, &mut watch, &service).await;
            } => {}
        }
    }
}

/// One round: judge every group, commit the elections, warn about groups stuck without a master.
async fn tick(controller: &mut Controller, watch: &mut crate::continuity::Watch, service: &NameserverService) {
    let (leading, term) = {
        let metrics = service.raft().raft().metrics();
        let metrics = metrics.borrow();
        (
            metrics.state == ServerState::Leader && metrics.current_leader == Some(metrics.id),
            metrics.current_term,
        )
    };
    controller.observe_leadership(leading, term, Instant::now());
    crate::continuity::tick(watch, service, leading, term).await;
    let verdicts = service.raft().read_state(|state| {
        service.liveness().with(|view| {
            let without_live_master = state
                .broker_groups()
                .values()
                .filter(|group| {
                    group
                        .master()
                        .is_none_or(|master| !view.get(&group.name, &master.name).is_some_and(|(_, alive)| alive))
                })
                .count();
            service
                .metrics()
                .groups_without_live_master
                .set(without_live_master as i64);
            controller
                .judge_all(state, view)
                .into_iter()
                .map(|(group, verdict)| {
                    let context = state
                        .broker_groups()
                        .get(&group)
                        .map(|group| (group.epoch, group.master.clone()));
                    (group, verdict, context.unwrap_or_default())
                })
                .collect::<Vec<_>>()
        })
    });
    let read_only: std::collections::BTreeMap<String, String> = verdicts
        .iter()
        .filter_map(|(group, verdict, _)| match verdict {
            Verdict::Stuck { why } => Some((group.clone(), why.clone())),
            Verdict::Elect { .. } => None,
        })
        .collect();
    service.set_read_only(read_only);
    for (group, verdict, (group_epoch, master)) in verdicts {
        match verdict {
            Verdict::Elect {
                member,
                epoch,
                kind,
                reason,
            } => {
                let command = Command::ElectMaster {
                    group: group.clone(),
                    member: member.clone(),
                    epoch,
                    reason: reason.clone(),
                };
                match service.write_as_leader(command).await {
                    Ok(_) => {
                        service
                            .metrics()
                            .elections
                            .get_or_create(&ElectionLabels { reason: kind.as_str() })
                            .inc();
                        tracing::info!(
                            group,
                            master = member,
                            epoch,
                            reason,
                            kind = kind.as_str(),
                            "master elected"
                        );
                    }
                    // Another decision was applied first, or this node just lost the lead: the
                    // next tick (here or on the new leader) judges the new state.
                    Err(error @ NameserverError::Command(CommandError::StaleElection { .. }))
                    | Err(error @ NameserverError::ForwardToLeader { .. }) => {
                        tracing::debug!(group, epoch, %error, "election not applied");
                    }
                    Err(error) => {
                        tracing::warn!(group, master = member, epoch, %error, "election not committed; trying again next tick");
                    }
                }
            }
            Verdict::Stuck { why } => {
                if controller.first_warning(&group, group_epoch) {
                    tracing::warn!(
                        event = "group_read_only",
                        group,
                        epoch = group_epoch,
                        master = master.as_deref().unwrap_or("none"),
                        why,
                        "broker group has no live master and none can be elected: trying every tick; `meridian broker switchover --group {group} --to NAME` names one if none of its members is eligible"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use meridian_proto::ack::AckPolicy;

    use super::*;
    use crate::liveness::Liveness;
    use crate::state::{BrokerRegistration, BrokerRole};

    const TIMEOUT: Duration = Duration::from_millis(1000);
    const LEASE: Duration = Duration::from_millis(500);

    fn register(state: &mut MetadataState, member: &str, epoch: u64) {
        state
            .apply(
                Command::RegisterBroker {
                    group: "g".into(),
                    member: BrokerRegistration {
                        name: member.into(),
                        addr: format!("{member}:7911"),
                        idc: String::new(),
                        role: BrokerRole::Slave,
                        epoch,
                        max_offset: 0,
                        registration_digest: 1,
                        in_sync: Vec::new(),
                        ack_policy: None,
                        ack_replicas: 0,
                    },
                    topics: BTreeMap::new(),
                },
                1,
            )
            .unwrap();
    }

    /// Master `m`'s registration at epoch 1, reporting `in_sync`.
    fn master_report(in_sync: &[&str]) -> Command {
        Command::RegisterBroker {
            group: "g".into(),
            member: BrokerRegistration {
                name: "m".into(),
                addr: "m:7911".into(),
                idc: String::new(),
                role: BrokerRole::Master,
                epoch: 1,
                max_offset: 0,
                registration_digest: 2,
                in_sync: in_sync.iter().map(|name| (*name).to_owned()).collect(),
                ack_policy: None,
                ack_replicas: 0,
            },
            topics: BTreeMap::new(),
        }
    }

    fn apply(state: &mut MetadataState, verdict: Option<Verdict>) {
        let Some(Verdict::Elect {
            member, epoch, reason, ..
        }) = verdict
        else {
            panic!("expected an election, got {verdict:?}");
        };
        state
            .apply(
                Command::ElectMaster {
                    group: "g".into(),
                    member,
                    epoch,
                    reason,
                },
                2,
            )
            .unwrap();
    }

    fn judge(
        controller: &mut Controller,
        state: &MetadataState,
        liveness: &Liveness,
        since: Instant,
    ) -> Option<Verdict> {
        liveness.with(|view| controller.judge(&state.broker_groups()["g"], state.continuity(), view, since))
    }

    fn elected(verdict: &Option<Verdict>) -> Option<(&str, u64, ElectionKind)> {
        match verdict {
            Some(Verdict::Elect {
                member, epoch, kind, ..
            }) => Some((member.as_str(), *epoch, *kind)),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_group_gets_a_master_at_once_and_one_with_data_after_a_timeout() {
        let mut controller = Controller::new(1, TIMEOUT, LEASE);
        let liveness = Liveness::new(TIMEOUT);
        let since = Instant::now();
        let mut state = MetadataState::default();
        register(&mut state, "b", 0);
        register(&mut state, "a", 0);
        liveness.touch("g", "a", 0);
        assert_eq!(
            judge(&mut controller, &state, &liveness, since),
            None,
            "b has not reported yet"
        );
        liveness.touch("g", "b", 0);
        let verdict = judge(&mut controller, &state, &liveness, since);
        assert_eq!(
            elected(&verdict),
            Some(("a", 1, ElectionKind::Bootstrap)),
            "ties go to name order"
        );

        // Brokers holding data (and remembering epoch 4 of an older nameserver cluster).
        let mut state = MetadataState::default();
        register(&mut state, "a", 4);
        register(&mut state, "b", 3);
        liveness.touch("g", "a", 10);
        liveness.touch("g", "b", 20);
        assert_eq!(judge(&mut controller, &state, &liveness, since), None);
        tokio::time::advance(TIMEOUT).await;
        liveness.touch("g", "a", 10);
        liveness.touch("g", "b", 20);
        let verdict = judge(&mut controller, &state, &liveness, since);
        assert_eq!(elected(&verdict), Some(("b", 5, ElectionKind::Bootstrap)));
        apply(&mut state, verdict);
        assert_eq!(state.broker_groups()["g"].epoch, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_master_is_replaced_by_the_furthest_fresh_in_sync_slave() {
        let mut controller = Controller::new(1, TIMEOUT, LEASE);
        let liveness = Liveness::new(TIMEOUT);
        let since = Instant::now();
        let mut state = MetadataState::default();
        for member in ["m", "s1", "s2", "s3"] {
            register(&mut state, member, 0);
            liveness.touch("g", member, 0);
        }
        let verdict = judge(&mut controller, &state, &liveness, since);
        apply(&mut state, verdict);
        assert_eq!(state.broker_groups()["g"].master.as_deref(), Some("m"));
        state.apply(master_report(&["s1", "s2"]), 3).unwrap();

        // The master is alive: nothing to do, whatever the slaves report.
        tokio::time::advance(Duration::from_millis(300)).await;
        for (member, offset) in [("m", 100), ("s1", 90), ("s2", 80), ("s3", 500)] {
            liveness.touch("g", member, offset);
        }
        assert_eq!(judge(&mut controller, &state, &liveness, since), None);
        // It goes silent; the slaves keep reporting. Not before the timeout has passed.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(200)).await;
            for (member, offset) in [("s1", 90), ("s2", 95), ("s3", 500)] {
                liveness.touch("g", member, offset);
            }
            assert_eq!(judge(&mut controller, &state, &liveness, since), None);
        }
        tokio::time::advance(Duration::from_millis(1)).await;
        let verdict = judge(&mut controller, &state, &liveness, since);
        let Some(Verdict::Elect { reason, .. }) = &verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(reason, "master m silent for 1001 ms");
        assert_eq!(
            elected(&verdict),
            Some(("s2", 2, ElectionKind::Failover)),
            "s3 is further but not in sync"
        );

        // Nobody eligible: stuck, each member saying why.
        state.apply(master_report(&["s1"]), 3).unwrap();
        tokio::time::advance(Duration::from_millis(1100)).await;
        liveness.touch("g", "s3", 500);
        let verdict = judge(&mut controller, &state, &liveness, since);
        assert_eq!(
            verdict,
            Some(Verdict::Stuck {
                why: "s1: not alive (silent for 1101 ms); s2: not in sync; s3: not in sync".into()
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn continuity_a_replica_short_of_the_last_confirmed_offset_is_never_promoted() {
        let mut controller = Controller::new(1, TIMEOUT, LEASE);
        let liveness = Liveness::new(TIMEOUT);
        let since = Instant::now();
        let mut state = MetadataState::default();
        for member in ["m", "s1", "s2"] {
            register(&mut state, member, 0);
            liveness.touch("g", member, 0);
        }
        let verdict = judge(&mut controller, &state, &liveness, since);
        apply(&mut state, verdict);
        state.apply(master_report(&["s1", "s2"]), 3).unwrap();
        // The master confirmed up to 100 (its two replicas in its own data center held it), then
        // its data center went dark with s2: only s1, at 90, is left.
        liveness.touch("g", "m", 120);
        liveness.report_master("g", 100, "", Vec::new());
        liveness.report_master("g", 60, "", Vec::new());
        assert_eq!(
            liveness.with(|view| view.confirmed_offset("g")),
            Some(100),
            "the greatest heard counts"
        );
        for _ in 0..6 {
            tokio::time::advance(Duration::from_millis(200)).await;
            liveness.touch("g", "s1", 90);
        }
        let verdict = judge(&mut controller, &state, &liveness, since);
        assert_eq!(
            verdict,
            Some(Verdict::Stuck {
                why: "s1: holds up to offset 90, below the group's last confirmed offset 100: promoting it would lose acknowledged messages; s2: not alive (silent for 1200 ms)".into()
            })
        );
        // s2, which holds everything confirmed, comes back: it is the one promoted.
        liveness.touch("g", "s2", 100);
        let verdict = judge(&mut controller, &state, &liveness, since);
        assert_eq!(elected(&verdict), Some(("s2", 2, ElectionKind::Failover)));

        // A switchover to a target short of the confirmed offset falls back to one that holds it.
        apply(&mut state, verdict);
        state
            .apply(
                Command::RegisterBroker {
                    group: "g".into(),
                    member: BrokerRegistration {
                        name: "s2".into(),
                        addr: "s2:7911".into(),
                        idc: String::new(),
                        role: BrokerRole::Master,
                        epoch: 2,
                        max_offset: 100,
                        registration_digest: 3,
                        in_sync: vec!["s1".into(), "m".into()],
                        ack_policy: None,
                        ack_replicas: 0,
                    },
                    topics: BTreeMap::new(),
                },
                4,
            )
            .unwrap();
        state
            .apply(
                Command::FenceMaster {
                    group: "g".into(),
                    preferred: "s1".into(),
                    by: "admin".into(),
                    reason: None,
                },
                5,
            )
            .unwrap();
        liveness.report_master("g", 150, "", Vec::new());
        tokio::time::advance(Duration::from_millis(1100)).await;
        let verdict = judge(&mut controller, &state, &liveness, since);
        assert_eq!(verdict, None, "the fenced lease may still run");
        tokio::time::advance(Duration::from_millis(1100)).await;
        for (member, offset) in [("m", 150), ("s1", 90), ("s2", 150)] {
            liveness.touch("g", member, offset);
        }
        let verdict = judge(&mut controller, &state, &liveness, since);
        let Some(Verdict::Elect { member, reason, .. }) = &verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(member, "m", "{reason}");
        assert!(
            reason.contains("switchover target s1 holds up to offset 90, below the group's last confirmed offset 150"),
            "{reason}"
        );
    }

    /// Group "g": master m and s1 in dc1, s2 in dc2, m registered at epoch 1 with `policy`, both
    /// slaves in sync; every member heard at offset 100 and the confirmed offset reported 100.
    fn seed_group(policy: AckPolicy, liveness: &Liveness) -> MetadataState {
        let mut state = MetadataState::default();
        let registration = |name: &str, idc: &str, role: BrokerRole, epoch: u64| Command::RegisterBroker {
            group: "g".into(),
            member: BrokerRegistration {
                name: name.into(),
                addr: format!("{name}:7911"),
                idc: idc.into(),
                role,
                epoch,
                max_offset: 100,
                registration_digest: 9,
                in_sync: if role == BrokerRole::Master {
                    vec!["s1".into(), "s2".into()]
                } else {
                    Vec::new()
                },
                ack_policy: (role == BrokerRole::Master).then_some(policy),
                ack_replicas: if role == BrokerRole::Master { 3 } else { 0 },
            },
            topics: BTreeMap::new(),
        };
        for (name, idc) in [("m", "dc1"), ("s1", "dc1"), ("s2", "dc2")] {
            state.apply(registration(name, idc, BrokerRole::Slave, 0), 1).unwrap();
        }
        let elect = Command::ElectMaster {
            group: "g".into(),
            member: "m".into(),
            epoch: 1,
            reason: "test".into(),
        };
        state.apply(elect, 2).unwrap();
        state.apply(registration("m", "dc1", BrokerRole::Master, 1), 3).unwrap();
        assert_eq!(state.broker_groups()["g"].ack_policy, Some(policy));
        liveness.report_master("g", 100, "", Vec::new());
        state
    }

    /// The master dies; `alive` keep heartbeating at offset 100 (the last confirmed offset the
    /// nameservers heard) past its lease; the verdict then.
    async fn after_master_death(state: &MetadataState, liveness: &Liveness, alive: &[(&str, u64)]) -> Option<Verdict> {
        let mut controller = Controller::new(1, TIMEOUT, LEASE);
        let since = Instant::now();
        for _ in 0..8 {
            tokio::time::advance(Duration::from_millis(200)).await;
            for (member, offset) in alive {
                liveness.touch("g", member, *offset);
            }
        }
        judge(&mut controller, state, liveness, since)
    }

    #[tokio::test(start_paused = true)]
    async fn continuity_a_quorum_group_that_lost_two_of_three_is_not_taken_over_even_at_the_confirmed_offset() {
        // m and s1 alone make a quorum: whatever they acknowledged after the master's last
        // heartbeat, s2 may lack, though it reached the confirmed offset the nameservers heard.
        let liveness = Liveness::new(TIMEOUT);
        let state = seed_group(AckPolicy::Quorum, &liveness);
        let verdict = after_master_death(&state, &liveness, &[("s2", 100)]).await;
        assert_eq!(
            verdict,
            Some(Verdict::Stuck {
                why: "ack policy quorum acknowledges with 2 of 3 replicas: m, s1 could have acknowledged sends none of s2 holds, so promoting would risk losing them; waiting for one of them to return".into()
            })
        );
        // s1 back: every quorum of three includes s1 or s2, and the furthest of them is promoted.
        let verdict = after_master_death(&state, &liveness, &[("s1", 130), ("s2", 100)]).await;
        assert_eq!(elected(&verdict), Some(("s1", 2, ElectionKind::Failover)));
    }

    #[tokio::test(start_paused = true)]
    async fn continuity_an_idc_safe_group_is_taken_over_by_its_remote_replica_unless_it_was_left_out() {
        let liveness = Liveness::new(TIMEOUT);
        let state = seed_group(AckPolicy::IdcSafe, &liveness);
        let verdict = after_master_death(&state, &liveness, &[("s2", 100)]).await;
        assert_eq!(elected(&verdict), Some(("s2", 2, ElectionKind::Failover)));

        // The master had been acknowledging without s2 (its data center was lost a moment ago):
        // then s2 proves nothing.
        let liveness = Liveness::new(TIMEOUT);
        let state = seed_group(AckPolicy::IdcSafe, &liveness);
        liveness.report_master(
            "g",
            100,
            "acknowledging with 2 of 2 surviving replicas",
            vec!["s2".into()],
        );
        let verdict = after_master_death(&state, &liveness, &[("s2", 100)]).await;
        let Some(Verdict::Stuck { why }) = &verdict else {
            panic!("{verdict:?}");
        };
        assert!(
            why.starts_with(
                "ack policy idc_safe (degraded) acknowledges with 2 of 3 replicas: m, s1 could have acknowledged"
            ),
            "{why}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_async_group_fails_over_to_its_furthest_slave_as_before() {
        let liveness = Liveness::new(TIMEOUT);
        let state = seed_group(AckPolicy::Async, &liveness);
        let verdict = after_master_death(&state, &liveness, &[("s2", 100)]).await;
        assert_eq!(elected(&verdict), Some(("s2", 2, ElectionKind::Failover)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_waits_a_timeout_and_wants_heartbeats_after_the_lease() {
        let mut controller = Controller::new(1, TIMEOUT, LEASE);
        let liveness = Liveness::new(TIMEOUT);
        let mut state = MetadataState::default();
        for member in ["m", "s"] {
            register(&mut state, member, 0);
        }
        state
            .apply(
                Command::ElectMaster {
                    group: "g".into(),
                    member: "m".into(),
                    epoch: 1,
                    reason: "test".into(),
                },
                2,
            )
            .unwrap();
        state.apply(master_report(&["s"]), 3).unwrap();
        // This node just became leader and never heard the master.
        let since = Instant::now();
        liveness.touch("g", "s", 7);
        assert_eq!(judge(&mut controller, &state, &liveness, since), None);
        tokio::time::advance(TIMEOUT).await;
        // s's only heartbeat predates since + lease: its offset may be stale.
        assert_eq!(judge(&mut controller, &state, &liveness, since), None);
        liveness.touch("g", "s", 8);
        let verdict = judge(&mut controller, &state, &liveness, since);
        let Some(Verdict::Elect { reason, .. }) = &verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(
            reason,
            "master m not heard from in the 1000 ms since this nameserver became leader"
        );
        assert_eq!(elected(&verdict), Some(("s", 2, ElectionKind::Failover)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_switchover_elects_the_target_after_the_fenced_lease_lapsed() {
        let mut controller = Controller::new(1, TIMEOUT, LEASE);
        let liveness = Liveness::new(TIMEOUT);
        let since = Instant::now();
        let mut state = MetadataState::default();
        for member in ["m", "s1", "s2"] {
            register(&mut state, member, 0);
            liveness.touch("g", member, 0);
        }
        let verdict = judge(&mut controller, &state, &liveness, since);
        apply(&mut state, verdict);
        state.apply(master_report(&["s1", "s2"]), 3).unwrap();
        let fence = |preferred: &str| Command::FenceMaster {
            group: "g".into(),
            preferred: preferred.into(),
            by: "admin".into(),
            reason: None,
        };
        state.apply(fence("s1"), 4).unwrap();
        let beat = |offsets: [u64; 3]| {
            for (member, offset) in ["m", "s1", "s2"].into_iter().zip(offsets) {
                liveness.touch("g", member, offset);
            }
        };
        // Everyone alive; the fenced master's lease may still run: wait.
        for _ in 0..5 {
            beat([100, 100, 90]);
            assert_eq!(judge(&mut controller, &state, &liveness, since), None);
            tokio::time::advance(Duration::from_millis(200)).await;
        }
        beat([100, 100, 90]);
        let verdict = judge(&mut controller, &state, &liveness, since);
        assert_eq!(elected(&verdict), Some(("s1", 3, ElectionKind::Switchover)));

        // A target behind another live member is passed over for the best in-sync one...
        state.apply(fence("s2"), 5).unwrap();
        assert_eq!(state.broker_groups()["g"].epoch, 3, "fenced again, masterless at 2+1");
        tokio::time::advance(Duration::from_millis(1001)).await;
        beat([100, 100, 90]);
        let verdict = judge(&mut controller, &state, &liveness, since);
        assert_eq!(judge(&mut controller, &state, &liveness, since), verdict);
        assert_eq!(elected(&verdict), Some(("s1", 4, ElectionKind::Switchover)));
        // ...unless it is the only live in-sync member.
        tokio::time::advance(Duration::from_millis(1001)).await;
        liveness.touch("g", "m", 100);
        liveness.touch("g", "s2", 90);
        let verdict = judge(&mut controller, &state, &liveness, since);
        assert_eq!(elected(&verdict), Some(("s2", 4, ElectionKind::Switchover)));
    }
}
