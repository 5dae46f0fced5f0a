//! When a send counts as stored in a broker group, and what that lets the nameservers prove when
//! the group's master is gone.
//!
//! The master acknowledges a send once the replicas its [`AckPolicy`] names hold it
//! ([`requirement`]: the full policy, or a declared degraded one while replicas sit in lost data
//! centers). The failover controller may promote a surviving replica only when it provably holds
//! every acknowledged message: when every set of replicas that could have acknowledged a send
//! includes one of the survivors it compares ([`every_ack_includes`]), the furthest survivor holds
//! them all. Brokers and nameservers share these rules from here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// When a send counts as stored, per broker group (`replication.ack_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckPolicy {
    /// The master holds it.
    Async,
    /// A majority of the group's replicas, counting the master, hold it.
    Quorum,
    /// Every replica holds it.
    All,
    /// A majority holds it, one of them outside the master's IDC: losing a whole data center loses
    /// no acknowledged message.
    IdcSafe,
}

impl AckPolicy {
    /// Every policy, in config spelling order.
    pub const ALL: [AckPolicy; 4] = [AckPolicy::Async, AckPolicy::Quorum, AckPolicy::All, AckPolicy::IdcSafe];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AckPolicy::Async => "async",
            AckPolicy::Quorum => "quorum",
            AckPolicy::All => "all",
            AckPolicy::IdcSafe => "idc_safe",
        }
    }

    /// Replicas (counting the master) that must hold a send in a group of `replicas`.
    pub fn needed(self, replicas: usize) -> usize {
        match self {
            AckPolicy::Async => 1,
            AckPolicy::Quorum | AckPolicy::IdcSafe => replicas / 2 + 1,
            AckPolicy::All => replicas,
        }
    }

    /// Whether a send is held by more than the master: only then can a failover keep every
    /// acknowledged message (an `async` group's failover may lose the master's last sends).
    pub fn replicates(self) -> bool {
        self != AckPolicy::Async
    }
}

impl fmt::Display for AckPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spelling is not a policy; the message lists the ones there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAckPolicy(pub String);

impl fmt::Display for UnknownAckPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = AckPolicy::ALL.iter().map(|policy| policy.as_str()).collect();
        write!(f, "unknown ack policy {:?}: use one of {}", self.0, known.join(", "))
    }
}

impl std::error::Error for UnknownAckPolicy {}

impl FromStr for AckPolicy {
    type Err = UnknownAckPolicy;

    fn from_str(spelling: &str) -> Result<AckPolicy, UnknownAckPolicy> {
        AckPolicy::ALL
            .into_iter()
            .find(|policy| policy.as_str() == spelling)
            .ok_or_else(|| UnknownAckPolicy(spelling.to_owned()))
    }
}

/// The rule in force: replicas (counting the master) that must hold a send, and whether one of
/// them must be outside the master's data center.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// Replicas that must hold it, counting the master.
    pub needed: usize,
    /// Whether one of them must be in another data center.
    pub remote: bool,
}

/// The requirement of `policy` over `replicas` when `left_out` of them sit in lost data centers:
/// the full policy when none does; else a majority of the survivors (every survivor for `all`),
/// never more than the full policy, and no remote replica.
pub fn requirement(policy: AckPolicy, replicas: usize, left_out: usize) -> Requirement {
    let full = Requirement {
        needed: policy.needed(replicas),
        remote: policy == AckPolicy::IdcSafe,
    };
    if left_out == 0 {
        return full;
    }
    let surviving = replicas.saturating_sub(left_out).max(1);
    Requirement {
        needed: policy.needed(surviving).min(full.needed),
        remote: false,
    }
}

/// One replica of a group, as far as acknowledgements go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its data center; empty when unknown (counted as possibly remote).
    pub idc: &'a str,
}

