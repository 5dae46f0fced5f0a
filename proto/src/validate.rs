//! Validation rules. One function per rule, shared by the client, the broker and the nameserver, so
//! a name or size is accepted or refused the same way everywhere, with the same message.
//!
//! Every error names the offending value, the rule and the limit, e.g.
//! `topic name "a b" is invalid: only [A-Za-z0-9_-], at most 127 chars`.

use crate::codes::ErrorCode;

/// Longest topic name.
pub const MAX_TOPIC_LEN: usize = 127;
/// Longest consumer or producer group name.
pub const MAX_GROUP_LEN: usize = 255;
/// Longest single message key, in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 128;
/// Longest property name, in bytes.
pub const MAX_PROPERTY_NAME_LEN: usize = 64;
/// Default largest message body: 4 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 4 * 1024 * 1024;
/// Default largest encoded properties of one message: 32 KiB.
pub const DEFAULT_MAX_PROPERTIES_SIZE: usize = 32 * 1024;
/// Default largest frame: room for a batch of a few bodies at the body limit.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;
/// Most queues a topic may have on one broker.
pub const MAX_QUEUES_PER_TOPIC: u32 = 1024;
/// Longest data center (IDC) name.
pub const MAX_IDC_LEN: usize = 64;

/// Size limits in force on one side of a connection. Client and broker use the same defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message body in bytes.
    pub max_body_size: usize,
    /// Largest encoded properties of one message in bytes.
    pub max_properties_size: usize,
    /// Largest frame in bytes (`frame_len`).
    pub max_frame_size: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            max_properties_size: DEFAULT_MAX_PROPERTIES_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

/// A value that breaks a rule. The `Display` form is what users see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A topic, group or IDC name breaks the name rule.
    #[error("{kind} name {name:?} is invalid: only [A-Za-z0-9_-], at most {max} chars")]
    Name {
        /// "topic", "group" or "IDC".
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Longest allowed.
        max: usize,
    },
    /// A message key breaks the key rule.
    #[error("message key {key:?} is invalid: 1 to {max} bytes, no spaces or control characters")]
    Key {
        /// The key as given.
        key: String,
        /// Longest allowed.
        max: usize,
    },
    /// A tag breaks the tag rule.
    #[error("tag {tag:?} is invalid: 1 to {max} bytes, no spaces, '|' or control characters")]
    Tag {
        /// The tag as given.
        tag: String,
        /// Longest allowed.
        max: usize,
    },
    /// A property name or value breaks the property rule.
    #[error(
        "property {name:?} is invalid: name of 1 to {max} chars of [A-Za-z0-9_.-] other than the reserved UNIQ_KEY, KEYS, TAGS, DELAY, PGROUP, TIMER_DELIVER_MS, REAL_TOPIC, REAL_QID, RETRY_TOPIC, TRAN_MSG, SHARDING_KEY; value without control characters \\u0001 or \\u0002"
    )]
    Property {
        /// The property name as given.
        name: String,
        /// Longest name allowed.
        max: usize,
    },
    /// The encoded properties of a message are too large.
    #[error(
        "message properties take {size} bytes, over the limit of {max} bytes (max_properties_size); use fewer or shorter keys and properties"
    )]
    PropertiesTooLarge {
        /// Encoded size.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// A message body is empty.
    #[error("message body is empty: a message needs a body of 1 byte or more")]
    EmptyBody,
    /// A message body is too large.
    #[error(
        "message body of {size} bytes exceeds the limit of {max} bytes (max_body_size); split it or store it elsewhere and send a reference"
    )]
    BodyTooLarge {
        /// Body size.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// A delay level outside RocketMQ's 18.
    #[error(
        "delay level {level:?} is invalid: levels are 1 to 18 ({levels}); for any other delay set a delivery time",
        levels = crate::delay::levels::LEVEL_NAMES
    )]
    DelayLevel {
        /// The level as given.
        level: String,
    },
    /// A relative delay that is not a duration or too long.
    #[error("delay {value:?} is invalid: {reason}")]
    Delay {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A delivery time that is not a time or too far ahead.
    #[error("delivery time {value:?} is invalid: {reason}")]
    DeliverAt {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tag filter expression that does not parse.
    #[error(
        "tag expression {expression:?} is invalid: {reason}; write '*' or tags joined by '||', e.g. 'TagA || TagB'"
    )]
    TagExpression {
        /// The expression as given.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A consumer client id that breaks the rule.
    #[error("client id {client_id:?} is invalid: 1 to {max} chars, no spaces, control characters or '%'")]
    ClientId {
        /// The id as given.
        client_id: String,
        /// Longest allowed.
        max: usize,
    },
    /// A produce limit out of range ([`crate::quota::validate_produce_limit`]).
    #[error("{message}")]
    Limit {
        /// Names the limit, the range and the fix.
        message: String,
    },
    /// A queue count is out of range.
    #[error("queue count {queues} is invalid: 1 to {max} queues per topic")]
    QueueCount {
        /// Requested queues.
        queues: u32,
        /// Most allowed.
        max: u32,
    },
}

