//! Pub events in columns: how a broker writes the event of every message it stores.
//!
//! The broker writes one Pub event per stored message, on the same disk and cores as the messages
//! themselves. As [`TraceEvent`]s the events of one flush repeat the broker's identity and load,
//! the topic, group and client, and carry a fresh event id as text: about 250 bytes each.
//! [`PubColumns`] writes what they share once and the rest as packed columns, about 50 bytes per
//! event, which the broker writes without an allocation per message. [`super::decode_batch`]
//! expands the columns into ordinary [`TraceEvent`]s, so readers see no difference.

use prost::Message;

use super::event::{ServerStats, TraceError, TraceEvent, TraceType};
use crate::msgid::MessageId;
use crate::properties::KEY_SEPARATOR;

/// Pub events of one broker, column by column: event `i` is the `i`th value of every per-event
/// column. [`TraceBatch::pubs`](super::TraceBatch::pubs).
#[derive(Clone, PartialEq, Message)]
pub struct PubColumns {
    /// Broker group that stored the messages.
    #[prost(string, tag = "1")]
    pub broker_name: String,
    /// The member that stored them (the master).
    #[prost(string, tag = "2")]
    pub broker_member: String,
    /// The broker's advertised address.
    #[prost(string, tag = "3")]
    pub broker_host: String,
    /// The broker's data center.
    #[prost(string, tag = "4")]
    pub idc: String,
    /// The broker's load when it wrote the events.
    #[prost(message, optional, tag = "5")]
    pub server_stats: Option<ServerStats>,
    /// Event id of the first event (16 bytes); event `i`'s is [`MessageId::nth`]`(i)` of it.
    #[prost(bytes = "vec", tag = "6")]
    pub first_event_id: Vec<u8>,
    /// Topics, groups and client addresses the events name, each once: the `topic`, `group` and
    /// `client_host` columns index into it.
    #[prost(string, repeated, tag = "7")]
    pub names: Vec<String>,
    /// Message ids, 16 bytes per event.
    #[prost(bytes = "vec", tag = "10")]
    pub msg_ids: Vec<u8>,
    /// Topic the producer sent to (index into `names`).
    #[prost(uint32, repeated, tag = "11")]
    pub topic: Vec<u32>,
    /// Producer group (index into `names`; the empty name for none).
    #[prost(uint32, repeated, tag = "12")]
    pub group: Vec<u32>,
    /// The producer's address as the broker saw it (index into `names`).
    #[prost(uint32, repeated, tag = "13")]
    pub client_host: Vec<u32>,
    /// Queue the message went to.
    #[prost(uint32, repeated, tag = "14")]
    pub queue_id: Vec<u32>,
    /// Its position in the queue.
    #[prost(uint64, repeated, tag = "15")]
    pub queue_offset: Vec<u64>,
    /// Its byte position in the commitlog.
    #[prost(uint64, repeated, tag = "16")]
    pub commitlog_offset: Vec<u64>,
    /// When the broker stored it (Unix ms).
    #[prost(int64, repeated, tag = "17")]
    pub store_timestamp: Vec<i64>,
    /// When the producer created it (Unix ms).
    #[prost(int64, repeated, tag = "18")]
    pub born_timestamp: Vec<i64>,
    /// Body size in bytes.
    #[prost(uint32, repeated, tag = "19")]
    pub body_size: Vec<u32>,
    /// Times it was consumed before (a message sent back by a consumer).
    #[prost(uint32, repeated, tag = "20")]
    pub reconsume_count: Vec<u32>,
    /// Keys as the `KEYS` property holds them (joined by [`KEY_SEPARATOR`]; empty: none).
    #[prost(string, repeated, tag = "21")]
    pub keys: Vec<String>,
    /// Tag (empty: none).
    #[prost(string, repeated, tag = "22")]
    pub tags: Vec<String>,
}

