//! Trace events written straight into the protobuf bytes of [`TraceBatch`] messages.
//!
//! The flusher turns every stored, replicated and delivered message into an event. Building a
//! [`TraceEvent`] for each would cost a dozen small allocations (ids, topic, keys, tags, group,
//! hosts, the broker's identity and load) only to encode and drop them; instead the common events
//! are encoded field by field from the bytes the broker already holds, and the fields every event
//! of a flush shares (the broker's identity and load) are encoded once and copied. The bytes are
//! exactly what prost writes for the same [`TraceEvent`] (field order aside, which protobuf
//! ignores), so every reader decodes them with `TraceBatch::decode`; the tests hold the two
//! to each other.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use meridian_proto::MessageId;
use meridian_proto::messages::SendResult;
use meridian_proto::properties::{self, KEY_SEPARATOR};
use meridian_proto::trace::{ServerStats, TraceEvent, TraceType};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

use super::Identity;

/// Field numbers of [`TraceEvent`] (proto/src/trace.rs) that the encoder writes.
mod tag {
    pub const EVENT_ID: u32 = 1;
    pub const TRACE_TYPE: u32 = 2;
    pub const TIMESTAMP: u32 = 3;
    pub const MSG_ID: u32 = 4;
    pub const TOPIC: u32 = 5;
    pub const QUEUE_ID: u32 = 6;
    pub const QUEUE_OFFSET: u32 = 7;
    pub const COMMITLOG_OFFSET: u32 = 8;
    pub const KEYS: u32 = 9;
    pub const TAGS: u32 = 10;
    pub const GROUP: u32 = 11;
    pub const CLIENT_HOST: u32 = 13;
    pub const BROKER_NAME: u32 = 14;
    pub const BROKER_MEMBER: u32 = 15;
    pub const BROKER_HOST: u32 = 16;
    pub const IDC: u32 = 17;
    pub const BORN_TIMESTAMP: u32 = 18;
    pub const STORE_TIMESTAMP: u32 = 19;
    pub const REPLICATED_TIMESTAMP: u32 = 20;
    pub const DELIVERED_TIMESTAMP: u32 = 21;
    pub const COST_US: u32 = 24;
    pub const BODY_SIZE: u32 = 28;
    pub const RECONSUME_COUNT: u32 = 29;
    pub const SERVER_STATS: u32 = 31;
    pub const DELIVER_AT_TIMESTAMP: u32 = 32;
    /// [`super::TraceBatch::events`].
    pub const BATCH_EVENTS: u32 = 1;
}

/// Appends protobuf fields to one event's bytes. Zero values and empty strings are left out, as
/// prost leaves them out.
struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    fn bytes(&mut self, tag: u32, value: &[u8]) -> &mut Self {
        if !value.is_empty() {
            encode_key(tag, WireType::LengthDelimited, self.0);
            encode_varint(value.len() as u64, self.0);
            self.0.extend_from_slice(value);
        }
        self
    }

    /// An embedded message, written even when empty (prost writes a `Some` of a default message).
    fn message(&mut self, tag: u32, encoded: &[u8]) -> &mut Self {
        encode_key(tag, WireType::LengthDelimited, self.0);
        encode_varint(encoded.len() as u64, self.0);
        self.0.extend_from_slice(encoded);
        self
    }

    fn str(&mut self, tag: u32, value: &str) -> &mut Self {
        self.bytes(tag, value.as_bytes())
    }

    /// `uint32`, `uint64` and enumeration fields.
    fn uint(&mut self, tag: u32, value: u64) -> &mut Self {
        if value != 0 {
            encode_key(tag, WireType::Varint, self.0);
            encode_varint(value, self.0);
        }
        self
    }

    /// `int64` fields (a negative value is ten bytes, as in prost).
    fn int(&mut self, tag: u32, value: i64) -> &mut Self {
        self.uint(tag, value as u64)
    }

    /// A fresh event id.
    fn event_id(&mut self) -> &mut Self {
        self.bytes(tag::EVENT_ID, &MessageId::generate().to_hex())
    }

    /// Where the message is (in `topic`, which may differ from `placed.topic` for a copy waiting
    /// in a system topic) and when it was stored.
    fn placed(&mut self, placed: &Placed<'_>, topic: &str) -> &mut Self {
        self.str(tag::MSG_ID, placed.msg_id)
            .str(tag::TOPIC, topic)
            .uint(tag::QUEUE_ID, u64::from(placed.queue_id))
            .uint(tag::QUEUE_OFFSET, placed.queue_offset)
            .uint(tag::COMMITLOG_OFFSET, placed.commitlog_offset)
            .int(tag::STORE_TIMESTAMP, placed.store_timestamp)
    }

    /// What the message looked like, and the client involved (`host`: its address as text).
    fn described(&mut self, described: &Described<'_>, host: &str) -> &mut Self {
        self.keys(described.keys)
            .str(tag::TAGS, described.tags)
            .str(tag::GROUP, described.group)
            .str(tag::CLIENT_HOST, host)
            .int(tag::BORN_TIMESTAMP, described.born_timestamp)
            .uint(tag::BODY_SIZE, u64::from(described.body_size))
            .uint(tag::RECONSUME_COUNT, u64::from(described.reconsume_count))
    }

    /// Keys as stored in the `KEYS` property.
    fn keys(&mut self, keys: Option<&str>) -> &mut Self {
        for key in keys.into_iter().flat_map(|keys| keys.split(KEY_SEPARATOR)) {
            self.str(tag::KEYS, key);
        }
        self
    }
}