impl ValidationError {
    /// The wire error code for this violation.
    pub fn code(&self) -> ErrorCode {
        match self {
            ValidationError::PropertiesTooLarge { .. } | ValidationError::BodyTooLarge { .. } => {
                ErrorCode::MessageTooLarge
            }
            _ => ErrorCode::InvalidArgument,
        }
    }
}

fn is_name_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

fn validate_name(kind: &'static str, name: &str, max: usize) -> Result<(), ValidationError> {
    if name.is_empty() || name.len() > max || !name.bytes().all(is_name_char) {
        return Err(ValidationError::Name {
            kind,
            name: name.to_owned(),
            max,
        });
    }
    Ok(())
}

/// Topic names: 1 to 127 chars of `[A-Za-z0-9_-]`. No dots or slashes, so a topic name is always a
/// safe path component (consume queue folders, archive partitions).
pub fn validate_topic(topic: &str) -> Result<(), ValidationError> {
    validate_name("topic", topic, MAX_TOPIC_LEN)
}

/// Group names (consumer and producer): 1 to 255 chars of `[A-Za-z0-9_-]`.
pub fn validate_group(group: &str) -> Result<(), ValidationError> {
    validate_name("group", group, MAX_GROUP_LEN)
}

/// Data center (IDC) names: 1 to 64 chars of `[A-Za-z0-9_-]`, as nodes, clients, IDC files,
/// IDC rules and drills name them.
pub fn validate_idc(idc: &str) -> Result<(), ValidationError> {
    validate_name("IDC", idc, MAX_IDC_LEN)
}

fn has_reserved_char(value: &str) -> bool {
    value.chars().any(|ch| ch.is_control() || ch.is_whitespace())
}

