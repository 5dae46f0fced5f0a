//! Trace emission: the broker records what happened to every message (Pub, Store, Replicate,
//! Deliver), the detours some take (DelaySchedule, DelayFire, Retry, DeadLetter, TxCommit,
//! TxRollback: see [`TraceEmitter::step`]) and what clients report (SubBefore, SubAfter), and
//! writes it to the system trace topic [`TRACE_TOPIC`] of its own store, batched.
//!
//! The send and pull paths pay one short-locked push into a bounded buffer ([`TraceEmitter`]): no
//! encoding, no allocation per message, no I/O. A stored message's Pub event is a fixed-size row
//! (`trace/pubs.rs`); other events are entries pointing at bytes the path already holds. A flusher
//! task encodes the buffer every `flush_interval_ms` as [`TraceBatch`] messages (the rows as
//! [`meridian_proto::trace::PubColumns`], the entries as events written field by field,
//! `trace/encode.rs`) and appends them. When the buffer is full, events are dropped and counted
//! (`meridian_broker_trace_events_dropped`) with a log line at most every 10 s: tracing never
//! blocks a producer.
//!
//! Only a writable master appends: a slave's log is a copy of its master's, so a slave's own
//! events (pulls it served) are dropped and counted as `not_master`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_proto::messages::{MessageData, PullResponse, SendResult};
use meridian_proto::properties::{self, KEY_SEPARATOR};
use meridian_proto::record::Record;
use meridian_proto::throttle::Throttle;
use meridian_proto::time::now_millis;
use meridian_proto::topics::{DELAY_TOPIC, HALF_TOPIC};
use meridian_proto::trace::{
    MAX_REPORT_EVENTS, ServerStats, TRACE_TOPIC, TraceBatch, TraceError, TraceEvent, TraceStatus, TraceType,
    check_event, is_system_topic,
};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::metrics::BrokerMetrics;
use crate::replication::Replication;
use crate::store::MessageStore;

mod encode;
mod identity;
mod pubs;
pub mod recover;
use encode::{BatchEncoder, Described, Placed, StoredProperties};
use pubs::PubRows;

pub use crate::config::TraceConfig;
pub use crate::metrics::{DropLabels, TraceMetrics};
pub use identity::Identity;

/// What the hot paths hand over besides the rows of stored messages ([`PubRows`]): references to
/// bytes they already hold, nothing encoded.
enum Pending {
    /// A message waiting in a system topic (delayed or half) was stored: becomes its Pub, which
    /// carries where and when it was stored, a Store in the system topic and, for a delay, a
    /// DelaySchedule.
    Stored {
        topic: Arc<str>,
        group: Arc<str>,
        client_host: SocketAddr,
        /// The properties (real topic, due time, keys, tag, producer group), pointing into the
        /// received frame's buffer until the flush; the body is not kept.
        properties: Bytes,
        born_timestamp: i64,
        body_size: u32,
        reconsume_count: u32,
        result: SendResult,
    },
    /// A stored message met its ack policy.
    Replicated {
        topic: Arc<str>,
        result: SendResult,
        acked_at: i64,
    },
    /// A pull answered with these records (a `PullResponse` body).
    Delivered {
        group: String,
        client_host: SocketAddr,
        response: Bytes,
        delivered_at: i64,
    },
    /// Events a client reported, already checked.
    Reported(Box<TraceEvent>),
    /// A step the broker took with a stored message ([`TraceEmitter::step`]); the flusher adds
    /// the event id, the broker's identity and its load.
    Step(Box<TraceEvent>),
}

/// A step the broker took with a stored message, for [`TraceEmitter::step`].
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// What happened.
    pub kind: TraceType,
    /// The topic whose tracing settings decide (the one the producer sent to; a retry's first
    /// topic).
    pub user_topic: &'a str,
    /// The topic the message is in after the step.
    pub topic: &'a str,
    /// Where it was appended by the step (none for a rollback, which appends no copy).
    pub placed: Option<&'a SendResult>,
    /// Producer group (transactions) or consumer group (retries, dead letters).
    pub group: &'a str,
    /// When the message is due (DelaySchedule, DelayFire, Retry), or 0.
    pub deliver_at: i64,
    /// What went wrong, for a step that ends the message's normal life (empty: nothing).
    pub error: &'a str,
}

impl Pending {
    /// Events this entry becomes (for buffer accounting).
    fn weight(&self) -> usize {
        match self {
            // Pub, Store and DelaySchedule.
            Pending::Stored { topic, .. } if &**topic == DELAY_TOPIC => 3,
            Pending::Stored { topic, .. } if &**topic == HALF_TOPIC => 2,
            Pending::Stored { .. } => 1,
            _ => 1,
        }
    }
}

/// What waits for the flusher: the Pub events of stored messages as rows, everything else as
/// entries.
#[derive(Default)]
struct Buffer {
    pubs: PubRows,
    entries: Vec<Pending>,
    /// Events the rows and entries become (what `buffer_events` bounds).
    events: usize,
}

