//! The send path's share of tracing: one fixed-size row per stored message, written out by the
//! flusher as [`PubColumns`] (meridian_proto::trace).
//!
//! A row holds what the message's Pub event needs that the send does not share with the sends
//! around it: the message id as 16 bytes, offsets, times, sizes, and where its keys and tag sit in
//! one text buffer. Topics, groups and client addresses are kept once in a dictionary and named by
//! index, and the send path checks the names of the last row before looking any up. So a send
//! pays a few pushes into buffers that keep their capacity from flush to flush: no allocation, no
//! encoding, and nothing for the flusher's thread to free.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use meridian_proto::MessageId;
use meridian_proto::messages::{MessageData, SendResult};
use meridian_proto::trace::{ServerStats, pub_columns_tag as tag};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::Identity;

/// One stored message's Pub event.
#[derive(Debug, Clone, Copy)]
struct Row {
    msg_id: [u8; 16],
    /// Indexes into [`PubRows::names`].
    topic: u32,
    group: u32,
    client_host: u32,
    queue_id: u32,
    queue_offset: u64,
    commitlog_offset: u64,
    store_timestamp: i64,
    born_timestamp: i64,
    body_size: u32,
    reconsume_count: u32,
    /// Its keys are `text[text_start..keys_end]` of [`PubRows::text`], its tag
    /// `text[keys_end..tags_end]`.
    text_start: u32,
    keys_end: u32,
    tags_end: u32,
}

/// Pub events of stored messages waiting for the flusher.
#[derive(Default)]
pub(super) struct PubRows {
    rows: Vec<Row>,
    /// Keys and tags of every row, back to back.
    text: String,
    /// Topics, groups and client addresses (as text) the rows name.
    names: Vec<Box<str>>,
    name_index: HashMap<Box<str>, u32>,
    host_index: HashMap<SocketAddr, u32>,
    /// The last row's topic, group and client (with the client's index), which the next row
    /// mostly shares.
    last: Option<(u32, u32, SocketAddr, u32)>,
}

