//! Retries and dead letters.
//!
//! A consumer that fails a message sends it back ([`send_back`]). The broker copies it, with its
//! reconsume count one higher and its first topic in [`RETRY_TOPIC`], onto the group's retry topic
//! `%RETRY%<group>` through a delay slot (10 s, 30 s, 1 m, 2 m, ... growing with the count, or the
//! delay level the consumer asked for), so only that group sees it again. Once the count passes
//! the group's maximum (its approved `max_retries`, [`DEFAULT_MAX_RETRIES`] without one), the copy
//! goes to the group's dead-letter topic `%DLQ%<group>` instead, where nothing consumes it until an
//! operator resends it ([`resend_dead_letters`], `meridian dlq resend`).
//!
//! A message keeps its id, keys, tag, properties, born time and born host through every move, so
//! its trace and its dead letter tell its whole history.

use bytes::Bytes;
use meridian_proto::delay::{self, LEVELS_MS};
use meridian_proto::messages::{DeadLetterResendRequest, DeadLetterResendResponse, SendBackRequest, SendBackResponse};
use meridian_proto::properties::{DELAY, DELIVER_AT, PropertiesBuilder, REAL_QUEUE, REAL_TOPIC, RETRY_TOPIC};
use meridian_proto::record::Record;
use meridian_proto::time::now_millis;
use meridian_proto::topics::{self, DELAY_TOPIC, TopicKind};
use meridian_proto::trace::TraceType;
use meridian_proto::{properties, validate};

use crate::error::{BrokerError, Result};
use crate::metrics::OutcomeLabels;
use crate::schedule::copy_message;
use crate::state::BrokerState;
use crate::store::AppendRequest;
use crate::trace::Step;

/// Deliveries of one message a group gets before it is dead-lettered, unless the group says.
pub const DEFAULT_MAX_RETRIES: u32 = 16;
/// Delay level of the first retry (10 s); each further retry takes the next level, up to 2 h.
const FIRST_RETRY_LEVEL: usize = 3;

/// The most times `group` may fail one message before it is dead-lettered.
pub fn max_retries(state: &BrokerState, group: &str) -> u32 {
    state
        .governance
        .as_ref()
        .and_then(|governance| governance.group(group))
        .map(|grant| grant.max_retries)
        .filter(|max| *max > 0)
        .unwrap_or(DEFAULT_MAX_RETRIES)
}

/// Creates `group`'s retry and dead-letter topics if this broker lacks them.
pub fn ensure_group_topics(state: &BrokerState, group: &str) -> Result<()> {
    state
        .store
        .ensure_topic(&topics::retry_topic(group), topics::GROUP_TOPIC_QUEUES)?;
    state
        .store
        .ensure_topic(&topics::dlq_topic(group), topics::GROUP_TOPIC_QUEUES)
}

/// The delay before retry number `reconsume_count` (1 for the first).
fn retry_delay_ms(reconsume_count: u32, delay_level: u32) -> Result<i64> {
    if delay_level > 0 {
        return Ok(delay::level_delay_ms(&delay_level.to_string())?);
    }
    let level = (FIRST_RETRY_LEVEL + reconsume_count.saturating_sub(1) as usize).min(LEVELS_MS.len());
    Ok(LEVELS_MS[level - 1])
}

/// Properties of a retried or dead-lettered copy: the message's own, its first topic, and for a
/// retry the delay slot routing to the retry topic.
fn copy_properties(record: &Record<'_>, first_topic: &str, retry: Option<(&str, i64)>) -> Bytes {
    let mut builder = PropertiesBuilder::new();
    builder.copy_except(
        record.properties(),
        &[RETRY_TOPIC, REAL_TOPIC, REAL_QUEUE, DELIVER_AT, DELAY],
    );
    builder.system(RETRY_TOPIC, first_topic);
    if let Some((retry_topic, deliver_at)) = retry {
        builder.system(REAL_TOPIC, retry_topic);
        builder.system(REAL_QUEUE, "0");
        builder.system(DELIVER_AT, &deliver_at.to_string());
    }
    Bytes::from(builder.finish())
}

/// What [`send_back`] appended, for the caller to wait on.
pub struct SentBack {
    /// The answer for the consumer.
    pub response: SendBackResponse,
    /// Commitlog offset just past the copy: acknowledge once it is durable.
    pub end_offset: u64,
}

