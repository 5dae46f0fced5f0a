//! Message properties in their encoded form: `name \u{1} value \u{2}` repeated, as RocketMQ stores
//! them. The broker never parses properties on the send path; it copies the bytes into the record.
//! Readers look up single properties without allocating.

use crate::validate::{self, ValidationError};

pub(crate) mod names;
pub use names::{
    DELAY, DELIVER_AT, KEY_SEPARATOR, KEYS, MSG_ID, PRODUCER_GROUP, REAL_QUEUE, REAL_TOPIC, RETRY_TOPIC, SHARDING_KEY,
    TAGS, TRANSACTION,
};
const NAME_END: u8 = 1;
const VALUE_END: u8 = 2;

/// Builds encoded properties, validating each entry with the shared rules.
#[derive(Debug, Default, Clone)]
pub struct PropertiesBuilder {
    encoded: Vec<u8>,
}

impl PropertiesBuilder {
    /// An empty builder.
    pub fn new() -> PropertiesBuilder {
        PropertiesBuilder::default()
    }

    fn push_raw(&mut self, name: &str, value: &str) {
        self.encoded.extend_from_slice(name.as_bytes());
        self.encoded.push(NAME_END);
        self.encoded.extend_from_slice(value.as_bytes());
        self.encoded.push(VALUE_END);
    }

    /// Sets the message id.
    pub fn msg_id(&mut self, msg_id: &str) -> &mut Self {
        self.push_raw(MSG_ID, msg_id);
        self
    }

    /// Sets the keys; each must pass [`validate::validate_key`].
    pub fn keys<S: AsRef<str>>(&mut self, keys: &[S]) -> Result<&mut Self, ValidationError> {
        if keys.is_empty() {
            return Ok(self);
        }
        for key in keys {
            validate::validate_key(key.as_ref())?;
        }
        self.encoded.extend_from_slice(KEYS.as_bytes());
        self.encoded.push(NAME_END);
        for (index, key) in keys.iter().enumerate() {
            if index > 0 {
                self.encoded.push(KEY_SEPARATOR as u8);
            }
            self.encoded.extend_from_slice(key.as_ref().as_bytes());
        }
        self.encoded.push(VALUE_END);
        Ok(self)
    }

    /// Sets the tag; it must pass [`validate::validate_tag`].
    pub fn tag(&mut self, tag: &str) -> Result<&mut Self, ValidationError> {
        validate::validate_tag(tag)?;
        self.push_raw(TAGS, tag);
        Ok(self)
    }

    /// Sets a delay level; it must be one of the 18 ([`crate::delay::level_delay_ms`]).
    pub fn delay_level(&mut self, level: u32) -> Result<&mut Self, ValidationError> {
        let level = level.to_string();
        crate::delay::level_delay_ms(&level)?;
        self.push_raw(DELAY, &level);
        Ok(self)
    }

    /// Sets a delivery time (Unix ms); the broker checks it is not too far ahead.
    pub fn deliver_at(&mut self, deliver_at_ms: i64) -> &mut Self {
        self.push_raw(DELIVER_AT, &deliver_at_ms.to_string());
        self
    }

    /// Marks the message as a transactional half message.
    pub fn transactional(&mut self) -> &mut Self {
        self.push_raw(TRANSACTION, "true");
        self
    }

    /// Records the sharding key an ordered message's queue was chosen by; it follows the key rule.
    pub fn sharding_key(&mut self, key: &str) -> Result<&mut Self, ValidationError> {
        validate::validate_key(key)?;
        self.push_raw(SHARDING_KEY, key);
        Ok(self)
    }

    /// Adds a property the system sets itself (no name check; the value must not hold the
    /// separators). Brokers use it when they move a message between topics.
    pub fn system(&mut self, name: &str, value: &str) -> &mut Self {
        self.push_raw(name, value);
        self
    }

    /// Copies encoded properties, leaving out those named in `skip`.
    pub fn copy_except(&mut self, encoded: &[u8], skip: &[&str]) -> &mut Self {
        for (name, value) in PropertiesIter::new(encoded) {
            if !skip.contains(&name) {
                self.push_raw(name, value);
            }
        }
        self
    }

