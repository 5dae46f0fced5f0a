//! Consumer group offsets: the next offset each group will consume from each queue.
//!
//! Commits update memory at once and reach disk with the next checkpoint (every
//! `checkpoint_interval_ms`) and at shutdown. After a crash a group may therefore resume up to
//! one interval earlier than its last commit and see those messages again: at-least-once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::Result;
use crate::store::files;

type GroupOffsets = BTreeMap<String, BTreeMap<u32, u64>>;
/// Every group's offsets, by group.
pub(crate) type OffsetTable = BTreeMap<String, GroupOffsets>;

pub(crate) struct ConsumerOffsets {
    path: PathBuf,
    offsets: Mutex<OffsetTable>,
    dirty: AtomicBool,
    /// Grows with every change, so replication sends the table only when it changed.
    version: AtomicU64,
}

impl ConsumerOffsets {
    pub fn load(path: PathBuf) -> Result<ConsumerOffsets> {
        let offsets = files::read_json(&path)?.unwrap_or_default();
        Ok(ConsumerOffsets {
            path,
            offsets: Mutex::new(offsets),
            dirty: AtomicBool::new(false),
            version: AtomicU64::new(0),
        })
    }

    pub fn commit(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        let mut offsets = self.offsets.lock().expect("offsets lock");
        let topics = offsets.entry(group.to_owned()).or_default();
        topics.entry(topic.to_owned()).or_default().insert(queue_id, offset);
        self.changed();
    }

    fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The version of the table: it changes whenever the table does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// A copy of the table with its version.
    pub fn snapshot(&self) -> (u64, OffsetTable) {
        let offsets = self.offsets.lock().expect("offsets lock");
        (self.version(), offsets.clone())
    }

    /// Replaces the table with a master's, taking its version.
    pub fn replace(&self, version: u64, table: OffsetTable) {
        let mut offsets = self.offsets.lock().expect("offsets lock");
        *offsets = table;
        self.dirty.store(true, Ordering::Release);
        self.version.store(version, Ordering::Release);
    }

    pub fn query(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        let offsets = self.offsets.lock().expect("offsets lock");
        offsets.get(group)?.get(topic)?.get(&queue_id).copied()
    }

    /// Lowers offsets past a queue's end (its tail was lost in recovery) to the end.
    pub fn clamp(&self, topic: &str, queue_id: u32, max_offset: u64) {
        let mut offsets = self.offsets.lock().expect("offsets lock");
        for topics in offsets.values_mut() {
            if let Some(offset) = topics.get_mut(topic).and_then(|queues| queues.get_mut(&queue_id))
                && *offset > max_offset
            {
                tracing::warn!(
                    topic,
                    queue_id,
                    offset = *offset,
                    max_offset,
                    "consumer offset past queue end; clamping"
                );
                *offset = max_offset;
                self.changed();
            }
        }
    }

    /// Writes the offsets if anything changed since the last write.
    pub fn persist(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = self.offsets.lock().expect("offsets lock").clone();
        let written = files::write_json(&self.path, &snapshot);
        if written.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        written
    }
}