impl Buffer {
    /// Whether `weight` more events fit under `limit`; if so, they are counted.
    fn admit(&mut self, weight: usize, limit: usize) -> bool {
        let fits = self.events + weight <= limit;
        if fits {
            self.events += weight;
        }
        fits
    }
}

/// Most rows or entries a drained buffer may hold for reuse; a larger one (after a burst) is freed.
const SPARE_ENTRIES: usize = 64 * 1024;

/// One of the emitter's buffers. Each thread of the hot paths keeps to one shard, and there are as
/// many shards as CPUs, so two threads rarely take one lock or hand each other its cache lines
/// (aligned apart so neighbouring shards share none).
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    pending: Mutex<Buffer>,
    /// The buffer the flusher drained last, kept so the next one starts with its capacity rather
    /// than growing (and copying its entries) again every flush.
    spare: Mutex<Buffer>,
}

impl Shard {
    /// Takes what is buffered, leaving the spare buffer in its place.
    fn take(&self) -> Buffer {
        let spare = std::mem::take(&mut *self.spare.lock().expect("trace spare lock"));
        std::mem::replace(&mut *self.pending.lock().expect("trace buffer lock"), spare)
    }

    /// Hands a drained buffer back for the next [`Shard::take`].
    fn give_back(&self, mut drained: Buffer) {
        drained.entries.clear();
        drained.pubs.clear();
        drained.events = 0;
        if drained.entries.capacity() <= SPARE_ENTRIES && drained.pubs.capacity() <= SPARE_ENTRIES {
            *self.spare.lock().expect("trace spare lock") = drained;
        }
    }
}

/// The bounded buffers between the hot paths and the flusher.
pub struct TraceEmitter {
    config: TraceConfig,
    excluded: HashSet<String>,
    identity: Identity,
    shards: Box<[Shard]>,
    /// Most events one shard holds (`buffer_events` shared out).
    shard_events: usize,
    metrics: Arc<TraceMetrics>,
    /// The "trace events dropped" warning, at most every 10 s.
    drop_log: Throttle,
    /// Sum and count of store-to-ack times since the last stats sample, in µs.
    replication_latency: (AtomicU64, AtomicU64),
}

impl TraceEmitter {
    /// An emitter for a broker with this identity, with a buffer per CPU.
    pub fn new(config: TraceConfig, identity: Identity, metrics: Arc<TraceMetrics>) -> TraceEmitter {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        TraceEmitter::with_shards(config, identity, metrics, cpus)
    }

    fn with_shards(config: TraceConfig, identity: Identity, metrics: Arc<TraceMetrics>, shards: usize) -> TraceEmitter {
        let shards = shards.max(1);
        TraceEmitter {
            excluded: config.exclude_topics.iter().cloned().collect(),
            shard_events: config.buffer_events.div_ceil(shards),
            shards: (0..shards).map(|_| Shard::default()).collect(),
            config,
            identity,
            metrics,
            drop_log: Throttle::new(Duration::from_secs(10)),
            replication_latency: (AtomicU64::new(0), AtomicU64::new(0)),
        }
    }

    /// Whether messages of `topic` are traced.
    pub fn traces(&self, topic: &str) -> bool {
        self.config.enabled && !is_system_topic(topic) && !self.excluded.contains(topic)
    }

    /// The metrics.
    pub fn metrics(&self) -> &TraceMetrics {
        &self.metrics
    }

    fn drop_events(&self, reason: &'static str, count: usize) {
        self.metrics
            .events_dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(count as u64);
        if let Some(drops_not_logged) = self.drop_log.due() {
            tracing::warn!(
                reason,
                count,
                drops_not_logged,
                buffer_events = self.config.buffer_events,
                "trace events dropped (meridian_broker_trace_events_dropped counts them all)"
            );
        }
    }

