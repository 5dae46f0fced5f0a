//! Which brokers are alive, as this nameserver sees them: the time of each broker's last heartbeat
//! and the max offset it reported, kept in memory only.
//!
//! Heartbeats are not Raft writes. A broker heartbeats every nameserver every few seconds; writing
//! each one to the Raft log would cost every node an fsync per heartbeat and buy nothing, since
//! "alive" is a property of one observer's view. What is replicated is the registration (address,
//! IDC, role, epoch, topics), and only when it changes (the heartbeat's digest says whether it
//! did). After a restart a nameserver knows every broker as down until its next heartbeat, one
//! heartbeat interval later.
//!
//! Masters also report their confirmed offset and whether they acknowledge in degraded mode
//! ([`GroupReport`]); the greatest confirmed offset heard per group is what the failover
//! controller requires of a replica before promoting it. It is in memory too: every nameserver
//! hears every master, so a new Raft leader knows it as well as the old one did. A nameserver
//! restarted since the master's last heartbeat does not know it (see [`GroupReport`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// What a nameserver last heard from one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// When its last heartbeat arrived.
    pub at: Instant,
    /// Max commitlog offset it reported then.
    pub max_offset: u64,
}

/// What a broker group's masters reported about its history, as this nameserver heard it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupReport {
    /// The greatest confirmed offset any master of the group reported to this nameserver since
    /// it started: every acknowledged message lies below it. `None`: none reported yet.
    pub confirmed_offset: Option<u64>,
    /// Why the master acknowledges in degraded mode, as its last heartbeat said; `None` under
    /// its full ack policy.
    pub degraded: Option<String>,
    /// The members the master leaves out of its ack policy, as its last heartbeat said (sorted;
    /// empty under its full policy).
    pub left_out: Vec<String>,
}

#[derive(Debug, Default)]
struct Tables {
    seen: HashMap<String, HashMap<String, Seen>>,
    reports: HashMap<String, GroupReport>,
}

/// Last heartbeats by broker group, then broker name.
#[derive(Debug)]
pub struct Liveness {
    timeout: Duration,
    groups: Mutex<Tables>,
}

impl Liveness {
    /// A broker is alive while its last heartbeat is at most `timeout` old.
    pub fn new(timeout: Duration) -> Liveness {
        Liveness {
            timeout,
            groups: Mutex::new(Tables::default()),
        }
    }

    /// The heartbeat timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Records a heartbeat from `member` of `group` now.
    pub fn touch(&self, group: &str, member: &str, max_offset: u64) {
        let seen = Seen {
            at: Instant::now(),
            max_offset,
        };
        let mut tables = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let groups = &mut tables.seen;
        match groups.get_mut(group) {
            Some(members) => match members.get_mut(member) {
                Some(slot) => *slot = seen,
                None => {
                    members.insert(member.to_owned(), seen);
                }
            },
            None => {
                groups.insert(group.to_owned(), HashMap::from([(member.to_owned(), seen)]));
            }
        }
    }

    /// Records what a master's heartbeat says about its group: its confirmed offset (the
    /// greatest heard is kept: a lower one comes from a master that is not caught up on its
    /// predecessor's confirmations yet), why it is degraded (empty: it is not) and whom it leaves
    /// out of its ack policy.
    pub fn report_master(&self, group: &str, confirmed_offset: u64, degraded: &str, left_out: Vec<String>) {
        let mut tables = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let report = match tables.reports.get_mut(group) {
            Some(report) => report,
            None => tables.reports.entry(group.to_owned()).or_default(),
        };
        report.confirmed_offset = Some(report.confirmed_offset.unwrap_or(0).max(confirmed_offset));
        if report.left_out != left_out {
            report.left_out = left_out;
        }
        match (&mut report.degraded, degraded.is_empty()) {
            (None, true) => {}
            (slot, true) => *slot = None,
            (Some(known), false) if known == degraded => {}
            (slot, false) => *slot = Some(degraded.to_owned()),
        }
    }

    /// What the group's masters reported.
    pub fn report(&self, group: &str) -> GroupReport {
        let tables = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        tables.reports.get(group).cloned().unwrap_or_default()
    }

    /// Forgets a broker (it unregistered).
    pub fn forget(&self, group: &str, member: &str) {
        let mut tables = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(members) = tables.seen.get_mut(group) {
            members.remove(member);
        }
    }

    /// The last heartbeat of a broker, if any arrived since this nameserver started.
    pub fn last_seen(&self, group: &str, member: &str) -> Option<Seen> {
        let tables = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        tables.seen.get(group)?.get(member).copied()
    }

    /// Whether a broker's last heartbeat is within the timeout.
    pub fn is_alive(&self, group: &str, member: &str) -> bool {
        self.last_seen(group, member)
            .is_some_and(|seen| seen.at.elapsed() <= self.timeout)
    }

    /// Runs `read` with a view that answers many liveness questions under one lock (a route
    /// lookup asks one per broker).
    pub fn with<R>(&self, read: impl FnOnce(&LivenessView<'_>) -> R) -> R {
        let tables = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        read(&LivenessView {
            groups: &tables.seen,
            reports: &tables.reports,
            now: Instant::now(),
            timeout: self.timeout,
        })
    }
}

/// [`Liveness`] at one instant, under its lock.
pub struct LivenessView<'a> {
    groups: &'a HashMap<String, HashMap<String, Seen>>,
    reports: &'a HashMap<String, GroupReport>,
    now: Instant,
    timeout: Duration,
}

impl LivenessView<'_> {
    /// The instant this view judges liveness at.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The heartbeat timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The greatest confirmed offset the group's masters reported (see [`GroupReport`]).
    pub fn confirmed_offset(&self, group: &str) -> Option<u64> {
        self.reports.get(group)?.confirmed_offset
    }

    /// What the group's masters reported.
    pub fn report(&self, group: &str) -> Option<&GroupReport> {
        self.reports.get(group)
    }

    /// The last heartbeat of a broker, and whether it is within the timeout.
    pub fn get(&self, group: &str, member: &str) -> Option<(Seen, bool)> {
        let seen = *self.groups.get(group)?.get(member)?;
        Some((seen, self.now.saturating_duration_since(seen.at) <= self.timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_broker_is_alive_until_its_heartbeat_is_older_than_the_timeout() {
        let liveness = Liveness::new(Duration::from_secs(10));
        assert!(!liveness.is_alive("broker-a", "a-0"), "never heard of");
        liveness.touch("broker-a", "a-0", 42);
        assert!(liveness.is_alive("broker-a", "a-0"));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(liveness.is_alive("broker-a", "a-0"), "exactly at the timeout");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!liveness.is_alive("broker-a", "a-0"));
        assert_eq!(
            liveness.with(|view| view
                .get("broker-a", "a-0")
                .map(|(seen, alive)| (seen.max_offset, alive))),
            Some((42, false))
        );
        liveness.touch("broker-a", "a-0", 43);
        assert!(liveness.is_alive("broker-a", "a-0"), "back after a new heartbeat");
        liveness.forget("broker-a", "a-0");
        assert_eq!(liveness.last_seen("broker-a", "a-0"), None);
    }
}
