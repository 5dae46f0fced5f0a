//! Trace events: what happened to a message, step by step, as brokers and clients saw it.
//!
//! Brokers emit the server-side steps ([`TraceType::Pub`], [`TraceType::Store`],
//! [`TraceType::Replicate`], [`TraceType::Deliver`]) for every message, and the steps of its
//! detours when it takes them: a delay ([`TraceType::DelaySchedule`], [`TraceType::DelayFire`]), a
//! retry or dead letter ([`TraceType::Retry`], [`TraceType::DeadLetter`]), a transaction's end
//! ([`TraceType::TxCommit`], [`TraceType::TxRollback`]). The client SDK adds what only it knows
//! ([`TraceType::SubBefore`], [`TraceType::SubAfter`]).
//!
//! `Pub` names the topic the producer sent to; every later broker step names the topic, queue and
//! offset the message was in at that step (a delay slot of `MERIDIAN_DELAY`, the group's retry or
//! dead-letter topic, the half topic), so a timeline shows where the message went. Events travel as the body of
//! ordinary messages on the system topic [`TRACE_TOPIC`], many to a message ([`TraceBatch`]), and
//! the tracer indexes them. The names follow RocketMQ's trace vocabulary (`Pub`, `SubBefore`,
//! `SubAfter`) where it has one.
//!
//! Everything reading trace records off the topic goes through [`decode_batch`], which refuses a
//! malformed record with an error naming the field, so a bad record is counted and skipped, never
//! indexed half-way.

use bytes::Buf;
use prost::Message;

use crate::msgid::MessageId;
use crate::validate;

mod pubs;
pub use pubs::{PubColumns, tag as pub_columns_tag};

/// The system topic trace events are written to. Brokers create it themselves on every broker
/// group; it needs no approval, and ordinary sends to it are refused (trace events reach it only
/// through the broker's own emitter and [`crate::RequestCode::TraceReport`]).
pub const TRACE_TOPIC: &str = "MERIDIAN_TRACE";
/// Queues of [`TRACE_TOPIC`] on each broker group.
pub const TRACE_TOPIC_QUEUES: u32 = 4;
/// Consumer groups whose name starts with this may read [`TRACE_TOPIC`] without approval (one
/// group per tracer index, e.g. `MERIDIAN_TRACER` and `MERIDIAN_TRACER-standby`).
pub const TRACER_GROUP_PREFIX: &str = "MERIDIAN_TRACER";
/// The consumer group a tracer uses unless told otherwise.
pub const DEFAULT_TRACER_GROUP: &str = "MERIDIAN_TRACER";
/// Most events a client may put in one [`crate::RequestCode::TraceReport`].
pub const MAX_REPORT_EVENTS: usize = 4096;

/// Whether `topic` is a system topic: no approval, no ordinary producers.
pub fn is_system_topic(topic: &str) -> bool {
    topic == TRACE_TOPIC
}

/// Whether consumer group `group` may read the trace topic without approval.
pub fn is_tracer_group(group: &str) -> bool {
    group.starts_with(TRACER_GROUP_PREFIX)
}

/// One step of a message's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TraceType {
    /// Not a type: a record that leaves the type out is malformed.
    Unspecified = 0,
    /// A producer's send reached the broker (born time, producer group, client host).
    Pub = 1,
    /// The broker appended the message to its commitlog (offsets, store time).
    Store = 2,
    /// The message reached the replicas its group's ack policy needs.
    Replicate = 3,
    /// The broker handed the message to a consumer group in a pull.
    Deliver = 4,
    /// A consumer is about to run its handler on the message.
    SubBefore = 5,
    /// A consumer's handler finished (cost and result).
    SubAfter = 6,
    /// A consumer group failed the message and the broker sent it back: a copy waits in a delay
    /// slot until `deliver_at_timestamp`, then goes to the group's retry topic (also written when
    /// an operator resends a dead letter).
    Retry = 7,
    /// The group failed the message more times than it allows: the copy went to its dead-letter
    /// topic.
    DeadLetter = 8,
    /// A delayed message was stored in a delay slot, due at `deliver_at_timestamp`.
    DelaySchedule = 9,
    /// A delayed message (or a retry) was due and became visible in its real topic; `cost_us` is
    /// how late it was.
    DelayFire = 10,
    /// A transactional message was committed and appended to its real topic.
    TxCommit = 11,
    /// A transactional message was rolled back (by its producer, or after every check-back).
    TxRollback = 12,
    /// The message was written to the Parquet archive (defined; not emitted yet).
    ArchiveWrite = 13,
}