    /// The buffer of the calling thread.
    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        static THREADS: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static THREAD: usize = THREADS.fetch_add(1, Ordering::Relaxed);
        }
        let shard = THREAD.with(|thread| *thread) % self.shards.len();
        self.shards[shard].pending.lock().expect("trace buffer lock")
    }

    /// Adds `entries` to the calling thread's buffer, dropping (and counting) what does not fit.
    fn push(&self, entries: impl Iterator<Item = Pending>) {
        let mut pending = self.buffer();
        let mut dropped = 0;
        for entry in entries {
            let weight = entry.weight();
            if pending.admit(weight, self.shard_events) {
                pending.entries.push(entry);
            } else {
                dropped += weight;
            }
        }
        drop(pending);
        self.dropped(dropped);
    }

    /// Counts `dropped` events for lack of room.
    fn dropped(&self, dropped: usize) {
        if dropped > 0 {
            self.drop_events("buffer_full", dropped);
        }
    }

    /// Records that `messages` of one send were stored with `results` (same order; taken, as
    /// the send path has no more use for them once its answer is encoded). A message stored as
    /// sent becomes a row ([`PubRows`]); one waiting in a system topic (delayed or half) an
    /// entry, as its Store and DelaySchedule need its properties.
    pub fn stored(
        &self,
        topic: &str,
        group: &str,
        client_host: SocketAddr,
        messages: &[MessageData],
        results: Vec<SendResult>,
    ) {
        if !self.traces(topic) {
            return;
        }
        let limit = self.shard_events;
        let mut pending = self.buffer();
        let mut dropped = 0;
        for (message, result) in messages.iter().zip(results) {
            let props = StoredProperties::read(&message.properties);
            let group = if group.is_empty() { props.producer_group } else { group };
            if props.real_topic.is_none() && pending.admit(1, limit) {
                if pending
                    .pubs
                    .push(topic, group, client_host, message, props.keys, props.tags, &result)
                {
                    continue;
                }
                pending.events -= 1;
            }
            let entry = Pending::Stored {
                topic: Arc::from(topic),
                group: Arc::from(group),
                client_host,
                properties: message.properties.clone(),
                born_timestamp: message.born_timestamp,
                body_size: message.body.len() as u32,
                reconsume_count: message.reconsume_count,
                result,
            };
            let weight = entry.weight();
            if pending.admit(weight, limit) {
                pending.entries.push(entry);
            } else {
                dropped += weight;
            }
        }
        drop(pending);
        self.dropped(dropped);
    }

    /// Records that the messages of one send met their ack policy now.
    pub fn replicated(&self, topic: &str, results: &[SendResult]) {
        if !self.traces(topic) {
            return;
        }
        let acked_at = now_millis();
        let topic: Arc<str> = Arc::from(topic);
        self.push(results.iter().map(|result| Pending::Replicated {
            topic: topic.clone(),
            result: result.clone(),
            acked_at,
        }));
    }

    /// Records that a pull of `topic` by `group` was answered with `response` (a `PullResponse`).
    pub fn delivered(&self, topic: &str, group: &str, client_host: SocketAddr, response: &Bytes) {
        if !self.traces(topic) {
            return;
        }
        self.push(std::iter::once(Pending::Delivered {
            group: group.to_owned(),
            client_host,
            response: response.clone(),
            delivered_at: now_millis(),
        }));
    }

    /// Records a step the broker took with a stored message: `record` as it was read before the
    /// step, `step` what happened and where the message is now. Off the send path (retries,
    /// delay releases and transaction ends), so the event is built here, not by the flusher.
    pub fn step(&self, record: &Record<'_>, step: Step<'_>) {
        if !self.traces(step.user_topic) {
            return;
        }
        let now = now_millis();
        let mut event = TraceEvent {
            trace_type: step.kind as i32,
            timestamp: now,
            msg_id: record.msg_id().unwrap_or_default().to_owned(),
            topic: step.topic.to_owned(),
            keys: keys_of(record.properties()),
            tags: record.tag().unwrap_or("").to_owned(),
            group: step.group.to_owned(),
            born_timestamp: record.born_timestamp(),
            body_size: record.body().len() as u32,
            reconsume_count: record.reconsume_count(),
            deliver_at_timestamp: step.deliver_at,
            error: step.error.to_owned(),
            status: if step.error.is_empty() {
                TraceStatus::Ok
            } else {
                TraceStatus::Failed
            } as i32,
            ..TraceEvent::default()
        };
        if let Some(placed) = step.placed {
            // Stamped with the copy's store time, which no delivery of it can precede.
            event.timestamp = placed.store_timestamp;
            event.queue_id = placed.queue_id;
            event.queue_offset = placed.queue_offset;
            event.commitlog_offset = placed.commitlog_offset;
            event.store_timestamp = placed.store_timestamp;
        }
        if step.kind == TraceType::DelayFire && step.deliver_at > 0 {
            // How late the message became visible.
            event.cost_us = (event.timestamp - step.deliver_at).max(0) as u64 * 1000;
        }
        self.push(std::iter::once(Pending::Step(Box::new(event))));
    }

    /// Takes a client's report ([`meridian_proto::RequestCode::TraceReport`]): a [`TraceBatch`] of
    /// client-side events. The broker stamps the client's address and its own identity. Refused
    /// whole when any event is malformed or of a type only brokers write.
    pub fn report(&self, body: Bytes, client_host: SocketAddr) -> std::result::Result<usize, TraceError> {
        let batch = TraceBatch::decode(body).map_err(|error| TraceError::Decode(error.to_string()))?;
        if batch.pubs.is_some() {
            self.metrics.reports_refused.inc();
            return Err(TraceError::Decode(
                "clients may report only SubBefore and SubAfter events, not Pub columns".into(),
            ));
        }
        let refuse = |index: usize, event: &TraceEvent, reason: String| {
            self.metrics.reports_refused.inc();
            TraceError::Event {
                index,
                event_id: event.event_id.clone(),
                reason,
            }
        };
        if batch.events.len() > MAX_REPORT_EVENTS {
            self.metrics.reports_refused.inc();
            return Err(TraceError::Decode(format!(
                "a trace report holds {} events, over the limit of {MAX_REPORT_EVENTS}; send smaller reports",
                batch.events.len()
            )));
        }
        for (index, event) in batch.events.iter().enumerate() {
            check_event(event).map_err(|reason| refuse(index, event, reason))?;
            if !event.kind().is_client_side() {
                return Err(refuse(
                    index,
                    event,
                    format!(
                        "clients may report only SubBefore and SubAfter events, not {}",
                        event.kind().name()
                    ),
                ));
            }
        }
        let count = batch.events.len();
        let host = client_host.to_string();
        self.push(
            batch
                .events
                .into_iter()
                .filter(|event| self.traces(&event.topic))
                .map(|mut event| {
                    event.client_host = host.clone();
                    if event.broker_name.is_empty() {
                        event.broker_name = self.identity.broker_name.clone();
                    }
                    Pending::Reported(Box::new(event))
                }),
        );
        Ok(count)
    }

    /// Turns what was buffered into trace-topic message bodies with their event counts (the
    /// flusher's work, off the hot path), draining its entries.
    fn encode(&self, drained: &mut Buffer, stats: &ServerStats, batches: &mut Vec<(Bytes, usize)>) {
        drained
            .pubs
            .encode(&self.identity, stats, self.config.batch_events, batches);
        let mut encoder = BatchEncoder::new(&self.identity, stats, self.config.batch_events);
        for entry in drained.entries.drain(..) {
            match entry {
                Pending::Stored {
                    topic,
                    group,
                    client_host,
                    properties,
                    born_timestamp,
                    body_size,
                    reconsume_count,
                    result,
                } => {
                    let props = StoredProperties::read(&properties);
                    if props.real_topic.is_some_and(|real| !self.traces(real)) {
                        // A delayed or half message of an excluded topic.
                        continue;
                    }
                    // The topic the producer sent to, which a delayed or half message keeps in a
                    // property while it waits in a system topic.
                    let placed = Placed::of(&result, props.real_topic.unwrap_or(&topic));
                    let described = Described {
                        keys: props.keys,
                        tags: props.tags,
                        group: if group.is_empty() { props.producer_group } else { &group },
                        client_host,
                        born_timestamp,
                        body_size,
                        reconsume_count,
                    };
                    // The Pub event carries the store time and offsets: a timeline shows it as both
                    // steps (half the events of a Pub and a Store, RocketMQ's one Pub trace per
                    // message). A delayed or half message also gets a Store naming the system
                    // topic it waits in.
                    let deliver_at = (&*topic == DELAY_TOPIC).then(|| props.deliver_at.parse().unwrap_or(0));
                    encoder.stored(&placed, &described, props.real_topic.map(|_| &*topic), deliver_at);
                }
                Pending::Replicated {
                    topic,
                    result,
                    acked_at,
                } => {
                    let cost_us = (acked_at - result.store_timestamp).max(0) as u64 * 1000;
                    self.replication_latency.0.fetch_add(cost_us, Ordering::Relaxed);
                    self.replication_latency.1.fetch_add(1, Ordering::Relaxed);
                    let placed = Placed::of(&result, &topic);
                    encoder.replicated(&placed, acked_at, cost_us);
                }
                Pending::Delivered {
                    group,
                    client_host,
                    response,
                    delivered_at,
                } => {
                    let Ok(response) = PullResponse::decode(response) else {
                        continue;
                    };
                    let mut records = &response.records[..];
                    while let Ok(record) = Record::parse(records) {
                        records = &records[record.total_size()..];
                        let placed = Placed {
                            msg_id: record.msg_id().unwrap_or(""),
                            topic: record.topic(),
                            queue_id: record.queue_id(),
                            queue_offset: record.queue_offset(),
                            commitlog_offset: record.commitlog_offset(),
                            store_timestamp: record.store_timestamp(),
                        };
                        let described = Described {
                            keys: properties::get(record.properties(), properties::KEYS),
                            tags: record.tag().unwrap_or(""),
                            group: &group,
                            client_host,
                            born_timestamp: record.born_timestamp(),
                            body_size: record.body().len() as u32,
                            reconsume_count: record.reconsume_count(),
                        };
                        encoder.delivered(&placed, &described, delivered_at);
                    }
                }
                Pending::Reported(event) => encoder.event(&event, false),
                Pending::Step(event) => encoder.event(&event, true),
            }
        }
        batches.extend(encoder.finish());
    }
}

