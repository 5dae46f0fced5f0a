//! The trace records RocketMQ SDKs with tracing on send to `RMQ_SYS_TRACE_TOPIC`
//! (`TraceDataEncoder`): a message body of records separated by [`FIELD_SPLITOR`] (`\u{2}`), each
//! record's fields separated by [`CONTENT_SPLITOR`] (`\u{1}`), the first field naming its type:
//!
//! ```text
//! Pub            time region group topic msgId tags keys storeHost bodyLength costTime msgType [offsetMsgId] success [clientHost]
//! SubBefore      time region group requestId msgId retryTimes keys
//! SubAfter       requestId msgId costTime success keys [contextCode [time group]]
//! EndTransaction time region group topic msgId tags keys storeHost msgType transactionId state fromCheck
//! ```
//!
//! [`parse_records`] reads a body leniently, as `decoderFromTraceDataString` does: unknown types
//! and records too short for their type are skipped (counted in [`Parsed::skipped`]), never a
//! panic. Start there.

/// Separates the fields of a record.
pub const CONTENT_SPLITOR: char = '\u{1}';
/// Separates records.
pub const FIELD_SPLITOR: char = '\u{2}';
/// The topic RocketMQ SDKs send trace records to by default.
pub const RMQ_TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";

/// What a client-side trace record says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStep<'a> {
    /// A producer sent the message.
    Pub {
        /// Whether the send succeeded.
        success: bool,
        /// How long the send took (ms).
        cost_ms: i64,
        /// The broker's offset msgId, when the client recorded it.
        offset_msg_id: Option<&'a str>,
        /// Broker address the message went to.
        store_host: &'a str,
        /// Body length in bytes.
        body_length: i64,
    },
    /// A consumer is about to hand the message to the application.
    SubBefore {
        /// Which delivery attempt (0 first).
        retry_times: i64,
        /// Ties the SubBefore to its SubAfter.
        request_id: &'a str,
    },
    /// The application's listener returned.
    SubAfter {
        /// Whether it consumed successfully.
        success: bool,
        /// How long the listener took (ms).
        cost_ms: i64,
        /// Ties the SubAfter to its SubBefore.
        request_id: &'a str,
    },
    /// A transactional producer decided.
    EndTransaction {
        /// `COMMIT_MESSAGE`, `ROLLBACK_MESSAGE` or `UNKNOW`.
        state: &'a str,
        /// Whether it answered a check-back.
        from_check: bool,
    },
}

/// One trace record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTrace<'a> {
    /// What happened.
    pub step: ClientStep<'a>,
    /// When (ms since the epoch); a SubAfter of an old client carries none (0).
    pub timestamp_ms: i64,
    /// Producer or consumer group; empty when the record does not say.
    pub group: &'a str,
    /// The message's id (its UNIQ_KEY, Meridian's msgId).
    pub msg_id: &'a str,
    /// The message's topic, when the record carries it.
    pub topic: &'a str,
    /// Its keys (space-separated), possibly empty.
    pub keys: &'a str,
    /// Its tag, when the record carries it.
    pub tags: &'a str,
}

/// The records of one trace message body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The records read.
    pub records: Vec<ClientTrace<'a>>,
    /// Records skipped: unknown type, too few fields, or a number that is not one.
    pub skipped: usize,
}