    /// Adds a user property; it must pass [`validate::validate_property`].
    pub fn property(&mut self, name: &str, value: &str) -> Result<&mut Self, ValidationError> {
        validate::validate_property(name, value)?;
        self.push_raw(name, value);
        Ok(self)
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.encoded
    }
}

/// Iterates over `(name, value)` pairs of encoded properties. Malformed tails end the iteration.
#[derive(Debug, Clone)]
pub struct PropertiesIter<'a> {
    rest: &'a [u8],
}

impl<'a> PropertiesIter<'a> {
    /// Iterates over `encoded`.
    pub fn new(encoded: &'a [u8]) -> PropertiesIter<'a> {
        PropertiesIter { rest: encoded }
    }
}

impl<'a> Iterator for PropertiesIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        let name_end = self.rest.iter().position(|byte| *byte == NAME_END)?;
        let value_len = self.rest[name_end + 1..].iter().position(|byte| *byte == VALUE_END)?;
        let name = std::str::from_utf8(&self.rest[..name_end]).ok()?;
        let value = std::str::from_utf8(&self.rest[name_end + 1..name_end + 1 + value_len]).ok()?;
        self.rest = &self.rest[name_end + value_len + 2..];
        Some((name, value))
    }
}

/// The value of property `name`, if present.
pub fn get<'a>(encoded: &'a [u8], name: &str) -> Option<&'a str> {
    PropertiesIter::new(encoded)
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether the encoded properties are well formed: every entry complete, names and values UTF-8.
pub fn is_well_formed(encoded: &[u8]) -> bool {
    let mut rest = encoded;
    while !rest.is_empty() {
        let Some(name_end) = rest.iter().position(|byte| *byte == NAME_END) else {
            return false;
        };
        let Some(value_len) = rest[name_end + 1..].iter().position(|byte| *byte == VALUE_END) else {
            return false;
        };
        if std::str::from_utf8(&rest[..name_end + 1 + value_len]).is_err() {
            return false;
        }
        rest = &rest[name_end + value_len + 2..];
    }
    true
}

/// Stable 64-bit hash of a tag (FNV-1a), stored in consume queue entries so the broker can filter
/// by tag without reading the commitlog. Zero means "no tag".
pub fn tag_hash(tag: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in tag.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn builder_and_lookup() {
        let mut builder = PropertiesBuilder::new();
        builder.msg_id("ABC").keys(&["k1", "k2"]).unwrap().tag("TagA").unwrap();
        builder.property("trace.id", "t-1").unwrap();
        let encoded = builder.finish();
        assert!(is_well_formed(&encoded));
        assert_eq!(get(&encoded, MSG_ID), Some("ABC"));
        assert_eq!(get(&encoded, KEYS), Some("k1 k2"));
        assert_eq!(get(&encoded, TAGS), Some("TagA"));
        assert_eq!(get(&encoded, "trace.id"), Some("t-1"));
        assert_eq!(get(&encoded, "missing"), None);
    }

    #[test]
    fn truncated_properties_are_not_well_formed() {
        assert!(is_well_formed(b""));
        assert!(!is_well_formed(b"name\x01value"));
        assert!(!is_well_formed(b"name"));
    }

    proptest! {
        #[test]
        fn properties_round_trip(entries in proptest::collection::vec(("[A-Za-z0-9_.-]{1,20}", "[^\u{1}\u{2}]{0,40}"), 0..10)) {
            let mut builder = PropertiesBuilder::new();
            for (name, value) in &entries {
                builder.property(name, value).unwrap();
            }
            let encoded = builder.finish();
            prop_assert!(is_well_formed(&encoded));
            let decoded: Vec<(String, String)> =
                PropertiesIter::new(&encoded).map(|(name, value)| (name.to_owned(), value.to_owned())).collect();
            prop_assert_eq!(decoded, entries);
        }
    }
}
