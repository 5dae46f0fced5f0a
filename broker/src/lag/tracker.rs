//! Lag from what the broker holds: the commit windows of each group's queues ([`LagTracker`]),
//! Burrow's rules over one window ([`evaluate`]) and the lag of every group now ([`compute`]).
//! It also keeps, per group and queue, who pulled it last and when its pull offset last moved
//! ([`LagTracker::record_pull`]), for the consumer-health view ([`crate::clients`]): a member that
//! heartbeats while its queue has a backlog and neither pulls on nor commits is blocked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;

use meridian_proto::record::Record;
use serde::Serialize;

use crate::store::MessageStore;

/// Commits kept per group and queue for the status rules (Burrow's default).
pub const WINDOW: usize = 10;

/// One commit as the window keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommitSample {
    /// The committed offset.
    pub offset: u64,
    /// The queue's end minus the offset when the commit arrived (never negative).
    pub lag: u64,
    /// When it arrived, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// A consumer group's health, Burrow's evaluation of its commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Keeping up: lag reached zero within the window, or does not grow.
    Ok,
    /// Offsets move but lag grew across the whole window: consuming slower than producing.
    Warn,
    /// An offset went backwards (a reset, or a consumer that restarted from an older position).
    Rewind,
    /// Commits arrive but the offset does not move while lag holds or grows.
    Stall,
    /// No commit for longer than the window spans, with messages waiting.
    Stop,
}

impl Status {
    /// The uppercase name Burrow uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Rewind => "REWIND",
            Status::Stall => "STALL",
            Status::Stop => "STOP",
        }
    }
}

/// Burrow's rules over one queue's `window` of commits (oldest first), with the queue's lag now
/// and the time now:
/// 1. REWIND when an offset is lower than the one before it;
/// 2. OK when the lag now, or any lag in the window, is zero (an idle, caught-up consumer
///    commits nothing and is fine), or with fewer than two commits to judge;
/// 3. STOP when the time since the last commit exceeds the span of the window;
/// 4. STALL when every offset in the window is the same;
/// 5. WARN when the lag never decreases across the window and ends higher than it started;
/// 6. OK otherwise.
pub fn evaluate(window: &[CommitSample], current_lag: u64, now_ms: u64) -> Status {
    if window.windows(2).any(|pair| pair[1].offset < pair[0].offset) {
        return Status::Rewind;
    }
    if current_lag == 0 || window.iter().any(|sample| sample.lag == 0) {
        return Status::Ok;
    }
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return Status::Ok;
    };
    if window.len() < 2 {
        return Status::Ok;
    }
    let span = last.at_ms.saturating_sub(first.at_ms);
    if now_ms.saturating_sub(last.at_ms) > span {
        return Status::Stop;
    }
    if window.iter().all(|sample| sample.offset == first.offset) {
        return Status::Stall;
    }
    if window.windows(2).all(|pair| pair[1].lag >= pair[0].lag) && last.lag > first.lag {
        return Status::Warn;
    }
    Status::Ok
}

type QueueWindows = BTreeMap<u32, VecDeque<CommitSample>>;
type QueuePulls = BTreeMap<u32, PullSample>;

/// The last pull of one group's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullSample {
    /// The connection it came over.
    pub peer: SocketAddr,
    /// The offset it asked for.
    pub offset: u64,
    /// The offset this connection first asked for: where its consuming started, which counts as
    /// consumed until the group commits.
    pub from_offset: u64,
    /// When the pulled offset last moved (or the queue changed hands), in ms since the Unix epoch:
    /// a consumer that long-polls the same offset again and again is not making progress.
    pub progressed_ms: u64,
}

/// The last [`WINDOW`] commits of every group's queues, fed by the commit handler, and the last
/// pull of each, fed by the pull handler.
#[derive(Debug, Default)]
pub struct LagTracker {
    // group (offsets key) → topic → queue → window. Nested so a commit to a known queue looks it
    // up with borrowed names and allocates nothing.
    windows: Mutex<HashMap<String, HashMap<String, QueueWindows>>>,
    // group → topic → queue → last pull; nested for the same reason (pulls are a hot path).
    pulls: Mutex<HashMap<String, HashMap<String, QueuePulls>>>,
}

