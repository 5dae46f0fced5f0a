//! Which brokers are alive, as this nameserver sees them: the time of each broker's last heartbeat
//! and the max offset it reported, kept in memory only.
//!
//! Heartbeats are not Raft writes. A broker heartbeats every nameserver every few seconds; writing
//! each one to the Raft log would cost every node an fsync per heartbeat and buy nothing, since
//! "alive" is a property of one observer's view. What is replicated is the registration (address,
//! IDC, role, epoch, topics), and only when it changes (the heartbeat's digest says whether it
//! did). After a restart a nameserver knows every broker as down until its next heartbeat, one
//! heartbeat interval later.

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

/// Last heartbeats by broker group, then broker name.
#[derive(Debug)]
pub struct Liveness {
    timeout: Duration,
    groups: Mutex<HashMap<String, HashMap<String, Seen>>>,
}

impl Liveness {
    /// A broker is alive while its last heartbeat is at most `timeout` old.
    pub fn new(timeout: Duration) -> Liveness {
        Liveness {
            timeout,
            groups: Mutex::new(HashMap::new()),
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
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
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

    /// Forgets a broker (it unregistered).
    pub fn forget(&self, group: &str, member: &str) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(members) = groups.get_mut(group) {
            members.remove(member);
        }
    }

    /// The last heartbeat of a broker, if any arrived since this nameserver started.
    pub fn last_seen(&self, group: &str, member: &str) -> Option<Seen> {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups.get(group)?.get(member).copied()
    }

    /// Whether a broker's last heartbeat is within the timeout.
    pub fn is_alive(&self, group: &str, member: &str) -> bool {
        self.last_seen(group, member)
            .is_some_and(|seen| seen.at.elapsed() <= self.timeout)
    }

    /// Runs `read` with a view that answers many liveness questions under one lock (a route
    /// lookup asks one per broker).
    pub fn with<R>(&self, read: impl FnOnce(&LivenessView<'_>) -> R) -> R {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        read(&LivenessView {
            groups: &groups,
            now: Instant::now(),
            timeout: self.timeout,
        })
    }
}

/// [`Liveness`] at one instant, under its lock.
pub struct LivenessView<'a> {
    groups: &'a HashMap<String, HashMap<String, Seen>>,
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
