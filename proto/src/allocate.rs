//! Which queues of a topic each member of a consumer group consumes: [`allocate_averagely`]
//! (RocketMQ's), and [`allocate_by_idc`], the near-by allocation every Meridian consumer uses.
//! Pure functions of their inputs, so they live in `proto`: the client SDK runs them to rebalance
//! (re-exported as `meridian_client::allocate_by_idc`), and the broker's console endpoints run the
//! same code to show a group's allocation.

use std::collections::BTreeMap;
use std::fmt;

/// One queue of a topic: the broker (group) that holds it and its id there. Queues sort by broker
/// name, then id, the order every member uses for allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId {
    /// Name of the broker group holding the queue (stable across master failover, unlike an
    /// address).
    pub broker_name: String,
    /// Queue id on that broker.
    pub queue_id: u32,
}

impl QueueId {
    /// A queue of `broker_name`.
    pub fn new(broker_name: impl Into<String>, queue_id: u32) -> QueueId {
        QueueId {
            broker_name: broker_name.into(),
            queue_id,
        }
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}#{}", self.broker_name, self.queue_id)
    }
}

/// The queues `me` consumes when `queues` are shared among `members` the way RocketMQ's
/// `AllocateMessageQueueAveragely` does: both lists sorted, each member takes one contiguous range,
/// and the first `queues % members` members take one queue more. Every member computes the same
/// answer from the same inputs, whatever their order, so no coordination is needed. A member not
/// in `members` gets nothing.
pub fn allocate_averagely(queues: &[QueueId], members: &[String], me: &str) -> Vec<QueueId> {
    let mut members: Vec<&str> = members.iter().map(String::as_str).collect();
    members.sort_unstable();
    members.dedup();
    let Ok(index) = members.binary_search(&me) else {
        return Vec::new();
    };
    let mut queues: Vec<&QueueId> = queues.iter().collect();
    queues.sort_unstable();
    queues.dedup();
    queues[share(queues.len(), members.len(), index)]
        .iter()
        .map(|queue| (*queue).clone())
        .collect()
}

/// Name and version of the allocation [`allocate_by_idc`] implements, reported in every
/// consumer heartbeat. Members of a group must agree on it: two algorithms over the same inputs
/// leave queues unconsumed or consumed twice. Any change to the algorithm's results raises the
/// version.
pub const ALLOCATION: &str = "idc-aware/1";

/// How a consumer group spans data centers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Deployment {
    /// Consumers take their own data center's queues, and the queues of a data center with no
    /// consumers are shared by all: nothing goes unconsumed while any member runs.
    #[default]
    SingleSide,
    /// Consumers take only their own data center's queues (each side runs its own consumers); the
    /// queues of a data center with no consumers wait, with a warning, until a drill evacuates it
    /// or consumers start there.
    DualSide,
}

impl Deployment {
    /// `single-side` or `dual-side`, as heartbeats and configs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Deployment::SingleSide => "single-side",
            Deployment::DualSide => "dual-side",
        }
    }
}

impl fmt::Display for Deployment {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for Deployment {
    type Err = String;

    fn from_str(text: &str) -> Result<Deployment, String> {
        match text {
            "single-side" => Ok(Deployment::SingleSide),
            "dual-side" => Ok(Deployment::DualSide),
            other => Err(format!(
                "deployment {other:?} is unknown: use \"single-side\" or \"dual-side\""
            )),
        }
    }
}

/// What [`allocate_by_idc`] gives one member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdcAllocation {
    /// The member's queues, sorted.
    pub queues: Vec<QueueId>,
    /// Data centers whose queues no member takes (dual-side groups only): they have queues but no
    /// consumers, so their messages wait. Sorted.
    pub unserved_idcs: Vec<String>,
}

