//! The commitlog: every message of every topic, appended in arrival order to a chain of segments.
//!
//! One appender at a time (a `Mutex<Writer>`) encodes a batch of records into the writer's
//! buffer, writes it to the segment with one `pwrite`, then publishes the new end with a Release
//! store of `committed`. Readers and the dispatcher read only below `committed`. A batch never
//! spans segments: when the current one cannot take it, it is closed with a blank marker and the
//! next one is created first, so a failed batch leaves nothing half-visible.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::BytesMut;
use meridian_proto::record::{self, BLANK_MARKER_LEN, Entry, Record, RecordError};

use crate::error::{BrokerError, Result};
use crate::store::durability::Durability;
use crate::store::segment::Segment;

/// The appender's state, behind the commitlog's single writer lock.
pub(crate) struct Writer {
    segment: Arc<Segment>,
    /// Global offset of the next byte to write.
    position: u64,
    /// Next queue offset of every queue, by topic. Lives under the writer lock because queue
    /// offsets must be assigned in commitlog order.
    pub queue_offsets: std::collections::HashMap<String, Vec<u64>>,
    /// Records of the batch being appended, written with one `pwrite` at `pending_start`.
    pending: Vec<u8>,
    pending_start: u64,
}

/// What recovery found at the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Where checking started: the start of the segment holding the checkpoint.
    pub scanned_from: u64,
    /// End of the last valid record.
    pub valid_end: u64,
    /// Whether the log ended on a torn or corrupt record (rather than on unwritten space).
    pub torn_tail: bool,
}

pub(crate) struct CommitLog {
    dir: PathBuf,
    disk: Arc<dyn Durability>,
    segment_size: u64,
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    committed: AtomicU64,
}

/// Where a record must go: the writer reserves space, possibly rolling to a new segment.
pub(crate) struct Reservation<'a> {
    pub bytes: &'a mut [u8],
    pub offset: u64,
}

