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

mod event;
mod pubs;
pub use event::{OffsetId, ServerStats, TraceError, TraceEvent, TraceStatus, TraceType};
pub use pubs::{PubColumns, tag as pub_columns_tag};

/// The system topic trace events are written to (defined with the other system topics).
pub use crate::topics::TRACE_TOPIC;
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
