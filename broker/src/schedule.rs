//! Delayed delivery and moving stored messages between topics.
//!
//! On the send path, [`rehome`] turns a message with a delay level or delivery time into a message
//! of [`DELAY_TOPIC`], in the slot [`meridian_proto::delay::slot_for`] picks, and a transactional
//! message into a half message of [`HALF_TOPIC`]; either remembers its real topic and queue in
//! properties. The producer's acknowledgement covers the moved message exactly as it would the
//! original (flush and replication included), so a delayed message is as durable as any other.
//!
//! On the master, [`run`] looks at every delay slot every [`TICK`]: what is due moves down to a
//! smaller slot or, once its delivery time has come, is appended to its real topic with its id,
//! born time and host unchanged. A slot of whole seconds, minutes or hours is FIFO, so only its
//! head is looked at; slot 0 (due within a second) is not, and [`SlotZero`] releases it by due time. Each slot's progress is an offset of the reserved group
//! [`SCHEDULER_GROUP`], committed only once what it moved is flushed and replicated as the group's
//! ack policy asks: after a crash or failover the new master resumes from there, so a delayed
//! message may be delivered twice but never lost.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::delay::{self, slot_count, slot_for, slot_release};
use meridian_proto::messages::{MessageData, SendRequest, SendResult};
use meridian_proto::properties::{
    self, DELAY, DELIVER_AT, PRODUCER_GROUP, PropertiesBuilder, REAL_QUEUE, REAL_TOPIC, RETRY_TOPIC,
};
use meridian_proto::record::Record;
use meridian_proto::time::now_millis;
use meridian_proto::topics::{self, DELAY_TOPIC, HALF_OP_TOPIC, HALF_TOPIC, TopicKind};
use meridian_proto::trace::TraceType;
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};
use crate::state::BrokerState;
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

/// Where a delayed record goes now that its slot released it: down to a smaller slot, or, when
/// due, to its real topic. `None` when it cannot go anywhere (logged; it is dropped).
fn release_of(store: &MessageStore, record: &Record<'_>, bytes: &Bytes, due: i64, now_ms: i64) -> Option<Release> {
    if let Some((smaller, _)) = slot_for(due, now_ms) {
        return Some(Release {
            topic: DELAY_TOPIC.to_owned(),
            queue_id: Some(smaller),
            message: copy_message(
                record,
                Bytes::copy_from_slice(record.properties()),
                record.reconsume_count(),
            ),
            born_host: record.born_host(),
            fired: None,
        });
    }
    let Some((topic, queue_id)) = real_destination(record) else {
        tracing::error!(
            msg_id = record.msg_id(),
            "delayed message without a real topic; dropped"
        );
        return None;
    };
    if let Err(error) = ensure_destination(store, &topic) {
        tracing::error!(%error, topic, msg_id = record.msg_id(), "delayed message's topic is gone; dropped");
        return None;
    }
    Some(Release {
        topic,
        queue_id,
        message: copy_message(record, delivered_properties(record), record.reconsume_count()),
        born_host: record.born_host(),
        fired: Some((bytes.clone(), due)),
    })
}

/// A stored record, parsed.
fn parse(bytes: &Bytes) -> Result<Record<'_>> {
    Record::parse(bytes).map_err(|error| BrokerError::Corrupt(error.to_string()))
}

/// When a delayed record is due: its delivery time, or now if it names none.
fn due_of(record: &Record<'_>, now_ms: i64) -> i64 {
    properties::get(record.properties(), DELIVER_AT)
        .and_then(|at| at.parse::<i64>().ok())
        .unwrap_or(now_ms)
}

