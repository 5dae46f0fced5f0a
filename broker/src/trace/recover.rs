//! Trace recovery: the Pub events of messages whose buffered events died with a broker (a crash,
//! a `kill -9`, a master lost before its flusher wrote) are derived again from the stored
//! records themselves, so every stored message has at least its Pub and Store steps.
//!
//! The *trace watermark* is a commitlog offset below which every stored message's Pub event is in
//! the trace topic. The flusher writes it on every trace record it appends (the
//! [`WATERMARK`] property), so it travels with the log: a slave replicating the record holds
//! every trace record before it, and a truncated tail takes its watermarks with it. When a
//! broker starts writing (a restart, or a promotion to master: [`RecoveryGate`]), it reads the
//! watermark of the last trace record in its log ([`last_watermark`]), scans its log from there
//! to its end and writes the Pub event (and, for a delayed or half message, its Store and
//! DelaySchedule) of each message stored as a producer sent it ([`derive`]), then carries on
//! from the end. A message traced twice (its own event was written after all) has
//! two Pub events of the same offset: the tracer's timeline shows one
//! (`tracer/src/timeline.rs`).
//!
//! Start with [`RecoveryGate::due`], which the flusher calls every round.

use bytes::Bytes;
use meridian_proto::properties::{self, DELIVER_AT, REAL_TOPIC, RETRY_TOPIC, TRANSACTION};
use meridian_proto::record::Record;
use meridian_proto::topics::{DELAY_TOPIC, HALF_TOPIC};
use meridian_proto::trace::{ServerStats, TRACE_TOPIC};

use super::Identity;
use super::encode::{BatchEncoder, Described, Placed, StoredProperties};
use crate::replication::Role;
use crate::store::MessageStore;

/// The property of a trace record that holds the trace watermark when it was written.
pub const WATERMARK: &str = "TRACE_WATERMARK";

/// Decides when the flusher recovers: once each time the broker starts taking writes (its first
/// round as master after a start, and after every promotion), as the epoch says.
#[derive(Debug, Default)]
pub struct RecoveryGate {
    /// The master epoch this broker last recovered in.
    recovered_in: Option<u64>,
}

impl RecoveryGate {
    /// Whether the broker in `role` (writable now) should recover before writing anything else.
    pub fn due(&mut self, role: &Role) -> bool {
        let Role::Master { epoch } = role else {
            self.recovered_in = None;
            return false;
        };
        if self.recovered_in == Some(*epoch) {
            return false;
        }
        self.recovered_in = Some(*epoch);
        true
    }
}

/// The trace watermark of `store`'s log: the one on the last trace record its trace queues hold,
/// or the start of its log when it holds none (a log whose broker never flushed a trace record).
/// Only ever lower than the truth (trace records not yet in a consume queue are not read), which
/// costs a longer scan, never a missed message.
pub fn last_watermark(store: &MessageStore) -> u64 {
    let start = store.min_offset();
    let queues = store.topic_queues(TRACE_TOPIC).unwrap_or(0);
    let mut last: Option<u64> = None;
    for queue_id in 0..queues {
        let Ok(queue) = store.consume_queue(TRACE_TOPIC, queue_id) else {
            continue;
        };
        let max = queue.max_offset();
        if max == 0 || max <= queue.min_offset() {
            continue;
        }
        if let Ok(entries) = store.read_entries(&queue, max - 1, 1, u32::MAX)
            && let Some(entry) = entries.first()
        {
            last = last.max(Some(entry.commitlog_offset));
        }
    }
    let Some(offset) = last else {
        return start;
    };
    let watermark = store.read_record(offset).ok().and_then(|bytes| {
        let record = Record::parse(&bytes).ok()?;
        properties::get(record.properties(), WATERMARK)?.parse::<u64>().ok()
    });
    // A record written before watermarks existed, or one from a log since cut: scan all there is.
    watermark.unwrap_or(start).max(start)
}

/// How a stored record was sent, for [`derive`]: what gets derived events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A message as a producer sent it to an ordinary topic: its Pub.
    Ordinary,
    /// A delayed or transactional message as sent, waiting in [`DELAY_TOPIC`] or [`HALF_TOPIC`]:
    /// its Pub (in its real topic), its Store in the system topic and, for a delay, its
    /// DelaySchedule.
    Waiting,
}

