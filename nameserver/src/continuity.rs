//! Losing a data center: while this node is the Raft leader, it declares a data center lost when
//! none of its brokers was heard for `[continuity] idc_lost_after_ms`, and clears it as soon as one
//! is heard again, each through the Raft log ([`Command::DeclareIdcLost`],
//! [`Command::ClearIdcLost`]; the state is in [`crate::state::continuity`]).
//!
//! Start with [`decide`], the whole rule as a pure function of what the leader saw and when; the
//! failover controller's tick ([`crate::controller`]) calls [`tick`] with its own [`Watch`].
//!
//! Only the leader decides, and only a leader can commit: a nameserver cut off from the majority
//! cannot declare anything (its write never commits), so the data center it sits in cannot
//! declare the majority's side lost. The leader's own data center is never declared lost: the
//! leader is alive in it. Nameserver followers are not counted as a data center's nodes yet:
//! openraft 0.9's metrics tell a leader what a follower matched, not when it last answered.
//!
//! What it announces: the state's lost data centers are listed in every route
//! (`TopicRoute::lost_idcs`), in `GET /api/cluster` and `meridian cluster status`, and in the
//! `meridian_nameserver_idc_lost{idc}` gauge (1 while lost), which every node sets from its
//! applied state. Each declaration is logged at `warn` with `event = "idc_lost"` (and each
//! clearance at `info` with `event = "idc_restored"`), the hook for alerting.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::NameserverError;
use crate::metrics::IdcLabels;
use crate::service::NameserverService;
use crate::state::Command;

/// One broker of a data center, as the leader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    /// `group/member`.
    pub name: String,
    /// How long since its last heartbeat reached this node; `None`: not since this node started.
    pub silent_for: Option<Duration>,
}

/// What [`decide`] concluded about one data center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdcVerdict {
    /// Declare it lost.
    Declare {
        /// The data center.
        idc: String,
        /// Why, in words.
        reason: String,
    },
    /// Clear it: it is back.
    Clear {
        /// The data center.
        idc: String,
        /// Why, in words.
        reason: String,
    },
}

/// The rule. `idcs`: every data center's brokers as this leader saw them; `lost`: the data
/// centers the state holds lost; `leader_idc`: this leader's own; `led_for`: how long this node
/// has led (a node not heard from since counts as silent that long); `lost_after`: the setting;
/// `alive_within`: the broker timeout (a broker heard within it is alive).
///
/// - A data center not lost is declared lost when it has brokers, it is not the leader's, this
///   node has led at least `lost_after`, and every one of its brokers was silent at least
///   `lost_after`.
/// - A lost data center is cleared when one of its brokers is alive, or when the leader is in it.
pub fn decide(
    idcs: &BTreeMap<String, Vec<NodeSeen>>,
    lost: &BTreeSet<String>,
    leader_idc: &str,
    led_for: Duration,
    lost_after: Duration,
    alive_within: Duration,
) -> Vec<IdcVerdict> {
    let mut verdicts = Vec::new();
    for (idc, nodes) in idcs {
        if idc.is_empty() || lost.contains(idc) {
            continue;
        }
        if idc == leader_idc || nodes.is_empty() || led_for < lost_after {
            continue;
        }
        let silent = |node: &NodeSeen| node.silent_for.unwrap_or(led_for);
        if nodes.iter().all(|node| silent(node) >= lost_after) {
            let detail: Vec<String> = nodes
                .iter()
                .map(|node| match node.silent_for {
                    Some(silent_for) => format!("{} silent for {} ms", node.name, silent_for.as_millis()),
                    None => format!(
                        "{} not heard in the {} ms this leader led",
                        node.name,
                        led_for.as_millis()
                    ),
                })
                .collect();
            verdicts.push(IdcVerdict::Declare {
                idc: idc.clone(),
                reason: format!(
                    "none of its {} brokers heard for {} ms (continuity.idc_lost_after_ms): {}",
                    nodes.len(),
                    lost_after.as_millis(),
                    detail.join(", ")
                ),
            });
        }
    }
    for idc in lost {
        if idc == leader_idc {
            verdicts.push(IdcVerdict::Clear {
                idc: idc.clone(),
                reason: "the nameserver Raft leader is in it".to_owned(),
            });
            continue;
        }
        let back: Vec<&str> = idcs
            .get(idc)
            .into_iter()
            .flatten()
            .filter(|node| node.silent_for.is_some_and(|silent_for| silent_for <= alive_within))
            .map(|node| node.name.as_str())
            .collect();
        if !back.is_empty() {
            verdicts.push(IdcVerdict::Clear {
                idc: idc.clone(),
                reason: format!("heard again from {}", back.join(", ")),
            });
        }
    }
    verdicts
}