impl PubRows {
    /// Empties the rows, keeping what they allocated for the next ones.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.text.clear();
        self.names.clear();
        self.name_index.clear();
        self.host_index.clear();
        self.last = None;
    }

    /// Rows it has room for without growing.
    pub fn capacity(&self) -> usize {
        self.rows.capacity()
    }

    fn name(&mut self, name: &str) -> u32 {
        if let Some(index) = self.name_index.get(name) {
            return *index;
        }
        let index = self.names.len() as u32;
        self.names.push(name.into());
        self.name_index.insert(name.into(), index);
        index
    }

    fn host(&mut self, host: SocketAddr) -> u32 {
        if let Some(index) = self.host_index.get(&host) {
            return *index;
        }
        let mut text = String::with_capacity(24);
        write!(text, "{host}").expect("formatting into a String");
        let index = self.name(&text);
        self.host_index.insert(host, index);
        index
    }

    /// Indexes of the names of a row.
    fn names_of(&mut self, topic: &str, group: &str, client_host: SocketAddr) -> (u32, u32, u32) {
        if let Some((last_topic, last_group, last_host, host_index)) = self.last
            && last_host == client_host
            && same(&self.names[last_topic as usize], topic)
            && same(&self.names[last_group as usize], group)
        {
            return (last_topic, last_group, host_index);
        }
        let names = (self.name(topic), self.name(group), self.host(client_host));
        self.last = Some((names.0, names.1, client_host, names.2));
        names
    }

    /// Adds the Pub event of `message`, stored as `result`, sent to `topic` by `group` from
    /// `client_host`, with its `keys` (as the `KEYS` property holds them) and `tags`. Returns
    /// false, adding nothing, when the event does not fit a row (a message id that is not 32 hex
    /// digits, or keys past 4 GiB of buffered text), for the caller to buffer it as an event.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        topic: &str,
        group: &str,
        client_host: SocketAddr,
        message: &MessageData,
        keys: Option<&str>,
        tags: &str,
        result: &SendResult,
    ) -> bool {
        let Ok(msg_id) = MessageId::parse(&result.msg_id) else {
            return false;
        };
        let keys = keys.unwrap_or("");
        let text_start = self.text.len();
        let Ok(tags_end) = u32::try_from(text_start + keys.len() + tags.len()) else {
            return false;
        };
        let (topic, group, client_host) = self.names_of(topic, group, client_host);
        self.text.push_str(keys);
        self.text.push_str(tags);
        self.rows.push(Row {
            msg_id: msg_id.0,
            topic,
            group,
            client_host,
            queue_id: result.queue_id,
            queue_offset: result.queue_offset,
            commitlog_offset: result.commitlog_offset,
            store_timestamp: result.store_timestamp,
            born_timestamp: message.born_timestamp,
            body_size: message.body.len() as u32,
            reconsume_count: message.reconsume_count,
            text_start: text_start as u32,
            keys_end: (text_start + keys.len()) as u32,
            tags_end,
        });
        true
    }

    /// The rows as trace-topic message bodies ([`meridian_proto::trace::TraceBatch`]es holding
    /// only [`meridian_proto::trace::PubColumns`]) of at most `per_record` events each, with
    /// their event counts, appended to `out`.
    pub fn encode(&self, identity: &Identity, stats: &ServerStats, per_record: usize, out: &mut Vec<(Bytes, usize)>) {
        if self.rows.is_empty() {
            return;
        }
        let mut header = Vec::with_capacity(128);
        string(&mut header, tag::BROKER_NAME, &identity.broker_name);
        string(&mut header, tag::BROKER_MEMBER, &identity.member);
        string(&mut header, tag::BROKER_HOST, &identity.host);
        string(&mut header, tag::IDC, &identity.idc);
        let stats = stats.encode_to_vec();
        field(&mut header, tag::SERVER_STATS, &stats);
        // Each record names only the names its rows use, renumbered from 0: `local[name]` is
        // `(record, index)` when record `record` already named it.
        let mut local = vec![(usize::MAX, 0u32); self.names.len()];
        let mut record_names: Vec<u32> = Vec::new();
        let mut indexes: Vec<[u32; 3]> = Vec::with_capacity(per_record);
        let mut columns = Vec::new();
        for (record, rows) in self.rows.chunks(per_record.max(1)).enumerate() {
            record_names.clear();
            indexes.clear();
            for row in rows {
                indexes.push([row.topic, row.group, row.client_host].map(|name| {
                    let slot = &mut local[name as usize];
                    if slot.0 != record {
                        *slot = (record, record_names.len() as u32);
                        record_names.push(name);
                    }
                    slot.1
                }));
            }
            columns.clear();
            columns.extend_from_slice(&header);
            field(
                &mut columns,
                tag::FIRST_EVENT_ID,
                &MessageId::generate_many(rows.len() as u32).0,
            );
            for name in &record_names {
                field(&mut columns, tag::NAMES, self.names[*name as usize].as_bytes());
            }
            encode_key(tag::MSG_IDS, WireType::LengthDelimited, &mut columns);
            encode_varint(16 * rows.len() as u64, &mut columns);
            for row in rows {
                columns.extend_from_slice(&row.msg_id);
            }
            for (column, at) in [(tag::TOPIC, 0), (tag::GROUP, 1), (tag::CLIENT_HOST, 2)] {
                packed(&mut columns, column, indexes.iter().map(|names| u64::from(names[at])));
            }
            packed(
                &mut columns,
                tag::QUEUE_ID,
                rows.iter().map(|row| u64::from(row.queue_id)),
            );
            packed(&mut columns, tag::QUEUE_OFFSET, rows.iter().map(|row| row.queue_offset));
            packed(
                &mut columns,
                tag::COMMITLOG_OFFSET,
                rows.iter().map(|row| row.commitlog_offset),
            );
            // `int64` as protobuf writes it: a negative time is ten bytes.
            packed(
                &mut columns,
                tag::STORE_TIMESTAMP,
                rows.iter().map(|row| row.store_timestamp as u64),
            );
            packed(
                &mut columns,
                tag::BORN_TIMESTAMP,
                rows.iter().map(|row| row.born_timestamp as u64),
            );
            packed(
                &mut columns,
                tag::BODY_SIZE,
                rows.iter().map(|row| u64::from(row.body_size)),
            );
            packed(
                &mut columns,
                tag::RECONSUME_COUNT,
                rows.iter().map(|row| u64::from(row.reconsume_count)),
            );
            for row in rows {
                field(&mut columns, tag::KEYS, self.text_of(row.text_start, row.keys_end));
            }
            for row in rows {
                field(&mut columns, tag::TAGS, self.text_of(row.keys_end, row.tags_end));
            }
            let mut body = Vec::with_capacity(columns.len() + 8);
            field(&mut body, tag::BATCH_PUBS, &columns);
            out.push((Bytes::from(body), rows.len()));
        }
    }

    fn text_of(&self, start: u32, end: u32) -> &[u8] {
        &self.text.as_bytes()[start as usize..end as usize]
    }
}