/// What a stored record is, when a producer sent it as it stands: not the trace batches,
/// retries, dead letters or transaction ops, nor the copies the broker writes itself (a delayed
/// message made visible keeps its due time, a committed one its transaction flag, a retry its
/// first topic, a checked half message its check count), whose own steps say where they came
/// from.
pub fn sent_as(record: &Record<'_>) -> Option<Sent> {
    if record.reconsume_count() > 0 {
        return None;
    }
    let props = record.properties();
    let has = |name: &str| properties::get(props, name).is_some();
    if has(RETRY_TOPIC) {
        return None;
    }
    match record.topic() {
        DELAY_TOPIC if has(REAL_TOPIC) && has(DELIVER_AT) && !has(TRANSACTION) => Some(Sent::Waiting),
        HALF_TOPIC if has(REAL_TOPIC) && has(TRANSACTION) && !has(HALF_CHECKS) => Some(Sent::Waiting),
        topic if meridian_proto::topics::is_system(topic) => None,
        _ if has(REAL_TOPIC) || has(DELIVER_AT) || has(TRANSACTION) => None,
        _ => Some(Sent::Ordinary),
    }
}

/// The property a half message re-stored by a transaction check carries (`transaction.rs`).
const HALF_CHECKS: &str = "%TX_CHECKS";

/// Encodes the events of the messages sent as they stand in `store`'s log in `[from, to)`
/// ([`sent_as`]: a Pub, and for a delayed or half message its Store and DelaySchedule), derived
/// from each stored record (its msgId, topic, queue and offsets, born and store times, keys, tag,
/// producer group, the producer's address), as trace batches of `batch_events`, for traced
/// topics only. Returns the batches (with their event counts) and where the scan stopped.
pub(super) fn derive(
    identity: &Identity,
    batch_events: usize,
    traces: &dyn Fn(&str) -> bool,
    store: &MessageStore,
    from: u64,
    to: u64,
    stats: &ServerStats,
) -> (Vec<(Bytes, usize)>, u64) {
    let mut encoder = BatchEncoder::new(identity, stats, batch_events);
    let end = store.scan_records(from, to, |record, _| {
        let Some(sent) = sent_as(record) else {
            return;
        };
        let props = StoredProperties::read(record.properties());
        // The topic the producer sent to.
        let topic = props.real_topic.unwrap_or(record.topic());
        if !traces(topic) {
            return;
        }
        let Some(msg_id) = record.msg_id() else {
            return;
        };
        let placed = Placed {
            msg_id,
            topic,
            queue_id: record.queue_id(),
            queue_offset: record.queue_offset(),
            commitlog_offset: record.commitlog_offset(),
            store_timestamp: record.store_timestamp(),
        };
        let described = Described {
            keys: props.keys,
            tags: props.tags,
            group: props.producer_group,
            client_host: record.born_host(),
            born_timestamp: record.born_timestamp(),
            body_size: record.body().len() as u32,
            reconsume_count: 0,
        };
        match sent {
            Sent::Ordinary => encoder.stored(&placed, &described, None, None),
            Sent::Waiting => {
                let deliver_at = (record.topic() == DELAY_TOPIC).then(|| props.deliver_at.parse().unwrap_or(0));
                encoder.stored(&placed, &described, Some(record.topic()), deliver_at)
            }
        };
    });
    (encoder.finish(), end)
}

/// The properties of a trace record written when the watermark is `watermark`.
pub fn watermark_properties(watermark: u64) -> Bytes {
    let mut builder = properties::PropertiesBuilder::new();
    builder.system(WATERMARK, &watermark.to_string());
    Bytes::from(builder.finish())
}

/// What the flusher tracks to move the watermark: the log's end as each of the last two rounds
/// began. A message appended before round N began has its Pub row buffered by the time round
/// N + 1 begins (the send path buffers it right after its append returns), so once round N + 1
/// wrote everything it took without a drop, the end read as round N began is covered.
#[derive(Debug, Default)]
pub struct Watermark {
    /// Below this, every stored message's Pub event is in the trace topic.
    pub covered: u64,
    /// The log's end as the previous round began.
    previous_end: u64,
    /// An event was dropped since the last recovery: the watermark stays where it was until the
    /// next one (a restart or promotion), which derives what was lost.
    frozen: bool,
}