/// The watcher's memory: since when this node leads (forgotten when the term ends).
#[derive(Debug, Default)]
pub struct Watch {
    leadership: Option<(u64, Instant)>,
}

impl Watch {
    /// Records whether this node leads in `term`, now; a new term starts a new leadership.
    pub fn observe_leadership(&mut self, leading: bool, term: u64, now: Instant) {
        self.leadership = match self.leadership {
            Some((led_term, since)) if leading && led_term == term => Some((led_term, since)),
            _ if leading => Some((term, now)),
            _ => None,
        };
    }
}

/// One round: publish the lost data centers as metrics (every node), and, on the leader, commit
/// what [`decide`] concludes.
pub async fn tick(watch: &mut Watch, service: &NameserverService, leading: bool, term: u64) {
    let now = Instant::now();
    watch.observe_leadership(leading, term, now);
    let leader_idc = {
        let metrics = service.raft().metrics();
        metrics
            .membership_config
            .membership()
            .get_node(&metrics.id)
            .map(|node| node.idc.clone())
            .unwrap_or_default()
    };
    let (idcs, lost) = service.raft().read_state(|state| {
        let lost: BTreeSet<String> = state.continuity().lost.keys().cloned().collect();
        let mut idcs: BTreeMap<String, Vec<NodeSeen>> = BTreeMap::new();
        service.liveness().with(|view| {
            for group in state.broker_groups().values() {
                for member in group.members.values() {
                    let silent_for = view
                        .get(&group.name, &member.name)
                        .map(|(seen, _)| now.saturating_duration_since(seen.at));
                    idcs.entry(member.idc.clone()).or_default().push(NodeSeen {
                        name: format!("{}/{}", group.name, member.name),
                        silent_for,
                    });
                }
            }
        });
        (idcs, lost)
    });
    for idc in idcs.keys().chain(lost.iter()).filter(|idc| !idc.is_empty()) {
        service
            .metrics()
            .idc_lost
            .get_or_create(&IdcLabels { idc: idc.clone() })
            .set(i64::from(lost.contains(idc)));
    }
    let Some((_, since)) = watch.leadership else {
        return;
    };
    let verdicts = decide(
        &idcs,
        &lost,
        &leader_idc,
        now.saturating_duration_since(since),
        service.idc_lost_after(),
        service.liveness().timeout(),
    );
    for verdict in verdicts {
        let (command, idc, reason, lost) = match verdict {
            IdcVerdict::Declare { idc, reason } => (
                Command::DeclareIdcLost {
                    idc: idc.clone(),
                    reason: reason.clone(),
                },
                idc,
                reason,
                true,
            ),
            IdcVerdict::Clear { idc, reason } => (
                Command::ClearIdcLost {
                    idc: idc.clone(),
                    reason: reason.clone(),
                },
                idc,
                reason,
                false,
            ),
        };
        match service.write_as_leader(command).await {
            Ok(_) if lost => {
                tracing::warn!(event = "idc_lost", idc, reason, "data center declared lost");
            }
            Ok(_) => {
                tracing::info!(
                    event = "idc_restored",
                    idc,
                    reason,
                    "lost data center cleared: its brokers are back"
                );
            }
            Err(error @ NameserverError::ForwardToLeader { .. }) => {
                tracing::debug!(idc, %error, "data center decision not applied: no longer leader");
            }
            Err(error) => {
                tracing::warn!(idc, lost, %error, "data center decision not committed; trying again next tick");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOST_AFTER: Duration = Duration::from_millis(6000);
    const ALIVE: Duration = Duration::from_millis(3000);

    fn node(name: &str, silent_ms: Option<u64>) -> NodeSeen {
        NodeSeen {
            name: name.into(),
            silent_for: silent_ms.map(Duration::from_millis),
        }
    }

    fn two_idcs(dc1: Vec<NodeSeen>) -> BTreeMap<String, Vec<NodeSeen>> {
        BTreeMap::from([
            ("dc1".to_owned(), dc1),
            ("dc2".to_owned(), vec![node("b/b-0", Some(100))]),
        ])
    }

    fn declared(verdicts: &[IdcVerdict]) -> Vec<&str> {
        verdicts
            .iter()
            .filter_map(|verdict| match verdict {
                IdcVerdict::Declare { idc, .. } => Some(idc.as_str()),
                IdcVerdict::Clear { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_data_center_is_lost_only_when_every_broker_is_silent_long_enough() {
        let led = Duration::from_secs(60);
        let none = BTreeSet::new();
        // One broker still heard: not lost.
        let idcs = two_idcs(vec![node("a/a-0", Some(7000)), node("a/a-1", Some(200))]);
        assert!(decide(&idcs, &none, "dc2", led, LOST_AFTER, ALIVE).is_empty());
        // Every broker silent, but not yet long enough.
        let idcs = two_idcs(vec![node("a/a-0", Some(7000)), node("a/a-1", Some(5999))]);
        assert!(decide(&idcs, &none, "dc2", led, LOST_AFTER, ALIVE).is_empty());
        // Every broker silent long enough: lost, and the reason names them.
        let idcs = two_idcs(vec![node("a/a-0", Some(7000)), node("a/a-1", Some(6000))]);
        let verdicts = decide(&idcs, &none, "dc2", led, LOST_AFTER, ALIVE);
        assert_eq!(declared(&verdicts), ["dc1"]);
        let IdcVerdict::Declare { reason, .. } = &verdicts[0] else {
            unreachable!()
        };
        assert!(
            reason.contains("a/a-0 silent for 7000 ms") && reason.contains("a/a-1 silent for 6000 ms"),
            "{reason}"
        );
        // The leader's own data center is never lost, whatever its brokers do.
        assert!(decide(&idcs, &none, "dc1", led, LOST_AFTER, ALIVE).is_empty());
        // Already lost: not declared twice.
        let lost = BTreeSet::from(["dc1".to_owned()]);
        assert!(decide(&idcs, &lost, "dc2", led, LOST_AFTER, ALIVE).is_empty());
    }

    #[test]
    fn a_new_leader_waits_before_declaring_anything() {
        let none = BTreeSet::new();
        // Never heard since this node became leader: silent for as long as it led.
        let idcs = two_idcs(vec![node("a/a-0", None)]);
        assert!(decide(&idcs, &none, "dc2", Duration::from_millis(5999), LOST_AFTER, ALIVE).is_empty());
        let verdicts = decide(&idcs, &none, "dc2", Duration::from_millis(6000), LOST_AFTER, ALIVE);
        assert_eq!(declared(&verdicts), ["dc1"]);
        // Even brokers silent for long before: a new leader's own time counts first.
        let idcs = two_idcs(vec![node("a/a-0", Some(60_000))]);
        assert!(decide(&idcs, &none, "dc2", Duration::from_millis(100), LOST_AFTER, ALIVE).is_empty());
    }

    #[test]
    fn a_lost_data_center_is_cleared_when_one_broker_is_back_or_the_leader_is_in_it() {
        let led = Duration::from_secs(60);
        let lost = BTreeSet::from(["dc1".to_owned()]);
        let idcs = two_idcs(vec![node("a/a-0", Some(9000)), node("a/a-1", Some(9000))]);
        assert!(
            decide(&idcs, &lost, "dc2", led, LOST_AFTER, ALIVE).is_empty(),
            "still silent"
        );
        let idcs = two_idcs(vec![node("a/a-0", Some(9000)), node("a/a-1", Some(300))]);
        assert_eq!(
            decide(&idcs, &lost, "dc2", led, LOST_AFTER, ALIVE),
            [IdcVerdict::Clear {
                idc: "dc1".into(),
                reason: "heard again from a/a-1".into()
            }]
        );
        let idcs = two_idcs(vec![node("a/a-0", Some(9000))]);
        assert_eq!(
            decide(&idcs, &lost, "dc1", led, LOST_AFTER, ALIVE),
            [IdcVerdict::Clear {
                idc: "dc1".into(),
                reason: "the nameserver Raft leader is in it".into()
            }]
        );
        // Brokers without a data center never make one lost.
        let idcs = BTreeMap::from([(String::new(), vec![node("x/x-0", None)])]);
        assert!(decide(&idcs, &BTreeSet::new(), "dc2", led, LOST_AFTER, ALIVE).is_empty());
    }
}
