//! System topics: the topics brokers keep for themselves next to users' topics.
//!
//! - [`DELAY_TOPIC`]: delayed messages wait here until due (see [`crate::delay`]).
//! - [`HALF_TOPIC`] and [`HALF_OP_TOPIC`]: transactional half messages and their outcomes.
//! - `%RETRY%<group>`: messages a consumer group failed to consume, redelivered to that group only.
//! - `%DLQ%<group>`: messages the group failed too often (dead letters).
//! - [`TRACE_TOPIC`]: trace events (see [`crate::trace`]).
//!
//! No ordinary producer may send to any of them. Brokers create them on demand; they need no
//! approval. A group's retry and dead-letter topics may be read by that group (and by admin tools
//! acting for it). User topic names cannot collide with them: `%` is outside the name charset and
//! the `MERIDIAN_` names are refused when a topic is requested.

use crate::validate::{self, ValidationError};

/// Where delayed messages wait, one queue per delay slot ([`crate::delay::slot_count`]).
pub const DELAY_TOPIC: &str = "MERIDIAN_DELAY";
/// Transactional half messages, invisible to consumers until committed.
pub const HALF_TOPIC: &str = "MERIDIAN_HALF";
/// The system topic trace events are written to ([`crate::trace`]). Brokers create it themselves
/// on every broker group; it needs no approval, and ordinary sends to it are refused (trace events
/// reach it only through the broker's own emitter and [`crate::RequestCode::TraceReport`]).
pub const TRACE_TOPIC: &str = "MERIDIAN_TRACE";
/// Commit and rollback records of half messages.
pub const HALF_OP_TOPIC: &str = "MERIDIAN_HALF_OP";
/// Prefix of a consumer group's retry topic.
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a consumer group's dead-letter topic.
pub const DLQ_PREFIX: &str = "%DLQ%";
/// Queues of a retry or dead-letter topic on each broker group.
pub const GROUP_TOPIC_QUEUES: u32 = 1;

/// What kind of topic a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind<'a> {
    /// A user's topic.
    User,
    /// The trace topic.
    Trace,
    /// The delay topic.
    Delay,
    /// The half-message topic.
    Half,
    /// The half-message outcome topic.
    HalfOp,
    /// The retry topic of the group named.
    Retry(&'a str),
    /// The dead-letter topic of the group named.
    DeadLetter(&'a str),
}

/// The kind of `topic`, by its name alone (the name is not validated).
pub fn kind(topic: &str) -> TopicKind<'_> {
    if let Some(group) = topic.strip_prefix(RETRY_PREFIX) {
        return TopicKind::Retry(group);
    }
    if let Some(group) = topic.strip_prefix(DLQ_PREFIX) {
        return TopicKind::DeadLetter(group);
    }
    match topic {
        TRACE_TOPIC => TopicKind::Trace,
        DELAY_TOPIC => TopicKind::Delay,
        HALF_TOPIC => TopicKind::Half,
        HALF_OP_TOPIC => TopicKind::HalfOp,
        _ => TopicKind::User,
    }
}

/// Whether `topic` is a system topic: no approval, no ordinary producers.
pub fn is_system(topic: &str) -> bool {
    kind(topic) != TopicKind::User
}

/// The retry topic of consumer group `group`.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The dead-letter topic of consumer group `group`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// A topic a consumer may pull from or keep offsets for: a user topic (the topic name rule), the
/// trace topic, or a group's retry or dead-letter topic (`%RETRY%` or `%DLQ%` and a valid group).
pub fn validate_consumable(topic: &str) -> Result<(), ValidationError> {
    match kind(topic) {
        TopicKind::Retry(group) | TopicKind::DeadLetter(group) => validate::validate_group(group),
        _ => validate::validate_topic(topic),
    }
}

/// The group whose retry or dead-letter topic `topic` is, if it is one.
pub fn owning_group(topic: &str) -> Option<&str> {
    match kind(topic) {
        TopicKind::Retry(group) | TopicKind::DeadLetter(group) => Some(group),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_name() {
        assert_eq!(kind("orders"), TopicKind::User);
        assert_eq!(kind("%RETRY%billing"), TopicKind::Retry("billing"));
        assert_eq!(kind("%DLQ%billing"), TopicKind::DeadLetter("billing"));
        assert_eq!(kind(DELAY_TOPIC), TopicKind::Delay);
        assert_eq!(kind(TRACE_TOPIC), TopicKind::Trace);
        assert!(is_system(HALF_TOPIC) && is_system(HALF_OP_TOPIC) && !is_system("orders"));
        assert_eq!(owning_group(&retry_topic("g1")), Some("g1"));
        assert_eq!(owning_group("orders"), None);
    }

    #[test]
    fn consumable_topics_keep_the_path_safe_rules() {
        assert!(validate_consumable("orders").is_ok());
        assert!(validate_consumable("%RETRY%billing").is_ok());
        assert!(validate_consumable("%DLQ%billing").is_ok());
        for bad in ["%RETRY%", "%RETRY%../x", "%DLQ%a/b", "%OTHER%g", "a b"] {
            assert!(validate_consumable(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(
            validate_consumable("%RETRY%a.b")
                .unwrap_err()
                .to_string()
                .contains("group name")
        );
    }
}