/// The keys in a message's encoded properties.
fn keys_of(props: &[u8]) -> Vec<String> {
    properties::get(props, properties::KEYS)
        .map(|keys| {
            keys.split(KEY_SEPARATOR)
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Samples the broker's load for [`ServerStats`].
struct StatsSampler {
    data_dir: PathBuf,
    at: Instant,
    stored: u64,
    pulled: u64,
    current: ServerStats,
}

impl StatsSampler {
    fn new(data_dir: PathBuf, metrics: &BrokerMetrics) -> StatsSampler {
        StatsSampler {
            data_dir,
            at: Instant::now(),
            stored: metrics.messages_stored.get(),
            pulled: metrics.messages_pulled.get(),
            current: ServerStats::default(),
        }
    }

    /// The stats, sampled again when the last sample is a second old.
    fn sample(&mut self, metrics: &BrokerMetrics, emitter: &TraceEmitter) -> &ServerStats {
        let elapsed = self.at.elapsed();
        if elapsed < Duration::from_secs(1) {
            return &self.current;
        }
        let seconds = elapsed.as_secs_f64();
        let (stored, pulled) = (metrics.messages_stored.get(), metrics.messages_pulled.get());
        let flush_sum = metrics.trace.flushes.0.swap(0, Ordering::Relaxed);
        let flushes = metrics.trace.flushes.1.swap(0, Ordering::Relaxed);
        let replication_sum = emitter.replication_latency.0.swap(0, Ordering::Relaxed);
        let replications = emitter.replication_latency.1.swap(0, Ordering::Relaxed);
        self.current = ServerStats {
            send_tps: stored.saturating_sub(self.stored) as f64 / seconds,
            pull_tps: pulled.saturating_sub(self.pulled) as f64 / seconds,
            cpu_load: cpu_load(),
            disk_used_ratio: disk_used_ratio(&self.data_dir),
            flush_latency_us: flush_sum.checked_div(flushes).unwrap_or(0),
            replication_latency_us: replication_sum.checked_div(replications).unwrap_or(0),
        };
        (self.at, self.stored, self.pulled) = (Instant::now(), stored, pulled);
        &self.current
    }
}

/// One-minute load average per CPU (0 where /proc/loadavg is missing).
fn cpu_load() -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |count| count.get()) as f64;
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |load| load / cpus)
}

