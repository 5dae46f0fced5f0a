//! Consumer group offsets: the next offset each group will consume from each queue.
//!
//! Commits update memory at once and reach disk with the next checkpoint (every
//! `checkpoint_interval_ms`) and at shutdown. After a crash a group may therefore resume up to
//! one interval earlier than its last commit and see those messages again: at-least-once.
//!
//! Besides groups, the table keeps, under keys no group name can take (they contain `%`):
//! - `group%member`: a broadcasting member's own offsets;
//! - `%RESET%group`: how many times the group's offsets of a topic were reset (as queue 0), so a
//!   consumer still holding a position from before a reset notices;
//! - `%SCHEDULER%`: how far each delay slot was released;
//! - `%TRANSACTION%`: how far the transaction check-back walk went in the half-message queue;
//! - `%SCHEDULER%COPIES`: a commitlog offset (not a queue offset), under the pseudo-topic
//!   [`LOG_MARKS`]: where the delay scheduler's rebuild scan starts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::store::durability::Durability;
use crate::store::files;

/// Pseudo-topic (no real topic has this name) of the broker's commitlog marks: offsets into the
/// commitlog, which recovery's clamping of queue offsets must not touch.
pub(crate) const LOG_MARKS: &str = "%COMMITLOG%";

type GroupOffsets = BTreeMap<String, BTreeMap<u32, u64>>;
/// Every group's offsets, by group.
pub(crate) type OffsetTable = BTreeMap<String, GroupOffsets>;

pub(crate) struct ConsumerOffsets {
    path: PathBuf,
    disk: Arc<dyn Durability>,
    offsets: Mutex<OffsetTable>,
    dirty: AtomicBool,
    /// Grows with every change, so replication sends the table only when it changed.
    version: AtomicU64,
}

impl ConsumerOffsets {
    pub fn load(path: PathBuf, disk: Arc<dyn Durability>) -> Result<ConsumerOffsets> {
        let offsets = files::read_json(&path)?.unwrap_or_default();
        Ok(ConsumerOffsets {
            path,
            disk,
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

    /// How many times `group`'s offsets of `topic` were reset.
    pub fn generation(&self, group: &str, topic: &str) -> u64 {
        self.query(&reset_key(group), topic, 0).unwrap_or(0)
    }

    /// Sets the offsets of several queues and counts a reset, at once: a consumer sees either the
    /// old offsets and generation or the new ones. Returns the new generation.
    pub fn reset(&self, group: &str, topic: &str, queues: &[(u32, u64)]) -> u64 {
        let mut offsets = self.offsets.lock().expect("offsets lock");
        let key = reset_key(group);
        let generation = offsets
            .get(&key)
            .and_then(|topics| topics.get(topic))
            .and_then(|queues| queues.get(&0))
            .copied()
            .unwrap_or(0)
            + 1;
        offsets
            .entry(key)
            .or_default()
            .entry(topic.to_owned())
            .or_default()
            .insert(0, generation);
        let group_offsets = offsets
            .entry(group.to_owned())
            .or_default()
            .entry(topic.to_owned())
            .or_default();
        for (queue_id, offset) in queues {
            group_offsets.insert(*queue_id, *offset);
        }
        // Broadcasting members restart from the group's new offsets too.
        let prefix = format!("{group}%");
        for (key, topics) in offsets.iter_mut() {
            if key.starts_with(&prefix)
                && let Some(member_offsets) = topics.get_mut(topic)
            {
                for (queue_id, offset) in queues {
                    member_offsets.insert(*queue_id, *offset);
                }
            }
        }
        self.changed();
        generation
    }

    pub fn query(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        let offsets = self.offsets.lock().expect("offsets lock");
        offsets.get(group)?.get(topic)?.get(&queue_id).copied()
    }

    /// Every group's and member's offsets of `topic`, as `(key, queue, offset)`.
    pub fn of_topic(&self, topic: &str) -> Vec<(String, u32, u64)> {
        let offsets = self.offsets.lock().expect("offsets lock");
        offsets
            .iter()
            .filter_map(|(key, topics)| topics.get(topic).map(|queues| (key, queues)))
            .flat_map(|(key, queues)| queues.iter().map(move |(queue, offset)| (key.clone(), *queue, *offset)))
            .collect()
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
        let written = files::write_json(self.disk.as_ref(), &self.path, &snapshot);
        if written.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        written
    }
}

/// The key under which a broadcasting member's offsets are kept.
pub(crate) fn member_key(group: &str, member: &str) -> String {
    format!("{group}%{member}")
}

fn reset_key(group: &str) -> String {
    format!("%RESET%{group}")
}