impl TraceType {
    /// Every real type, in the order of a message's life: a delay or a transaction's end comes
    /// before the delivery it leads to, a retry after the consumption that failed.
    pub const ALL: [TraceType; 13] = [
        TraceType::Pub,
        TraceType::Store,
        TraceType::Replicate,
        TraceType::DelaySchedule,
        TraceType::TxCommit,
        TraceType::TxRollback,
        TraceType::DelayFire,
        TraceType::Deliver,
        TraceType::SubBefore,
        TraceType::SubAfter,
        TraceType::Retry,
        TraceType::DeadLetter,
        TraceType::ArchiveWrite,
    ];

    /// Place in a message's life ([`TraceType::ALL`]): orders steps that share a millisecond.
    pub fn life_order(self) -> usize {
        TraceType::ALL
            .iter()
            .position(|kind| *kind == self)
            .unwrap_or(TraceType::ALL.len())
    }

    /// RocketMQ-style name, as in JSON and tables: `Pub`, `Store`, `SubBefore`, ...
    pub fn name(self) -> &'static str {
        match self {
            TraceType::Unspecified => "Unspecified",
            TraceType::Pub => "Pub",
            TraceType::Store => "Store",
            TraceType::Replicate => "Replicate",
            TraceType::Deliver => "Deliver",
            TraceType::SubBefore => "SubBefore",
            TraceType::SubAfter => "SubAfter",
            TraceType::Retry => "Retry",
            TraceType::DeadLetter => "DeadLetter",
            TraceType::DelaySchedule => "DelaySchedule",
            TraceType::DelayFire => "DelayFire",
            TraceType::TxCommit => "TxCommit",
            TraceType::TxRollback => "TxRollback",
            TraceType::ArchiveWrite => "ArchiveWrite",
        }
    }

    /// The type named `name` (as [`TraceType::name`] writes it).
    pub fn from_name(name: &str) -> Option<TraceType> {
        TraceType::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether clients may report this type ([`crate::RequestCode::TraceReport`]); the rest only
    /// brokers (and the archiver) write.
    pub fn is_client_side(self) -> bool {
        matches!(self, TraceType::SubBefore | TraceType::SubAfter)
    }
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TraceStatus {
    /// It succeeded (or, for `SubBefore`, it started).
    Ok = 0,
    /// It failed; `error_code` and `error` say why.
    Failed = 1,
    /// The consumer's handler asked for the message again later.
    RetryLater = 2,
}

impl TraceStatus {
    /// Lowercase name for JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            TraceStatus::Ok => "ok",
            TraceStatus::Failed => "failed",
            TraceStatus::RetryLater => "retry_later",
        }
    }
}

/// What a broker was doing when it emitted an event: enough to tell "the message was slow" from
/// "the broker was busy".
#[derive(Clone, PartialEq, Message)]
pub struct ServerStats {
    /// Messages stored per second over the last second.
    #[prost(double, tag = "1")]
    pub send_tps: f64,
    /// Messages returned to consumers per second over the last second.
    #[prost(double, tag = "2")]
    pub pull_tps: f64,
    /// One-minute load average divided by the number of CPUs (1.0: every CPU busy).
    #[prost(double, tag = "3")]
    pub cpu_load: f64,
    /// Share of the data directory's filesystem in use, 0.0 to 1.0.
    #[prost(double, tag = "4")]
    pub disk_used_ratio: f64,
    /// Mean duration of a commitlog sync over the last second, in microseconds.
    #[prost(uint64, tag = "5")]
    pub flush_latency_us: u64,
    /// Mean time from store to the ack policy being met over the last second, in microseconds.
    #[prost(uint64, tag = "6")]
    pub replication_latency_us: u64,
}