/// Field numbers of [`PubColumns`], for writers that encode it field by field.
pub mod tag {
    #![allow(missing_docs)]
    pub const BROKER_NAME: u32 = 1;
    pub const BROKER_MEMBER: u32 = 2;
    pub const BROKER_HOST: u32 = 3;
    pub const IDC: u32 = 4;
    pub const SERVER_STATS: u32 = 5;
    pub const FIRST_EVENT_ID: u32 = 6;
    pub const NAMES: u32 = 7;
    pub const MSG_IDS: u32 = 10;
    pub const TOPIC: u32 = 11;
    pub const GROUP: u32 = 12;
    pub const CLIENT_HOST: u32 = 13;
    pub const QUEUE_ID: u32 = 14;
    pub const QUEUE_OFFSET: u32 = 15;
    pub const COMMITLOG_OFFSET: u32 = 16;
    pub const STORE_TIMESTAMP: u32 = 17;
    pub const BORN_TIMESTAMP: u32 = 18;
    pub const BODY_SIZE: u32 = 19;
    pub const RECONSUME_COUNT: u32 = 20;
    pub const KEYS: u32 = 21;
    pub const TAGS: u32 = 22;
    /// [`super::super::TraceBatch::pubs`].
    pub const BATCH_PUBS: u32 = 2;
}

impl PubColumns {
    /// How many events the columns hold.
    pub fn len(&self) -> usize {
        self.topic.len()
    }

    /// Whether they hold none.
    pub fn is_empty(&self) -> bool {
        self.topic.is_empty()
    }

