//! Consume queues: per topic and queue, a file-backed array of fixed-size entries pointing into
//! the commitlog, so a consumer reads its queue by index without scanning the commitlog.
//!
//! Entry (20 bytes, big-endian): commitlog offset u64, record size u32, tag hash u64 (0: no tag).
//! Files hold `entries_per_file` entries each and are named by their first index (20 digits).
//! Entries are written only by the dispatcher (and recovery), in index order.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::error::{BrokerError, Result};

/// Bytes per entry.
pub const ENTRY_LEN: usize = 20;

/// One consume queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    /// Where the record starts in the commitlog.
    pub commitlog_offset: u64,
    /// Record size in bytes.
    pub size: u32,
    /// [`meridian_proto::properties::tag_hash`] of the tag, 0 without one.
    pub tag_hash: u64,
}

impl CqEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.commitlog_offset.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.tag_hash.to_be_bytes());
    }

    pub(crate) fn decode(bytes: &[u8]) -> CqEntry {
        CqEntry {
            commitlog_offset: u64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes")),
            size: u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")),
            tag_hash: u64::from_be_bytes(bytes[12..20].try_into().expect("8 bytes")),
        }
    }
}

struct CqFile {
    first_index: u64,
    file: File,
}

/// One queue of one topic.
pub struct ConsumeQueue {
    dir: PathBuf,
    entries_per_file: u64,
    files: RwLock<Vec<Arc<CqFile>>>,
    min_offset: AtomicU64,
    max_offset: AtomicU64,
    dirty: AtomicBool,
    /// Entries below this index are synced (every file holding one was synced since written).
    synced_to: AtomicU64,
    /// A file was created since the last sync: the directory entry must be synced too.
    created: AtomicBool,
    /// Woken when entries are added, for long-polling pulls.
    pub(crate) new_entries: Notify,
}

impl ConsumeQueue {
    /// Opens (or creates) the queue stored in `dir`.
    pub fn open(dir: &Path, entries_per_file: u64) -> Result<ConsumeQueue> {
        fs::create_dir_all(dir).map_err(BrokerError::io(format!("creating {}", dir.display())))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(BrokerError::io(format!("listing {}", dir.display())))? {
            let entry = entry.map_err(BrokerError::io(format!("listing {}", dir.display())))?;
            if let Some(first_index) = entry.file_name().to_str().and_then(|name| name.parse::<u64>().ok()) {
                found.push((first_index, entry.path()));
            }
        }
        found.sort();
        let mut files = Vec::with_capacity(found.len());
        let mut max_offset = 0;
        for (first_index, path) in &found {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(BrokerError::io(format!("opening {}", path.display())))?;
            let len = file
                .metadata()
                .map_err(BrokerError::io(format!("reading size of {}", path.display())))?
                .len();
            max_offset = first_index + len / ENTRY_LEN as u64;
            files.push(Arc::new(CqFile {
                first_index: *first_index,
                file,
            }));
        }
        let min_offset = found.first().map_or(0, |(first_index, _)| *first_index);
        Ok(ConsumeQueue {
            dir: dir.to_owned(),
            entries_per_file,
            files: RwLock::new(files),
            min_offset: AtomicU64::new(min_offset),
            max_offset: AtomicU64::new(max_offset),
            dirty: AtomicBool::new(false),
            synced_to: AtomicU64::new(max_offset),
            created: AtomicBool::new(false),
            new_entries: Notify::new(),
        })
    }

    /// Smallest readable index.
    pub fn min_offset(&self) -> u64 {
        self.min_offset.load(Ordering::Acquire)
    }

    /// One past the largest readable index.
    pub fn max_offset(&self) -> u64 {
        self.max_offset.load(Ordering::Acquire)
    }

