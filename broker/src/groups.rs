//! Consumer group membership, kept from consumer heartbeats. Members that stop heartbeating
//! expire; consumers list the members to split the group's queues among themselves.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Member {
    last_seen: Instant,
    topics: Vec<String>,
    sdk_version: String,
}

/// Live members of every consumer group on this broker.
#[derive(Debug)]
pub struct ConsumerGroups {
    expiry: Duration,
    groups: Mutex<HashMap<String, BTreeMap<String, Member>>>,
}

impl ConsumerGroups {
    /// Members expire after `expiry` without a heartbeat.
    pub fn new(expiry: Duration) -> ConsumerGroups {
        ConsumerGroups {
            expiry,
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// Records a heartbeat. Returns true if the member is new to the group.
    pub fn heartbeat(
        &self,
        group: &str,
        client_id: &str,
        topics: Vec<String>,
        sdk_version: String,
        now: Instant,
    ) -> bool {
        let mut groups = self.groups.lock().expect("groups lock");
        let members = groups.entry(group.to_owned()).or_default();
        let member = Member {
            last_seen: now,
            topics,
            sdk_version,
        };
        members.insert(client_id.to_owned(), member).is_none()
    }

    /// Removes a member at once (a clean shutdown).
    pub fn leave(&self, group: &str, client_id: &str) -> bool {
        let mut groups = self.groups.lock().expect("groups lock");
        groups
            .get_mut(group)
            .is_some_and(|members| members.remove(client_id).is_some())
    }

    /// Live members of a group, sorted; expired members are dropped on the way.
    pub fn members(&self, group: &str, now: Instant) -> Vec<String> {
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(members) = groups.get_mut(group) else {
            return Vec::new();
        };
        members.retain(|client_id, member| {
            let alive = now.saturating_duration_since(member.last_seen) <= self.expiry;
            if !alive {
                tracing::info!(group, client_id, "consumer expired from group");
            }
            alive
        });
        members.keys().cloned().collect()
    }

    /// Topics and SDK version of one member, for admin views.
    pub fn describe(&self, group: &str, client_id: &str) -> Option<(Vec<String>, String)> {
        let groups = self.groups.lock().expect("groups lock");
        let member = groups.get(group)?.get(client_id)?;
        Some((member.topics.clone(), member.sdk_version.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_expire_and_leave() {
        let groups = ConsumerGroups::new(Duration::from_secs(10));
        let start = Instant::now();
        assert!(groups.heartbeat("g", "b", vec!["t".into()], "0.1.0".into(), start));
        assert!(groups.heartbeat(
            "g",
            "a",
            vec!["t".into()],
            "0.1.0".into(),
            start + Duration::from_secs(5)
        ));
        assert!(!groups.heartbeat(
            "g",
            "a",
            vec!["t".into()],
            "0.1.0".into(),
            start + Duration::from_secs(6)
        ));
        assert_eq!(groups.members("g", start + Duration::from_secs(8)), ["a", "b"]);
        assert_eq!(groups.members("g", start + Duration::from_secs(12)), ["a"]);
        assert!(groups.leave("g", "a"));
        assert!(groups.members("g", start + Duration::from_secs(12)).is_empty());
        assert_eq!(groups.describe("g", "a"), None);
    }
}
