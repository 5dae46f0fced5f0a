//! The storage engine: the commitlog, consume queues, consumer offsets, flushing and recovery.
//!
//! [`MessageStore::open`] recovers and starts three threads: the dispatcher, which turns newly
//! confirmed records into consume queue entries; the flusher, which makes the commitlog durable
//! (periodically, or under `flush_mode = "sync"` as soon as anything is unsynced: group commit,
//! one `fdatasync` of the preallocated segment covers every send appended before it started,
//! while appends go on into the page cache for the next one); and the checkpointer, which syncs
//! consume queues and offsets and writes the checkpoint on its own thread, so no sync waits
//! behind it.
//!
//! Consumers see only what is **confirmed** ([`MessageStore::confirmed_offset`]): the dispatcher
//! indexes records only up to it, and every reader (pulls, push deliveries, retries, delayed
//! releases, the trace topic) reads consume queues. A record is confirmed once the group's ack
//! policy holds for it: synced under sync flush, held by the replicas the policy needs when the
//! broker is [replicated](StoreOptions::replicated). A failed sync or consume queue write is fatal
//! ([`MessageStore::failure`]): the store takes no more writes until a restart recovers it from
//! what is really on disk. Every durability call goes through [`Durability`].
//!
//! Data dir layout: `commitlog/`, `consumequeue/<topic>/<queue>/`, `checkpoint`, `offsets/`, `meta/`.

mod commitlog;
pub mod consume_queue;
mod durability;
mod epochs;
mod files;
mod offsets;
mod replica;
mod segment;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use meridian_proto::MessageId;
use meridian_proto::messages::{MessageData, SendResult};
use meridian_proto::properties::{self, MSG_ID};
use meridian_proto::record::{self, RecordFields};
use meridian_proto::time::now_millis;
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};
use crate::metrics::BrokerMetrics;
use commitlog::CommitLog;
pub use consume_queue::{ConsumeQueue, CqEntry};
pub use durability::{Durability, RealDisk};
use epochs::{EPOCHS_FILE, EpochFile};
pub(crate) use files::fsync_dir;
use offsets::ConsumerOffsets;

/// How often a busy dispatcher looks for new records: the most a record waits to be visible to
/// consumers while the broker is busy.
const DISPATCH_POLL: Duration = Duration::from_millis(1);
/// How long without records before the dispatcher sleeps until an append wakes it.
const DISPATCH_IDLE_AFTER: Duration = Duration::from_secs(1);

pub use crate::config::{FlushMode, StoreConfig};

/// Progress made durable together, so recovery knows where to start checking.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Checkpoint {
    /// Every record below this offset is synced and has its consume queue entries synced.
    safe_offset: u64,
    /// The confirmed offset when written (at least `safe_offset`). A replicated broker serves
    /// no more than this after a restart until its group confirms more. Absent in checkpoints of
    /// older versions, which served everything written: then `safe_offset`.
    #[serde(default)]
    confirmed_offset: Option<u64>,
    /// Unix ms when written (for operators).
    written_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct TopicsFile {
    topics: HashMap<String, TopicMeta>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct TopicMeta {
    queues: u32,
}

struct Topic {
    queues: Vec<Arc<ConsumeQueue>>,
}

/// Result of an append.
#[derive(Debug)]
pub struct Appended {
    /// One per message, in order.
    pub results: Vec<SendResult>,
    /// Commitlog offset just past the batch: wait for the flush to pass it under sync flush.
    pub end_offset: u64,
}

/// One send to append: messages for one queue of one topic.
#[derive(Debug, Clone, Copy)]
pub struct AppendRequest<'a> {
    /// Topic name (validated).
    pub topic: &'a str,
    /// Queue, or `None` to let the broker choose round robin.
    pub queue_id: Option<u32>,
    /// The messages (validated), stored with consecutive queue offsets.
    pub messages: &'a [MessageData],
    /// The producer's address.
    pub born_host: SocketAddr,
}

/// A message's id, and its properties with that id prepended when the broker had to generate it.
struct MessageIdentity {
    msg_id: String,
    generated_properties: Option<Vec<u8>>,
}

/// Finds the message's id, generating one (one properties scan per message) when it has none.
fn identify(message: &MessageData) -> MessageIdentity {
    if let Some(msg_id) = properties::get(&message.properties, MSG_ID) {
        return MessageIdentity {
            msg_id: msg_id.to_owned(),
            generated_properties: None,
        };
    }
    let msg_id = MessageId::generate().to_string();
    let mut encoded = Vec::with_capacity(message.properties.len() + 48);
    encoded.extend_from_slice(MSG_ID.as_bytes());
    encoded.push(1);
    encoded.extend_from_slice(msg_id.as_bytes());
    encoded.push(2);
    encoded.extend_from_slice(&message.properties);
    MessageIdentity {
        msg_id,
        generated_properties: Some(encoded),
    }
}

impl MessageIdentity {
    fn properties<'a>(&'a self, message: &'a MessageData) -> &'a [u8] {
        self.generated_properties.as_deref().unwrap_or(&message.properties)
    }
}

/// Min and max offsets of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBounds {
    /// Smallest readable offset.
    pub min_offset: u64,
    /// One past the largest.
    pub max_offset: u64,
}

/// What recovery did at startup, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Where checking started (the start of the segment holding the checkpoint).
    pub scanned_from: u64,
    /// End of the last valid record.
    pub valid_end: u64,
    /// Whether a torn or corrupt tail was cut off.
    pub torn_tail: bool,
    /// Records re-dispatched into consume queues.
    pub redispatched: u64,
}

/// How a store is opened beyond its config: who confirms its records, and its disk.
#[derive(Clone)]
pub struct StoreOptions {
    /// The broker's group acknowledges a send only once slaves hold it (a governed broker whose
    /// ack policy needs more than the master): records are confirmed only up to what the group
    /// reports ([`MessageStore::raise_replication_limit`]), and after a restart only up to the
    /// confirmed offset of the last checkpoint. Otherwise the broker alone decides: under sync
    /// flush what is synced (after a restart, every CRC-valid record recovery found, since that
    /// is what the disk holds), under async flush what is written.
    pub replicated: bool,
    /// How bytes are made durable: [`RealDisk`] outside tests.
    pub disk: Arc<dyn Durability>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            replicated: false,
            disk: Arc::new(RealDisk),
        }
    }
}