/// Whether two short names are equal, compared a word at a time. `==` calls the C library's
/// `memcmp`, whose vector version reads short strings with a masked 32-byte load; near the end of
/// a page that load takes a slow microcode path, and profiles of the send path showed these two
/// comparisons per message costing more than the rest of the row.
fn same(left: &str, right: &str) -> bool {
    let (left, right) = (left.as_bytes(), right.as_bytes());
    if left.len() != right.len() {
        return false;
    }
    let (mut left_words, mut right_words) = (left.chunks_exact(8), right.chunks_exact(8));
    let word = |bytes: &[u8]| u64::from_ne_bytes(bytes.try_into().expect("chunks of 8"));
    (&mut left_words)
        .zip(&mut right_words)
        .all(|(left, right)| word(left) == word(right))
        && left_words
            .remainder()
            .iter()
            .zip(right_words.remainder())
            .all(|(left, right)| left == right)
}

/// A length-delimited field, written even when empty (an element of a repeated field, or a
/// message).
fn field(buf: &mut Vec<u8>, tag: u32, value: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.extend_from_slice(value);
}

/// A singular string field, left out when empty as protobuf leaves it out.
fn string(buf: &mut Vec<u8>, tag: u32, value: &str) {
    if !value.is_empty() {
        field(buf, tag, value.as_bytes());
    }
}

/// A packed repeated varint field of at least one value.
fn packed(buf: &mut Vec<u8>, tag: u32, values: impl Iterator<Item = u64> + Clone) {
    let len: usize = values.clone().map(encoded_len_varint).sum();
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    for value in values {
        encode_varint(value, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::properties::KEY_SEPARATOR;
    use meridian_proto::trace::TraceBatch;

    fn message(born_timestamp: i64) -> MessageData {
        MessageData {
            flags: 0,
            born_timestamp,
            properties: Bytes::new(),
            body: Bytes::from(vec![0; 1024]),
            reconsume_count: 0,
        }
    }

    fn result(offset: u64) -> SendResult {
        SendResult {
            msg_id: MessageId::generate().to_string(),
            queue_id: (offset % 4) as u32,
            queue_offset: offset,
            commitlog_offset: 1_000_000 + offset * 1200,
            store_timestamp: 1_795_631_410_823,
        }
    }

    #[test]
    fn names_compare_equal_only_when_equal() {
        for (left, right, equal) in [
            ("", "", true),
            ("orders", "orders", true),
            ("orders-eu-west-1", "orders-eu-west-1", true),
            ("orders-eu-west-1", "orders-eu-west-2", false),
            ("orders-eu-west-1", "Orders-eu-west-1", false),
            ("orders", "order", false),
            ("10.0.0.9:4000", "10.0.0.9:4001", false),
        ] {
            assert_eq!(same(left, right), equal, "{left:?} vs {right:?}");
        }
    }

    #[test]
    fn records_are_exactly_what_prost_writes_for_their_columns_and_small() {
        let mut rows = PubRows::default();
        let host: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let keys = format!("order-1{KEY_SEPARATOR}cust-7");
        for offset in 0..100 {
            let (keys, tags) = if offset % 10 == 0 {
                (Some(keys.as_str()), "created")
            } else {
                (None, "")
            };
            let born = if offset == 7 { -5 } else { 1_795_631_410_820 };
            assert!(rows.push("orders", "", host, &message(born), keys, tags, &result(offset)));
        }
        assert!(
            !rows.push("orders", "", host, &message(1), None, "", &SendResult::default()),
            "an id that is not 32 hex digits is left to the caller"
        );
        let identity = Identity {
            broker_name: "broker-a".into(),
            member: "a-0".into(),
            host: "10.0.0.2:7911".into(),
            idc: "dc1".into(),
        };
        let mut records = Vec::new();
        rows.encode(&identity, &ServerStats::default(), 64, &mut records);
        assert_eq!(records.iter().map(|(_, count)| *count).collect::<Vec<_>>(), [64, 36]);
        for (body, _) in &records {
            let batch = TraceBatch::decode(body.clone()).unwrap();
            assert_eq!(
                batch.encode_to_vec(),
                body.to_vec(),
                "field for field as prost writes it"
            );
        }
        let bytes: usize = records.iter().map(|(body, _)| body.len()).sum();
        assert!(
            bytes < 100 * 60,
            "{bytes} bytes for 100 events: the columns keep them near 50 each"
        );
    }
}