    /// The events, as the broker would have written them one by one: a Pub stamped with the born
    /// time, carrying where and when the message was stored, with born-to-stored as its cost.
    /// Refuses columns of different lengths and indexes past `names`, naming the column.
    pub fn expand(self) -> Result<Vec<TraceEvent>, TraceError> {
        let count = self.len();
        let malformed = |column: &str, values: usize| {
            TraceError::Decode(format!(
                "Pub columns: {column} holds {values} values for {count} events (every column needs one per event)"
            ))
        };
        if !self.msg_ids.len().is_multiple_of(16) {
            return Err(TraceError::Decode(format!(
                "Pub columns: msg_ids holds {} bytes, not 16 per event",
                self.msg_ids.len()
            )));
        }
        let lengths = [
            ("msg_ids", self.msg_ids.len() / 16),
            ("group", self.group.len()),
            ("client_host", self.client_host.len()),
            ("queue_id", self.queue_id.len()),
            ("queue_offset", self.queue_offset.len()),
            ("commitlog_offset", self.commitlog_offset.len()),
            ("store_timestamp", self.store_timestamp.len()),
            ("born_timestamp", self.born_timestamp.len()),
            ("body_size", self.body_size.len()),
            ("reconsume_count", self.reconsume_count.len()),
            ("keys", self.keys.len()),
            ("tags", self.tags.len()),
        ];
        if let Some((column, values)) = lengths.into_iter().find(|(_, values)| *values != count) {
            return Err(malformed(column, values));
        }
        let first_event_id = <[u8; 16]>::try_from(self.first_event_id.as_slice())
            .map(MessageId)
            .map_err(|_| {
                TraceError::Decode(format!(
                    "Pub columns: first_event_id holds {} bytes, not 16",
                    self.first_event_id.len()
                ))
            })?;
        let name = |column: &str, index: u32| {
            self.names.get(index as usize).ok_or_else(|| {
                TraceError::Decode(format!(
                    "Pub columns: {column} names entry {index}, past the {} names",
                    self.names.len()
                ))
            })
        };
        let mut events = Vec::with_capacity(count);
        for (index, (msg_id, (keys, tags))) in self
            .msg_ids
            .chunks_exact(16)
            .zip(self.keys.into_iter().zip(self.tags))
            .enumerate()
        {
            let msg_id = MessageId(msg_id.try_into().expect("chunks of 16"));
            let born = self.born_timestamp[index];
            let stored = self.store_timestamp[index];
            events.push(TraceEvent {
                event_id: first_event_id.nth(index as u32).to_string(),
                trace_type: TraceType::Pub as i32,
                timestamp: born.max(1),
                msg_id: msg_id.to_string(),
                topic: name("topic", self.topic[index])?.clone(),
                queue_id: self.queue_id[index],
                queue_offset: self.queue_offset[index],
                commitlog_offset: self.commitlog_offset[index],
                keys: keys
                    .split(KEY_SEPARATOR)
                    .filter(|key| !key.is_empty())
                    .map(str::to_owned)
                    .collect(),
                tags,
                group: name("group", self.group[index])?.clone(),
                client_host: name("client_host", self.client_host[index])?.clone(),
                broker_name: self.broker_name.clone(),
                broker_member: self.broker_member.clone(),
                broker_host: self.broker_host.clone(),
                idc: self.idc.clone(),
                born_timestamp: born,
                store_timestamp: stored,
                cost_us: (stored - born).max(0) as u64 * 1000,
                body_size: self.body_size[index],
                reconsume_count: self.reconsume_count[index],
                server_stats: self.server_stats.clone(),
                ..TraceEvent::default()
            });
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> PubColumns {
        PubColumns {
            broker_name: "broker-a".into(),
            broker_member: "a-0".into(),
            broker_host: "10.0.0.2:7911".into(),
            idc: "dc1".into(),
            server_stats: Some(ServerStats {
                send_tps: 10.0,
                ..ServerStats::default()
            }),
            first_event_id: MessageId::generate_many(2).0.to_vec(),
            names: vec!["orders".into(), "shop".into(), "10.0.0.9:4000".into(), String::new()],
            msg_ids: [MessageId::generate().0, MessageId::generate().0].concat(),
            topic: vec![0, 0],
            group: vec![1, 3],
            client_host: vec![2, 2],
            queue_id: vec![1, 2],
            queue_offset: vec![7, 0],
            commitlog_offset: vec![700, 800],
            store_timestamp: vec![1_002, 1_003],
            born_timestamp: vec![1_000, 1_004],
            body_size: vec![5, 6],
            reconsume_count: vec![0, 1],
            keys: vec![format!("order-1{KEY_SEPARATOR}cust-7"), String::new()],
            tags: vec!["created".into(), String::new()],
        }
    }

    #[test]
    fn columns_expand_into_one_pub_event_per_row() {
        let columns = columns();
        let first = MessageId(columns.first_event_id.clone().try_into().unwrap());
        let events = columns.clone().expand().unwrap();
        assert_eq!(events.len(), 2);
        let (one, two) = (&events[0], &events[1]);
        assert_eq!(one.kind(), TraceType::Pub);
        assert_eq!(one.event_id, first.to_string());
        assert_eq!(two.event_id, first.nth(1).to_string());
        assert_eq!(
            one.msg_id,
            MessageId(columns.msg_ids[..16].try_into().unwrap()).to_string()
        );
        assert_eq!((one.topic.as_str(), one.group.as_str()), ("orders", "shop"));
        assert_eq!((two.group.as_str(), two.client_host.as_str()), ("", "10.0.0.9:4000"));
        assert_eq!(one.keys, ["order-1", "cust-7"]);
        assert!(two.keys.is_empty() && two.tags.is_empty());
        assert_eq!((one.timestamp, one.store_timestamp, one.cost_us), (1_000, 1_002, 2_000));
        assert_eq!(
            two.cost_us, 0,
            "a store before the born time (clock skew) costs nothing"
        );
        assert_eq!((two.queue_id, two.commitlog_offset, two.body_size), (2, 800, 6));
        assert_eq!((one.broker_name.as_str(), one.idc.as_str()), ("broker-a", "dc1"));
        assert_eq!(one.server_stats, columns.server_stats);
        for event in &events {
            super::super::check_event(event).unwrap();
        }
    }

    #[test]
    fn malformed_columns_are_refused_naming_the_column() {
        let reason = |columns: PubColumns| columns.expand().unwrap_err().to_string();
        let mut short = columns();
        short.queue_offset.pop();
        assert!(reason(short).contains("queue_offset holds 1 values for 2 events"));
        let mut torn = columns();
        torn.msg_ids.pop();
        assert!(reason(torn).contains("msg_ids holds 31 bytes"));
        let mut past = columns();
        past.group[1] = 9;
        assert!(reason(past).contains("group names entry 9, past the 4 names"));
        let mut no_id = columns();
        no_id.first_event_id.clear();
        assert!(reason(no_id).contains("first_event_id holds 0 bytes"));
    }
}
