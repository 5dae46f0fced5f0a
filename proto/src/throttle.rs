//! A log line at most once per interval, counting what it left out: a failure that hits every
//! concurrent send (a nameserver down, a broker restarting) or repeats until it is fixed (a full
//! disk) yields a line per interval, not a line per occurrence. Used by the client and the broker.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Decides whether to log now, and how many lines were left out since the last one.
pub struct Throttle {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A throttle letting one line through per `interval`.
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(left_out)` when a line is due (the first, or the first after `interval`), with the
    /// number of lines left out since the last; `None` (and one more left out) otherwise.
    pub fn due(&self) -> Option<u64> {
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last, left_out) = &mut *state;
        if last.is_some_and(|last| now.duration_since(last) < self.interval) {
            *left_out += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let throttle = Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(throttle.due_at(start), Some(0));
        for step in 1..=999 {
            assert_eq!(throttle.due_at(start + Duration::from_millis(step)), None);
        }
        assert_eq!(throttle.due_at(start + Duration::from_millis(1000)), Some(999));
        assert_eq!(throttle.due_at(start + Duration::from_millis(1500)), None);
        assert_eq!(throttle.due_at(start + Duration::from_millis(2100)), Some(1));
    }
}
