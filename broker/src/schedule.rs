//! Delayed delivery and moving stored messages between topics.
//!
//! On the send path, [`rehome`] turns a message with a delay level or delivery time into a message
//! of [`DELAY_TOPIC`], in the slot [`meridian_proto::delay::slot_for`] picks, and a transactional
//! message into a half message of [`HALF_TOPIC`]; either remembers its real topic and queue in
//! properties. The producer's acknowledgement covers the moved message exactly as it would the
//! original (flush and replication included), so a delayed message is as durable as any other.
//!
//! On the master, [`run`] looks at the head of every delay slot every [`TICK`]: what is due moves
//! down to a smaller slot or, once its delivery time has come, is appended to its real topic with
//! its id, born time and host unchanged. Each slot's progress is an offset of the reserved group
//! [`SCHEDULER_GROUP`], committed only once what it moved is flushed and replicated as the group's
//! ack policy asks: after a crash or failover the new master resumes from there, so a delayed
//! message may be delivered twice but never lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use meridian_proto::delay::{self, slot_count, slot_for, slot_release};
use meridian_proto::messages::{MessageData, SendRequest, SendResult};
use meridian_proto::properties::{
    self, DELAY, DELIVER_AT, PRODUCER_GROUP, PropertiesBuilder, REAL_QUEUE, REAL_TOPIC, RETRY_TOPIC,
};
use meridian_proto::record::Record;
use meridian_proto::topics::{self, DELAY_TOPIC, HALF_OP_TOPIC, HALF_TOPIC, TopicKind};
use meridian_proto::trace::TraceType;
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};
use crate::handlers::BrokerState;
use crate::store::{AppendRequest, FlushMode, MessageStore};
use crate::trace::Step;

/// The reserved group whose offsets record how far each delay slot was released. `%` keeps it
/// apart from every real group name.
pub const SCHEDULER_GROUP: &str = "%SCHEDULER%";
/// How often the delay slots are looked at.
pub const TICK: Duration = Duration::from_millis(100);
/// Most messages released from one slot per tick.
const RELEASE_BATCH: u32 = 512;

/// What a message asks of the broker beyond being stored, found while validating its properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Special {
    /// It has a delay level or a delivery time.
    pub delayed: bool,
    /// It is a transactional half message.
    pub transactional: bool,
}

impl Special {
    /// Whether the message needs [`rehome`].
    pub fn any(self) -> bool {
        self.delayed || self.transactional
    }
}

/// Unix ms now.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// Creates the delay and transaction topics on a store that lacks them.
pub fn ensure_topics(store: &MessageStore) -> Result<()> {
    store.ensure_topic(DELAY_TOPIC, slot_count())?;
    store.ensure_topic(HALF_TOPIC, 1)?;
    store.ensure_topic(HALF_OP_TOPIC, 1)
}

/// The delivery time a message asks for: its delivery time, or now plus its delay level.
/// `None` when it asks for neither.
pub fn delivery_time(encoded: &[u8], now_ms: i64) -> Result<Option<i64>> {
    if let Some(at) = properties::get(encoded, DELIVER_AT) {
        return Ok(Some(delay::validate_deliver_at(at, now_ms)?));
    }
    match properties::get(encoded, DELAY) {
        Some(level) => Ok(Some(now_ms + delay::level_delay_ms(level)?)),
        None => Ok(None),
    }
}

/// Properties of a message moved to a system topic: the original ones, then its real topic and
/// queue (and delivery time, when delayed).
fn moved_properties(original: &[u8], real_topic: &str, real_queue: Option<u32>, deliver_at: Option<i64>) -> Bytes {
    let mut builder = PropertiesBuilder::new();
    builder.copy_except(original, &[REAL_TOPIC, REAL_QUEUE, DELIVER_AT]);
    builder.system(REAL_TOPIC, real_topic);
    if let Some(queue) = real_queue {
        builder.system(REAL_QUEUE, &queue.to_string());
    }
    if let Some(at) = deliver_at {
        builder.system(DELIVER_AT, &at.to_string());
    }
    Bytes::from(builder.finish())
}