/// What a stored message's properties say about it, read in one pass.
#[derive(Default)]
pub(super) struct StoredProperties<'a> {
    pub real_topic: Option<&'a str>,
    pub keys: Option<&'a str>,
    pub tags: &'a str,
    pub producer_group: &'a str,
    pub deliver_at: &'a str,
}

impl<'a> StoredProperties<'a> {
    pub fn read(encoded: &'a [u8]) -> StoredProperties<'a> {
        let mut found = StoredProperties::default();
        for (name, value) in properties::PropertiesIter::new(encoded) {
            match name {
                properties::REAL_TOPIC => found.real_topic = Some(value),
                properties::KEYS => found.keys = Some(value),
                properties::TAGS => found.tags = value,
                properties::PRODUCER_GROUP => found.producer_group = value,
                properties::DELIVER_AT => found.deliver_at = value,
                _ => {}
            }
        }
        found
    }
}

/// Where and when a message was stored, as a [`meridian_proto::messages::SendResult`] or a
/// record says.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placed<'a> {
    pub msg_id: &'a str,
    pub topic: &'a str,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub commitlog_offset: u64,
    pub store_timestamp: i64,
}

impl<'a> Placed<'a> {
    /// Where a send's result says the message was stored, in `topic`.
    pub fn of(result: &'a SendResult, topic: &'a str) -> Placed<'a> {
        Placed {
            msg_id: &result.msg_id,
            topic,
            queue_id: result.queue_id,
            queue_offset: result.queue_offset,
            commitlog_offset: result.commitlog_offset,
            store_timestamp: result.store_timestamp,
        }
    }
}

/// What a message looked like when it was stored or delivered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Described<'a> {
    pub keys: Option<&'a str>,
    pub tags: &'a str,
    pub group: &'a str,
    pub client_host: SocketAddr,
    pub born_timestamp: i64,
    pub body_size: u32,
    pub reconsume_count: u32,
}

/// Fills [`TraceBatch`] messages of at most `batch_events` events each.
pub(super) struct BatchEncoder {
    batch_events: usize,
    /// The broker's identity and load, the same on every broker-side event of one flush.
    common: Vec<u8>,
    /// The event being written.
    event: Vec<u8>,
    /// The batch being filled, and how many events it holds.
    batch: Vec<u8>,
    in_batch: usize,
    /// Finished batches with their event counts.
    batches: Vec<(Bytes, usize)>,
    /// The last client address formatted, as text (consecutive events mostly share one).
    host: Option<(SocketAddr, String)>,
}

