//! Queue locks of orderly consumers.
//!
//! An orderly consumer processes a queue only while it holds the queue's lock at the broker, so two
//! members never work on one queue at once, even while a rebalance moves it: the old owner keeps
//! the lock until it has finished the message in hand and committed, and the new owner takes it
//! only then. A lock lasts `queue_lock_expiry_ms` unless renewed, and is dropped at once when its
//! holder leaves the group or its connection closes (a crash).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Holder {
    client_id: String,
    until: Instant,
}

/// Every queue lock of this broker, by (group, topic, queue).
#[derive(Debug)]
pub struct QueueLocks {
    expiry: Duration,
    locks: Mutex<HashMap<(String, String, u32), Holder>>,
}

impl QueueLocks {
    /// Locks last `expiry` unless renewed.
    pub fn new(expiry: Duration) -> QueueLocks {
        QueueLocks {
            expiry,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock_table(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, u32), Holder>> {
        self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes or renews the locks of `queue_ids` for `client_id`; returns those it holds now.
    pub fn lock(&self, group: &str, client_id: &str, topic: &str, queue_ids: &[u32], now: Instant) -> Vec<u32> {
        let mut locks = self.lock_table();
        let until = now + self.expiry;
        queue_ids
            .iter()
            .copied()
            .filter(|queue_id| {
                let holder = locks
                    .entry((group.to_owned(), topic.to_owned(), *queue_id))
                    .or_insert_with(|| Holder {
                        client_id: client_id.to_owned(),
                        until,
                    });
                if holder.client_id == client_id || holder.until <= now {
                    holder.client_id = client_id.to_owned();
                    holder.until = until;
                    true
                } else {
                    false
                }
            })
            .collect()
    }

    /// Releases the locks of `queue_ids` that `client_id` holds.
    pub fn unlock(&self, group: &str, client_id: &str, topic: &str, queue_ids: &[u32]) {
        let mut locks = self.lock_table();
        for queue_id in queue_ids {
            let key = (group.to_owned(), topic.to_owned(), *queue_id);
            if locks.get(&key).is_some_and(|holder| holder.client_id == client_id) {
                locks.remove(&key);
            }
        }
    }

    /// Releases every lock of `client_id` in `group` (it left, or its connection closed).
    pub fn release_member(&self, group: &str, client_id: &str) {
        self.lock_table()
            .retain(|(locked_group, _, _), holder| !(locked_group == group && holder.client_id == client_id));
    }

    /// Who holds a queue's lock now, if anyone.
    pub fn holder(&self, group: &str, topic: &str, queue_id: u32, now: Instant) -> Option<String> {
        self.lock_table()
            .get(&(group.to_owned(), topic.to_owned(), queue_id))
            .filter(|holder| holder.until > now)
            .map(|holder| holder.client_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_member_holds_a_queue_until_it_unlocks_leaves_or_expires() {
        let locks = QueueLocks::new(Duration::from_secs(30));
        let now = Instant::now();
        assert_eq!(locks.lock("g", "a", "t", &[0, 1], now), [0, 1]);
        assert_eq!(locks.lock("g", "b", "t", &[1, 2], now), [2], "queue 1 is a's");
        assert_eq!(locks.lock("other", "b", "t", &[1], now), [1], "groups lock apart");
        locks.unlock("g", "b", "t", &[0]);
        assert_eq!(
            locks.holder("g", "t", 0, now).as_deref(),
            Some("a"),
            "b cannot unlock a's queue"
        );
        locks.unlock("g", "a", "t", &[1]);
        assert_eq!(locks.lock("g", "b", "t", &[1], now), [1]);
        locks.release_member("g", "a");
        assert_eq!(locks.lock("g", "b", "t", &[0], now), [0]);
        let later = now + Duration::from_secs(31);
        assert_eq!(
            locks.lock("g", "c", "t", &[0, 1, 2], later),
            [0, 1, 2],
            "b's locks expired"
        );
    }
}
