//! Commitlog segments made in memory, byte for byte as the broker writes them, for tests and
//! benchmarks of this crate (the broker's own tests use a real broker).

use std::net::SocketAddr;

use meridian_proto::properties::PropertiesBuilder;
use meridian_proto::record::{self, RecordFields};
use meridian_proto::trace::{ServerStats, TraceBatch, TraceEvent, TraceStatus, TraceType};

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

/// Message number `index` of the sample sequence: topic `topic-(index % topics)`, queue
/// `(index / topics) % queues`, msgId `A0000000000000` + index in hex, key `order-<index>` (and
/// `cust-<index % 97>` every third), tag `created` on even indexes, a `trace.id` property every
/// fifth, stored `index * step_ms` after `first_store_time`, with a JSON-like body.
pub fn message(
    index: u64,
    topics: u32,
    queues: u32,
    first_store_time: i64,
    step_ms: i64,
    body_size: usize,
) -> SampleMessage {
    SampleMessage {
        topic: format!("topic-{}", index % u64::from(topics)),
        queue_id: ((index / u64::from(topics)) % u64::from(queues)) as u32,
        msg_id: format!("{:032X}", 0xA000_0000_0000u64 + index),
        keys: if index.is_multiple_of(3) {
            vec![format!("order-{index}"), format!("cust-{}", index % 97)]
        } else {
            vec![format!("order-{index}")]
        },
        tag: index.is_multiple_of(2).then(|| "created".to_owned()),
        properties: if index.is_multiple_of(5) {
            vec![("trace.id".into(), format!("t-{index}"))]
        } else {
            Vec::new()
        },
        store_timestamp: first_store_time + index as i64 * step_ms,
        body: json_body(index, body_size),
    }
}

/// `count` messages over `topics` topics of `queues` queues each, stored `step_ms` apart from
/// `first_store_time`, with JSON-like bodies of about `body_size` bytes (see [`message`]).
pub fn messages(
    count: u64,
    topics: u32,
    queues: u32,
    first_store_time: i64,
    step_ms: i64,
    body_size: usize,
) -> Vec<SampleMessage> {
    (0..count)
        .map(|index| message(index, topics, queues, first_store_time, step_ms, body_size))
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

/// The trace events of one sample message's life: Pub, Store (with a server-stats snapshot), then
/// SubBefore and SubAfter by `group` with the handler ending `consume_latency_ms` after the store.
pub fn trace_events(message: &SampleMessage, group: &str, consume_latency_ms: i64) -> Vec<TraceEvent> {
    let event_id = |step: u64| {
        let id = u128::from_str_radix(&message.msg_id, 16).unwrap_or(0);
        format!("{:032X}", id.wrapping_mul(16).wrapping_add(u128::from(step)))
    };
    let store = message.store_timestamp;
    let base = TraceEvent {
        msg_id: message.msg_id.clone(),
        topic: message.topic.clone(),
        queue_id: message.queue_id,
        keys: message.keys.clone(),
        tags: message.tag.clone().unwrap_or_default(),
        broker_name: "broker-a".into(),
        broker_member: "broker-a-0".into(),
        broker_host: "127.0.0.1:7911".into(),
        idc: "dc1".into(),
        born_timestamp: store - 3,
        store_timestamp: store,
        body_size: message.body.len() as u32,
        ..TraceEvent::default()
    };
    let consume_end = store + consume_latency_ms;
    let consume_start = consume_end - consume_latency_ms.min(2);
    vec![
        TraceEvent {
            event_id: event_id(1),
            trace_type: TraceType::Pub as i32,
            timestamp: store - 1,
            group: "producers".into(),
            client_host: "10.1.2.3:40000".into(),
            ..base.clone()
        },
        TraceEvent {
            event_id: event_id(2),
            trace_type: TraceType::Store as i32,
            timestamp: store,
            server_stats: Some(ServerStats {
                send_tps: 1000.0 + (store / 1000 % 100) as f64,
                pull_tps: 900.0,
                cpu_load: 0.25,
                disk_used_ratio: 0.5,
                flush_latency_us: 300,
                replication_latency_us: 800,
            }),
            ..base.clone()
        },
        TraceEvent {
            event_id: event_id(3),
            trace_type: TraceType::SubBefore as i32,
            timestamp: consume_start,
            group: group.into(),
            client_id: "consumer-1".into(),
            consume_start_timestamp: consume_start,
            sdk_version: "meridian-rust/0.1.0".into(),
            ..base.clone()
        },
        TraceEvent {
            event_id: event_id(4),
            trace_type: TraceType::SubAfter as i32,
            timestamp: consume_end,
            group: group.into(),
            client_id: "consumer-1".into(),
            consume_start_timestamp: consume_start,
            consume_end_timestamp: consume_end,
            cost_us: (consume_end - consume_start) as u64 * 1000,
            status: TraceStatus::Ok as i32,
            sdk_version: "meridian-rust/0.1.0".into(),
            ..base
        },
    ]
}

/// Trace events packed as the broker packs them: messages on the trace topic
/// ([`meridian_proto::trace::TRACE_TOPIC`]) whose bodies are [`TraceBatch`]es of up to
/// `events_per_record` events, stored at the time of each batch's last event, queue 0.
pub fn trace_records(events: &[TraceEvent], events_per_record: usize, first_msg_id: u64) -> Vec<SampleMessage> {
    use prost::Message as _;
    events
        .chunks(events_per_record.max(1))
        .enumerate()
        .map(|(index, chunk)| SampleMessage {
            topic: meridian_proto::trace::TRACE_TOPIC.to_owned(),
            queue_id: 0,
            msg_id: format!("{:032X}", first_msg_id + index as u64),
            keys: Vec::new(),
            tag: None,
            properties: Vec::new(),
            store_timestamp: chunk.iter().map(|event| event.timestamp).max().unwrap_or(0),
            body: TraceBatch::from(chunk.to_vec()).encode_to_vec(),
        })
        .collect()
}
