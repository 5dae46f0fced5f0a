//! What replication needs from the store: chunks of the raw commitlog for slaves, appending a
//! master's bytes on a slave, cutting a divergent tail, the epoch list, and consumer offsets.
//!
//! A slave's commitlog is its master's byte for byte (same offsets, same segment boundaries), so
//! replication copies byte ranges and never re-encodes a record; the slave checks every record's
//! CRC before it writes, then its own dispatcher builds its consume queues.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use meridian_proto::messages::EpochStart;
use meridian_proto::record::{self, Entry};

use super::epochs::EPOCHS_FILE;
use super::{MessageStore, files};
use crate::error::{BrokerError, Result};

impl MessageStore {
    /// How many raw commitlog bytes from `from` the next replication chunk holds: whole entries
    /// of one segment, at most `max_bytes` (at least one entry); 0 when nothing is committed past
    /// `from`.
    pub fn replica_chunk_len(&self, from: u64, max_bytes: usize) -> usize {
        self.commitlog
            .chunk_end(from, max_bytes)
            .map_or(0, |end| (end - from) as usize)
    }

    /// Appends the `len` committed bytes at `from` (a chunk sized by
    /// [`MessageStore::replica_chunk_len`]) to `out`: the one copy replication makes on the master.
    pub fn copy_replica(&self, from: u64, len: usize, out: &mut BytesMut) -> Result<()> {
        self.commitlog
            .with_bytes(from, len, |bytes| out.extend_from_slice(bytes))
            .ok_or_else(|| BrokerError::Corrupt(format!("commitlog bytes [{from}, +{len}) are not readable")))
    }

    /// Appends a master's bytes, which start at `offset` (this log's end): checks every record,
    /// creates the topics and queues they name, then writes them with one `pwrite` and wakes the
    /// dispatcher. Returns the new end of the log. Only a slave's replication task calls this.
    pub fn append_replica(&self, offset: u64, data: &[u8]) -> Result<u64> {
        if let Some(failure) = self.failure.get() {
            return Err(BrokerError::DiskFailed(failure.clone()));
        }
        if self.stopping.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        let end = self.committed_offset();
        if offset != end {
            return Err(BrokerError::Corrupt(format!(
                "replicated bytes start at offset {offset} but this log ends at {end}"
            )));
        }
        // Check first, so a bad chunk leaves the log as it was.
        let mut queues: BTreeMap<&str, Vec<(u32, u64)>> = BTreeMap::new();
        let mut position = 0usize;
        let mut stored = 0u64;
        while position < data.len() {
            let at = offset + position as u64;
            match record::read_entry(&data[position..]) {
                Ok(Entry::Record(found)) => {
                    if found.commitlog_offset() != at {
                        return Err(BrokerError::Corrupt(format!(
                            "replicated record at offset {at} says it belongs at {}",
                            found.commitlog_offset()
                        )));
                    }
                    queues
                        .entry(found.topic())
                        .or_default()
                        .push((found.queue_id(), found.queue_offset()));
                    position += found.total_size();
                    stored += 1;
                }
                Ok(Entry::Blank(len)) => position += len,
                Err(error) => {
                    return Err(BrokerError::Corrupt(format!(
                        "replicated bytes at offset {at} are not a valid record: {error}"
                    )));
                }
            }
        }
        for (topic, ids) in &queues {
            let needed = ids.iter().map(|(queue_id, _)| queue_id + 1).max().unwrap_or(0);
            match self.topic_queues(topic) {
                None => {
                    self.create_system_topic(topic, needed)?;
                }
                Some(existing) if existing < needed => {
                    self.grow_topic(topic, needed)?;
                }
                Some(_) => {}
            }
        }
        let mut writer = self.commitlog.lock_writer();
        self.commitlog.append_raw(&mut writer, offset, data)?;
        for (topic, ids) in queues {
            let next = writer
                .queue_offsets
                .get_mut(topic)
                .expect("topics of the chunk were created above");
            for (queue_id, queue_offset) in ids {
                next[queue_id as usize] = queue_offset + 1;
            }
        }
        let end = self.commitlog.position(&writer);
        drop(writer);
        self.metrics.messages_stored.inc_by(stored);
        self.metrics.bytes_stored.inc_by(data.len() as u64);
        self.wake_threads();
        Ok(end)
    }

