//! Consumer group offsets: the next offset each group will consume from each queue.
//!
//! Commits update memory at once and reach disk with the next checkpoint (every
//! `checkpoint_interval_ms`) and at shutdown. After a crash a group may therefore resume up to
//! one interval earlier than its last commit and see those messages again: at-least-once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;
use crate::store::files;

type GroupOffsets = BTreeMap<String, BTreeMap<u32, u64>>;

pub(crate) struct ConsumerOffsets {
    path: PathBuf,
    offsets: Mutex<BTreeMap<String, GroupOffsets>>,
    dirty: AtomicBool,
}

impl ConsumerOffsets {
    pub fn load(path: PathBuf) -> Result<ConsumerOffsets> {
        let offsets = files::read_json(&path)?.unwrap_or_default();
        Ok(ConsumerOffsets {
            path,
            offsets: Mutex::new(offsets),
            dirty: AtomicBool::new(false),
        })
    }

    pub fn commit(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        let mut offsets = self.offsets.lock().expect("offsets lock");
        let topics = offsets.entry(group.to_owned()).or_default();
        topics.entry(topic.to_owned()).or_default().insert(queue_id, offset);
        self.dirty.store(true, Ordering::Release);
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
                self.dirty.store(true, Ordering::Release);
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