/// The storage engine. Shared as `Arc<MessageStore>`; call [`MessageStore::shutdown`] to stop it.
pub struct MessageStore {
    config: StoreConfig,
    disk: Arc<dyn Durability>,
    /// Whether confirmation waits for the group (see [`StoreOptions::replicated`]).
    replicated: bool,
    /// What the group confirmed (the master's acknowledged offset, or on a slave the master's
    /// confirmed offset). Only raised, except when a divergent tail is truncated.
    replication_limit: AtomicU64,
    /// Set once when a sync or a consume queue write fails: the store then takes no writes.
    failure: OnceLock<String>,
    /// Held while writing a checkpoint: the flusher and a truncation both write one, through
    /// the same temp files.
    checkpoint_lock: Mutex<()>,
    dir: PathBuf,
    store_host: SocketAddr,
    commitlog: CommitLog,
    topics: RwLock<HashMap<String, Topic>>,
    topics_lock: Mutex<()>,
    offsets: ConsumerOffsets,
    dispatched: AtomicU64,
    /// Held while dispatching, so truncation never races the dispatcher.
    dispatch_lock: Mutex<()>,
    /// The epoch state (`meta/epochs.json`).
    epochs: Mutex<EpochFile>,
    flushed: AtomicU64,
    /// Sync-mode sends waiting for the flusher, by the commitlog offset they need synced.
    flush_waiters: Mutex<BTreeMap<u64, Vec<tokio::sync::oneshot::Sender<()>>>>,
    next_queue: AtomicU32,
    stopping: AtomicBool,
    /// Set by tests to stop the threads the way a `kill -9` would: no last flush or checkpoint.
    crashed: AtomicBool,
    dispatcher: OnceLock<Thread>,
    /// Whether the dispatcher sleeps for long (nothing was written for a while): only then do
    /// appends wake it. While records keep coming it polls every [`DISPATCH_POLL`] instead.
    dispatcher_idle: AtomicBool,
    flusher: OnceLock<Thread>,
    /// Writes checkpoints every `checkpoint_interval_ms`: off the flusher, whose syncs
    /// acknowledgements wait for under sync flush.
    checkpointer: OnceLock<Thread>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<BrokerMetrics>,
    recovery: RecoveryReport,
    /// The archive, when archiving is on: offsets below a queue's local min are read from it.
    archive: OnceLock<Arc<meridian_archive::reader::ArchiveReader>>,
}

impl MessageStore {
    /// Opens the store in `dir` with the default [`StoreOptions`] (a lone broker on the real disk).
    pub fn open(
        dir: &Path,
        config: StoreConfig,
        store_host: SocketAddr,
        metrics: Arc<BrokerMetrics>,
    ) -> Result<Arc<MessageStore>> {
        MessageStore::open_with(dir, config, store_host, metrics, StoreOptions::default())
    }

