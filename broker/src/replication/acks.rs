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

pub use crate::config::{AckPolicy, OnIdcLost};

pub use meridian_proto::ack::{Requirement, requirement};

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
    /// Members left out of the policy: in data centers the nameservers declared lost, or declared
    /// so until a moment ago and not caught up yet. Empty under the full policy.
    left_out: Vec<String>,
    /// Set once the nameservers cleared the lost data centers: the full policy returns when its
    /// replicas hold this offset (what was confirmed while degraded).
    restore_at: Option<u64>,
}

/// The master's acknowledgement state.
pub struct AckTracker {
    policy: AckPolicy,
    replicas: usize,
    idc: String,
    /// Under sync flush a replica counts once it synced; otherwise once it received.
    sync_flush: bool,
    on_idc_lost: OnIdcLost,
    inner: Mutex<Inner>,
}

impl AckTracker {
    /// A tracker for a group of `replicas` whose master is in `idc`.
    pub fn new(policy: AckPolicy, replicas: u32, idc: String, sync_flush: bool) -> AckTracker {
        AckTracker::with_on_idc_lost(policy, replicas, idc, sync_flush, OnIdcLost::Stop)
    }

    /// [`AckTracker::new`], going on or stopping when a data center is lost as `on_idc_lost` says.
    pub fn with_on_idc_lost(
        policy: AckPolicy,
        replicas: u32,
        idc: String,
        sync_flush: bool,
        on_idc_lost: OnIdcLost,
    ) -> AckTracker {
        AckTracker {
            policy,
            replicas: replicas.max(1) as usize,
            idc,
            sync_flush,
            on_idc_lost,
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

    /// The rule in force now (degraded while members are left out).
    fn requirement(&self, inner: &Inner) -> Requirement {
        requirement(self.policy, self.replicas, inner.left_out.len())
    }

    /// The greatest offset the policy's replicas all hold.
    fn acked_offset(&self, inner: &Inner) -> u64 {
        self.acked_under(inner, self.requirement(inner))
    }

    /// The greatest offset held as `requirement` says.
    fn acked_under(&self, inner: &Inner, requirement: Requirement) -> u64 {
        let mut held: Vec<u64> = inner.slaves.values().map(|slave| self.held(slave)).collect();
        held.sort_unstable_by(|left, right| right.cmp(left));
        let slaves_needed = requirement.needed - 1;
        let by_count = match slaves_needed {
            0 => u64::MAX,
            needed => held.get(needed - 1).copied().unwrap_or(0),
        };
        if !requirement.remote {
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
            if let Some(restore_at) = inner.restore_at {
                let full = requirement(self.policy, self.replicas, 0);
                if self.acked_under(&inner, full) >= restore_at {
                    tracing::info!(
                        event = "ack_policy_restored",
                        policy = self.policy.as_str(),
                        restore_at,
                        left_out = ?inner.left_out,
                        "replicas of the lost data center caught up: full ack policy again"
                    );
                    inner.left_out.clear();
                    inner.restore_at = None;
                }
            }
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

    /// Applies the members of the group the nameservers hold in lost data centers (`lost`, sorted;
    /// this master's own name is ignored). `confirmed` is the store's confirmed offset now: once
    /// the lost data centers are cleared, the full policy returns as soon as its replicas hold it.
    /// Wakes the sends the new rule acknowledges. Returns whether the degraded state changed.
    pub fn set_lost_members(&self, own_name: &str, lost: &[String], confirmed: u64) -> bool {
        if self.on_idc_lost == OnIdcLost::Stop {
            return false;
        }
        let lost: Vec<String> = lost.iter().filter(|name| *name != own_name).cloned().collect();
        let (changed, covered) = {
            let mut inner = self.lock();
            let before = (inner.left_out.clone(), inner.restore_at.is_some());
            if !lost.is_empty() {
                inner.restore_at = None;
                inner.left_out = lost;
            } else if !inner.left_out.is_empty() && inner.restore_at.is_none() {
                inner.restore_at = Some(confirmed);
            }
            let changed = before != (inner.left_out.clone(), inner.restore_at.is_some());
            inner.acked = self.acked_offset(&inner);
            let first_later = inner.acked.saturating_add(1);
            let later = inner.waiters.split_off(&first_later);
            (changed, std::mem::replace(&mut inner.waiters, later))
        };
        for acked_tx in covered.into_values().flatten() {
            let _ = acked_tx.send(());
        }
        changed
    }

    /// The members left out of the policy (in lost data centers, or not caught up since), sorted.
    pub fn left_out(&self) -> Vec<String> {
        let mut left_out = self.lock().left_out.clone();
        left_out.sort();
        left_out
    }

    /// Why this master acknowledges with fewer replicas than its policy, when it does.
    pub fn degraded(&self) -> Option<String> {
        let inner = self.lock();
        if inner.left_out.is_empty() {
            return None;
        }
        let now = self.requirement(&inner);
        let full = requirement(self.policy, self.replicas, 0);
        if now == full && inner.restore_at.is_none() {
            return None;
        }
        let surviving = self.replicas.saturating_sub(inner.left_out.len()).max(1);
        let full_words = if full.remote {
            format!("{} replicas, one outside data center {:?}", full.needed, self.idc)
        } else {
            format!("{} replicas", full.needed)
        };
        let mut why = format!(
            "acknowledging with {} of {surviving} surviving replicas (ack policy {} needs {full_words}; replication.on_idc_lost = \"degrade\"): {} in lost data centers",
            now.needed,
            self.policy.as_str(),
            inner.left_out.join(", ")
        );
        if let Some(restore_at) = inner.restore_at {
            why += &format!("; data center cleared, back to the full policy once they hold offset {restore_at}");
        }
        Some(why)
    }

    /// Replicas (counting the master) holding `end_offset`, and how many the policy needs.
    pub fn progress(&self, end_offset: u64) -> (usize, usize) {
        let inner = self.lock();
        let held = 1 + inner
            .slaves
            .values()
            .filter(|slave| self.held(slave) >= end_offset)
            .count();
        (held, self.requirement(&inner).needed)
    }

    /// What keeps the send ending at `end_offset` from meeting the policy, in words for the
    /// client: how many replicas hold it and need to, for `idc_safe` whether a replica outside the
    /// master's data center holds it, and which replicas are missing (the slaves behind it, with
    /// what they hold, and how many replicas the master never heard from).
    pub fn shortfall(&self, end_offset: u64) -> String {
        let inner = self.lock();
        let requirement = self.requirement(&inner);
        let needed = requirement.needed;
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
        if requirement.remote {
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
        let degraded = if inner.left_out.is_empty() {
            String::new()
        } else {
            format!(
                " (degraded: {} left out, in lost data centers)",
                inner.left_out.join(", ")
            )
        };
        format!(
            "{counted}, ack policy {} needs {needed}{degraded}; missing: {missing}",
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
        // Which members are left out is the nameservers' word about data centers, not about this
        // epoch's slaves: it stays.
        let left_out = std::mem::take(&mut inner.left_out);
        let restore_at = inner.restore_at.take();
        *inner = Inner {
            left_out,
            restore_at,
            ..Inner::default()
        };
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
    fn degraded_requirements_are_a_majority_of_the_survivors_never_more_than_the_policy() {
        let req = |needed, remote| Requirement { needed, remote };
        assert_eq!(requirement(AckPolicy::Quorum, 3, 0), req(2, false));
        assert_eq!(requirement(AckPolicy::Quorum, 3, 1), req(2, false), "2 survivors: both");
        assert_eq!(requirement(AckPolicy::Quorum, 3, 2), req(1, false), "the master alone");
        assert_eq!(requirement(AckPolicy::IdcSafe, 3, 0), req(2, true));
        assert_eq!(
            requirement(AckPolicy::IdcSafe, 3, 1),
            req(2, false),
            "the surviving in-DC quorum"
        );
        assert_eq!(requirement(AckPolicy::IdcSafe, 3, 2), req(1, false));
        assert_eq!(requirement(AckPolicy::All, 3, 1), req(2, false));
        assert_eq!(requirement(AckPolicy::Async, 3, 2), req(1, false));
        assert_eq!(requirement(AckPolicy::Quorum, 5, 2), req(2, false), "2 of 3 survivors");
        assert_eq!(requirement(AckPolicy::Quorum, 3, 7), req(1, false));
    }

    #[tokio::test]
    async fn continuity_idc_safe_degrades_to_the_surviving_quorum_and_returns_once_caught_up() {
        // broker-b of the seed: master in dc2 with b-1, b-2 in dc1.
        let tracker = AckTracker::with_on_idc_lost(AckPolicy::IdcSafe, 3, "dc2".into(), false, OnIdcLost::Degrade);
        tracker.report("b-1", "dc2", 100, 0);
        tracker.report("b-2", "dc1", 40, 0);
        assert_eq!(acked(&tracker), 40);
        assert_eq!(tracker.degraded(), None);
        // dc1 declared lost: b-2 is left out, b-0 + b-1 acknowledge.
        assert!(tracker.set_lost_members("b-0", &["b-2".to_owned()], 40));
        assert!(
            !tracker.set_lost_members("b-0", &["b-2".to_owned()], 40),
            "a repeat changes nothing"
        );
        assert_eq!(acked(&tracker), 100);
        assert_eq!(tracker.wait(100).await, Ok(()));
        let why = tracker.degraded().expect("degraded");
        assert!(
            why.starts_with("acknowledging with 2 of 2 surviving replicas (ack policy idc_safe needs 2 replicas, one outside data center \"dc2\""),
            "{why}"
        );
        assert!(why.ends_with("b-2 in lost data centers"), "{why}");
        tracker.report("b-1", "dc2", 180, 0);
        assert_eq!(acked(&tracker), 180);
        // dc1 cleared at confirmed offset 180: still degraded until b-2 holds it.
        assert!(tracker.set_lost_members("b-0", &[], 180));
        assert!(
            tracker
                .degraded()
                .expect("restoring")
                .contains("once they hold offset 180")
        );
        tracker.report("b-2", "dc1", 120, 0);
        assert!(tracker.degraded().is_some(), "b-2 is not caught up yet");
        assert_eq!(acked(&tracker), 180, "the degraded rule holds meanwhile");
        tracker.report("b-2", "dc1", 180, 0);
        assert_eq!(tracker.degraded(), None, "caught up: full policy");
        tracker.report("b-1", "dc2", 300, 0);
        assert_eq!(acked(&tracker), 180, "idc_safe again: b-2 must hold it");
    }

    #[tokio::test]
    async fn continuity_a_quorum_master_left_alone_acknowledges_alone_unless_set_to_stop() {
        // broker-a of the seed after dc1 is lost: a-2 is master, a-0 and a-1 are gone.
        let tracker = AckTracker::with_on_idc_lost(AckPolicy::Quorum, 3, "dc2".into(), false, OnIdcLost::Degrade);
        let lost = ["a-0".to_owned(), "a-1".to_owned(), "a-2".to_owned()];
        let waiting = {
            let tasks = tokio_util::task::TaskTracker::new();
            let tracker = std::sync::Arc::new(tracker);
            let send = tasks.spawn({
                let tracker = tracker.clone();
                async move { tracker.wait(70).await }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!send.is_finished());
            assert!(tracker.set_lost_members("a-2", &lost, 0), "its own name is ignored");
            assert_eq!(send.await.unwrap(), Ok(()), "woken by the new rule");
            tracker
        };
        assert!(
            waiting
                .degraded()
                .expect("degraded")
                .starts_with("acknowledging with 1 of 1 surviving replicas")
        );
        assert_eq!(waiting.progress(500), (1, 1));
        assert!(waiting.shortfall(500).contains("(degraded: a-0, a-1 left out"));

        let stop = AckTracker::with_on_idc_lost(AckPolicy::Quorum, 3, "dc2".into(), false, OnIdcLost::Stop);
        assert!(!stop.set_lost_members("a-2", &lost, 0));
        assert_eq!(acked(&stop), 0);
        assert_eq!(stop.degraded(), None);
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
