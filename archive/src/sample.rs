//! Commitlog segments made in memory, byte for byte as the broker writes them, for tests and
//! benchmarks of this crate (the broker's own tests use a real broker).

use std::net::SocketAddr;

use meridian_proto::properties::PropertiesBuilder;
use meridian_proto::record::{self, RecordFields};

/// A message to put into a sample segment.
#[derive(Debug, Clone)]
pub struct SampleMessage {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// Message id.
    pub msg_id: String,
    /// Keys.
    pub keys: Vec<String>,
    /// Tag.
    pub tag: Option<String>,
    /// User properties.
    pub properties: Vec<(String, String)>,
    /// Store time (Unix ms); born time is 3 ms earlier.
    pub store_timestamp: i64,
    /// Body.
    pub body: Vec<u8>,
}

/// A JSON-like body of about `size` bytes, like an order event (what compresses as real traffic
/// does: repeated field names, varying numbers and ids).
pub fn json_body(index: u64, size: usize) -> Vec<u8> {
    let mut body = format!(
        r#"{{"order_id":"ORD-{index:010}","customer":"cust-{}","status":"{}","amount":{}.{:02},"currency":"EUR","items":["#,
        index.wrapping_mul(7919) % 100_000,
        ["created", "paid", "shipped", "delivered"][(index % 4) as usize],
        index.wrapping_mul(31) % 5000,
        index % 100
    );
    let mut item = 0u64;
    while body.len() + 2 < size {
        if item > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"sku":"SKU-{}","qty":{},"price":{}.99}}"#,
            (index + item).wrapping_mul(104_729) % 1_000_000,
            1 + (index + item) % 5,
            (index * 13 + item) % 300
        ));
        item += 1;
    }
    body.push_str("]}");
    body.into_bytes()
}

/// `count` messages over `topics` topics of `queues` queues each, stored `step_ms` apart from
/// `first_store_time`, with JSON-like bodies of about `body_size` bytes.
pub fn messages(
    count: u64,
    topics: u32,
    queues: u32,
    first_store_time: i64,
    step_ms: i64,
    body_size: usize,
) -> Vec<SampleMessage> {
    (0..count)
        .map(|index| SampleMessage {
            topic: format!("topic-{}", index % u64::from(topics)),
            queue_id: ((index / u64::from(topics)) % u64::from(queues)) as u32,
            msg_id: format!("{:032X}", 0xA000_0000_0000u64 + index),
            keys: if index % 3 == 0 {
                vec![format!("order-{index}"), format!("cust-{}", index % 97)]
            } else {
                vec![format!("order-{index}")]
            },
            tag: (index % 2 == 0).then(|| "created".to_owned()),
            properties: if index % 5 == 0 {
                vec![("trace.id".into(), format!("t-{index}"))]
            } else {
                Vec::new()
            },
            store_timestamp: first_store_time + index as i64 * step_ms,
            body: json_body(index, body_size),
        })
        .collect()
}

/// Encodes `messages` as one segment starting at global offset `start`, assigning queue offsets
/// from `next_queue_offset` (which it advances, per topic and queue), closed by a blank marker
/// when `seal`; `segment_len` is the size of the whole segment.
pub fn segment(
    start: u64,
    segment_len: usize,
    messages: &[SampleMessage],
    next_queue_offset: &mut std::collections::HashMap<(String, u32), u64>,
    seal: bool,
) -> Vec<u8> {
    let mut bytes = vec![0u8; segment_len];
    let mut position = 0usize;
    let born_host: SocketAddr = "10.1.2.3:40000".parse().expect("address");
    let store_host: SocketAddr = "127.0.0.1:7911".parse().expect("address");
    for message in messages {
        let mut builder = PropertiesBuilder::new();
        builder.msg_id(&message.msg_id);
        builder.keys(&message.keys).expect("valid keys");
        if let Some(tag) = &message.tag {
            builder.tag(tag).expect("valid tag");
        }
        for (name, value) in &message.properties {
            builder.property(name, value).expect("valid property");
        }
        let properties = builder.finish();
        let queue_offset = next_queue_offset
            .entry((message.topic.clone(), message.queue_id))
            .or_insert(0);
        let fields = RecordFields {
            flags: 0,
            queue_id: message.queue_id,
            queue_offset: *queue_offset,
            commitlog_offset: start + position as u64,
            born_timestamp: message.store_timestamp - 3,
            store_timestamp: message.store_timestamp,
            born_host,
            store_host,
            reconsume_count: 0,
            topic: &message.topic,
            properties: &properties,
            body: &message.body,
        };
        let len = fields.encoded_len();
        assert!(
            position + len + record::BLANK_MARKER_LEN <= segment_len,
            "sample segment too small"
        );
        record::encode_into(&mut bytes[position..position + len], &fields);
        *queue_offset += 1;
        position += len;
    }
    if seal {
        let rest = segment_len - position;
        record::encode_blank_header(&mut bytes[position..], rest);
    }
    bytes
}