/// The queues `me` consumes when `queues` (each with the data center of its broker group) are
/// shared among `members` (each `(client_id, idc)`), the near-by way:
///
/// 1. queues are classed by their data center, members by theirs;
/// 2. inside each data center, its queues go to its members as [`allocate_averagely`] shares them;
/// 3. the queues of a data center without members are spread over every member (single-side), or
///    left unconsumed and reported (dual-side). Members with the fewest local queues take the
///    extra ones first, so within a data center loads differ by at most one.
///
/// Data centers in `evacuated` (a failover drill) count as having no members: their members get
/// nothing and their queues are spread over the others, whatever the deployment.
///
/// Deterministic: every member computes the same answer from the same inputs, whatever their
/// order. The empty string is a data center like any other (members and brokers with none).
pub fn allocate_by_idc(
    queues: &[(QueueId, String)],
    members: &[(String, String)],
    me: &str,
    deployment: Deployment,
    evacuated: &[String],
) -> IdcAllocation {
    let is_evacuated = |idc: &str| evacuated.iter().any(|evacuated| evacuated == idc);
    // client id -> idc, deduplicated and sorted; evacuated members take no part.
    let active: BTreeMap<&str, &str> = members
        .iter()
        .filter(|(_, idc)| !is_evacuated(idc))
        .map(|(client_id, idc)| (client_id.as_str(), idc.as_str()))
        .collect();
    let mut by_idc: BTreeMap<&str, Vec<&QueueId>> = BTreeMap::new();
    for (queue, idc) in queues {
        by_idc.entry(idc.as_str()).or_default().push(queue);
    }
    let mut members_by_idc: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (client_id, idc) in &active {
        members_by_idc.entry(idc).or_default().push(client_id);
    }

    let mut local_load: BTreeMap<&str, usize> = active.keys().map(|client_id| (*client_id, 0)).collect();
    let mut mine: Vec<QueueId> = Vec::new();
    let mut orphans: Vec<&QueueId> = Vec::new();
    let mut unserved_idcs = Vec::new();
    for (idc, idc_queues) in &mut by_idc {
        idc_queues.sort_unstable();
        idc_queues.dedup();
        match members_by_idc.get(idc) {
            Some(idc_members) if !is_evacuated(idc) => {
                for (index, member) in idc_members.iter().enumerate() {
                    let range = share(idc_queues.len(), idc_members.len(), index);
                    local_load.insert(member, range.len());
                    if *member == me {
                        mine.extend(idc_queues[range].iter().map(|queue| (*queue).clone()));
                    }
                }
            }
            _ if deployment == Deployment::DualSide && !is_evacuated(idc) => unserved_idcs.push((*idc).to_owned()),
            _ => orphans.extend(idc_queues.iter().copied()),
        }
    }
    if !orphans.is_empty() && !active.is_empty() {
        orphans.sort_unstable();
        orphans.dedup();
        let mut order: Vec<(usize, &str)> = local_load.iter().map(|(member, load)| (*load, *member)).collect();
        order.sort_unstable();
        if let Some(index) = order.iter().position(|(_, member)| *member == me) {
            let range = share(orphans.len(), order.len(), index);
            mine.extend(orphans[range].iter().map(|queue| (*queue).clone()));
        }
    }
    if !active.contains_key(me) {
        mine.clear();
    }
    mine.sort_unstable();
    IdcAllocation {
        queues: mine,
        unserved_idcs,
    }
}

