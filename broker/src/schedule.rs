//! Delayed delivery and moving stored messages between topics.
//!
//! On the send path, [`rehome`] turns a message with a delay level or delivery time into a message
//! of [`DELAY_TOPIC`], in the slot [`meridian_proto::delay::slot_for`] picks, and a transactional
//! message into a half message of [`HALF_TOPIC`]; either remembers its real topic and queue in
//! properties. The producer's acknowledgement covers the moved message exactly as it would the
//! original (flush and replication included), so a delayed message is as durable as any other.
//!
//! On the master, [`run`] looks at every delay slot at least every [`TICK`], and wakes earlier
//! for the next due time it knows of (the head of a slot, or the soonest message of slot 0), so a
//! message is released at its due millisecond rather than on the next tick. What is due moves
//! down to a smaller slot or, once its delivery time has come, is appended to its real topic with
//! its id, born time and host unchanged. A slot of whole seconds, minutes or hours is FIFO, so
//! only its head is looked at; slot 0 (due within a second) is not, and [`SlotZero`] releases it
//! by due time. Each slot's progress is an offset of the reserved group [`SCHEDULER_GROUP`],
//! committed only once what it moved is flushed and replicated as the group's ack policy asks.
//!
//! Exactly once across a crash or failover: every copy out of a slot carries [`DELAY_SOURCE`],
//! the commitlog offset of the delayed record it copies, and the scheduler keeps (under
//! [`COPIES_KEY`]) a commitlog offset below which no copy lies that the slots' positions do not
//! already cover. A new scheduler ([`Scheduler::rebuild`]) scans the log from there, and skips
//! every delayed record it finds a copy of, instead of copying it again. Start reading at
//! [`run`], then [`Scheduler::pass`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
/// How often the delay slots are looked at, at the latest (new messages in a slot are found on
/// the next tick; known due times wake the scheduler sooner).
pub const TICK: Duration = Duration::from_millis(100);
/// Key of the commitlog mark ([`MessageStore::commit_log_mark`]) the rebuild scan starts at: every copy out of a slot that the slots' positions do not cover lies at or after it. `%`
/// keeps it apart from real groups, as [`SCHEDULER_GROUP`].
pub const COPIES_KEY: &str = "%SCHEDULER%COPIES";
/// Property set on every copy out of a delay slot: the commitlog offset of the delayed record
/// copied, so a new scheduler can tell what was already copied (and not copy it twice).
pub const DELAY_SOURCE: &str = "DELAY_SOURCE";
/// How far the rebuild mark ([`COPIES_KEY`]) may lag behind where it could be: at most this much
/// more log to scan when a new scheduler starts.
const MARK_STEP: u64 = 64 << 20;
/// How often slot 0 is checked for new entries between passes.
const SLOT_ZERO_POLL: Duration = Duration::from_millis(10);
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
fn release_of(
    store: &MessageStore,
    record: &Record<'_>,
    bytes: &Bytes,
    source: u64,
    due: i64,
    now_ms: i64,
) -> Option<Release> {
    if let Some((smaller, _)) = slot_for(due, now_ms) {
        return Some(Release {
            topic: DELAY_TOPIC.to_owned(),
            queue_id: Some(smaller),
            message: copy_message(
                record,
                sourced_properties(record, &[], source),
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
        message: copy_message(
            record,
            sourced_properties(record, &[REAL_TOPIC, REAL_QUEUE], source),
            record.reconsume_count(),
        ),
        born_host: record.born_host(),
        fired: Some((bytes.clone(), due)),
    })
}

/// Properties of a copy out of a delay slot: the record's, less `skip`, marked with the commitlog
/// offset of the record copied ([`DELAY_SOURCE`]).
fn sourced_properties(record: &Record<'_>, skip: &[&str], source: u64) -> Bytes {
    let mut builder = PropertiesBuilder::new();
    let mut skipped = Vec::with_capacity(skip.len() + 1);
    skipped.extend_from_slice(skip);
    skipped.push(DELAY_SOURCE);
    builder.copy_except(record.properties(), &skipped);
    builder.system(DELAY_SOURCE, &source.to_string());
    Bytes::from(builder.finish())
}

/// The delayed record a stored record was copied from, if it is a copy out of a delay slot.
fn source_of(record: &Record<'_>) -> Option<u64> {
    properties::get(record.properties(), DELAY_SOURCE).and_then(|source| source.parse().ok())
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

/// What one slot's release did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Released {
    /// Entries the slot's position moved past (copied now, or found copied by an earlier
    /// scheduler).
    moved: u64,
    /// When the first entry left behind can go (Unix ms), if one was looked at.
    next_due: Option<i64>,
}

/// Releases what is due at the head of a slot of whole seconds, minutes or hours (not slot 0).
///
/// Such a slot is FIFO: every message in it waits the same time from when it was stored there,
/// so the first one not yet due ends the walk. An entry in `copied` was copied out by an earlier
/// scheduler (they are the head of the slot: it released in order too): it is passed, not copied
/// again.
async fn release_slot(
    state: &BrokerState,
    copied: &mut Copied,
    slot: u32,
    now_ms: i64,
) -> std::result::Result<Released, PassError> {
    let store = &state.store;
    let queue = store.consume_queue(DELAY_TOPIC, slot)?;
    let start = slot_position(store, &queue, slot)?;
    if start >= queue.max_offset() {
        return Ok(Released::default());
    }
    let entries = store.read_entries(&queue, start, RELEASE_BATCH, 8 << 20)?;
    let mut releases = Vec::new();
    let mut next = start;
    let mut next_due = None;
    for entry in &entries {
        if copied.sources.remove(&entry.commitlog_offset) {
            next += 1;
            continue;
        }
        let bytes = store.read_record(entry.commitlog_offset)?;
        let record = parse(&bytes)?;
        let due = due_of(&record, now_ms);
        let release_at = slot_release(slot, record.store_timestamp(), due);
        if release_at > now_ms {
            next_due = Some(release_at);
            break;
        }
        next += 1;
        releases.extend(release_of(store, &record, &bytes, entry.commitlog_offset, due, now_ms));
    }
    if next == start {
        return Ok(Released { moved: 0, next_due });
    }
    place(state, &releases).await.map_err(PassError::Place)?;
    store.commit_offset(SCHEDULER_GROUP, DELAY_TOPIC, slot, next)?;
    Ok(Released {
        moved: next - start,
        next_due,
    })
}

/// Slot 0: messages due within a second, in the order they came down from larger slots, not the
/// order they are due. A message due in 900 ms may sit ahead of one due in 100 ms, so releasing
/// slot 0 FIFO made the second up to a second late. Instead each entry is read once and waits in
/// a heap by due time; [`run`] sleeps until the soonest, and releases leave in due-time order.
///
/// The slot's committed position is the first entry not yet released; what was released past it
/// is remembered in `released_above` with where in the log its copy may lie, so the scheduler's
/// rebuild floor ([`COPIES_KEY`]) stays below those copies and a new scheduler skips them.
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
    /// Queue offsets released (or found copied) past the committed position, with a commitlog
    /// offset at or before their copy.
    released_above: BTreeMap<u64, u64>,
}

impl SlotZero {
    /// Releases what is due in slot 0. On an error the state is dropped: the next call rebuilds
    /// it from the committed position.
    async fn release(
        &mut self,
        state: &BrokerState,
        copied: &mut Copied,
        now_ms: i64,
    ) -> std::result::Result<Released, PassError> {
        let result = self.try_release(state, copied, now_ms).await;
        if result.is_err() {
            *self = SlotZero::default();
        }
        result
    }

    /// The commitlog offset at or before every copy of an entry past the committed position.
    fn copies_floor(&self) -> Option<u64> {
        self.released_above.values().min().copied()
    }

    async fn try_release(
        &mut self,
        state: &BrokerState,
        copied: &mut Copied,
        now_ms: i64,
    ) -> std::result::Result<Released, PassError> {
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
        // Copies appended from here on lie at or after it.
        let log_end = store.committed_offset();
        let mut moved = 0u64;
        // What came down since the last call joins what waits, so that everything due now leaves
        // in due-time order, wherever it stands in the queue.
        while self.scanned < queue.max_offset() {
            let entries = store.read_entries(&queue, self.scanned, RELEASE_BATCH, 8 << 20)?;
            if entries.is_empty() {
                break;
            }
            for entry in &entries {
                let offset = self.scanned;
                self.scanned += 1;
                if copied.sources.remove(&entry.commitlog_offset) {
                    // An earlier scheduler copied it: its copy lies after where the rebuild scan
                    // started.
                    self.released_above.insert(offset, copied.scanned_from);
                    moved += 1;
                    continue;
                }
                let bytes = store.read_record(entry.commitlog_offset)?;
                let due = due_of(&parse(&bytes)?, now_ms);
                self.waiting.push(Reverse((due, offset, entry.commitlog_offset)));
                self.waiting_offsets.insert(offset);
            }
        }
        let mut releases = Vec::new();
        let mut released_offsets = Vec::new();
        while let Some(&Reverse((due, offset, commitlog_offset))) = self.waiting.peek() {
            if due > now_ms || moved >= u64::from(RELEASE_BATCH) {
                break;
            }
            self.waiting.pop();
            self.waiting_offsets.remove(&offset);
            let bytes = store.read_record(commitlog_offset)?;
            let record = parse(&bytes)?;
            releases.extend(release_of(store, &record, &bytes, commitlog_offset, due, now_ms));
            released_offsets.push(offset);
            moved += 1;
        }
        // Remembered before the copies are appended: if placing fails half way, the floor is
        // already below whatever did reach the log.
        for offset in released_offsets {
            self.released_above.insert(offset, log_end);
        }
        place(state, &releases).await.map_err(PassError::Place)?;
        let position = self.waiting_offsets.first().copied().unwrap_or(self.scanned);
        if Some(position) != self.committed {
            store.commit_offset(SCHEDULER_GROUP, DELAY_TOPIC, 0, position)?;
            self.committed = Some(position);
        }
        self.released_above = self.released_above.split_off(&position);
        Ok(Released {
            moved,
            next_due: self.waiting.peek().map(|Reverse((due, _, _))| *due),
        })
    }
}

/// Why a slot's release failed: placing the copies (some may have reached the log, so what was
/// copied must be learned again from the log) or anything before that (nothing was copied).
#[derive(Debug)]
enum PassError {
    Place(BrokerError),
    Other(BrokerError),
}

impl PassError {
    fn into_inner(self) -> BrokerError {
        match self {
            PassError::Place(error) | PassError::Other(error) => error,
        }
    }
}

impl From<BrokerError> for PassError {
    fn from(error: BrokerError) -> PassError {
        PassError::Other(error)
    }
}

/// What an earlier scheduler copied out of the slots that their positions do not cover yet,
/// learned from the log by [`Scheduler::rebuild`].
#[derive(Default)]
struct Copied {
    /// Commitlog offsets of delayed records whose copies the scan found: passed without a
    /// second copy.
    sources: HashSet<u64>,
    /// Where the scan started: every copy it found lies after it.
    scanned_from: u64,
}

/// The delay scheduler of a master: slot 0's state, and what an earlier scheduler copied out.
#[derive(Default)]
pub struct Scheduler {
    zero: SlotZero,
    /// `copied` was rebuilt from the log for this term as master.
    ready: bool,
    copied: Copied,
}

impl Scheduler {
    /// Forgets everything: the next pass rebuilds from the committed positions and the log (on
    /// becoming master again, or after a failed append whose copies may be in the log).
    pub fn reset(&mut self) {
        *self = Scheduler::default();
    }

    /// Learns from the log which delayed records past their slot's position were copied out
    /// already: the copies lie after the persisted floor ([`COPIES_KEY`]), or, without one,
    /// after the earliest record still waiting in a slot.
    fn rebuild(&mut self, state: &BrokerState) -> Result<()> {
        let store = &state.store;
        let mut earliest_waiting: Option<u64> = None;
        for slot in 0..slot_count() {
            let queue = store.consume_queue(DELAY_TOPIC, slot)?;
            let position = slot_position(store, &queue, slot)?;
            if position < queue.max_offset()
                && let Some(entry) = queue.get(position)?
            {
                earliest_waiting = Some(
                    earliest_waiting.map_or(entry.commitlog_offset, |earliest| earliest.min(entry.commitlog_offset)),
                );
            }
        }
        self.zero = SlotZero::default();
        self.copied = Copied::default();
        if let Some(earliest_waiting) = earliest_waiting {
            let end = store.confirmed_offset();
            let from = store
                .log_mark(COPIES_KEY)
                .unwrap_or(earliest_waiting)
                .max(store.min_offset())
                .min(end);
            let sources = &mut self.copied.sources;
            store.scan_records(from, end, |record, _| {
                if let Some(source) = source_of(record)
                    && source >= earliest_waiting
                {
                    sources.insert(source);
                }
            });
            self.copied.scanned_from = from;
            tracing::info!(
                from,
                end,
                copied = sources.len(),
                "delay scheduler rebuilt from the log"
            );
        }
        self.ready = true;
        Ok(())
    }

    /// Whether slot 0 holds entries this scheduler has not read yet: a lookup and an atomic load.
    fn slot_zero_grew(&self, state: &BrokerState) -> bool {
        self.ready
            && state
                .store
                .consume_queue(DELAY_TOPIC, 0)
                .is_ok_and(|queue| queue.max_offset() > self.zero.scanned)
    }

    /// Releases what is due in slot 0 only (what just came into it); returns slot 0's next due
    /// time. The floor is left to the next full [`Scheduler::pass`].
    async fn pass_slot_zero(&mut self, state: &BrokerState, now_ms: i64) -> Option<i64> {
        loop {
            match self.zero.release(state, &mut self.copied, now_ms).await {
                Ok(released) if released.moved >= u64::from(RELEASE_BATCH) => {}
                Ok(released) => return released.next_due,
                Err(error) => {
                    let error = error.into_inner();
                    tracing::warn!(%error, slot = 0, "releasing delayed messages failed; retrying next tick");
                    // Slot 0 dropped what it released past its position: learn it from the log.
                    self.reset();
                    return None;
                }
            }
        }
    }

    /// Looks at every slot once, releasing what is due at `now_ms`; returns the earliest known
    /// time something more can go. An error is logged per slot and the other slots go on.
    pub async fn pass(&mut self, state: &BrokerState, now_ms: i64) -> Option<i64> {
        if !self.ready
            && let Err(error) = self.rebuild(state)
        {
            tracing::warn!(%error, "reading the delay slots failed; retrying next tick");
            return None;
        }
        let mut next_due: Option<i64> = None;
        let mut failed = false;
        let mut must_rebuild = false;
        for slot in 0..slot_count() {
            loop {
                let released = if slot == 0 {
                    self.zero.release(state, &mut self.copied, now_ms).await
                } else {
                    release_slot(state, &mut self.copied, slot, now_ms).await
                };
                match released {
                    // A full batch: more may be due in this slot.
                    Ok(released) if released.moved >= u64::from(RELEASE_BATCH) => {}
                    Ok(released) => {
                        if let Some(due) = released.next_due {
                            next_due = Some(next_due.map_or(due, |next| next.min(due)));
                        }
                        break;
                    }
                    Err(error) => {
                        failed = true;
                        // Slot 0 dropped what it released past its position; a failed append
                        // may have left copies in the log: either way, learn them from the log.
                        must_rebuild |= slot == 0 || matches!(error, PassError::Place(_));
                        let error = error.into_inner();
                        tracing::warn!(%error, slot, "releasing delayed messages failed; retrying next tick");
                        break;
                    }
                }
            }
        }
        if must_rebuild {
            self.reset();
            return None;
        }
        if failed {
            // A slot stopped short of the copies the scan found for it: keep them, and the floor.
            return next_due;
        }
        // Every slot went as far as it could: each copy the scan found is passed (slots release
        // in order from their positions, slot 0 read to its end), so what is left is of records
        // behind the positions.
        self.copied.sources.clear();
        // Every copy the positions do not cover lies at or after this. A lower mark is as safe
        // (the scan is only longer), so it moves only by MARK_STEP at a time: each move changes
        // the offsets table, which is checkpointed and sent to the slaves when it changes.
        let floor = self
            .zero
            .copies_floor()
            .unwrap_or_else(|| state.store.committed_offset());
        let mark = state.store.log_mark(COPIES_KEY);
        if mark.is_none_or(|mark| floor < mark || floor - mark >= MARK_STEP) {
            state.store.commit_log_mark(COPIES_KEY, floor);
        }
        next_due
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

/// Releases due delayed messages while this broker is a writable master: every slot every
/// [`TICK`] or at the next due time the scheduler knows of, whichever is sooner; and slot 0 as soon
/// as something comes into it (checked every [`SLOT_ZERO_POLL`]), since a message due within a
/// second may be due before the next tick.
pub async fn run(state: Arc<BrokerState>, stop: CancellationToken) {
    let mut scheduler = Scheduler::default();
    let mut next_due: Option<i64> = None;
    let mut next_pass = Instant::now();
    loop {
        let until_due = next_due.map_or(TICK, |due| {
            Duration::from_millis((due - now_millis()).clamp(0, TICK.as_millis() as i64) as u64)
        });
        let wait = until_due
            .min(SLOT_ZERO_POLL)
            .min(next_pass.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if state.replication.check_writable().is_err() {
            // Whoever is master now moves the slots; if this broker is again, it starts afresh.
            scheduler.reset();
            next_due = None;
            continue;
        }
        let now_ms = now_millis();
        if next_due.is_some_and(|due| due <= now_ms) || Instant::now() >= next_pass {
            next_due = scheduler.pass(&state, now_ms).await;
            next_pass = Instant::now() + TICK;
        } else if scheduler.slot_zero_grew(&state)
            && let Some(due) = scheduler.pass_slot_zero(&state, now_ms).await
        {
            next_due = Some(next_due.map_or(due, |next| next.min(due)));
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

    fn reopen(dir: &std::path::Path, old: Arc<BrokerState>) -> Arc<BrokerState> {
        old.store.shutdown();
        drop(old);
        state(dir)
    }

    /// Messages due at different milliseconds of one second, stored out of order, leave slot 0
    /// in due-time order and never before their due time; the scheduler asks to be woken at the
    /// next due time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slot_zero_releases_in_due_time_order_never_early() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let dues = [("d", 730), ("a", 120), ("c", 455), ("b", 121), ("e", 999)];
        for (id, due) in dues {
            delay(&state, 0, id, NOW + due);
        }
        let mut scheduler = Scheduler::default();
        assert_eq!(
            scheduler.pass(&state, NOW).await,
            Some(NOW + 120),
            "woken at the soonest"
        );
        assert!(delivered(&state).is_empty());
        assert_eq!(scheduler.pass(&state, NOW + 119).await, Some(NOW + 120));
        assert!(delivered(&state).is_empty(), "nothing before its due time");
        assert_eq!(scheduler.pass(&state, NOW + 120).await, Some(NOW + 121));
        assert_eq!(delivered(&state), ["a"]);
        // Late by a whole second: whatever is due leaves together, soonest first.
        assert_eq!(scheduler.pass(&state, NOW + 800).await, Some(NOW + 999));
        assert_eq!(delivered(&state), ["a", "b", "c", "d"]);
        assert_eq!(position(&state, 0), Some(4), "\"e\" at offset 4 waits");
        assert_eq!(scheduler.pass(&state, NOW + 998).await, Some(NOW + 999));
        assert_eq!(
            scheduler.pass(&state, NOW + 999).await,
            None,
            "nothing left to wait for"
        );
        assert_eq!(delivered(&state), ["a", "b", "c", "d", "e"]);
        assert_eq!(position(&state, 0), Some(5));
        state.store.shutdown();
    }

    /// A message stored in slot 0 between passes is noticed at once and released on its own
    /// (without a full pass), at its due time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slot_zero_notices_new_entries_between_passes() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let mut scheduler = Scheduler::default();
        assert_eq!(scheduler.pass(&state, NOW).await, None);
        assert!(!scheduler.slot_zero_grew(&state));
        delay(&state, 0, "new", NOW + 40);
        assert!(scheduler.slot_zero_grew(&state));
        assert_eq!(scheduler.pass_slot_zero(&state, NOW + 10).await, Some(NOW + 40));
        assert!(!scheduler.slot_zero_grew(&state), "read once");
        assert!(delivered(&state).is_empty(), "not before its due time");
        assert_eq!(scheduler.pass_slot_zero(&state, NOW + 40).await, None);
        assert_eq!(delivered(&state), ["new"]);
        assert_eq!(scheduler.pass(&state, NOW + 50).await, None);
        assert_eq!(delivered(&state), ["new"], "released once");
        state.store.shutdown();
    }

    /// Slot 0's position stays at the first unreleased entry, yet a new scheduler (a new master)
    /// neither loses nor repeats what was released past it: it finds the copies in the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_scheduler_releases_slot_zero_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        delay(&state, 0, "late", NOW + 900);
        delay(&state, 0, "soon", NOW + 100);
        delay(&state, 0, "middle", NOW + 500);
        let mut scheduler = Scheduler::default();
        scheduler.pass(&state, NOW + 150).await;
        assert_eq!(delivered(&state), ["soon"], "not held behind \"late\"");
        assert_eq!(
            position(&state, 0).unwrap_or(0),
            0,
            "\"late\" at offset 0 is not released yet"
        );
        delay(&state, 0, "sooner", NOW + 200);
        scheduler.pass(&state, NOW + 600).await;
        assert_eq!(delivered(&state), ["soon", "sooner", "middle"]);

        let mut fresh = Scheduler::default();
        assert_eq!(fresh.pass(&state, NOW + 600).await, Some(NOW + 900));
        assert_eq!(
            delivered(&state),
            ["soon", "sooner", "middle"],
            "nothing released twice"
        );
        assert_eq!(fresh.pass(&state, NOW + 950).await, None);
        assert_eq!(delivered(&state), ["soon", "sooner", "middle", "late"]);
        assert_eq!(position(&state, 0), Some(4), "everything released");
        state.store.shutdown();
    }

    /// A crash after copies were appended but before the slots' positions reached disk: the
    /// restarted broker resumes from the older positions and floor, finds the copies in the log
    /// and releases every message exactly once, in FIFO slots and in slot 0.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_before_the_positions_are_saved_releases_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = state(dir.path());
        let stored = now_millis();
        let (slot, _) = slot_for(stored + 1_000, stored).unwrap();
        assert_eq!(slot, 1);
        delay(&state, slot, "fifo-1", stored + 1_000);
        delay(&state, slot, "fifo-2", stored + 1_000);
        delay(&state, 0, "zero-late", stored + 700);
        delay(&state, 0, "zero-soon", stored + 100);
        let mut scheduler = Scheduler::default();
        scheduler.pass(&state, stored).await;
        // What a checkpoint taken now would hold.
        let saved_positions: Vec<(String, u32, u64)> = state.store.offsets_of_topic(DELAY_TOPIC);
        let saved_floor = state.store.log_mark(COPIES_KEY).expect("the floor is recorded");

        scheduler.pass(&state, stored + 150).await;
        let released_at = now_millis().max(stored + 2_000);
        scheduler.pass(&state, released_at).await;
        assert_eq!(delivered(&state), ["zero-soon", "zero-late", "fifo-1", "fifo-2"]);
        assert_eq!(position(&state, slot), Some(2));

        // The crash: the offsets on disk are the checkpoint's, the log has every copy.
        for (key, queue_id, offset) in &saved_positions {
            state.store.commit_offset(key, DELAY_TOPIC, *queue_id, *offset).unwrap();
        }
        state.store.commit_offset(SCHEDULER_GROUP, DELAY_TOPIC, 0, 0).unwrap();
        state
            .store
            .commit_offset(SCHEDULER_GROUP, DELAY_TOPIC, slot, 0)
            .unwrap();
        state.store.commit_log_mark(COPIES_KEY, saved_floor);
        state = reopen(dir.path(), state);
        assert_eq!(
            position(&state, slot),
            Some(0),
            "the restart resumes from the checkpoint"
        );
        assert_eq!(position(&state, 0), Some(0));

        let mut restarted = Scheduler::default();
        assert_eq!(restarted.pass(&state, released_at).await, None);
        assert_eq!(
            delivered(&state),
            ["zero-soon", "zero-late", "fifo-1", "fifo-2"],
            "nothing released twice"
        );
        assert_eq!(position(&state, slot), Some(2));
        assert_eq!(position(&state, 0), Some(2));

        // And what comes later still leaves, once.
        delay(&state, 0, "after", released_at + 50);
        restarted.pass(&state, released_at + 50).await;
        assert_eq!(delivered(&state)[4..], ["after"]);
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
        let mut copied = Copied::default();
        let early = release_slot(&state, &mut copied, slot, stored).await.unwrap();
        assert_eq!(early.moved, 0, "not a second yet");
        assert!(
            early.next_due.is_some_and(|due| due >= stored + 1_000),
            "woken when the head is due"
        );
        let released = release_slot(&state, &mut copied, slot, released_at).await.unwrap();
        assert_eq!(released.moved, 2);
        assert_eq!(delivered(&state), ["first"]);
        assert_eq!(position(&state, slot), Some(2));
        dispatched(&state);
        let queue = state.store.consume_queue(DELAY_TOPIC, 0).unwrap();
        assert_eq!(queue.max_offset(), 1, "\"second\" moved down to slot 0");
        let mut scheduler = Scheduler::default();
        scheduler.pass(&state, stored + 1_600).await;
        assert_eq!(delivered(&state), ["first", "second"]);
        state.store.shutdown();
    }
}