/// Moves a send of a delayed or transactional message to the system topic it waits in. Such
/// messages travel alone: a batch of them is refused.
pub fn rehome(request: &mut SendRequest, special: Special, now_ms: i64) -> Result<()> {
    if request.messages.len() != 1 {
        return Err(BrokerError::Refused(format!(
            "a batch of {} messages holds delayed or transactional ones; send those one at a time",
            request.messages.len()
        )));
    }
    let real_queue = u32::try_from(request.queue_id).ok();
    let message = &mut request.messages[0];
    if special.transactional {
        if request.producer_group.is_empty() && properties::get(&message.properties, PRODUCER_GROUP).is_none() {
            return Err(BrokerError::Refused(
                "a transactional message needs a producer group, which the broker asks about transactions it cannot settle; set one on the producer".into(),
            ));
        }
        let mut properties = moved_properties(&message.properties, &request.topic, real_queue, None);
        if properties::get(&properties, PRODUCER_GROUP).is_none() {
            // The group the broker asks about the transaction if it is not ended.
            let mut builder = PropertiesBuilder::new();
            builder.copy_except(&properties, &[]);
            builder.system(PRODUCER_GROUP, &request.producer_group);
            properties = Bytes::from(builder.finish());
        }
        message.properties = properties;
        request.topic = HALF_TOPIC.to_owned();
        request.queue_id = 0;
        return Ok(());
    }
    let Some(due) = delivery_time(&message.properties, now_ms)? else {
        return Ok(());
    };
    // Due already (a time in the past): stored as an ordinary message.
    let Some((slot, _)) = slot_for(due, now_ms) else {
        return Ok(());
    };
    message.properties = moved_properties(&message.properties, &request.topic, real_queue, Some(due));
    request.topic = DELAY_TOPIC.to_owned();
    request.queue_id = slot as i32;
    Ok(())
}

/// A copy of a stored message for appending elsewhere: same flags, born time and body; the
/// properties and reconsume count given.
pub fn copy_message(record: &Record<'_>, properties: Bytes, reconsume_count: u32) -> MessageData {
    MessageData {
        flags: record.flags(),
        born_timestamp: record.born_timestamp(),
        properties,
        body: Bytes::copy_from_slice(record.body()),
        reconsume_count,
    }
}

/// Where a message leaving a system topic goes: its real topic and queue, read from properties.
pub fn real_destination(record: &Record<'_>) -> Option<(String, Option<u32>)> {
    let props = record.properties();
    let topic = properties::get(props, REAL_TOPIC)?;
    let queue = properties::get(props, REAL_QUEUE).and_then(|queue| queue.parse().ok());
    Some((topic.to_owned(), queue))
}

/// Properties of a message as its real topic should store it: without the system's routing ones.
pub fn delivered_properties(record: &Record<'_>) -> Bytes {
    let mut builder = PropertiesBuilder::new();
    builder.copy_except(record.properties(), &[REAL_TOPIC, REAL_QUEUE]);
    Bytes::from(builder.finish())
}

/// Makes sure a message's real topic can take it: system topics of groups are created on demand;
/// a user topic must exist.
pub fn ensure_destination(store: &MessageStore, topic: &str) -> Result<()> {
    match topics::kind(topic) {
        TopicKind::Retry(_) | TopicKind::DeadLetter(_) => store.ensure_topic(topic, topics::GROUP_TOPIC_QUEUES),
        _ if store.topic_queues(topic).is_some() => Ok(()),
        _ => Err(BrokerError::TopicNotFound(topic.to_owned())),
    }
}

/// Waits until what was appended up to `end_offset` is as durable as an acknowledged send.
pub async fn wait_durable(state: &BrokerState, end_offset: u64) -> Result<()> {
    if state.store.config().flush_mode == FlushMode::Sync {
        state.store.wait_flushed(end_offset).await?;
    }
    state.replication.wait_acked(end_offset).await
}

/// One message leaving a slot.
struct Release {
    topic: String,
    queue_id: Option<u32>,
    message: MessageData,
    born_host: SocketAddr,
    /// The delayed record and its delivery time, when this release makes it visible (not when
    /// it only moves to a smaller slot): traced as DelayFire.
    fired: Option<(Bytes, i64)>,
}

