//! Consumer group membership, kept from consumer heartbeats. A member leaves when it says so, when
//! the connection it heartbeats on closes (it crashed or was killed), or when it stops
//! heartbeating for the expiry; consumers list the members to split the group's queues among
//! themselves.
//!
//! Members that went away without leaving (their connection closed, or they stopped heartbeating)
//! are kept for [`DEPARTED_TTL`] as [`Departed`], at most [`MAX_DEPARTED`] of them, so the alert
//! evaluator can report an offline consumer; one that heartbeats again is live, not departed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a member said about itself in its last heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberInfo {
    /// Topics it subscribes to.
    pub topics: Vec<String>,
    /// Its SDK version.
    pub sdk_version: String,
    /// Its SDK language (lowercase; `rust` for Meridian's).
    pub sdk_language: String,
    /// Its data center; empty when it has none.
    pub idc: String,
    /// Its queue allocation algorithm and version, e.g. `idc-aware/1`.
    pub allocation: String,
    /// Its deployment model, `single-side` or `dual-side`.
    pub deployment: String,
    /// Its tag filter expression; empty: every message.
    pub subscription: String,
    /// Its cumulative consume latency counts per [`meridian_proto::client_stats`] bucket (µs,
    /// the handler's time per message), from its last heartbeat; empty when it reports none.
    pub consume_latency_us: Vec<u64>,
}

/// How long a member that went away without leaving is remembered as [`Departed`].
pub const DEPARTED_TTL: Duration = Duration::from_secs(600);

/// At most this many departed members are remembered (the oldest are forgotten first), so a
/// crash-looping fleet cannot grow the broker's memory.
pub const MAX_DEPARTED: usize = 1_000;

/// A member that went away without leaving: killed, crashed, or cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    /// Its group.
    pub group: String,
    /// Its client id.
    pub client_id: String,
    /// The connection its last heartbeat came over.
    pub peer: SocketAddr,
    /// What it last reported.
    pub info: MemberInfo,
    /// Why it is gone: `connection closed` or `heartbeat expired`.
    pub reason: &'static str,
    /// When it went, in ms since the Unix epoch.
    pub departed_ms: u64,
    /// When it was last heard, in ms since the Unix epoch.
    pub last_heartbeat_ms: u64,
}

/// A live member as admin views see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMember {
    /// Its group.
    pub group: String,
    /// Its client id.
    pub client_id: String,
    /// The connection its last heartbeat came over.
    pub peer: SocketAddr,
    /// Time since its last heartbeat.
    pub heartbeat_age: Duration,
    /// What it reported.
    pub info: MemberInfo,
}

impl MemberInfo {
    /// What members must agree on to share queues without gaps or overlaps.
    fn allocation_settings(&self) -> (&str, &str) {
        (&self.allocation, &self.deployment)
    }
}

#[derive(Debug, Clone)]
struct Member {
    last_seen: Instant,
    /// The connection its last heartbeat came over.
    peer: SocketAddr,
    info: MemberInfo,
}

/// Live members of every consumer group on this broker.
#[derive(Debug)]
pub struct ConsumerGroups {
    expiry: Duration,
    groups: Mutex<HashMap<String, BTreeMap<String, Member>>>,
    // (group, client id) → the member; its own lock, taken after `groups` when both are held.
    departed: Mutex<BTreeMap<(String, String), Departed>>,
}

fn wall_ms() -> u64 {
    u64::try_from(meridian_proto::time::now_millis()).unwrap_or(0)
}

/// Wall-clock ms of an `Instant` in the past.
fn wall_ms_of(then: Instant, now: Instant) -> u64 {
    wall_ms().saturating_sub(u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(u64::MAX))
}

/// What [`ConsumerGroups::heartbeat`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The member is new to the group.
    pub new: bool,
    /// Another live member allocates queues differently (`client_id`, `allocation`,
    /// `deployment`); reported when the member joins or changes its settings.
    pub disagrees_with: Option<(String, String, String)>,
}

impl ConsumerGroups {
    /// Members expire after `expiry` without a heartbeat.
    pub fn new(expiry: Duration) -> ConsumerGroups {
        ConsumerGroups {
            expiry,
            groups: Mutex::new(HashMap::new()),
            departed: Mutex::new(BTreeMap::new()),
        }
    }

    fn departed_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Departed>> {
        self.departed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn depart(&self, group: &str, client_id: &str, member: &Member, reason: &'static str, now: Instant) {
        let mut departed = self.departed_lock();
        departed.insert(
            (group.to_owned(), client_id.to_owned()),
            Departed {
                group: group.to_owned(),
                client_id: client_id.to_owned(),
                peer: member.peer,
                info: member.info.clone(),
                reason,
                departed_ms: wall_ms(),
                last_heartbeat_ms: wall_ms_of(member.last_seen, now),
            },
        );
        while departed.len() > MAX_DEPARTED {
            let oldest = departed
                .iter()
                .min_by_key(|(_, gone)| gone.departed_ms)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => departed.remove(&key),
                None => break,
            };
        }
    }