    /// Cuts the log, its consume queues and the epoch list back to `offset`: a slave whose log
    /// holds records its master's lineage lacks (it was master in an older epoch and wrote past
    /// where the next epoch began) drops them before replicating. Consumer offsets past a queue's
    /// new end are lowered to it.
    pub fn truncate_to(&self, offset: u64) -> Result<()> {
        let _dispatching = self.dispatch_lock.lock().expect("dispatch lock");
        let mut writer = self.commitlog.lock_writer();
        let end = self.commitlog.position(&writer);
        if offset >= end {
            return Ok(());
        }
        tracing::warn!(
            from = offset,
            to = end,
            bytes = end - offset,
            "truncating the commitlog tail the master's lineage does not have"
        );
        self.commitlog.truncate(&mut writer, offset)?;
        let topics = self.topics.read().expect("topics lock");
        for (name, topic) in topics.iter() {
            let next = writer.queue_offsets.entry(name.clone()).or_default();
            next.resize(topic.queues.len(), 0);
            for (queue_id, queue) in topic.queues.iter().enumerate() {
                queue.truncate_from(offset)?;
                queue.sync(self.disk.as_ref())?;
                next[queue_id] = queue.max_offset();
                self.offsets.clamp(name, queue_id as u32, queue.max_offset());
            }
        }
        drop(topics);
        self.dispatched.fetch_min(offset, Ordering::AcqRel);
        self.flushed.fetch_min(offset, Ordering::AcqRel);
        // The confirmed offset moves back only here. The master's lineage lacks the tail, so its
        // quorum never confirmed it: no consumer can have seen it unless it was confirmed under
        // an older epoch and then lost by the election, which is worth shouting about.
        let confirmed_before = self.replication_limit.fetch_min(offset, Ordering::AcqRel);
        if self.replicated && confirmed_before > offset {
            tracing::error!(
                confirmed = confirmed_before,
                truncated_to = offset,
                "truncation cuts records this broker had confirmed: consumers may have seen messages the group no longer holds"
            );
        }
        {
            let mut epochs = self.epochs.lock().expect("epochs lock");
            let before = epochs.epochs.len();
            epochs.epochs.retain(|(_, start)| *start <= offset);
            if epochs.epochs.len() != before {
                files::write_json(self.disk.as_ref(), &self.dir.join(EPOCHS_FILE), &*epochs)?;
            }
        }
        drop(writer);
        self.checkpoint()
    }

    /// The next queue offset the appender would give `queue_id` of `topic` (0 when unknown):
    /// past every message written, confirmed or not. Takes the writer lock.
    pub fn queue_offsets_end(&self, topic: &str, queue_id: u32) -> u64 {
        let writer = self.commitlog.lock_writer();
        writer
            .queue_offsets
            .get(topic)
            .and_then(|queues| queues.get(queue_id as usize))
            .copied()
            .unwrap_or(0)
    }

    /// The highest epoch this broker has seen.
    pub fn seen_epoch(&self) -> u64 {
        self.epochs.lock().expect("epochs lock").seen
    }

    /// Epoch of the log's tail: the last entry of the epoch list (0 when empty).
    pub fn last_epoch(&self) -> u64 {
        self.epochs
            .lock()
            .expect("epochs lock")
            .epochs
            .last()
            .map_or(0, |(epoch, _)| *epoch)
    }

    /// The epoch list, oldest first.
    pub fn epochs(&self) -> Vec<EpochStart> {
        self.epochs
            .lock()
            .expect("epochs lock")
            .epochs
            .iter()
            .map(|&(epoch, start_offset)| EpochStart { epoch, start_offset })
            .collect()
    }