/// One trace event. Field names follow RocketMQ's trace context where it has one.
#[derive(Clone, PartialEq, Message)]
pub struct TraceEvent {
    /// Unique id of this event (32 hex digits, the [`MessageId`] format): the tracer de-duplicates
    /// by it.
    #[prost(string, tag = "1")]
    pub event_id: String,
    /// The step.
    #[prost(enumeration = "TraceType", tag = "2")]
    pub trace_type: i32,
    /// When the step happened (Unix ms): orders a timeline and picks the tracer's day partition.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
    /// The message's id (client-generated, or broker-assigned when the client sent none).
    #[prost(string, tag = "4")]
    pub msg_id: String,
    /// Topic of the message.
    #[prost(string, tag = "5")]
    pub topic: String,
    /// Queue it is in.
    #[prost(uint32, tag = "6")]
    pub queue_id: u32,
    /// Its position in the queue.
    #[prost(uint64, tag = "7")]
    pub queue_offset: u64,
    /// Its byte position in the broker group's commitlog (with `broker_name`: the offset id).
    #[prost(uint64, tag = "8")]
    pub commitlog_offset: u64,
    /// Message keys.
    #[prost(string, repeated, tag = "9")]
    pub keys: Vec<String>,
    /// Message tag (empty: none).
    #[prost(string, tag = "10")]
    pub tags: String,
    /// Producer group (Pub, Store, TxCommit, TxRollback) or consumer group (Deliver, SubBefore,
    /// SubAfter, Retry, DeadLetter).
    #[prost(string, tag = "11")]
    pub group: String,
    /// Id of the client instance (consumers' client id).
    #[prost(string, tag = "12")]
    pub client_id: String,
    /// The client's address as the broker saw it (`ip:port`).
    #[prost(string, tag = "13")]
    pub client_host: String,
    /// Broker group that stored or served the message.
    #[prost(string, tag = "14")]
    pub broker_name: String,
    /// The member of the group that emitted the event (master or slave).
    #[prost(string, tag = "15")]
    pub broker_member: String,
    /// The broker's advertised address.
    #[prost(string, tag = "16")]
    pub broker_host: String,
    /// Data center where the step happened (the broker's, or the client's when it knows it).
    #[prost(string, tag = "17")]
    pub idc: String,
    /// When the producer created the message (Unix ms).
    #[prost(int64, tag = "18")]
    pub born_timestamp: i64,
    /// When the broker stored it (Unix ms).
    #[prost(int64, tag = "19")]
    pub store_timestamp: i64,
    /// When its ack policy was met (Unix ms; Replicate).
    #[prost(int64, tag = "20")]
    pub replicated_timestamp: i64,
    /// When the broker handed it to a consumer (Unix ms; Deliver).
    #[prost(int64, tag = "21")]
    pub delivered_timestamp: i64,
    /// When the consumer's handler started (Unix ms; SubBefore, SubAfter).
    #[prost(int64, tag = "22")]
    pub consume_start_timestamp: i64,
    /// When the consumer's handler finished (Unix ms; SubAfter).
    #[prost(int64, tag = "23")]
    pub consume_end_timestamp: i64,
    /// Time the step took, in microseconds (SubAfter: the handler; Replicate: store to ack).
    #[prost(uint64, tag = "24")]
    pub cost_us: u64,
    /// How the step ended.
    #[prost(enumeration = "TraceStatus", tag = "25")]
    pub status: i32,
    /// The [`crate::ErrorCode`] of a failed step (0: none).
    #[prost(uint32, tag = "26")]
    pub error_code: u32,
    /// What went wrong, for people (empty when nothing did).
    #[prost(string, tag = "27")]
    pub error: String,
    /// Body size in bytes.
    #[prost(uint32, tag = "28")]
    pub body_size: u32,
    /// Times the message was consumed again before this step.
    #[prost(uint32, tag = "29")]
    pub reconsume_count: u32,
    /// SDK version of the client involved (client-side events).
    #[prost(string, tag = "30")]
    pub sdk_version: String,
    /// The emitting broker's load when the event was emitted (broker-side events).
    #[prost(message, optional, tag = "31")]
    pub server_stats: Option<ServerStats>,
    /// When a delayed message or a retry is due (Unix ms; DelaySchedule, DelayFire, Retry).
    #[prost(int64, tag = "32")]
    pub deliver_at_timestamp: i64,
}