/// Releases what is due in one slot; returns how many messages moved.
async fn release_slot(state: &BrokerState, slot: u32, now_ms: i64) -> Result<u64> {
    let store = &state.store;
    let queue = store.consume_queue(DELAY_TOPIC, slot)?;
    let start = store
        .query_offset(SCHEDULER_GROUP, DELAY_TOPIC, slot)?
        .unwrap_or(0)
        .max(queue.min_offset());
    if start >= queue.max_offset() {
        return Ok(0);
    }
    let entries = store.read_entries(&queue, start, RELEASE_BATCH, 8 << 20)?;
    let mut releases = Vec::new();
    let mut next = start;
    for entry in &entries {
        let bytes = store.read_record(entry.commitlog_offset)?;
        let record = Record::parse(&bytes).map_err(|error| BrokerError::Corrupt(error.to_string()))?;
        let due = properties::get(record.properties(), DELIVER_AT)
            .and_then(|at| at.parse::<i64>().ok())
            .unwrap_or(now_ms);
        if slot_release(slot, record.store_timestamp(), due) > now_ms {
            // Slots are FIFO: nothing after this one is due either (slot 0 may hold a later
            // message before an earlier one, at most a second apart).
            break;
        }
        next += 1;
        let release = match slot_for(due, now_ms) {
            Some((smaller, _)) => Release {
                topic: DELAY_TOPIC.to_owned(),
                queue_id: Some(smaller),
                message: copy_message(
                    &record,
                    Bytes::copy_from_slice(record.properties()),
                    record.reconsume_count(),
                ),
                born_host: record.born_host(),
                fired: None,
            },
            None => {
                let Some((topic, queue_id)) = real_destination(&record) else {
                    tracing::error!(
                        offset = entry.commitlog_offset,
                        "delayed message without a real topic; dropped"
                    );
                    continue;
                };
                if let Err(error) = ensure_destination(store, &topic) {
                    tracing::error!(%error, topic, msg_id = record.msg_id(), "delayed message's topic is gone; dropped");
                    continue;
                }
                Release {
                    topic,
                    queue_id,
                    message: copy_message(&record, delivered_properties(&record), record.reconsume_count()),
                    born_host: record.born_host(),
                    fired: Some((bytes.clone(), due)),
                }
            }
        };
        releases.push(release);
    }
    if next == start {
        return Ok(0);
    }
    let requests: Vec<AppendRequest<'_>> = releases
        .iter()
        .map(|release| AppendRequest {
            topic: &release.topic,
            queue_id: release.queue_id,
            messages: std::slice::from_ref(&release.message),
            born_host: release.born_host,
        })
        .collect();
    let mut end_offset = 0;
    for (outcome, release) in store.append_many(&requests).into_iter().zip(&releases) {
        let appended = outcome?;
        end_offset = end_offset.max(appended.end_offset);
        if let Some((bytes, due)) = &release.fired {
            trace_fire(state, bytes, &release.topic, appended.results.first(), *due);
        }
    }
    state.replication.notify_appended();
    if end_offset > 0 {
        wait_durable(state, end_offset).await?;
    }
    store.commit_offset(SCHEDULER_GROUP, DELAY_TOPIC, slot, next)?;
    state.metrics.delayed_released.inc_by(releases.len() as u64);
    Ok(next - start)
}

/// Traces a delayed message (or a retry) becoming visible in `topic`.
fn trace_fire(state: &BrokerState, bytes: &[u8], topic: &str, placed: Option<&SendResult>, due: i64) {
    let Ok(record) = Record::parse(bytes) else {
        return;
    };
    // A retry is traced as its first topic is.
    let user_topic = properties::get(record.properties(), RETRY_TOPIC).unwrap_or(topic);
    state.trace.step(
        &record,
        Step {
            kind: TraceType::DelayFire,
            user_topic,
            topic,
            placed,
            group: topics::owning_group(topic).unwrap_or_default(),
            deliver_at: due,
            error: "",
        },
    );
}

/// Releases due delayed messages every [`TICK`] while this broker is a writable master.
pub async fn run(state: Arc<BrokerState>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if state.replication.check_writable().is_err() {
            continue;
        }
        let now_ms = now_millis();
        for slot in 0..slot_count() {
            loop {
                match release_slot(&state, slot, now_ms).await {
                    // A full batch: more may be due in this slot.
                    Ok(moved) if moved == u64::from(RELEASE_BATCH) => {}
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, slot, "releasing delayed messages failed; retrying next tick");
                        break;
                    }
                }
            }
        }
    }
}