impl Watermark {
    /// Starts from `covered` (after a recovery up to it).
    pub fn at(covered: u64) -> Watermark {
        Watermark {
            covered,
            previous_end: covered,
            frozen: false,
        }
    }

    /// A round began with the log ending at `end` and wrote what it took; `lost` when an event
    /// was dropped in it (a dropped Pub keeps the watermark where it is for good, so the next
    /// recovery derives it again).
    pub fn round(&mut self, end: u64, lost: bool) {
        self.frozen |= lost;
        if !self.frozen {
            self.covered = self.covered.max(self.previous_end);
        }
        self.previous_end = end;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_proto::MessageId;
    use meridian_proto::messages::MessageData;
    use meridian_proto::properties::PropertiesBuilder;
    use meridian_proto::trace::{TraceEvent, TraceType, check_event, decode_batch};

    use super::*;
    use crate::store::StoreConfig;
    use crate::trace::TraceEmitter;
    use crate::trace::{Identity, TraceConfig};

    fn emitter() -> TraceEmitter {
        TraceEmitter::with_shards(
            TraceConfig {
                exclude_topics: vec!["quiet".into()],
                ..TraceConfig::default()
            },
            Identity {
                broker_name: "broker-a".into(),
                member: "a-1".into(),
                host: "127.0.0.1:7921".into(),
                idc: "dc1".into(),
            },
            Arc::default(),
            1,
        )
    }

    fn sent(index: usize, extra: Option<(&str, &str)>) -> (String, MessageData) {
        let msg_id = MessageId::generate().to_string();
        let mut props = PropertiesBuilder::new();
        props
            .msg_id(&msg_id)
            .keys(&[format!("order-{index}")])
            .unwrap()
            .tag("created")
            .unwrap();
        props.system(properties::PRODUCER_GROUP, "shop");
        if let Some((name, value)) = extra {
            props.system(name, value);
        }
        let message = MessageData {
            flags: 0,
            born_timestamp: 1_700_000_000_000 + index as i64,
            properties: Bytes::from(props.finish()),
            body: Bytes::from(format!("body-{index}")),
            reconsume_count: 0,
        };
        (msg_id, message)
    }

    fn wait_dispatched(store: &MessageStore) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.dispatched_offset() < store.committed_offset() {
            assert!(std::time::Instant::now() < deadline, "dispatcher stalled");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn records_above_the_watermark_get_a_pub_derived_from_them_and_none_below() {
        let dir = tempfile::tempdir().unwrap();
        let producer: std::net::SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let store = MessageStore::open(
            dir.path(),
            StoreConfig::default(),
            "127.0.0.1:7911".parse().unwrap(),
            Arc::default(),
        )
        .unwrap();
        crate::trace::ensure_topic(&store).unwrap();
        store.create_topic("orders", 2).unwrap();
        store.create_topic("quiet", 1).unwrap();
        let emitter = emitter();

        // A log whose broker never wrote a trace record is scanned from its start.
        assert_eq!(last_watermark(&store), 0);
        for index in 0..3 {
            store.append("orders", None, &[sent(index, None).1], producer).unwrap();
        }
        // The flusher wrote the Pub events of those three, and says so on its record.
        let watermark = store.committed_offset();
        let trace_record = MessageData {
            flags: 0,
            born_timestamp: 1,
            properties: watermark_properties(watermark),
            body: Bytes::new(),
            reconsume_count: 0,
        };
        store.append(TRACE_TOPIC, None, &[trace_record], producer).unwrap();
        // Then the broker died with these in its buffer: two sends, a delayed message made
        // visible in its topic (its own steps say so), an opted-out topic.
        let (first, first_message) = sent(10, None);
        let (second, second_message) = sent(11, None);
        let first_at = store.append("orders", Some(1), &[first_message], producer).unwrap();
        store.append("orders", None, &[second_message], producer).unwrap();
        store
            .append("orders", None, &[sent(12, Some((DELIVER_AT, "5"))).1], producer)
            .unwrap();
        store.append("quiet", None, &[sent(13, None).1], producer).unwrap();
        // A delayed message as sent, waiting in its slot, and a retry's copy waiting there.
        store.ensure_topic(DELAY_TOPIC, 18).unwrap();
        let (delayed, mut delayed_message) = sent(14, None);
        let mut props = PropertiesBuilder::new();
        props
            .copy_except(&delayed_message.properties, &[])
            .system(REAL_TOPIC, "orders")
            .system(DELIVER_AT, "61000");
        delayed_message.properties = Bytes::from(props.finish());
        store
            .append(DELAY_TOPIC, Some(3), &[delayed_message.clone()], producer)
            .unwrap();
        let mut props = PropertiesBuilder::new();
        props
            .copy_except(&delayed_message.properties, &[])
            .system(RETRY_TOPIC, "orders");
        let retry = MessageData {
            properties: Bytes::from(props.finish()),
            ..delayed_message
        };
        store.append(DELAY_TOPIC, Some(3), &[retry], producer).unwrap();
        wait_dispatched(&store);

        assert_eq!(last_watermark(&store), watermark);
        let end = store.committed_offset();
        let (batches, reached) = derive(
            &emitter.identity,
            emitter.config.batch_events,
            &|topic| emitter.traces(topic),
            &store,
            watermark,
            end,
            &ServerStats::default(),
        );
        assert_eq!(reached, end);
        let events: Vec<TraceEvent> = batches
            .into_iter()
            .flat_map(|(body, _)| decode_batch(body).unwrap().events)
            .collect();
        let steps: Vec<(&str, TraceType, &str)> = events
            .iter()
            .map(|event| (event.msg_id.as_str(), event.kind(), event.topic.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                (first.as_str(), TraceType::Pub, "orders"),
                (second.as_str(), TraceType::Pub, "orders"),
                (delayed.as_str(), TraceType::Pub, "orders"),
                (delayed.as_str(), TraceType::Store, DELAY_TOPIC),
                (delayed.as_str(), TraceType::DelaySchedule, DELAY_TOPIC),
            ]
        );
        assert_eq!(events[4].deliver_at_timestamp, 61_000);
        for event in events.iter().filter(|event| event.kind() == TraceType::Pub) {
            check_event(event).unwrap();
            assert_eq!(event.kind(), TraceType::Pub);
            assert_eq!((event.topic.as_str(), event.group.as_str()), ("orders", "shop"));
            assert_eq!(
                (event.tags.as_str(), event.client_host.as_str()),
                ("created", "10.0.0.9:4000")
            );
            assert_eq!(
                (event.broker_name.as_str(), event.broker_member.as_str()),
                ("broker-a", "a-1")
            );
            assert!(event.store_timestamp > 0);
        }
        let placed = &first_at.results[0];
        assert_eq!(events[0].keys, ["order-10"]);
        assert_eq!(events[0].born_timestamp, 1_700_000_000_010);
        assert_eq!(
            (
                events[0].queue_id,
                events[0].queue_offset,
                events[0].commitlog_offset,
                events[0].store_timestamp
            ),
            (
                placed.queue_id,
                placed.queue_offset,
                placed.commitlog_offset,
                placed.store_timestamp
            )
        );
        // From the start of the log: the three below the watermark too.
        let (batches, _) = derive(
            &emitter.identity,
            emitter.config.batch_events,
            &|topic| emitter.traces(topic),
            &store,
            0,
            end,
            &ServerStats::default(),
        );
        assert_eq!(batches.iter().map(|(_, count)| count).sum::<usize>(), 8);
    }

    #[test]
    fn the_watermark_moves_only_past_rounds_that_lost_nothing_and_recovery_runs_once_per_epoch() {
        let mut watermark = Watermark::at(100);
        watermark.round(150, false);
        assert_eq!(
            watermark.covered, 100,
            "the end as this round began is covered by the next"
        );
        watermark.round(200, false);
        assert_eq!(watermark.covered, 150);
        watermark.round(260, true);
        watermark.round(300, false);
        assert_eq!(
            watermark.covered, 150,
            "a dropped event holds it until the next recovery"
        );

        let mut gate = RecoveryGate::default();
        assert!(gate.due(&Role::Master { epoch: 1 }));
        assert!(!gate.due(&Role::Master { epoch: 1 }));
        assert!(!gate.due(&Role::Waiting { epoch: 2 }));
        assert!(gate.due(&Role::Master { epoch: 2 }), "a promotion recovers again");
    }
}