    /// Opens the store in `dir`, recovers it and starts its threads.
    pub fn open_with(
        dir: &Path,
        config: StoreConfig,
        store_host: SocketAddr,
        metrics: Arc<BrokerMetrics>,
        options: StoreOptions,
    ) -> Result<Arc<MessageStore>> {
        let disk = options.disk.clone();
        std::fs::create_dir_all(dir).map_err(BrokerError::io(format!("creating data dir {}", dir.display())))?;
        let checkpoint: Option<Checkpoint> = match files::read_json(&dir.join("checkpoint")) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                tracing::warn!(%error, "checkpoint unreadable; checking the whole commitlog");
                None
            }
        };
        let scan_from = checkpoint.map_or(0, |checkpoint| checkpoint.safe_offset);

        let topics_file: TopicsFile = files::read_json(&dir.join("meta/topics.json"))?.unwrap_or_default();
        let mut epochs: EpochFile = files::read_json(&dir.join(EPOCHS_FILE))?.unwrap_or_default();
        // Next queue offset of every queue seen by the scan: records past the confirmed offset
        // have no consume queue entries yet, but their queue offsets are taken.
        let mut seen_queues: HashMap<String, Vec<u64>> = HashMap::new();
        let (commitlog, recovered) = CommitLog::open(
            &disk,
            &dir.join("commitlog"),
            config.segment_size,
            scan_from,
            |record, _| {
                let queues = seen_queues.entry(record.topic().to_owned()).or_default();
                let queue_id = record.queue_id() as usize;
                if queues.len() <= queue_id {
                    queues.resize(queue_id + 1, 0);
                }
                queues[queue_id] = queues[queue_id].max(record.queue_offset() + 1);
            },
        )?;
        // What consumers may see at once: see `StoreOptions::replicated`.
        let confirmed_at_open = if options.replicated {
            checkpoint
                .map_or(0, |checkpoint| {
                    checkpoint.confirmed_offset.unwrap_or(checkpoint.safe_offset)
                })
                .min(recovered.valid_end)
        } else {
            recovered.valid_end
        };
        // Consume queue entries below the checkpoint are durable; above it they are rebuilt. If
        // the log ends below the checkpoint (damage found in the current segment), from there.
        let redispatch_from = scan_from
            .clamp(commitlog.min_offset(), recovered.valid_end)
            .min(confirmed_at_open.max(commitlog.min_offset()));
        // An epoch begun past the recovered end has no records left: forget it.
        let epochs_before = epochs.epochs.len();
        epochs.epochs.retain(|(_, start)| *start <= recovered.valid_end);
        if epochs.epochs.len() != epochs_before {
            files::write_json(disk.as_ref(), &dir.join(EPOCHS_FILE), &epochs)?;
        }

        let mut metas = topics_file.topics.clone();
        for (topic, next_offsets) in &seen_queues {
            let queues = next_offsets.len() as u32;
            let meta = metas.entry(topic.clone()).or_insert(TopicMeta { queues });
            if meta.queues < queues {
                tracing::warn!(
                    topic,
                    queues,
                    "commitlog holds queues the topic metadata lacks; adding them"
                );
                meta.queues = queues;
            }
        }
        let mut topics = HashMap::new();
        for (name, meta) in &metas {
            let queues = (0..meta.queues)
                .map(|queue_id| {
                    ConsumeQueue::open(&cq_dir(dir, name, queue_id), config.cq_entries_per_file).map(Arc::new)
                })
                .collect::<Result<Vec<_>>>()?;
            for (queue_id, queue) in queues.iter().enumerate() {
                // An entry past the checkpoint may be garbage after a power loss; one below it was
                // synced. The last kept entry must point at this queue's record of that index.
                let points_at_its_record = |index: u64, entry: &CqEntry| {
                    commitlog
                        .with_bytes(entry.commitlog_offset, entry.size as usize, |bytes| {
                            record::Record::parse(bytes).is_ok_and(|found| {
                                found.total_size() == entry.size as usize
                                    && found.queue_offset() == index
                                    && found.queue_id() == queue_id as u32
                                    && found.topic() == name
                            })
                        })
                        .unwrap_or(false)
                };
                queue.recover_tail(redispatch_from, points_at_its_record)?;
                // Segments deleted after archiving: their entries are served from the archive.
                queue.advance_min(commitlog.min_offset())?;
            }
            topics.insert(name.clone(), Topic { queues });
        }

        let store = MessageStore {
            config,
            disk: disk.clone(),
            replicated: options.replicated,
            replication_limit: AtomicU64::new(confirmed_at_open),
            failure: OnceLock::new(),
            checkpoint_lock: Mutex::new(()),
            dir: dir.to_owned(),
            store_host,
            commitlog,
            topics: RwLock::new(topics),
            topics_lock: Mutex::new(()),
            offsets: ConsumerOffsets::load(dir.join("offsets/consumer_offsets.json"), disk.clone())?,
            dispatched: AtomicU64::new(redispatch_from),
            dispatch_lock: Mutex::new(()),
            epochs: Mutex::new(epochs),
            flushed: AtomicU64::new(recovered.valid_end),
            flush_waiters: Mutex::new(BTreeMap::new()),
            next_queue: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            dispatcher: OnceLock::new(),
            dispatcher_idle: AtomicBool::new(false),
            flusher: OnceLock::new(),
            checkpointer: OnceLock::new(),
            threads: Mutex::new(Vec::new()),
            metrics,
            archive: OnceLock::new(),
            recovery: RecoveryReport {
                scanned_from: recovered.scanned_from,
                valid_end: recovered.valid_end,
                torn_tail: recovered.torn_tail,
                redispatched: 0,
            },
        };
        if metas.len() != topics_file.topics.len()
            || metas
                .iter()
                .any(|(name, meta)| topics_file.topics.get(name).map(|old| old.queues) != Some(meta.queues))
        {
            store.write_topics_file(&metas)?;
        }
        let redispatched = store.dispatch(redispatch_from, confirmed_at_open.max(redispatch_from))?;
        store.commitlog.flush(recovered.scanned_from, recovered.valid_end)?;
        {
            let topics = store.topics.read().expect("topics lock");
            let mut writer = store.commitlog.lock_writer();
            for (name, topic) in topics.iter() {
                let scanned = seen_queues.get(name.as_str());
                let next_offsets: Vec<u64> = topic
                    .queues
                    .iter()
                    .enumerate()
                    .map(|(queue_id, queue)| {
                        let seen = scanned.and_then(|next| next.get(queue_id)).copied().unwrap_or(0);
                        queue.max_offset().max(seen)
                    })
                    .collect();
                for (queue_id, next) in next_offsets.iter().enumerate() {
                    store.offsets.clamp(name, queue_id as u32, *next);
                }
                writer.queue_offsets.insert(name.clone(), next_offsets);
            }
        }
        let mut store = store;
        store.recovery.redispatched = redispatched;
        store.checkpoint()?;
        tracing::info!(
            dir = %dir.display(),
            scanned_from = recovered.scanned_from,
            valid_end = recovered.valid_end,
            confirmed = confirmed_at_open,
            torn_tail = recovered.torn_tail,
            redispatched,
            "message store recovered"
        );

        let store = Arc::new(store);
        store.start_threads()?;
        Ok(store)
    }

    fn start_threads(self: &Arc<Self>) -> Result<()> {
        let mut threads = self.threads.lock().expect("threads lock");
        let dispatcher_store = self.clone();
        let dispatcher = thread::Builder::new()
            .name("meridian-dispatch".into())
            .spawn(move || dispatcher_store.dispatch_loop())
            .map_err(BrokerError::io("starting the dispatcher thread"))?;
        self.dispatcher.set(dispatcher.thread().clone()).expect("started once");
        threads.push(dispatcher);
        let flusher_store = self.clone();
        let flusher = thread::Builder::new()
            .name("meridian-flush".into())
            .spawn(move || flusher_store.flush_loop())
            .map_err(BrokerError::io("starting the flush thread"))?;
        self.flusher.set(flusher.thread().clone()).expect("started once");
        threads.push(flusher);
        let checkpointer_store = self.clone();
        let checkpointer = thread::Builder::new()
            .name("meridian-checkpoint".into())
            .spawn(move || checkpointer_store.checkpoint_loop())
            .map_err(BrokerError::io("starting the checkpoint thread"))?;
        self.checkpointer
            .set(checkpointer.thread().clone())
            .expect("started once");
        threads.push(checkpointer);
        Ok(())
    }

    /// What recovery did when the store opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.recovery
    }

    /// The store's settings.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn write_topics_file(&self, metas: &HashMap<String, TopicMeta>) -> Result<()> {
        files::write_json(
            self.disk.as_ref(),
            &self.dir.join("meta/topics.json"),
            &TopicsFile { topics: metas.clone() },
        )
    }

    /// What `meta/topics.json` should hold now.
    fn topic_metas(&self) -> HashMap<String, TopicMeta> {
        self.topics
            .read()
            .expect("topics lock")
            .iter()
            .map(|(name, topic)| {
                (
                    name.clone(),
                    TopicMeta {
                        queues: topic.queues.len() as u32,
                    },
                )
            })
            .collect()
    }

    /// Creates a topic with `queues` queues. Returns false if it already exists with that many.
    pub fn create_topic(&self, name: &str, queues: u32) -> Result<bool> {
        meridian_proto::validate::validate_topic(name)?;
        self.create_topic_unchecked(name, queues)
    }

    fn create_topic_unchecked(&self, name: &str, queues: u32) -> Result<bool> {
        meridian_proto::validate::validate_queue_count(queues)?;
        let _serialized = self.topics_lock.lock().expect("topics create lock");
        if let Some(topic) = self.topics.read().expect("topics lock").get(name) {
            let existing = topic.queues.len() as u32;
            return if existing == queues {
                Ok(false)
            } else {
                Err(BrokerError::TopicExists {
                    topic: name.to_owned(),
                    queues: existing,
                })
            };
        }
        let queue_list = self.open_queues(name, 0..queues)?;
        self.commitlog
            .lock_writer()
            .queue_offsets
            .insert(name.to_owned(), vec![0; queues as usize]);
        self.topics
            .write()
            .expect("topics lock")
            .insert(name.to_owned(), Topic { queues: queue_list });
        tracing::info!(topic = name, queues, "topic created");
        Ok(true)
    }

    /// Opens (creates) the consume queues `queue_ids` of topic `name`, then records that the topic
    /// has `queue_ids.end` queues in the topics file.
    fn open_queues(&self, name: &str, queue_ids: std::ops::Range<u32>) -> Result<Vec<Arc<ConsumeQueue>>> {
        let queues = queue_ids.end;
        let opened = queue_ids
            .map(|queue_id| {
                ConsumeQueue::open(&cq_dir(&self.dir, name, queue_id), self.config.cq_entries_per_file).map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut metas = self.topic_metas();
        metas.insert(name.to_owned(), TopicMeta { queues });
        self.write_topics_file(&metas)?;
        Ok(opened)
    }

    /// Gives an existing topic more queues, numbered after its current ones; existing queues keep
    /// their messages and offsets. Returns false when the topic already has at least `queues`
    /// (queues are never taken away: they may hold unconsumed messages).
    pub fn grow_topic(&self, name: &str, queues: u32) -> Result<bool> {
        meridian_proto::validate::validate_queue_count(queues)?;
        let _serialized = self.topics_lock.lock().expect("topics create lock");
        let existing = self
            .topic_queues(name)
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_owned()))?;
        if queues <= existing {
            return Ok(false);
        }
        let added = self.open_queues(name, existing..queues)?;
        // The dispatcher must know a queue before any record for it exists, so the consume queues
        // come first and appends may target them only after.
        self.topics
            .write()
            .expect("topics lock")
            .get_mut(name)
            .expect("topics are never removed")
            .queues
            .extend(added);
        self.commitlog
            .lock_writer()
            .queue_offsets
            .get_mut(name)
            .expect("every topic has queue offsets")
            .resize(queues as usize, 0);
        tracing::info!(topic = name, from = existing, to = queues, "topic grown");
        Ok(true)
    }

    /// Queue count of a topic, if it exists.
    pub fn topic_queues(&self, name: &str) -> Option<u32> {
        self.topics
            .read()
            .expect("topics lock")
            .get(name)
            .map(|topic| topic.queues.len() as u32)
    }

    /// All topics with their queue counts, sorted by name.
    pub fn topics(&self) -> Vec<(String, u32)> {
        let mut all: Vec<_> = self
            .topics
            .read()
            .expect("topics lock")
            .iter()
            .map(|(name, topic)| (name.clone(), topic.queues.len() as u32))
            .collect();
        all.sort();
        all
    }

    /// The consume queue of a topic's queue.
    pub fn consume_queue(&self, topic: &str, queue_id: u32) -> Result<Arc<ConsumeQueue>> {
        let topics = self.topics.read().expect("topics lock");
        let found = topics
            .get(topic)
            .ok_or_else(|| BrokerError::TopicNotFound(topic.to_owned()))?;
        found
            .queues
            .get(queue_id as usize)
            .cloned()
            .ok_or_else(|| BrokerError::QueueNotFound {
                topic: topic.to_owned(),
                queue_id,
                queues: found.queues.len() as u32,
            })
    }

    /// Appends `messages` to one queue of `topic` (the broker picks one round robin when
    /// `queue_id` is `None`), with consecutive queue offsets. Messages must already be validated.
    /// Messages without a msgId get one.
    pub fn append(
        &self,
        topic: &str,
        queue_id: Option<u32>,
        messages: &[MessageData],
        born_host: SocketAddr,
    ) -> Result<Appended> {
        let request = AppendRequest {
            topic,
            queue_id,
            messages,
            born_host,
        };
        self.append_many(std::slice::from_ref(&request))
            .pop()
            .expect("one result per request")
    }

    /// Appends several independent requests under one writer lock and writes them with one
    /// `pwrite`: the broker combines the sends a connection has already sent, so a pipelining
    /// producer pays one syscall per group instead of one per message. Each request succeeds or
    /// fails on its own; results are in request order.
    pub fn append_many(&self, requests: &[AppendRequest<'_>]) -> Vec<Result<Appended>> {
        if let Some(failure) = self.failure.get() {
            return requests
                .iter()
                .map(|_| Err(BrokerError::DiskFailed(failure.clone())))
                .collect();
        }
        if self.stopping.load(Ordering::Acquire) {
            return requests.iter().map(|_| Err(BrokerError::ShuttingDown)).collect();
        }
        // Messages without an id get one prepended to their properties; only they allocate.
        let identities: Vec<Vec<MessageIdentity>> = requests
            .iter()
            .map(|request| request.messages.iter().map(identify).collect())
            .collect();
        let store_timestamp = now_millis();
        let mut outcomes: Vec<Result<Appended>> = Vec::with_capacity(requests.len());
        // Requests of the batch not yet written, and the queue offsets to restore if the write fails.
        let mut chunk_start = 0;
        let mut undo: Vec<(&str, usize, u64)> = Vec::new();
        let mut stored = (0u64, 0u64);

        let mut writer = self.commitlog.lock_writer();
        for (request, identities) in requests.iter().zip(identities) {
            let topic = request.topic;
            let Some(queue_count) = writer.queue_offsets.get(topic).map(|queues| queues.len() as u32) else {
                outcomes.push(Err(BrokerError::TopicNotFound(topic.to_owned())));
                continue;
            };
            let queue_id = match request.queue_id {
                Some(queue_id) if queue_id < queue_count => queue_id,
                Some(queue_id) => {
                    outcomes.push(Err(BrokerError::QueueNotFound {
                        topic: topic.to_owned(),
                        queue_id,
                        queues: queue_count,
                    }));
                    continue;
                }
                None => self.next_queue.fetch_add(1, Ordering::Relaxed) % queue_count,
            };
            let batch_size: usize = request
                .messages
                .iter()
                .zip(&identities)
                .map(|(message, identity)| {
                    record::encoded_len(topic.len(), identity.properties(message).len(), message.body.len())
                })
                .sum();
            if self.commitlog.needs_roll(&writer, batch_size) && chunk_start < outcomes.len() {
                self.publish_chunk(&mut writer, &mut outcomes[chunk_start..], &mut undo);
                chunk_start = outcomes.len();
            }
            if let Err(error) = self.commitlog.begin_batch(&mut writer, batch_size) {
                outcomes.push(Err(error));
                continue;
            }
            let old_offset = writer.queue_offsets[topic][queue_id as usize];
            let mut queue_offset = old_offset;
            let mut results = Vec::with_capacity(request.messages.len());
            for (message, identity) in request.messages.iter().zip(identities) {
                let properties = identity.properties(message);
                let mut fields = RecordFields {
                    flags: message.flags,
                    queue_id,
                    queue_offset,
                    commitlog_offset: 0,
                    born_timestamp: message.born_timestamp,
                    store_timestamp,
                    born_host: request.born_host,
                    store_host: self.store_host,
                    reconsume_count: message.reconsume_count,
                    topic,
                    properties,
                    body: &message.body,
                };
                let record_len = fields.encoded_len();
                let reservation = self.commitlog.reserve(&mut writer, record_len);
                let commitlog_offset = reservation.offset;
                fields.commitlog_offset = commitlog_offset;
                record::encode_into(reservation.bytes, &fields);
                stored.1 += record_len as u64;
                results.push(SendResult {
                    msg_id: identity.msg_id,
                    queue_id,
                    queue_offset,
                    commitlog_offset,
                    store_timestamp,
                });
                queue_offset += 1;
            }
            stored.0 += request.messages.len() as u64;
            undo.push((topic, queue_id as usize, old_offset));
            writer.queue_offsets.get_mut(topic).expect("checked above")[queue_id as usize] = queue_offset;
            let end_offset = self.commitlog.position(&writer);
            outcomes.push(Ok(Appended { results, end_offset }));
        }
        self.publish_chunk(&mut writer, &mut outcomes[chunk_start..], &mut undo);
        drop(writer);

        self.metrics.messages_stored.inc_by(stored.0);
        self.metrics.bytes_stored.inc_by(stored.1);
        self.wake_threads();
        outcomes
    }

    /// Tells the dispatcher (when it sleeps for long, see [`MessageStore::dispatch_loop`]) and,
    /// under sync flush, the flusher that records were published.
    fn wake_threads(&self) {
        self.wake_dispatcher();
        if self.config.flush_mode == FlushMode::Sync
            && let Some(flusher) = self.flusher.get()
        {
            flusher.unpark();
        }
    }

    /// Wakes the dispatcher if it sleeps for long: something it waits for (committed, flushed or
    /// replicated offset) advanced.
    fn wake_dispatcher(&self) {
        // Pairs with the dispatcher's store of `dispatcher_idle` and load of the confirmed
        // offset: either it sees what just advanced, or this sees it idle and wakes it.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.dispatcher_idle.load(Ordering::SeqCst)
            && let Some(dispatcher) = self.dispatcher.get()
        {
            dispatcher.unpark();
        }
    }

    /// Writes the pending batches; if that fails, their requests fail and their queue offsets
    /// are given back, so the log and the queues are as they were.
    fn publish_chunk(
        &self,
        writer: &mut commitlog::Writer,
        outcomes: &mut [Result<Appended>],
        undo: &mut Vec<(&str, usize, u64)>,
    ) {
        if let Err(error) = self.commitlog.publish(writer) {
            tracing::error!(%error, "commitlog write failed; the sends in it are refused");
            for (topic, queue_index, old_offset) in undo.drain(..).rev() {
                writer.queue_offsets.get_mut(topic).expect("topic of an undo entry")[queue_index] = old_offset;
            }
            for outcome in outcomes.iter_mut().filter(|outcome| outcome.is_ok()) {
                *outcome = Err(BrokerError::Io {
                    context: "writing the commitlog".into(),
                    source: std::io::Error::other(error.to_string()),
                });
            }
        }
        undo.clear();
    }

    /// Waits until the commitlog is synced past `end_offset` (sync flush mode).
    pub async fn wait_flushed(&self, end_offset: u64) -> Result<()> {
        let synced = {
            let mut waiters = self.flush_waiters.lock().expect("flush waiters lock");
            // Checked under the lock the flusher takes to publish progress: no wake-up is missed.
            if self.flushed_offset() >= end_offset {
                return Ok(());
            }
            if let Some(failure) = self.failure.get() {
                return Err(BrokerError::DiskFailed(failure.clone()));
            }
            if self.stopping.load(Ordering::Acquire) {
                return Err(BrokerError::ShuttingDown);
            }
            let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
            waiters.entry(end_offset).or_default().push(synced_tx);
            synced_rx
        };
        let timeout = Duration::from_millis(self.config.sync_flush_timeout_ms);
        match tokio::time::timeout(timeout, synced).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(match self.failure.get() {
                Some(failure) => BrokerError::DiskFailed(failure.clone()),
                None => BrokerError::ShuttingDown,
            }),
            Err(_) => Err(BrokerError::FlushTimeout(self.config.sync_flush_timeout_ms)),
        }
    }

    /// Records that the commitlog is synced up to `offset` and wakes exactly the sends it covers.
    fn set_flushed(&self, offset: u64) {
        let covered = {
            let mut waiters = self.flush_waiters.lock().expect("flush waiters lock");
            self.flushed.store(offset, Ordering::Release);
            let later = waiters.split_off(&(offset + 1));
            std::mem::replace(&mut *waiters, later)
        };
        for synced_tx in covered.into_values().flatten() {
            let _ = synced_tx.send(());
        }
        if self.config.flush_mode == FlushMode::Sync {
            self.wake_dispatcher();
        }
    }

    /// The highest offset for which the group's ack policy holds: consumers see records only
    /// below it. Under sync flush it is at most what is synced; on a replicated broker at most
    /// what the group confirmed; never more than what is written. Only a truncation of a
    /// divergent tail lowers it. A few atomic loads: the dispatcher reads it every round.
    pub fn confirmed_offset(&self) -> u64 {
        let mut confirmed = self.commitlog.committed();
        if self.config.flush_mode == FlushMode::Sync {
            confirmed = confirmed.min(self.flushed.load(Ordering::Acquire));
        }
        if self.replicated {
            confirmed = confirmed.min(self.replication_limit.load(Ordering::Acquire));
        }
        confirmed
    }

    /// Whether records are confirmed by the group (see [`StoreOptions::replicated`]).
    pub fn is_replicated(&self) -> bool {
        self.replicated
    }

    /// Records that the group holds everything below `offset` as its ack policy needs (on a
    /// master: what the acknowledgement tracker computed; on a slave: the master's confirmed
    /// offset). Never lowers it. Returns whether it rose.
    pub fn raise_replication_limit(&self, offset: u64) -> bool {
        let before = self.replication_limit.fetch_max(offset, Ordering::AcqRel);
        if offset > before {
            self.wake_dispatcher();
            true
        } else {
            false
        }
    }

    /// Why the store stopped taking writes (a failed sync or consume queue write), if it did.
    /// Only a restart clears it.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Stops the store taking writes for good (until restart) and fails every send waiting for
    /// a sync: after a failed `fdatasync` the kernel may have dropped the dirty pages, so a
    /// later sync that succeeds proves nothing, and acknowledging would lose data.
    fn fail(&self, reason: String) {
        if self.failure.set(reason).is_err() {
            return;
        }
        let reason = self.failure.get().expect("just set");
        tracing::error!(
            dir = %self.dir.display(),
            reason = %reason,
            "message store failed: it takes no more writes and consumers see nothing new; restart the broker to recover from what is on disk"
        );
        self.metrics.store_failed.set(1);
        // Waiting sends see the failure (checked under this lock) and fail with it.
        let waiters = std::mem::take(&mut *self.flush_waiters.lock().expect("flush waiters lock"));
        drop(waiters);
    }

    /// Offset up to which the commitlog is synced.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Offset up to which records are stored (visible once dispatched).
    pub fn committed_offset(&self) -> u64 {
        self.commitlog.committed()
    }

    /// Smallest commitlog offset still on disk (a record boundary).
    pub fn min_offset(&self) -> u64 {
        self.commitlog.min_offset()
    }

    /// Calls `visit` for every stored record in `[from, to)` with its commitlog offset; `from`
    /// must be a record boundary (an offset a record starts or a segment begins at) and `to` at
    /// most [`MessageStore::committed_offset`]. Returns where it stopped. Off the hot path: the
    /// trace flusher's recovery scan reads it.
    pub fn scan_records(&self, from: u64, to: u64, visit: impl FnMut(&record::Record<'_>, u64)) -> u64 {
        self.commitlog.scan(from, to.min(self.committed_offset()), visit)
    }

    /// Offset up to which records are in consume queues.
    pub fn dispatched_offset(&self) -> u64 {
        self.dispatched.load(Ordering::Acquire)
    }

    /// Serves offsets below the local consume queues from `archive` from now on.
    pub fn set_archive(&self, archive: Arc<meridian_archive::reader::ArchiveReader>) {
        let _ = self.archive.set(archive);
    }

    /// The archive, when archiving is on.
    pub fn archive(&self) -> Option<&Arc<meridian_archive::reader::ArchiveReader>> {
        self.archive.get()
    }

    /// The sealed commitlog segments still on disk, oldest first: start, end and file.
    pub fn sealed_segments(&self) -> Vec<(u64, u64, PathBuf)> {
        self.commitlog.sealed_segments()
    }

    /// Deletes the oldest local segment, which must start at `start`, be sealed and be archived
    /// (the caller checks the manifest), and moves every queue's min offset past it. False when
    /// `start` is not the oldest sealed segment.
    pub fn delete_archived_segment(&self, start: u64) -> Result<bool> {
        if !self.commitlog.remove_oldest(start)? {
            return Ok(false);
        }
        let commitlog_min = self.commitlog.min_offset();
        let queues: Vec<Arc<ConsumeQueue>> = self
            .topics
            .read()
            .expect("topics lock")
            .values()
            .flat_map(|topic| topic.queues.iter().cloned())
            .collect();
        for queue in queues {
            queue.advance_min(commitlog_min)?;
        }
        tracing::info!(segment = start, commitlog_min, "archived segment deleted locally");
        Ok(true)
    }

    /// Min and max offsets of a queue; the min counts offsets only the archive still holds.
    pub fn queue_bounds(&self, topic: &str, queue_id: u32) -> Result<QueueBounds> {
        let queue = self.consume_queue(topic, queue_id)?;
        let archived_min = self
            .archive()
            .and_then(|archive| archive.with_index(|index| index.min_offset(topic, queue_id)));
        Ok(QueueBounds {
            min_offset: archived_min.map_or(queue.min_offset(), |archived| archived.min(queue.min_offset())),
            max_offset: queue.max_offset(),
        })
    }

    /// Reads consume queue entries `[offset, offset + max_count)` of a queue, cut so that the
    /// records add up to at most `max_bytes` (but at least one entry when there is one).
    pub fn read_entries(
        &self,
        queue: &ConsumeQueue,
        offset: u64,
        max_count: u32,
        max_bytes: u32,
    ) -> Result<Vec<CqEntry>> {
        let mut entries = Vec::with_capacity(max_count.min(256) as usize);
        queue.read(offset, max_count as usize, &mut entries)?;
        let mut total = 0u64;
        let keep = entries
            .iter()
            .position(|entry| {
                total += u64::from(entry.size);
                total > u64::from(max_bytes)
            })
            .unwrap_or(entries.len())
            .max(1)
            .min(entries.len());
        entries.truncate(keep);
        Ok(entries)
    }

    /// Appends the stored record of `entry` to `out`.
    pub fn copy_record(&self, entry: &CqEntry, out: &mut BytesMut) -> Result<()> {
        if self
            .commitlog
            .copy_record(entry.commitlog_offset, entry.size as usize, out)
        {
            Ok(())
        } else {
            Err(BrokerError::Corrupt(format!(
                "consume queue points at commitlog offset {} ({} bytes), which is not readable",
                entry.commitlog_offset, entry.size
            )))
        }
    }

    /// A copy of the whole record that starts at `commitlog_offset`, CRC-checked. Fails with
    /// `InvalidOffset` when no record starts there (a client named a wrong offset).
    pub fn read_record(&self, commitlog_offset: u64) -> Result<bytes::Bytes> {
        let invalid = || BrokerError::InvalidOffset(commitlog_offset);
        let size = self
            .commitlog
            .with_bytes(commitlog_offset, 8, |head| {
                let size = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes"));
                let magic = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
                (magic == record::RECORD_MAGIC).then_some(size as usize)
            })
            .flatten()
            .ok_or_else(invalid)?;
        self.commitlog
            .with_bytes(commitlog_offset, size, |bytes| {
                record::Record::parse(bytes)
                    .ok()
                    .map(|_| bytes::Bytes::copy_from_slice(bytes))
            })
            .flatten()
            .ok_or_else(invalid)
    }

    /// Creates topic `name` with `queues` queues unless it exists (system topics, made on demand).
    pub fn ensure_topic(&self, name: &str, queues: u32) -> Result<()> {
        if self.topic_queues(name).is_none() {
            self.create_system_topic(name, queues)?;
        }
        Ok(())
    }

    /// Creates a user or system topic (a slave replicating a retry topic its master created).
    pub(crate) fn create_system_topic(&self, name: &str, queues: u32) -> Result<bool> {
        meridian_proto::topics::validate_consumable(name)?;
        self.create_topic_unchecked(name, queues)
    }

    /// The first offset of a queue whose message was stored at or after `timestamp` (Unix ms);
    /// the queue's max offset if all are older.
    pub fn search_offset(&self, topic: &str, queue_id: u32, timestamp: i64) -> Result<u64> {
        let queue = self.consume_queue(topic, queue_id)?;
        let (mut low, mut high) = (queue.min_offset(), queue.max_offset());
        while low < high {
            let middle = low + (high - low) / 2;
            let entry = queue
                .get(middle)?
                .ok_or_else(|| BrokerError::Corrupt(format!("missing consume queue entry {middle}")))?;
            let stored_at = self
                .commitlog
                .with_bytes(entry.commitlog_offset, entry.size as usize, |bytes| {
                    record::Record::parse(bytes).map(|record| record.store_timestamp())
                })
                .ok_or_else(|| BrokerError::Corrupt(format!("unreadable record at {}", entry.commitlog_offset)))?
                .map_err(|error| BrokerError::Corrupt(format!("record at {}: {error}", entry.commitlog_offset)))?;
            if stored_at < timestamp {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(low)
    }

    /// Stores a consumer group's offset for a queue.
    pub fn commit_offset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> Result<()> {
        self.consume_queue(topic, queue_id)?;
        self.offsets.commit(group, topic, queue_id, offset);
        Ok(())
    }

    /// Records a commitlog offset the broker's own bookkeeping keeps under `key` (the delay
    /// scheduler's rebuild floor), in the offsets table: checkpointed, and replicated, with the
    /// offsets it goes with. Not a queue offset, so recovery never clamps it to a queue's end.
    pub fn commit_log_mark(&self, key: &str, commitlog_offset: u64) {
        self.offsets.commit(key, offsets::LOG_MARKS, 0, commitlog_offset);
    }

    /// The commitlog offset last recorded under `key` by [`MessageStore::commit_log_mark`].
    pub fn log_mark(&self, key: &str) -> Option<u64> {
        self.offsets.query(key, offsets::LOG_MARKS, 0)
    }

    /// A consumer group's stored offset for a queue.
    pub fn query_offset(&self, group: &str, topic: &str, queue_id: u32) -> Result<Option<u64>> {
        self.consume_queue(topic, queue_id)?;
        Ok(self.offsets.query(group, topic, queue_id))
    }

    /// The offsets key of a group, or of one broadcasting member of it (`member` non-empty).
    pub fn offset_key<'a>(group: &'a str, member: &str) -> std::borrow::Cow<'a, str> {
        if member.is_empty() {
            std::borrow::Cow::Borrowed(group)
        } else {
            std::borrow::Cow::Owned(offsets::member_key(group, member))
        }
    }

    /// How many times `group`'s offsets of `topic` were reset.
    pub fn offset_generation(&self, group: &str, topic: &str) -> u64 {
        self.offsets.generation(group, topic)
    }

    /// Moves `group`'s offsets of `topic` to `queues` (`(queue, offset)`) and counts a reset;
    /// returns the new generation.
    pub fn reset_offsets(&self, group: &str, topic: &str, queues: &[(u32, u64)]) -> u64 {
        self.offsets.reset(group, topic, queues)
    }

    /// Every group's and member's offsets of `topic` as `(key, queue, offset)`.
    pub fn offsets_of_topic(&self, topic: &str) -> Vec<(String, u32, u64)> {
        self.offsets.of_topic(topic)
    }

    /// Writes consume queue entries for records in `[from, to)`. Returns how many records it saw.
    fn dispatch(&self, from: u64, to: u64) -> Result<u64> {
        if to <= from {
            return Ok(0);
        }
        let topics = self.topics.read().expect("topics lock");
        // Entries are grouped per queue so each queue gets one write per round.
        let mut pending: HashMap<*const ConsumeQueue, (Arc<ConsumeQueue>, u64, Vec<u8>)> = HashMap::new();
        let mut count = 0u64;
        let end = self.commitlog.scan(from, to, |record, offset| {
            count += 1;
            let Some(queue) = topics
                .get(record.topic())
                .and_then(|topic| topic.queues.get(record.queue_id() as usize))
            else {
                tracing::error!(
                    topic = record.topic(),
                    queue_id = record.queue_id(),
                    offset,
                    "record for unknown queue; skipped"
                );
                return;
            };
            let (_, first_index, encoded) = pending
                .entry(Arc::as_ptr(queue))
                .or_insert_with(|| (queue.clone(), record.queue_offset(), Vec::with_capacity(4096)));
            let expected = *first_index + (encoded.len() / consume_queue::ENTRY_LEN) as u64;
            if record.queue_offset() != expected {
                tracing::error!(
                    topic = record.topic(),
                    expected,
                    found = record.queue_offset(),
                    "queue offset gap in commitlog"
                );
            }
            let tag_hash = record.tag().map_or(0, properties::tag_hash);
            CqEntry {
                commitlog_offset: offset,
                size: record.total_size() as u32,
                tag_hash,
            }
            .encode(encoded);
        });
        for (queue, first_index, encoded) in pending.into_values() {
            queue.append(first_index, &encoded)?;
        }
        self.dispatched.store(end, Ordering::Release);
        if end < to {
            return Err(BrokerError::Corrupt(format!(
                "committed record at offset {end} is unreadable"
            )));
        }
        Ok(count)
    }

    /// Dispatches what is confirmed. While records keep coming it polls every [`DISPATCH_POLL`],
    /// as RocketMQ's reput service does, instead of being woken by every append: a wake-up per
    /// append was a context switch per send, and most of the broker's scheduling cost. After
    /// [`DISPATCH_IDLE_AFTER`] without records it sleeps until an append wakes it.
    fn dispatch_loop(&self) {
        let mut last_work = Instant::now();
        loop {
            if self.crashed.load(Ordering::Acquire) || self.failure.get().is_some() {
                return;
            }
            let dispatching = self.dispatch_lock.lock().expect("dispatch lock");
            let target = self.confirmed_offset();
            let dispatched = self.dispatched.load(Ordering::Acquire);
            if target > dispatched {
                let outcome = self.dispatch(dispatched, target);
                drop(dispatching);
                last_work = Instant::now();
                match outcome {
                    Ok(_) => self.metrics.dispatched_offset.set(target as i64),
                    // A consume queue write that failed (a full disk) leaves a queue file with a
                    // hole or a torn entry: retrying would index around it. The store stops, says
                    // why, and a restart rebuilds the queues from the commitlog.
                    Err(error) => {
                        self.fail(self.dispatch_failure(dispatched, &error));
                        return;
                    }
                };
                continue;
            }
            drop(dispatching);
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            if last_work.elapsed() < DISPATCH_IDLE_AFTER {
                thread::park_timeout(DISPATCH_POLL);
                continue;
            }
            self.dispatcher_idle.store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.confirmed_offset() <= self.dispatched.load(Ordering::Acquire) {
                thread::park_timeout(Duration::from_millis(100));
            }
            self.dispatcher_idle.store(false, Ordering::SeqCst);
        }
    }

    /// The reason the dispatcher stopped, naming a full disk and the space it needs.
    fn dispatch_failure(&self, dispatched: u64, error: &BrokerError) -> String {
        let full = matches!(error, BrokerError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC));
        if full {
            let available = available_bytes(&self.dir).map_or_else(|| "unknown".to_owned(), |bytes| bytes.to_string());
            format!(
                "disk full: writing consume queue entries past commitlog offset {dispatched} failed with ENOSPC ({error}); the filesystem of {} has {available} bytes available; free at least {} bytes (one commitlog segment) and restart the broker",
                self.dir.display(),
                self.config.segment_size
            )
        } else {
            format!(
                "writing consume queue entries past commitlog offset {dispatched} failed: {error}; fix the disk under {} and restart the broker (it rebuilds the consume queues from the commitlog)",
                self.dir.display()
            )
        }
    }

    fn flush_loop(&self) {
        if self.crashed.load(Ordering::Acquire) {
            return;
        }
        let flush_interval = Duration::from_millis(self.config.flush_interval_ms);
        loop {
            let stopping = self.stopping.load(Ordering::Acquire);
            if self.crashed.load(Ordering::Acquire) || self.failure.get().is_some() {
                return;
            }
            // Under sync flush, everything appended up to now: the sends that came in while the
            // last sync ran are all released by this one.
            self.flush_commitlog();
            if stopping || self.failure.get().is_some() {
                // The last checkpoint is `shutdown`'s, after every thread stopped.
                return;
            }
            match self.config.flush_mode {
                FlushMode::Sync if self.commitlog.committed() > self.flushed_offset() => continue,
                // Appends unpark it; the timeout only bounds a missed wake-up.
                FlushMode::Sync | FlushMode::Async => thread::park_timeout(flush_interval),
            }
        }
    }

    /// Writes a checkpoint every `checkpoint_interval_ms` until the store stops.
    fn checkpoint_loop(&self) {
        let checkpoint_interval = Duration::from_millis(self.config.checkpoint_interval_ms);
        let mut next_checkpoint = Instant::now() + checkpoint_interval;
        loop {
            if self.stopping.load(Ordering::Acquire)
                || self.crashed.load(Ordering::Acquire)
                || self.failure.get().is_some()
            {
                return;
            }
            let now = Instant::now();
            if now < next_checkpoint {
                thread::park_timeout(next_checkpoint - now);
                continue;
            }
            if let Err(error) = self.checkpoint() {
                // A consume queue or metadata sync failed: as fatal as a commitlog sync.
                self.fail(format!(
                    "writing the checkpoint failed: {error}; the disk under {} may have lost written data; restart the broker",
                    self.dir.display()
                ));
                return;
            }
            next_checkpoint = Instant::now() + checkpoint_interval;
        }
    }

    fn flush_commitlog(&self) {
        let target = self.commitlog.committed();
        let flushed = self.flushed_offset();
        if target <= flushed {
            return;
        }
        let started = Instant::now();
        match self.commitlog.flush(flushed, target) {
            Ok(()) => {
                self.set_flushed(target);
                self.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
                self.metrics.trace.note_flush(started.elapsed());
                self.metrics.flushed_offset.set(target as i64);
            }
            Err(error) => self.fail(format!(
                "syncing the commitlog [{flushed}, {target}) failed: {error}; the disk under {} may have dropped written data, so nothing past offset {flushed} is acknowledged; restart the broker to recover from what is on disk",
                self.dir.display()
            )),
        }
    }

    /// Makes consume queues and offsets durable, then records the safe offset.
    fn checkpoint(&self) -> Result<()> {
        let _writing = self.checkpoint_lock.lock().expect("checkpoint lock");
        let dispatched = self.dispatched.load(Ordering::Acquire);
        let queues: Vec<Arc<ConsumeQueue>> = self
            .topics
            .read()
            .expect("topics lock")
            .values()
            .flat_map(|topic| topic.queues.iter().cloned())
            .collect();
        for queue in queues {
            queue.sync(self.disk.as_ref())?;
        }
        self.offsets.persist()?;
        let safe_offset = dispatched.min(self.flushed_offset());
        // Read after `dispatched`, so it is at least `safe_offset`.
        let confirmed_offset = self.confirmed_offset().max(safe_offset);
        files::write_json(
            self.disk.as_ref(),
            &self.dir.join("checkpoint"),
            &Checkpoint {
                safe_offset,
                confirmed_offset: Some(confirmed_offset),
                written_at: now_millis(),
            },
        )
    }

    /// Stops the threads after a last flush, dispatch and checkpoint. Sends after this fail.
    pub fn shutdown(&self) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        for thread in [self.dispatcher.get(), self.flusher.get(), self.checkpointer.get()]
            .into_iter()
            .flatten()
        {
            thread.unpark();
        }
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for thread in threads {
            let _ = thread.join();
        }
        // Sends still waiting for a sync that will not come fail now instead of at their timeout.
        self.flush_waiters.lock().expect("flush waiters lock").clear();
        // The dispatcher may have stopped before the flusher's last checkpoint saw its progress.
        // A failed store writes none: what it would record may not be on disk.
        if self.failure.get().is_some() {
            tracing::warn!("message store stopped after a disk failure; no final checkpoint");
        } else if let Err(error) = self.checkpoint() {
            tracing::error!(%error, "final checkpoint failed");
        }
        tracing::info!(
            committed = self.committed_offset(),
            flushed = self.flushed_offset(),
            "message store stopped"
        );
    }
}

impl MessageStore {
    /// Stops the threads with no last flush or checkpoint, leaving the files as a `kill -9`
    /// would (the page cache survives a process crash, so written bytes stay).
    #[cfg(test)]
    pub(crate) fn crash(&self) {
        self.crashed.store(true, Ordering::Release);
        self.stopping.store(true, Ordering::Release);
        for thread in [self.dispatcher.get(), self.flusher.get(), self.checkpointer.get()]
            .into_iter()
            .flatten()
        {
            thread.unpark();
        }
        for thread in std::mem::take(&mut *self.threads.lock().expect("threads lock")) {
            let _ = thread.join();
        }
    }
}

/// Bytes available to the broker on the filesystem holding `dir`.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer of the right type.
    let result = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it filled the buffer.
    let stats = unsafe { stats.assume_init() };
    // The field types differ between platforms (u64 on 64-bit Linux).
    #[allow(clippy::unnecessary_cast)]
    Some((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

fn cq_dir(dir: &Path, topic: &str, queue_id: u32) -> PathBuf {
    dir.join("consumequeue").join(topic).join(queue_id.to_string())
}

#[cfg(test)]
mod crash_sim;
#[cfg(test)]
mod tests;