impl CommitLog {
    /// Opens the segments in `dir` (creating the first one if there are none) and recovers the
    /// tail: every record from the start of the segment holding `scan_from` is CRC-checked (the
    /// whole current segment, so damage just below the checkpoint is caught too), and the first
    /// bad one ends the log. `on_record` sees every valid record checked.
    pub fn open(
        disk: &Arc<dyn Durability>,
        dir: &Path,
        segment_size: u64,
        scan_from: u64,
        mut on_record: impl FnMut(&Record<'_>, u64),
    ) -> Result<(CommitLog, Recovered)> {
        fs::create_dir_all(dir).map_err(BrokerError::io(format!("creating {}", dir.display())))?;
        let mut segments = load_segments(disk, dir)?;
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(disk, dir, 0, segment_size)?));
        }
        let first_start = segments[0].start;
        let last_end = segments.last().expect("at least one segment").end();
        let scan_from = scan_from.clamp(first_start, last_end);
        let mut index = segments
            .partition_point(|segment| segment.start <= scan_from)
            .saturating_sub(1);
        let scanned_from = segments[index].start;
        let mut position = scanned_from;
        let mut torn_tail = false;
        'scan: while index < segments.len() {
            let segment = &segments[index];
            while position < segment.end() {
                let in_segment = position - segment.start;
                // SAFETY: recovery runs before any reader or writer exists.
                let rest = unsafe { segment.slice(in_segment, (segment.len - in_segment) as usize) };
                match record::read_entry(rest) {
                    Ok(Entry::Record(record)) => {
                        if record.commitlog_offset() != position {
                            tracing::warn!(
                                position,
                                stored = record.commitlog_offset(),
                                "record offset mismatch ends the log"
                            );
                            break 'scan;
                        }
                        on_record(&record, position);
                        position += record.total_size() as u64;
                    }
                    Ok(Entry::Blank(len)) => {
                        position += len as u64;
                    }
                    Err(RecordError::Empty) => break 'scan,
                    Err(error) => {
                        tracing::warn!(position, %error, "torn or corrupt record at the tail; truncating");
                        torn_tail = true;
                        break 'scan;
                    }
                }
            }
            index += 1;
        }

        // Everything after `position` is garbage: zero its segment's tail and drop later segments.
        // Zeroed even when the log ended on a zero header: bytes of an older record may lie behind
        // it, and once new appends fill the gap exactly, a later recovery would read on into them.
        let tail_index = segments
            .partition_point(|segment| segment.start <= position)
            .saturating_sub(1);
        let tail = segments[tail_index].clone();
        if position < tail.end() {
            tail.zero_from(position - tail.start)?;
        }
        for stale in segments.drain(tail_index + 1..) {
            if stale.start >= position {
                torn_tail = true;
                tracing::warn!(segment = %stale.path.display(), "removing segment past the recovered end");
                fs::remove_file(&stale.path).map_err(BrokerError::io(format!("removing {}", stale.path.display())))?;
            }
        }
        // `position` may sit exactly at the end of the last segment (its blank marker was read).
        let mut writer_segment = segments.last().expect("at least one segment").clone();
        if position == writer_segment.end() {
            writer_segment = Arc::new(Segment::create(disk, dir, position, segment_size)?);
            segments.push(writer_segment.clone());
        } else {
            writer_segment.writing();
        }
        let commitlog = CommitLog {
            dir: dir.to_owned(),
            disk: disk.clone(),
            segment_size,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                segment: writer_segment,
                position,
                queue_offsets: Default::default(),
                pending: Vec::with_capacity(64 * 1024),
                pending_start: position,
            }),
            committed: AtomicU64::new(position),
        };
        Ok((
            commitlog,
            Recovered {
                scanned_from,
                valid_end: position,
                torn_tail,
            },
        ))
    }

    /// Offset up to which records are complete and readable.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Smallest offset still on disk.
    pub fn min_offset(&self) -> u64 {
        self.segments
            .read()
            .expect("segments lock")
            .first()
            .map_or(0, |segment| segment.start)
    }

    /// The sealed segments (every one but the segment being written), oldest first: start,
    /// end and file.
    pub fn sealed_segments(&self) -> Vec<(u64, u64, PathBuf)> {
        let segments = self.segments.read().expect("segments lock");
        let count = segments.len();
        segments
            .iter()
            .take(count.saturating_sub(1))
            .map(|segment| (segment.start, segment.end(), segment.path.clone()))
            .collect()
    }

    /// Deletes the oldest segment if it starts at `start` and is sealed (archived segments only:
    /// the caller checked the archive). Readers holding it keep their mapping until they drop it.
    pub fn remove_oldest(&self, start: u64) -> Result<bool> {
        let mut segments = self.segments.write().expect("segments lock");
        if segments.len() < 2 || segments[0].start != start {
            return Ok(false);
        }
        let removed = segments.remove(0);
        drop(segments);
        fs::remove_file(&removed.path).map_err(BrokerError::io(format!("removing {}", removed.path.display())))?;
        crate::store::fsync_dir(self.disk.as_ref(), &self.dir)?;
        Ok(true)
    }

    /// Takes the writer lock. Appends happen through [`CommitLog::begin_batch`],
    /// [`CommitLog::reserve`] and [`CommitLog::publish`].
    pub fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().expect("commitlog writer lock")
    }

    /// Whether a batch of `total` bytes needs a new segment. Pending batches must be published
    /// before [`CommitLog::begin_batch`] rolls.
    pub fn needs_roll(&self, writer: &Writer, total: usize) -> bool {
        writer.position + total as u64 + BLANK_MARKER_LEN as u64 > writer.segment.end()
    }

    /// Makes room for a batch of `total` bytes in one segment, rolling to a new segment when the
    /// current one cannot hold it and still leave room for a blank marker. Several batches may be
    /// built before one [`CommitLog::publish`] writes them all, as long as none of them rolls.
    pub fn begin_batch(&self, writer: &mut Writer, total: usize) -> Result<()> {
        let total = total as u64;
        if total + BLANK_MARKER_LEN as u64 > self.segment_size {
            return Err(BrokerError::RecordTooLarge {
                size: total as usize,
                segment_size: self.segment_size,
            });
        }
        if writer.position + total + BLANK_MARKER_LEN as u64 > writer.segment.end() {
            debug_assert!(writer.pending.is_empty(), "pending batches are published before a roll");
            // Only the marker's header is written: the rest of a preallocated segment is zeros.
            let in_segment = writer.position - writer.segment.start;
            let mut marker = [0u8; BLANK_MARKER_LEN];
            record::encode_blank_header(&mut marker, (writer.segment.len - in_segment) as usize);
            writer
                .segment
                .write_at(in_segment, &marker)
                .map_err(BrokerError::io(format!(
                    "closing segment {}",
                    writer.segment.path.display()
                )))?;
            let next = Arc::new(Segment::create(
                &self.disk,
                &self.dir,
                writer.segment.end(),
                self.segment_size,
            )?);
            self.segments.write().expect("segments lock").push(next.clone());
            writer.segment.sealed();
            writer.position = next.start;
            writer.segment = next;
        }
        if writer.pending.is_empty() {
            writer.pending_start = writer.position;
        }
        Ok(())
    }

    /// The next `size` bytes of the batch, to encode a record into. The batch was sized by
    /// [`CommitLog::begin_batch`].
    pub fn reserve<'w>(&self, writer: &'w mut Writer, size: usize) -> Reservation<'w> {
        let offset = writer.position;
        let start = writer.pending.len();
        writer.pending.resize(start + size, 0);
        writer.position += size as u64;
        Reservation {
            bytes: &mut writer.pending[start..],
            offset,
        }
    }

    /// Writes the batch to its segment and makes it visible to readers. On failure the batch is
    /// dropped and the log is as it was.
    pub fn publish(&self, writer: &mut Writer) -> Result<()> {
        if !writer.pending.is_empty() {
            let in_segment = writer.pending_start - writer.segment.start;
            if let Err(error) = writer.segment.write_at(in_segment, &writer.pending) {
                self.rewind(writer);
                return Err(BrokerError::Io {
                    context: format!("writing {}", writer.segment.path.display()),
                    source: error,
                });
            }
            writer.pending.clear();
            if writer.pending.capacity() > 4 << 20 {
                writer.pending = Vec::with_capacity(64 * 1024);
            }
        }
        self.committed.store(writer.position, Ordering::Release);
        Ok(())
    }

    /// Global offset just past the last record reserved (published or not).
    pub fn position(&self, writer: &Writer) -> u64 {
        writer.position
    }

    /// Drops the batches being built.
    pub fn rewind(&self, writer: &mut Writer) {
        writer.pending.clear();
        writer.position = writer.pending_start;
    }

    fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read().expect("segments lock");
        let index = segments
            .partition_point(|segment| segment.start <= offset)
            .checked_sub(1)?;
        let segment = &segments[index];
        (offset < segment.end()).then(|| segment.clone())
    }

    /// Calls `read` with the committed bytes `[offset, offset + len)`, if they lie in one segment.
    pub fn with_bytes<T>(&self, offset: u64, len: usize, read: impl FnOnce(&[u8]) -> T) -> Option<T> {
        if offset + len as u64 > self.committed() {
            return None;
        }
        let segment = self.segment_for(offset)?;
        let in_segment = offset - segment.start;
        if in_segment + len as u64 > segment.len {
            return None;
        }
        // SAFETY: below `committed`, so no writer touches these bytes.
        Some(read(unsafe { segment.slice(in_segment, len) }))
    }

    /// Appends the record at `offset` of `size` bytes to `out`.
    pub fn copy_record(&self, offset: u64, size: usize, out: &mut BytesMut) -> bool {
        self.with_bytes(offset, size, |bytes| out.extend_from_slice(bytes))
            .is_some()
    }

    /// Calls `visit` for every record in `[from, to)`, which must start at a record boundary.
    /// Returns the offset where it stopped (`to`, unless a record failed to parse).
    pub fn scan(&self, from: u64, to: u64, mut visit: impl FnMut(&Record<'_>, u64)) -> u64 {
        let mut position = from;
        while position < to {
            let Some(segment) = self.segment_for(position) else {
                break;
            };
            let in_segment = position - segment.start;
            let available = (to.min(segment.end()) - position) as usize;
            // SAFETY: `to` is at most `committed`, so no writer touches these bytes.
            let bytes = unsafe { segment.slice(in_segment, available) };
            let mut consumed = 0;
            while consumed < bytes.len() {
                // Unverified: every committed record was CRC'd by this process (encoded by its
                // writer, checked on receipt from the master, or checked by recovery), and
                // consumers check again; a second pass over every body here costs a fifth of the
                // broker's CPU under load.
                match record::read_entry_unverified(&bytes[consumed..]) {
                    Ok(Entry::Record(record)) => {
                        visit(&record, position + consumed as u64);
                        consumed += record.total_size();
                    }
                    Ok(Entry::Blank(len)) => consumed += len,
                    Err(error) => {
                        tracing::error!(offset = position + consumed as u64, %error, "unreadable committed record");
                        return position + consumed as u64;
                    }
                }
            }
            position += consumed as u64;
        }
        position
    }

    /// Makes `[from, to)` durable: syncs every segment that holds part of it.
    pub fn flush(&self, from: u64, to: u64) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        let segments: Vec<Arc<Segment>> = {
            let all = self.segments.read().expect("segments lock");
            all.iter()
                .filter(|segment| segment.end() > from && segment.start < to)
                .cloned()
                .collect()
        };
        for segment in segments {
            segment
                .sync()
                .map_err(BrokerError::io(format!("syncing {}", segment.path.display())))?;
        }
        Ok(())
    }
}