fn number(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

fn boolean(text: &str) -> bool {
    // Java's Boolean.parseBoolean: "true" in any case, anything else false.
    text.trim().eq_ignore_ascii_case("true")
}

fn non_null(text: &str) -> &str {
    // Java appends a null reference as "null".
    if text == "null" { "" } else { text }
}

fn parse_record<'a>(record: &'a str) -> Option<ClientTrace<'a>> {
    let fields: Vec<&'a str> = record.split(CONTENT_SPLITOR).collect();
    let field = |index: usize| fields.get(index).copied();
    match fields[0] {
        "Pub" if fields.len() >= 13 => {
            // 13 fields: no offsetMsgId; 14 or more: offsetMsgId then success.
            let (offset_msg_id, success) = if fields.len() == 13 {
                (None, field(12)?)
            } else {
                (Some(non_null(field(12)?)).filter(|id| !id.is_empty()), field(13)?)
            };
            Some(ClientTrace {
                step: ClientStep::Pub {
                    success: boolean(success),
                    cost_ms: number(field(10)?)?,
                    offset_msg_id,
                    store_host: non_null(field(8)?),
                    body_length: number(field(9)?)?,
                },
                timestamp_ms: number(field(1)?)?,
                group: non_null(field(3)?),
                topic: non_null(field(4)?),
                msg_id: non_null(field(5)?),
                tags: non_null(field(6)?),
                keys: non_null(field(7)?),
            })
        }
        "SubBefore" if fields.len() >= 8 => Some(ClientTrace {
            step: ClientStep::SubBefore {
                retry_times: number(field(6)?)?,
                request_id: field(4)?,
            },
            timestamp_ms: number(field(1)?)?,
            group: non_null(field(3)?),
            topic: "",
            msg_id: non_null(field(5)?),
            tags: "",
            keys: non_null(field(7)?),
        }),
        "SubAfter" if fields.len() >= 6 => {
            let (timestamp_ms, group) = if fields.len() >= 9 {
                (number(field(7)?)?, non_null(field(8)?))
            } else {
                (0, "")
            };
            Some(ClientTrace {
                step: ClientStep::SubAfter {
                    success: boolean(field(4)?),
                    cost_ms: number(field(3)?)?,
                    request_id: field(1)?,
                },
                timestamp_ms,
                group,
                topic: "",
                msg_id: non_null(field(2)?),
                tags: "",
                keys: non_null(field(5)?),
            })
        }
        "EndTransaction" if fields.len() >= 13 => Some(ClientTrace {
            step: ClientStep::EndTransaction {
                state: field(11)?,
                from_check: boolean(field(12)?),
            },
            timestamp_ms: number(field(1)?)?,
            group: non_null(field(3)?),
            topic: non_null(field(4)?),
            msg_id: non_null(field(5)?),
            tags: non_null(field(6)?),
            keys: non_null(field(7)?),
        }),
        _ => None,
    }
}

/// The Meridian trace event of a consumer-side record (SubBefore, SubAfter), as a Meridian SDK
/// would report it, for the timeline of the record's msgId; `None` for the other types (the broker
/// already traces sends and transaction outcomes itself). `topic` is the message's topic, which
/// consumer records do not carry (the caller knows it from the group's subscription); `now_ms`
/// stands in for the time an old client's SubAfter lacks. The event id is derived from the record,
/// so a trace message sent twice indexes once. The result still goes through
/// [`crate::trace::check_event`] where it is reported.
pub fn to_trace_event(record: &ClientTrace<'_>, topic: &str, now_ms: i64) -> Option<crate::trace::TraceEvent> {
    use crate::trace::{TraceEvent, TraceStatus, TraceType};
    let timestamp = if record.timestamp_ms > 0 {
        record.timestamp_ms
    } else {
        now_ms
    };
    let mut event = TraceEvent {
        timestamp,
        msg_id: record.msg_id.to_owned(),
        topic: topic.to_owned(),
        group: record.group.to_owned(),
        // Keys Meridian would refuse are left out rather than losing the step.
        keys: record
            .keys
            .split(' ')
            .filter(|key| !key.is_empty() && crate::validate::validate_key(key).is_ok())
            .map(str::to_owned)
            .collect(),
        ..TraceEvent::default()
    };
    let request_id = match record.step {
        ClientStep::SubBefore {
            retry_times,
            request_id,
        } => {
            event.trace_type = TraceType::SubBefore as i32;
            event.status = TraceStatus::Ok as i32;
            event.consume_start_timestamp = timestamp;
            event.reconsume_count = u32::try_from(retry_times).unwrap_or(0);
            request_id
        }
        ClientStep::SubAfter {
            success,
            cost_ms,
            request_id,
        } => {
            event.trace_type = TraceType::SubAfter as i32;
            event.status = if success {
                TraceStatus::Ok
            } else {
                TraceStatus::RetryLater
            } as i32;
            event.consume_end_timestamp = timestamp;
            event.consume_start_timestamp = timestamp.saturating_sub(cost_ms.max(0));
            event.cost_us = u64::try_from(cost_ms).unwrap_or(0).saturating_mul(1000);
            if !success {
                event.error = "the RocketMQ consumer's listener asked to consume it later".into();
            }
            request_id
        }
        ClientStep::Pub { .. } | ClientStep::EndTransaction { .. } => return None,
    };
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        event.trace_type.to_string().as_str(),
        request_id,
        record.msg_id,
        record.group,
        &timestamp.to_string(),
    ] {
        context.update(part.as_bytes());
        context.update(&[0]);
    }
    event.event_id = crate::auth::to_hex(&context.finish().as_ref()[..16]).to_ascii_uppercase();
    Some(event)
}