/// Whether every set of replicas that could have acknowledged a send under `requirement`, with
/// `master` (in `master_idc`) among them, includes one of `holders`. Then every acknowledged
/// message is held by a holder, and the holder with the greatest offset holds them all (replicas'
/// logs are prefixes of the master's).
///
/// `replicas` is the group as the master counts it; `members` the ones known by name (the
/// master among them or not); unnamed replicas are never holders and may be anywhere.
pub fn every_ack_includes(
    requirement: Requirement,
    replicas: usize,
    members: &[Replica<'_>],
    master: &str,
    master_idc: &str,
    holders: &[&str],
) -> bool {
    if holders.contains(&master) {
        return true;
    }
    // The largest set that avoids every holder: the master, every named non-holder, and every
    // replica the master counts but nobody named.
    let named_others = members
        .iter()
        .filter(|member| member.name != master && !holders.contains(&member.name));
    let unnamed = replicas.saturating_sub(members.iter().filter(|member| member.name != master).count() + 1);
    let avoiding = 1 + named_others.clone().count() + unnamed;
    let remote_avoiding = unnamed > 0
        || named_others
            .into_iter()
            .any(|member| member.idc.is_empty() || member.idc != master_idc);
    avoiding < requirement.needed || (requirement.remote && !remote_avoiding)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [Replica<'static>; 3] = [
        Replica {
            name: "a-0",
            idc: "dc1",
        },
        Replica {
            name: "a-1",
            idc: "dc1",
        },
        Replica {
            name: "a-2",
            idc: "dc2",
        },
    ];

    fn covered(policy: AckPolicy, left_out: usize, holders: &[&str]) -> bool {
        every_ack_includes(requirement(policy, 3, left_out), 3, &SEED, "a-0", "dc1", holders)
    }

    #[test]
    fn every_spelling_round_trips_and_an_unknown_one_lists_the_policies() {
        for policy in AckPolicy::ALL {
            assert_eq!(policy.as_str().parse::<AckPolicy>(), Ok(policy));
        }
        let error = "majority".parse::<AckPolicy>().unwrap_err().to_string();
        assert_eq!(
            error,
            "unknown ack policy \"majority\": use one of async, quorum, all, idc_safe"
        );
    }

    #[test]
    fn a_degraded_group_needs_a_majority_of_its_survivors_and_no_remote_replica() {
        assert_eq!(
            requirement(AckPolicy::IdcSafe, 3, 0),
            Requirement {
                needed: 2,
                remote: true
            }
        );
        assert_eq!(
            requirement(AckPolicy::IdcSafe, 3, 1),
            Requirement {
                needed: 2,
                remote: false
            }
        );
        assert_eq!(
            requirement(AckPolicy::Quorum, 3, 2),
            Requirement {
                needed: 1,
                remote: false
            }
        );
        assert_eq!(
            requirement(AckPolicy::All, 3, 1),
            Requirement {
                needed: 2,
                remote: false
            }
        );
    }

    #[test]
    fn losing_the_masters_data_center_leaves_a_provable_holder_only_under_idc_safe() {
        // dc1 (a-0 and a-1) is gone; a-2 survives.
        assert!(covered(AckPolicy::IdcSafe, 0, &["a-2"]), "a-2 is in every idc_safe ack");
        assert!(
            !covered(AckPolicy::Quorum, 0, &["a-2"]),
            "a-0 and a-1 alone make a quorum"
        );
        assert!(covered(AckPolicy::All, 0, &["a-2"]));
        assert!(
            !covered(AckPolicy::Async, 0, &["a-1", "a-2"]),
            "async: the master alone"
        );
    }

    #[test]
    fn any_two_survivors_of_three_cover_a_quorum_and_one_survivor_does_not() {
        assert!(covered(AckPolicy::Quorum, 0, &["a-1", "a-2"]));
        assert!(!covered(AckPolicy::Quorum, 0, &["a-1"]));
        assert!(
            covered(AckPolicy::Quorum, 0, &["a-0"]),
            "the master itself holds everything"
        );
    }

    #[test]
    fn a_degraded_master_may_have_acknowledged_without_its_remote_replica() {
        // b-0 (dc2) acknowledging with b-1 while dc1's b-2 is lost.
        let group = [
            Replica {
                name: "b-0",
                idc: "dc2",
            },
            Replica {
                name: "b-1",
                idc: "dc2",
            },
            Replica {
                name: "b-2",
                idc: "dc1",
            },
        ];
        let degraded = requirement(AckPolicy::IdcSafe, 3, 1);
        assert!(!every_ack_includes(degraded, 3, &group, "b-0", "dc2", &["b-2"]));
        // b-2 still counts when it fetches, so b-0 and b-2 may have made the two as well.
        assert!(!every_ack_includes(degraded, 3, &group, "b-0", "dc2", &["b-1"]));
        assert!(every_ack_includes(degraded, 3, &group, "b-0", "dc2", &["b-1", "b-2"]));
    }

    #[test]
    fn replicas_nobody_named_may_have_acknowledged_anywhere() {
        let known = [SEED[0], SEED[2]];
        let full = requirement(AckPolicy::IdcSafe, 3, 0);
        assert!(
            !every_ack_includes(full, 3, &known, "a-0", "dc1", &["a-2"]),
            "the third replica may be remote too"
        );
        assert!(every_ack_includes(full, 2, &known, "a-0", "dc1", &["a-2"]));
    }
}