impl CommitLog {
    /// The end of the replication chunk that starts at `from`: whole entries (records, or a
    /// segment's closing blank marker) of one segment, below `committed`, adding up to at most
    /// `max_bytes` (but at least one entry). Only entry headers are read; the slave checks CRCs.
    /// `None` when nothing committed lies at `from`.
    pub fn chunk_end(&self, from: u64, max_bytes: usize) -> Option<u64> {
        let committed = self.committed();
        let segment = self.segment_for(from)?;
        let limit = committed.min(segment.end());
        let mut end = from;
        while end < limit {
            let in_segment = end - segment.start;
            // SAFETY: below `committed`, so no writer touches these bytes.
            let header = unsafe { segment.slice(in_segment, 4.min((segment.end() - end) as usize)) };
            let Ok(size) = <[u8; 4]>::try_from(header).map(u32::from_be_bytes) else {
                break;
            };
            let next = end + u64::from(size);
            if size == 0 || next > limit || (end > from && next - from > max_bytes as u64) {
                break;
            }
            end = next;
        }
        (end > from).then_some(end)
    }

    /// Writes replicated bytes (whole, CRC-checked entries starting at `offset`, within one
    /// segment) at the log's end and publishes them. A slave's log must equal its master's byte
    /// for byte, so `offset` must be where this log ends; a chunk starting at the end of the
    /// current segment (closed by the blank marker replicated before it) opens the next one.
    pub fn append_raw(&self, writer: &mut Writer, offset: u64, bytes: &[u8]) -> Result<()> {
        if offset != writer.position {
            return Err(BrokerError::Corrupt(format!(
                "replicated bytes start at offset {offset} but this log ends at {}",
                writer.position
            )));
        }
        if writer.position == writer.segment.end() {
            let next = Arc::new(Segment::create(
                &self.disk,
                &self.dir,
                writer.position,
                self.segment_size,
            )?);
            self.segments.write().expect("segments lock").push(next.clone());
            writer.segment.sealed();
            writer.segment = next;
        }
        let in_segment = writer.position - writer.segment.start;
        if in_segment + bytes.len() as u64 > writer.segment.len {
            return Err(BrokerError::Corrupt(format!(
                "replicated chunk of {} bytes at offset {offset} crosses the end of segment {} (are the master's and this broker's store.segment_size equal?)",
                bytes.len(),
                writer.segment.path.display()
            )));
        }
        writer
            .segment
            .write_at(in_segment, bytes)
            .map_err(BrokerError::io(format!("writing {}", writer.segment.path.display())))?;
        writer.position += bytes.len() as u64;
        writer.pending_start = writer.position;
        self.committed.store(writer.position, Ordering::Release);
        Ok(())
    }