/// Share of the filesystem holding `dir` in use (0 when it cannot be read).
fn disk_used_ratio(dir: &std::path::Path) -> f64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0.0;
    };
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stats` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 || stats.f_blocks == 0 {
        return 0.0;
    }
    1.0 - stats.f_bavail as f64 / stats.f_blocks as f64
}

/// Creates the trace topic if the store lacks it (every broker, master or slave: a slave's
/// dispatcher needs the topic to index what it replicates).
pub fn ensure_topic(store: &MessageStore) -> Result<()> {
    if store.topic_queues(TRACE_TOPIC).is_none() {
        store.create_topic(TRACE_TOPIC, meridian_proto::trace::TRACE_TOPIC_QUEUES)?;
    }
    Ok(())
}

/// Appends encoded trace batches (bodies with their event counts) to the trace topic, each
/// record carrying `properties` (the trace watermark, `trace/recover.rs`). Returns whether every
/// batch was written.
fn write(
    emitter: &TraceEmitter,
    store: &MessageStore,
    replication: &Replication,
    self_addr: SocketAddr,
    batches: Vec<(Bytes, usize)>,
    properties: impl FnOnce() -> Bytes,
) -> bool {
    if batches.is_empty() {
        return true;
    }
    if replication.check_writable().is_err() {
        emitter.drop_events("not_master", batches.iter().map(|(_, count)| count).sum());
        return false;
    }
    let properties = properties();
    let mut written = true;
    let born = now_millis();
    // One append (one `pwrite`) per record: appending a flush's records together in one large
    // write measured slower (the kernel's copy into the page cache took several times longer
    // per byte for 256 KB writes than for the records' 16 KB), as did 512-event records.
    for (body, count) in batches {
        let message = MessageData {
            flags: 0,
            born_timestamp: born,
            properties: properties.clone(),
            body,
            reconsume_count: 0,
        };
        match store.append(TRACE_TOPIC, None, std::slice::from_ref(&message), self_addr) {
            Ok(_) => {
                emitter.metrics.events_written.inc_by(count as u64);
                emitter.metrics.batches_written.inc();
            }
            Err(error) => {
                tracing::warn!(%error, count, "writing trace events failed");
                emitter.drop_events("write_failed", count);
                written = false;
            }
        }
    }
    replication.notify_appended();
    written
}

/// Events dropped for lack of room or a failed write so far: what the trace watermark must not
/// pass (`not_master` drops are a slave's, whose log its master traces).
fn lost_events(emitter: &TraceEmitter) -> u64 {
    ["buffer_full", "write_failed"]
        .into_iter()
        .map(|reason| {
            emitter
                .metrics
                .events_dropped
                .get_or_create(&DropLabels { reason })
                .get()
        })
        .sum()
}

/// Derives the Pub events lost with a crash or a failover from the log (`trace/recover.rs`) and
/// writes them: from the trace watermark of the last trace record in the log to `end`. Returns
/// the watermark to carry on from, or `None` when the scan failed (the next round tries again).
async fn recover(
    emitter: &Arc<TraceEmitter>,
    store: &Arc<MessageStore>,
    replication: &Replication,
    self_addr: SocketAddr,
    end: u64,
    stats: ServerStats,
) -> Option<u64> {
    let (emitter_c, store_c) = (emitter.clone(), store.clone());
    let derived = tokio::task::spawn_blocking(move || {
        let from = recover::last_watermark(&store_c);
        let (batches, reached) = recover::derive(
            &emitter_c.identity,
            emitter_c.config.batch_events,
            &|topic| emitter_c.traces(topic),
            &store_c,
            from,
            end,
            &stats,
        );
        (from, batches, reached)
    })
    .await;
    let Ok((from, batches, reached)) = derived else {
        tracing::warn!("trace recovery task failed; the next flush tries again");
        return None;
    };
    let events: usize = batches.iter().map(|(_, count)| count).sum();
    let written = write(emitter, store, replication, self_addr, batches, || {
        recover::watermark_properties(from)
    });
    if written {
        emitter.metrics.events_recovered.inc_by(events as u64);
    }
    if events > 0 {
        tracing::info!(
            from,
            to = reached,
            events,
            written,
            "trace recovery derived the pub events of stored messages from the log"
        );
    }
    Some(if written { reached } else { from })
}

/// The flusher: every `flush_interval_ms`, writes what is buffered. Runs
/// until `stop`, then writes what is left.
pub async fn flush_loop(
    emitter: Arc<TraceEmitter>,
    store: Arc<MessageStore>,
    replication: Arc<Replication>,
    metrics: Arc<BrokerMetrics>,
    data_dir: PathBuf,
    self_addr: SocketAddr,
    stop: CancellationToken,
) {
    let interval = Duration::from_millis(emitter.config.flush_interval_ms);
    let mut sampler = StatsSampler::new(data_dir, &metrics);
    let mut gate = recover::RecoveryGate::default();
    let mut watermark = recover::Watermark::default();
    let mut lost_before = lost_events(&emitter);
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        // Read before the buffers are taken: what was appended before this is buffered by the
        // next round (see `recover::Watermark`).
        let end = store.committed_offset();
        if emitter.config.enabled && replication.check_writable().is_ok() && gate.due(&replication.role()) {
            let stats = sampler.sample(&metrics, &emitter).clone();
            match recover(&emitter, &store, &replication, self_addr, end, stats).await {
                Some(covered) => watermark = recover::Watermark::at(covered),
                None => gate = recover::RecoveryGate::default(),
            }
            lost_before = lost_events(&emitter);
        }
        let mut batches = Vec::new();
        let mut waiting = 0;
        let mut stats = None;
        for shard in &emitter.shards {
            let mut drained = shard.take();
            if drained.events > 0 {
                waiting += drained.events;
                let stats = stats.get_or_insert_with(|| sampler.sample(&metrics, &emitter).clone());
                emitter.encode(&mut drained, stats, &mut batches);
            }
            shard.give_back(drained);
        }
        emitter.metrics.buffered.set(waiting as i64);
        let covered = watermark.covered;
        write(&emitter, &store, &replication, self_addr, batches, || {
            recover::watermark_properties(covered)
        });
        let lost = lost_events(&emitter);
        watermark.round(end, lost != lost_before);
        lost_before = lost;
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::MessageId;
    use meridian_proto::properties::{DELIVER_AT, REAL_TOPIC};
    use meridian_proto::trace::TraceStatus;

    /// An emitter with one buffer, as the tests' one thread uses only one.
    fn emitter(buffer_events: usize) -> TraceEmitter {
        TraceEmitter::with_shards(
            TraceConfig {
                buffer_events,
                exclude_topics: vec!["quiet".into()],
                ..TraceConfig::default()
            },
            Identity {
                broker_name: "broker-a".into(),
                member: "a-0".into(),
                host: "127.0.0.1:7911".into(),
                idc: "dc1".into(),
            },
            Arc::default(),
            1,
        )
    }

    fn message(keys: &[&str]) -> MessageData {
        let mut props = properties::PropertiesBuilder::new();
        props.keys(keys).unwrap();
        props.tag("created").unwrap();
        MessageData {
            flags: 0,
            born_timestamp: 1_000,
            properties: Bytes::from(props.finish()),
            body: Bytes::from_static(b"hello"),
            reconsume_count: 0,
        }
    }

    /// What the flusher would write for everything buffered.
    fn encoded(emitter: &TraceEmitter) -> Vec<(Bytes, usize)> {
        let mut batches = Vec::new();
        for shard in &emitter.shards {
            emitter.encode(&mut shard.take(), &ServerStats::default(), &mut batches);
        }
        batches
    }

    /// [`encoded`], decoded.
    fn encoded_events(emitter: &TraceEmitter) -> Vec<TraceEvent> {
        encoded(emitter)
            .into_iter()
            .flat_map(|(body, _)| meridian_proto::trace::decode_batch(body).unwrap().events)
            .collect()
    }

    /// Events buffered, taking them.
    fn taken_events(emitter: &TraceEmitter) -> usize {
        emitter.shards.iter().map(|shard| shard.take().events).sum()
    }

    fn result(offset: u64) -> SendResult {
        SendResult {
            msg_id: MessageId::generate().to_string(),
            queue_id: 1,
            queue_offset: offset,
            commitlog_offset: offset * 100,
            store_timestamp: 1_002,
        }
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_blocking() {
        let emitter = emitter(5);
        let host = "10.0.0.9:4000".parse().unwrap();
        let messages = vec![message(&["k"]); 8];
        let results: Vec<_> = (0..8).map(result).collect();
        emitter.stored("orders", "shop", host, &messages, results.clone());
        // One event per stored message: five fit, the other three are dropped.
        let dropped = emitter
            .metrics
            .events_dropped
            .get_or_create(&DropLabels { reason: "buffer_full" })
            .get();
        assert_eq!(dropped, 3);
        assert_eq!(taken_events(&emitter), 5);
        emitter.stored("quiet", "shop", host, &messages, results.clone());
        emitter.stored(TRACE_TOPIC, "", host, &messages, results);
        assert_eq!(taken_events(&emitter), 0, "opted-out and system topics are not traced");
    }

    #[test]
    fn a_stored_message_becomes_one_valid_pub_event_with_its_store_time_and_offsets() {
        let emitter = emitter(100);
        let host = "10.0.0.9:4000".parse().unwrap();
        emitter.stored(
            "orders",
            "shop",
            host,
            &[message(&["order-1", "cust-7"])],
            vec![result(3)],
        );
        let events = encoded_events(&emitter);
        assert_eq!(
            events.iter().map(TraceEvent::kind).collect::<Vec<_>>(),
            [TraceType::Pub]
        );
        for event in &events {
            check_event(event).unwrap();
            assert_eq!(event.keys, ["order-1", "cust-7"]);
            assert_eq!((event.tags.as_str(), event.group.as_str()), ("created", "shop"));
            assert_eq!(
                (event.client_host.as_str(), event.idc.as_str()),
                ("10.0.0.9:4000", "dc1")
            );
            assert_eq!((event.queue_offset, event.commitlog_offset), (3, 300));
        }
        assert_eq!((events[0].timestamp, events[0].store_timestamp), (1_000, 1_002));
        assert_eq!(events[0].topic, "orders");
    }

    #[test]
    fn rows_become_the_events_the_field_by_field_encoder_writes() {
        let emitter = emitter(100);
        let host: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let messages = [message(&["order-1", "cust-7"]), message(&[]), message(&["x"])];
        let results: Vec<_> = (0..3).map(result).collect();
        emitter.stored("orders", "shop", host, &messages, results.clone());
        let mut from_rows = encoded_events(&emitter);
        let mut expected = BatchEncoder::new(&emitter.identity, &ServerStats::default(), 64);
        for (message, result) in messages.iter().zip(&results) {
            let props = StoredProperties::read(&message.properties);
            let placed = Placed::of(result, "orders");
            let described = Described {
                keys: props.keys,
                tags: props.tags,
                group: "shop",
                client_host: host,
                born_timestamp: message.born_timestamp,
                body_size: message.body.len() as u32,
                reconsume_count: message.reconsume_count,
            };
            expected.stored(&placed, &described, None, None);
        }
        let mut expected: Vec<TraceEvent> = expected
            .finish()
            .into_iter()
            .flat_map(|(body, _)| meridian_proto::trace::decode_batch(body).unwrap().events)
            .collect();
        assert_eq!(from_rows.len(), 3);
        let event_ids: HashSet<_> = from_rows.iter().map(|event| event.event_id.clone()).collect();
        assert_eq!(event_ids.len(), 3, "every event has its own id");
        for event in from_rows.iter_mut().chain(&mut expected) {
            event.event_id.clear();
        }
        assert_eq!(from_rows, expected);
    }

    #[test]
    fn the_flusher_takes_the_events_of_every_thread_from_every_buffer() {
        let identity = Identity {
            broker_name: "broker-a".into(),
            ..Identity::default()
        };
        let emitter = TraceEmitter::with_shards(TraceConfig::default(), identity, Arc::default(), 2);
        let host: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let emitter = &emitter;
                scope.spawn(move || {
                    for send in 0..100 {
                        emitter.stored(
                            "orders",
                            "shop",
                            host,
                            &[message(&[])],
                            vec![result(thread * 1000 + send)],
                        );
                    }
                });
            }
        });
        let mut offsets: Vec<u64> = encoded_events(&emitter)
            .iter()
            .map(|event| event.queue_offset)
            .collect();
        offsets.sort_unstable();
        let sent: Vec<u64> = (0..4)
            .flat_map(|thread| (0..100).map(move |send| thread * 1000 + send))
            .collect();
        assert_eq!(offsets, sent);
    }

    #[test]
    fn rows_of_many_sends_keep_their_own_names_across_records() {
        let emitter = TraceEmitter::new(
            TraceConfig {
                batch_events: 4,
                ..TraceConfig::default()
            },
            Identity {
                broker_name: "broker-a".into(),
                ..Identity::default()
            },
            Arc::default(),
        );
        let mut sent = Vec::new();
        for send in 0..10u64 {
            let topic = format!("topic-{}", send % 3);
            let group = if send % 2 == 0 { "shop" } else { "" };
            let host: SocketAddr = format!("10.0.0.{}:4000", send % 4).parse().unwrap();
            emitter.stored(&topic, group, host, &[message(&["k"])], vec![result(send)]);
            sent.push((topic, group, host.to_string(), send));
        }
        let batches = encoded(&emitter);
        assert_eq!(batches.iter().map(|(_, count)| *count).collect::<Vec<_>>(), [4, 4, 2]);
        let events: Vec<TraceEvent> = batches
            .into_iter()
            .flat_map(|(body, _)| meridian_proto::trace::decode_batch(body).unwrap().events)
            .collect();
        let seen: Vec<_> = events
            .iter()
            .map(|event| {
                (
                    event.topic.clone(),
                    event.group.as_str(),
                    event.client_host.clone(),
                    event.queue_offset,
                )
            })
            .collect();
        assert_eq!(seen, sent);
    }

    #[test]
    fn a_delayed_message_is_pub_in_its_topic_and_store_and_schedule_in_its_delay_slot() {
        let emitter = emitter(100);
        let host = "10.0.0.9:4000".parse().unwrap();
        let mut delayed = message(&["order-1"]);
        let mut builder = properties::PropertiesBuilder::new();
        builder.copy_except(&delayed.properties, &[]);
        builder.system(REAL_TOPIC, "orders");
        builder.system(DELIVER_AT, "61002");
        delayed.properties = Bytes::from(builder.finish());
        emitter.stored(DELAY_TOPIC, "shop", host, &[delayed], vec![result(3)]);
        let events = encoded_events(&emitter);
        let steps: Vec<_> = events
            .iter()
            .map(|event| (event.kind(), event.topic.as_str(), event.deliver_at_timestamp))
            .collect();
        assert_eq!(
            steps,
            [
                (TraceType::Pub, "orders", 0),
                (TraceType::Store, DELAY_TOPIC, 0),
                (TraceType::DelaySchedule, DELAY_TOPIC, 61_002),
            ]
        );
        for event in &events {
            check_event(event).unwrap();
        }
    }

    #[test]
    fn client_reports_take_only_valid_client_side_events() {
        let emitter = emitter(100);
        let host: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let event = |kind: TraceType| TraceEvent {
            event_id: MessageId::generate().to_string(),
            trace_type: kind as i32,
            timestamp: 5,
            msg_id: MessageId::generate().to_string(),
            topic: "orders".into(),
            status: TraceStatus::Ok as i32,
            ..TraceEvent::default()
        };
        let body = |events: Vec<TraceEvent>| Bytes::from(TraceBatch::from(events).encode_to_vec());
        assert_eq!(
            emitter.report(
                body(vec![event(TraceType::SubBefore), event(TraceType::SubAfter)]),
                host
            ),
            Ok(2)
        );
        let forged = TraceEvent {
            broker_name: "broker-a".into(),
            ..event(TraceType::Store)
        };
        let error = emitter.report(body(vec![forged]), host).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("clients may report only SubBefore and SubAfter"),
            "{error}"
        );
        assert!(emitter.report(Bytes::from_static(b"\xff\xff"), host).is_err());
        let columns = TraceBatch {
            events: vec![event(TraceType::SubAfter)],
            pubs: Some(meridian_proto::trace::PubColumns::default()),
        };
        let error = emitter.report(Bytes::from(columns.encode_to_vec()), host).unwrap_err();
        assert!(error.to_string().contains("not Pub columns"), "{error}");
        let taken = emitter.shards[0].take().entries;
        assert_eq!(taken.len(), 2);
        let Pending::Reported(first) = &taken[0] else {
            panic!("a reported event")
        };
        assert_eq!(
            (first.client_host.as_str(), first.broker_name.as_str()),
            ("10.0.0.9:4000", "broker-a")
        );
    }
}