/// The contiguous range of `count` items that member `index` of `members` takes: the first
/// `count % members` members take one more.
fn share(count: usize, members: usize, index: usize) -> std::ops::Range<usize> {
    let base = count / members;
    let extra = count % members;
    let start = index * base + index.min(extra);
    start..start + base + usize::from(index < extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn queues(count: u32) -> Vec<QueueId> {
        (0..count).map(|id| QueueId::new("broker-a", id)).collect()
    }

    fn ids(allocated: &[QueueId]) -> Vec<u32> {
        allocated.iter().map(|queue| queue.queue_id).collect()
    }

    #[test]
    fn contiguous_ranges_with_the_remainder_first() {
        let members: Vec<String> = ["c", "a", "b"].map(String::from).to_vec();
        let all = queues(8);
        assert_eq!(ids(&allocate_averagely(&all, &members, "a")), [0, 1, 2]);
        assert_eq!(ids(&allocate_averagely(&all, &members, "b")), [3, 4, 5]);
        assert_eq!(ids(&allocate_averagely(&all, &members, "c")), [6, 7]);
    }

    #[test]
    fn more_members_than_queues_leaves_the_last_members_idle() {
        let members: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let all = queues(2);
        assert_eq!(ids(&allocate_averagely(&all, &members, "a")), [0]);
        assert_eq!(ids(&allocate_averagely(&all, &members, "b")), [1]);
        assert!(allocate_averagely(&all, &members, "c").is_empty());
        assert!(allocate_averagely(&all, &members, "stranger").is_empty());
        assert!(allocate_averagely(&all, &[], "a").is_empty());
    }

    #[test]
    fn queues_sort_by_broker_then_id() {
        let all = vec![
            QueueId::new("b", 0),
            QueueId::new("a", 1),
            QueueId::new("a", 0),
            QueueId::new("b", 1),
        ];
        let members = vec!["m1".to_owned(), "m2".to_owned()];
        assert_eq!(
            allocate_averagely(&all, &members, "m1"),
            [QueueId::new("a", 0), QueueId::new("a", 1)]
        );
        assert_eq!(
            allocate_averagely(&all, &members, "m2"),
            [QueueId::new("b", 0), QueueId::new("b", 1)]
        );
    }

    fn arb_case() -> impl Strategy<Value = (Vec<QueueId>, Vec<String>)> {
        (
            proptest::collection::btree_set(("[a-c]", 0u32..40), 0..60),
            proptest::collection::btree_set("[a-z]{1,6}", 1..12),
        )
            .prop_map(|(queues, members)| {
                (
                    queues
                        .into_iter()
                        .map(|(broker, id)| QueueId::new(broker, id))
                        .collect(),
                    members.into_iter().collect(),
                )
            })
    }

    fn idc_queues(spec: &[(&str, &str, u32)]) -> Vec<(QueueId, String)> {
        spec.iter()
            .flat_map(|(broker, idc, count)| (0..*count).map(move |id| (QueueId::new(*broker, id), (*idc).to_owned())))
            .collect()
    }

    fn idc_members(spec: &[(&str, &str)]) -> Vec<(String, String)> {
        spec.iter()
            .map(|(client_id, idc)| ((*client_id).to_owned(), (*idc).to_owned()))
            .collect()
    }

    fn names(allocated: &IdcAllocation) -> Vec<String> {
        allocated.queues.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn each_idc_consumes_its_own_queues() {
        let queues = idc_queues(&[("a", "dc1", 4), ("b", "dc2", 4)]);
        let members = idc_members(&[("m1", "dc1"), ("m2", "dc1"), ("m3", "dc2")]);
        let of = |me| allocate_by_idc(&queues, &members, me, Deployment::SingleSide, &[]);
        assert_eq!(names(&of("m1")), ["a#0", "a#1"]);
        assert_eq!(names(&of("m2")), ["a#2", "a#3"]);
        assert_eq!(names(&of("m3")), ["b#0", "b#1", "b#2", "b#3"]);
        assert!(of("m3").unserved_idcs.is_empty());
    }

    #[test]
    fn an_idc_without_consumers_is_shared_by_all_in_single_side_and_waits_in_dual_side() {
        let queues = idc_queues(&[("a", "dc1", 2), ("b", "dc2", 3)]);
        let members = idc_members(&[("m1", "dc1"), ("m2", "dc1")]);
        let single = |me| allocate_by_idc(&queues, &members, me, Deployment::SingleSide, &[]);
        assert_eq!(names(&single("m1")), ["a#0", "b#0", "b#1"]);
        assert_eq!(names(&single("m2")), ["a#1", "b#2"]);
        let dual = allocate_by_idc(&queues, &members, "m1", Deployment::DualSide, &[]);
        assert_eq!(names(&dual), ["a#0"]);
        assert_eq!(dual.unserved_idcs, ["dc2"]);
    }

    #[test]
    fn extra_orphans_go_to_the_members_with_the_fewest_local_queues() {
        // dc1 has 3 queues for 2 members (loads 2 and 1); dc3's single queue goes to the member
        // with 1, so both end with 2.
        let queues = idc_queues(&[("a", "dc1", 3), ("c", "dc3", 1)]);
        let members = idc_members(&[("m1", "dc1"), ("m2", "dc1")]);
        let of = |me| allocate_by_idc(&queues, &members, me, Deployment::SingleSide, &[]);
        assert_eq!(names(&of("m1")), ["a#0", "a#1"]);
        assert_eq!(names(&of("m2")), ["a#2", "c#0"]);
    }

    #[test]
    fn an_evacuated_idc_hands_its_queues_to_the_others_in_both_models() {
        let queues = idc_queues(&[("a", "dc1", 2), ("b", "dc2", 2)]);
        let members = idc_members(&[("m1", "dc1"), ("m2", "dc2")]);
        let evacuated = ["dc1".to_owned()];
        for deployment in [Deployment::SingleSide, Deployment::DualSide] {
            let of = |me| allocate_by_idc(&queues, &members, me, deployment, &evacuated);
            assert!(of("m1").queues.is_empty(), "{deployment}");
            assert_eq!(names(&of("m2")), ["a#0", "a#1", "b#0", "b#1"], "{deployment}");
            assert!(of("m2").unserved_idcs.is_empty());
        }
    }

    #[test]
    fn deployment_names_round_trip() {
        for deployment in [Deployment::SingleSide, Deployment::DualSide] {
            assert_eq!(deployment.as_str().parse::<Deployment>(), Ok(deployment));
        }
        assert!("both".parse::<Deployment>().unwrap_err().contains("single-side"));
    }

    /// Queues with their IDC, and members with theirs.
    type IdcCase = (Vec<(QueueId, String)>, Vec<(String, String)>);

    fn arb_idc_case() -> impl Strategy<Value = IdcCase> {
        (
            proptest::collection::btree_map("[a-e]", ("dc[1-3]", 1u32..12), 0..5),
            proptest::collection::btree_map("[a-z]{1,6}", "dc[1-4]", 1..10),
        )
            .prop_map(|(brokers, members)| {
                let queues = brokers
                    .into_iter()
                    .flat_map(|(broker, (idc, count))| {
                        (0..count).map(move |id| (QueueId::new(broker.clone(), id), idc.clone()))
                    })
                    .collect();
                (queues, members.into_iter().collect())
            })
    }

    proptest! {
        #[test]
        fn idc_allocation_gives_every_queue_once_balanced_within_each_idc(
            (queues, members) in arb_idc_case(),
        ) {
            let mut seen = BTreeSet::new();
            let mut loads: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
            let member_idcs: BTreeSet<&str> = members.iter().map(|(_, idc)| idc.as_str()).collect();
            for (member, idc) in &members {
                let mine = allocate_by_idc(&queues, &members, member, Deployment::SingleSide, &[]);
                prop_assert!(mine.unserved_idcs.is_empty());
                let local = mine
                    .queues
                    .iter()
                    .filter(|queue| queues.iter().any(|(other, queue_idc)| other == *queue && queue_idc == idc))
                    .count();
                loads.entry(idc).or_default().push((local, mine.queues.len()));
                for queue in mine.queues {
                    let queue_idc = &queues.iter().find(|(other, _)| *other == queue).unwrap().1;
                    // A member takes another IDC's queue only when that IDC has no members.
                    prop_assert!(queue_idc == idc || !member_idcs.contains(queue_idc.as_str()));
                    prop_assert!(seen.insert(queue), "a queue was given twice");
                }
            }
            prop_assert_eq!(seen.len(), queues.len(), "every queue is consumed");
            for (idc, idc_loads) in loads {
                let spread = |pick: fn(&(usize, usize)) -> usize| {
                    idc_loads.iter().map(pick).max().unwrap() - idc_loads.iter().map(pick).min().unwrap()
                };
                prop_assert!(spread(|load| load.0) <= 1, "local loads in {idc}: {idc_loads:?}");
                prop_assert!(spread(|load| load.1) <= 1, "total loads in {idc}: {idc_loads:?}");
            }
        }

        #[test]
        fn dual_side_members_take_only_their_own_idc(
            (queues, members) in arb_idc_case(),
        ) {
            let member_idcs: BTreeSet<&str> = members.iter().map(|(_, idc)| idc.as_str()).collect();
            let mut seen = BTreeSet::new();
            for (member, idc) in &members {
                let mine = allocate_by_idc(&queues, &members, member, Deployment::DualSide, &[]);
                for queue in &mine.queues {
                    prop_assert!(queues.iter().any(|(other, queue_idc)| other == queue && queue_idc == idc));
                    prop_assert!(seen.insert(queue.clone()));
                }
                let unserved: BTreeSet<&str> = queues
                    .iter()
                    .map(|(_, idc)| idc.as_str())
                    .filter(|idc| !member_idcs.contains(idc))
                    .collect();
                prop_assert_eq!(mine.unserved_idcs.iter().map(String::as_str).collect::<BTreeSet<_>>(), unserved);
            }
            let served = queues.iter().filter(|(_, idc)| member_idcs.contains(idc.as_str())).count();
            prop_assert_eq!(seen.len(), served);
        }

        #[test]
        fn idc_allocation_is_the_same_on_every_member_whatever_the_input_order(
            (queues, members) in arb_idc_case(),
            seed in any::<u64>(),
            evacuate in proptest::option::of("dc[1-3]"),
        ) {
            let evacuated: Vec<String> = evacuate.into_iter().collect();
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut shuffled_queues = queues.clone();
            rng.shuffle(&mut shuffled_queues);
            let mut shuffled_members = members.clone();
            rng.shuffle(&mut shuffled_members);
            for deployment in [Deployment::SingleSide, Deployment::DualSide] {
                for (member, _) in &members {
                    prop_assert_eq!(
                        allocate_by_idc(&queues, &members, member, deployment, &evacuated),
                        allocate_by_idc(&shuffled_queues, &shuffled_members, member, deployment, &evacuated)
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn every_queue_goes_to_exactly_one_member_and_loads_differ_by_at_most_one(
            (all, members) in arb_case(),
        ) {
            let mut seen = BTreeSet::new();
            let mut loads = Vec::new();
            for member in &members {
                let mine = allocate_averagely(&all, &members, member);
                loads.push(mine.len());
                for queue in mine {
                    prop_assert!(seen.insert(queue), "a queue was given twice");
                }
            }
            prop_assert_eq!(seen, all.iter().cloned().collect::<BTreeSet<_>>());
            let most = loads.iter().max().copied().unwrap_or(0);
            let least = loads.iter().min().copied().unwrap_or(0);
            prop_assert!(most - least <= 1, "loads {loads:?}");
        }

        #[test]
        fn allocation_ignores_input_order((all, members) in arb_case(), seed in any::<u64>()) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut shuffled_queues = all.clone();
            rng.shuffle(&mut shuffled_queues);
            let mut shuffled_members = members.clone();
            rng.shuffle(&mut shuffled_members);
            for member in &members {
                prop_assert_eq!(
                    allocate_averagely(&all, &members, member),
                    allocate_averagely(&shuffled_queues, &shuffled_members, member)
                );
            }
        }
    }
}