impl BatchEncoder {
    /// An encoder for events of the broker `identity` whose load is `stats`.
    pub fn new(identity: &Identity, stats: &ServerStats, batch_events: usize) -> BatchEncoder {
        let mut common = Vec::with_capacity(128);
        Fields(&mut common)
            .str(tag::BROKER_NAME, &identity.broker_name)
            .str(tag::BROKER_MEMBER, &identity.member)
            .str(tag::BROKER_HOST, &identity.host)
            .str(tag::IDC, &identity.idc)
            .message(tag::SERVER_STATS, &stats.encode_to_vec());
        BatchEncoder {
            batch_events: batch_events.max(1),
            common,
            event: Vec::with_capacity(512),
            batch: Vec::new(),
            in_batch: 0,
            batches: Vec::new(),
            host: None,
        }
    }

    /// `addr` as text, formatted once per run of events from the same client.
    fn host_text(cache: &mut Option<(SocketAddr, String)>, addr: SocketAddr) -> &str {
        if cache.as_ref().is_none_or(|(cached, _)| *cached != addr) {
            let mut text = String::with_capacity(24);
            write!(text, "{addr}").expect("formatting into a String");
            *cache = Some((addr, text));
        }
        &cache.as_ref().expect("just filled").1
    }

    /// Events of one stored message: its Pub (which carries where and when it was stored) and,
    /// for a message waiting in a system topic (`waits_in`: delayed or half), that topic's Store
    /// and, for a delay (`deliver_at`: when it is due), its DelaySchedule. Returns the events
    /// written.
    pub fn stored(
        &mut self,
        placed: &Placed<'_>,
        described: &Described<'_>,
        waits_in: Option<&str>,
        deliver_at: Option<i64>,
    ) -> usize {
        let born = described.born_timestamp;
        let steps: &[TraceType] = match (waits_in, deliver_at) {
            (None, _) => &[TraceType::Pub],
            (Some(_), None) => &[TraceType::Pub, TraceType::Store],
            (Some(_), Some(_)) => &[TraceType::Pub, TraceType::Store, TraceType::DelaySchedule],
        };
        for &step in steps {
            let (timestamp, topic, cost_us) = match step {
                // Pub's cost: born to stored, as the broker's clock sees it.
                TraceType::Pub => (
                    born.max(1),
                    placed.topic,
                    (placed.store_timestamp - born).max(0) as u64 * 1000,
                ),
                _ => (placed.store_timestamp, waits_in.unwrap_or(placed.topic), 0),
            };
            let host = Self::host_text(&mut self.host, described.client_host);
            self.event.clear();
            let mut fields = Fields(&mut self.event);
            fields
                .event_id()
                .uint(tag::TRACE_TYPE, step as u64)
                .int(tag::TIMESTAMP, timestamp)
                .placed(placed, topic)
                .described(described, host)
                .uint(tag::COST_US, cost_us);
            if step == TraceType::DelaySchedule {
                fields.int(tag::DELIVER_AT_TIMESTAMP, deliver_at.unwrap_or(0));
            }
            self.end_event(true);
        }
        steps.len()
    }

    /// The Replicate event of a message that met its ack policy at `acked_at`.
    pub fn replicated(&mut self, placed: &Placed<'_>, acked_at: i64, cost_us: u64) {
        self.event.clear();
        Fields(&mut self.event)
            .event_id()
            .uint(tag::TRACE_TYPE, TraceType::Replicate as u64)
            .int(tag::TIMESTAMP, acked_at)
            .placed(placed, placed.topic)
            .int(tag::REPLICATED_TIMESTAMP, acked_at)
            .uint(tag::COST_US, cost_us);
        self.end_event(true);
    }

    /// The Deliver event of a message a pull answered with at `delivered_at`.
    pub fn delivered(&mut self, placed: &Placed<'_>, described: &Described<'_>, delivered_at: i64) {
        let host = Self::host_text(&mut self.host, described.client_host);
        self.event.clear();
        Fields(&mut self.event)
            .event_id()
            .uint(tag::TRACE_TYPE, TraceType::Deliver as u64)
            .int(tag::TIMESTAMP, delivered_at)
            .placed(placed, placed.topic)
            .described(described, host)
            .int(tag::DELIVERED_TIMESTAMP, delivered_at);
        self.end_event(true);
    }