impl LagTracker {
    /// Records a commit of `offset` by `group` on a queue that ends at `max_offset`.
    pub fn record_commit(&self, group: &str, topic: &str, queue_id: u32, offset: u64, max_offset: u64, now_ms: u64) {
        let sample = CommitSample {
            offset,
            lag: max_offset.saturating_sub(offset),
            at_ms: now_ms,
        };
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let topics = match windows.get_mut(group) {
            Some(topics) => topics,
            None => windows.entry(group.to_owned()).or_default(),
        };
        let queues = match topics.get_mut(topic) {
            Some(queues) => queues,
            None => topics.entry(topic.to_owned()).or_default(),
        };
        let window = queues.entry(queue_id).or_default();
        if window.len() == WINDOW {
            window.pop_front();
        }
        window.push_back(sample);
    }

    /// Records a pull of `offset` by `group` over the connection from `peer`; allocates only the
    /// first time a queue is pulled.
    pub fn record_pull(&self, group: &str, topic: &str, queue_id: u32, offset: u64, peer: SocketAddr, now_ms: u64) {
        let mut pulls = self.pulls.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let topics = match pulls.get_mut(group) {
            Some(topics) => topics,
            None => pulls.entry(group.to_owned()).or_default(),
        };
        let queues = match topics.get_mut(topic) {
            Some(queues) => queues,
            None => topics.entry(topic.to_owned()).or_default(),
        };
        let sample = queues.entry(queue_id).or_insert(PullSample {
            peer,
            offset,
            from_offset: offset,
            progressed_ms: now_ms,
        });
        if sample.peer != peer {
            sample.peer = peer;
            sample.from_offset = offset;
        } else if sample.offset == offset {
            return;
        }
        sample.offset = offset;
        sample.progressed_ms = now_ms;
    }

    /// The last pull of every queue of `group` on `topic`, by queue id.
    pub fn pulls(&self, group: &str, topic: &str) -> Vec<(u32, PullSample)> {
        let pulls = self.pulls.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pulls
            .get(group)
            .and_then(|topics| topics.get(topic))
            .map(|queues| queues.iter().map(|(queue_id, sample)| (*queue_id, *sample)).collect())
            .unwrap_or_default()
    }

    /// When `group` last committed an offset of a queue, in ms since the Unix epoch.
    pub fn last_commit_ms(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        windows
            .get(group)?
            .get(topic)?
            .get(&queue_id)?
            .back()
            .map(|sample| sample.at_ms)
    }

