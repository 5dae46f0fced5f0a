//! When a write counts: the master's view of what each slave holds, and the sends waiting for
//! their group's [`AckPolicy`].
//!
//! Slaves report what they hold with every fetch (the offset they fetch from, and what they have
//! synced). From those reports the tracker derives one number, the *acknowledged offset*: the
//! greatest offset the policy's replicas all hold. Sends wait, keyed by the offset just past their
//! records, until it passes them; one report wakes every send it covers.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

pub use crate::config::AckPolicy;

/// What the master last heard from one slave.
#[derive(Debug, Clone)]
struct Slave {
    idc: String,
    received: u64,
    flushed: u64,
    last_fetch: Instant,
}

/// One slave's progress, for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlaveProgress {
    /// Its name.
    pub name: String,
    /// Its data center.
    pub idc: String,
    /// End of its log.
    pub received: u64,
    /// End of what it synced.
    pub flushed: u64,
    /// Milliseconds since its last fetch.
    pub since_fetch_ms: u64,
}

#[derive(Default)]
struct Inner {
    slaves: BTreeMap<String, Slave>,
    /// Sends waiting, by the offset just past their records. Dropping a sender fails the send.
    waiters: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    acked: u64,
}

/// The master's acknowledgement state.
pub struct AckTracker {
    policy: AckPolicy,
    replicas: usize,
    idc: String,
    /// Under sync flush a replica counts once it synced; otherwise once it received.
    sync_flush: bool,
    inner: Mutex<Inner>,
}

