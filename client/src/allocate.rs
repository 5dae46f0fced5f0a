//! Which queues of a topic each member of a consumer group consumes.

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
    let base = queues.len() / members.len();
    let extra = queues.len() % members.len();
    let count = base + usize::from(index < extra);
    let start = index * base + index.min(extra);
    queues[start..start + count]
        .iter()
        .map(|queue| (*queue).clone())
        .collect()
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