/// Appends what left a slot, in one batch, and waits until it is as durable as an acknowledged
/// send; only then may the slot's position move past it.
async fn place(state: &BrokerState, releases: &[Release]) -> Result<()> {
    if releases.is_empty() {
        return Ok(());
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
    for (outcome, release) in state.store.append_many(&requests).into_iter().zip(releases) {
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
    state.metrics.delayed_released.inc_by(releases.len() as u64);
    Ok(())
}

/// Where the scheduler's committed position for `slot` is (never before the queue's first entry).
fn slot_position(store: &MessageStore, queue: &crate::store::ConsumeQueue, slot: u32) -> Result<u64> {
    Ok(store
        .query_offset(SCHEDULER_GROUP, DELAY_TOPIC, slot)?
        .unwrap_or(0)
        .max(queue.min_offset()))
}

/// Releases what is due at the head of a slot of whole seconds, minutes or hours (not slot 0);
/// returns how many messages left it.
///
/// Such a slot is FIFO: every message in it waits the same time from when it was stored there,
/// so the first one not yet due ends the walk.
async fn release_slot(state: &BrokerState, slot: u32, now_ms: i64) -> Result<u64> {
    let store = &state.store;
    let queue = store.consume_queue(DELAY_TOPIC, slot)?;
    let start = slot_position(store, &queue, slot)?;
    if start >= queue.max_offset() {
        return Ok(0);
    }
    let entries = store.read_entries(&queue, start, RELEASE_BATCH, 8 << 20)?;
    let mut releases = Vec::new();
    let mut next = start;
    for entry in &entries {
        let bytes = store.read_record(entry.commitlog_offset)?;
        let record = parse(&bytes)?;
        let due = due_of(&record, now_ms);
        if slot_release(slot, record.store_timestamp(), due) > now_ms {
            break;
        }
        next += 1;
        releases.extend(release_of(store, &record, &bytes, due, now_ms));
    }
    if next == start {
        return Ok(0);
    }
    place(state, &releases).await?;
    store.commit_offset(SCHEDULER_GROUP, DELAY_TOPIC, slot, next)?;
    Ok(next - start)
}

/// Slot 0: messages due within a second, in the order they came down from larger slots, not the
/// order they are due. A message due in 900 ms may sit ahead of one due in 100 ms, so releasing
/// slot 0 FIFO made the second up to a second late. Instead each entry is read once and released
/// when due, whatever its place: what is not due yet waits here, soonest first.
///
/// The slot's committed position is the first entry not yet released, so after a restart or a
/// failover the new scheduler re-releases what had been released past it (a message may be
/// delivered twice, as after any crash) and loses nothing.
#[derive(Default)]
struct SlotZero {
    /// The committed position this state was built on; a different one (another master moved it,
    /// an operator reset it) rebuilds the state from there.
    committed: Option<u64>,
    /// Entries before this queue offset were read.
    scanned: u64,
    /// Read, not yet due: (due ms, queue offset, commitlog offset), soonest first.
    waiting: BinaryHeap<Reverse<(i64, u64, u64)>>,
    /// The queue offsets in `waiting`: the first is where the committed position must stay.
    waiting_offsets: BTreeSet<u64>,
}

impl SlotZero {
    /// Releases what is due in slot 0; returns how many messages left it. On an error the state
    /// is dropped: the next call rebuilds it from the committed position.
    async fn release(&mut self, state: &BrokerState, now_ms: i64) -> Result<u64> {
        let result = self.try_release(state, now_ms).await;
        if result.is_err() {
            *self = SlotZero::default();
        }
        result
    }

    async fn try_release(&mut self, state: &BrokerState, now_ms: i64) -> Result<u64> {
        let store = &state.store;
        let queue = store.consume_queue(DELAY_TOPIC, 0)?;
        let start = slot_position(store, &queue, 0)?;
        if self.committed != Some(start) {
            *self = SlotZero {
                committed: Some(start),
                scanned: start,
                ..SlotZero::default()
            };
        }
        let mut releases = Vec::new();
        let mut moved = 0u64;
        // What was read earlier and is due now.
        while let Some(&Reverse((due, offset, commitlog_offset))) = self.waiting.peek() {
            if due > now_ms || moved >= u64::from(RELEASE_BATCH) {
                break;
            }
            self.waiting.pop();
            self.waiting_offsets.remove(&offset);
            let bytes = store.read_record(commitlog_offset)?;
            let record = parse(&bytes)?;
            releases.extend(release_of(store, &record, &bytes, due, now_ms));
            moved += 1;
        }
        // Then what came down since.
        while moved < u64::from(RELEASE_BATCH) && self.scanned < queue.max_offset() {
            let entries = store.read_entries(&queue, self.scanned, RELEASE_BATCH, 8 << 20)?;
            if entries.is_empty() {
                break;
            }
            for entry in &entries {
                let offset = self.scanned;
                self.scanned += 1;
                let bytes = store.read_record(entry.commitlog_offset)?;
                let record = parse(&bytes)?;
                let due = due_of(&record, now_ms);
                if due > now_ms {
                    self.waiting.push(Reverse((due, offset, entry.commitlog_offset)));
                    self.waiting_offsets.insert(offset);
                    continue;
                }
                releases.extend(release_of(store, &record, &bytes, due, now_ms));
                moved += 1;
            }
        }
        place(state, &releases).await?;
        let position = self.waiting_offsets.first().copied().unwrap_or(self.scanned);
        if Some(position) != self.committed {
            store.commit_offset(SCHEDULER_GROUP, DELAY_TOPIC, 0, position)?;
            self.committed = Some(position);
        }
        Ok(moved)
    }
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
    let mut zero = SlotZero::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if state.replication.check_writable().is_err() {
            // Whoever is master now moves slot 0; if this broker is again, it starts afresh.
            zero = SlotZero::default();
            continue;
        }
        let now_ms = now_millis();
        for slot in 0..slot_count() {
            loop {
                let released = if slot == 0 {
                    zero.release(&state, now_ms).await
                } else {
                    release_slot(&state, slot, now_ms).await
                };
                match released {
                    // A full batch: more may be due in this slot.
                    Ok(moved) if moved >= u64::from(RELEASE_BATCH) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    const NOW: i64 = 1_795_600_000_000;

    fn state(dir: &std::path::Path) -> Arc<BrokerState> {
        let config = BrokerConfig {
            data_dir: dir.to_owned(),
            ..BrokerConfig::default()
        };
        let mut store_config = config.store.clone();
        store_config.segment_size = 1 << 20;
        let store = MessageStore::open(dir, store_config, "127.0.0.1:7911".parse().unwrap(), Arc::default()).unwrap();
        ensure_topics(&store).unwrap();
        store.create_topic("orders", 1).unwrap();
        BrokerState::for_tests(config, store, None)
    }

    /// Stores a message of "orders" in delay slot `slot`, due at `due`, as [`rehome`] would.
    fn delay(state: &BrokerState, slot: u32, id: &str, due: i64) {
        let mut builder = PropertiesBuilder::new();
        builder.msg_id(id);
        let message = MessageData {
            flags: 0,
            born_timestamp: NOW,
            properties: moved_properties(&builder.finish(), "orders", Some(0), Some(due)),
            body: Bytes::from_static(b"{}"),
            reconsume_count: 0,
        };
        let host = "10.0.0.1:5000".parse().unwrap();
        state.store.append(DELAY_TOPIC, Some(slot), &[message], host).unwrap();
        dispatched(state);
    }

    fn dispatched(state: &BrokerState) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while state.store.dispatched_offset() < state.store.committed_offset() {
            assert!(std::time::Instant::now() < deadline, "dispatch did not catch up");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The msgIds visible in "orders", in queue order.
    fn delivered(state: &BrokerState) -> Vec<String> {
        dispatched(state);
        let queue = state.store.consume_queue("orders", 0).unwrap();
        let mut ids = Vec::new();
        for entry in state.store.read_entries(&queue, 0, 1024, u32::MAX).unwrap() {
            let bytes = state.store.read_record(entry.commitlog_offset).unwrap();
            ids.push(Record::parse(&bytes).unwrap().msg_id().unwrap().to_owned());
        }
        ids
    }

    fn position(state: &BrokerState, slot: u32) -> Option<u64> {
        state.store.query_offset(SCHEDULER_GROUP, DELAY_TOPIC, slot).unwrap()
    }

    /// Slot 0 releases each message at its own due time, not behind an earlier-stored one due
    /// later; its position stays at the first unreleased entry, so a new scheduler re-releases
    /// (at least once) rather than loses what was released past it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slot_zero_releases_by_due_time_and_commits_only_the_released_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        delay(&state, 0, "late", NOW + 900);
        delay(&state, 0, "soon", NOW + 100);
        delay(&state, 0, "middle", NOW + 500);
        let mut zero = SlotZero::default();

        assert_eq!(zero.release(&state, NOW).await.unwrap(), 0);
        assert!(delivered(&state).is_empty());
        assert_eq!(zero.release(&state, NOW + 150).await.unwrap(), 1);
        assert_eq!(delivered(&state), ["soon"], "not held behind \"late\"");
        assert_eq!(
            position(&state, 0).unwrap_or(0),
            0,
            "\"late\" at offset 0 is not released yet"
        );
        assert_eq!(zero.release(&state, NOW + 150).await.unwrap(), 0, "released once");

        delay(&state, 0, "sooner", NOW + 200);
        assert_eq!(zero.release(&state, NOW + 600).await.unwrap(), 2);
        assert_eq!(delivered(&state), ["soon", "middle", "sooner"]);

        // A new master (a fresh state) starts from the committed position: "soon", "middle" and
        // "sooner" come again only once due, and nothing is lost.
        let mut fresh = SlotZero::default();
        assert_eq!(fresh.release(&state, NOW + 600).await.unwrap(), 3);
        assert_eq!(
            delivered(&state),
            ["soon", "middle", "sooner", "soon", "middle", "sooner"]
        );

        assert_eq!(zero.release(&state, NOW + 950).await.unwrap(), 1);
        assert_eq!(delivered(&state)[6..], ["late"]);
        assert_eq!(position(&state, 0), Some(4), "everything released");
        assert_eq!(fresh.release(&state, NOW + 950).await.unwrap(), 0, "rebuilt past it");
        state.store.shutdown();
    }

    /// A slot of whole seconds is FIFO: its messages wait the slot's time from when they were
    /// stored there; one due later moves down to slot 0 rather than out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn larger_slots_release_in_order_and_move_messages_down() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let stored = now_millis();
        let (slot, _) = slot_for(stored + 1_500, stored).unwrap();
        assert_eq!(slot_release(slot, stored, stored + 1_500), stored + 1_000);
        delay(&state, slot, "first", stored + 1_000);
        delay(&state, slot, "second", stored + 1_500);
        // Both were stored in [stored, now]: a second after the later bound both have waited it.
        let released_at = now_millis() + 1_000;
        assert!(released_at < stored + 1_500, "the appends took half a second");
        assert_eq!(release_slot(&state, slot, stored).await.unwrap(), 0, "not a second yet");
        assert_eq!(release_slot(&state, slot, released_at).await.unwrap(), 2);
        assert_eq!(delivered(&state), ["first"]);
        assert_eq!(position(&state, slot), Some(2));
        dispatched(&state);
        let queue = state.store.consume_queue(DELAY_TOPIC, 0).unwrap();
        assert_eq!(queue.max_offset(), 1, "\"second\" moved down to slot 0");
        let mut zero = SlotZero::default();
        assert_eq!(zero.release(&state, stored + 1_600).await.unwrap(), 1);
        assert_eq!(delivered(&state), ["first", "second"]);
        state.store.shutdown();
    }
}