/// A message key: 1 to 128 bytes, no whitespace (keys are space-separated on disk) or control chars.
pub fn validate_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || has_reserved_char(key) {
        return Err(ValidationError::Key {
            key: key.to_owned(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// A tag: 1 to 128 bytes, no whitespace, `|` (tag expressions use `||`) or control chars.
pub fn validate_tag(tag: &str) -> Result<(), ValidationError> {
    if tag.is_empty() || tag.len() > MAX_TAG_LEN || has_reserved_char(tag) || tag.contains('|') {
        return Err(ValidationError::Tag {
            tag: tag.to_owned(),
            max: MAX_TAG_LEN,
        });
    }
    Ok(())
}

/// Property names the system sets itself; a user property may not shadow them.
pub const RESERVED_PROPERTY_NAMES: [&str; 11] = [
    crate::properties::names::MSG_ID,
    crate::properties::names::KEYS,
    crate::properties::names::TAGS,
    crate::properties::names::DELAY,
    crate::properties::names::PRODUCER_GROUP,
    crate::properties::names::DELIVER_AT,
    crate::properties::names::REAL_TOPIC,
    crate::properties::names::REAL_QUEUE,
    crate::properties::names::RETRY_TOPIC,
    crate::properties::names::TRANSACTION,
    crate::properties::names::SHARDING_KEY,
];

/// Longest consumer client id.
pub const MAX_CLIENT_ID_LEN: usize = 255;

/// A consumer's client id: 1 to 255 chars, no whitespace, control characters or `%` (brokers key
/// broadcasting offsets by `group%client_id`).
pub fn validate_client_id(client_id: &str) -> Result<(), ValidationError> {
    if client_id.is_empty()
        || client_id.len() > MAX_CLIENT_ID_LEN
        || has_reserved_char(client_id)
        || client_id.contains('%')
    {
        return Err(ValidationError::ClientId {
            client_id: client_id.to_owned(),
            max: MAX_CLIENT_ID_LEN,
        });
    }
    Ok(())
}

/// A user property: name of 1 to 64 chars of `[A-Za-z0-9_.-]`, not one of
/// [`RESERVED_PROPERTY_NAMES`]; value free of the two separator bytes of the encoded form
/// (`\u{1}`, `\u{2}`).
pub fn validate_property(name: &str, value: &str) -> Result<(), ValidationError> {
    let name_ok = !RESERVED_PROPERTY_NAMES.contains(&name)
        && !name.is_empty()
        && name.len() <= MAX_PROPERTY_NAME_LEN
        && name.bytes().all(|byte| is_name_char(byte) || byte == b'.');
    if !name_ok || value.contains(['\u{1}', '\u{2}']) {
        return Err(ValidationError::Property {
            name: name.to_owned(),
            max: MAX_PROPERTY_NAME_LEN,
        });
    }
    Ok(())
}

/// The encoded properties of one message fit `limits.max_properties_size`.
pub fn validate_properties_size(size: usize, limits: &Limits) -> Result<(), ValidationError> {
    if size > limits.max_properties_size {
        return Err(ValidationError::PropertiesTooLarge {
            size,
            max: limits.max_properties_size,
        });
    }
    Ok(())
}

/// A body is 1 byte to `limits.max_body_size`.
pub fn validate_body_size(size: usize, limits: &Limits) -> Result<(), ValidationError> {
    if size == 0 {
        return Err(ValidationError::EmptyBody);
    }
    if size > limits.max_body_size {
        return Err(ValidationError::BodyTooLarge {
            size,
            max: limits.max_body_size,
        });
    }
    Ok(())
}

/// A topic has 1 to [`MAX_QUEUES_PER_TOPIC`] queues.
pub fn validate_queue_count(queues: u32) -> Result<(), ValidationError> {
    if queues == 0 || queues > MAX_QUEUES_PER_TOPIC {
        return Err(ValidationError::QueueCount {
            queues,
            max: MAX_QUEUES_PER_TOPIC,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topic_error_names_the_rule_and_limit() {
        let error = validate_topic("a b").unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"topic name "a b" is invalid: only [A-Za-z0-9_-], at most 127 chars"#
        );
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn names_refuse_path_traversal_and_limits() {
        for bad in ["", "../etc", "a/b", "a.b", "%RETRY%x", "ü", &"x".repeat(128)] {
            assert!(validate_topic(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(validate_topic(&"x".repeat(127)).is_ok());
        assert!(validate_group(&"g".repeat(255)).is_ok());
        assert!(validate_group(&"g".repeat(256)).is_err());
        assert!(validate_idc("logicIdcUK").is_ok());
        for bad in ["", "dc 1", "../dc1", &"d".repeat(65)] {
            assert!(validate_idc(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            validate_idc("dc/1").unwrap_err().to_string(),
            r#"IDC name "dc/1" is invalid: only [A-Za-z0-9_-], at most 64 chars"#
        );
    }

    #[test]
    fn keys_tags_and_properties() {
        assert!(validate_key("order-42").is_ok());
        assert!(validate_key("two words").is_err());
        assert!(validate_key(&"k".repeat(129)).is_err());
        assert!(validate_tag("TagA").is_ok());
        assert!(validate_tag("a||b").is_err());
        assert!(validate_property("trace.id", "x y z").is_ok());
        assert!(validate_property("bad name", "v").is_err());
        assert!(validate_property("name", "a\u{1}b").is_err());
        assert!(
            validate_property("KEYS", "shadow").is_err(),
            "system names are reserved"
        );
    }

    #[test]
    fn body_size_limits() {
        let limits = Limits::default();
        assert_eq!(validate_body_size(0, &limits), Err(ValidationError::EmptyBody));
        assert!(validate_body_size(4 * 1024 * 1024, &limits).is_ok());
        let error = validate_body_size(4 * 1024 * 1024 + 1, &limits).unwrap_err();
        assert_eq!(error.code(), ErrorCode::MessageTooLarge);
        assert!(error.to_string().contains("limit of 4194304 bytes"), "{error}");
    }

    proptest! {
        #[test]
        fn valid_topics_are_exactly_the_charset(name in "[A-Za-z0-9_-]{1,127}") {
            prop_assert!(validate_topic(&name).is_ok());
        }

        #[test]
        fn any_other_char_is_refused(prefix in "[a-z]{0,5}", bad in "[^A-Za-z0-9_-]", suffix in "[a-z]{0,5}") {
            let name = format!("{prefix}{bad}{suffix}");
            prop_assert!(validate_topic(&name).is_err());
        }
    }
}