impl TraceEvent {
    /// The step, [`TraceType::Unspecified`] for an unknown value.
    pub fn kind(&self) -> TraceType {
        TraceType::try_from(self.trace_type).unwrap_or(TraceType::Unspecified)
    }

    /// How the step ended ([`TraceStatus::Failed`] for an unknown value).
    pub fn outcome(&self) -> TraceStatus {
        TraceStatus::try_from(self.status).unwrap_or(TraceStatus::Failed)
    }

    /// The broker-assigned offset id of the message, when the event names where it is stored.
    pub fn offset_id(&self) -> Option<OffsetId> {
        (!self.broker_name.is_empty() && matches!(self.kind(), TraceType::Store | TraceType::Pub)).then(|| OffsetId {
            broker_name: self.broker_name.clone(),
            commitlog_offset: self.commitlog_offset,
        })
    }
}

/// The body of one message on [`TRACE_TOPIC`], and of a [`crate::RequestCode::TraceReport`].
#[derive(Clone, PartialEq, Message)]
pub struct TraceBatch {
    /// The events, in the order they were emitted.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<TraceEvent>,
    /// Pub events of the messages a broker stored, in columns (how brokers write them: a fifth
    /// of the bytes); [`decode_batch`] appends them to `events`. Never in a client's report.
    #[prost(message, optional, tag = "2")]
    pub pubs: Option<PubColumns>,
}

impl From<Vec<TraceEvent>> for TraceBatch {
    fn from(events: Vec<TraceEvent>) -> TraceBatch {
        TraceBatch { events, pubs: None }
    }
}

/// Why a trace record or lookup input is refused. The `Display` form names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The bytes are not a prost-encoded [`TraceBatch`].
    #[error("trace record is not a valid TraceBatch: {0}")]
    Decode(String),
    /// One event breaks a rule.
    #[error("trace event {index} ({event_id:?}) is invalid: {reason}")]
    Event {
        /// Position in its batch.
        index: usize,
        /// Its event id as given.
        event_id: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A batch holds no events.
    #[error("trace record holds no events")]
    Empty,
    /// An offset id that does not parse.
    #[error(
        "offset id {0:?} is invalid: expected BROKER_NAME:OFFSET with OFFSET as 16 hex digits, e.g. broker-a:00000000000001F4"
    )]
    OffsetId(String),
}

/// Checks one event: the fields every event needs are there and valid. Returns the rule broken.
pub fn check_event(event: &TraceEvent) -> Result<(), String> {
    MessageId::parse(&event.event_id).map_err(|_| "event_id must be 32 hex digits".to_owned())?;
    let kind = TraceType::try_from(event.trace_type)
        .ok()
        .filter(|kind| *kind != TraceType::Unspecified)
        .ok_or_else(|| format!("trace_type {} is not a known type", event.trace_type))?;
    MessageId::parse(&event.msg_id).map_err(|_| format!("msg_id {:?} must be 32 hex digits", event.msg_id))?;
    crate::topics::validate_consumable(&event.topic).map_err(|error| error.to_string())?;
    if event.timestamp <= 0 {
        return Err(format!("timestamp {} must be Unix ms after 1970", event.timestamp));
    }
    TraceStatus::try_from(event.status).map_err(|_| format!("status {} is not a known status", event.status))?;
    for key in &event.keys {
        validate::validate_key(key).map_err(|error| error.to_string())?;
    }
    if !event.tags.is_empty() {
        validate::validate_tag(&event.tags).map_err(|error| error.to_string())?;
    }
    if !event.group.is_empty() {
        validate::validate_group(&event.group).map_err(|error| error.to_string())?;
    }
    if kind != TraceType::SubBefore && kind != TraceType::SubAfter && event.broker_name.is_empty() {
        return Err(format!("{} events need a broker_name", kind.name()));
    }
    Ok(())
}