/// Reads every record of a trace message body. Records without a message id are skipped too:
/// nothing could find them.
pub fn parse_records(body: &str) -> Parsed<'_> {
    let mut parsed = Parsed::default();
    for record in body.split(FIELD_SPLITOR) {
        if record.trim().is_empty() {
            continue;
        }
        match parse_record(record) {
            Some(trace) if !trace.msg_id.is_empty() => parsed.records.push(trace),
            _ => parsed.skipped += 1,
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Joins fields as `TraceDataEncoder.encoderFromContextBean` does.
    fn record(fields: &[&str], trailing_content_splitor: bool) -> String {
        let mut text = fields.join("\u{1}");
        if trailing_content_splitor {
            text.push('\u{1}');
        }
        text.push('\u{2}');
        text
    }

    #[test]
    fn java_encoded_records_of_every_type_are_read() {
        // One batch as AsyncTraceDispatcher sends it: records concatenated in one body.
        let body = [
            record(
                &[
                    "Pub",
                    "1700000000000",
                    "DefaultRegion",
                    "pg",
                    "orders",
                    "0A0B0C0D00002A9F0000000000000001",
                    "TagA",
                    "k1 k2",
                    "127.0.0.1:10911",
                    "11",
                    "3",
                    "0",
                    "7F00000100002A9F0000000000001234",
                    "true",
                ],
                false,
            ),
            record(
                &[
                    "SubBefore",
                    "1700000000100",
                    "DefaultRegion",
                    "cg",
                    "req-1",
                    "0A0B0C0D00002A9F0000000000000001",
                    "0",
                    "k1 k2",
                ],
                false,
            ),
            // SubAfter of a 4.9+ client: contextCode, then time and group, with the trailing splitor.
            record(
                &[
                    "SubAfter",
                    "req-1",
                    "0A0B0C0D00002A9F0000000000000001",
                    "25",
                    "true",
                    "k1 k2",
                    "0",
                    "1700000000125",
                    "cg",
                ],
                false,
            ),
            // SubAfter of a CLOUD-channel client: no time or group, ends with a content splitor.
            record(&["SubAfter", "req-2", "ID2", "5", "false", "", "1"], true),
            record(
                &[
                    "EndTransaction",
                    "1700000000200",
                    "DefaultRegion",
                    "tx-pg",
                    "orders",
                    "ID3",
                    "null",
                    "",
                    "127.0.0.1:10911",
                    "2",
                    "tx-1",
                    "COMMIT_MESSAGE",
                    "false",
                ],
                false,
            ),
        ]
        .concat();
        let parsed = parse_records(&body);
        assert_eq!(parsed.skipped, 0, "{parsed:?}");
        assert_eq!(parsed.records.len(), 5);
        let publish = &parsed.records[0];
        assert_eq!(
            publish.step,
            ClientStep::Pub {
                success: true,
                cost_ms: 3,
                offset_msg_id: Some("7F00000100002A9F0000000000001234"),
                store_host: "127.0.0.1:10911",
                body_length: 11,
            }
        );
        assert_eq!(
            (
                publish.timestamp_ms,
                publish.group,
                publish.topic,
                publish.tags,
                publish.keys
            ),
            (1_700_000_000_000, "pg", "orders", "TagA", "k1 k2")
        );
        assert_eq!(
            parsed.records[1].step,
            ClientStep::SubBefore {
                retry_times: 0,
                request_id: "req-1"
            }
        );
        assert_eq!(
            (parsed.records[2].timestamp_ms, parsed.records[2].group),
            (1_700_000_000_125, "cg")
        );
        assert_eq!(
            parsed.records[3].step,
            ClientStep::SubAfter {
                success: false,
                cost_ms: 5,
                request_id: "req-2"
            }
        );
        assert_eq!(parsed.records[3].timestamp_ms, 0);
        assert_eq!(parsed.records[4].tags, "", "null is empty");
        assert_eq!(
            parsed.records[4].step,
            ClientStep::EndTransaction {
                state: "COMMIT_MESSAGE",
                from_check: false
            }
        );
    }

    #[test]
    fn old_and_broken_records_are_skipped_or_read_as_java_reads_them() {
        // A 13-field Pub (clients before offsetMsgId) still reads.
        let old = record(
            &["Pub", "1", "r", "pg", "t", "ID", "", "", "h:1", "0", "1", "0", "false"],
            false,
        );
        let parsed = parse_records(&old);
        assert!(matches!(
            parsed.records[0].step,
            ClientStep::Pub {
                success: false,
                offset_msg_id: None,
                ..
            }
        ));
        for broken in [
            record(
                &[
                    "Pub",
                    "not-a-time",
                    "r",
                    "pg",
                    "t",
                    "ID",
                    "",
                    "",
                    "h",
                    "0",
                    "1",
                    "0",
                    "true",
                ],
                false,
            ),
            record(&["SubBefore", "1", "r"], false),
            record(&["Recall", "1", "r", "g", "t", "ID", "true"], false),
            record(&["SubAfter", "req", "", "1", "true", ""], false),
        ] {
            assert_eq!(parse_records(&broken).skipped, 1, "{broken:?}");
        }
        assert_eq!(parse_records(""), Parsed::default());
    }

    #[test]
    fn consumer_records_become_meridian_client_side_events_with_stable_ids() {
        let before = ClientTrace {
            step: ClientStep::SubBefore {
                retry_times: 1,
                request_id: "req-1",
            },
            timestamp_ms: 1_700_000_000_100,
            group: "billing",
            msg_id: "0A0B0C0D00002A9F0000000000000001",
            topic: "",
            keys: "k1 bad\u{7f}key k2",
            tags: "",
        };
        let event = to_trace_event(&before, "orders", 5).unwrap();
        assert_eq!(crate::trace::check_event(&event), Ok(()));
        assert_eq!(event.kind(), crate::trace::TraceType::SubBefore);
        assert_eq!((event.topic.as_str(), event.group.as_str()), ("orders", "billing"));
        assert_eq!(event.reconsume_count, 1);
        assert_eq!(event.keys, ["k1", "k2"]);
        assert_eq!(
            event,
            to_trace_event(&before, "orders", 6).unwrap(),
            "the same record, the same event"
        );
        let after = ClientTrace {
            step: ClientStep::SubAfter {
                success: false,
                cost_ms: 25,
                request_id: "req-1",
            },
            timestamp_ms: 0,
            ..before.clone()
        };
        let event = to_trace_event(&after, "orders", 1_700_000_000_200).unwrap();
        assert_eq!(crate::trace::check_event(&event), Ok(()));
        assert_eq!(event.outcome(), crate::trace::TraceStatus::RetryLater);
        assert_eq!((event.timestamp, event.cost_us), (1_700_000_000_200, 25_000));
        let publish = ClientTrace {
            step: ClientStep::Pub {
                success: true,
                cost_ms: 1,
                offset_msg_id: None,
                store_host: "",
                body_length: 1,
            },
            ..before
        };
        assert_eq!(
            to_trace_event(&publish, "orders", 1),
            None,
            "the broker traces sends itself"
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_without_panicking(text in ".{0,300}", splitors in proptest::collection::vec(0usize..300, 0..20)) {
            let mut text: Vec<char> = text.chars().collect();
            for position in splitors {
                if position < text.len() {
                    text[position] = if position % 2 == 0 { CONTENT_SPLITOR } else { FIELD_SPLITOR };
                }
            }
            let text: String = text.into_iter().collect();
            let parsed = parse_records(&text);
            prop_assert!(parsed.records.iter().all(|record| !record.msg_id.is_empty()));
        }
    }
}