impl AckTracker {
    /// A tracker for a group of `replicas` whose master is in `idc`.
    pub fn new(policy: AckPolicy, replicas: u32, idc: String, sync_flush: bool) -> AckTracker {
        AckTracker {
            policy,
            replicas: replicas.max(1) as usize,
            idc,
            sync_flush,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether sends wait for slaves at all.
    pub fn needs_slaves(&self) -> bool {
        self.policy.needed(self.replicas) > 1 || self.policy == AckPolicy::IdcSafe
    }

    fn held(&self, slave: &Slave) -> u64 {
        if self.sync_flush { slave.flushed } else { slave.received }
    }

    /// The greatest offset the policy's replicas all hold.
    fn acked_offset(&self, inner: &Inner) -> u64 {
        let mut held: Vec<u64> = inner.slaves.values().map(|slave| self.held(slave)).collect();
        held.sort_unstable_by(|left, right| right.cmp(left));
        let slaves_needed = self.policy.needed(self.replicas) - 1;
        let by_count = match slaves_needed {
            0 => u64::MAX,
            needed => held.get(needed - 1).copied().unwrap_or(0),
        };
        if self.policy != AckPolicy::IdcSafe {
            return by_count;
        }
        let remote = inner
            .slaves
            .values()
            .filter(|slave| !slave.idc.is_empty() && slave.idc != self.idc)
            .map(|slave| self.held(slave))
            .max()
            .unwrap_or(0);
        by_count.min(remote)
    }

    /// Waits until the send ending at `end_offset` is acknowledged. `Err` when the tracker gave up
    /// on it (the master stepped down or stops).
    pub async fn wait(&self, end_offset: u64) -> Result<(), ()> {
        let acked_rx = {
            let mut inner = self.lock();
            if inner.acked >= end_offset {
                return Ok(());
            }
            let (acked_tx, acked_rx) = oneshot::channel();
            inner.waiters.entry(end_offset).or_default().push(acked_tx);
            acked_rx
        };
        acked_rx.await.map_err(drop)
    }

    /// Records a slave's fetch: it holds everything below `received` and has synced everything
    /// below `flushed`. Wakes every send this acknowledges. Returns the acknowledged offset.
    pub fn report(&self, name: &str, idc: &str, received: u64, flushed: u64) -> u64 {
        let (acked, covered) = {
            let mut inner = self.lock();
            let slave = Slave {
                idc: idc.to_owned(),
                received,
                flushed: flushed.min(received),
                last_fetch: Instant::now(),
            };
            inner.slaves.insert(name.to_owned(), slave);
            inner.acked = self.acked_offset(&inner);
            let first_later = inner.acked.saturating_add(1);
            let later = inner.waiters.split_off(&first_later);
            (inner.acked, std::mem::replace(&mut inner.waiters, later))
        };
        for acked_tx in covered.into_values().flatten() {
            let _ = acked_tx.send(());
        }
        acked
    }

    /// Replicas (counting the master) holding `end_offset`, and how many the policy needs.
    pub fn progress(&self, end_offset: u64) -> (usize, usize) {
        let inner = self.lock();
        let held = 1 + inner
            .slaves
            .values()
            .filter(|slave| self.held(slave) >= end_offset)
            .count();
        (held, self.policy.needed(self.replicas))
    }

    /// What keeps the send ending at `end_offset` from meeting the policy, in words for the
    /// client: how many replicas hold it and need to, for `idc_safe` whether a replica outside the
    /// master's data center holds it, and which replicas are missing (the slaves behind it, with
    /// what they hold, and how many replicas the master never heard from).
    pub fn shortfall(&self, end_offset: u64) -> String {
        let inner = self.lock();
        let needed = self.policy.needed(self.replicas);
        let held = 1 + inner
            .slaves
            .values()
            .filter(|slave| self.held(slave) >= end_offset)
            .count();
        let what = if self.sync_flush { "synced" } else { "holds" };
        let mut missing: Vec<String> = inner
            .slaves
            .iter()
            .filter(|(_, slave)| self.held(slave) < end_offset)
            .map(|(name, slave)| {
                let idc = if slave.idc.is_empty() {
                    "no IDC"
                } else {
                    slave.idc.as_str()
                };
                format!(
                    "{name} ({idc}) {what} up to offset {}, last fetch {} ms ago",
                    self.held(slave),
                    slave.last_fetch.elapsed().as_millis()
                )
            })
            .collect();
        let unheard = self.replicas.saturating_sub(1 + inner.slaves.len());
        if unheard > 0 {
            missing.push(format!(
                "{unheard} replica{} never fetched from this master",
                if unheard == 1 { "" } else { "s" }
            ));
        }
        let missing = if missing.is_empty() {
            String::from("none")
        } else {
            missing.join("; ")
        };
        let counted = format!("{held} of {} replicas hold it", self.replicas);
        if self.policy == AckPolicy::IdcSafe {
            let remote_holds = inner
                .slaves
                .values()
                .any(|slave| !slave.idc.is_empty() && slave.idc != self.idc && self.held(slave) >= end_offset);
            if !remote_holds {
                return format!(
                    "no replica outside data center {:?} holds it (idc_safe needs one, plus {needed} of {} replicas in all; {counted}); missing: {missing}",
                    self.idc, self.replicas
                );
            }
        }
        format!(
            "{counted}, ack policy {} needs {needed}; missing: {missing}",
            self.policy.as_str()
        )
    }

    /// Slaves at most `max_lag` bytes behind `master_end` that fetched within `timeout`, sorted.
    pub fn in_sync(&self, master_end: u64, max_lag: u64, timeout: Duration) -> Vec<String> {
        self.lock()
            .slaves
            .iter()
            .filter(|(_, slave)| {
                master_end.saturating_sub(slave.received) <= max_lag && slave.last_fetch.elapsed() <= timeout
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every slave's progress, by name.
    pub fn slaves(&self) -> Vec<SlaveProgress> {
        self.lock()
            .slaves
            .iter()
            .map(|(name, slave)| SlaveProgress {
                name: name.clone(),
                idc: slave.idc.clone(),
                received: slave.received,
                flushed: slave.flushed,
                since_fetch_ms: slave.last_fetch.elapsed().as_millis() as u64,
            })
            .collect()
    }

    /// Forgets every slave and fails every waiting send (a new epoch starts from nothing).
    pub fn reset(&self) {
        let mut inner = self.lock();
        *inner = Inner::default();
    }

    /// Fails every waiting send.
    pub fn fail_all(&self) {
        let waiters = std::mem::take(&mut self.lock().waiters);
        drop(waiters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(tracker: &AckTracker) -> u64 {
        tracker.acked_offset(&tracker.lock())
    }

    #[test]
    fn quorum_needs_a_majority_counting_the_master() {
        let tracker = AckTracker::new(AckPolicy::Quorum, 3, "dc1".into(), false);
        assert_eq!(acked(&tracker), 0);
        tracker.report("b", "dc1", 100, 0);
        assert_eq!(acked(&tracker), 100, "master + one slave of three is a majority");
        tracker.report("c", "dc2", 250, 0);
        assert_eq!(acked(&tracker), 250);
        assert_eq!(tracker.progress(200), (2, 2));
        assert_eq!(tracker.progress(300), (1, 2));

        let five = AckTracker::new(AckPolicy::Quorum, 5, "dc1".into(), false);
        five.report("b", "dc1", 100, 0);
        assert_eq!(acked(&five), 0, "two of five is not a majority");
        five.report("c", "dc1", 80, 0);
        assert_eq!(acked(&five), 80);
    }

    #[test]
    fn all_needs_every_replica_and_async_none() {
        let all = AckTracker::new(AckPolicy::All, 3, "dc1".into(), false);
        all.report("b", "dc1", 100, 0);
        assert_eq!(acked(&all), 0);
        all.report("c", "dc2", 40, 0);
        assert_eq!(acked(&all), 40);
        let none = AckTracker::new(AckPolicy::Async, 3, "dc1".into(), false);
        assert!(!none.needs_slaves());
        let lone = AckTracker::new(AckPolicy::Quorum, 1, "dc1".into(), false);
        assert!(!lone.needs_slaves());
    }

    #[test]
    fn idc_safe_needs_a_replica_in_another_data_center() {
        let tracker = AckTracker::new(AckPolicy::IdcSafe, 3, "dc1".into(), false);
        tracker.report("same-dc", "dc1", 500, 0);
        assert_eq!(acked(&tracker), 0, "a quorum inside the master's IDC is not enough");
        tracker.report("other-dc", "dc2", 300, 0);
        assert_eq!(acked(&tracker), 300);
    }

    #[test]
    fn under_sync_flush_only_synced_bytes_count() {
        let tracker = AckTracker::new(AckPolicy::Quorum, 3, "dc1".into(), true);
        tracker.report("b", "dc1", 100, 60);
        assert_eq!(acked(&tracker), 60);
    }

    #[tokio::test]
    async fn a_report_wakes_exactly_the_sends_it_covers_and_stepping_down_fails_the_rest() {
        let tracker = std::sync::Arc::new(AckTracker::new(AckPolicy::Quorum, 3, "dc1".into(), false));
        let tasks = tokio_util::task::TaskTracker::new();
        let first = tasks.spawn({
            let tracker = tracker.clone();
            async move { tracker.wait(100).await }
        });
        let second = tasks.spawn({
            let tracker = tracker.clone();
            async move { tracker.wait(200).await }
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        tracker.report("b", "dc1", 150, 0);
        assert_eq!(first.await.unwrap(), Ok(()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "150 does not cover a send ending at 200");
        tracker.fail_all();
        assert_eq!(second.await.unwrap(), Err(()));
        assert_eq!(tracker.wait(120).await, Ok(()), "already acknowledged");
    }

    #[test]
    fn a_refused_send_says_what_is_missing_for_each_policy() {
        // idc_safe with the remote replica gone: the count alone (2 of 2) reads as satisfied, so
        // the message must say that no replica outside dc1 holds it, and name the missing one.
        let idc_safe = AckTracker::new(AckPolicy::IdcSafe, 3, "dc1".into(), false);
        idc_safe.report("b-1", "dc1", 500, 0);
        idc_safe.report("b-2", "dc2", 300, 0);
        let message = idc_safe.shortfall(400);
        assert!(
            message.starts_with("no replica outside data center \"dc1\" holds it"),
            "{message}"
        );
        assert!(message.contains("2 of 3 replicas hold it"), "{message}");
        assert!(
            message.contains("missing: b-2 (dc2) holds up to offset 300"),
            "{message}"
        );
        assert!(
            !message.contains("b-1 ("),
            "b-1 holds it, so it is not missing: {message}"
        );
        // A remote replica never heard from is counted as missing too.
        let unheard = AckTracker::new(AckPolicy::IdcSafe, 2, "dc2".into(), false);
        let message = unheard.shortfall(10);
        assert!(
            message.starts_with("no replica outside data center \"dc2\""),
            "{message}"
        );
        assert!(message.contains("1 of 2 replicas hold it"), "{message}");
        assert!(
            message.contains("missing: 1 replica never fetched from this master"),
            "{message}"
        );

        let quorum = AckTracker::new(AckPolicy::Quorum, 3, "dc1".into(), false);
        quorum.report("b-1", "dc1", 50, 0);
        let message = quorum.shortfall(100);
        assert!(
            message.starts_with(
                "1 of 3 replicas hold it, ack policy quorum needs 2; missing: b-1 (dc1) holds up to offset 50, last fetch "
            ),
            "{message}"
        );
        assert!(
            message.ends_with("; 1 replica never fetched from this master"),
            "{message}"
        );

        let all = AckTracker::new(AckPolicy::All, 3, "dc1".into(), true);
        all.report("b-1", "dc1", 100, 100);
        all.report("b-2", "dc2", 100, 40);
        let message = all.shortfall(100);
        assert!(
            message.starts_with(
                "2 of 3 replicas hold it, ack policy all needs 3; missing: b-2 (dc2) synced up to offset 40"
            ),
            "{message}"
        );
        assert!(!message.contains("never fetched"), "{message}");
    }

    #[test]
    fn in_sync_slaves_are_close_and_recent() {
        let tracker = AckTracker::new(AckPolicy::Quorum, 3, "dc1".into(), false);
        tracker.report("near", "dc1", 990, 0);
        tracker.report("far", "dc2", 10, 0);
        assert_eq!(tracker.in_sync(1000, 100, Duration::from_secs(5)), ["near"]);
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            tracker.in_sync(1000, 100, Duration::from_millis(1)).is_empty(),
            "a slave that stopped fetching drops out"
        );
    }
}