    /// Members that went away without leaving within [`DEPARTED_TTL`], and are not back, sorted by
    /// group and client id.
    pub fn departed(&self, now: Instant) -> Vec<Departed> {
        // Expire silent members first, so they show here.
        self.all(now);
        let horizon = wall_ms().saturating_sub(u64::try_from(DEPARTED_TTL.as_millis()).unwrap_or(u64::MAX));
        let mut departed = self.departed_lock();
        departed.retain(|_, gone| gone.departed_ms >= horizon);
        departed.values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, Member>>> {
        self.groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a heartbeat that came over the connection from `peer`.
    pub fn heartbeat(&self, group: &str, client_id: &str, info: MemberInfo, peer: SocketAddr, now: Instant) -> Joined {
        let mut groups = self.lock();
        let members = groups.entry(group.to_owned()).or_default();
        let changed = members
            .get(client_id)
            .is_none_or(|member| member.info.allocation_settings() != info.allocation_settings());
        let disagrees_with = changed
            .then(|| {
                members
                    .iter()
                    .filter(|(other, member)| {
                        *other != client_id
                            && now.saturating_duration_since(member.last_seen) <= self.expiry
                            && member.info.allocation_settings() != info.allocation_settings()
                    })
                    .map(|(other, member)| {
                        (
                            other.clone(),
                            member.info.allocation.clone(),
                            member.info.deployment.clone(),
                        )
                    })
                    .next()
            })
            .flatten();
        let member = Member {
            last_seen: now,
            peer,
            info,
        };
        let new = members.insert(client_id.to_owned(), member).is_none();
        if new {
            self.departed_lock().remove(&(group.to_owned(), client_id.to_owned()));
        }
        Joined { new, disagrees_with }
    }

    /// Removes a member at once (a clean shutdown).
    pub fn leave(&self, group: &str, client_id: &str) -> bool {
        self.lock()
            .get_mut(group)
            .is_some_and(|members| members.remove(client_id).is_some())
    }

    /// Removes every member whose last heartbeat came over the connection from `peer`, which just
    /// closed; returns them as `(group, client_id)`.
    pub fn disconnected(&self, peer: SocketAddr) -> Vec<(String, String)> {
        let mut removed = Vec::new();
        let now = Instant::now();
        for (group, members) in self.lock().iter_mut() {
            members.retain(|client_id, member| {
                let gone = member.peer == peer;
                if gone {
                    self.depart(group, client_id, member, "connection closed", now);
                    removed.push((group.clone(), client_id.clone()));
                }
                !gone
            });
        }
        removed
    }

    /// Live members of a group with what they reported, sorted by client id; expired members are
    /// dropped on the way.
    pub fn members(&self, group: &str, now: Instant) -> Vec<(String, MemberInfo)> {
        let mut groups = self.lock();
        let Some(members) = groups.get_mut(group) else {
            return Vec::new();
        };
        members.retain(|client_id, member| {
            let alive = now.saturating_duration_since(member.last_seen) <= self.expiry;
            if !alive {
                tracing::info!(group, client_id, "consumer expired from group");
                self.depart(group, client_id, member, "heartbeat expired", now);
            }
            alive
        });
        members
            .iter()
            .map(|(client_id, member)| (client_id.clone(), member.info.clone()))
            .collect()
    }

    /// Every live member of every group as `(group, client_id, info)`, sorted, for admin views.
    pub fn all(&self, now: Instant) -> Vec<(String, String, MemberInfo)> {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        let mut all: Vec<_> = names
            .into_iter()
            .flat_map(|group| {
                self.members(&group, now)
                    .into_iter()
                    .map(move |(client_id, info)| (group.clone(), client_id, info))
            })
            .collect();
        all.sort_by(|left, right| (&left.0, &left.1).cmp(&(&right.0, &right.1)));
        all
    }

    /// Every live member of every group with its connection and heartbeat age, sorted by group and
    /// client id, for the consumer-health views.
    pub fn live(&self, now: Instant) -> Vec<LiveMember> {
        // Expire silent members first (into `departed`).
        let _ = self.all(now);
        let groups = self.lock();
        let mut live: Vec<LiveMember> = groups
            .iter()
            .flat_map(|(group, members)| {
                members.iter().map(move |(client_id, member)| LiveMember {
                    group: group.clone(),
                    client_id: client_id.clone(),
                    peer: member.peer,
                    heartbeat_age: now.saturating_duration_since(member.last_seen),
                    info: member.info.clone(),
                })
            })
            .collect();
        live.sort_by(|left, right| (&left.group, &left.client_id).cmp(&(&right.group, &right.client_id)));
        live
    }

    /// What one member reported, for admin views.
    pub fn describe(&self, group: &str, client_id: &str) -> Option<MemberInfo> {
        let groups = self.lock();
        Some(groups.get(group)?.get(client_id)?.info.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(allocation: &str) -> MemberInfo {
        MemberInfo {
            topics: vec!["t".into()],
            sdk_version: "0.1.0".into(),
            idc: "dc1".into(),
            allocation: allocation.into(),
            deployment: "single-side".into(),
            sdk_language: "rust".into(),
            subscription: String::new(),
            consume_latency_us: Vec::new(),
        }
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn ids(members: Vec<(String, MemberInfo)>) -> Vec<String> {
        members.into_iter().map(|(client_id, _)| client_id).collect()
    }

    #[test]
    fn members_expire_and_leave() {
        let groups = ConsumerGroups::new(Duration::from_secs(10));
        let start = Instant::now();
        assert!(groups.heartbeat("g", "b", info("idc-aware/1"), peer(1), start).new);
        let later = start + Duration::from_secs(5);
        assert!(groups.heartbeat("g", "a", info("idc-aware/1"), peer(2), later).new);
        let again = start + Duration::from_secs(6);
        assert!(!groups.heartbeat("g", "a", info("idc-aware/1"), peer(2), again).new);
        assert_eq!(ids(groups.members("g", start + Duration::from_secs(8))), ["a", "b"]);
        assert_eq!(ids(groups.members("g", start + Duration::from_secs(12))), ["a"]);
        assert_eq!(groups.describe("g", "a"), Some(info("idc-aware/1")));
        assert!(groups.leave("g", "a"));
        assert!(groups.members("g", start + Duration::from_secs(12)).is_empty());
        assert_eq!(groups.describe("g", "a"), None);
    }

    #[test]
    fn a_closed_connection_removes_the_members_that_heartbeat_over_it() {
        let groups = ConsumerGroups::new(Duration::from_secs(10));
        let now = Instant::now();
        groups.heartbeat("g", "a", info("idc-aware/1"), peer(1), now);
        groups.heartbeat("h", "a", info("idc-aware/1"), peer(1), now);
        groups.heartbeat("g", "b", info("idc-aware/1"), peer(2), now);
        // "c" moved to a new connection; the old one closing does not remove it.
        groups.heartbeat("g", "c", info("idc-aware/1"), peer(3), now);
        groups.heartbeat("g", "c", info("idc-aware/1"), peer(4), now);
        let mut removed = groups.disconnected(peer(1));
        removed.sort();
        assert_eq!(removed, [("g".into(), "a".into()), ("h".into(), "a".into())]);
        assert!(groups.disconnected(peer(3)).is_empty());
        assert_eq!(ids(groups.members("g", now)), ["b", "c"]);
    }

    #[test]
    fn members_that_go_without_leaving_are_departed_until_they_return() {
        let groups = ConsumerGroups::new(Duration::from_secs(10));
        let start = Instant::now();
        groups.heartbeat("g", "killed", info("idc-aware/1"), peer(1), start);
        groups.heartbeat("g", "silent", info("idc-aware/1"), peer(2), start);
        groups.heartbeat("g", "polite", info("idc-aware/1"), peer(3), start);
        groups.disconnected(peer(1));
        assert!(groups.leave("g", "polite"));
        let later = start + Duration::from_secs(11);
        let gone = groups.departed(later);
        let described: Vec<(&str, &str, SocketAddr)> = gone
            .iter()
            .map(|gone| (gone.client_id.as_str(), gone.reason, gone.peer))
            .collect();
        assert_eq!(
            described,
            [
                ("killed", "connection closed", peer(1)),
                ("silent", "heartbeat expired", peer(2))
            ],
            "a member that left cleanly is not departed"
        );
        assert!(gone[0].last_heartbeat_ms <= gone[0].departed_ms);
        assert!(groups.live(later).is_empty());
        // Back: live again, no longer departed.
        groups.heartbeat("g", "killed", info("idc-aware/1"), peer(4), later);
        let gone = groups.departed(later);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].client_id, "silent");
        let live = groups.live(later);
        assert_eq!(live.len(), 1);
        assert_eq!((live[0].client_id.as_str(), live[0].peer), ("killed", peer(4)));
    }

    #[test]
    fn departed_members_are_bounded() {
        let groups = ConsumerGroups::new(Duration::from_secs(10));
        let now = Instant::now();
        for index in 0..(MAX_DEPARTED as u16 + 5) {
            groups.heartbeat("g", &format!("c{index}"), info("idc-aware/1"), peer(index), now);
            groups.disconnected(peer(index));
        }
        assert_eq!(groups.departed(now).len(), MAX_DEPARTED);
    }

    #[test]
    fn a_member_allocating_differently_is_reported_when_it_joins_or_changes() {
        let groups = ConsumerGroups::new(Duration::from_secs(10));
        let now = Instant::now();
        assert_eq!(
            groups
                .heartbeat("g", "a", info("idc-aware/1"), peer(1), now)
                .disagrees_with,
            None
        );
        let joined = groups.heartbeat("g", "b", info("idc-aware/2"), peer(2), now);
        assert_eq!(
            joined.disagrees_with,
            Some(("a".into(), "idc-aware/1".into(), "single-side".into()))
        );
        // Reported once, not on every heartbeat.
        assert_eq!(
            groups
                .heartbeat("g", "b", info("idc-aware/2"), peer(2), now)
                .disagrees_with,
            None
        );
        let mut dual = info("idc-aware/1");
        dual.deployment = "dual-side".into();
        assert!(groups.heartbeat("g", "a", dual, peer(1), now).disagrees_with.is_some());
    }
}