/// Decodes and checks a trace record: a [`TraceBatch`] of at least one event (its
/// [`PubColumns`] expanded into events), each passing [`check_event`]. One bad event refuses the whole record (it was written by one emitter, so the
/// rest is suspect too).
pub fn decode_batch(bytes: impl Buf) -> Result<TraceBatch, TraceError> {
    let mut batch = TraceBatch::decode(bytes).map_err(|error| TraceError::Decode(error.to_string()))?;
    if let Some(pubs) = batch.pubs.take() {
        batch.events.extend(pubs.expand()?);
    }
    if batch.events.is_empty() {
        return Err(TraceError::Empty);
    }
    for (index, event) in batch.events.iter().enumerate() {
        check_event(event).map_err(|reason| TraceError::Event {
            index,
            event_id: event.event_id.clone(),
            reason,
        })?;
    }
    Ok(batch)
}

/// A message's broker-assigned id: its broker group and commitlog offset, written
/// `broker-a:00000000000001F4`. Replicas hold the same bytes at the same offsets, so it names the
/// message whichever member serves it (RocketMQ's offset msgId names one host instead).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OffsetId {
    /// Broker group.
    pub broker_name: String,
    /// Commitlog offset.
    pub commitlog_offset: u64,
}

impl OffsetId {
    /// Parses `BROKER_NAME:OFFSET` (OFFSET as 16 hex digits).
    pub fn parse(text: &str) -> Result<OffsetId, TraceError> {
        let invalid = || TraceError::OffsetId(text.to_owned());
        let (broker_name, offset) = text.rsplit_once(':').ok_or_else(invalid)?;
        validate::validate_group(broker_name).map_err(|_| invalid())?;
        if offset.len() != 16 || !offset.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let commitlog_offset = u64::from_str_radix(offset, 16).map_err(|_| invalid())?;
        Ok(OffsetId {
            broker_name: broker_name.to_owned(),
            commitlog_offset,
        })
    }
}

