//! Consumer lag as the console shows it: the brokers' `GET /api/broker/lag` answers (one call per
//! broker per page view) folded per group ([`summarize`]), and [`LagHistory`], a small bounded
//! in-process ring buffer of each group's lag sampled on every view of the Groups pages, which the
//! group page draws as a chart.
//!
//! The history lives in the `meridian ui` process (or `meridian dev`), so it starts empty when the
//! console restarts and only has points for moments someone looked; the brokers keep no lag
//! history and the archive has none either. Start at [`summarize`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value;

/// Samples kept per group (the oldest is dropped beyond it).
pub const SAMPLES_PER_GROUP: usize = 120;
/// Groups whose history is kept; beyond it the group sampled least recently is forgotten.
pub const GROUPS_TRACKED: usize = 2_000;
/// A view closer than this to the group's last sample adds none (the page still shows the lag now).
pub const MIN_SAMPLE_GAP_MS: u64 = 1_000;

/// A group's lag over every broker and topic that answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupSummary {
    /// Messages not yet consumed, summed over brokers, topics and queues.
    pub lag_messages: u64,
    /// The oldest unconsumed message's age, the largest over brokers and topics (ms).
    pub lag_ms: u64,
    /// The worst status (OK < WARN < REWIND < STALL < STOP, the brokers' order).
    pub status: String,
}

/// How bad a status is, in the brokers' order; unknown words rank between WARN and REWIND.
pub fn severity(status: &str) -> u8 {
    match status {
        "OK" => 0,
        "WARN" => 1,
        "REWIND" => 3,
        "STALL" => 4,
        "STOP" => 5,
        _ => 2,
    }
}

/// Folds the brokers' lag answers (`{"groups": [{group, topic, status, lag_messages, lag_ms,
/// queues}]}`) into one summary per group.
pub fn summarize<'a>(answers: impl IntoIterator<Item = &'a Value>) -> HashMap<String, GroupSummary> {
    let mut out: HashMap<String, GroupSummary> = HashMap::new();
    for answer in answers {
        for entry in answer["groups"].as_array().into_iter().flatten() {
            let Some(group) = entry["group"].as_str() else {
                continue;
            };
            let summary = out.entry(group.to_owned()).or_default();
            summary.lag_messages += entry["lag_messages"].as_u64().unwrap_or(0);
            summary.lag_ms = summary.lag_ms.max(entry["lag_ms"].as_u64().unwrap_or(0));
            let status = entry["status"].as_str().unwrap_or("OK");
            if summary.status.is_empty() || severity(status) > severity(&summary.status) {
                summary.status = status.to_owned();
            }
        }
    }
    out
}

/// One sample of a group's lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the console read it, ms since the Unix epoch.
    pub at_ms: u64,
    /// Lag in messages.
    pub lag_messages: u64,
    /// Lag in time, ms.
    pub lag_ms: u64,
}

/// Each group's last [`SAMPLES_PER_GROUP`] samples, for at most [`GROUPS_TRACKED`] groups.
#[derive(Debug, Default)]
pub struct LagHistory {
    groups: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl LagHistory {
    /// An empty history.
    pub fn new() -> LagHistory {
        LagHistory::default()
    }

    /// Adds a sample of `group`, unless its last one is younger than [`MIN_SAMPLE_GAP_MS`] (so
    /// reloads in a burst do not crowd the history out).
    pub fn record(&self, group: &str, sample: Sample) {
        let mut groups = self.groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !groups.contains_key(group) && groups.len() >= GROUPS_TRACKED {
            let stalest = groups
                .iter()
                .min_by_key(|(_, samples)| samples.back().map_or(0, |s| s.at_ms))
                .map(|(name, _)| name.clone());
            if let Some(stalest) = stalest {
                groups.remove(&stalest);
            }
        }
        let samples = groups.entry(group.to_owned()).or_default();
        if samples
            .back()
            .is_some_and(|last| sample.at_ms.saturating_sub(last.at_ms) < MIN_SAMPLE_GAP_MS)
        {
            return;
        }
        if samples.len() >= SAMPLES_PER_GROUP {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// `group`'s samples, oldest first.
    pub fn of(&self, group: &str) -> Vec<Sample> {
        let groups = self.groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        groups
            .get(group)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// How many groups have a history.
    pub fn groups(&self) -> usize {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

/// A lag in time for people: `850 ms`, `12.3 s`, `4 min 5 s`, `2 h 3 min`.
pub fn duration_text(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1_000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_group_sums_messages_takes_the_oldest_time_and_the_worst_status() {
        let a = json!({"groups": [
            {"group": "g", "topic": "t1", "status": "OK", "lag_messages": 3, "lag_ms": 500},
            {"group": "h", "topic": "t1", "status": "OK", "lag_messages": 0, "lag_ms": 0}]});
        let b =
            json!({"groups": [{"group": "g", "topic": "t2", "status": "STALL", "lag_messages": 4, "lag_ms": 9000}]});
        let summary = summarize([&a, &b]);
        assert_eq!(
            summary["g"],
            GroupSummary {
                lag_messages: 7,
                lag_ms: 9000,
                status: "STALL".into()
            }
        );
        assert_eq!(summary["h"].status, "OK");
    }

    #[test]
    fn the_history_is_bounded_per_group_and_in_groups() {
        let history = LagHistory::new();
        for i in 0..(SAMPLES_PER_GROUP as u64 + 10) {
            history.record(
                "g",
                Sample {
                    at_ms: i * 2_000,
                    lag_messages: i,
                    lag_ms: i,
                },
            );
        }
        let samples = history.of("g");
        assert_eq!(samples.len(), SAMPLES_PER_GROUP);
        assert_eq!(samples[0].lag_messages, 10);
        // A view within a second of the last sample adds none; one a second later does.
        let last = *samples.last().unwrap();
        let zero = |at_ms| Sample {
            at_ms,
            lag_messages: 0,
            lag_ms: 0,
        };
        history.record("g", zero(last.at_ms + 10));
        assert_eq!(history.of("g").last(), Some(&last));
        history.record("g", zero(last.at_ms + MIN_SAMPLE_GAP_MS));
        assert_eq!(history.of("g").last().unwrap().lag_messages, 0);
        for i in 0..GROUPS_TRACKED as u64 + 5 {
            history.record(
                &format!("x{i}"),
                Sample {
                    at_ms: 1_000_000 + i,
                    lag_messages: 1,
                    lag_ms: 1,
                },
            );
        }
        assert_eq!(history.groups(), GROUPS_TRACKED);
        assert!(history.of("g").is_empty(), "the stalest group is forgotten first");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(850), "850 ms");
        assert_eq!(duration_text(12_345), "12.3 s");
        assert_eq!(duration_text(245_000), "4 min 5 s");
        assert_eq!(duration_text(7_380_000), "2 h 3 min");
    }
}