    /// An event built elsewhere: a step the broker took (`broker_side`: it gets an event id and
    /// the broker's identity and load here) or a client's report (written as it came).
    pub fn event(&mut self, event: &TraceEvent, broker_side: bool) {
        self.event.clear();
        event.encode(&mut self.event).expect("a Vec grows as needed");
        if broker_side {
            Fields(&mut self.event).event_id();
        }
        self.end_event(broker_side);
    }

    /// Frames the event written into `self.event` as one element of the batch.
    fn end_event(&mut self, broker_side: bool) {
        if broker_side {
            self.event.extend_from_slice(&self.common);
        }
        if self.batch.is_empty() {
            self.batch.reserve(self.batch_events * (self.event.len() + 3));
        }
        Fields(&mut self.batch).message(tag::BATCH_EVENTS, &self.event);
        self.in_batch += 1;
        if self.in_batch == self.batch_events {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if self.in_batch > 0 {
            let batch = std::mem::take(&mut self.batch);
            self.batches.push((Bytes::from(batch), self.in_batch));
            self.in_batch = 0;
        }
    }

    /// The encoded batches, each with its number of events.
    pub fn finish(mut self) -> Vec<(Bytes, usize)> {
        self.seal();
        self.batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::trace::{TraceBatch, TraceStatus};

    fn identity() -> Identity {
        Identity {
            broker_name: "broker-a".into(),
            member: "a-0".into(),
            host: "127.0.0.1:7911".into(),
            idc: "dc1".into(),
        }
    }

    fn stats() -> ServerStats {
        ServerStats {
            send_tps: 1234.5,
            pull_tps: 0.25,
            cpu_load: 0.5,
            disk_used_ratio: 0.75,
            flush_latency_us: 120,
            replication_latency_us: 0,
        }
    }

    /// The event prost writes for the same fields, with the id the encoder generated.
    fn with_broker(event: TraceEvent, id: &str) -> TraceEvent {
        TraceEvent {
            event_id: id.to_owned(),
            broker_name: "broker-a".into(),
            broker_member: "a-0".into(),
            broker_host: "127.0.0.1:7911".into(),
            idc: "dc1".into(),
            server_stats: Some(stats()),
            ..event
        }
    }

    fn decode(batches: &[(Bytes, usize)]) -> Vec<TraceEvent> {
        batches
            .iter()
            .flat_map(|(bytes, count)| {
                let batch = TraceBatch::decode(bytes.clone()).unwrap();
                assert_eq!(batch.events.len(), *count);
                batch.events
            })
            .collect()
    }

    #[test]
    fn encoded_events_decode_to_exactly_the_events_prost_would_write() {
        let placed = Placed {
            msg_id: "0A0000010000000000000000000000FF",
            topic: "orders",
            queue_id: 3,
            queue_offset: 41,
            commitlog_offset: 1 << 40,
            store_timestamp: 1_700_000_000_500,
        };
        let described = Described {
            keys: Some("order-1 cust-7"),
            tags: "created",
            group: "shop",
            client_host: "10.0.0.9:4000".parse().unwrap(),
            born_timestamp: 1_700_000_000_000,
            body_size: 1024,
            reconsume_count: 2,
        };
        let mut encoder = BatchEncoder::new(&identity(), &stats(), 4);
        assert_eq!(encoder.stored(&placed, &described, None, None), 1);
        assert_eq!(
            encoder.stored(&placed, &described, Some("SCHEDULE_TOPIC"), Some(1_700_000_060_000)),
            3
        );
        encoder.replicated(&placed, 1_700_000_000_503, 3_000);
        encoder.delivered(&placed, &described, 1_700_000_000_600);
        let step = TraceEvent {
            trace_type: TraceType::Retry as i32,
            timestamp: 7,
            msg_id: placed.msg_id.into(),
            topic: "%RETRY%shop".into(),
            status: TraceStatus::Failed as i32,
            error: "consumer said later".into(),
            ..TraceEvent::default()
        };
        encoder.event(&step, true);
        let report = TraceEvent {
            event_id: "client-event".into(),
            trace_type: TraceType::SubAfter as i32,
            idc: "dc2".into(),
            broker_name: "broker-a".into(),
            ..TraceEvent::default()
        };
        encoder.event(&report, false);
        let batches = encoder.finish();
        assert_eq!(batches.iter().map(|(_, count)| *count).collect::<Vec<_>>(), [4, 4]);
        let events = decode(&batches);

        let publish = TraceEvent {
            trace_type: TraceType::Pub as i32,
            timestamp: described.born_timestamp,
            msg_id: placed.msg_id.into(),
            topic: "orders".into(),
            queue_id: 3,
            queue_offset: 41,
            commitlog_offset: 1 << 40,
            keys: vec!["order-1".into(), "cust-7".into()],
            tags: "created".into(),
            group: "shop".into(),
            client_host: "10.0.0.9:4000".into(),
            born_timestamp: described.born_timestamp,
            store_timestamp: placed.store_timestamp,
            cost_us: 500_000,
            body_size: 1024,
            reconsume_count: 2,
            ..TraceEvent::default()
        };
        let store = TraceEvent {
            trace_type: TraceType::Store as i32,
            timestamp: placed.store_timestamp,
            topic: "SCHEDULE_TOPIC".into(),
            cost_us: 0,
            ..publish.clone()
        };
        let schedule = TraceEvent {
            trace_type: TraceType::DelaySchedule as i32,
            deliver_at_timestamp: 1_700_000_060_000,
            ..store.clone()
        };
        let replicate = TraceEvent {
            trace_type: TraceType::Replicate as i32,
            timestamp: 1_700_000_000_503,
            msg_id: placed.msg_id.into(),
            topic: "orders".into(),
            queue_id: 3,
            queue_offset: 41,
            commitlog_offset: 1 << 40,
            store_timestamp: placed.store_timestamp,
            replicated_timestamp: 1_700_000_000_503,
            cost_us: 3_000,
            ..TraceEvent::default()
        };
        let deliver = TraceEvent {
            trace_type: TraceType::Deliver as i32,
            timestamp: 1_700_000_000_600,
            delivered_timestamp: 1_700_000_000_600,
            cost_us: 0,
            ..publish.clone()
        };
        let expected = [publish.clone(), publish, store, schedule, replicate, deliver, step];
        for (index, (event, expected)) in events.iter().zip(expected).enumerate() {
            assert_eq!(event.event_id.len(), 32, "event {index} has a generated id");
            assert_eq!(*event, with_broker(expected, &event.event_id), "event {index}");
        }
        assert_eq!(events[7], report, "a client's report is written as it came");
        let ids: std::collections::HashSet<_> = events.iter().map(|event| &event.event_id).collect();
        assert_eq!(ids.len(), events.len(), "every event has its own id");
        // No field written twice or padded: as many bytes as prost writes for the same event.
        let mut encoder = BatchEncoder::new(&identity(), &stats(), 1);
        encoder.replicated(&placed, 1_700_000_000_503, 3_000);
        let (bytes, _) = encoder.finish().remove(0);
        let decoded = TraceBatch::decode(bytes.clone()).unwrap();
        assert_eq!(bytes.len(), decoded.encoded_len());
    }

    #[test]
    fn negative_and_empty_values_round_trip() {
        let placed = Placed {
            msg_id: "",
            topic: "t",
            queue_id: 0,
            queue_offset: 0,
            commitlog_offset: 0,
            store_timestamp: -5,
        };
        let mut encoder = BatchEncoder::new(&Identity::default(), &ServerStats::default(), 512);
        encoder.replicated(&placed, -1, 0);
        let events = decode(&encoder.finish());
        assert_eq!((events[0].store_timestamp, events[0].timestamp), (-5, -1));
        assert!(events[0].broker_name.is_empty() && events[0].server_stats == Some(ServerStats::default()));
    }

    #[test]
    fn properties_are_read_in_one_pass() {
        let mut builder = properties::PropertiesBuilder::new();
        builder.keys(&["a", "b"]).unwrap();
        builder.tag("t").unwrap();
        builder.system(properties::REAL_TOPIC, "orders");
        builder.system(properties::DELIVER_AT, "61002");
        let encoded = builder.finish();
        let found = StoredProperties::read(&encoded);
        assert_eq!(
            (found.real_topic, found.keys, found.tags, found.deliver_at),
            (Some("orders"), Some("a b"), "t", "61002")
        );
    }
}