impl std::fmt::Display for OffsetId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}:{:016X}", self.broker_name, self.commitlog_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event_strategy() -> impl Strategy<Value = TraceEvent> {
        (
            (
                1usize..=13,
                any::<i64>().prop_map(|ts| ts.rem_euclid(1 << 45) + 1),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
            ),
            (
                proptest::collection::vec("[a-z0-9_-]{1,20}", 0..4),
                "[a-z]{0,10}",
                "[a-z_-]{0,12}",
                "[a-z0-9@.]{0,20}",
            ),
            (
                any::<i64>(),
                any::<i64>(),
                any::<i64>(),
                any::<u64>(),
                0i32..3,
                any::<u32>(),
                any::<u32>(),
            ),
            proptest::option::of((any::<f64>(), any::<f64>(), any::<u64>())),
        )
            .prop_map(
                |(
                    (kind, timestamp, queue_id, queue_offset, commitlog_offset),
                    (keys, tags, group, client_id),
                    (born, stored, delivered, cost_us, status, body_size, reconsume_count),
                    stats,
                )| TraceEvent {
                    event_id: MessageId::generate().to_string(),
                    trace_type: TraceType::ALL[kind - 1] as i32,
                    timestamp,
                    msg_id: MessageId::generate().to_string(),
                    topic: "orders".into(),
                    queue_id,
                    queue_offset,
                    commitlog_offset,
                    keys,
                    tags,
                    group,
                    client_id,
                    client_host: "10.0.0.1:5000".into(),
                    broker_name: "broker-a".into(),
                    broker_member: "a-0".into(),
                    broker_host: "10.0.0.2:7911".into(),
                    idc: "dc1".into(),
                    born_timestamp: born,
                    store_timestamp: stored,
                    replicated_timestamp: stored,
                    delivered_timestamp: delivered,
                    consume_start_timestamp: delivered,
                    consume_end_timestamp: delivered,
                    cost_us,
                    status,
                    error_code: 0,
                    error: String::new(),
                    body_size,
                    reconsume_count,
                    sdk_version: crate::SDK_VERSION.into(),
                    deliver_at_timestamp: delivered,
                    server_stats: stats.map(|(send_tps, cpu_load, flush_latency_us)| ServerStats {
                        send_tps,
                        pull_tps: 0.0,
                        cpu_load,
                        disk_used_ratio: 0.5,
                        flush_latency_us,
                        replication_latency_us: 7,
                    }),
                },
            )
    }

    proptest! {
        #[test]
        fn batches_round_trip_and_pass_their_own_checks(events in proptest::collection::vec(event_strategy(), 1..16)) {
            let batch = TraceBatch::from(events);
            let bytes = batch.encode_to_vec();
            let decoded = decode_batch(bytes.as_slice()).unwrap();
            // NaN != NaN: compare the encodings, which are equal bit for bit.
            prop_assert_eq!(decoded.encode_to_vec(), bytes);
        }

        #[test]
        fn offset_ids_round_trip(broker in "[A-Za-z0-9_-]{1,40}", offset in any::<u64>()) {
            let id = OffsetId { broker_name: broker, commitlog_offset: offset };
            prop_assert_eq!(OffsetId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn garbage_never_panics_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_batch(bytes.as_slice());
        }
    }

    fn valid() -> TraceEvent {
        TraceEvent {
            event_id: MessageId::generate().to_string(),
            trace_type: TraceType::Store as i32,
            timestamp: 1_795_631_410_823,
            msg_id: MessageId::generate().to_string(),
            topic: "orders".into(),
            broker_name: "broker-a".into(),
            ..TraceEvent::default()
        }
    }

    #[test]
    fn malformed_records_are_refused_naming_the_field() {
        let reason = |event: TraceEvent| {
            decode_batch(TraceBatch::from(vec![valid(), event]).encode_to_vec().as_slice())
                .unwrap_err()
                .to_string()
        };
        assert!(
            reason(TraceEvent {
                event_id: "x".into(),
                ..valid()
            })
            .contains("event 1 (\"x\") is invalid: event_id")
        );
        assert!(
            reason(TraceEvent {
                trace_type: 0,
                ..valid()
            })
            .contains("trace_type 0")
        );
        assert!(
            reason(TraceEvent {
                trace_type: 99,
                ..valid()
            })
            .contains("trace_type 99")
        );
        assert!(
            reason(TraceEvent {
                msg_id: "nope".into(),
                ..valid()
            })
            .contains("msg_id \"nope\"")
        );
        assert!(
            reason(TraceEvent {
                topic: "a b".into(),
                ..valid()
            })
            .contains("topic name \"a b\"")
        );
        assert!(
            reason(TraceEvent {
                timestamp: 0,
                ..valid()
            })
            .contains("timestamp 0")
        );
        assert!(
            reason(TraceEvent {
                keys: vec!["a b".into()],
                ..valid()
            })
            .contains("message key")
        );
        assert!(
            reason(TraceEvent {
                broker_name: String::new(),
                ..valid()
            })
            .contains("Store events need a broker_name")
        );
        assert!(reason(TraceEvent { status: 7, ..valid() }).contains("status 7"));
        assert_eq!(
            decode_batch(TraceBatch::default().encode_to_vec().as_slice()),
            Err(TraceError::Empty)
        );
        assert!(matches!(decode_batch(&b"\xff\xff\xff"[..]), Err(TraceError::Decode(_))));
        let client = TraceEvent {
            trace_type: TraceType::SubAfter as i32,
            broker_name: String::new(),
            ..valid()
        };
        assert!(check_event(&client).is_ok(), "client events need no broker");
    }

    #[test]
    fn offset_ids_refuse_what_is_not_one() {
        for bad in [
            "",
            "broker-a",
            "broker-a:1F4",
            ":00000000000001F4",
            "a b:00000000000001F4",
            "broker-a:000000000000001G",
        ] {
            let error = OffsetId::parse(bad).unwrap_err().to_string();
            assert!(error.contains("BROKER_NAME:OFFSET"), "{bad}: {error}");
        }
        assert_eq!(
            OffsetId::parse("broker-a:00000000000001F4").unwrap(),
            OffsetId {
                broker_name: "broker-a".into(),
                commitlog_offset: 500
            }
        );
    }

    #[test]
    fn type_names_round_trip() {
        for kind in TraceType::ALL {
            assert_eq!(TraceType::from_name(kind.name()), Some(kind));
        }
        assert!(TraceType::SubAfter.is_client_side() && !TraceType::Store.is_client_side());
    }
}