    fn file_for_write(&self, index: u64) -> Result<Arc<CqFile>> {
        let first_index = index - index % self.entries_per_file;
        if let Some(file) = self
            .files
            .read()
            .expect("cq lock")
            .iter()
            .rev()
            .find(|file| file.first_index == first_index)
        {
            return Ok(file.clone());
        }
        let path = self.dir.join(format!("{first_index:020}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(BrokerError::io(format!("creating {}", path.display())))?;
        self.created.store(true, Ordering::Release);
        let file = Arc::new(CqFile { first_index, file });
        let mut files = self.files.write().expect("cq lock");
        files.push(file.clone());
        files.sort_by_key(|file| file.first_index);
        Ok(file)
    }

    /// Writes `encoded` entries (a multiple of [`ENTRY_LEN`]) starting at `first_index`, which must
    /// be the current max offset, and makes them readable.
    pub fn append(&self, first_index: u64, encoded: &[u8]) -> Result<()> {
        let max_offset = self.max_offset();
        if first_index != max_offset && self.files.read().expect("cq lock").is_empty() {
            // Recovery dropped every entry (a power loss took files never synced, possibly the
            // first ones): the queue restarts where the commitlog, the source of truth, says.
            self.min_offset.store(first_index, Ordering::Release);
            self.max_offset.store(first_index, Ordering::Release);
            self.synced_to.store(first_index, Ordering::Release);
        } else if first_index != max_offset {
            return Err(BrokerError::Corrupt(format!(
                "consume queue {} expected entry {max_offset} but got {first_index}",
                self.dir.display()
            )));
        }
        let count = (encoded.len() / ENTRY_LEN) as u64;
        let mut written = 0u64;
        while written < count {
            let index = first_index + written;
            let file = self.file_for_write(index)?;
            let in_file = index - file.first_index;
            let chunk = (self.entries_per_file - in_file).min(count - written);
            let bytes = &encoded[written as usize * ENTRY_LEN..(written + chunk) as usize * ENTRY_LEN];
            file.file
                .write_all_at(bytes, in_file * ENTRY_LEN as u64)
                .map_err(BrokerError::io(format!("writing consume queue {}", self.dir.display())))?;
            written += chunk;
        }
        self.max_offset.store(first_index + count, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        self.new_entries.notify_waiters();
        Ok(())
    }

    /// Reads up to `max` entries starting at `from` into `out`.
    pub fn read(&self, from: u64, max: usize, out: &mut Vec<CqEntry>) -> Result<()> {
        let end = self.max_offset().min(from.saturating_add(max as u64));
        let mut index = from.max(self.min_offset());
        let mut buffer =
            vec![0u8; ((end.saturating_sub(index)) as usize).min(self.entries_per_file as usize) * ENTRY_LEN];
        while index < end {
            let file = {
                let files = self.files.read().expect("cq lock");
                let position = files.partition_point(|file| file.first_index <= index);
                match position.checked_sub(1) {
                    Some(position) => files[position].clone(),
                    None => break,
                }
            };
            let in_file = index - file.first_index;
            if in_file >= self.entries_per_file {
                return Err(BrokerError::Corrupt(format!(
                    "consume queue {} has no file holding entry {index}",
                    self.dir.display()
                )));
            }
            let chunk = (self.entries_per_file - in_file).min(end - index) as usize;
            let bytes = &mut buffer[..chunk * ENTRY_LEN];
            file.file
                .read_exact_at(bytes, in_file * ENTRY_LEN as u64)
                .map_err(BrokerError::io(format!("reading consume queue {}", self.dir.display())))?;
            out.extend(bytes.chunks_exact(ENTRY_LEN).map(CqEntry::decode));
            index += chunk as u64;
        }
        Ok(())
    }

    /// The entry at `index`, if readable.
    pub fn get(&self, index: u64) -> Result<Option<CqEntry>> {
        let mut out = Vec::with_capacity(1);
        self.read(index, 1, &mut out)?;
        Ok(out.pop())
    }

    /// Drops every entry pointing at or past `commitlog_offset` (a truncated divergent tail: the
    /// entries are valid, so ordered by commitlog offset).
    pub fn truncate_from(&self, commitlog_offset: u64) -> Result<()> {
        // Entries are ordered by commitlog offset: binary search for the first one to drop.
        let (mut low, mut high) = (self.min_offset(), self.max_offset());
        while low < high {
            let middle = low + (high - low) / 2;
            match self.get(middle)? {
                Some(entry) if entry.commitlog_offset < commitlog_offset => low = middle + 1,
                _ => high = middle,
            }
        }
        self.cut_at(low)
    }

    /// Recovery: drops every entry from the end back to the last one that points below
    /// `commitlog_offset` (the checkpoint: entries below it were synced) and that `valid` accepts.
    /// Past the checkpoint a power loss may have left zeroed, torn or missing entries, which are
    /// not ordered, so this walks back from the end instead of searching; only that tail is read.
    pub fn recover_tail(&self, commitlog_offset: u64, valid: impl Fn(u64, &CqEntry) -> bool) -> Result<()> {
        let min = self.min_offset();
        let mut end = self.max_offset();
        while end > min {
            let index = end - 1;
            match self.get(index) {
                Ok(Some(entry)) if entry.commitlog_offset < commitlog_offset && valid(index, &entry) => break,
                _ => end = index,
            }
        }
        if end == min {
            // No entry can be trusted: drop every file, and let the first entry dispatched set
            // where the queue starts (see `append`).
            let mut files = self.files.write().expect("cq lock");
            for file in files.drain(..) {
                let path = self.dir.join(format!("{:020}", file.first_index));
                fs::remove_file(&path).map_err(BrokerError::io(format!("removing {}", path.display())))?;
            }
            self.max_offset.store(min, Ordering::Release);
            self.synced_to.store(min, Ordering::Release);
            self.created.store(true, Ordering::Release);
            return Ok(());
        }
        self.cut_at(end)
    }

    /// Drops every entry at or past index `new_max`.
    fn cut_at(&self, new_max: u64) -> Result<()> {
        if new_max == self.max_offset() {
            return Ok(());
        }
        let mut files = self.files.write().expect("cq lock");
        while files.last().is_some_and(|last| last.first_index >= new_max) {
            let last = files.pop().expect("checked above");
            let path = self.dir.join(format!("{:020}", last.first_index));
            fs::remove_file(&path).map_err(BrokerError::io(format!("removing {}", path.display())))?;
        }
        if let Some(last) = files.last() {
            let keep = (new_max - last.first_index) * ENTRY_LEN as u64;
            last.file.set_len(keep).map_err(BrokerError::io(format!(
                "truncating consume queue {}",
                self.dir.display()
            )))?;
        }
        self.max_offset.store(new_max, Ordering::Release);
        self.synced_to.fetch_min(new_max, Ordering::AcqRel);
        self.created.store(true, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Forgets entries pointing below `commitlog_min` (their segments were deleted after being
    /// archived): the queue's min offset moves to the first entry still on disk, and files holding
    /// only forgotten entries are removed. The last file always stays.
    pub fn advance_min(&self, commitlog_min: u64) -> Result<()> {
        let (mut low, mut high) = (self.min_offset(), self.max_offset());
        while low < high {
            let middle = low + (high - low) / 2;
            match self.get(middle)? {
                Some(entry) if entry.commitlog_offset < commitlog_min => low = middle + 1,
                _ => high = middle,
            }
        }
        if low == self.min_offset() {
            return Ok(());
        }
        self.min_offset.store(low, Ordering::Release);
        let mut files = self.files.write().expect("cq lock");
        while files.len() > 1 && files[0].first_index + self.entries_per_file <= low {
            let first = files.remove(0);
            let path = self.dir.join(format!("{:020}", first.first_index));
            fs::remove_file(&path).map_err(BrokerError::io(format!("removing {}", path.display())))?;
        }
        Ok(())
    }

    /// Makes written entries durable if any were written since the last call: every file
    /// holding an entry written since (a queue may roll to new files between two calls), and the
    /// directory when a file was created.
    pub fn sync(&self, disk: &dyn super::durability::Durability) -> Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let end = self.max_offset();
        let from = self.synced_to.load(Ordering::Acquire).min(end);
        let files: Vec<Arc<CqFile>> = self
            .files
            .read()
            .expect("cq lock")
            .iter()
            .filter(|file| file.first_index + self.entries_per_file > from)
            .cloned()
            .collect();
        let synced = (|| {
            for file in &files {
                let path = self.dir.join(format!("{:020}", file.first_index));
                disk.sync_data(&path, &file.file)?;
            }
            if self.created.swap(false, Ordering::AcqRel) {
                disk.sync_dir(&self.dir)?;
            }
            Ok::<_, std::io::Error>(())
        })();
        if let Err(error) = synced {
            self.dirty.store(true, Ordering::Release);
            return Err(BrokerError::Io {
                context: format!("syncing consume queue {}", self.dir.display()),
                source: error,
            });
        }
        self.synced_to.store(end, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(range: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for index in range {
            CqEntry {
                commitlog_offset: index * 100,
                size: 100,
                tag_hash: index,
            }
            .encode(&mut out);
        }
        out
    }

    #[test]
    fn entries_span_files_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let queue = ConsumeQueue::open(dir.path(), 4).unwrap();
        queue.append(0, &entries(0..3)).unwrap();
        queue.append(3, &entries(3..10)).unwrap();
        assert_eq!(queue.max_offset(), 10);
        let mut out = Vec::new();
        queue.read(2, 6, &mut out).unwrap();
        assert_eq!(
            out.iter().map(|entry| entry.commitlog_offset).collect::<Vec<_>>(),
            [200, 300, 400, 500, 600, 700]
        );
        queue.sync(&super::super::durability::RealDisk).unwrap();
        drop(queue);
        let reopened = ConsumeQueue::open(dir.path(), 4).unwrap();
        assert_eq!((reopened.min_offset(), reopened.max_offset()), (0, 10));
        assert_eq!(reopened.get(9).unwrap().unwrap().tag_hash, 9);
        assert!(
            reopened.append(5, &entries(5..6)).is_err(),
            "gaps and overwrites are refused"
        );
    }

    #[test]
    fn truncate_drops_entries_past_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let queue = ConsumeQueue::open(dir.path(), 4).unwrap();
        queue.append(0, &entries(0..10)).unwrap();
        queue.truncate_from(550).unwrap();
        assert_eq!(queue.max_offset(), 6);
        queue.append(6, &entries(6..7)).unwrap();
        drop(queue);
        let reopened = ConsumeQueue::open(dir.path(), 4).unwrap();
        assert_eq!(reopened.max_offset(), 7);
        queue_truncate_to_zero(&reopened);
    }

    fn queue_truncate_to_zero(queue: &ConsumeQueue) {
        queue.truncate_from(0).unwrap();
        assert_eq!(queue.max_offset(), 0);
        queue.append(0, &entries(0..2)).unwrap();
        assert_eq!(queue.get(1).unwrap().unwrap().commitlog_offset, 100);
    }
}