    /// A copy of one queue's window, oldest first.
    pub fn window(&self, group: &str, topic: &str, queue_id: u32) -> Vec<CommitSample> {
        let windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        windows
            .get(group)
            .and_then(|topics| topics.get(topic))
            .and_then(|queues| queues.get(&queue_id))
            .map(|window| window.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// One group's lag on one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueLag {
    /// The queue.
    pub queue_id: u32,
    /// The group's committed offset: the next message it will consume.
    pub committed_offset: u64,
    /// The queue's end.
    pub max_offset: u64,
    /// Messages stored and not consumed.
    pub lag_messages: u64,
    /// Store time of the oldest message not consumed (ms since the Unix epoch); `None` when none waits.
    pub oldest_unconsumed_store_ms: Option<i64>,
    /// How long that message has waited, in ms; 0 when none waits.
    pub lag_ms: u64,
    /// [`evaluate`] of the queue's commit window.
    pub status: Status,
}

/// A consumer group's lag on one topic of this broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupLag {
    /// The group (for a broadcasting member, `group%member`).
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The worst status of its queues.
    pub status: Status,
    /// Lag in messages over all queues.
    pub lag_messages: u64,
    /// The greatest time lag of its queues, in ms.
    pub lag_ms: u64,
    /// Per queue, by queue id.
    pub queues: Vec<QueueLag>,
}

/// The store time of the message at `offset` of a queue, if the broker still holds it.
fn store_time(store: &MessageStore, topic: &str, queue_id: u32, offset: u64) -> Option<i64> {
    let queue = store.consume_queue(topic, queue_id).ok()?;
    let entry = queue.get(offset.max(queue.min_offset())).ok()??;
    let record = store.read_record(entry.commitlog_offset).ok()?;
    Record::parse(&record).ok().map(|record| record.store_timestamp())
}

/// The lag of every group that committed an offset on this broker, by group then topic.
pub fn compute(store: &MessageStore, tracker: &LagTracker, now_ms: u64) -> Vec<GroupLag> {
    let mut groups: BTreeMap<(String, String), Vec<QueueLag>> = BTreeMap::new();
    for (topic, _) in store.topics() {
        for (group, queue_id, committed_offset) in store.offsets_of_topic(&topic) {
            // `%`-prefixed keys are the broker's own bookkeeping (resets, delay slots, transactions).
            if group.starts_with('%') {
                continue;
            }
            let Ok(queue) = store.consume_queue(&topic, queue_id) else {
                continue;
            };
            let max_offset = queue.max_offset();
            let lag_messages = max_offset.saturating_sub(committed_offset);
            let oldest_unconsumed_store_ms = (lag_messages > 0)
                .then(|| store_time(store, &topic, queue_id, committed_offset))
                .flatten();
            let lag_ms = oldest_unconsumed_store_ms.map_or(0, |stored| {
                u64::try_from(i128::from(now_ms) - i128::from(stored)).unwrap_or(0)
            });
            let status = evaluate(&tracker.window(&group, &topic, queue_id), lag_messages, now_ms);
            groups.entry((group, topic.clone())).or_default().push(QueueLag {
                queue_id,
                committed_offset,
                max_offset,
                lag_messages,
                oldest_unconsumed_store_ms,
                lag_ms,
                status,
            });
        }
    }
    groups
        .into_iter()
        .map(|((group, topic), mut queues)| {
            queues.sort_by_key(|queue| queue.queue_id);
            GroupLag {
                status: queues.iter().map(|queue| queue.status).max().unwrap_or(Status::Ok),
                lag_messages: queues.iter().map(|queue| queue.lag_messages).sum(),
                lag_ms: queues.iter().map(|queue| queue.lag_ms).max().unwrap_or(0),
                group,
                topic,
                queues,
            }
        })
        .collect()
}

/// Ms since the Unix epoch.
pub fn now_ms() -> u64 {
    u64::try_from(meridian_proto::time::now_millis()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(samples: &[(u64, u64, u64)]) -> Vec<CommitSample> {
        samples
            .iter()
            .map(|&(offset, lag, at_ms)| CommitSample { offset, lag, at_ms })
            .collect()
    }

    #[test]
    fn an_offset_going_back_is_a_rewind_whatever_the_lag() {
        let rewound = window(&[(10, 0, 1_000), (12, 0, 2_000), (4, 8, 3_000)]);
        assert_eq!(evaluate(&rewound, 8, 3_500), Status::Rewind);
        assert_eq!(evaluate(&rewound, 0, 3_500), Status::Rewind);
    }

    #[test]
    fn zero_lag_now_or_in_the_window_is_ok_even_without_commits() {
        let caught_up_once = window(&[(10, 5, 1_000), (15, 0, 2_000), (15, 3, 3_000)]);
        assert_eq!(evaluate(&caught_up_once, 3, 3_500), Status::Ok);
        // An idle consumer that is caught up commits nothing and is fine however long it waits.
        let idle = window(&[(10, 2, 1_000), (12, 2, 2_000)]);
        assert_eq!(evaluate(&idle, 0, 1_000_000), Status::Ok);
        assert_eq!(evaluate(&[], 40, 1_000_000), Status::Ok);
        assert_eq!(evaluate(&window(&[(10, 2, 1_000)]), 2, 1_000_000), Status::Ok);
    }

    #[test]
    fn no_commit_for_longer_than_the_window_spans_is_a_stop() {
        let moving = window(&[(10, 5, 1_000), (20, 5, 2_000), (30, 5, 3_000)]);
        assert_eq!(evaluate(&moving, 5, 5_000), Status::Ok, "2 s since, window spans 2 s");
        assert_eq!(evaluate(&moving, 5, 5_001), Status::Stop);
    }

    #[test]
    fn commits_that_do_not_move_while_lag_holds_are_a_stall() {
        let stuck = window(&[(10, 5, 1_000), (10, 5, 2_000), (10, 7, 3_000)]);
        assert_eq!(evaluate(&stuck, 7, 3_100), Status::Stall);
    }

    #[test]
    fn lag_growing_across_the_window_while_offsets_move_is_a_warning() {
        let falling_behind = window(&[(10, 5, 1_000), (12, 5, 2_000), (14, 9, 3_000)]);
        assert_eq!(evaluate(&falling_behind, 9, 3_100), Status::Warn);
        let recovering = window(&[(10, 5, 1_000), (20, 9, 2_000), (40, 4, 3_000)]);
        assert_eq!(evaluate(&recovering, 4, 3_100), Status::Ok);
        let flat = window(&[(10, 5, 1_000), (15, 5, 2_000), (20, 5, 3_000)]);
        assert_eq!(
            evaluate(&flat, 5, 3_100),
            Status::Ok,
            "lag that holds while offsets move is not growth"
        );
    }

    #[test]
    fn the_tracker_keeps_the_last_window_of_commits_per_queue() {
        let tracker = LagTracker::default();
        for step in 0..15_u64 {
            tracker.record_commit("billing", "orders", 1, step, 20, 1_000 * step);
        }
        tracker.record_commit("billing", "orders", 2, 3, 2, 0);
        let kept = tracker.window("billing", "orders", 1);
        assert_eq!(kept.len(), WINDOW);
        assert_eq!(
            kept[0],
            CommitSample {
                offset: 5,
                lag: 15,
                at_ms: 5_000
            }
        );
        assert_eq!(
            tracker.window("billing", "orders", 2)[0].lag,
            0,
            "an offset past the end is no lag"
        );
        assert!(tracker.window("audit", "orders", 1).is_empty());
    }

    #[test]
    fn a_pull_progresses_only_when_its_offset_moves_or_the_queue_changes_hands() {
        let tracker = LagTracker::default();
        let one = SocketAddr::from(([127, 0, 0, 1], 1));
        let two = SocketAddr::from(([127, 0, 0, 1], 2));
        tracker.record_pull("billing", "orders", 0, 5, one, 1_000);
        // Long-polling the same offset again is no progress.
        tracker.record_pull("billing", "orders", 0, 5, one, 9_000);
        assert_eq!(tracker.pulls("billing", "orders")[0].1.progressed_ms, 1_000);
        tracker.record_pull("billing", "orders", 0, 7, one, 10_000);
        assert_eq!(tracker.pulls("billing", "orders")[0].1.progressed_ms, 10_000);
        tracker.record_pull("billing", "orders", 0, 7, two, 11_000);
        let (queue_id, pull) = tracker.pulls("billing", "orders")[0];
        assert_eq!(
            (queue_id, pull.peer, pull.offset, pull.progressed_ms),
            (0, two, 7, 11_000)
        );
        assert_eq!(pull.from_offset, 7, "where the new connection started");
        tracker.record_pull("billing", "orders", 0, 9, two, 12_000);
        assert_eq!(tracker.pulls("billing", "orders")[0].1.from_offset, 7);
        assert!(tracker.pulls("audit", "orders").is_empty());
        assert_eq!(tracker.last_commit_ms("billing", "orders", 0), None);
        tracker.record_commit("billing", "orders", 0, 7, 9, 12_000);
        assert_eq!(tracker.last_commit_ms("billing", "orders", 0), Some(12_000));
    }
}