    /// Where `epoch` ends in this log's lineage (see [`EpochFile::epoch_end`]).
    pub fn epoch_end(&self, epoch: u64) -> u64 {
        self.epochs
            .lock()
            .expect("epochs lock")
            .epoch_end(epoch, self.committed_offset())
    }

    /// Records (durably) that an epoch at least `epoch` exists. Returns whether it was new.
    pub fn observe_epoch(&self, epoch: u64) -> Result<bool> {
        let mut epochs = self.epochs.lock().expect("epochs lock");
        if epoch <= epochs.seen {
            return Ok(false);
        }
        epochs.seen = epoch;
        files::write_json(self.disk.as_ref(), &self.dir.join(EPOCHS_FILE), &*epochs)?;
        Ok(true)
    }

    /// Starts epoch `epoch` as its master: records (durably) that its records begin at the current
    /// end of the log. The caller must not accept writes before this returns.
    pub fn begin_epoch(&self, epoch: u64) -> Result<u64> {
        let writer = self.commitlog.lock_writer();
        let start = self.commitlog.position(&writer);
        let mut epochs = self.epochs.lock().expect("epochs lock");
        if epochs.epochs.last().is_some_and(|(last, _)| *last >= epoch) {
            return Err(BrokerError::Corrupt(format!(
                "cannot begin epoch {epoch}: the log already has epoch {}",
                epochs.epochs.last().expect("checked").0
            )));
        }
        epochs.seen = epochs.seen.max(epoch);
        epochs.epochs.push((epoch, start));
        files::write_json(self.disk.as_ref(), &self.dir.join(EPOCHS_FILE), &*epochs)?;
        drop(writer);
        Ok(start)
    }

    /// The part of the master's epoch list this log holds (entries starting at or below its end).
    fn held_epochs(&self, master: &[EpochStart]) -> Vec<(u64, u64)> {
        let end = self.committed_offset();
        master
            .iter()
            .filter(|entry| entry.start_offset <= end)
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect()
    }

    /// Whether [`MessageStore::adopt_epochs`] would change anything: checked on every fetch, so
    /// the file write (and the blocking task it needs) happens only when the list changed.
    pub fn epochs_differ(&self, master: &[EpochStart]) -> bool {
        self.epochs.lock().expect("epochs lock").epochs != self.held_epochs(master)
    }

    /// Adopts the master's epoch list for the part of it this log holds, after appending what it
    /// sent. Written only when it changed.
    pub fn adopt_epochs(&self, master: &[EpochStart]) -> Result<()> {
        let adopted = self.held_epochs(master);
        let mut epochs = self.epochs.lock().expect("epochs lock");
        if epochs.epochs == adopted {
            return Ok(());
        }
        epochs.seen = epochs.seen.max(adopted.last().map_or(0, |(epoch, _)| *epoch));
        epochs.epochs = adopted;
        files::write_json(self.disk.as_ref(), &self.dir.join(EPOCHS_FILE), &*epochs)
    }

    /// Version of the consumer offsets: it grows with every commit and every replicated table.
    pub fn offsets_version(&self) -> u64 {
        self.offsets.version()
    }

    /// The consumer offsets as JSON, with their version.
    pub fn export_offsets(&self) -> (u64, Bytes) {
        let (version, table) = self.offsets.snapshot();
        (
            version,
            Bytes::from(serde_json::to_vec(&table).expect("offsets serialize")),
        )
    }

    /// Replaces the consumer offsets with a master's table (JSON), taking its version.
    pub fn import_offsets(&self, version: u64, json: &[u8]) -> Result<()> {
        let table = serde_json::from_slice(json)
            .map_err(|error| BrokerError::Corrupt(format!("replicated consumer offsets do not decode: {error}")))?;
        self.offsets.replace(version, table);
        Ok(())
    }
}
