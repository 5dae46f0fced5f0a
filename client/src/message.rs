//! Messages as producers build them, their validation and encoding, and where they were stored.

use bytes::Bytes;
use meridian_proto::messages::MessageData;
use meridian_proto::properties::PropertiesBuilder;
use meridian_proto::time::now_millis;
use meridian_proto::validate::{validate_body_size, validate_properties_size, validate_topic};
use meridian_proto::{Limits, MessageId};

use crate::error::ClientError;

/// A message to send. Validated with the broker's own rules before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic to send to.
    pub topic: String,
    /// The payload (1 byte up to `limits.max_body_size`).
    pub body: Bytes,
    /// Keys to look the message up by (no whitespace).
    pub keys: Vec<String>,
    /// A tag consumers can filter on.
    pub tag: Option<String>,
    /// User properties, in order.
    pub properties: Vec<(String, String)>,
    /// When to deliver it; `None`: at once.
    pub delay: Option<Delay>,
    /// The key an ordered message's queue was chosen by (set by [`crate::Producer::send_ordered`]).
    pub sharding_key: Option<String>,
    /// A transactional half message (set by the transaction producer, not by hand).
    pub(crate) transactional: bool,
}

/// When a delayed message is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// One of RocketMQ's 18 delay levels: 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h.
    Level(u32),
    /// At this time (Unix ms), at most [`meridian_proto::delay::MAX_DELAY_MS`] ahead; a time in
    /// the past delivers at once. Precision: one second, never early.
    At(i64),
}

impl Message {
    /// A message with a body and nothing else.
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Message {
        Message {
            topic: topic.into(),
            body: body.into(),
            keys: Vec::new(),
            tag: None,
            properties: Vec::new(),
            delay: None,
            sharding_key: None,
            transactional: false,
        }
    }

    /// Delivers the message after one of the 18 delay levels (`1` = 1 s ... `18` = 2 h).
    pub fn with_delay_level(mut self, level: u32) -> Message {
        self.delay = Some(Delay::Level(level));
        self
    }

    /// Delivers the message at a time (Unix ms).
    pub fn with_deliver_at(mut self, deliver_at_ms: i64) -> Message {
        self.delay = Some(Delay::At(deliver_at_ms));
        self
    }

    /// Delivers the message after `delay` (one-second precision).
    pub fn with_delay(self, delay: std::time::Duration) -> Message {
        self.with_deliver_at(now_millis() + delay.as_millis() as i64)
    }

    /// Replaces the keys.
    pub fn with_keys<I, S>(mut self, keys: I) -> Message
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a key.
    pub fn with_key(mut self, key: impl Into<String>) -> Message {
        self.keys.push(key.into());
        self
    }

    /// Sets the tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Message {
        self.tag = Some(tag.into());
        self
    }

    /// Adds a user property.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// Validates the message and encodes it with a fresh message id.
    pub(crate) fn encode(&self, limits: &Limits) -> Result<EncodedMessage, ClientError> {
        validate_topic(&self.topic)?;
        validate_body_size(self.body.len(), limits)?;
        let msg_id = MessageId::generate().to_string();
        let mut builder = PropertiesBuilder::new();
        builder.msg_id(&msg_id).keys(&self.keys)?;
        if let Some(tag) = &self.tag {
            builder.tag(tag)?;
        }
        for (name, value) in &self.properties {
            builder.property(name, value)?;
        }
        match self.delay {
            Some(Delay::Level(level)) => {
                builder.delay_level(level)?;
            }
            Some(Delay::At(at)) => {
                meridian_proto::delay::validate_deliver_at(&at.to_string(), now_millis())?;
                builder.deliver_at(at);
            }
            None => {}
        }
        if let Some(key) = &self.sharding_key {
            builder.sharding_key(key)?;
        }
        if self.transactional {
            builder.transactional();
        }
        let properties = builder.finish();
        validate_properties_size(properties.len(), limits)?;
        Ok(EncodedMessage {
            msg_id,
            data: MessageData {
                flags: 0,
                born_timestamp: now_millis(),
                properties: Bytes::from(properties),
                body: self.body.clone(),
                reconsume_count: 0,
            },
        })
    }
}

/// A validated message ready for a [`meridian_proto::messages::SendRequest`]. The id is fixed
/// here, so every retry of a send carries the same id and consumers can drop duplicates.
#[derive(Debug, Clone)]
pub(crate) struct EncodedMessage {
    pub(crate) msg_id: String,
    pub(crate) data: MessageData,
}

/// Where a sent message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// The message id (32 hex digits).
    pub msg_id: String,
    /// Topic it went to.
    pub topic: String,
    /// Queue it went to.
    pub queue_id: u32,
    /// Its position in the queue.
    pub queue_offset: u64,
    /// Its byte position in the broker's commitlog.
    pub commitlog_offset: u64,
    /// When the broker stored it (Unix ms).
    pub store_timestamp: i64,
    /// The broker group that stored it.
    pub broker_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::ValidationError;
    use meridian_proto::properties::{self, KEYS, MSG_ID, TAGS};

    #[test]
    fn encoding_sets_id_keys_tag_and_properties() {
        let message = Message::new("orders", "hello")
            .with_keys(["order-1"])
            .with_key("customer-7")
            .with_tag("created")
            .with_property("trace.id", "t-1");
        let encoded = message.encode(&Limits::default()).unwrap();
        let props = &encoded.data.properties;
        assert_eq!(properties::get(props, MSG_ID), Some(encoded.msg_id.as_str()));
        assert!(MessageId::parse(&encoded.msg_id).is_ok());
        assert_eq!(properties::get(props, KEYS), Some("order-1 customer-7"));
        assert_eq!(properties::get(props, TAGS), Some("created"));
        assert_eq!(properties::get(props, "trace.id"), Some("t-1"));
        assert_eq!(encoded.data.body, Bytes::from_static(b"hello"));
        assert!(encoded.data.born_timestamp > 0);
    }

    #[test]
    fn invalid_messages_are_refused_with_the_shared_rules() {
        let limits = Limits::default();
        let refuse = |message: Message| match message.encode(&limits) {
            Err(ClientError::Validation(error)) => error,
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert!(matches!(
            refuse(Message::new("a b", "x")),
            ValidationError::Name { kind: "topic", .. }
        ));
        assert_eq!(refuse(Message::new("orders", "")), ValidationError::EmptyBody);
        assert!(matches!(
            refuse(Message::new("orders", "x").with_key("two words")),
            ValidationError::Key { .. }
        ));
        assert!(matches!(
            refuse(Message::new("orders", "x").with_tag("a||b")),
            ValidationError::Tag { .. }
        ));
        assert!(matches!(
            refuse(Message::new("orders", "x").with_property("bad name", "v")),
            ValidationError::Property { .. }
        ));
        let small = Limits {
            max_body_size: 4,
            max_properties_size: 64,
            ..Limits::default()
        };
        assert!(matches!(
            Message::new("orders", "12345").encode(&small),
            Err(ClientError::Validation(ValidationError::BodyTooLarge {
                size: 5,
                max: 4
            }))
        ));
        assert!(matches!(
            Message::new("orders", "1")
                .with_property("p", "v".repeat(64))
                .encode(&small),
            Err(ClientError::Validation(ValidationError::PropertiesTooLarge { .. }))
        ));
    }
}
