//! Latency fault tolerance: brokers that failed a send, or answered slowly, are avoided for a
//! back-off, so producers route around them and come back once it has passed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When a broker group is avoided, and why.
#[derive(Debug, Clone, Copy)]
struct Fault {
    until: Instant,
    /// Failed sends in a row: each doubles the back-off.
    failures: u32,
}

/// Brokers (by group name) to avoid for now.
#[derive(Debug)]
pub(crate) struct FaultTracker {
    first_backoff: Duration,
    max_backoff: Duration,
    slow: Duration,
    faults: Mutex<HashMap<String, Fault>>,
}

impl FaultTracker {
    /// A failed send avoids its broker for `first_backoff`, doubling with each failure in a row up
    /// to `max_backoff`; a send slower than `slow` avoids it for `first_backoff`.
    pub(crate) fn new(first_backoff: Duration, max_backoff: Duration, slow: Duration) -> FaultTracker {
        FaultTracker {
            first_backoff,
            max_backoff,
            slow,
            faults: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Fault>> {
        self.faults.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The brokers to avoid now, with one lock per send rather than one per queue; empty (and
    /// not allocated) while every broker is healthy.
    pub(crate) fn avoided(&self) -> Vec<String> {
        let faults = self.lock();
        if faults.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        faults
            .iter()
            .filter(|(_, fault)| fault.until > now)
            .map(|(broker, _)| broker.clone())
            .collect()
    }

    /// A send to `broker` failed.
    pub(crate) fn failed(&self, broker: &str) {
        let mut faults = self.lock();
        let failures = faults.get(broker).map_or(0, |fault| fault.failures) + 1;
        let backoff = self
            .first_backoff
            .saturating_mul(1 << (failures - 1).min(16))
            .min(self.max_backoff);
        tracing::debug!(broker, ?backoff, failures, "avoiding a broker after a failed send");
        faults.insert(
            broker.to_owned(),
            Fault {
                until: Instant::now() + backoff,
                failures,
            },
        );
    }

    /// A send to `broker` succeeded after `latency`: a fast one clears its record, a slow one
    /// avoids it for the first back-off.
    pub(crate) fn succeeded(&self, broker: &str, latency: Duration) {
        let mut faults = self.lock();
        if latency >= self.slow {
            tracing::debug!(broker, ?latency, "avoiding a slow broker");
            faults.insert(
                broker.to_owned(),
                Fault {
                    until: Instant::now() + self.first_backoff,
                    failures: 0,
                },
            );
        } else if !faults.is_empty() {
            faults.remove(broker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl FaultTracker {
        fn available(&self, broker: &str) -> bool {
            !self.avoided().iter().any(|avoided| avoided == broker)
        }
    }

    fn tracker() -> FaultTracker {
        FaultTracker::new(
            Duration::from_secs(1),
            Duration::from_secs(8),
            Duration::from_millis(500),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_broker_is_avoided_for_a_doubling_back_off_and_forgiven_on_success() {
        let faults = tracker();
        assert!(faults.available("a"));
        faults.failed("a");
        assert!(!faults.available("a") && faults.available("b"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(faults.available("a"), "back after the first back-off");
        faults.failed("a");
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!faults.available("a"), "the second failure in a row doubles it");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(faults.available("a"));
        for _ in 0..10 {
            faults.failed("a");
        }
        tokio::time::advance(Duration::from_millis(7999)).await;
        assert!(!faults.available("a"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(faults.available("a"), "capped at the max back-off");
        faults.succeeded("a", Duration::from_millis(2));
        faults.failed("a");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(faults.available("a"), "a success resets the doubling");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_broker_is_avoided_for_the_first_back_off() {
        let faults = tracker();
        faults.succeeded("a", Duration::from_millis(600));
        assert!(!faults.available("a"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(faults.available("a"));
    }
}