/// A consumer failed a message: copy it to the group's retry topic (through a delay slot) or,
/// past the group's maximum, to its dead-letter topic.
pub fn send_back(state: &BrokerState, request: &SendBackRequest) -> Result<SentBack> {
    state.check_group_topic(&request.group, &request.topic)?;
    state.check_master()?;
    let bytes = state.store.read_record(request.commitlog_offset)?;
    let record = Record::parse(&bytes).map_err(|error| BrokerError::Corrupt(error.to_string()))?;
    if record.msg_id() != Some(request.msg_id.as_str()) || record.topic() != request.topic {
        return Err(BrokerError::Refused(format!(
            "the record at commitlog offset {} is not message {} of topic {:?}; send back the offset the message was delivered with",
            request.commitlog_offset, request.msg_id, request.topic
        )));
    }
    let first_topic = match topics::kind(record.topic()) {
        TopicKind::Retry(_) => properties::get(record.properties(), RETRY_TOPIC).unwrap_or(record.topic()),
        _ => record.topic(),
    }
    .to_owned();
    let reconsume_count = record.reconsume_count() + 1;
    let max = max_retries(state, &request.group);
    ensure_group_topics(state, &request.group)?;
    let (topic, queue_id, properties, response) = if reconsume_count > max {
        let topic = topics::dlq_topic(&request.group);
        let response = SendBackResponse {
            topic: topic.clone(),
            dead_lettered: true,
            deliver_at: 0,
            reconsume_count,
        };
        (topic, 0, copy_properties(&record, &first_topic, None), response)
    } else {
        let retry_topic = topics::retry_topic(&request.group);
        let now = now_millis();
        let deliver_at = now + retry_delay_ms(reconsume_count, request.delay_level)?;
        let (slot, _) = delay::slot_for(deliver_at, now).expect("a retry delay is at least a second");
        let properties = copy_properties(&record, &first_topic, Some((&retry_topic, deliver_at)));
        let response = SendBackResponse {
            topic: retry_topic,
            dead_lettered: false,
            deliver_at,
            reconsume_count,
        };
        (DELAY_TOPIC.to_owned(), slot, properties, response)
    };
    let message = copy_message(&record, properties, reconsume_count);
    let appended = state.store.append(
        &topic,
        Some(queue_id),
        std::slice::from_ref(&message),
        record.born_host(),
    )?;
    state.replication.notify_appended();
    let failure = response
        .dead_lettered
        .then(|| format!("failed {reconsume_count} times, more than the group's max_retries of {max}"));
    state.trace.step(
        &record,
        Step {
            kind: if response.dead_lettered {
                TraceType::DeadLetter
            } else {
                TraceType::Retry
            },
            user_topic: &first_topic,
            topic: &topic,
            placed: appended.results.first(),
            group: &request.group,
            deliver_at: response.deliver_at,
            error: failure.as_deref().unwrap_or_default(),
        },
    );
    let outcome = if response.dead_lettered { "dead_letter" } else { "retry" };
    state.metrics.sent_back.get_or_create(&OutcomeLabels { outcome }).inc();
    if response.dead_lettered {
        tracing::info!(
            group = request.group,
            msg_id = request.msg_id,
            topic = first_topic,
            reconsume_count,
            max_retries = max,
            "message dead-lettered"
        );
    }
    Ok(SentBack {
        response,
        end_offset: appended.end_offset,
    })
}

/// Copies dead letters of a group back onto its retry topic, their reconsume count at 0; returns
/// the commitlog offset past the copies (0 when none) with the answer.
pub fn resend_dead_letters(
    state: &BrokerState,
    request: &DeadLetterResendRequest,
) -> Result<(DeadLetterResendResponse, u64)> {
    validate::validate_group(&request.group)?;
    state.check_master()?;
    if let Some(governance) = &state.governance
        && governance.group(&request.group).is_none()
    {
        return Err(BrokerError::UnknownGroup {
            group: request.group.clone(),
            hint: "it is not an approved consumer group; `meridian group list` shows them".into(),
        });
    }
    let dlq = topics::dlq_topic(&request.group);
    let Ok(queue) = state.store.consume_queue(&dlq, 0) else {
        return Ok((
            DeadLetterResendResponse {
                resent: 0,
                missing: request.msg_ids.clone(),
            },
            0,
        ));
    };
    let mut wanted: std::collections::BTreeSet<&str> = request.msg_ids.iter().map(String::as_str).collect();
    let all = wanted.is_empty();
    let mut copies = Vec::new();
    let mut offset = queue.min_offset();
    while offset < queue.max_offset() {
        let entries = state.store.read_entries(&queue, offset, 256, 8 << 20)?;
        if entries.is_empty() {
            break;
        }
        offset += entries.len() as u64;
        for entry in entries {
            let bytes = state.store.read_record(entry.commitlog_offset)?;
            let record = Record::parse(&bytes).map_err(|error| BrokerError::Corrupt(error.to_string()))?;
            let msg_id = record.msg_id().unwrap_or_default();
            if !all && !wanted.remove(msg_id) {
                continue;
            }
            let first_topic = properties::get(record.properties(), RETRY_TOPIC).unwrap_or(record.topic());
            let properties = copy_properties(&record, first_topic, None);
            copies.push((copy_message(&record, properties, 0), record.born_host(), bytes.clone()));
        }
    }
    let retry = topics::retry_topic(&request.group);
    ensure_group_topics(state, &request.group)?;
    let requests: Vec<AppendRequest<'_>> = copies
        .iter()
        .map(|(message, born_host, _)| AppendRequest {
            topic: &retry,
            queue_id: Some(0),
            messages: std::slice::from_ref(message),
            born_host: *born_host,
        })
        .collect();
    let mut end_offset = 0;
    for (outcome, (_, _, dead_letter)) in state.store.append_many(&requests).into_iter().zip(&copies) {
        let appended = outcome?;
        end_offset = end_offset.max(appended.end_offset);
        let record = Record::parse(dead_letter).map_err(|error| BrokerError::Corrupt(error.to_string()))?;
        let first_topic = properties::get(record.properties(), RETRY_TOPIC).unwrap_or(record.topic());
        state.trace.step(
            &record,
            Step {
                kind: TraceType::Retry,
                user_topic: first_topic,
                topic: &retry,
                placed: appended.results.first(),
                group: &request.group,
                deliver_at: 0,
                error: "",
            },
        );
    }
    state.replication.notify_appended();
    tracing::info!(
        group = request.group,
        resent = copies.len(),
        "dead letters resent to the retry topic"
    );
    Ok((
        DeadLetterResendResponse {
            resent: copies.len() as u32,
            missing: wanted.into_iter().map(str::to_owned).collect(),
        },
        end_offset,
    ))
}