    /// Cuts the log back to `offset` (a record boundary at or below the end): zeroes what lies
    /// past it in its segment, removes later segments, and syncs. Readers below `offset` are
    /// unaffected; callers must have stopped readers and the dispatcher from looking past it.
    pub fn truncate(&self, writer: &mut Writer, offset: u64) -> Result<()> {
        let old_end = writer.position;
        if offset >= old_end {
            return Ok(());
        }
        self.committed.store(offset, Ordering::Release);
        let mut segments = self.segments.write().expect("segments lock");
        let keep = segments.partition_point(|segment| segment.start <= offset).max(1);
        for stale in segments.drain(keep..) {
            fs::remove_file(&stale.path).map_err(BrokerError::io(format!("removing {}", stale.path.display())))?;
        }
        let tail = segments.last().expect("at least one segment").clone();
        drop(segments);
        let in_segment = offset - tail.start;
        let dirty_end = old_end.min(tail.end()) - tail.start;
        let zeros = vec![0u8; ((dirty_end - in_segment) as usize).min(1 << 20)];
        let mut position = in_segment;
        while position < dirty_end {
            let len = ((dirty_end - position) as usize).min(zeros.len());
            tail.write_at(position, &zeros[..len])
                .map_err(BrokerError::io(format!("zeroing {}", tail.path.display())))?;
            position += len as u64;
        }
        tail.sync()
            .map_err(BrokerError::io(format!("syncing {}", tail.path.display())))?;
        crate::store::fsync_dir(self.disk.as_ref(), &self.dir)?;
        writer.segment = tail;
        writer.position = offset;
        writer.pending.clear();
        writer.pending_start = offset;
        Ok(())
    }
}

fn load_segments(disk: &Arc<dyn Durability>, dir: &Path) -> Result<Vec<Arc<Segment>>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(BrokerError::io(format!("listing {}", dir.display())))? {
        let entry = entry.map_err(BrokerError::io(format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        let Some(start) = name.to_str().and_then(|name| name.parse::<u64>().ok()) else {
            tracing::warn!(file = ?name, "ignoring unexpected file in commitlog dir");
            continue;
        };
        found.push((start, entry.path()));
    }
    found.sort();
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(found.len());
    for (start, path) in found {
        let segment = Segment::open(disk, &path, start)?;
        if let Some(previous) = segments.last()
            && previous.end() != start
        {
            return Err(BrokerError::Corrupt(format!(
                "commitlog segments are not contiguous: {} ends at {} but the next starts at {start}",
                previous.path.display(),
                previous.end()
            )));
        }
        segments.push(Arc::new(segment));
    }
    Ok(segments)
}
