//! The trace event and its parts: the step ([`TraceType`]), its outcome ([`TraceStatus`]), the
//! broker's figures ([`ServerStats`]), the broker-assigned [`OffsetId`], and why a record or
//! lookup is refused ([`TraceError`]). A leaf of [`super`]: the columnar Pub encoding
//! ([`super::PubColumns`]) builds on it.

use prost::Message;

use crate::validate;

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
    /// Unique id of this event (32 hex digits, the [`crate::msgid::MessageId`] format): the tracer de-duplicates
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

/// Why a trace record or lookup input is refused. The `Display` form names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The bytes are not a prost-encoded [`super::TraceBatch`].
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
